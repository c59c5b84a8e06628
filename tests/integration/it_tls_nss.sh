#!/usr/bin/env bash
# NSS's own TLS server (selfserv: the engine under mod_nss) serves with the pool's keys, set up
# the mod_nss way (modutil -add with -string, a "label:pin" pin file, nicknames "label:cert"),
# over three simulated members:
#   TLS 1.3 (RSA-PSS), TLS 1.2 ECDHE-RSA with PKCS#1 v1.5 and with PSS, TLS 1.2 RSA key
#   exchange (C_Decrypt), an EC P-256 server key (ECDSA), 200 full handshakes with
#   strsclnt -N, all of them successful and spread over every member, and the server keeps
#   serving across a daemon restart.
. "$(dirname "$0")/lib.sh"
it_setup
DAEMON_EXTRA='probe_interval_ms = 100;'
sim_setup 0.01
start_daemon
DB="$WORK/nssdb"
nss_pool_db "$DB"
certutil -d "sql:$DB" -L -h all -f "$WORK/nsspin" | grep -q "^$LABEL:httpdcert " || fail "nickname"

SERVERS=()
serve() { # nickname -> sets PORT
	PORT=$(free_port)
	P11MUX_DEBUG=1 selfserv -d "sql:$DB" -n "$1" -p "$PORT" -f "$WORK/nsspin" -V tls1.2:tls1.3 > "$WORK/selfserv.$PORT.log" 2>&1 &
	SERVERS+=($!)
	for _ in $(seq 1 300); do
		(echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
		sleep 0.1
	done
	fail "selfserv did not start: $(cat "$WORK/selfserv.$PORT.log")"
}
trap 'kill "${SERVERS[@]}" 2>/dev/null || true; test_cleanup' EXIT
s_client() { timeout 20 openssl s_client -connect "127.0.0.1:$PORT" "$@" < /dev/null 2>&1; }
tst() { echo | timeout 20 tstclnt -h 127.0.0.1 -p "$PORT" -d "sql:$DB" -o -Q "$@" > "$WORK/tst.out" 2>&1; }

serve "$LABEL:httpdcert"
tst -V tls1.3:tls1.3 || fail "tstclnt TLS 1.3: $(cat "$WORK/tst.out")"
out=$(s_client -tls1_3)
grep -q "New, TLSv1.3" <<< "$out" && grep -q "Peer signature type: RSA-PSS" <<< "$out" ||
	fail "TLS 1.3 with RSA-PSS: $out"
pass "TLS 1.3, RSA-PSS signature by the pool (tstclnt and openssl s_client)"
out=$(s_client -tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256 -sigalgs RSA+SHA256)
grep -q "Cipher is ECDHE-RSA-AES128-GCM-SHA256" <<< "$out" && grep -q "Peer signature type: RSA$" <<< "$out" ||
	fail "TLS 1.2 ECDHE-RSA PKCS#1: $out"
out=$(s_client -tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256 -sigalgs RSA-PSS+SHA256)
grep -q "Peer signature type: RSA-PSS" <<< "$out" || fail "TLS 1.2 ECDHE-RSA PSS: $out"
pass "TLS 1.2 ECDHE-RSA with PKCS#1 v1.5 and with PSS signatures"
tst -V tls1.2:tls1.2 -c :009C || fail "tstclnt RSA key exchange: $(cat "$WORK/tst.out")"
out=$(s_client -tls1_2 -cipher AES128-GCM-SHA256)
grep -q "Cipher is AES128-GCM-SHA256" <<< "$out" || fail "TLS 1.2 RSA key exchange: $out"
pass "TLS 1.2 RSA key exchange (C_Decrypt through the pool)"

strsclnt_full "$DB" "$PORT" 200 8
pass "strsclnt -N: 200 full handshakes, 8 at a time, every one successful"
# selfserv copied its server key once (C_CopyObject, refused): it signs with the token key,
# which the pool spreads over its members. A session copy would pin all of it to one.
spread=$("$P11MUX_BUILD/p11muxctl" status --json | python3 -c '
import json, sys
print(" ".join(str(m["done"]) for m in json.load(sys.stdin)["pools"][0]["members"]))')
for n in $spread; do
	[ "$n" -gt 0 ] || fail "a member did none of the handshakes' operations: $spread"
done
pass "the handshakes' private-key operations reached every member: $spread"

# The daemon restarts; the same selfserv process keeps serving.
stop_daemon
start_daemon
tst -V tls1.3:tls1.3 || fail "selfserv after a daemon restart: $(cat "$WORK/tst.out")"
pass "selfserv kept serving across a daemon restart"

serve "$LABEL:eccert"
tst -V tls1.3:tls1.3 || fail "tstclnt with the EC key: $(cat "$WORK/tst.out")"
out=$(s_client -tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256)
grep -q "Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" <<< "$out" && grep -q "Peer signature type: ECDSA" <<< "$out" ||
	fail "ECDSA server: $out"
pass "EC P-256 server key: ECDSA handshakes (TLS 1.3 and 1.2)"
stop_daemon
grep "operations," "$WORK/daemon.log"
