#!/usr/bin/env bash
# Hardening (docs/security.md, "Hardening"), without systemd:
#  - a pin file that others may read, or that another user owns, stops the daemon (and
#    p11muxd -t) with a message that says chmod 600 / chown; "credential:NAME" reads
#    $CREDENTIALS_DIRECTORY/NAME, as systemd's LoadCredential= provides it;
#  - the daemon runs as the unit runs it, as far as tools allow: as another user (nobody),
#    with no-new-privs and no capabilities (setpriv), in a mount namespace where everything
#    is read-only but the state, socket and token directories and /dev holds only the
#    pseudo-devices (unshare -m), started with an unlimited core limit; it signs through the
#    pool, and the daemon and each helper have a core limit of 0, are not dumpable (their
#    /proc/PID/environ belongs to root, and a process of their own user cannot open their
#    environ or mem, while it can those of a plain process of that user), and hold locked
#    memory that core files leave out (the PIN; in a helper, the buffer the PIN arrives in).
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" -eq 0 ] || { echo "needs root (another user, a mount namespace)"; exit 77; }
command -v setpriv > /dev/null || { echo "no setpriv"; exit 77; }
unshare -m true 2> /dev/null || { echo "no mount namespaces here (unshare -m)"; exit 77; }
NOBODY=65534
EXTRA_PIDS=
it_setup
trap 'for p in $EXTRA_PIDS; do kill "$p" 2>/dev/null || true; done; test_cleanup' EXIT

# refused WHAT MESSAGE [OPTIONS...]: p11muxd with each of OPTIONS (default: -f, none (it
# detaches), -t) refuses the configuration with MESSAGE, before any helper starts.
refused() {
	local what=$1 msg=$2 out rc=0 how
	shift 2
	[ $# -gt 0 ] || set -- "-f" "" "-t"
	for how in "$@"; do
		rc=0
		out=$("$DAEMON" -c "$WORK/p11mux.conf" $how 2>&1) || rc=$?
		[ "$rc" -ne 0 ] || fail "p11muxd $how accepted $what: $out"
		grep -qF -- "$msg" <<< "$out" || fail "p11muxd $how, $what: expected '$msg', got: $out"
		! grep -q "logged in" <<< "$out" || fail "p11muxd $how, $what: a member logged in: $out"
	done
	echo "  ${out%%$'\n'*}"
}
chmod 644 "$WORK/pin"
refused "a pin file of mode 0644" "(mode 0644): chmod 600 $WORK/pin"
chmod 640 "$WORK/pin"
refused "a pin file of mode 0640" "(mode 0640): chmod 600 $WORK/pin"
chmod 600 "$WORK/pin"
chown "$NOBODY" "$WORK/pin"
refused "a pin file owned by nobody" "belongs to nobody (uid $NOBODY), but p11muxd runs as root (uid 0): chown 0 $WORK/pin"
chown 0 "$WORK/pin"
out=$("$DAEMON" -t -c "$WORK/p11mux.conf" 2>&1) && grep -q "configuration OK" <<< "$out" ||
	fail "p11muxd -t refused a good pin file: $out"
pass "a pin file others may read, or another user owns, is refused (-f, detaching, -t) with chmod 600 / chown"

sed -i "s|pin_file = \"$WORK/pin\";|pin_file = \"credential:pool-pin\";|" "$WORK/p11mux.conf"
grep -q '"credential:pool-pin"' "$WORK/p11mux.conf" || fail "the configuration names no credential"
refused "a credential without \$CREDENTIALS_DIRECTORY" \
	'credential:pool-pin: $CREDENTIALS_DIRECTORY is not set (systemd sets it for a unit with LoadCredential=pool-pin:FILE)' \
	-f ""
# -t outside the service cannot see the credential: it says so, and the rest is OK.
out=$("$DAEMON" -t -c "$WORK/p11mux.conf" 2>&1) || fail "p11muxd -t with a credential: $out"
grep -qF 'credential:pool-pin: not checked ($CREDENTIALS_DIRECTORY is not set)' <<< "$out" &&
	grep -q "configuration OK" <<< "$out" || fail "p11muxd -t with a credential: $out"
pass "pin_file = \"credential:NAME\" needs \$CREDENTIALS_DIRECTORY; p11muxd -t skips it outside the service"

# --- the sandbox ---
RUN="$WORK/run"     # RuntimeDirectory=
STATE="$WORK/state" # StateDirectory=
CREDS="$WORK/creds" # what LoadCredential= provides: mode 0400, the service's user, dir 0500
NEWDEV="$WORK/dev"
mkdir -p "$RUN" "$STATE" "$CREDS" "$NEWDEV"
cp "$WORK/pin" "$CREDS/pool-pin"
chmod 400 "$CREDS/pool-pin"
chmod 500 "$CREDS"
chown -R "$NOBODY:$NOBODY" "$RUN" "$STATE" "$CREDS" "$WORK/hsm"
chmod 755 "$WORK"
SOCK="$RUN/p11mux.sock"
export P11MUX_SOCKET="$SOCK" P11MUX_CONTROL="$RUN/control.sock"
write_config "$SOFTHSM"
sed -i -e "s|pin_file = \"$WORK/pin\";|pin_file = \"credential:pool-pin\";|" \
	-e "s|\"$WORK/control.sock\"|\"$RUN/control.sock\"|" "$WORK/p11mux.conf"
chmod 644 "$WORK/p11mux.conf"

# A socket on a read-only mount, like /run/pcscd/pcscd.comm under ProtectSystem=strict.
PCSCD="$WORK/pcscd.comm"
/usr/bin/python3 -c 'import os, socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen(8)
s.settimeout(120); s.accept()' "$PCSCD" &
EXTRA_PIDS="$EXTRA_PIDS $!"
wait_until 10 test -S "$PCSCD" || fail "no stand-in pcscd socket"

cat > "$WORK/sandbox.sh" <<'SH'
set -euo pipefail
as_nobody() { setpriv --no-new-privs --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all "$@"; }
# StateDirectory=, RuntimeDirectory=, ReadWritePaths= (SoftHSM writes to its token store).
for d in $WRITABLE; do mount --bind "$d" "$d"; done
# PrivateDevices=: a /dev of its own with the pseudo-devices only.
mount -t tmpfs -o mode=755,nosuid,noexec tmpfs "$NEWDEV"
for n in null zero full random urandom tty; do
	touch "$NEWDEV/$n"
	mount --bind "/dev/$n" "$NEWDEV/$n"
done
mkdir "$NEWDEV/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$NEWDEV/shm"
ln -s /proc/self/fd "$NEWDEV/fd"
mount --move "$NEWDEV" /dev
# ProtectSystem=strict: every other mount read-only, the API file systems aside.
awk '{ print $5 }' /proc/self/mountinfo | sort -u | while read -r m; do
	case "$m" in /proc | /proc/* | /sys | /sys/* | /dev | /dev/*) continue ;; esac
	for d in $WRITABLE; do [ "$m" != "$d" ] || continue 2; done
	mount -o remount,bind,ro "$m"
done
# The sandbox is what it claims to be.
! touch /p11mux-probe 2> /dev/null || { echo "sandbox: / is writable"; exit 90; }
! touch "$WORK/probe" 2> /dev/null || { echo "sandbox: $WORK is writable"; exit 90; }
for d in $WRITABLE; do
	touch "$d/.probe" && rm "$d/.probe" || { echo "sandbox: $d is not writable"; exit 90; }
done
[ -c /dev/urandom ] && [ "$(ls /dev | wc -l)" -le 10 ] || { echo "sandbox: /dev: $(ls /dev)"; exit 90; }
as_nobody /usr/bin/python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$PCSCD" ||
	{ echo "sandbox: cannot connect to a socket on a read-only mount"; exit 90; }
ulimit -c unlimited
echo "sandbox: ready to start p11muxd; core limit $(ulimit -c), / read-only, private /dev"
# Under strace when asked (its own child: no capability needed), for the system calls; then
# without LeakSanitizer, which cannot work under ptrace (every other test checks for leaks).
exec setpriv --no-new-privs --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
	--bounding-set=-all env CREDENTIALS_DIRECTORY="$CREDS" \
	${TRACE:+ASAN_OPTIONS=detect_leaks=0:exitcode=23 strace -f -qq -o "$TRACE"} \
	"$DAEMON" -c "$WORK/p11mux.conf" -f
SH
TRACE=
if command -v strace > /dev/null && command -v systemd-analyze > /dev/null; then
	TRACE="$STATE/strace.out"
else
	echo "  (no strace or systemd-analyze: the system calls and socket families are not checked)"
fi
WRITABLE="$RUN $STATE $WORK/hsm/tokens" WORK="$WORK" NEWDEV="$NEWDEV" CREDS="$CREDS" PCSCD="$PCSCD" \
	DAEMON="$DAEMON" TRACE="$TRACE" unshare -m --propagation private bash "$WORK/sandbox.sh" \
	>> "$WORK/daemon.log" 2>&1 &
STARTED=$!
DAEMON_PID=$STARTED
ready() { grep -q ': ready$' "$WORK/daemon.log" || ! kill -0 "$STARTED" 2> /dev/null; }
wait_until 60 ready && kill -0 "$STARTED" 2> /dev/null || fail "p11muxd did not start in the sandbox"
[ -z "$TRACE" ] || DAEMON_PID=$(pgrep -P "$STARTED" | head -1) # strace's child
grep -q "^sandbox: ready to start p11muxd; core limit unlimited" "$WORK/daemon.log" ||
	fail "the sandbox did not start the daemon with an unlimited core limit"
grep -q "^Uid:[[:space:]]*$NOBODY[[:space:]]" "/proc/$DAEMON_PID/status" || fail "the daemon does not run as nobody"
grep -q "^NoNewPrivs:[[:space:]]*1" "/proc/$DAEMON_PID/status" || fail "the daemon is not no-new-privs"
grep -q "^CapBnd:[[:space:]]*0000000000000000" "/proc/$DAEMON_PID/status" || fail "the daemon has capabilities"
pass "p11muxd started as nobody, no-new-privs, no capabilities, read-only /, private /dev, core limit unlimited"

echo "message" > "$WORK/data"
for i in 1 2 3 4 5 6; do
	p11tool --login --pin "$PIN" --sign -m SHA256-RSA-PKCS --id 01 -i "$WORK/data" -o "$WORK/sig" > /dev/null 2>&1 ||
		fail "no signature from the sandboxed daemon (try $i)"
	verify_rsa "$WORK/data" "$WORK/sig" || fail "the signature does not verify (try $i)"
done
up=$("$P11MUX_BUILD/p11muxctl" status --json | python3 -c '
import json, sys
print(sum(m["state"] == "up" for m in json.load(sys.stdin)["pools"][0]["members"]))')
[ "$up" -eq 3 ] || fail "$up of 3 members up in the sandbox"
pass "the sandboxed pool signs (6 signatures that verify; 3 members up, their PIN from the credential)"

# A plain process of the same user: dumpable, so its user may open its environ and mem.
setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups sleep 120 &
PLAIN=$!
EXTRA_PIDS="$EXTRA_PIDS $PLAIN"
opens_as_nobody() { # FILE: whether a process of nobody can open it
	setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups \
		/usr/bin/python3 -c 'import os, sys; os.open(sys.argv[1], os.O_RDONLY)' "$1" 2> /dev/null
}
wait_until 10 grep -q "^Uid:[[:space:]]*$NOBODY[[:space:]]" "/proc/$PLAIN/status" || fail "no plain process as nobody"
opens_as_nobody "/proc/$PLAIN/environ" || fail "the check cannot tell: nobody cannot open its own environ"
[ "$(stat -c %u "/proc/$PLAIN/environ")" -eq "$NOBODY" ] || fail "the check cannot tell: /proc/PID/environ of a plain process"
check_mem=1
opens_as_nobody "/proc/$PLAIN/mem" || check_mem=0 # Yama's ptrace_scope may forbid it anyway

helpers=$(pgrep -P "$DAEMON_PID" | tr '\n' ' ')
[ "$(echo "$helpers" | wc -w)" -eq 3 ] || fail "not 3 helpers: $helpers"
for pid in "$DAEMON_PID" $helpers; do
	what="$(tr '\0' ' ' < "/proc/$pid/cmdline" | cut -c1-40) (pid $pid)"
	grep -Eq '^Max core file size +0 +0 +bytes' "/proc/$pid/limits" ||
		fail "$what: core limit not 0: $(grep 'core file' "/proc/$pid/limits")"
	grep -q "^Uid:[[:space:]]*$NOBODY[[:space:]]" "/proc/$pid/status" || fail "$what does not run as nobody"
	# (/proc/PID itself always shows the process's user; the files in it show root when the
	# process is not dumpable.)
	[ "$(stat -c %u "/proc/$pid/environ")" -eq 0 ] ||
		fail "$what is dumpable: /proc/$pid/environ belongs to $(stat -c %U "/proc/$pid/environ")"
	! opens_as_nobody "/proc/$pid/environ" || fail "$what: its user can open its environ"
	[ "$check_mem" -eq 0 ] || ! opens_as_nobody "/proc/$pid/mem" || fail "$what: its user can open its mem"
	[ "$(awk '/^VmLck:/ { print $2 }' "/proc/$pid/status")" -gt 0 ] || fail "$what holds no locked memory"
	awk '/^VmFlags:/ && / lo / && / dd( |$)/ { found = 1 } END { exit !found }' "/proc/$pid/smaps" ||
		fail "$what: no memory both locked and left out of core files"
done
[ "$check_mem" -eq 1 ] || echo "  (/proc/PID/mem not checked: a plain process's cannot be opened here either)"
pass "the daemon and its 3 helpers: core limit 0, not dumpable (environ$([ "$check_mem" -eq 0 ] || echo ", mem") closed to their own user), locked memory left out of core files"

kill -TERM "$DAEMON_PID"
rc=0
wait "$STARTED" || rc=$? # strace exits as the daemon did
DAEMON_PID=
[ "$rc" -eq 0 ] || fail "the sandboxed p11muxd exited with status $rc"
[ ! -e "$SOCK" ] || fail "the socket was left behind"
pass "the sandboxed p11muxd stops cleanly"

[ -n "$TRACE" ] || exit 0
# SystemCallFilter= and RestrictAddressFamilies= of the unit, checked against what the daemon and
# its SoftHSM helpers called, from start to stop (not enforced: there is no seccomp tool here).
UNIT="$P11MUX_SOURCE/config/p11mux.service.in"
expand() { # @group or name: the system calls
	case $1 in
	@*) systemd-analyze syscall-filter "$1" | tail -n +2 | grep -v '^[[:space:]]*#' | tr -s ' \n' '\n' |
		grep -v '^$' | while read -r x; do expand "$x"; done ;;
	*) echo "$1" ;;
	esac
}
for g in $(sed -n 's/^SystemCallFilter=\([^~]\)/\1/p' "$UNIT"); do expand "$g"; done | sort -u > "$WORK/allowed"
for g in $(sed -n 's/^SystemCallFilter=~//p' "$UNIT"); do expand "$g"; done | sort -u > "$WORK/denied"
[ -s "$WORK/allowed" ] || fail "no SystemCallFilter= allow list in $UNIT"
awk '$2 ~ /^[a-z_0-9]+\(/ { sub(/\(.*/, "", $2); print $2 }' "$TRACE" | sort -u > "$WORK/used"
outside=$(comm -23 "$WORK/used" <(comm -23 "$WORK/allowed" "$WORK/denied") | tr '\n' ' ')
[ -z "$outside" ] || fail "system calls outside the unit's SystemCallFilter=: $outside"
families=$(grep -o 'socket(AF_[A-Z0-9]*' "$TRACE" | sort -u | sed 's/socket(//' | tr '\n' ' ')
[ "$families" = "AF_UNIX " ] || fail "socket families besides AF_UNIX (RestrictAddressFamilies=AF_UNIX): $families"
pass "the daemon and its helpers made $(wc -l < "$WORK/used") kinds of system call, all in the unit's SystemCallFilter=, and opened AF_UNIX sockets only"
