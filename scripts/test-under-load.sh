#!/usr/bin/env bash
# The whole test suite, N times in a row (default 5), with ctest -j2, beside a CPU hog that
# keeps every core busy: tests must wait for states, never for a fixed time, so they pass on
# a loaded machine too. Builds like scripts/test.sh (build-test, sanitizers). Usage:
#   scripts/test-under-load.sh [N] [ctest arguments...]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-5}
shift || true
"$top/scripts/deps.sh"
BUILD_DIR="$top/build-test" "$top/scripts/build.sh" -DP11MUX_SANITIZE=ON
HOGS=()
cleanup() { [ ${#HOGS[@]} -eq 0 ] || kill "${HOGS[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 "$(nproc)"); do
	bash -c 'while :; do :; done' &
	HOGS+=($!)
done
failed=0
cd "$top/build-test"
for i in $(seq 1 "$N"); do
	start=$(date +%s)
	if ctest -j2 --output-on-failure "$@" > "ctest-under-load.$i.log" 2>&1; then
		echo "run $i: all passed ($(( $(date +%s) - start )) s)"
	else
		failed=$((failed + 1))
		echo "run $i: FAILED ($(( $(date +%s) - start )) s):"
		sed -n '/tests FAILED:/,$p' "ctest-under-load.$i.log" | grep -E '^\s+[0-9]+ - ' || true
	fi
done
echo "$failed of $N runs had failures (logs: build-test/ctest-under-load.N.log)"
[ "$failed" -eq 0 ]
