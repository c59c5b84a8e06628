#!/usr/bin/env bash
# A member 3 times slower than the others gets about a third of the work of each of them
# under least-loaded scheduling (and not a third of all the work, as round-robin gives it).
. "$(dirname "$0")/lib.sh"
it_setup
sim_setup 0.01 "token hsm3 slow 3"
start_daemon
"$P11MUX_BUILD/p11mux-bench" --module "$SHIM" --token "$LABEL" --pin "$PIN" --key-label httpdcert \
	--op sign --mech rsa-pkcs --threads 12 --seconds 4 --name "least-loaded" || fail "load"
stop_daemon
a=$(member_ops hsm1); b=$(member_ops hsm2); c=$(member_ops hsm3)
echo "operations: hsm1 $a, hsm2 $b, hsm3 (3x slower) $c"
fast=$(( (a + b) / 2 ))
# Expected: c is a third of a fast member's share. Generous bounds: machines are noisy.
[ $((c * 100 / fast)) -ge 20 ] && [ $((c * 100 / fast)) -le 50 ] ||
	fail "slow member got $((c * 100 / fast))% of a fast member's work, expected about 33%"
pass "slow member got $((c * 100 / fast))% of a fast member's work (ideal 33%)"
