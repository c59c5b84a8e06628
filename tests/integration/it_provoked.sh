#!/usr/bin/env bash
# Errors a client can provoke take no member down: 1,000 RSA-PKCS decryptions of random bytes
# (bad padding: SoftHSM answers CKR_GENERAL_ERROR, which a failing
# device could answer too) and 1,000 ECDSA signatures of data of a wrong length that every
# member refuses with CKR_GENERAL_ERROR (the simulator's reject-on fault: SoftHSM itself signs
# any length), while 8 threads sign. Every member
# stays up, no member is blamed, the signers see 0 failures, and a decryption is never
# repeated on another member (the padding oracle). Then a member that really fails alone
# (the simulator's "error 1" fault) is found out by the second opinion and taken down.
. "$(dirname "$0")/lib.sh"
it_setup
DAEMON_EXTRA='probe_interval_ms = 100; probe_max_ms = 400;'
sim_setup 0.01
start_daemon
CTL="$P11MUX_BUILD/p11muxctl"
# (A 6-byte prefix: a legitimate signature's hash starts with it once in 2^48.)
for t in hsm1 hsm2 hsm3; do fault $t "reject-on bad0bad0bad0"; done

ITEST_UNTIL="$WORK/stop" P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$SHIM" \
	threads 8 10 "$KEYS/rsa.pub.pem" "$KEYS/ec.pub.pem" > "$WORK/signer.out" 2>&1 &
SIGNER=$!
trap '[ -z "${SIGNER:-}" ] || kill "$SIGNER" 2>/dev/null; test_cleanup' EXIT
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$SHIM" provoke 1000 > "$WORK/provoke.out" 2>&1 ||
	fail "provoking client: $(cat "$WORK/provoke.out")"
touch "$WORK/stop"
rc=0
wait "$SIGNER" || rc=$?
SIGNER=
cat "$WORK/provoke.out" "$WORK/signer.out"
[ "$rc" -eq 0 ] || fail "the signers had failures while another client provoked errors"
grep -q "^decrypt: 0x5=1000$" "$WORK/provoke.out" ||
	fail "the bad decryptions were not all refused with the device's CKR_GENERAL_ERROR: $(cat "$WORK/provoke.out")"
grep -q "^ecdsa: 0x5=1000$" "$WORK/provoke.out" ||
	fail "the refused signatures did not all get the devices' CKR_GENERAL_ERROR: $(cat "$WORK/provoke.out")"

states=$("$CTL" status --json | python3 -c '
import json, sys
p = json.load(sys.stdin)["pools"][0]
print(" ".join("%s=%s/%d" % (m["label"], m["state"], m["errors"]) for m in p["members"]))')
echo "members: $states"
grep -q "down\|probing\|excluded" <<< "$states" && fail "a member went out of service: $states"
grep -q "/[1-9]" <<< "$states" && fail "a member was blamed for the client's input: $states"
grep -q "member .* down" "$WORK/daemon.log" && fail "a member went down: $(grep "down" "$WORK/daemon.log")"
pass "1000 bad-padding decryptions and 1000 wrong-length ECDSA signatures: every member up, none blamed, 0 failed signatures"
for t in hsm1 hsm2 hsm3; do fault $t ""; done

# A member that fails alone is found out: hsm2 answers every command with
# CKR_DEVICE_ERROR (the same code a bad input gets), the others do not.
fault hsm2 "error 1"
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$SHIM" threads 4 20 "$KEYS/rsa.pub.pem" "$KEYS/ec.pub.pem" ||
	fail "signing while hsm2 failed every command"
wait_until 30 grep -q "member hsm2 down: 3 errors in a row (CKR_DEVICE_ERROR) that other members did not give" "$WORK/daemon.log" ||
	fail "hsm2 failing alone was not taken down"
fault hsm2 ""
pass "a member failing alone was taken down after 3 errors the others did not give, with 0 failed signatures"
stop_daemon
