#!/usr/bin/env bash
# A member that is not plugged in when the daemon starts joins when it appears: it is probed
# in the background, logged in, checked against the pool's keys, and takes work.
. "$(dirname "$0")/lib.sh"
it_setup
DAEMON_EXTRA='probe_interval_ms = 100; probe_max_ms = 200;'
sim_setup 0.01
fault hsm3 removed
start_daemon
grep -q 'member "hsm3" is not present' "$WORK/daemon.log" || fail "absent member not reported"
# Between two probes the member is "down"; during one, "probing".
status=$("$P11MUX_BUILD/p11muxctl" status)
grep -qE "^hsm3 +- +(down: .*not present|probing)" <<< "$status" || fail "hsm3 not shown out of service: $status"
fault hsm3 ""
joined() { grep -q "member hsm3 (serial [0-9a-f]*) back in service" "$WORK/daemon.log"; }
wait_until 20 joined || fail "hsm3 did not join"
grep -q "member hsm3 holds 6 of the pool's 6 objects" "$WORK/daemon.log" || fail "hsm3's keys not checked"
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$SHIM" threads 6 20 "$KEYS/rsa.pub.pem" "$KEYS/ec.pub.pem" ||
	fail "signing"
stop_daemon
[ "$(member_ops hsm3)" -gt 0 ] || fail "hsm3 joined but took no work"
pass "hsm3, absent at start-up, joined when plugged in and took $(member_ops hsm3) operations"
