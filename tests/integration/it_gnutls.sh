#!/usr/bin/env bash
# GnuTLS's tools with the shim as their provider: certtool makes self-signed certificates
# with the pool's RSA key (PKCS#1 v1.5 and RSA-PSS) and EC key, named by pkcs11: URI, and
# they carry the tokens' public keys and verify; p11tool --test-sign signs with each key and
# checks the signature against the key's parameters and the token's public key.
# (lib.sh has a shell function named p11tool for pkcs11-tool: "command p11tool" is GnuTLS's.)
. "$(dirname "$0")/lib.sh"
it_setup
start_daemon
export GNUTLS_PIN=$PIN
TOKEN="pkcs11:token=p11mux%20pool"
cat > "$WORK/template" <<TMPL
cn = "made by the pool"
expiration_days = 30
ca
cert_signing_key
signing_key
TMPL

# selfsign OBJECT PUBPEM SIGALG [certtool options...]: a self-signed certificate with the
# pool's key OBJECT, which must hold PUBPEM, be signed with SIGALG, and verify.
selfsign() {
	local obj=$1 pub=$2 alg=$3 cert="$WORK/$1-$3.pem"
	shift 3
	certtool --provider "$SHIM" --generate-self-signed "$@" \
		--load-privkey "$TOKEN;object=$obj;type=private" --template "$WORK/template" \
		--outfile "$cert" > "$WORK/certtool.log" 2>&1 ||
		fail "certtool --generate-self-signed with $obj $*: $(cat "$WORK/certtool.log")"
	diff <(openssl x509 -in "$cert" -noout -pubkey) "$pub" > /dev/null ||
		fail "the certificate made with $obj does not carry its public key"
	openssl x509 -in "$cert" -noout -text | grep -q "Signature Algorithm: $alg" ||
		fail "the certificate made with $obj $* is not signed with $alg"
	openssl verify -CAfile "$cert" "$cert" > "$WORK/verify.log" 2>&1 ||
		fail "openssl verify of the certificate made with $obj $*: $(cat "$WORK/verify.log")"
	certtool --verify-chain --infile "$cert" > "$WORK/verify.log" 2>&1 || true
	grep -q "Chain verification output: Verified" "$WORK/verify.log" ||
		fail "certtool --verify-chain of the certificate made with $obj $*: $(cat "$WORK/verify.log")"
}
selfsign httpdcert "$KEYS/rsa.pub.pem" sha256WithRSAEncryption
selfsign httpdcert "$KEYS/rsa.pub.pem" rsassaPss --sign-params RSA-PSS
selfsign eccert "$KEYS/ec.pub.pem" ecdsa-with-SHA256
pass "certtool --generate-self-signed with the pool's RSA (PKCS#1, PSS) and EC keys: their keys, verified"

# p11tool --test-sign: "Signing using ALG... ok", then the signature checked against the
# private key's parameters and against the public key object in the token.
for t in httpdcert:RSA-SHA256 httpdcert:RSA-PSS-SHA256:--sign-params=RSA-PSS eccert:ECDSA-SHA256; do
	IFS=: read -r obj alg opt <<< "$t"
	# shellcheck disable=SC2086 # opt is one option or none
	out=$(command p11tool --provider "$SHIM" --login --test-sign $opt "$TOKEN;object=$obj" 2>&1) ||
		fail "p11tool --test-sign $obj $opt: $out"
	for line in "Signing using $alg... ok" "Verifying against private key parameters... ok" \
		"Verifying against public key in the token... ok"; do
		grep -qF "$line" <<< "$out" || fail "p11tool --test-sign $obj $opt: no '$line' in: $out"
	done
done
pass "p11tool --test-sign with the pool's RSA (PKCS#1, PSS) and EC keys: signatures verified"

stop_daemon
