# Shared helpers for the simulator's tests. Each test sources this file and calls sim_setup:
# it gets its own temp dir with three SoftHSM tokens holding the same keys (hsm1..hsm3), a
# control directory, and a p11sim configuration at scale 0.05. Paths to the built binaries
# come from CTest's environment (see CMakeLists.txt).
set -euo pipefail

: "${SIM_MODULE:?set by CTest}"       # the module the test client and p11muxd load
: "${SIM_PLAIN_MODULE:?set by CTest}" # the module as shipped (for pkcs11-tool)
: "${SIM_CLIENT:?set by CTest}"
: "${P11MUX_BUILD:?set by CTest}"
: "${P11MUX_SOURCE:?set by CTest}"
. "$P11MUX_SOURCE/tests/fixtures/testlib.sh"
PIN=$TEST_PIN

# sim_setup [mktokens options...]
sim_setup() {
	test_workdir p11sim-test "$@"
	CTL="$WORK/ctl"
	mkdir "$CTL"
	unset P11SIM_MODULE P11SIM_SCALE P11SIM_PROFILE P11SIM_DEBUG
	export P11SIM_CONTROL_DIR="$CTL"
	export P11SIM_CONFIG="$WORK/p11sim.conf"
	sim_config "scale = 0.05"
}

# sim_config LINE...: the configuration, one line per argument.
sim_config() {
	printf '%s\n' "# written by $(basename "$0")" "$@" > "$P11SIM_CONFIG"
}

# sim_client COMMAND...: the test client on the module (see sim_client.c).
sim_client() {
	"$SIM_CLIENT" "$SIM_MODULE" "$@"
}

# simtool ARGS...: pkcs11-tool on the module as shipped.
simtool() {
	pkcs11-tool --module "$SIM_PLAIN_MODULE" "$@"
}

# in_range VALUE LOW HIGH: LOW <= VALUE <= HIGH (decimals allowed).
in_range() {
	awk -v v="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(v >= lo && v <= hi) }'
}
