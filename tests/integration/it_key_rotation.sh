#!/usr/bin/env bash
# docs/operations.md, "Rotating the TLS key", end to end on the simulator, with nginx serving
# TLS from the pool and clients connecting throughout: the new key is generated on one
# member, wrapped under the DKEK and unwrapped into the others, the pool rescanned, a
# certificate made for the key through the pool, nginx switched to it and reloaded; then
# the old key is deleted from the members and withdrawn. Every handshake succeeds, and the
# clients see the old certificate, then only the new one.
. "$(dirname "$0")/lib.sh"
command -v nginx >/dev/null || fail "nginx is needed (scripts/deps.sh)"
it_setup --extractable
SO_PIN=0102030405060708
tool() { "$P11MUX_BUILD/p11sim-tool" --module "$SOFTHSM" "$@" > "$WORK/tool.out" 2>&1 || fail "p11sim-tool $1: $(cat "$WORK/tool.out")"; }
ctl() { "$P11MUX_BUILD/p11muxctl" "$@"; }
export DKEK_PWD=correct-horse
tool dkek-share "$WORK/dkek.pbe" --password env:DKEK_PWD
for t in hsm1 hsm2 hsm3; do
	tool init --token "$t" --pin "$PIN" --so-pin "$SO_PIN" --dkek-share "$WORK/dkek.pbe" --password env:DKEK_PWD
done
DAEMON_EXTRA='allowed_users = [ "www-data" ]; socket_group = "www-data";'
sim_setup 0.01
chmod 0755 "$WORK"
start_daemon
PORT=$(free_port)
write_engine_conf "$WORK/openssl.cnf"
export OPENSSL_CONF="$WORK/openssl.cnf"
N="$WORK/nginx"
mkdir -p "$N/logs"
nginx_conf "$N" "$PORT" "$KEYS/rsa.crt.pem" p11mux%20pool httpdcert
nginx -p "$N" -c "$N/nginx.conf" > "$N/out.log" 2>&1 &
NGINX=$!
trap 'kill $NGINX 2>/dev/null || true; test_cleanup' EXIT
for _ in $(seq 1 300); do (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

# Clients: one TLS connection after another until $WORK/stop, each writing a line to
# $WORK/hs: "ok" and the SHA-256 (start) of the certificate it was shown, or "failed" and why.
python3 - "$PORT" "$WORK/stop" "$WORK/hs" > "$WORK/clients.out" 2>&1 <<'PY' &
import hashlib, os, socket, ssl, sys, threading
port, stop, out = int(sys.argv[1]), sys.argv[2], open(sys.argv[3], "a", buffering=1)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
lock = threading.Lock()
def client():
    while not os.path.exists(stop):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
                with ctx.wrap_socket(s) as t:
                    der = t.getpeercert(binary_form=True)
                    t.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    body = b""
                    while chunk := t.recv(4096):
                        body += chunk
                    if b"served by a pool" not in body:
                        raise RuntimeError("bad answer %r" % body[:80])
            line = "ok " + hashlib.sha256(der).hexdigest()[:16]
        except Exception as e:
            line = "failed " + repr(e)
        with lock:
            out.write(line + "\n")
threads = [threading.Thread(target=client) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
PY
clients=$!
seen() { # FP COUNT: that many handshakes showed that certificate
	local n
	n=$(grep -c "^ok $1" "$WORK/hs" 2>/dev/null || true)
	[ "${n:-0}" -ge "$2" ]
}
old_fp=$(openssl x509 -in "$KEYS/rsa.crt.pem" -outform der | sha256sum | cut -c1-16)
wait_until 30 seen "$old_fp" 10 || fail "no handshakes with the old key: $(head -3 "$WORK/hs")"

# 1. The new key, generated on one member (extractable only wrapped, as on a SmartCard-HSM).
tool generate-key --token hsm1 --pin "$PIN" --id 10 --label tls-2027 --rsa 2048
# 2. Wrapped under the DKEK; 3. unwrapped into the other members.
tool wrap-key --token hsm1 --pin "$PIN" --id 10 --out "$WORK/tls-2027.bin"
for t in hsm2 hsm3; do tool unwrap-key --token "$t" --pin "$PIN" --in "$WORK/tls-2027.bin"; done
# 4. The pool takes it in.
ctl rescan > "$WORK/out" || fail "rescan: $(cat "$WORK/out")"
ctl keys > "$WORK/keys" || fail "keys differ: $(cat "$WORK/keys")"
grep -q 'private "tls-2027" *10 ' "$WORK/keys" || fail "tls-2027 not in the pool: $(cat "$WORK/keys")"
# 5. Its certificate, made through the pool (here self-signed; in real life a CSR for the CA).
openssl req -new -x509 -days 30 -subj /CN=localhost -engine pkcs11 -keyform engine \
	-key "pkcs11:token=p11mux%20pool;object=tls-2027;type=private" -out "$WORK/tls-2027.crt" \
	> "$WORK/req.out" 2>&1 || fail "no certificate for the new key: $(cat "$WORK/req.out")"
new_fp=$(openssl x509 -in "$WORK/tls-2027.crt" -outform der | sha256sum | cut -c1-16)
# 6. nginx switched to it, reloaded gracefully.
nginx_conf "$N" "$PORT" "$WORK/tls-2027.crt" p11mux%20pool tls-2027
nginx -p "$N" -c "$N/nginx.conf" -s reload || fail "nginx -s reload"
wait_until 30 seen "$new_fp" 10 || fail "no handshakes with the new key: $(tail -3 "$WORK/hs"; tail -3 "$N/error.log")"
# The old workers finish their connections and leave; then only the new key is used.
old_workers_gone() { [ "$(pgrep -P "$NGINX" -c)" -le 2 ]; }
wait_until 30 old_workers_gone || fail "nginx's old workers did not leave"
# 7. The old key goes: deleted from every member, withdrawn at the rescan.
for t in hsm1 hsm2 hsm3; do
	pkcs11-tool --module "$SOFTHSM" --token-label "$t" --login --pin "$PIN" --delete-object \
		--type privkey --id 01 > /dev/null 2>&1 || fail "cannot delete the old key from $t"
done
ctl rescan > "$WORK/out" || fail "rescan: $(cat "$WORK/out")"
grep -q '1 withdrawn' "$WORK/out" || fail "the old key was not withdrawn: $(cat "$WORK/out")"
mark=$(wc -l < "$WORK/hs")
after=$(($(grep -c "^ok $new_fp" "$WORK/hs") + 10))
wait_until 30 seen "$new_fp" "$after" || fail "no handshakes after the old key was withdrawn"
touch "$WORK/stop"
wait "$clients" || fail "the clients: $(cat "$WORK/clients.out")"
total=$(wc -l < "$WORK/hs")
failed=$(grep -c '^failed' "$WORK/hs" || true)
[ "$failed" = 0 ] || fail "$failed of $total handshakes failed: $(grep -m3 '^failed' "$WORK/hs"); nginx: $(tail -5 "$N/error.log")"
# Old certificate, then new: never the old one once a client saw the new one.
certs=$(awk '{print $2}' "$WORK/hs" | uniq -c | awk '{printf "%s%s:%s", (NR > 1 ? " " : ""), $2, $1}')
echo "certificates in turn: $certs"
[ $(($(grep -c "^ok $old_fp" "$WORK/hs") + $(grep -c "^ok $new_fp" "$WORK/hs"))) = "$total" ] ||
	fail "a third certificate: $certs"
# (Around the reload both show up for a moment: nginx's old workers serve what they had
# accepted.) Once the old key was withdrawn, only the new one.
tail -n +$((mark + 1)) "$WORK/hs" | grep -q "$old_fp" && fail "the old certificate after its key was withdrawn"
kill "$NGINX"
wait "$NGINX" 2>/dev/null || true
stop_daemon
pass "TLS key rotated under load: $total handshakes, 0 failed; $(grep -c "^ok $old_fp" "$WORK/hs") with the old certificate, then $(grep -c "^ok $new_fp" "$WORK/hs") with the new one"
