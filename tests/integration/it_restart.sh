#!/usr/bin/env bash
# The daemon is killed (SIGKILL) and started again while a client signs with 4 threads: the
# client never calls C_Initialize again and sees no failed operation (the shim waits up to
# reconnect_ms for the daemon, logs its new connections in again with the PIN it kept, and
# object handles are the same in the new daemon).
. "$(dirname "$0")/lib.sh"
it_setup
# Under ThreadSanitizer the daemon (and each helper) takes seconds to start: the client waits
# for it up to 20 s rather than 2, signs for longer, and the benchmark's grace covers a wait.
SECONDS_SIGNING=5 GRACE=10
if [ "$TSAN_BUILD" -ne 0 ]; then
	SECONDS_SIGNING=12 GRACE=30
	export P11MUX_RECONNECT_MS=20000
fi
start_daemon
P11MUX_DEBUG=1 "$P11MUX_BUILD/p11mux-bench" --module "$CLIENT_SHIM" --token "$LABEL" --pin "$PIN" --key-label httpdcert \
	--op sign --mech rsa-pkcs --threads 4 --seconds "$SECONDS_SIGNING" --grace "$GRACE" --name restart > "$WORK/bench.out" 2>&1 &
BENCH=$!
# Kill it once the client is signing.
signing() { "$P11MUX_BUILD/p11muxctl" status --json | python3 -c '
import json, sys
assert sum(m["done"] for m in json.load(sys.stdin)["pools"][0]["members"]) >= 20' 2>/dev/null; }
wait_until 30 signing || fail "the client did not start signing"
helpers=$(pgrep -P "$DAEMON_PID" | tr '\n' ' ')
[ -n "$helpers" ] || fail "the daemon has no helper processes"
kill -KILL "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null || true
DAEMON_PID=
echo "--- restart ---" >> "$WORK/daemon.log"
start_daemon
# No helper outlives the daemon and keeps a device (PR_SET_PDEATHSIG). A dead one may linger
# as a zombie until init reaps it.
alive() { grep -qs '^[0-9]* ([^)]*) [^Z]' "/proc/$1/stat"; }
gone() { for h in $helpers; do alive "$h" && return 1; done; return 0; }
wait_until 10 gone || fail "helpers $helpers outlived the daemon"
wait "$BENCH" || true
cat "$WORK/bench.out"
grep -q "errors=0" "$WORK/bench.out" || fail "the client saw failures across the restart"
stop_daemon
after=$(sed -n '/--- restart ---/,$p' "$WORK/daemon.log" | grep -o "hsm[0-9]: [0-9]* operations" |
	awk '{s += $2} END {print s + 0}')
[ "$after" -gt 0 ] || fail "no operation reached the restarted daemon"
pass "SIGKILL and restart under load: 0 failed operations, $after operations after the restart; the helpers died with the daemon"
