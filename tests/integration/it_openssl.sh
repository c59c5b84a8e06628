#!/usr/bin/env bash
# OpenSSL through Debian's PKCS#11 engine (libp11) with MODULE_PATH = p11mux-pkcs11.so: a
# self-signed certificate made by `openssl req -engine pkcs11` is signed by the pool's key;
# and GnuTLS's p11tool, given the module with --provider, lists the pool's token and key.
# (GnuTLS through p11-kit's module registry, and gnutls-serv, are in it_p11kit.)
# (lib.sh has a shell function named p11tool for pkcs11-tool: "command p11tool" is GnuTLS.s.)
. "$(dirname "$0")/lib.sh"
ENGINE=$(find /usr/lib -name pkcs11.so -path "*engines*" 2>/dev/null | head -1)
[ -n "$ENGINE" ] || fail "libengine-pkcs11-openssl is not installed"
it_setup
start_daemon
write_engine_conf "$WORK/openssl.cnf"
printf '[req]\ndistinguished_name = dn\n[dn]\n' >> "$WORK/openssl.cnf"
URI="pkcs11:token=p11mux%20pool;object=httpdcert;type=private"
OPENSSL_CONF="$WORK/openssl.cnf" openssl req -new -x509 -days 30 -engine pkcs11 -keyform engine \
	-key "$URI" -subj "/CN=made by the pool" -out "$WORK/cert.pem" 2> "$WORK/req.err" ||
	fail "openssl req with the engine: $(cat "$WORK/req.err")"
openssl verify -CAfile "$WORK/cert.pem" "$WORK/cert.pem" > /dev/null || fail "the certificate's signature"
diff <(openssl x509 -in "$WORK/cert.pem" -noout -pubkey) "$KEYS/rsa.pub.pem" > /dev/null ||
	fail "the certificate does not carry the pool's key"
pass "openssl req -engine pkcs11: certificate signed by the pool's key verifies"

out=$(command p11tool --provider "$SHIM" --list-tokens 2>&1 || true)
grep -q "Label: $LABEL" <<< "$out" || fail "p11tool --list-tokens: $out"
out=$(command p11tool --provider "$SHIM" --login --set-pin="$PIN" --list-privkeys "pkcs11:token=p11mux%20pool" 2>&1 || true)
grep -q "object=httpdcert" <<< "$out" || fail "p11tool --list-privkeys: $out"
pass "p11tool (GnuTLS) lists the pool's token and private keys"

stop_daemon
