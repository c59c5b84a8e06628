#!/usr/bin/env bash
# nginx, as Debian ships it, serves TLS with the pool's key through OpenSSL's PKCS#11 engine
# (ssl_engine pkcs11; ssl_certificate_key "engine:pkcs11:pkcs11:..."), from its normal forked
# worker processes running as www-data, under siege load: every request succeeds. (Straight on
# SoftHSM those workers fail every handshake, "Object handle invalid": the pool's handles are
# the same in every process.)
. "$(dirname "$0")/lib.sh"
command -v nginx >/dev/null && command -v siege >/dev/null || fail "nginx and siege are needed (scripts/deps.sh)"
it_setup
# The workers run as www-data: the socket must let them in (mode 0660, group www-data).
DAEMON_EXTRA='allowed_users = [ "www-data" ]; socket_group = "www-data";'
sim_setup 0.01
chmod 0755 "$WORK"
start_daemon
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
write_engine_conf "$WORK/openssl.cnf"
N="$WORK/nginx"
mkdir -p "$N/logs"
nginx_conf "$N" "$PORT" "$KEYS/rsa.crt.pem" p11mux%20pool httpdcert
OPENSSL_CONF="$WORK/openssl.cnf" nginx -p "$N" -c "$N/nginx.conf" > "$N/out.log" 2>&1 &
NGINX=$!
trap 'kill $NGINX 2>/dev/null || true; test_cleanup' EXIT
for _ in $(seq 1 300); do (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
body=$(timeout 10 curl -sk "https://127.0.0.1:$PORT/") || fail "no answer: $(cat "$N/error.log")"
[ "$body" = "served by a pool" ] || fail "unexpected answer '$body'"
# siege writes its configuration on its first run, and has been seen to deadlock in that
# run: let it write the file first (siege -C), and never wait on it for long.
HOME="$WORK" timeout -k 2 20 siege -C > /dev/null 2>&1 || true
HOME="$WORK" timeout -k 5 60 siege -c 20 -t 5S -b -H "Connection: close" "https://127.0.0.1:$PORT/" > "$WORK/siege.out" 2>&1 || true
cat "$WORK/siege.out" | grep -E '"(transactions|availability|failed_transactions|transaction_rate)"'
tx=$(sed -n 's/.*"transactions":[[:space:]]*\([0-9]*\).*/\1/p' "$WORK/siege.out")
failed=$(sed -n 's/.*"failed_transactions":[[:space:]]*\([0-9]*\).*/\1/p' "$WORK/siege.out")
avail=$(sed -n 's/.*"availability":[[:space:]]*\([0-9.]*\).*/\1/p' "$WORK/siege.out")
[ -n "$tx" ] && [ "$tx" -gt 50 ] || fail "siege made only '$tx' transactions"
[ "$failed" = 0 ] && [ "$avail" = "100.00" ] || fail "siege: $failed failed, availability $avail"
kill "$NGINX"
wait "$NGINX" 2>/dev/null || true
stop_daemon
grep "operations," "$WORK/daemon.log"
pass "nginx workers served $tx requests under siege -c 20, 100% available, through the pool"
