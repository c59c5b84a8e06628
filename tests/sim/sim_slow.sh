#!/usr/bin/env bash
# slow 3: a signature takes three times as long within 100 ms of writing the file, and the
# normal time again within 100 ms of clearing it.
. "$(dirname "$0")/lib.sh"
sim_setup
sim_client slow
