#!/usr/bin/env bash
# A wrong configuration stops the daemon with FILE:LINE: KEY: reason, and a wrong PIN file
# stops it before any device sees the PIN more than once.
. "$(dirname "$0")/lib.sh"
it_setup
expect_error() { # file expected-substring
	local out rc=0
	out=$("$DAEMON" -c "$1" -f 2>&1) || rc=$?
	[ "$rc" -ne 0 ] || fail "p11muxd accepted $1"
	grep -qF "$2" <<< "$out" || fail "expected '$2', got: $out"
	echo "  $out"
}
C="$WORK/bad.conf"
printf 'socket = "/tmp/x.sock";\npools = ( {\n  label = "a:b";\n  pin_file = "/x";\n} );\n' > "$C"
expect_error "$C" "$C:3: pools.[0].label: a token label must not contain ':'"
printf 'socket = "/tmp/x.sock";\n\npool = ( );\n' > "$C"
expect_error "$C" "$C:3: pool: unknown key"
printf 'pools = ( {\n  members = "hsm1";\n  pin_file = "/x";\n} );\n' > "$C"
expect_error "$C" "$C:2: pools.[0].members: expected a list of tokens"
printf 'pools = ( {\n  label = ;\n} );\n' > "$C"
expect_error "$C" "$C:2: syntax error"
printf 'pools = ( {\n  label = "x";\n} );\n' > "$C"
expect_error "$C" "$C:1: pools.[0].pin_file: missing (required)"
pass "configuration errors name file, line and key"

printf '%s:%s\n' "$LABEL" 999999 > "$WORK/pin"
out=$("$DAEMON" -c "$WORK/p11mux.conf" -f 2>&1) && fail "started with a wrong PIN"
grep -q "rejected the PIN from $WORK/pin (CKR_PIN_INCORRECT); not tried on any other member" <<< "$out" ||
	fail "wrong pool PIN not reported as expected: $out"
printf 'other label:%s\n' "$PIN" > "$WORK/pin"
out=$("$DAEMON" -c "$WORK/p11mux.conf" -f 2>&1) && fail "started without a PIN"
grep -q "$WORK/pin: no PIN for token \"$LABEL\"" <<< "$out" || fail "missing PIN not reported: $out"
pass "PIN file errors"
# -t checks the pin file too (docs/security.md): the example's, /etc/p11mux/pin, is ours here.
sed "s|\"/etc/p11mux/pin\"|\"$WORK/pin\"|" "$P11MUX_SOURCE/config/p11mux.conf.example" > "$WORK/example.conf"
grep -q "pin_file = \"$WORK/pin\"" "$WORK/example.conf" || fail "the example names no /etc/p11mux/pin"
"$DAEMON" -t -c "$WORK/example.conf" | grep -q "configuration OK" ||
	fail "the shipped example does not parse"
pass "config/p11mux.conf.example parses"
