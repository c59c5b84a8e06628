#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds with AddressSanitizer and
# UndefinedBehaviorSanitizer (daemon, tools, unit tests), and runs every test with CTest.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh"
BUILD_DIR="$top/build-test" "$top/scripts/build.sh" -DP11MUX_SANITIZE=ON
cd "$top/build-test"
ctest --output-on-failure -j"$(nproc)" "$@"
