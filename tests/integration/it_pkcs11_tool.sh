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
[ "$(echo "$pooled" | grep -c ': OK')" -ge "$(echo "$direct" | grep -c ': OK')" ] ||
	fail "fewer passing checks through the pool than on SoftHSM directly"
echo "$pooled" | grep -qiE "failed|ERR" && ! echo "$pooled" | grep -q "CKR_ARGUMENTS_BAD" &&
	fail "a check failed through the pool"
if echo "$direct" | grep -q "CKR_ARGUMENTS_BAD"; then
	echo "$pooled" | grep -q "CKR_ARGUMENTS_BAD" || fail "expected SoftHSM's OAEP-label error"
else
	echo "$pooled" | grep -qiE "error" && fail "pkcs11-tool --test failed through the pool only"
fi
stop_daemon
pass "pkcs11-tool --test: $(echo "$pooled" | grep -c ': OK') checks OK, same outcome as SoftHSM"
