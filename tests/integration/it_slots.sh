#!/usr/bin/env bash
# pkcs11-tool -L through the shim shows exactly one slot, with the pool's label and the
# flags NSS and mod_nss need.
. "$(dirname "$0")/lib.sh"
it_setup
start_daemon
out=$(p11tool -L)
echo "$out"
[ "$(echo "$out" | grep -c '^Slot ')" -eq 1 ] || fail "expected exactly one slot"
grep -q "token label *: $LABEL\$" <<< "$out" || fail "pool label not shown"
grep -q "login required" <<< "$out" || fail "CKF_LOGIN_REQUIRED missing"
grep -q "PIN initialized" <<< "$out" || fail "CKF_USER_PIN_INITIALIZED missing"
grep -q "token initialized" <<< "$out" || fail "CKF_TOKEN_INITIALIZED missing"
grep -q "rng" <<< "$out" || fail "CKF_RNG missing (all members have an RNG)"
# The same slot ID after a daemon restart: NSS keeps slot IDs for the life of a process.
id1=$(echo "$out" | sed -n 's/^Slot \([0-9]*\).*/\1/p')
stop_daemon
start_daemon
id2=$(p11tool -L | sed -n 's/^Slot \([0-9]*\).*/\1/p')
[ "$id1" = "$id2" ] || fail "slot ID changed across a restart ($id1 -> $id2)"
# Objects: three of each kind behind one view, the private ones only after login.
objs=$(p11tool --login --pin "$PIN" -O)
[ "$(echo "$objs" | grep -c '^Private Key Object')" -eq 2 ] || fail "expected 2 private keys"
[ "$(echo "$objs" | grep -c '^Certificate Object')" -eq 2 ] || fail "expected 2 certificates"
[ "$(p11tool -O | grep -c '^Private Key Object' || true)" -eq 0 ] || fail "private keys visible without login"
stop_daemon
pass "one slot, stable ID, pool label and flags"
