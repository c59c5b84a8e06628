#!/usr/bin/env bash
# p11muxctl rescan (docs/operations.md, "Live changes"): a key added to every member after
# start-up becomes visible to applications without a restart; a key on some members only is
# used on those and reported by `p11muxctl keys`; a key deleted from every member is
# withdrawn: a process holding its handle gets CKR_KEY_HANDLE_INVALID and its shim drops the
# cached object. A signer runs throughout on the connections it opened before: 0 failures.
. "$(dirname "$0")/lib.sh"
it_setup
start_daemon
ctl() { "$P11MUX_BUILD/p11muxctl" "$@"; }
member() { # TOKEN pkcs11-tool arguments...: straight to a member's token, not through the pool
	local t=$1
	shift
	pkcs11-tool --module "$SOFTHSM" --token-label "$t" --login --pin "$PIN" "$@" >/dev/null 2>&1
}
put_key() { # TOKEN HEXID LABEL PEM: the private and the public key
	member "$1" --write-object "$4" --type privkey --id "$2" --label "$3" --usage-sign &&
		member "$1" --write-object "${4%.pem}.pub.pem" --type pubkey --id "$2" --label "$3"
}
pool_sign() { # HEXID PUBKEY: a signature through the pool, checked with openssl
	echo "data for $1" > "$WORK/data"
	p11tool --login --pin "$PIN" --sign -m SHA256-RSA-PKCS --id "$1" -i "$WORK/data" \
		-o "$WORK/sig" >/dev/null 2>&1 &&
		openssl dgst -sha256 -verify "$2" -signature "$WORK/sig" "$WORK/data" >/dev/null 2>&1
}
key_columns() { # LABEL: the private key's HELD BY and LACKING columns of $WORK/keys, sorted
	awk -v k="\"$1\"" '$1 == "private" && $2 == k { print $7, $8 }' "$WORK/keys" |
		python3 -c 'import sys; print(" ".join(",".join(sorted(c.split(","))) for c in sys.stdin.read().split()))'
}
for k in new partial; do
	openssl genrsa -out "$WORK/$k.pem" 2048 2>/dev/null
	openssl rsa -in "$WORK/$k.pem" -pubout -out "$WORK/$k.pub.pem" 2>/dev/null
done

signer_start 2

# A key added to every member: unknown to the pool until the rescan.
for t in hsm1 hsm2 hsm3; do put_key "$t" 42 tls-2027 "$WORK/new.pem" || fail "cannot add key 42 to $t"; done
pool_sign 42 "$WORK/new.pub.pem" && fail "key 42 was visible before the rescan"
ctl rescan > "$WORK/out" || fail "rescan: $(cat "$WORK/out")"
# Whichever member is remapped first brings the two objects (private and public key).
[ "$(grep -c "^member hsm[123]: holds 8 of the pool's 8 objects" "$WORK/out")" = 3 ] ||
	fail "the members were not all remapped: $(cat "$WORK/out")"
[ "$(sed -n 's/.*(\([0-9]*\) new to the pool.*/\1/p' "$WORK/out" | awk '{s += $1} END {print s}')" = 2 ] ||
	fail "not two new objects: $(cat "$WORK/out")"
pool_sign 42 "$WORK/new.pub.pem" || fail "key 42 not usable after the rescan"
ctl keys > "$WORK/keys" || fail "keys inconsistent after the rescan: $(cat "$WORK/keys")"
[ "$(key_columns tls-2027)" = "hsm1,hsm2,hsm3 -" ] || fail "key 42 not listed: $(cat "$WORK/keys")"
pass "a key added to every member became usable after \`p11muxctl rescan\`"

# A key on two members only: used there, and the inventory says so.
for t in hsm1 hsm2; do put_key "$t" 43 partial "$WORK/partial.pem" || fail "cannot add key 43 to $t"; done
ctl rescan hsm2 > "$WORK/out" || fail "rescan hsm2: $(cat "$WORK/out")"
[ "$(grep -c '^member ' "$WORK/out")" = 1 ] || fail "rescan hsm2 rescanned others: $(cat "$WORK/out")"
ctl rescan > "$WORK/out" || fail "rescan: $(cat "$WORK/out")"
for i in 1 2 3 4 5 6; do pool_sign 43 "$WORK/partial.pub.pem" || fail "key 43, signature $i"; done
rc=0
ctl keys > "$WORK/keys" || rc=$?
[ "$rc" = 1 ] || fail "keys: exit $rc with a key on two members of three"
[ "$(key_columns partial)" = "hsm1,hsm2 hsm3" ] || fail "key 43 not reported as lacking on hsm3: $(cat "$WORK/keys")"
pass "a key on two members of three is used on those and reported by keys"
ctl rescan nosuch > "$WORK/out" 2>&1 && fail "rescan of an unknown member succeeded"
grep -q 'no member "nosuch"' "$WORK/out" || fail "unclear: $(cat "$WORK/out")"

# A process holds key 42's handle while the key is deleted from every member.
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$CLIENT_SHIM" withdraw 42 "$WORK/go" \
	> "$WORK/holder.out" 2>&1 &
holder=$!
wait_until 20 grep -q ready "$WORK/holder.out" || fail "the holder did not start: $(cat "$WORK/holder.out")"
for t in hsm1 hsm2 hsm3; do
	member "$t" --delete-object --type privkey --id 42 && member "$t" --delete-object --type pubkey --id 42 ||
		fail "cannot delete key 42 from $t"
done
ctl rescan > "$WORK/out" || fail "rescan: $(cat "$WORK/out")"
grep -q '2 withdrawn' "$WORK/out" || fail "key 42 not withdrawn: $(cat "$WORK/out")"
grep -q 'private key "tls-2027" (id 42) withdrawn' "$WORK/daemon.log" || fail "no log line for the withdrawal"
touch "$WORK/go"
wait "$holder" || fail "the holder: $(cat "$WORK/holder.out")"
pool_sign 42 "$WORK/new.pub.pem" && fail "the withdrawn key still signs"
pass "key 42 deleted from every member and withdrawn: $(tail -1 "$WORK/holder.out")"

# Applications' session objects live in the members' helpers, where a rescan reads: they
# must stay the application's, never become the pool's.
mkfifo "$WORK/hold.in"
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_objects" "$CLIENT_SHIM" hold 4 < "$WORK/hold.in" \
	> "$WORK/hold.out" 2>&1 &
holder=$!
exec 7> "$WORK/hold.in"
wait_until 20 grep -q ready "$WORK/hold.out" || fail "no session objects: $(cat "$WORK/hold.out")"
ctl rescan > "$WORK/out" || fail "rescan: $(cat "$WORK/out")"
[ "$(grep -c '(0 new to the pool' "$WORK/out")" = 3 ] || fail "session objects pooled: $(cat "$WORK/out")"
echo >&7
exec 7>&-
wait "$holder" || fail "the session-object holder: $(cat "$WORK/hold.out")"
pass "an application's session objects stayed out of the pool's view at the rescan"

signer_stop
stop_daemon
pass "a signer beside the rescans: $SIGNED signatures, 0 failed"
