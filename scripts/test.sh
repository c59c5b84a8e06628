#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds with AddressSanitizer and
# UndefinedBehaviorSanitizer (daemon, tools, unit tests), and runs every test with CTest; then
# builds the libFuzzer targets with clang (build-fuzz, -DP11MUX_FUZZ=ON) and runs each for 15 s
# from its seed corpus (ctest -L fuzz; docs/fuzzing.md; P11MUX_NO_FUZZ=1 skips it); then the
# ThreadSanitizer run of the threads, failover, restart, PIN-guessing and exhaustion tests
# (scripts/test-tsan.sh, its own build in build-tsan). Arguments go to the first ctest, and
# then select tests there: the fuzzing and the ThreadSanitizer run are left out.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh"
BUILD_DIR="$top/build-test" "$top/scripts/build.sh" -DP11MUX_SANITIZE=ON
cd "$top/build-test"
ctest --output-on-failure -j"$(nproc)" "$@"
if [ $# -gt 0 ]; then
	echo "test.sh: tests selected; the fuzz targets and scripts/test-tsan.sh not run"
	exit 0
fi
if [ -z "${P11MUX_NO_FUZZ:-}" ]; then
	CC=clang cmake -S "$top" -B "$top/build-fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DP11MUX_FUZZ=ON >/dev/null
	cmake --build "$top/build-fuzz" -j"$(nproc)" --target fuzz_targets >/dev/null
	(cd "$top/build-fuzz" && ctest --output-on-failure -L fuzz -j"$(nproc)")
fi
"$top/scripts/test-tsan.sh"
