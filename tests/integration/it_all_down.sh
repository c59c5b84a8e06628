#!/usr/bin/env bash
# Every member removed: a client gets CKR_DEVICE_ERROR quickly (within op_timeout_ms plus a
# margin), never a hang; when one member comes back, operations succeed again without
# restarting anything.
. "$(dirname "$0")/lib.sh"
it_setup
DAEMON_EXTRA='op_timeout_ms = 2000; probe_interval_ms = 100; probe_max_ms = 300;'
sim_setup 0.01
start_daemon
D="$WORK/data"
echo "all members down" > "$D"
sign() { p11tool --login --pin "$PIN" --sign -m SHA256-RSA-PKCS --id 01 -i "$D" -o "$WORK/sig" 2>&1; }
sign >/dev/null || fail "signing with every member up"
for t in hsm1 hsm2 hsm3; do fault "$t" removed; done
# The devices notice within 100 ms, the pool at its next operation on each.
refused() { { sign || true; } | grep -q CKR_DEVICE_ERROR; }
wait_until 30 refused || fail "expected CKR_DEVICE_ERROR with every member out: $(sign || true)"
# Now every member is out: the answer comes without waiting for a device. (The bound only
# tells a hang from an answer; it is far above what any machine takes.)
t0=$(date +%s%N)
out=$(sign || true)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
grep -q "CKR_DEVICE_ERROR" <<< "$out" || fail "expected CKR_DEVICE_ERROR with every member out: $out"
[ "$ms" -lt 15000 ] || fail "the client waited $ms ms with every member out: a hang"
pass "every member out: CKR_DEVICE_ERROR after $ms ms"
fault hsm3 ""
signs() { sign >/dev/null; }
wait_until 30 signs || fail "no member came back within 30 s"
verify_rsa "$D" "$WORK/sig" || fail "signature after recovery does not verify"
stop_daemon
pass "hsm3 back: signing works again, no restart"
