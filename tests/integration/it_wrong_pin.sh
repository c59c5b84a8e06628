#!/usr/bin/env bash
# A wrong PIN is refused with CKR_PIN_INCORRECT and never reaches a device: the daemon runs
# over OpenSC's pkcs11-spy in front of SoftHSM, and the spy's log shows every C_Login the
# devices received. A SmartCard-HSM locks after 3 wrong PINs; the pool must never spend one.
. "$(dirname "$0")/lib.sh"
it_setup
SPY=/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so
[ -f "$SPY" ] || fail "pkcs11-spy.so missing (package opensc-pkcs11)"
export PKCS11SPY="$SOFTHSM" PKCS11SPY_OUTPUT="$WORK/spy.log"
# Four wrong PINs in a row here; the pool's counter (pin_max_failures, it_pin_guess) would lock
# at the third.
write_config "$SPY" "pin_max_failures = 10;"
start_daemon
logins_at_start=$(grep -c "C_Login" "$WORK/spy.log")
[ "$logins_at_start" -eq 3 ] || fail "expected one device login per member at start-up, saw $logins_at_start"

for wrong in 000000 6482190 64821 ""; do
	out=$(p11tool --login --pin "${wrong:-x}" -O 2>&1 || true)
	grep -q "CKR_PIN_INCORRECT" <<< "$out" || fail "wrong PIN '$wrong' not refused with CKR_PIN_INCORRECT: $out"
done
grep -q "wrong PIN" "$WORK/daemon.log" || fail "daemon did not log the wrong PIN"
logins_after=$(grep -c "C_Login" "$WORK/spy.log")
[ "$logins_after" -eq "$logins_at_start" ] || fail "a wrong PIN reached a device ($logins_after logins)"
pass "4 wrong PINs refused, 0 reached a device"

# The right PIN works and costs no device login either.
p11tool --login --pin "$PIN" -O | grep -q "Private Key Object" || fail "right PIN refused"
[ "$(grep -c "C_Login" "$WORK/spy.log")" -eq "$logins_at_start" ] || fail "a client login reached a device"
pass "right PIN accepted without touching the devices"
stop_daemon
