#!/usr/bin/env bash
# The crash fault: a process signing on a token whose control file says "crash" is aborted in
# the middle of C_Sign (SIGABRT); "crash-on HEX" only when the input starts with those bytes.
. "$(dirname "$0")/lib.sh"
sim_setup
sim_client crash
