#!/usr/bin/env bash
# error 0.3: about 30% of the calls fail with CKR_DEVICE_ERROR, the same calls in every run
# (seeded per token); a failed signature leaves no operation behind; cleared, none fail.
. "$(dirname "$0")/lib.sh"
sim_setup
sim_client error
