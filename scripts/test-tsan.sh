#!/usr/bin/env bash
# ThreadSanitizer: builds the daemon (and so its helpers), the tools, the test clients and a
# copy of the shim with -fsanitize=thread into build-tsan (-DP11MUX_TSAN=ON), and runs the
# tests labelled tsan: it_threads, it_failover_* (removed, hang, error, crash, kill),
# it_restart, it_pin_guess, it_exhaustion, it_session_objects, it_rescan and it_reload.
# TSAN_OPTIONS come from tests/CMakeLists.txt: halt_on_error=1, second_deadlock_stack=1,
# suppressions=tests/tsan.supp, and each process's reports in build-tsan/tsan-reports/ (a helper's report must not be lost when the pool
# survives its death). Fails when a test fails or when any process reported anything.
# Extra arguments go to ctest. docs/architecture.md, "Threads and locks".
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh"
BUILD_DIR="$top/build-tsan" "$top/scripts/build.sh" -DP11MUX_TSAN=ON
cd "$top/build-tsan"
rm -rf tsan-reports
mkdir tsan-reports
rc=0
ctest --output-on-failure -j"$(nproc)" -L tsan "$@" || rc=$?
reports=(tsan-reports/*)
if [ -e "${reports[0]}" ]; then
	for r in "${reports[@]}"; do
		echo "=== ThreadSanitizer: $r"
		cat "$r"
	done
	echo "FAIL: ThreadSanitizer reported in ${#reports[@]} process(es); see above" >&2
	exit 1
fi
[ "$rc" -eq 0 ] || exit "$rc"
echo "ThreadSanitizer: no report"
