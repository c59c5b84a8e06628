#!/usr/bin/env bash
# One command at a time per token: two signatures on one token take about twice as long as one,
# on two tokens about as long as one; a short command waits behind a signature; queued commands
# are served in arrival order.
. "$(dirname "$0")/lib.sh"
sim_setup
sim_client serial
