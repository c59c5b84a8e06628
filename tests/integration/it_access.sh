#!/usr/bin/env bash
# Only the socket's owner, root, and the users and groups listed in the configuration may
# use the daemon (checked with SO_PEERCRED, not only by the socket's mode).
. "$(dirname "$0")/lib.sh"
it_setup
[ "$(id -u)" -eq 0 ] || { echo "skipped: needs root to switch users"; exit 77; }
start_daemon
[ "$(stat -c %a "$SOCK")" = 660 ] || fail "socket mode is $(stat -c %a "$SOCK"), not 660"
# Open the file-system path to nobody's group so that only the daemon's own check stands in the
# way. (A socket writable by others would not do: the shim refuses it.)
chgrp nogroup "$SOCK"
chmod 0755 "$WORK"
chmod 0644 "$SOFTHSM2_CONF" || true
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups env P11MUX_SOCKET="$SOCK" "$@"; }
out=$(as_nobody pkcs11-tool --module "$SHIM" -L 2>&1 || true)
grep -q "CKR_FUNCTION_FAILED\|CKR_DEVICE_ERROR" <<< "$out" || fail "nobody was served: $out"
grep -q "refused a connection from uid $(id -u nobody)" "$WORK/daemon.log" || fail "refusal not logged"
stop_daemon
pass "user nobody refused"
write_config "$SOFTHSM" 'allowed_users = [ "nobody" ];'
start_daemon
chgrp nogroup "$SOCK"
as_nobody pkcs11-tool --module "$SHIM" -L | grep -q "token label *: $LABEL" || fail "allowed user refused"
stop_daemon
pass "user nobody served once in allowed_users"
