#!/usr/bin/env bash
# openssl pkeyutl through Debian's PKCS#11 engine (libp11) with the shim as its module: signs
# with RSA PKCS#1 v1.5, RSA-PSS and ECDSA (verified by plain openssl against the tokens' public
# keys) and decrypts what plain openssl encrypted to the RSA key with PKCS#1 v1.5, OAEP
# (SHA-1) and OAEP (SHA-256). Each operation is then run again with OpenSC's pkcs11-spy between
# the engine and the module, through the pool and on SoftHSM token hsm1 directly: the engine
# must ask for the same mechanisms with the same parameters both ways. That is where
# OAEP-SHA-256 shows what it is: SoftHSM 2.6 refuses OAEP with any hash but SHA-1
# (CKR_ARGUMENTS_BAD), and libp11 then decrypts with CKM_RSA_X_509 and removes the padding
# itself, on SoftHSM as through the pool. (SoftHSM refuses it at C_DecryptInit, the pool at
# C_Decrypt: the shim checks at Init only what it knows, docs/architecture.md.)
. "$(dirname "$0")/lib.sh"
ENGINE=$(find /usr/lib -name pkcs11.so -path "*engines*" 2>/dev/null | head -1)
[ -n "$ENGINE" ] || fail "libengine-pkcs11-openssl is not installed"
SPY=$(find /usr/lib -name pkcs11-spy.so 2>/dev/null | head -1)
[ -n "$SPY" ] || fail "OpenSC's pkcs11-spy.so is not installed"
it_setup
start_daemon
write_engine_conf "$WORK/pool.cnf"
sed "s|^MODULE_PATH = .*|MODULE_PATH = $SPY|" "$WORK/pool.cnf" > "$WORK/spy.cnf"
POOL="pkcs11:token=p11mux%20pool"
DIRECT="pkcs11:token=hsm1"

# pk CONF URI pkeyutl-arguments...: openssl pkeyutl with the key URI from the engine.
pk() {
	local conf=$1 uri=$2
	shift 2
	OPENSSL_CONF="$conf" openssl pkeyutl -engine pkcs11 -keyform engine -inkey "$uri" "$@" 2> "$WORK/pk.err"
}

# mechs SPYLOG: the mechanisms (type and parameters) the engine gave C_SignInit and
# C_DecryptInit, in order.
mechs() {
	awk '/^[0-9]+: C_(Sign|Decrypt)Init$/ {init = 1; print $2; next}
		init && /pMechanism->/ {sub(/[ \t]+$/, ""); print}
		/^Returned:/ {init = 0}' "$1"
}

# spied NAME MODULE URI pkeyutl-arguments...: the operation with pkcs11-spy in front of MODULE;
# the mechanisms asked for go to $WORK/mechs.NAME, the output to $WORK/spy.out.
spied() {
	local name=$1 module=$2 uri=$3
	shift 3
	: > "$WORK/spy.log"
	PKCS11SPY="$module" PKCS11SPY_OUTPUT="$WORK/spy.log" pk "$WORK/spy.cnf" "$uri" "$@" -out "$WORK/spy.out" ||
		fail "pkeyutl $* through pkcs11-spy on $module: $(cat "$WORK/pk.err")"
	mechs "$WORK/spy.log" > "$WORK/mechs.$name"
}

# same_mechs OBJECT MECHANISMS pkeyutl-arguments...: the operation asks for the same
# mechanisms through the pool as on hsm1 directly (whose output is left in $WORK/spy.out), and
# they are MECHANISMS (types, in order, separated by spaces).
same_mechs() {
	local obj=$1 want=$2
	shift 2
	spied pool "$SHIM" "$POOL;object=$obj;type=private" "$@"
	spied direct "$SOFTHSM" "$DIRECT;object=$obj;type=private" "$@"
	grep -q "pMechanism->type" "$WORK/mechs.direct" || fail "pkeyutl $*: no mechanism in the spy's log"
	diff -u "$WORK/mechs.direct" "$WORK/mechs.pool" > "$WORK/mechs.diff" ||
		fail "pkeyutl $*: other mechanisms through the pool than on SoftHSM: $(cat "$WORK/mechs.diff")"
	[ "$(awk '/pMechanism->type/ {printf "%s%s", sep, $NF; sep = " "}' "$WORK/mechs.pool")" = "$want" ] ||
		fail "pkeyutl $*: the engine asked for other mechanisms than $want: $(cat "$WORK/mechs.pool")"
}

head -c 1000 /dev/urandom > "$WORK/data"
openssl dgst -sha256 -binary "$WORK/data" > "$WORK/digest"
PSS=(-pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32 -pkeyopt digest:sha256)
for t in "rsa PKCS#1 CKM_RSA_PKCS" "rsa PSS CKM_RSA_PKCS_PSS" "ec ECDSA CKM_ECDSA"; do
	read -r key name mech <<< "$t"
	obj=httpdcert
	opts=(-pkeyopt digest:sha256)
	[ "$key" = ec ] && obj=eccert && opts=()
	[ "$name" = PSS ] && opts=("${PSS[@]}")
	pk "$WORK/pool.cnf" "$POOL;object=$obj;type=private" -sign -in "$WORK/digest" "${opts[@]}" \
		-out "$WORK/sig" || fail "pkeyutl -sign $name through the pool: $(cat "$WORK/pk.err")"
	openssl pkeyutl -verify -pubin -inkey "$KEYS/$key.pub.pem" -in "$WORK/digest" -sigfile "$WORK/sig" \
		"${opts[@]}" > "$WORK/verify.log" 2>&1 ||
		fail "the $name signature made through the pool does not verify: $(cat "$WORK/verify.log")"
	same_mechs "$obj" "$mech" -sign -in "$WORK/digest" "${opts[@]}"
done
pass "pkeyutl -sign, RSA PKCS#1 v1.5, RSA-PSS and ECDSA, through the pool: verified, same mechanisms"

head -c 32 /dev/urandom > "$WORK/plain"
# name:mechanisms asked for:pkeyopts (OAEP SHA-256: SoftHSM's refusal, then the fallback).
for t in "PKCS#1 v1.5:CKM_RSA_PKCS:rsa_padding_mode:pkcs1" "OAEP SHA-1:CKM_RSA_PKCS_OAEP:rsa_padding_mode:oaep" \
	"OAEP SHA-256:CKM_RSA_PKCS_OAEP CKM_RSA_X_509:rsa_padding_mode:oaep rsa_oaep_md:sha256 rsa_mgf1_md:sha256"; do
	IFS=: read -r name mech pkeyopts <<< "$t"
	opts=()
	for o in $pkeyopts; do opts+=(-pkeyopt "$o"); done
	openssl pkeyutl -encrypt -pubin -inkey "$KEYS/rsa.pub.pem" -in "$WORK/plain" -out "$WORK/cipher" "${opts[@]}"
	pk "$WORK/pool.cnf" "$POOL;object=httpdcert;type=private" -decrypt -in "$WORK/cipher" "${opts[@]}" \
		-out "$WORK/decrypted" || fail "pkeyutl -decrypt $name through the pool: $(cat "$WORK/pk.err")"
	cmp -s "$WORK/plain" "$WORK/decrypted" || fail "pkeyutl -decrypt $name through the pool: another plaintext"
	same_mechs httpdcert "$mech" -decrypt -in "$WORK/cipher" "${opts[@]}"
	cmp -s "$WORK/plain" "$WORK/spy.out" || fail "pkeyutl -decrypt $name on SoftHSM: another plaintext"
done
pass "pkeyutl -decrypt, PKCS#1 v1.5, OAEP SHA-1 and SHA-256, through the pool: the plaintext, same mechanisms"

stop_daemon
