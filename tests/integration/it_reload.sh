#!/usr/bin/env bash
# p11muxctl reload and SIGHUP (docs/operations.md, "Live changes"): a member added (probed at
# once, then taking work), a time-out changed, a member removed (drained first; the key
# inventory stays consistent without it), a pool added at the end of the file; a change that
# needs a restart is refused and a broken file is reported by file and line, both changing
# nothing. A signer runs throughout on the connections it opened first: 0 failures.
. "$(dirname "$0")/lib.sh"
it_setup
conf="$WORK/p11mux.conf"
members() { # the pool's members line: members "hsm1", "hsm2"
	python3 - "$conf" "$@" <<'PY'
import re, sys
path, names = sys.argv[1], sys.argv[2:]
text = open(path).read()
text = re.sub(r"members = \[.*?\];", "members = [ %s ];" % ", ".join('"%s"' % n for n in names), text, count=1)
open(path, "w").write(text)
PY
}
ctl() { "$P11MUX_BUILD/p11muxctl" "$@"; }
members hsm1 hsm2
start_daemon
signer_start 2

members hsm1 hsm2 hsm3
sed -i 's/^log_level = "info";/log_level = "info";\nop_timeout_ms = 4000;/' "$conf"
ctl reload > "$WORK/out" || fail "reload: $(cat "$WORK/out")"
grep -q 'member hsm3 added' "$WORK/out" || fail "hsm3 not added: $(cat "$WORK/out")"
grep -q 'op_timeout_ms 10000 -> 4000' "$WORK/out" || fail "time-out not changed: $(cat "$WORK/out")"
up() { [ "$(member_state hsm3)" = up ]; }
wait_until 20 up || fail "hsm3 did not join: $(member_state hsm3)"
took() { [ "$(ctl metrics | sed -n 's/^p11mux_member_operations_total{.*member="hsm3".*} //p')" -gt 0 ]; }
wait_until 20 took || fail "hsm3 takes no work: $(ctl metrics | grep 'operations_total.*hsm3')"
pass "reload: hsm3 added and taking work, op_timeout_ms 10000 -> 4000"

members hsm2 hsm3
kill -HUP "$DAEMON_PID"
removed() { grep -q 'member hsm1 removed' "$WORK/daemon.log"; }
wait_until 20 removed || fail "SIGHUP did not remove hsm1"
grep -q 'reload (SIGHUP): .* applied' "$WORK/daemon.log" || fail "no log line for SIGHUP's reload"
[ "$(member_state hsm1)" = excluded ] || fail "hsm1 is $(member_state hsm1)"
ctl status | grep -q 'removed from the configuration' || fail "status does not say hsm1 was removed"
ctl keys > "$WORK/keys" || fail "keys inconsistent after hsm1 left: $(cat "$WORK/keys")"
grep -q hsm1 "$WORK/keys" && fail "hsm1 still in the inventory"
pass "SIGHUP: hsm1 drained and removed; the inventory is consistent without it"

cp "$conf" "$WORK/good.conf"
sed -i "s|^socket = .*|socket = \"$WORK/other.sock\";|" "$conf"
ctl reload > "$WORK/out" 2>&1 && fail "a new socket path was reloaded"
grep -q 'socket changed; that needs a restart' "$WORK/out" || fail "unclear refusal: $(cat "$WORK/out")"
cp "$WORK/good.conf" "$conf"
sed -i 's/^op_timeout_ms = 4000;/op_timeout_ms = "soon";/' "$conf"
ctl reload > "$WORK/out" 2>&1 && fail "a broken file was reloaded"
grep -q "$conf:[0-9]*: op_timeout_ms" "$WORK/out" || fail "no file, line and key: $(cat "$WORK/out")"
cp "$WORK/good.conf" "$conf"
[ "$(member_state hsm2)" = up ] && [ "$(member_state hsm3)" = up ] || fail "a refused reload changed members"
ctl reload > "$WORK/out" || fail "reload of the unchanged file: $(cat "$WORK/out")"
grep -q 'nothing changed' "$WORK/out" || fail "unchanged file: $(cat "$WORK/out")"
pass "a new socket path refused, a broken file reported by line and key; nothing changed"

softhsm2-util --init-token --free --label hsm4 --so-pin 0102030405060708 --pin "$PIN" >/dev/null
echo "second:$PIN" >> "$WORK/pin"
python3 - "$conf" "$SOFTHSM" "$WORK/pin" <<'PY'
import sys
path, module, pin = sys.argv[1:]
text = open(path).read().rstrip()
assert text.endswith("} );")
text = text[:-len(");")] + ', {\n  label = "second";\n  module = "%s";\n  members = [ "hsm4" ];\n  pin_file = "%s";\n} );\n' % (module, pin)
open(path, "w").write(text)
PY
ctl reload > "$WORK/out" || fail "reload with a new pool: $(cat "$WORK/out")"
grep -q 'pool "second" added: slot 1' "$WORK/out" || fail "pool not added: $(cat "$WORK/out")"
p11tool -L 2>/dev/null | grep -q 'token label *: second' || fail "the new pool's slot is not listed"
p11tool --slot 1 --login --pin "$PIN" --generate-random 16 > /dev/null 2>&1 ||
	fail "cannot log in to the new pool"
pass "a pool added at the end of the file: slot 1, logged in to"

signer_stop
stop_daemon
pass "a signer beside the reloads: $SIGNED signatures, 0 failed"
