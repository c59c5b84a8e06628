#!/usr/bin/env bash
# The configuration: a mistake is reported as FILE:LINE and C_Initialize fails with
# CKR_GENERAL_ERROR; per-token overrides mix fast and slow devices in one module; the
# C_Initialize parameters (NSS's LibraryParameters) and the environment override the file.
. "$(dirname "$0")/lib.sh"
sim_setup

sim_config "scale = 0.05" "# a comment" "bogus = 1"
rv=$(sim_client init 2>"$WORK/err")
[ "$rv" = 0x5 ] || fail "an unknown key: C_Initialize gave $rv, not CKR_GENERAL_ERROR"
grep -q "p11sim.conf:4: unknown key 'bogus'" "$WORK/err" || fail "no FILE:LINE message: $(cat "$WORK/err")"
pass "unknown key: $(sed 's/^p11sim\[[0-9]*\]: //' "$WORK/err")"

sim_config "scale = fast"
rv=$(sim_client init 2>"$WORK/err")
[ "$rv" = 0x5 ] && grep -q "p11sim.conf:2: scale: 'fast'" "$WORK/err" || fail "bad value: $rv $(cat "$WORK/err")"
sim_config "token hsm1 sloow 2"
rv=$(sim_client init 2>"$WORK/err")
[ "$rv" = 0x5 ] && grep -q "p11sim.conf:2: unknown key 'sloow' for token 'hsm1'" "$WORK/err" ||
	fail "bad token key: $rv $(cat "$WORK/err")"
sim_config "scale = 0.05"
rv=$(sim_client init "scale=0.1;colour=blue" 2>"$WORK/err")
[ "$rv" = 0x5 ] && grep -q "C_Initialize parameters, item 2: unknown key 'colour'" "$WORK/err" ||
	fail "bad parameter: $rv $(cat "$WORK/err")"
rv=$(P11SIM_CONFIG="$WORK/missing.conf" sim_client init 2>"$WORK/err")
[ "$rv" = 0x5 ] || fail "a missing configuration file: $rv"
pass "bad values, token keys, parameters and a missing file are refused with FILE:LINE"

sim_config "# a pool of mixed devices" "scale = 0.05" "jitter = 0" \
	"token hsm2 profile none" "token \"hsm3\" slow = 3   # a worn-out device" \
	"module = \"/usr/lib/softhsm/libsofthsm2.so\""
t1=$(sim_client signtime hsm1 5)
t2=$(sim_client signtime hsm2 5)
t3=$(sim_client signtime hsm3 5)
echo "measure: RSA-2048 at scale 0.05: hsm1 $t1 ms, hsm2 (profile none) $t2 ms, hsm3 (slow 3) $t3 ms"
in_range "$t1" 30 45 || fail "hsm1: $t1 ms, not about 37.5"
in_range "$t2" 0 10 || fail "hsm2 (profile none): $t2 ms"
in_range "$t3" 90 135 || fail "hsm3 (slow 3): $t3 ms, not about 112.5"
pass "per-token overrides: hsm1 $t1 ms, hsm2 $t2 ms, hsm3 $t3 ms"

t=$(sim_client signtime hsm1 5 "scale=0.1;rsa2048_ms=500")
in_range "$t" 40 60 || fail "C_Initialize parameters: $t ms, not about 50"
t=$(P11SIM_SCALE=0.02 sim_client signtime hsm1 5 "scale=0.1")
in_range "$t" 12 18 || fail "P11SIM_SCALE over the parameters: $t ms, not about 15"
t=$(P11SIM_PROFILE=none sim_client signtime hsm1 5)
in_range "$t" 0 10 || fail "P11SIM_PROFILE=none: $t ms"
pass "C_Initialize parameters override the file, the environment overrides both"

rv=$(P11SIM_MODULE=/nonexistent/module.so sim_client init 2>"$WORK/err")
[ "$rv" = 0x5 ] && grep -q "cannot load the wrapped module /nonexistent/module.so" "$WORK/err" ||
	fail "P11SIM_MODULE: $rv $(cat "$WORK/err")"
pass "P11SIM_MODULE names the wrapped module"

rv=$(P11SIM_CONTROL_DIR="$WORK/no-such-dir" sim_client init 2>"$WORK/err")
[ "$rv" = 0x5 ] && grep -q "control_dir $WORK/no-such-dir is not a directory" "$WORK/err" ||
	fail "a missing control directory: $rv $(cat "$WORK/err")"
pass "a control directory that does not exist is an error, not a silent healthy run"
