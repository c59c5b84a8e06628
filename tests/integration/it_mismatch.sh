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
# ECDSA keys are the same everywhere: hsm2 still serves them.
openssl dgst -sha256 -binary "$D" > "$D.sha256"
for i in $(seq 1 6); do
	p11tool --login --pin "$PIN" --sign -m ECDSA --id 02 -i "$D.sha256" -o "$WORK/esig" 2>/dev/null
done
stop_daemon
grep "operations," "$WORK/daemon.log"
grep -q "member hsm2: [1-9]" "$WORK/daemon.log" || fail "hsm2 was not used for the keys it shares"
pass "hsm2 left out of key 01 only; 12 RSA signatures all verify with the pool's key"
