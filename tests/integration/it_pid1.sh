#!/usr/bin/env bash
# p11muxd as PID 1, as the entrypoint of a container: its helpers' parent is PID 1, and they
# must still know it for their daemon (they are told its pid; they do not take "my parent is
# PID 1" for "my daemon is gone"). It starts, signs, stops cleanly, and leaves no helper.
. "$(dirname "$0")/lib.sh"
unshare --pid --fork --mount-proc true 2>/dev/null || { echo "no PID namespaces here (unshare)"; exit 77; }
it_setup
unshare --pid --fork --mount-proc "$DAEMON" -c "$WORK/p11mux.conf" -f >> "$WORK/daemon.log" 2>&1 &
NS=$!
ready() { grep -q ': ready$' "$WORK/daemon.log"; }
wait_until 30 ready || fail "p11muxd as PID 1 did not become ready: $(tail -5 "$WORK/daemon.log")"
# The daemon as the outer namespace sees it: the child of unshare.
DAEMON_PID=$(pgrep -P "$NS" | head -1)
[ -n "$DAEMON_PID" ] || fail "no daemon under unshare"
grep -q '^NSpid:.*[[:space:]]1$' "/proc/$DAEMON_PID/status" || fail "the daemon is not PID 1 in its namespace"
[ "$(pgrep -P "$DAEMON_PID" | wc -l)" -eq 3 ] || fail "not 3 helpers: $(pgrep -a -P "$DAEMON_PID")"
echo "message" > "$WORK/data"
p11tool --login --pin "$PIN" --sign -m SHA256-RSA-PKCS --id 01 -i "$WORK/data" -o "$WORK/sig" ||
	fail "no signature from a daemon that is PID 1"
verify_rsa "$WORK/data" "$WORK/sig" || fail "the signature does not verify"
helpers=$(pgrep -P "$DAEMON_PID" | tr '\n' ' ')
kill -TERM "$DAEMON_PID"
rc=0
wait "$NS" || rc=$?
DAEMON_PID=
[ "$rc" -eq 0 ] || fail "p11muxd as PID 1 exited with status $rc"
for h in $helpers; do [ ! -e "/proc/$h" ] || fail "helper $h outlived the daemon"; done
pass "p11muxd as PID 1 (a container's entrypoint): 3 helpers, a signature that verifies, a clean stop"
