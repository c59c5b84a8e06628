#!/usr/bin/env bash
# Session objects (issue 16; docs/architecture.md, "Session objects"): an application's
# session keys live on one member and end with it. Checked through p11muxctl's count:
#   - a process killed with kill -9 loses its objects once its connections have stayed
#     closed for the grace period (APP_GRACE_S, 10 s);
#   - C_Finalize ends them at once;
#   - the per-application quota (session_objects = 4 here) refuses the fifth with
#     CKR_DEVICE_MEMORY, as a full device does, and so does everybody's together
#     (session_objects_total = 6) for a second process;
#   - the member holding a session key loses its helper: the operation in flight gets
#     CKR_DEVICE_REMOVED, the key is gone (CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID),
#     and the pool's token keys still sign;
#   - templates that must not reach a module (attribute arrays, vendor attributes, CKA_TOKEN
#     twice, CKA_ALWAYS_AUTHENTICATE, a wide CK_BBOOL) are refused by the daemon.
. "$(dirname "$0")/lib.sh"
it_setup
write_config "$SOFTHSM" "session_objects = 4; session_objects_total = 6;"
start_daemon
export P11MUX_PIN="$PIN"
CLIENT="$P11MUX_BUILD/tests/itest_objects"
CTL="$P11MUX_BUILD/p11muxctl"

# count [MEMBER]: the pool's session objects (on MEMBER only).
count() {
	"$CTL" status --json | python3 -c '
import json, sys
p = json.load(sys.stdin)["pools"][0]
if len(sys.argv) > 1:
    print([m["session_objects"] for m in p["members"] if m["label"] == sys.argv[1]][0])
else:
    print(p["session_objects"])' "$@"
}
count_is() { [ "$(count)" = "$1" ]; }

# start_client NAME ARGS...: the client in the background, its standard input a fifo held
# open on descriptor 7 (a line on it lets the client go on), its output in $WORK/NAME.out.
start_client() {
	local name=$1
	shift
	rm -f "$WORK/$name.in"
	mkfifo "$WORK/$name.in"
	"$CLIENT" "$CLIENT_SHIM" "$@" < "$WORK/$name.in" > "$WORK/$name.out" 2>&1 &
	CLIENT_PID=$!
	exec 7> "$WORK/$name.in"
	wait_until 60 grep -q '^ready' "$WORK/$name.out" || fail "$name: $(cat "$WORK/$name.out")"
}

# 1. kill -9: the objects outlive the process by the grace period, then go.
start_client killed hold 3
grep -q '^made 3$' "$WORK/killed.out" || fail "3 objects: $(cat "$WORK/killed.out")"
count_is 3 || fail "p11muxctl counts $(count) session objects, not 3"
kill -9 "$CLIENT_PID"
wait "$CLIENT_PID" 2>/dev/null || true
exec 7>&-
start=$(date +%s)
wait_until 40 count_is 0 || fail "the killed process's objects are still there: $(count)"
took=$(($(date +%s) - start))
grep -q "is gone: its 3 session objects are destroyed" "$WORK/daemon.log" ||
	fail "no log line for the objects of the killed process"
pass "a process killed with kill -9 loses its 3 session objects after ${took} s"

# 2. C_Finalize ends them at once; and the quota.
start_client quota hold 6
grep -q '^made 4$' "$WORK/quota.out" || fail "quota: $(cat "$WORK/quota.out")"
grep -q '^refused CKR_DEVICE_MEMORY$' "$WORK/quota.out" || fail "quota: $(cat "$WORK/quota.out")"
count_is 4 || fail "$(count) objects held, not 4"
echo go >&7
wait "$CLIENT_PID" || fail "the client failed: $(cat "$WORK/quota.out")"
exec 7>&-
grep -q '^finalized$' "$WORK/quota.out" || fail "no C_Finalize"
count_is 0 || fail "C_Finalize left $(count) objects"
grep -q "session object quota reached" "$WORK/daemon.log" || fail "no log line for the quota"
pass "the quota of 4 refuses the fifth object with CKR_DEVICE_MEMORY; C_Finalize ends them"

# 2b. Everybody's together (session_objects_total = 6): a second process gets what is left.
start_client first hold 4
FIRST=$CLIENT_PID
exec 8>&7
start_client second hold 4
grep -q '^made 2$' "$WORK/second.out" || fail "total: $(cat "$WORK/second.out")"
grep -q '^refused CKR_DEVICE_MEMORY$' "$WORK/second.out" || fail "total: $(cat "$WORK/second.out")"
count_is 6 || fail "$(count) objects held, not 6"
echo go >&7
echo go >&8
wait "$CLIENT_PID" "$FIRST" || fail "a client failed"
exec 7>&- 8>&-
count_is 0 || fail "$(count) objects left after both finalized"
pass "session_objects_total = 6: a second process gets the 2 left, then CKR_DEVICE_MEMORY"

# 3. The member of a session key loses its helper.
start_client fault fault
holder=
for m in hsm1 hsm2 hsm3; do
	[ "$(count "$m")" = 1 ] && holder=$m
done
[ -n "$holder" ] || fail "no member holds the session key"
pid=$(helper_pid "$holder")
kill -9 "$pid"
echo go >&7
wait "$CLIENT_PID" || fail "the client failed: $(cat "$WORK/fault.out")"
exec 7>&-
cat "$WORK/fault.out"
grep -q '^inflight CKR_DEVICE_REMOVED$' "$WORK/fault.out" || fail "in flight: not CKR_DEVICE_REMOVED"
grep -q '^again CKR_KEY_HANDLE_INVALID$' "$WORK/fault.out" || fail "the key is still there"
grep -q '^attribute CKR_OBJECT_HANDLE_INVALID$' "$WORK/fault.out" || fail "the object is still there"
grep -q '^token CKR_OK$' "$WORK/fault.out" || fail "the token key did not sign"
count_is 0 || fail "$(count) objects left"
pass "the session key's member lost its helper ($holder): CKR_DEVICE_REMOVED in flight, the key gone, token keys unaffected"

# 4. Templates that must not reach a device: refused by the daemon, no member harmed.
P11MUX_PIN="$PIN" "$CLIENT" "$CLIENT_SHIM" hostile > "$WORK/hostile.out" 2>&1 ||
	fail "hostile: $(cat "$WORK/hostile.out")"
cat "$WORK/hostile.out"
for want in "array CKR_ATTRIBUTE_TYPE_INVALID" "vendor CKR_ATTRIBUTE_TYPE_INVALID" \
	"token-twice CKR_TEMPLATE_INCONSISTENT" "always-authenticate CKR_ATTRIBUTE_VALUE_INVALID" \
	"wide-boolean CKR_ATTRIBUTE_VALUE_INVALID"; do
	grep -qx "$want" "$WORK/hostile.out" || fail "expected: $want"
done
count_is 0 || fail "$(count) objects left"
pass "attribute arrays, vendor attributes, doubled CKA_TOKEN, CKA_ALWAYS_AUTHENTICATE and a wide CK_BBOOL are refused"

stop_daemon
