#!/usr/bin/env bash
# What the shim checks before it trusts its input (issue 13): C_Initialize's pReserved is read
# without faulting and must be key=value text; nothing is sent to a daemon whose socket others
# could have replaced (socket or directory writable by others) or that does not own its socket;
# an OAEP label stays valid after the application frees its own copy.
. "$(dirname "$0")/lib.sh"
it_setup
start_daemon
T="$P11MUX_BUILD/tests/itest_shim"

# Only the string can find the daemon: the variable names a socket that does not exist.
P11MUX_SOCKET="$WORK/nosuch.sock" "$T" "$SHIM" initargs "$SOCK" || fail "pReserved"
pass "pReserved: (void *)1, PROT_NONE, unterminated and non-key=value strings get CKR_ARGUMENTS_BAD; socket=... works"

# slots_refused WHY: the shim must refuse the daemon with CKR_DEVICE_ERROR and say WHY once in
# the application's log (stderr), though it tried twice.
slots_refused() {
	local rc=0
	"$T" "$SHIM" slots > "$WORK/out" 2> "$WORK/err" || rc=$?
	[ "$rc" -eq 3 ] || fail "served (status $rc) though $1: $(cat "$WORK/out" "$WORK/err")"
	[ "$(grep -c "p11mux-pkcs11: connecting to p11muxd refused (CKR_DEVICE_ERROR): .*$1" \
		"$WORK/err")" -eq 1 ] || fail "no single refusal line saying \"$1\": $(cat "$WORK/err")"
}
served() {
	"$T" "$SHIM" slots > "$WORK/out" 2>&1 || fail "not served $1: $(cat "$WORK/out")"
}

# No daemon at the socket: one line on stderr per process names it (two calls); quiet=1 in
# the module's parameters, or P11MUX_QUIET=1, silences it.
rc=0
P11MUX_SOCKET="$WORK/none.sock" "$T" "$SHIM" slots > /dev/null 2> "$WORK/err" || rc=$?
[ "$rc" -eq 3 ] || fail "slots without a daemon: status $rc"
[ "$(grep -c "cannot reach p11muxd at $WORK/none.sock (no daemon listening)" "$WORK/err")" -eq 1 ] ||
	fail "no single line naming the socket: $(cat "$WORK/err")"
P11MUX_SOCKET="$WORK/none.sock" P11MUX_QUIET=1 "$T" "$SHIM" slots > /dev/null 2> "$WORK/err" || true
[ ! -s "$WORK/err" ] || fail "P11MUX_QUIET=1 did not silence: $(cat "$WORK/err")"
"$T" "$SHIM" slots "socket=$WORK/none.sock quiet=1" > /dev/null 2> "$WORK/err" || true
[ ! -s "$WORK/err" ] || fail "quiet=1 did not silence: $(cat "$WORK/err")"
pass "no daemon: one stderr line names the socket; quiet=1 and P11MUX_QUIET=1 silence it"

served "at first"
chmod o+w "$WORK"
slots_refused "the directory of the socket, $WORK, is writable by others"
chmod o-w "$WORK"
served "after chmod o-w on the directory"
pass "a socket in a directory writable by others is refused, and served again after chmod o-w"

chmod o+w "$SOCK"
slots_refused "$SOCK is writable by others"
chmod o-w "$SOCK"
served "after chmod o-w on the socket"
pass "a socket writable by others is refused, and served again after chmod o-w"

P11MUX_PIN=$PIN "$T" "$SHIM" oaep "$KEYS/rsa.key.pem" || fail "OAEP label"
pass "RSA-OAEP with a label the application unmapped after C_EncryptInit / C_DecryptInit"
stop_daemon

# A listener that is not the socket's owner gets no byte. Only root can make one: a process
# of user nobody listening on a socket that root owns.
[ "$(id -u)" -eq 0 ] || { echo "skipped: the owner check needs root"; exit 0; }
F="$WORK/fake"
mkdir "$F"
chown nobody "$F"
chmod 0755 "$WORK"
# listen: as nobody (with the system python, which nobody can run), accepts the shim's two connections (or stops after 5 s) and writes how
# many bytes came to $F/bytes.
listen() {
	setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(4)
s.settimeout(5)
total = 0
try:
    for _ in range(2):
        c, _ = s.accept()
        c.settimeout(2)
        try:
            total += len(c.recv(65536))
        except socket.timeout:
            pass
        c.close()
except socket.timeout:
    pass
print(total)' "$F/s.sock" > "$F/bytes" &
	LISTENER=$!
	wait_until 10 test -S "$F/s.sock" || fail "the listener did not start"
	chmod 0600 "$F/s.sock"
}

# Owned by its listener, the socket passes the check: the shim sends its HELLO.
listen
rc=0
P11MUX_SOCKET="$F/s.sock" "$T" "$SHIM" slots > "$WORK/out" 2> "$WORK/err" || rc=$?
wait "$LISTENER"
[ "$rc" -eq 3 ] && [ "$(cat "$F/bytes")" -gt 0 ] ||
	fail "listener owning its socket: status $rc, $(cat "$F/bytes") bytes: $(cat "$WORK/err")"
rm -f "$F/s.sock"

listen
chown root "$F/s.sock"
rc=0
P11MUX_SOCKET="$F/s.sock" "$T" "$SHIM" slots > "$WORK/out" 2> "$WORK/err" || rc=$?
wait "$LISTENER"
[ "$rc" -eq 3 ] && [ "$(cat "$F/bytes")" -eq 0 ] ||
	fail "listener not owning its socket: status $rc, $(cat "$F/bytes") bytes: $(cat "$WORK/err")"
grep -q "$F/s.sock belongs to uid 0, but the process listening on it (pid [0-9]*) runs as uid $(id -u nobody)" \
	"$WORK/err" || fail "the refusal does not say why: $(cat "$WORK/err")"
pass "a listener that does not own the socket gets no byte (it would get the HELLO if it did)"
