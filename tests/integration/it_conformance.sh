#!/usr/bin/env bash
# The differential conformance test (docs/conformance.md): p11diff runs its table of call
# sequences on SoftHSM token hsm1 straight, and on the pool through the shim, in one process,
# and compares return codes, output lengths and outputs. A difference fails unless
# docs/conformance.md lists the row as a deviation; a listed row that no longer differs fails
# too. The pool's PIN counter allows the two wrong PINs the table tries (each followed by the
# right PIN, which resets it).
. "$(dirname "$0")/lib.sh"
it_setup
start_daemon
out=$("$P11MUX_BUILD/tests/p11diff" --device "$SOFTHSM" --token hsm1 --pool "$SHIM" \
	--pool-token "$LABEL" --pin "$PIN" --so-pin 0102030405060708 \
	--doc "$P11MUX_SOURCE/docs/conformance.md" 2>&1) || {
	echo "$out"
	fail "the pool differs from the device where docs/conformance.md says nothing"
}
echo "$out" | grep -v '^p11mux-pkcs11: '
summary=$(echo "$out" | grep '^p11diff: [0-9]* rows')
# The table must keep covering what it covers today.
rows=$(echo "$summary" | sed -n 's/^p11diff: \([0-9]*\) rows.*/\1/p')
funcs=$(echo "$summary" | sed -n 's/.* \([0-9]*\) PKCS#11 functions.*/\1/p')
[ "$rows" -ge 70 ] || fail "only $rows rows ran"
[ "$funcs" -ge 65 ] || fail "only $funcs PKCS#11 functions were called"
# Nothing the application did reached a device as a PIN: the daemon stayed logged in.
grep -q "PIN retry counter" "$WORK/daemon.log" && fail "a member's PIN counter moved"
stop_daemon
pass "$summary"
