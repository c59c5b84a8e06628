#!/usr/bin/env bash
# A wrong PIN file can never lock the devices (issue 17). The daemon runs over OpenSC's
# pkcs11-spy in front of SoftHSM, whose log shows every C_Login a device received:
#   - the first start with a wrong PIN file spends one try on one member and exits with status
#     3 (the unit's RestartPreventExitStatus), saying which file;
#   - four more starts with the same file (a unit restarting in a loop) touch no device: the
#     refused PIN is remembered in state_dir;
#   - started in the background, the daemon prints why on stderr before the command returns;
#   - with the right PIN, every member comes up (the one with a spent try once another member
#     confirmed the PIN), and the remembered refusal is forgotten;
#   - p11mux-bench --pin-file reads that PIN file (LABEL:PIN) and a bare PIN.
. "$(dirname "$0")/lib.sh"
it_setup
SPY=/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so
[ -f "$SPY" ] || fail "pkcs11-spy.so missing (package opensc-pkcs11)"
export PKCS11SPY="$SOFTHSM" PKCS11SPY_OUTPUT="$WORK/spy.log"
write_config "$SPY"
logins() { grep -c "C_Login" "$WORK/spy.log" 2>/dev/null || true; }
printf '%s:%s\n' "$LABEL" 111111 > "$WORK/pin"

for i in 1 2 3 4 5; do
	rc=0
	"$DAEMON" -c "$WORK/p11mux.conf" -f > "$WORK/start$i.log" 2>&1 || rc=$?
	[ "$rc" -eq 3 ] || fail "start $i with a wrong PIN: status $rc, not 3: $(cat "$WORK/start$i.log")"
	[ "$(logins)" -eq 1 ] || fail "start $i: $(logins) device logins in all, not 1"
done
grep -q "rejected the PIN from $WORK/pin" "$WORK/start1.log" || fail "the first start does not name the PIN file"
grep -q "refused by a member at an earlier start" "$WORK/start5.log" || fail "the fifth start does not say why"
pass "5 starts with a wrong PIN file: status 3 each, 1 device login in all"

rc=0
err=$("$DAEMON" -c "$WORK/p11mux.conf" 2>&1 >/dev/null) || rc=$?
[ "$rc" -eq 3 ] || fail "a background start with a wrong PIN: status $rc"
echo "$err" | grep -q "failed to start: .*refused by a member" || fail "a background start says: $err"
pass "a background start prints why it failed: ${err:0:100}..."

printf '%s:%s\n' "$LABEL" "$PIN" > "$WORK/pin"
start_daemon
up=$("$P11MUX_BUILD/p11muxctl" status --json | python3 -c '
import json, sys
print(sum(m["state"] == "up" for m in json.load(sys.stdin)["pools"][0]["members"]))')
[ "$up" -eq 3 ] || fail "$up of 3 members up with the right PIN"
ls "$WORK/state" | grep -q '^refused\.' && fail "the refused PIN is still remembered"
pass "with the right PIN all 3 members are up, and the refusal is forgotten"

# p11mux-bench reads the daemon's (mod_nss's) PIN file, as the README tells users to.
printf '%s\n' "$PIN" > "$WORK/barepin"
for f in "$WORK/pin" "$WORK/barepin"; do
	"$P11MUX_BUILD/p11mux-bench" --module "$SHIM" --token "$LABEL" --pin-file "$f" \
		--key-label httpdcert --op sign --mech rsa-pkcs --threads 1 --seconds 1 \
		> "$WORK/bench.out" 2>&1 || fail "p11mux-bench --pin-file $f: $(cat "$WORK/bench.out")"
done
stop_daemon
pass "p11mux-bench --pin-file reads LABEL:PIN files and bare PINs"
