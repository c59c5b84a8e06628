#!/usr/bin/env bash
# A poison input: an operation that crashes the vendor module on every member (the crash-on
# fault, for one input only). It costs at most two helpers: after the second, the client gets
# CKR_DEVICE_ERROR, the log names the operation, the third member is spared, and the same
# operation is refused at once for a while (a client that repeats it costs no more helpers).
# Other inputs sign as before.
. "$(dirname "$0")/lib.sh"
it_setup
DAEMON_EXTRA='op_timeout_ms = 5000; probe_interval_ms = 100; probe_max_ms = 400;'
sim_setup 0.01
start_daemon
pids() { for m in hsm1 hsm2 hsm3; do printf '%s ' "$(helper_pid $m)"; done; }
started() { "$P11MUX_BUILD/p11muxctl" status --json | python3 -c '
import json, sys
print(sum(m["helpers_started"] for m in json.load(sys.stdin)["pools"][0]["members"]))'; }
before=$(pids)
for m in hsm1 hsm2 hsm3; do fault $m "crash-on dead"; done
printf '\xde\xad poison' > "$WORK/poison"
printf 'harmless' > "$WORK/good"
sign() { p11tool --login --pin "$PIN" --sign -m RSA-PKCS --id 01 -i "$1" -o "$WORK/sig" 2>&1; }
out=$(sign "$WORK/poison" || true)
echo "$out" | grep -q CKR_DEVICE_ERROR || fail "the poison input did not get CKR_DEVICE_ERROR: $out"
grep -q 'SIGN with mechanism 0x1 on private key "httpdcert" (id 01) cost the helpers of two members' \
	"$WORK/daemon.log" || fail "the log does not name the operation"
all_up() { "$P11MUX_BUILD/p11muxctl" status | awk '/^hsm/ && $3 != "up" {bad=1} END {exit bad}'; }
wait_until 30 all_up || fail "members did not come back: $("$P11MUX_BUILD/p11muxctl" status)"
[ "$(started)" -eq 5 ] || fail "$(( $(started) - 3 )) helpers died for one poison input, not 2: $("$P11MUX_BUILD/p11muxctl" status)"
after=$(pids)
same=0
for i in 1 2 3; do
	[ "$(echo "$before" | cut -d' ' -f$i)" = "$(echo "$after" | cut -d' ' -f$i)" ] && same=$((same + 1))
done
[ "$same" -eq 1 ] || fail "helpers before: $before; after: $after (one member should be spared)"
pass "a poison input cost 2 helpers, not 3, and the client got CKR_DEVICE_ERROR"
out=$(sign "$WORK/poison" || true)
echo "$out" | grep -q CKR_DEVICE_ERROR || fail "the repeated poison input: $out"
[ "$(started)" -eq 5 ] || fail "the repeated poison input cost helpers again: $("$P11MUX_BUILD/p11muxctl" status)"
pass "the same input again is refused at once: no more helpers lost"
sign "$WORK/good" >/dev/null || fail "a harmless input after the poison one"
openssl pkeyutl -verify -pubin -inkey "$KEYS/rsa.pub.pem" -in "$WORK/good" -sigfile "$WORK/sig" >/dev/null ||
	fail "the harmless input's signature does not verify"
stop_daemon
pass "other inputs still sign"
