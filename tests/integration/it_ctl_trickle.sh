#!/usr/bin/env bash
# The control socket under a trickling client (issue 13): user nobody, allowed to read the
# status, keeps 8 control connections busy that send "status" one byte every 2 s. Each is
# closed after the control socket's 1 s time-out, and beyond 4 at once nobody's connections
# are refused at once; meanwhile root's p11muxctl status answers at once, every time, and
# signing goes on. A user who may not use the control socket gets its refusal without
# sending a byte (the peer is checked before anything is read).
. "$(dirname "$0")/lib.sh"
it_setup
[ "$(id -u)" -eq 0 ] || { echo "skipped: needs root to switch users"; exit 77; }
write_config "$SOFTHSM" 'control_allowed_users = [ "nobody" ];
socket_group = "nogroup";'
chmod 0755 "$WORK"
ATT="$WORK/att"
mkdir -m 1777 "$ATT"
install -m 0644 "$P11MUX_SOURCE/tests/integration/flood.py" "$WORK/flood.py"
start_daemon
CTL="$P11MUX_BUILD/p11muxctl"

setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/python3 "$WORK/flood.py" \
	"$WORK/control.sock" trickle 8 8 "$ATT/trickle" &
trickle_pid=$!
wait_until 20 test -e "$ATT/trickle.ready" || fail "the trickling client did not start"
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$SHIM" threads 2 50 "$KEYS/rsa.pub.pem" \
	"$KEYS/ec.pub.pem" > "$WORK/legit.out" 2>&1 &
sign_pid=$!
slowest=0
for i in $(seq 1 20); do
	t0=$(date +%s%N)
	"$CTL" status > "$WORK/status.out" || fail "p11muxctl status failed while a client trickled"
	ms=$((($(date +%s%N) - t0) / 1000000))
	[ "$ms" -gt "$slowest" ] && slowest=$ms
	grep -q "^hsm1 " "$WORK/status.out" || fail "status without members: $(cat "$WORK/status.out")"
	sleep 0.2
done
echo "20 status commands while nobody trickled: slowest answer $slowest ms"
[ "$slowest" -lt 1000 ] || fail "p11muxctl status took $slowest ms"
wait "$sign_pid" || fail "signing while a control client trickled: $(cat "$WORK/legit.out")"
cat "$WORK/legit.out"
wait "$trickle_pid"

python3 - "$ATT/trickle" <<'PY' || fail "trickling control client"
import sys
closed, refused, answered = [], [], []
for line in open(sys.argv[1]):
    k, *v = line.split()
    if k == "control_closed_after":
        closed.append(float(v[0]))
    elif k == "control_refused":
        refused.append(float(v[0]))
    elif k == "control_answered":
        answered.append(line.strip())
print("trickling control connections: %d closed after %.2f-%.2f s, %d refused at once "
      "(slowest %.2f s), %d answered" % (len(closed), min(closed), max(closed), len(refused),
                                         max(refused) if refused else 0, len(answered)))
assert closed and all(0.9 <= t <= 2.5 for t in closed), closed
assert refused and all(t < 1.0 for t in refused), refused
assert not answered, answered
PY
grep -q "control: nobody (uid $(id -u nobody)) sent no whole command within 1000 ms" "$WORK/daemon.log" ||
	fail "the time-out was not logged"
pass "trickling control clients closed after 1 s, refused beyond 4; status and signing unaffected"

# A user who may not use the control socket: answered before it sends anything.
chmod 0666 "$WORK/control.sock"
out=$(setpriv --reuid=daemon --regid=daemon --clear-groups /usr/bin/python3 - "$WORK/control.sock" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.settimeout(2)
t0 = time.time()
data = b""
while True:
    got = s.recv(4096)
    if not got:
        break
    data += got
print("%.2f %s" % (time.time() - t0, data.decode().strip()))
PY
) || fail "the refused user's client failed"
echo "$out"
grep -q "^0\.[0-4][0-9] error: user daemon (uid [0-9]*) may not use the control socket" <<< "$out" ||
	fail "no prompt refusal before reading: $out"
stop_daemon
pass "a user without control access is refused before anything is read"
