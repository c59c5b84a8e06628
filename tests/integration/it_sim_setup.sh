#!/usr/bin/env bash
# Trying p11mux without hardware, as the README says (issue 17): p11mux-sim-setup writes a pool
# of simulated HSMs into a directory; with its env sourced, p11muxd starts on it and a
# signature made through the shim verifies with the tokens' public key. Without
# P11SIM_CONFIG the simulator says it runs at a real device's speed; without SOFTHSM2_CONF the
# daemon's error says where SoftHSM looks.
. "$(dirname "$0")/lib.sh"
test_workdir p11mux-simsetup --tokens 1
S="$WORK/pool"
P11SIM_MODULE="$P11MUX_BUILD/p11sim-pkcs11.so" "$P11MUX_SOURCE/tools/p11sim/p11mux-sim-setup" "$S" \
	--tokens 3 --scale 0.01 > "$WORK/setup.out" || fail "p11mux-sim-setup: $(cat "$WORK/setup.out")"
grep -q "p11muxd -c $S/p11mux.conf -f" "$WORK/setup.out" || fail "no next steps printed"
[ "$(stat -c %a "$S/pin")" = 600 ] || fail "the PIN file is not mode 600"
"$DAEMON" -t -c "$S/p11mux.conf" > /dev/null || fail "p11muxd -t on the written config"
(
	unset SOFTHSM2_CONF P11SIM_CONFIG
	. "$S/env"
	"$DAEMON" -c "$S/p11mux.conf" -f > "$WORK/daemon.log" 2>&1 &
	echo $! > "$WORK/daemon.pid"
	wait_until 30 grep -q ': ready$' "$WORK/daemon.log" || fail "not ready"
	echo -n "sign me" > "$WORK/data"
	pkcs11-tool --module "$SHIM" --login --pin 648219 --sign --mechanism SHA256-RSA-PKCS \
		--id 01 -i "$WORK/data" -o "$WORK/sig" > "$WORK/sign.out" 2>&1 ||
		fail "signing through the pool: $(cat "$WORK/sign.out")"
	openssl dgst -sha256 -verify "$S/hsm/keys/rsa.pub.pem" -signature "$WORK/sig" "$WORK/data" \
		> /dev/null || fail "the signature does not verify"
	[ "$(P11MUX_CONTROL="$S/control.sock" "$P11MUX_BUILD/p11muxctl" status --json |
		python3 -c 'import json,sys; print(len(json.load(sys.stdin)["pools"][0]["members"]))')" = 3 ] ||
		fail "not 3 members"
	kill "$(cat "$WORK/daemon.pid")"
	wait "$(cat "$WORK/daemon.pid")" || fail "p11muxd exited with an error"
)
pass "p11mux-sim-setup: a pool of 3 simulated HSMs starts from its env and signs"

# The hints for a forgotten variable.
(
	. "$S/env"
	unset P11SIM_CONFIG
	out=$("$P11MUX_BUILD/p11muxd" --help > /dev/null 2>&1; pkcs11-tool --module "$P11MUX_BUILD/p11sim-pkcs11.so" -L 2>&1 || true)
	echo "$out" | grep -q "P11SIM_CONFIG is not set" || fail "no hint without P11SIM_CONFIG: $out"
	unset SOFTHSM2_CONF
	rc=0
	out=$("$DAEMON" -c "$S/p11mux.conf" -f 2>&1) || rc=$?
	[ "$rc" -ne 0 ] || fail "started without SOFTHSM2_CONF"
	echo "$out" | grep -q "SOFTHSM2_CONF is not set in the daemon.s environment" || fail "no hint without SOFTHSM2_CONF: $out"
)
pass "without P11SIM_CONFIG the simulator says so; without SOFTHSM2_CONF the daemon's error says where SoftHSM looks"
