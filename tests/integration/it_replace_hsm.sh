#!/usr/bin/env bash
# docs/operations.md, "Adding or replacing an HSM in a running pool", end to end on the
# simulator: hsm2 is drained and unplugged, a new device (hsm4) is initialised with the DKEK
# share, gets the pool's keys (wrapped on hsm1, unwrapped into it), is plugged in; one edit
# of the members list and `p11muxctl reload` swap them; `p11muxctl keys` agrees, hsm4 takes
# work. Then a spare (hsm5) appears in a pool of every token present and `p11muxctl rescan`
# takes it in. A signer runs throughout: 0 failed signatures. Each step is the
# simulator's stand-in for an sc-hsm-tool command (printed by p11sim-tool).
. "$(dirname "$0")/lib.sh"
it_setup --extractable
SO_PIN=0102030405060708
tool() { "$P11MUX_BUILD/p11sim-tool" --module "$SOFTHSM" "$@" > "$WORK/tool.out" 2>&1 || fail "p11sim-tool $1: $(cat "$WORK/tool.out")"; }
ctl() { "$P11MUX_BUILD/p11muxctl" "$@"; }
ops() { ctl metrics | sed -n "s/^p11mux_member_operations_total{.*member=\"$1\".*} //p"; }
new_device() { # LABEL: initialised with the DKEK, holding the pool's keys
	softhsm2-util --init-token --free --label "$1" --so-pin "$SO_PIN" --pin "$PIN" >/dev/null
	tool init --token "$1" --pin "$PIN" --so-pin "$SO_PIN" --dkek-share "$WORK/dkek.pbe" \
		--password env:DKEK_PWD
	for f in "$WORK"/wrap-*.bin; do tool unwrap-key --token "$1" --pin "$PIN" --in "$f"; done
}

# Before the pool starts: the DKEK share, loaded into the members (as when they were set up).
export DKEK_PWD=correct-horse
tool dkek-share "$WORK/dkek.pbe" --password env:DKEK_PWD
for t in hsm1 hsm2 hsm3; do
	tool init --token "$t" --pin "$PIN" --so-pin "$SO_PIN" --dkek-share "$WORK/dkek.pbe" --password env:DKEK_PWD
done
sim_setup 0.01
start_daemon
signer_start 4

# 1. hsm2 out: drained (its queue finishes), then unplugged.
ctl drain hsm2 > /dev/null || fail "drain hsm2"
fault hsm2 removed
# 2-3. The new device: initialised with the DKEK share, the keys copied from hsm1.
for id in 01 02; do tool wrap-key --token hsm1 --pin "$PIN" --id "$id" --out "$WORK/wrap-$id.bin"; done
grep -q 'sc-hsm-tool --wrap-key' "$WORK/tool.out" || fail "no sc-hsm-tool command shown"
new_device hsm4
# 4. The members list names hsm4 instead of hsm2; reload.
sed -i 's/members = \[ "hsm1", "hsm2", "hsm3" \];/members = [ "hsm1", "hsm4", "hsm3" ];/' "$WORK/p11mux.conf"
ctl reload > "$WORK/out" || fail "reload: $(cat "$WORK/out")"
grep -q 'member hsm2 removed' "$WORK/out" && grep -q 'member hsm4 added' "$WORK/out" ||
	fail "reload: $(cat "$WORK/out")"
# 5. It joins, the inventory agrees, it takes work.
up() { [ "$(member_state hsm4)" = up ]; }
wait_until 30 up || fail "hsm4 did not join: $(ctl status)"
ctl keys > "$WORK/keys" || fail "keys differ: $(cat "$WORK/keys")"
took() { [ "$(ops hsm4)" -gt 0 ]; }
wait_until 30 took || fail "hsm4 takes no work"
pass "hsm2 drained and unplugged, hsm4 initialised with the DKEK, keys unwrapped, reloaded: up, keys agree"

# A pool of every token present: a spare plugged in joins at the next rescan.
signer_stop
stop_daemon
sed -i '/members = \[/d' "$WORK/p11mux.conf"
fault hsm2 ""
start_daemon
new_device hsm5
ctl rescan > "$WORK/out" || fail "rescan: $(cat "$WORK/out")"
grep -q '1 new token, added as member' "$WORK/out" || fail "hsm5 not found: $(cat "$WORK/out")"
up5() { [ "$(member_state hsm5)" = up ]; }
wait_until 30 up5 || fail "hsm5 did not join: $(ctl status)"
ctl keys > "$WORK/keys" || fail "keys differ with hsm5: $(cat "$WORK/keys")"
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$CLIENT_SHIM" threads 4 40 "$KEYS/rsa.pub.pem" \
	"$KEYS/ec.pub.pem" || fail "signing with hsm5 in the pool"
[ "$(ops hsm5)" -gt 0 ] || fail "hsm5 takes no work"
stop_daemon
pass "signer: $SIGNED signatures, 0 failed; a spare in a pool of every token present joined at \`p11muxctl rescan\`"
