#!/usr/bin/env bash
# Failover under load: 3 simulated members, 30 application threads signing (RSA and ECDSA,
# every signature verified with OpenSSL) while one member is pulled out / hangs / fails 30%
# of its commands, then recovers. Zero failed operations; the member comes back into service.
#   it_failover.sh removed | hang | error
. "$(dirname "$0")/lib.sh"
MODE=${1:?removed, hang or error}
it_setup
DAEMON_EXTRA='op_timeout_ms = 1500; probe_interval_ms = 100; probe_max_ms = 400;'
sim_setup 0.01
start_daemon
case $MODE in
removed) STATE=removed ;;
hang) STATE=hang ;;
error) STATE="error 0.3" ;;
esac
( sleep 1; fault hsm2 "$STATE"; sleep 2; fault hsm2 "" ) &
FPID=$!
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$SHIM" threads 30 60 "$KEYS/rsa.pub.pem" "$KEYS/ec.pub.pem" ||
	fail "operations failed or signatures did not verify while hsm2 was '$STATE'"
wait "$FPID"
grep -q "member hsm2 down" "$WORK/daemon.log" || fail "hsm2 was never taken out of service"
for _ in $(seq 1 300); do
	grep -q "member hsm2 (serial [0-9a-f]*) back in service" "$WORK/daemon.log" && break
	sleep 0.1
done
grep -q "member hsm2 (serial [0-9a-f]*) back in service" "$WORK/daemon.log" || fail "hsm2 did not rejoin"
# After rejoining, hsm2 takes work again.
before=$(grep -c . "$WORK/daemon.log")
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$SHIM" threads 6 20 "$KEYS/rsa.pub.pem" "$KEYS/ec.pub.pem" ||
	fail "signing after the recovery"
stop_daemon
grep "member hsm2 down\|back in service\|operations," "$WORK/daemon.log"
pass "hsm2 '$STATE' under 30 threads: 0 failed operations, hsm2 down then back in service"
