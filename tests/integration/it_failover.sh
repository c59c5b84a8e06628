#!/usr/bin/env bash
# Failover under load: 3 simulated members (module_lock = yes, as OpenSC), 30 application
# threads signing (RSA and ECDSA, every signature verified with OpenSSL) while one member is
# pulled out / hangs / fails 30% of its commands / crashes in the middle of C_Sign / has its
# helper killed, then recovers. Zero failed operations; the member comes back into service;
# for a hang, a crash and a kill, with a new helper process. The control socket is read in a
# loop meanwhile (status, keys, metrics): its thread reads the members while they fail and are
# probed.
#   it_failover.sh removed | hang | error | crash | kill
. "$(dirname "$0")/lib.sh"
MODE=${1:?removed, hang, error, crash or kill}
it_setup
# Under ThreadSanitizer a helper may need more than 1.5 s for an honest call on a loaded
# machine: the time-out is longer, and the fault lasts well beyond it (a hung operation must
# time out before the hang clears).
OP_TIMEOUT_MS=1500 FAULT_S=2
[ "$TSAN_BUILD" -eq 0 ] || { OP_TIMEOUT_MS=4000 FAULT_S=8; }
DAEMON_EXTRA="op_timeout_ms = $OP_TIMEOUT_MS; probe_interval_ms = 100; probe_max_ms = 400;"
sim_setup 0.01
start_daemon
before=$(helper_pid hsm2)
[ -n "$before" ] || fail "hsm2 has no helper: $("$P11MUX_BUILD/p11muxctl" status)"
ps -o args= -p "$before" | grep -q "^p11muxd: member hsm2 " || fail "ps does not name hsm2's helper: $(ps -o args= -p "$before")"
case $MODE in
removed) STATE=removed ;;
hang) STATE=hang ;;
error) STATE="error 0.3" ;;
crash) STATE=crash ;;
kill) STATE= ;;
esac
if [ "$MODE" = kill ]; then
	( sleep 1; kill -KILL "$before"; sleep 1; pid=$(helper_pid hsm2); [ -z "$pid" ] || kill -KILL "$pid" ) &
else
	( sleep 1; fault hsm2 "$STATE"; sleep "$FAULT_S"; fault hsm2 "" ) &
fi
FPID=$!
ctl_poll_start
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$CLIENT_SHIM" threads 30 60 "$KEYS/rsa.pub.pem" "$KEYS/ec.pub.pem" ||
	fail "operations failed or signatures did not verify while hsm2 was '${STATE:-killed}'"
wait "$FPID"
grep -q "member hsm2 down" "$WORK/daemon.log" || fail "hsm2 was never taken out of service"
rejoined() { grep -q "member hsm2 (serial [0-9a-f]*) back in service" "$WORK/daemon.log"; }
wait_until 30 rejoined || fail "hsm2 did not rejoin"
ctl_poll_stop
if [ "$MODE" != removed ] && [ "$MODE" != error ]; then
	after=$(helper_pid hsm2)
	[ -n "$after" ] && [ "$after" != "$before" ] || fail "hsm2's helper was not replaced ($before, now '$after')"
	kill -0 "$before" 2>/dev/null && fail "hsm2's old helper $before is still running"
	echo "hsm2's helper: pid $before, now $after"
fi
# After rejoining, hsm2 takes work again.
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$CLIENT_SHIM" threads 6 20 "$KEYS/rsa.pub.pem" "$KEYS/ec.pub.pem" ||
	fail "signing after the recovery"
stop_daemon
grep "member hsm2 down\|back in service\|operations," "$WORK/daemon.log"
pass "hsm2 '${STATE:-helper killed}' under 30 threads: 0 failed operations, hsm2 down then back in service"
