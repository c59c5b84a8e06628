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

# -t checks, without touching a device, that each module loads as a PKCS#11 module and each pin
# file is usable: each mistake is reported as FILE:LINE: KEY: and names the file.
expect_check_error() { # config expected-substring
	local out rc=0
	out=$("$DAEMON" -t -c "$1" 2>&1) || rc=$?
	[ "$rc" -eq 2 ] || fail "p11muxd -t exited $rc, not 2, for $1: $out"
	grep -qF "$2" <<< "$out" || fail "p11muxd -t: expected '$2', got: $out"
	! grep -q "configuration OK" <<< "$out" || fail "p11muxd -t said OK: $out"
	echo "  $out"
}
"$DAEMON" -t -c "$WORK/p11mux.conf" | grep -qF "$WORK/p11mux.conf: configuration OK (1 pool)" ||
	fail "p11muxd -t refused the test's configuration"
printf '%s:%s\n' "$LABEL" "$PIN" > "$WORK/pin"
line=$(grep -n 'module = ' "$WORK/p11mux.conf" | cut -d: -f1)
pinline=$(grep -n 'pin_file = ' "$WORK/p11mux.conf" | cut -d: -f1)
write_config "$WORK/nowhere.so"
expect_check_error "$WORK/p11mux.conf" "$WORK/p11mux.conf:$line: pools.[0].module: $WORK/nowhere.so: No such file or directory"
echo "not a library" > "$WORK/text.so"
write_config "$WORK/text.so"
expect_check_error "$WORK/p11mux.conf" "$WORK/p11mux.conf:$line: pools.[0].module: $WORK/text.so: cannot load: "
libconfig=$(ldd "$DAEMON" | awk '/libconfig\.so/ { print $3 }')
[ -e "$libconfig" ] || fail "no libconfig in ldd $DAEMON"
write_config "$libconfig"
expect_check_error "$WORK/p11mux.conf" "$WORK/p11mux.conf:$line: pools.[0].module: $libconfig: cannot load: not a PKCS#11 module (no C_GetFunctionList)"
write_config "$SOFTHSM"
mv "$WORK/pin" "$WORK/pin.away"
expect_check_error "$WORK/p11mux.conf" "$WORK/p11mux.conf:$pinline: pools.[0].pin_file: $WORK/pin: cannot read the pin file: No such file or directory"
mv "$WORK/pin.away" "$WORK/pin"
chmod 644 "$WORK/pin"
expect_check_error "$WORK/p11mux.conf" "$WORK/p11mux.conf:$pinline: pools.[0].pin_file: $WORK/pin"
expect_check_error "$WORK/p11mux.conf" "(mode 0644): chmod 600 $WORK/pin"
chmod 600 "$WORK/pin"
# Both at once: every problem is reported, not only the first.
write_config "$WORK/nowhere.so"
chmod 644 "$WORK/pin"
out=$("$DAEMON" -t -c "$WORK/p11mux.conf" 2>&1) && fail "p11muxd -t accepted two mistakes"
grep -q "pools.\[0\].module" <<< "$out" && grep -q "pools.\[0\].pin_file" <<< "$out" ||
	fail "p11muxd -t did not report both mistakes: $out"
chmod 600 "$WORK/pin"
write_config "$SOFTHSM"
"$DAEMON" -t -c "$WORK/p11mux.conf" | grep -q "configuration OK (1 pool)" ||
	fail "p11muxd -t refused the configuration once it was right again"
pass "p11muxd -t: a missing module, one that is no library, one that is no PKCS#11 module, a missing pin file and one of mode 0644 each fail naming the file and the key"

# "hsm1" "hsm2" without a comma is one string to libconfig: refused, not one member "hsm1hsm2".
sed 's/"hsm1", "hsm2"/"hsm1" "hsm2"/' "$WORK/p11mux.conf" > "$WORK/joined.conf"
expect_check_error "$WORK/joined.conf" "pools.[0].members: \"hsm1\" \"hsm2\" is one string to libconfig: a ',' is missing between them"
printf 'pools = (\n  { pin_file = "/p"; }\n  { pin_file = "/q"; }\n);\n' > "$C"
expect_error "$C" "$C:3: syntax error on this line or at the end of the line before (a missing ','"
out=$("$DAEMON" -t -c "$C" 2>&1) || true
! grep -q "syntax error: syntax error" <<< "$out" || fail "libconfig's message came through: $out"
pass "joined strings in a list and a syntax error say what is missing"

# --list-tokens shows what the module shows, members marked, without logging in: it needs no
# pin file, and a member the module does not show is named.
sed 's/members = \[ "hsm1", "hsm2", "hsm3" \];/members = [ "hsm1", "hsm2", "hsm9" ];/' \
	"$WORK/p11mux.conf" > "$WORK/list.conf"
mv "$WORK/pin" "$WORK/pin.away"
out=$("$DAEMON" --list-tokens -c "$WORK/list.conf" 2>&1) || fail "p11muxd --list-tokens failed: $out"
mv "$WORK/pin.away" "$WORK/pin"
echo "$out" | sed 's/^/  /'
grep -q "^pool 0 \"$LABEL\", slot 0 ($WORK/list.conf:" <<< "$out" || fail "no pool line: $out"
grep -qF "  module $SOFTHSM" <<< "$out" || fail "no module line: $out"
for t in hsm1 hsm2; do
	grep -qE "slot [0-9]+: \"$t\", serial [0-9a-f]+, SoftHSM project SoftHSM v2; a member$" <<< "$out" ||
		fail "$t not listed as a member: $out"
done
grep -qE "slot [0-9]+: \"hsm3\", serial [0-9a-f]+, .*; not a member$" <<< "$out" ||
	fail "hsm3 not listed as a token outside the pool: $out"
[ "$(grep -c 'flags: token initialized, login required, user PIN initialized' <<< "$out")" -eq 3 ] ||
	fail "the tokens' flags are not shown: $out"
grep -qF "member \"hsm9\" (line " <<< "$out" && grep -q "not shown by its module" <<< "$out" ||
	fail "the missing member is not named: $out"
# No session, no login: SoftHSM counts neither, but a wrong PIN file costs nothing here and the
# daemon's own start still works with the right one.
printf '%s:%s\n' "$LABEL" 999999 > "$WORK/pin.wrong"
chmod 600 "$WORK/pin.wrong"
sed "s|$WORK/pin\"|$WORK/pin.wrong\"|" "$WORK/list.conf" > "$WORK/list-wrong.conf"
"$DAEMON" --list-tokens -c "$WORK/list-wrong.conf" > /dev/null 2>&1 || fail "--list-tokens failed with another pin file"
out=$("$DAEMON" --list-tokens -c "$WORK/list.conf" -t 2>&1) && fail "--list-tokens with -t accepted: $out"
write_config "$WORK/nowhere.so"
out=$("$DAEMON" --list-tokens -c "$WORK/p11mux.conf" 2>&1) && fail "--list-tokens of a missing module exited 0: $out"
grep -q "cannot list its tokens" <<< "$out" || fail "--list-tokens of a missing module: $out"
write_config "$SOFTHSM"
pass "p11muxd --list-tokens lists slot, label, serial, maker, model and flags, members marked, without a pin file"

# --help lists every option, -t included; --version; a wrong option is a usage error.
help=$("$DAEMON" --help) || fail "p11muxd --help exited non-zero"
for o in -c -f -d -t --list-tokens --help --version; do
	grep -q -- "$o" <<< "$help" || fail "p11muxd --help does not list $o: $help"
done
[ "$("$DAEMON" --version)" = "p11muxd $(sed -n 's/^project(p11mux VERSION \([0-9.]*\).*/\1/p' "$P11MUX_SOURCE/CMakeLists.txt")" ] ||
	fail "p11muxd --version: $("$DAEMON" --version)"
rc=0
"$DAEMON" --no-such-option > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "a wrong option exited $rc, not 2"
pass "p11muxd --help, --version"
