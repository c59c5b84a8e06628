#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds with AddressSanitizer and
# UndefinedBehaviorSanitizer (daemon, tools, unit tests), and runs every test with CTest;
# then the ThreadSanitizer run of the threads, failover, restart, PIN-guessing and exhaustion
# tests (scripts/test-tsan.sh, its own build in build-tsan). Arguments go to the first ctest,
# and then select tests there: the ThreadSanitizer run is left out.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh"
BUILD_DIR="$top/build-test" "$top/scripts/build.sh" -DP11MUX_SANITIZE=ON
cd "$top/build-test"
ctest --output-on-failure -j"$(nproc)" "$@"
if [ $# -gt 0 ]; then
	echo "test.sh: tests selected; scripts/test-tsan.sh not run"
	exit 0
fi
"$top/scripts/test-tsan.sh"
