#!/usr/bin/env bash
# pin-locked: C_Login answers CKR_PIN_LOCKED (the right PIN included) and the token info
# has CKF_USER_PIN_LOCKED, without touching the retry counter; cleared, the login works.
. "$(dirname "$0")/lib.sh"
sim_setup
sim_client pinlocked
