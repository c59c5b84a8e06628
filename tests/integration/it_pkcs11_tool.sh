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
	grep -qF "$section" <<< "$pooled" || fail "section '$section' not reached"
done
# pkcs11-tool tests every mechanism on the first RSA key it finds and one on the others, and
# the order of keys differs from run to run (on SoftHSM directly too): count a floor, not an
# exact figure. Digests (3), verification (at least 1), decryption (at least 1).
[ "$(echo "$pooled" | grep -c ': OK')" -ge 5 ] || fail "fewer than 5 checks passed through the pool"
for check in "MD5: OK" "SHA-1: OK" "SHA256: OK" "RSA-X-509: OK" "RSA-PKCS: OK"; do
	grep -qF "$check" <<< "$pooled" || fail "'$check' missing through the pool"
done
grep -qiE "failed|ERR" <<< "$pooled" && ! grep -q "CKR_ARGUMENTS_BAD" <<< "$pooled" &&
	fail "a check failed through the pool"
if grep -q "CKR_ARGUMENTS_BAD" <<< "$direct"; then
	grep -q "CKR_ARGUMENTS_BAD" <<< "$pooled" || fail "expected SoftHSM's OAEP-label error"
else
	grep -qiE "error" <<< "$pooled" && fail "pkcs11-tool --test failed through the pool only"
fi
pass "pkcs11-tool --test: $(echo "$pooled" | grep -c ': OK') checks OK, same outcome as SoftHSM"

# Key by key. pkcs11-tool --test takes no --id (OpenSC 0.23 tests every private key whatever
# --id says), so its report is split by key instead: each result line goes with the key whose
# "testing key N (LABEL)" line it follows, and each key's lines must be the same through the
# pool as on a member directly. Which key comes first (and gets every mechanism tested)
# follows the order in which the keys are found, which differs from token to token; the pool
# lists its objects in the order of the member it read them from first. So the pool's report
# is compared with that of a member whose keys come in the same order. Left out: SoftHSM takes
# C_SeedRandom, the pool answers that it takes no seed; and the error's call (SoftHSM refuses
# the OAEP label at C_DecryptInit, the pool at C_Decrypt, as it checks at Init only what it
# knows), so of the error only the code is compared.
# bykey OUT: "KEY|SECTION|result" lines, KEY "-" for lines of no key.
bykey() {
	awk '/^[^ ]/ {sec = $0; key = "-"; if ($0 !~ /^Using slot/) print "-|" sec; next}
		/seeding \(C_SeedRandom\) not supported/ {next}
		/^ *testing key [0-9]+ \(/ {match($0, /\(.*\)/); key = substr($0, RSTART + 1, RLENGTH - 2)
			rest = substr($0, RSTART + RLENGTH); sub(/^ +/, "", rest); print key "|" sec "|testing " rest; next}
		{line = $0; sub(/^ +/, "", line); print key "|" sec "|" line}' "$1"
}
order() {
	grep -o "testing key [0-9]* ([^)]*)" "$1" | awk '!seen[$0]++' | tr '\n' ' '
}
p11tool --login --pin "$PIN" --test > "$WORK/pool.out" 2> "$WORK/pool.err" || true
for member in hsm1 hsm2 hsm3; do
	pkcs11-tool --module "$SOFTHSM" --token-label "$member" --login --pin "$PIN" --test \
		> "$WORK/direct.out" 2> "$WORK/direct.err" || true
	[ "$(order "$WORK/pool.out")" = "$(order "$WORK/direct.out")" ] && break
done
[ "$(order "$WORK/pool.out")" = "$(order "$WORK/direct.out")" ] ||
	fail "pkcs11-tool --test finds the keys in an order no member has: $(order "$WORK/pool.out")"
echo "pkcs11-tool --test key by key: the pool ($(order "$WORK/pool.out")) against $member"
bykey "$WORK/direct.out" > "$WORK/direct.keys"
bykey "$WORK/pool.out" > "$WORK/pool.keys"
for key in - httpdcert eccert; do
	grep -q "^$key|" "$WORK/pool.keys" || fail "pkcs11-tool --test reports nothing for key $key"
	diff -u <(grep "^$key|" "$WORK/direct.keys") <(grep "^$key|" "$WORK/pool.keys") > "$WORK/keys.diff" ||
		fail "pkcs11-tool --test, key $key: other results through the pool: $(cat "$WORK/keys.diff")"
done
grep -q "^httpdcert|Decryption.*|RSA-PKCS: OK" "$WORK/pool.keys" ||
	fail "no RSA-PKCS decryption checked with httpdcert"
[ "$(grep -o "rv = CKR_[A-Z_]*" "$WORK/direct.err")" = "$(grep -o "rv = CKR_[A-Z_]*" "$WORK/pool.err")" ] ||
	fail "pkcs11-tool --test ends with another error through the pool: $(cat "$WORK/pool.err")"
stop_daemon
pass "pkcs11-tool --test, key by key: $(grep -c '^httpdcert|' "$WORK/pool.keys") lines for httpdcert," \
	"$(grep -c '^eccert|' "$WORK/pool.keys") for eccert, as on $member"
