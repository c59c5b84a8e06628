#!/usr/bin/env bash
# A member that holds a different key under the same ID and label is left out of that key
# (and says so in the log); the other keys still use it.
. "$(dirname "$0")/lib.sh"
it_setup --odd-token hsm2
start_daemon
grep -q 'member hsm2 holds a different private key "httpdcert" (id 01)' "$WORK/daemon.log" ||
	fail "the daemon did not report hsm2's different RSA key"
D="$WORK/data"
for i in $(seq 1 12); do
	echo "message $i" > "$D"
	p11tool --login --pin "$PIN" --sign -m SHA256-RSA-PKCS --id 01 -i "$D" -o "$WORK/sig" 2>/dev/null
	verify_rsa "$D" "$WORK/sig" || fail "signature $i was made with hsm2's different key"
done
# ECDSA keys are the same everywhere: hsm2 still serves them. With hsm1 and hsm3 drained, it
# is the only member left: the EC key still signs (on hsm2), the RSA key has no member.
CTL="$P11MUX_BUILD/p11muxctl"
"$CTL" drain hsm1 >/dev/null && "$CTL" drain hsm3 >/dev/null || fail "drain"
openssl dgst -sha256 -binary "$D" > "$D.sha256"
for i in $(seq 1 3); do
	p11tool --login --pin "$PIN" --sign -m ECDSA --id 02 -i "$D.sha256" -o "$WORK/esig" 2>/dev/null ||
		fail "ECDSA signature $i failed with only hsm2 in service"
done
if p11tool --login --pin "$PIN" --sign -m SHA256-RSA-PKCS --id 01 -i "$D" -o "$WORK/sig" 2>/dev/null; then
	fail "key 01 signed with only hsm2 in service (hsm2 holds a different key 01)"
fi
stop_daemon
grep "operations," "$WORK/daemon.log"
grep -q "member hsm2: 3 operations" "$WORK/daemon.log" || fail "hsm2 did not make the 3 ECDSA signatures"
pass "hsm2 left out of key 01 only; 12 RSA signatures verify with the pool's key; with hsm2 alone, EC signs and key 01 is refused"
