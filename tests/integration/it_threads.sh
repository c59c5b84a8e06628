#!/usr/bin/env bash
# 16 application threads sign at once through one shim (RSA and ECDSA alternating); every
# signature verifies. The shim keeps several connections so threads do not wait on each other.
# Meanwhile the control socket is read in a loop (status, keys, metrics).
. "$(dirname "$0")/lib.sh"
it_setup
start_daemon
ctl_poll_start
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$CLIENT_SHIM" threads 16 50 "$KEYS/rsa.pub.pem" "$KEYS/ec.pub.pem" ||
	fail "concurrent signing"
ctl_poll_stop
stop_daemon
grep -q "member hsm1: [1-9]" "$WORK/daemon.log" && grep -q "member hsm2: [1-9]" "$WORK/daemon.log" &&
	grep -q "member hsm3: [1-9]" "$WORK/daemon.log" || fail "work was not spread over the members"
grep "operations," "$WORK/daemon.log"
pass "16 threads x 50 signatures, all verified, every member used"
