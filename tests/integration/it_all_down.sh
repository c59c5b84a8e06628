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
sleep 0.3
t0=$(date +%s%N)
out=$(sign || true)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "$out" | grep -q "CKR_DEVICE_ERROR" || fail "expected CKR_DEVICE_ERROR with every member out: $out"
[ "$ms" -lt 4000 ] || fail "the client waited $ms ms (op_timeout_ms is 2000)"
pass "every member out: CKR_DEVICE_ERROR after $ms ms"
fault hsm3 ""
for i in $(seq 1 60); do
	if sign >/dev/null; then
		verify_rsa "$D" "$WORK/sig" || fail "signature after recovery does not verify"
		stop_daemon
		pass "hsm3 back: signing works again after $((i * 100)) ms, no restart"
		exit 0
	fi
	sleep 0.1
done
fail "no member came back within 6 s"
