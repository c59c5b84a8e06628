# Shared helpers for the integration tests. Each test sources this file, calls it_setup,
# and gets its own temp dir with SoftHSM tokens, a config and a running p11muxd.
# Paths to the built binaries come from CTest's environment (see tests/CMakeLists.txt).
set -euo pipefail

: "${P11MUX_BUILD:?set by CTest}"
: "${P11MUX_SOURCE:?set by CTest}"
SHIM="$P11MUX_BUILD/p11mux-pkcs11.so"
# The shim our own clients (itest_client, p11mux-bench) load: in a TSan build
# (P11MUX_TSAN) the instrumented copy, as they are instrumented; the NSS tools, pkcs11-tool
# and OpenSSL always load $SHIM.
# TSAN_BUILD=1 there: the daemon is several times slower, and tests widen their time limits
# accordingly.
CLIENT_SHIM=$SHIM
TSAN_BUILD=0
if [ -e "$P11MUX_BUILD/p11mux-pkcs11-tsan.so" ]; then
	CLIENT_SHIM="$P11MUX_BUILD/p11mux-pkcs11-tsan.so"
	TSAN_BUILD=1
fi
DAEMON="$P11MUX_BUILD/p11muxd"
SOFTHSM=/usr/lib/softhsm/libsofthsm2.so
. "$P11MUX_SOURCE/tests/fixtures/testlib.sh"
PIN=$TEST_PIN
LABEL="p11mux pool"

# it_setup [mktokens options...]: tokens in $WORK/hsm, pin file, config, NSS pin file.
it_setup() {
	test_workdir p11mux-it "$@"
	SOCK="$WORK/p11mux.sock"
	export P11MUX_SOCKET="$SOCK"
	export P11MUX_CONTROL="$WORK/control.sock"
	pin_file "$WORK/pin" "$LABEL"
	cp "$WORK/pin" "$WORK/nsspin"
	write_config "$SOFTHSM"
}

# write_config MODULE [extra top-level lines]
write_config() {
	pool_conf "$WORK/p11mux.conf" "$WORK" "$LABEL" "$1" "hsm1 hsm2 hsm3" 'log_level = "info"' \
		"${2:-}"
	# A test may have moved the socket elsewhere (SOCK).
	[ "$SOCK" = "$WORK/p11mux.sock" ] ||
		sed -i "s|^socket = \"$WORK/p11mux.sock\";|socket = \"$SOCK\";|" "$WORK/p11mux.conf"
}

# start_daemon: starts p11muxd in the foreground (as a child), waits for it to be ready (the
# log is appended to across restarts).
start_daemon() {
	start_p11muxd "$DAEMON" "$WORK/p11mux.conf" "$WORK/daemon.log" || fail "p11muxd did not start"
}

# stop_daemon: SIGTERM, and the daemon must exit 0 (under ASan: no leak, no error).
stop_daemon() {
	local rc=0
	kill -TERM "$DAEMON_PID"
	wait "$DAEMON_PID" || rc=$?
	DAEMON_PID=
	[ "$rc" -eq 0 ] || fail "p11muxd exited with status $rc"
}

p11tool() {
	pkcs11-tool --module "$SHIM" "$@"
}

# The first line of pkcs11-tool's object listing must not be needed: sign/verify helpers.
verify_rsa() { # data sig [pubkey]
	openssl dgst -sha256 -verify "${3:-$KEYS/rsa.pub.pem}" -signature "$2" "$1" >/dev/null 2>&1
}

# sim_setup SCALE [p11sim config lines...]: serve the tokens through the simulated Nitrokey
# HSM (p11sim) with a fault directory $FAULTS (one file per token: removed, hang, error R,
# slow F, pin-locked), and point the daemon's config at it. Extra daemon config lines can be
# given in DAEMON_EXTRA before calling.
sim_setup() {
	local scale=$1
	shift
	FAULTS="$WORK/faults"
	mkdir -p "$FAULTS"
	export P11SIM_CONFIG="$WORK/p11sim.conf"
	# The nitrokey profile locks the whole module through every call, as OpenSC does
	# (module_lock = yes): each member's helper has its own instance of it.
	p11sim_conf "$P11SIM_CONFIG" "$scale" "$FAULTS" "$@"
	write_config "$P11MUX_BUILD/p11sim-pkcs11.so" "${DAEMON_EXTRA:-}"
}

# fault TOKEN STATE: e.g. fault hsm2 removed; fault hsm2 "" clears.
fault() {
	printf '%s\n' "$2" > "$FAULTS/$1"
}

# helper_pid LABEL: the pid of the member's helper process, from p11muxctl status (empty when
# it has none).
helper_pid() {
	"$P11MUX_BUILD/p11muxctl" status --json | python3 -c '
import json, sys
for m in json.load(sys.stdin)["pools"][0]["members"]:
    if m["label"] == sys.argv[1] and m["helper_pid"] > 0:
        print(m["helper_pid"])' "$1"
}

# ctl_poll_start: reads the control socket in a loop (status, status --json, keys, metrics,
# and a drain of no member, whose answer lists every member) until ctl_poll_stop, so that the
# control thread reads the members while request and member threads change them (the races
# ThreadSanitizer looks for, scripts/test-tsan.sh). The loop ends with the test's directory.
ctl_poll_start() {
	(
		set +e
		while [ -d "$WORK" ] && [ ! -e "$WORK/ctl-poll.stop" ]; do
			for cmd in status "status --json" keys metrics "drain no-such-member"; do
				# shellcheck disable=SC2086 # cmd is a command and its arguments
				"$P11MUX_BUILD/p11muxctl" $cmd > /dev/null 2>&1
			done
			sleep 0.2
		done
	) &
	CTL_POLL=$!
}

ctl_poll_stop() {
	touch "$WORK/ctl-poll.stop"
	wait "$CTL_POLL"
	rm -f "$WORK/ctl-poll.stop"
}

# member_ops LABEL: operations the member did, from the daemon's account at shutdown.
member_ops() {
	grep -o "member $1: [0-9]* operations" "$WORK/daemon.log" | tail -1 | awk '{print $3}'
}

# write_engine_conf FILE: an OPENSSL_CONF that loads Debian's PKCS#11 engine (libp11) with
# the shim as its module and the pool's PIN.
write_engine_conf() {
	engine_conf "$1" "$SHIM" "$PIN"
}

# nss_pool_db DIR: a fresh NSS database with the shim added the mod_nss way (modutil -add,
# the daemon's socket given with -string).
nss_pool_db() {
	mkdir "$1"
	certutil -N -d "sql:$1" --empty-password
	echo | modutil -dbdir "sql:$1" -add pool -libfile "$SHIM" -string "socket=$SOCK" -force >/dev/null
}

# strsclnt_full DB PORT N THREADS: N full TLS 1.2 handshakes (strsclnt -N), THREADS at a
# time, every one successful. (strsclnt -N counts TLS 1.3 handshakes as failures: they miss
# no session cache.)
strsclnt_full() {
	local out="$WORK/strsclnt.$2.$3.out"
	strsclnt -p "$2" -d "sql:$1" -o -N -c "$3" -t "$4" -V tls1.2:tls1.2 127.0.0.1 > "$out" 2>&1 ||
		fail "strsclnt: $(cat "$out")"
	grep -q "NoReuse - $3 server certificates tested" "$out" || fail "strsclnt: $(cat "$out")"
}

# signer_start THREADS: itest_client signs in the background on THREADS threads, each
# signature checked, until signer_stop; failures are counted in $WORK/progress.
signer_start() {
	ITEST_UNTIL="$WORK/stop" ITEST_PROGRESS="$WORK/progress" P11MUX_PIN=$PIN \
		"$P11MUX_BUILD/tests/itest_client" "$CLIENT_SHIM" threads "$1" 50 "$KEYS/rsa.pub.pem" \
		"$KEYS/ec.pub.pem" 2> "$WORK/signer.err" &
	SIGNER_PID=$!
}

# signer_stop: stops it; fails unless it signed and nothing failed. Sets SIGNED.
signer_stop() {
	local failed
	touch "$WORK/stop"
	wait "$SIGNER_PID" || fail "the signer failed: $(tail -5 "$WORK/signer.err")"
	read -r _ SIGNED _ failed < "$WORK/progress"
	[ "$failed" = 0 ] && [ "$SIGNED" -gt 0 ] || fail "signer: $(cat "$WORK/progress")"
}

# member_state LABEL: the member's state in `p11muxctl status --json` (up, down, ...).
member_state() {
	"$P11MUX_BUILD/p11muxctl" status --json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["pools"]:
    for m in p["members"]:
        if m["label"] == sys.argv[1]:
            print(m["state"])' "$1"
}
