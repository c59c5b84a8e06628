#!/usr/bin/env bash
# A pool of three simulated devices behind p11muxd, at scale 0.01 (the rehearsal of
# docs/simulator.md): pkcs11-tool -L through the shim shows the pool, signatures from 8
# threads verify and are spread over the members, a member pulled out is hidden from the
# application, and a wrong PIN given to the pool spends none of the devices' tries.
. "$(dirname "$0")/lib.sh"
sim_setup
SHIM="$P11MUX_BUILD/p11mux-pkcs11.so"
DAEMON="$P11MUX_BUILD/p11muxd"
CLIENT="$P11MUX_BUILD/tests/itest_client"
LABEL="simulated pool"
SOCK="$WORK/p11mux.sock"
export P11MUX_SOCKET="$SOCK"
[ -x "$DAEMON" ] && [ -f "$SHIM" ] && [ -x "$CLIENT" ] || fail "p11muxd, the shim or itest_client not built"
sim_config "scale = 0.01"
pin_file "$WORK/pin" "$LABEL"
pool_conf "$WORK/p11mux.conf" "$WORK" "$LABEL" "$SIM_MODULE" "hsm1 hsm2 hsm3"

# The daemon finds P11SIM_CONFIG and P11SIM_CONTROL_DIR in its environment.
start_p11muxd "$DAEMON" "$WORK/p11mux.conf" "$WORK/daemon.log" || fail "p11muxd did not start"

out=$(pkcs11-tool --module "$SHIM" -L)
echo "$out"
grep -q "token label *: $LABEL\$" <<< "$out" || fail "pkcs11-tool -L does not show the pool"
pass "pkcs11-tool -L through the shim shows the pool of simulated devices"

P11MUX_PIN=$PIN "$CLIENT" "$SHIM" threads 8 10 "$KEYS/rsa.pub.pem" "$KEYS/ec.pub.pem" ||
	fail "signing through the pool"
pass "8 threads x 10 signatures through the pool verify"

echo removed > "$CTL/hsm2"
sleep 0.2
P11MUX_PIN=$PIN "$CLIENT" "$SHIM" threads 4 10 "$KEYS/rsa.pub.pem" "$KEYS/ec.pub.pem" ||
	fail "signing with hsm2 pulled out"
pass "hsm2 pulled out: 4 threads x 10 signatures still verify"
: > "$CTL/hsm2"

for f in "$CTL"/hsm?.retries; do
	[ "$(cat "$f")" = 3 ] || fail "$f: $(cat "$f") before the wrong PIN"
done
out=$(pkcs11-tool --module "$SHIM" --login --pin 000000 -O 2>&1 || true)
grep -q CKR_PIN_INCORRECT <<< "$out" || fail "a wrong PIN was not refused: $out"
for f in "$CTL"/hsm?.retries; do
	[ "$(cat "$f")" = 3 ] || fail "a wrong PIN to the pool cost $(basename "$f") a try"
done
pass "a wrong PIN given to the pool leaves every device with 3 tries"

kill -TERM "$DAEMON_PID"
rc=0
wait "$DAEMON_PID" || rc=$?
DAEMON_PID=
[ "$rc" -eq 0 ] || fail "p11muxd exited with status $rc"
grep "operations" "$WORK/daemon.log" || true
for m in hsm1 hsm2 hsm3; do
	grep -q "member $m: [1-9]" "$WORK/daemon.log" || fail "member $m did no work"
done
pass "every member signed; the daemon stopped cleanly"
