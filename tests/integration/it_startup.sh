#!/usr/bin/env bash
# Start-up as init systems see it: a detaching p11muxd returns only once its socket accepts
# (exit 0), or fails with the reason on stderr (a wrong PIN here: exit 3, the status the
# unit does not restart on); in the foreground under
# systemd's Type=notify it sends READY=1 to $NOTIFY_SOCKET once ready; and the systemd unit
# that `cmake --install` writes passes `systemd-analyze verify` and starts the installed daemon.
. "$(dirname "$0")/lib.sh"
it_setup

# Detached: when the command returns 0 the pool is already serving; also when the command
# was started with its standard descriptors closed.
detached_start_stop() { # how
	local pid out
	pid=$(pgrep -f "^$DAEMON -c $WORK/p11mux.conf\$" || true)
	[ -n "$pid" ] || fail "no detached p11muxd is running ($1)"
	DAEMON_PID=$pid # test_cleanup stops it if the test fails
	out=$(p11tool -L 2>&1) || fail "the pool did not answer right after p11muxd returned ($1): $out"
	echo "$out" | grep -q "token label *: $LABEL" || fail "pkcs11-tool -L ($1): $out"
	kill -TERM "$pid"
	for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$pid" 2>/dev/null && fail "the detached p11muxd did not stop on SIGTERM ($1)"
	DAEMON_PID=
	[ ! -e "$SOCK" ] || fail "the socket was left behind ($1)"
}
"$DAEMON" -c "$WORK/p11mux.conf" || fail "p11muxd (detaching) exited $?"
detached_start_stop "detaching"
rc=0
"$DAEMON" -c "$WORK/p11mux.conf" <&- >&- 2>&- || rc=$?
DAEMON_PID=$(pgrep -f "^$DAEMON -c $WORK/p11mux.conf\$" || true)
[ "$rc" -eq 0 ] || fail "p11muxd (detaching, descriptors 0-2 closed) exited $rc"
detached_start_stop "descriptors 0-2 closed"
pass "a detaching p11muxd returns 0 once its socket accepts (also with descriptors 0-2 closed), and stops on SIGTERM"

# Detached with a wrong PIN: the command itself fails.
cp "$WORK/pin" "$WORK/pin.good"
printf '%s:%s\n' "$LABEL" 999999 > "$WORK/pin"
rc=0
out=$("$DAEMON" -c "$WORK/p11mux.conf" 2>&1) || rc=$?
[ "$rc" -eq 3 ] || fail "p11muxd with a wrong PIN: exit $rc, expected 3: $out"
echo "$out" | grep -q "failed to start: .*rejected the PIN" || fail "no reason from the failed start: $out"
# The failed daemon may still be exiting (LeakSanitizer runs at exit) when the command returns.
for _ in $(seq 1 300); do
	pgrep -f "^$DAEMON -c $WORK/p11mux.conf\$" > /dev/null || break
	sleep 0.1
done
pgrep -f "^$DAEMON -c $WORK/p11mux.conf\$" > /dev/null && fail "a p11muxd is left running"
cp "$WORK/pin.good" "$WORK/pin"
pass "a detaching p11muxd that cannot start says why and exits 3 (a PIN a member refused)"

# systemd Type=notify: READY=1 arrives once the socket accepts, on a socket path and on an
# abstract socket ("@name", what systemd usually hands out).
for where in "$WORK/notify.sock" "@p11mux-it-notify-$$"; do
	python3 - "$where" "$DAEMON" "$WORK/p11mux.conf" "$SOCK" <<'PY' || fail "sd_notify at $where"
import os, socket, subprocess, sys
where, daemon, conf, sock = sys.argv[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\0" + where[1:] if where.startswith("@") else where)
s.settimeout(30)
env = dict(os.environ, NOTIFY_SOCKET=where)
p = subprocess.Popen([daemon, "-c", conf, "-f"], env=env, stderr=subprocess.DEVNULL)
try:
    msg = s.recv(256).decode()
    assert msg == "READY=1", msg
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(sock)  # the socket accepts when READY=1 arrives
    c.close()
finally:
    p.terminate()
    assert p.wait(30) == 0, "p11muxd exited %d" % p.returncode
PY
done
pass "with NOTIFY_SOCKET set (a path, or an abstract socket), p11muxd -f sends READY=1 once its socket accepts"

# The installed unit: Type=notify, starts the daemon the same install put in place, and
# systemd finds nothing wrong with it (checked on a copy naming the staged daemon).
DESTDIR="$WORK/dest" cmake --install "$P11MUX_BUILD" > "$WORK/install.log" || fail "cmake --install"
unit=$(find "$WORK/dest" -path "*/lib/systemd/system/p11mux.service")
[ -n "$unit" ] || fail "cmake --install wrote no lib/systemd/system/p11mux.service"
grep -q "^Type=notify$" "$unit" || fail "the unit is not Type=notify: $(cat "$unit")"
exec_path=$(sed -n 's/^ExecStart=\([^ ]*\) .*/\1/p' "$unit")
[ -x "$WORK/dest$exec_path" ] || fail "the unit starts $exec_path, which the install did not put there"
mkdir "$WORK/unit"
sed "s|^ExecStart=$exec_path|ExecStart=$WORK/dest$exec_path|" "$unit" > "$WORK/unit/p11mux.service"
# verify exits 0 on an unknown key, with a warning: any output is a failure too.
out=$(cd "$WORK/unit" && systemd-analyze verify "$WORK/unit/p11mux.service" 2>&1) ||
	fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
pass "the installed systemd unit (Type=notify) passes systemd-analyze verify and names the installed $exec_path"
