#!/usr/bin/env bash
# module_lock = yes holds one lock for the whole module through every call, as OpenSC does:
# two tokens signing from two threads take turns, and a hung token stops calls for the other.
# With module_lock = no the tokens sign in parallel.
. "$(dirname "$0")/lib.sh"
sim_setup
sim_client modlock
