#!/usr/bin/env bash
# Wrong PINs count down the token's retry counter (3 tries, as a Nitrokey HSM): the token info
# shows CKF_USER_PIN_COUNT_LOW, then CKF_USER_PIN_FINAL_TRY, then CKF_USER_PIN_LOCKED, after
# which the right PIN is refused with CKR_PIN_LOCKED; a right PIN before that resets it. With
# a control directory the counter is the file $DIR/LABEL.retries; without one, in memory.
. "$(dirname "$0")/lib.sh"
sim_setup
sim_client retries file
[ "$(cat "$CTL/hsm2.retries")" = 3 ] || fail "hsm2.retries should be 3 after the reset"
pass "the counter file is readable from outside: hsm2.retries = 3"
[ ! -e "$CTL/hsm1.retries" ] || [ "$(cat "$CTL/hsm1.retries")" = 3 ] ||
	fail "hsm1's counter moved"
unset P11SIM_CONTROL_DIR
sim_client retries memory
