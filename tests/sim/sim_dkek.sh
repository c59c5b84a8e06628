#!/usr/bin/env bash
# The key lifecycle on SoftHSM tokens with p11sim-tool (docs/simulator.md, "The key
# lifecycle"): a DKEK share, two tokens initialised with it, the RSA key wrapped on one and
# unwrapped into the other (same public key and certificate, a signature that verifies with
# openssl against the original public key), an EC key generated, wrapped and unwrapped
# through the simulator, and a token with a different DKEK that refuses the key.
. "$(dirname "$0")/lib.sh"
: "${SIM_TOOL:?set by CTest}"
sim_setup --tokens 1 --extractable          # hsm1 holds the keys, extractable only wrapped
SO_PIN=0102030405060708
for t in hsm2 hsm3; do                      # hsm2: the new device; hsm3: another DKEK
	softhsm2-util --init-token --free --label "$t" --so-pin "$SO_PIN" --pin "$PIN" >/dev/null
done
SOFTHSM=${SOFTHSM2_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
tool() { "$SIM_TOOL" --module "$SOFTHSM" "$@" > "$WORK/out" 2> "$WORK/err"; }
p11() { pkcs11-tool --module "$SOFTHSM" "$@" 2>/dev/null; }
# same_pubkey ID: hsm1 and hsm2 hold the same public key ID.
same_pubkey() {
	for t in hsm1 hsm2; do
		p11 --token-label "$t" --read-object --type pubkey --id "$1" -o "$WORK/$t.$1.pub" ||
			fail "no public key $1 on $t"
	done
	cmp -s "$WORK/hsm1.$1.pub" "$WORK/hsm2.$1.pub" || fail "the public keys $1 differ"
}

tool dkek-share "$WORK/dkek.pbe" --password env:PWD_UNSET && fail "an unset env: password was taken"
export DKEK_PWD=correct-horse
tool dkek-share "$WORK/dkek.pbe" --password env:DKEK_PWD || fail "dkek-share: $(cat "$WORK/err")"
grep -q 'sc-hsm-tool --create-dkek-share' "$WORK/out" || fail "no sc-hsm-tool command shown"
[ "$(stat -c %s "$WORK/dkek.pbe")" = 100 ] || fail "the share file is not 100 bytes"
tool dkek-share "$WORK/other.pbe" || fail "dkek-share without a password"
pass "DKEK shares written, one protected by a password"

tool init --token hsm2 --pin "$PIN" --dkek-share "$WORK/dkek.pbe" --password wrong &&
	fail "init took a wrong password"
grep -q 'wrong password' "$WORK/err" || fail "wrong password not reported: $(cat "$WORK/err")"
tool init --token hsm1 --pin "$PIN" --so-pin "$SO_PIN" --dkek-share "$WORK/dkek.pbe" \
	--password env:DKEK_PWD || fail "init hsm1: $(cat "$WORK/err")"
kcv=$(sed -n 's/.*DKEK check value: //p' "$WORK/out")
tool init --token hsm2 --pin "$PIN" --dkek-share "$WORK/dkek.pbe" --password correct-horse ||
	fail "init hsm2: $(cat "$WORK/err")"
[ "$(sed -n 's/.*DKEK check value: //p' "$WORK/out")" = "$kcv" ] || fail "the DKEKs differ"
tool init --token hsm3 --pin "$PIN" --dkek-share "$WORK/other.pbe" || fail "init hsm3"
kcv3=$(sed -n 's/.*DKEK check value: //p' "$WORK/out")
tool init --token hsm2 --pin "$PIN" --dkek-share "$WORK/dkek.pbe" --password correct-horse &&
	fail "a second DKEK was imported"
p11 --token-label hsm2 --login --pin "$PIN" -O | grep -q 'label: *DKEK' || fail "no DKEK object"
pass "tokens initialised with the DKEK (check value $kcv), a wrong password refused"

tool wrap-key --token hsm1 --pin "$PIN" --id 01 --out "$WORK/rsa.wrap" ||
	fail "wrap-key: $(cat "$WORK/err")"
grep -q 'sc-hsm-tool --wrap-key' "$WORK/out" || fail "no sc-hsm-tool command shown"
tool unwrap-key --token hsm2 --pin "$PIN" --in "$WORK/rsa.wrap" ||
	fail "unwrap-key: $(cat "$WORK/err")"
same_pubkey 01
p11 --token-label hsm2 --read-object --type cert --id 01 -o "$WORK/hsm2.crt"
cmp -s "$WORK/hsm2.crt" "$KEYS/rsa.crt.der" || fail "the certificate was not restored"
p11 --token-label hsm2 --login --pin "$PIN" -O --id 01 --type privkey |
	grep -q 'label: *httpdcert' || fail "the private key's label was not restored"
echo "signed by the unwrapped key" > "$WORK/data"
p11 --token-label hsm2 --login --pin "$PIN" --sign -m SHA256-RSA-PKCS --id 01 \
	-i "$WORK/data" -o "$WORK/sig" || fail "hsm2 cannot sign with the unwrapped key"
openssl dgst -sha256 -verify "$KEYS/rsa.pub.pem" -signature "$WORK/sig" "$WORK/data" \
	>/dev/null || fail "the unwrapped key's signature does not verify with the original key"
pass "RSA key wrapped on hsm1, unwrapped into hsm2: same public key, certificate; signature verifies"

tool unwrap-key --token hsm3 --pin "$PIN" --in "$WORK/rsa.wrap" && fail "hsm3 took the key"
grep -q 'holds a different DKEK' "$WORK/err" || fail "unclear error: $(cat "$WORK/err")"
if p11 --token-label hsm3 --login --pin "$PIN" -O --type privkey | grep -q 'ID: *01'; then
	fail "hsm3 holds the key after all"
fi
# A file that claims hsm3's DKEK: SoftHSM's own unwrap fails, and nothing is left behind.
pass "a token with another DKEK refuses the key: $(cat "$WORK/err")"
python3 - "$WORK/rsa.wrap" "$WORK/forged.wrap" "$kcv3" <<'PY'
import hashlib, sys
d = open(sys.argv[1], 'rb').read()[:-32]
i = d.index(bytes([0, 0, 0, 0, 2, 0, 0, 0, 3])) + 9   # the DKEK check value record
d = d[:i] + bytes.fromhex(sys.argv[3]) + d[i + 3:]
open(sys.argv[2], 'wb').write(d + hashlib.sha256(d).digest())
PY
tool unwrap-key --token hsm3 --pin "$PIN" --in "$WORK/forged.wrap" && fail "a forged file"
grep -q 'C_UnwrapKey.*not wrapped under' "$WORK/err" || fail "unclear error: $(cat "$WORK/err")"
if p11 --token-label hsm3 --login --pin "$PIN" -O | grep -q 'ID: *01'; then
	fail "a failed unwrap left objects behind"
fi
pass "with the check value forged, SoftHSM's unwrap itself fails: $(cat "$WORK/err")"

tool generate-key --token hsm1 --pin "$PIN" --id 10 --label newtls --ec prime256v1 ||
	fail "generate-key: $(cat "$WORK/err")"
tool --module "$SIM_PLAIN_MODULE" wrap-key --token hsm1 --pin "$PIN" --id 10 \
	--out "$WORK/ec.wrap" || fail "wrap-key through the simulator: $(cat "$WORK/err")"
tool --module "$SIM_PLAIN_MODULE" unwrap-key --token hsm2 --pin "$PIN" --in "$WORK/ec.wrap" ||
	fail "unwrap-key through the simulator: $(cat "$WORK/err")"
same_pubkey 10
pass "EC P-256 key generated on hsm1, wrapped and unwrapped into hsm2 through the simulator"
