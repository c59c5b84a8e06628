#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds with AddressSanitizer and
# UndefinedBehaviorSanitizer (daemon, tools, unit tests), and runs every test with CTest; then
# builds the libFuzzer targets with clang (build-fuzz, -DP11MUX_FUZZ=ON) and runs each for 15 s
# from its seed corpus (ctest -L fuzz; docs/fuzzing.md). P11MUX_NO_FUZZ=1 skips the fuzzing.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh"
BUILD_DIR="$top/build-test" "$top/scripts/build.sh" -DP11MUX_SANITIZE=ON
cd "$top/build-test"
ctest --output-on-failure -j"$(nproc)" "$@"
if [ -z "${P11MUX_NO_FUZZ:-}" ]; then
	CC=clang cmake -S "$top" -B "$top/build-fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DP11MUX_FUZZ=ON >/dev/null
	cmake --build "$top/build-fuzz" -j"$(nproc)" --target fuzz_targets >/dev/null
	cd "$top/build-fuzz"
	ctest --output-on-failure -L fuzz -j"$(nproc)"
fi
