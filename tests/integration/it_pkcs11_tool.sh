#!/usr/bin/env bash
# pkcs11-tool --test through the pool gives the same results as on a member directly.
# SoftHSM 2.6 rejects RSA-OAEP with a label (pkcs11-tool's last decrypt test) with
# CKR_ARGUMENTS_BAD, so pkcs11-tool --test ends with that error on SoftHSM itself; the pool
# must pass every test before it and then fail with the same code, not another.
. "$(dirname "$0")/lib.sh"
it_setup
start_daemon
direct=$(pkcs11-tool --module "$SOFTHSM" --token-label hsm1 --login --pin "$PIN" --test 2>&1 || true)
pooled=$(p11tool --login --pin "$PIN" --test 2>&1 || true)
echo "$pooled"
for section in "C_GenerateRandom" "Digests:" "Verify (currently only for RSA)" "Decryption (currently only for RSA)"; do
	echo "$pooled" | grep -qF "$section" || fail "section '$section' not reached"
done
# pkcs11-tool tests every mechanism on the first RSA key it finds and one on the others, and
# the order of keys differs from run to run (on SoftHSM directly too): count a floor, not an
# exact figure. Digests (3), verification (at least 1), decryption (at least 1).
[ "$(echo "$pooled" | grep -c ': OK')" -ge 5 ] || fail "fewer than 5 checks passed through the pool"
for check in "MD5: OK" "SHA-1: OK" "SHA256: OK" "RSA-X-509: OK" "RSA-PKCS: OK"; do
	echo "$pooled" | grep -qF "$check" || fail "'$check' missing through the pool"
done
echo "$pooled" | grep -qiE "failed|ERR" && ! echo "$pooled" | grep -q "CKR_ARGUMENTS_BAD" &&
	fail "a check failed through the pool"
if echo "$direct" | grep -q "CKR_ARGUMENTS_BAD"; then
	echo "$pooled" | grep -q "CKR_ARGUMENTS_BAD" || fail "expected SoftHSM's OAEP-label error"
else
	echo "$pooled" | grep -qiE "error" && fail "pkcs11-tool --test failed through the pool only"
fi
stop_daemon
pass "pkcs11-tool --test: $(echo "$pooled" | grep -c ': OK') checks OK, same outcome as SoftHSM"
