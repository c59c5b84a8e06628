#!/usr/bin/env bash
# Signatures made through the simulator verify with openssl (RSA PKCS#1 v1.5, RSA-PSS, ECDSA
# P-256), and decryption round-trips, with pkcs11-tool on the module as shipped.
. "$(dirname "$0")/lib.sh"
sim_setup
D="$WORK/data"
head -c 1000 /dev/urandom > "$D"
openssl dgst -sha256 -binary "$D" > "$D.sha256"

simtool --token-label hsm2 --login --pin "$PIN" --sign -m SHA256-RSA-PKCS --id 01 -i "$D" \
	-o "$WORK/s1" 2>/dev/null
openssl dgst -sha256 -verify "$KEYS/rsa.pub.pem" -signature "$WORK/s1" "$D" >/dev/null ||
	fail "SHA256-RSA-PKCS signature does not verify"
pass "RSA PKCS#1 v1.5 (SHA256-RSA-PKCS, multi-part)"

simtool --token-label hsm1 --login --pin "$PIN" --sign -m RSA-PKCS-PSS --hash-algorithm SHA256 \
	--mgf MGF1-SHA256 --id 01 -i "$D.sha256" -o "$WORK/s2" 2>/dev/null
openssl pkeyutl -verify -pubin -inkey "$KEYS/rsa.pub.pem" -in "$D.sha256" -sigfile "$WORK/s2" \
	-pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:digest \
	>/dev/null || fail "RSA-PSS signature does not verify"
pass "RSA-PSS SHA-256"

simtool --token-label hsm3 --login --pin "$PIN" --sign -m ECDSA --id 02 -i "$D.sha256" \
	--signature-format openssl -o "$WORK/s3" 2>/dev/null
openssl dgst -sha256 -verify "$KEYS/ec.pub.pem" -signature "$WORK/s3" "$D" >/dev/null ||
	fail "ECDSA signature does not verify"
pass "ECDSA P-256"

head -c 32 /dev/urandom > "$WORK/secret"
openssl pkeyutl -encrypt -pubin -inkey "$KEYS/rsa.pub.pem" -in "$WORK/secret" -out "$WORK/ct"
simtool --token-label hsm1 --login --pin "$PIN" --decrypt -m RSA-PKCS --id 01 -i "$WORK/ct" \
	-o "$WORK/pt" 2>/dev/null
cmp -s "$WORK/secret" "$WORK/pt" || fail "RSA-PKCS decryption did not round-trip"
pass "RSA PKCS#1 v1.5 decryption"
