#!/usr/bin/env bash
# NSS as mod_nss uses it: modutil -add with the socket in -string, the mod_nss pin file,
# certutil -L -h all shows "<pool label>:<cert label>", rsaperf -s works through the pool,
# and one NSS private-key operation costs exactly one round trip.
. "$(dirname "$0")/lib.sh"
it_setup
start_daemon
DB="$WORK/nssdb"
nss_pool_db "$DB"
# The -string parameter must be what finds the daemon: hide the environment variable.
unset P11MUX_SOCKET
list=$(certutil -d "sql:$DB" -L -h all -f "$WORK/nsspin")
echo "$list"
grep -q "^$LABEL:httpdcert " <<< "$list" || fail "certificate nickname '$LABEL:httpdcert' missing"
grep -q "^$LABEL:eccert " <<< "$list" || fail "certificate nickname '$LABEL:eccert' missing"
certutil -d "sql:$DB" -K -h "$LABEL" -f "$WORK/nsspin" | grep -q httpdcert ||
	fail "certutil -K does not show the pool's private key"
pass "modutil -add, certutil -L -h all and -K"

export P11MUX_STATS="$WORK/stats"
out=$(rsaperf -d "sql:$DB" -n "$LABEL:httpdcert" -f "$WORK/nsspin" -s -p 2 -t 2 2>&1)
echo "$out" | tail -3
iters=$(echo "$out" | sed -n 's/^\([0-9][0-9]*\) iterations in.*/\1/p')
[ -n "$iters" ] && [ "$iters" -gt 0 ] || fail "rsaperf made no operation"
stats=$(cat "$WORK/stats")
echo "$stats"
decrypts=$(echo "$stats" | sed -n 's/.* DECRYPT=\([0-9]*\).*/\1/p')
total=$(echo "$stats" | sed -n 's/.* total=\([0-9]*\).*/\1/p')
# rsaperf does one warm-up operation; set-up (handshake, slots, login, finds) is a fixed few.
[ "$decrypts" -ge "$iters" ] && [ "$decrypts" -le $((iters + 2)) ] ||
	fail "expected one DECRYPT round trip per operation: $decrypts for $iters operations"
[ $((total - decrypts)) -le 40 ] || fail "too many other round trips: $((total - decrypts))"
pass "rsaperf -s: $iters operations, $decrypts DECRYPT round trips, $((total - decrypts)) set-up round trips"
stop_daemon
