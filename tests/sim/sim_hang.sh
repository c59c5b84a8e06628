#!/usr/bin/env bash
# hang: calls on the token block until the file changes (another token keeps working), then
# go on; hung then removed, they fail with CKR_DEVICE_REMOVED.
. "$(dirname "$0")/lib.sh"
sim_setup
sim_client hang
