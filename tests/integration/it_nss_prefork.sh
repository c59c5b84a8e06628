#!/usr/bin/env bash
# NSS in processes as Apache's prefork MPM runs mod_nss: a parent (root) initialises NSS, logs
# in with a mod_nss pin file and finds the key by nickname, then forks 4 workers; each becomes
# www-data, re-initialises the modules, logs in, signs with the key its parent found and with
# one it finds itself, and serves TLS from the shared socket (tests/integration/nss_prefork.c). Every worker must serve,
# every handshake must pass (tstclnt, openssl s_client, strsclnt -N with 200 full handshakes),
# and the workers must keep serving across a daemon restart.
. "$(dirname "$0")/lib.sh"
# The seed's label, so the nickname and the pin file line are the ones its users have:
# "SmartCard-HSM (UserPIN):httpdcert" and "SmartCard-HSM (UserPIN):648219".
LABEL="SmartCard-HSM (UserPIN)"
it_setup
# The workers run as www-data, as Apache's children do: the daemon must let them in, and they
# must reach the socket and read the NSS database.
DAEMON_EXTRA='probe_interval_ms = 100; allowed_users = [ "www-data" ]; socket_group = "www-data";'
sim_setup 0.01
chmod 0755 "$WORK"
start_daemon
DB="$WORK/nssdb"
nss_pool_db "$DB"
chmod -R a+rX "$DB"
WORKERS=4

SERVER=
trap '[ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true; test_cleanup' EXIT
AS=()
[ "$(id -u)" -ne 0 ] || AS=(www-data) # only root can become www-data
"$P11MUX_BUILD/tests/nss_prefork" "sql:$DB" "$LABEL:httpdcert" "$WORK/nsspin" $WORKERS "${AS[@]}" \
	> "$WORK/prefork.out" 2> "$WORK/prefork.err" &
SERVER=$!
for _ in $(seq 1 300); do
	[ "$(grep -c '^ready ' "$WORK/prefork.out" 2>/dev/null)" -eq $WORKERS ] && break
	kill -0 "$SERVER" 2>/dev/null || fail "nss_prefork exited: $(cat "$WORK/prefork.err")"
	sleep 0.1
done
[ "$(grep -c '^ready ' "$WORK/prefork.out")" -eq $WORKERS ] ||
	fail "not every worker became ready: $(cat "$WORK/prefork.out" "$WORK/prefork.err")"
PORT=$(awk '/^port /{print $2}' "$WORK/prefork.out")
pass "$WORKERS forked workers became ${AS:-no other user}, re-initialised NSS, logged in and signed with the parent's key and their own"

tst() { echo "GET / HTTP/1.0" | timeout 20 tstclnt -h 127.0.0.1 -p "$PORT" -d "sql:$DB" -o -Q "$@" > "$WORK/tst.out" 2>&1; }
tst -V tls1.3:tls1.3 || fail "tstclnt TLS 1.3: $(cat "$WORK/tst.out")"
out=$(timeout 20 openssl s_client -connect "127.0.0.1:$PORT" -tls1_2 -cipher AES128-GCM-SHA256 \
	-ign_eof < <(printf 'GET / HTTP/1.0\r\n\r\n') 2>&1 || true)
grep -q "Cipher is AES128-GCM-SHA256" <<< "$out" && grep -q "^served by [0-9]*" <<< "$out" ||
	fail "openssl s_client, RSA key exchange: $out"
pass "a worker served TLS 1.3 (tstclnt) and TLS 1.2 with RSA key exchange (openssl s_client)"

strsclnt_full "$DB" "$PORT" 200 8
pass "strsclnt -N: 200 full handshakes, 8 at a time, every one successful"

# The daemon restarts under the workers; they keep serving.
stop_daemon
start_daemon
strsclnt_full "$DB" "$PORT" 40 4
pass "the workers kept serving across a daemon restart (40 more full handshakes)"

kill -TERM "$SERVER"
rc=0
wait "$SERVER" || rc=$?
SERVER=
[ "$rc" -eq 0 ] || fail "nss_prefork exited $rc: $(cat "$WORK/prefork.out" "$WORK/prefork.err")"
cat "$WORK/prefork.out"
total=$(awk '/handshakes,/{n += $2} END {print n + 0}' "$WORK/prefork.out")
busy=$(awk '/handshakes,/ && $2 > 0 {n++} END {print n + 0}' "$WORK/prefork.out")
failed=$(awk '/handshakes,/{n += $4} END {print n + 0}' "$WORK/prefork.out")
[ "$failed" -eq 0 ] || fail "$failed handshakes failed in the workers"
[ "$total" -eq 242 ] || fail "the workers counted $total handshakes, the clients made 242"
[ "$busy" -eq $WORKERS ] || fail "only $busy of $WORKERS workers served"
pass "all $WORKERS workers served; $total handshakes, none failed"
stop_daemon
