#!/usr/bin/env bash
# Signatures made through the pool verify with openssl: RSA PKCS#1 v1.5, RSA-PSS (SHA-256),
# ECDSA P-256; decryption round-trips (PKCS#1 v1.5 and OAEP); multi-part signing works.
. "$(dirname "$0")/lib.sh"
it_setup
start_daemon
D="$WORK/data"
head -c 1000 /dev/urandom > "$D"
openssl dgst -sha256 -binary "$D" > "$D.sha256"

p11tool --login --pin "$PIN" --sign -m SHA256-RSA-PKCS --id 01 -i "$D" -o "$WORK/s1"
verify_rsa "$D" "$WORK/s1" || fail "SHA256-RSA-PKCS signature does not verify"
pass "RSA PKCS#1 v1.5 (SHA256-RSA-PKCS, multi-part in pkcs11-tool)"

p11tool --login --pin "$PIN" --sign -m RSA-PKCS-PSS --hash-algorithm SHA256 --mgf MGF1-SHA256 \
	--id 01 -i "$D.sha256" -o "$WORK/s2"
openssl pkeyutl -verify -pubin -inkey "$KEYS/rsa.pub.pem" -in "$D.sha256" -sigfile "$WORK/s2" \
	-pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:digest >/dev/null ||
	fail "RSA-PSS signature does not verify"
pass "RSA-PSS SHA-256 (parameters encoded on the wire)"

p11tool --login --pin "$PIN" --sign -m ECDSA --id 02 -i "$D.sha256" --signature-format openssl -o "$WORK/s3"
openssl dgst -sha256 -verify "$KEYS/ec.pub.pem" -signature "$WORK/s3" "$D" >/dev/null ||
	fail "ECDSA signature does not verify"
pass "ECDSA P-256"

head -c 32 /dev/urandom > "$WORK/secret"
openssl pkeyutl -encrypt -pubin -inkey "$KEYS/rsa.pub.pem" -in "$WORK/secret" -out "$WORK/ct1"
p11tool --login --pin "$PIN" --decrypt -m RSA-PKCS --id 01 -i "$WORK/ct1" -o "$WORK/pt1"
cmp -s "$WORK/secret" "$WORK/pt1" || fail "RSA-PKCS decryption did not round-trip"
openssl pkeyutl -encrypt -pubin -inkey "$KEYS/rsa.pub.pem" -in "$WORK/secret" -out "$WORK/ct2" \
	-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha1 -pkeyopt rsa_mgf1_md:sha1
# pkcs11-tool 0.23 sends OAEP with source 0, which SoftHSM refuses; the test client sends
# CKZ_DATA_SPECIFIED with an empty label, as OpenSSL's engine does.
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$SHIM" oaep "$WORK/ct2" "$WORK/pt2" ||
	fail "RSA-OAEP decryption through the pool"
cmp -s "$WORK/secret" "$WORK/pt2" || fail "RSA-OAEP decryption did not round-trip"
pass "decryption: RSA PKCS#1 v1.5 and OAEP (parameters encoded on the wire)"

# Without login, the private key is not there.
if p11tool --sign -m SHA256-RSA-PKCS --id 01 -i "$D" -o "$WORK/s4" 2>/dev/null; then
	fail "signed without logging in"
fi
pass "no signature without login"
stop_daemon
