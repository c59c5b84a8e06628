#!/usr/bin/env bash
# The pool's PIN counter, as a device's: 4,000 wrong PINs from 400 processes get at most
# pin_max_failures (3) CKR_PIN_INCORRECT answers, the rest CKR_PIN_LOCKED; the token shows the
# lock; the right PIN is refused too until `p11muxctl unlock-pin`; the count survives a daemon
# restart. Meanwhile the applications that were logged in keep working: a client signing in 4
# threads (0 failures, new connections and a daemon restart included, on tickets), and a
# prefork NSS server whose workers (www-data) keep serving TLS, and a worker it forks during
# the lockout logs in (the parent's ticket) and serves too.
. "$(dirname "$0")/lib.sh"
LABEL="SmartCard-HSM (UserPIN)"
it_setup
# The restart below comes while 400 processes have just come and gone: on a loaded machine
# (or under ThreadSanitizer) it can take longer than the shims' default 2 s wait for a daemon
# (it_restart tests that one).
export P11MUX_RECONNECT_MS=10000
[ "$TSAN_BUILD" -eq 0 ] || P11MUX_RECONNECT_MS=20000
write_config "$SOFTHSM" 'allowed_users = [ "www-data" ]; socket_group = "www-data";'
chmod 0755 "$WORK"
start_daemon
DB="$WORK/nssdb"
nss_pool_db "$DB"
chmod -R a+rX "$DB"
CTL="$P11MUX_BUILD/p11muxctl"

SERVER=
SIGNER=
trap '[ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null; [ -z "$SIGNER" ] || kill "$SIGNER" 2>/dev/null; test_cleanup' EXIT
AS=()
[ "$(id -u)" -ne 0 ] || AS=(www-data)
"$P11MUX_BUILD/tests/nss_prefork" "sql:$DB" "$LABEL:httpdcert" "$WORK/nsspin" 2 "${AS[@]}" \
	> "$WORK/prefork.out" 2> "$WORK/prefork.err" &
SERVER=$!
workers_ready() { [ "$(grep -c '^ready ' "$WORK/prefork.out" 2>/dev/null)" -ge "$1" ]; }
wait_until 30 workers_ready 2 || fail "prefork workers not ready: $(cat "$WORK/prefork.out" "$WORK/prefork.err")"
PORT=$(awk '/^port /{print $2}' "$WORK/prefork.out")

# (It waits up to 30 s for the daemon restarted below: a graceful stop and start under
# sanitizers on a loaded machine can take longer than the default reconnect_ms of 2 s.)
ITEST_UNTIL="$WORK/stop-signing" P11MUX_RECONNECT_MS=30000 P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$CLIENT_SHIM" \
	threads 4 20 "$KEYS/rsa.pub.pem" "$KEYS/ec.pub.pem" > "$WORK/signer.out" 2>&1 &
SIGNER=$!
signed() { "$CTL" status --json | python3 -c '
import json, sys
print(sum(m["done"] for m in json.load(sys.stdin)["pools"][0]["members"]))' | grep -qv '^0$'; }
wait_until 30 signed || fail "the signer did not start: $(cat "$WORK/signer.out")"

# 400 processes, 10 wrong PINs each.
start=$(date +%s)
GUESSERS=()
for i in $(seq 1 400); do
	P11MUX_PIN=000000 "$P11MUX_BUILD/tests/itest_client" "$CLIENT_SHIM" guess 10 > "$WORK/guess.$i" 2>&1 &
	GUESSERS+=($!)
done
wait "${GUESSERS[@]}" || true
took=$(($(date +%s) - start))
read -r incorrect locked ok other < <(cat "$WORK"/guess.* | awk '
	/^incorrect/ { i += $2; l += $4; o += $6; x += $8; n++ }
	END { print i, l, o, x + (400 - n) * 10 }')
echo "400 processes x 10 wrong PINs in $took s: $incorrect CKR_PIN_INCORRECT, $locked CKR_PIN_LOCKED, $ok CKR_OK, $other other"
[ "$incorrect" -le 3 ] && [ "$incorrect" -ge 1 ] || fail "$incorrect wrong PINs answered CKR_PIN_INCORRECT (at most 3)"
[ "$ok" -eq 0 ] && [ "$other" -eq 0 ] || fail "$ok logins succeeded, $other other answers: $(cat "$WORK"/guess.* | sort | uniq -c)"
[ $((incorrect + locked)) -eq 4000 ] || fail "$incorrect + $locked answers of 4000"
pass "4000 wrong PINs from 400 processes: $incorrect CKR_PIN_INCORRECT, $locked CKR_PIN_LOCKED"

# The lines not logged are summed up once a second.
wait_until 10 grep -q "more logins refused (PIN locked) in the last" "$WORK/daemon.log" || fail "no summary line"
lines=$(grep -c "wrong PIN from\|login refused" "$WORK/daemon.log")
[ "$(grep -c "wrong PIN from" "$WORK/daemon.log")" -eq "$incorrect" ] || fail "not one line per wrong PIN"
grep -q "wrong PIN from uid 0 pid [0-9]*" "$WORK/daemon.log" || fail "no uid and pid in the wrong-PIN line"
# At most 5 lines a second of each kind and a summary (lograte.c): under 200 for a run of
# about 30 s; a slower run (ThreadSanitizer, a loaded machine) may log 6 a second.
max_lines=$(((took + 5) * 6 > 200 ? (took + 5) * 6 : 200))
[ "$lines" -lt "$max_lines" ] || fail "$lines log lines for 4000 refused logins in $took s"

pass "the log has one line per wrong PIN (uid, pid), and $lines lines in all for 4000 attempts"

p11tool -T > "$WORK/token.txt" 2>&1
grep -qi "user PIN locked" "$WORK/token.txt" || fail "token info does not show the lock: $(cat "$WORK/token.txt")"
"$CTL" status | grep -q "PIN LOCKED" || fail "p11muxctl status does not show the lock"
out=$(p11tool --login --pin "$PIN" -O 2>&1 || true)
grep -q CKR_PIN_LOCKED <<< "$out" || fail "the right PIN from a new process during the lockout: $out"
pass "locked: token flags, p11muxctl status, and the right PIN refused (CKR_PIN_LOCKED)"

# The running server serves, and a worker forked now logs in with its parent's ticket.
strsclnt_full "$DB" "$PORT" 20 4
kill -USR1 "$SERVER"
wait_until 30 workers_ready 3 || fail "the worker forked during the lockout did not log in: $(cat "$WORK/prefork.err")"
strsclnt_full "$DB" "$PORT" 40 4
pass "during the lockout the prefork server served TLS, and its new worker logged in and served"

# The lock survives a restart; the logged-in applications go on across it (their tickets).
stop_daemon
start_daemon
grep -q "PIN locked after 3 wrong PINs in a row" "$WORK/daemon.log" || fail "the restarted daemon did not keep the count"
out=$(p11tool --login --pin "$PIN" -O 2>&1 || true)
grep -q CKR_PIN_LOCKED <<< "$out" || fail "after a restart the right PIN was not refused: $out"
strsclnt_full "$DB" "$PORT" 20 4
pass "after a daemon restart the pool is still locked, and the server still serves"

"$CTL" unlock-pin "$LABEL" | grep -q "counter reset" || fail "unlock-pin"
p11tool --login --pin "$PIN" -O | grep -q "Private Key Object" || fail "the right PIN after unlock-pin"
grep -q "failures 0" "$WORK/state/pin.SmartCard-HSM%20%28UserPIN%29" || fail "counter file not reset"
pass "p11muxctl unlock-pin: the right PIN is accepted again"

touch "$WORK/stop-signing"
rc=0
wait "$SIGNER" || rc=$?
SIGNER=
cat "$WORK/signer.out"
[ "$rc" -eq 0 ] || fail "the logged-in client had failures during the guessing"
pass "the client logged in before signed throughout with 0 failures"
kill -TERM "$SERVER"
rc=0
wait "$SERVER" || rc=$?
SERVER=
[ "$rc" -eq 0 ] || fail "prefork server: $(cat "$WORK/prefork.err")"
stop_daemon
