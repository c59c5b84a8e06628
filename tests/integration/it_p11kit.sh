#!/usr/bin/env bash
# GnuTLS through p11-kit's module registry, without being told the module's path: the
# p11mux.module file that `cmake --install` writes (under the prefix) is registered in
# p11-kit's modules directory (under a name of this test's own, removed at the end); then
# `p11-kit list-modules` and `p11tool --list-tokens` show the pool's token, p11tool lists its
# keys, p11-kit-proxy.so shows the token and signs, and gnutls-serv serves TLS 1.3 and 1.2 with `--x509keyfile "pkcs11:…"`.
# With the daemon stopped, GnuTLS programs that never reached it do not wait for it and still
# see the other tokens.
# (lib.sh has a shell function named p11tool for pkcs11-tool: "command p11tool" is GnuTLS's.)
. "$(dirname "$0")/lib.sh"
MODDIR=$(pkg-config p11-kit-1 --variable p11_module_configs)
if [ ! -w "$MODDIR" ]; then
	echo "skip: $MODDIR is not writable (run as root to register a module with p11-kit)"
	exit 77
fi
# A run killed before its clean-up (a CTest time-out) leaves its registration, and every
# p11-kit program would keep loading that copy: remove what earlier runs left.
rm -f "$MODDIR"/p11mux-it-*.module
it_setup
REG=
GS=
trap '[ -z "$GS" ] || kill "$GS" 2>/dev/null || true; [ -z "$REG" ] || rm -f "$REG"; test_cleanup' EXIT

# Install as a package would (DESTDIR), under a prefix of its own: nothing may land outside
# the prefix, and the registration there names the installed module. Then register it,
# pointing at that staged copy.
PREFIX=/opt/p11mux-it
DESTDIR="$WORK/dest" cmake --install "$P11MUX_BUILD" --prefix "$PREFIX" > "$WORK/install.log" ||
	fail "cmake --install"
outside=$(cd "$WORK/dest" && find . -type f -not -path ".$PREFIX/*")
[ -z "$outside" ] || fail "cmake --install --prefix $PREFIX wrote outside the prefix: $outside"
installed=$(find "$WORK/dest$PREFIX" -path "*/p11-kit/modules/p11mux.module")
[ -f "$installed" ] || fail "cmake --install did not write share/p11-kit/modules/p11mux.module: $(cat "$WORK/install.log")"
modpath=$(awk '$1 == "module:" {print $2}' "$installed")
[ -f "$WORK/dest$modpath" ] || fail "p11mux.module names $modpath, which was not installed"
grep -q '^x-init-reserved: quiet=1$' "$installed" || fail "p11mux.module does not set quiet=1: $(cat "$installed")"
REG="$MODDIR/p11mux-it-${WORK##*.}.module"
sed "s|^module: .*|module: $WORK/dest$modpath|" "$installed" > "$REG"
pass "cmake --install --prefix $PREFIX writes only under it, p11mux.module (quiet=1) naming the installed $modpath"

start_daemon
out=$(p11-kit list-modules 2>&1 || true)
grep -q "^p11mux-it-.*: $WORK/dest$modpath" <<< "$out" && grep -q "token: $LABEL" <<< "$out" ||
	fail "p11-kit list-modules: $out"
out=$(command p11tool --list-tokens 2>&1 || true)
grep -q "Label: $LABEL" <<< "$out" || fail "p11tool --list-tokens: $out"
TOKEN="pkcs11:token=p11mux%20pool"
out=$(command p11tool --login --set-pin="$PIN" --list-privkeys "$TOKEN" 2>&1 || true)
grep -q "object=httpdcert" <<< "$out" || fail "p11tool --list-privkeys: $out"
pass "p11-kit list-modules and p11tool --list-tokens find the pool; p11tool lists its private keys"

# p11-kit-proxy.so, the one module that stands for every registered one (what an NSS
# application such as Firefox can load): the pool's token is there, and it signs.
PROXY=$(find /usr/lib -name p11-kit-proxy.so 2>/dev/null | head -1)
[ -n "$PROXY" ] || fail "p11-kit-proxy.so is not installed"
out=$(pkcs11-tool --module "$PROXY" -L 2>&1) || fail "pkcs11-tool on p11-kit-proxy.so: $out"
grep -q "token label *: $LABEL" <<< "$out" || fail "p11-kit-proxy.so does not show the pool: $out"
echo "signed through the proxy" > "$WORK/data"
pkcs11-tool --module "$PROXY" --token-label "$LABEL" --login --pin "$PIN" --sign -m SHA256-RSA-PKCS \
	--id 01 -i "$WORK/data" -o "$WORK/sig" > "$WORK/proxy-sign.log" 2>&1 ||
	fail "signing through p11-kit-proxy.so: $(cat "$WORK/proxy-sign.log")"
verify_rsa "$WORK/data" "$WORK/sig" || fail "the signature made through p11-kit-proxy.so does not verify"
pass "p11-kit-proxy.so shows the pool's token and signs with its key"

# gnutls-serv serves TLS with the pool's key, found by URI alone (PIN from GNUTLS_PIN).
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
GNUTLS_PIN=$PIN gnutls-serv --x509keyfile "$TOKEN;object=httpdcert;type=private" \
	--x509certfile "$KEYS/rsa.crt.pem" -p "$PORT" > "$WORK/gnutls-serv.log" 2>&1 &
GS=$!
for _ in $(seq 1 300); do (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
out=$(timeout 20 openssl s_client -connect "127.0.0.1:$PORT" -tls1_3 < /dev/null 2>&1 || true)
grep -q "New, TLSv1.3" <<< "$out" && grep -q "Peer signature type: RSA-PSS" <<< "$out" ||
	fail "gnutls-serv TLS 1.3: $out $(cat "$WORK/gnutls-serv.log")"
out=$(timeout 20 openssl s_client -connect "127.0.0.1:$PORT" -tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256 < /dev/null 2>&1 || true)
grep -q "Cipher is ECDHE-RSA-AES128-GCM-SHA256" <<< "$out" || fail "gnutls-serv TLS 1.2: $out"
kill "$GS"
GS=
pass "gnutls-serv serves TLS 1.3 and 1.2 with the pool's key, named by a pkcs11: URI only"

# With the daemon stopped, a GnuTLS program that never reached it does not wait out
# reconnect_ms (set to 60 s here) and still lists the other tokens.
stop_daemon
out=$(P11MUX_RECONNECT_MS=60000 timeout 30 p11tool --list-tokens 2>&1) ||
	fail "p11tool --list-tokens with the daemon stopped (status $?): $out"
grep -q "Label: $LABEL" <<< "$out" && fail "the pool's token listed with the daemon stopped: $out"
grep -q "System Trust" <<< "$out" || fail "p11tool lost the other tokens: $out"
pass "with the daemon stopped, p11tool answers at once and lists the other tokens"
