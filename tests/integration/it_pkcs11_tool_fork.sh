#!/usr/bin/env bash
# pkcs11-tool --test-fork through the pool: the child of a process that initialised the shim
# calls C_Initialize again, and that must succeed (the shim starts afresh after a fork, with
# its own connections). SoftHSM itself answers CKR_CRYPTOKI_ALREADY_INITIALIZED there, so there
# is nothing to compare with: its answer is only shown.
. "$(dirname "$0")/lib.sh"
it_setup
start_daemon
direct=$(pkcs11-tool --module "$SOFTHSM" --token-label hsm1 --login --pin "$PIN" --test-fork 2>&1) &&
	echo "SoftHSM directly: --test-fork passes" ||
	echo "SoftHSM directly: --test-fork fails: $(echo "$direct" | grep -m1 'rv = ' || echo "$direct")"
out=$(timeout 30 pkcs11-tool --module "$SHIM" --login --pin "$PIN" --test-fork 2>&1) ||
	fail "pkcs11-tool --test-fork through the pool: $out"
grep -qF "*** Calling C_Initialize in forked child process ***" <<< "$out" ||
	fail "pkcs11-tool --test-fork: the child did not run: $out"
grep -qiE "error|failed|Aborting" <<< "$out" && fail "pkcs11-tool --test-fork: $out"
pass "pkcs11-tool --test-fork: C_Initialize in the forked child succeeds through the pool"

# The parent goes on using the pool after its child has been and gone.
echo "after the fork" > "$WORK/data"
out=$(p11tool --login --pin "$PIN" --test-fork --sign -m SHA256-RSA-PKCS --id 01 -i "$WORK/data" \
	-o "$WORK/sig" 2>&1) || fail "pkcs11-tool --test-fork --sign: $out"
grep -qF "in forked child process" <<< "$out" || fail "pkcs11-tool --test-fork --sign: no child: $out"
verify_rsa "$WORK/data" "$WORK/sig" || fail "the signature made after --test-fork does not verify"
pass "pkcs11-tool --test-fork --sign: the parent signs through the pool after its child's C_Initialize"
stop_daemon
