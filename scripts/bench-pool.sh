#!/usr/bin/env bash
# Pool throughput, scheduling and failover on simulated Nitrokey HSMs (p11sim, profile
# "nitrokey": 0.75 s per RSA-2048 signature, run SCALE times as long). Usage:
#   scripts/bench-pool.sh [SCALE, default 0.05] [SECONDS per run, default 8]
# Environment:
#   MODULE_LOCK=yes|no  p11sim's module_lock (default yes, as the nitrokey profile and OpenSC:
#                       one lock for the whole module, held through every call)
#   SECTIONS="scaling mixed failover siege"  the tables to print (default: all)
#   BUILD_DIR=DIR       measure that build as it is (default: build this tree into build/)
# Everything is measured in this one invocation; ratios are against runs of the same
# invocation. Prints Markdown tables (the figures in docs/benchmarks.md come from here).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tests/fixtures/testlib.sh"
SCALE=${1:-0.05}
SECS=${2:-8}
MODULE_LOCK=${MODULE_LOCK:-yes}
SECTIONS=${SECTIONS:-scaling mixed failover siege}
want() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }
"$top/scripts/deps.sh"
# BUILD_DIR: measure a build made elsewhere (e.g. of an older commit, in a worktree), as it is.
if [ -n "${BUILD_DIR:-}" ]; then
	B=$BUILD_DIR
else
	"$top/scripts/build.sh"
	B="$top/build"
fi
PIN=$TEST_PIN
DPID=
script_workdir p11mux-poolbench 8 DPID
pin_file "$W/pin" pool
export P11MUX_SOCKET="$W/p11mux.sock"

# start_pool "hsm1 hsm2 ..." SCHEDULER [p11sim lines...]
start_pool() {
	local members=$1 sched=$2
	shift 2
	export P11SIM_CONFIG="$W/p11sim.conf"
	p11sim_conf "$P11SIM_CONFIG" "$SCALE" "$W/faults" "module_lock = $MODULE_LOCK" "$@"
	pool_conf "$W/p11mux.conf" "$W" pool "$B/p11sim-pkcs11.so" "$members" \
		"scheduler = \"$sched\"" "op_timeout_ms = 2000" "probe_interval_ms = 200"
	for f in "$W"/faults/*; do [ -e "$f" ] && : > "$f"; done
	: > "$W/daemon.log"
	start_p11muxd "$B/p11muxd" "$W/p11mux.conf" "$W/daemon.log" || exit 1
	DPID=$DAEMON_PID
}
# Stops the daemon; one that died (a crashing member module takes it along) is noted.
# A daemon wedged by a hung module does not stop on SIGTERM: after 10 s it is killed.
stop_pool() {
	local rc=0
	kill "$DPID" 2>/dev/null || true
	for _ in $(seq 1 100); do
		grep -qs '^[0-9]* ([^)]*) [^Z]' "/proc/$DPID/stat" || break
		sleep 0.1
	done
	if grep -qs '^[0-9]* ([^)]*) [^Z]' "/proc/$DPID/stat"; then
		kill -9 "$DPID"
		WEDGED=1
	fi
	wait "$DPID" || rc=$?
	[ "$rc" -eq 0 ] || [ -n "$WEDGED" ] || DIED=$rc
	DPID=
}
# bench THREADS SECONDS -> "ops_per_s p99_ms errors ops stuck"; an operation still in flight
# 10 s after the end is stuck (and counted among the errors).
bench() {
	local j
	j=$("$B/p11mux-bench" --module "$B/p11mux-pkcs11.so" --token pool --pin "$PIN" \
		--key-label httpdcert --op sign --mech rsa-pkcs --threads "$1" --seconds "$2" --json || true)
	echo "$(echo "$j" | sed -n 's/.*"ops_per_s":\([0-9]*\).*/\1/p') \
$(( $(echo "$j" | sed -n 's/.*"p99_us":\([0-9]*\).*/\1/p') / 1000 )) \
$(echo "$j" | sed -n 's/.*"errors":\([0-9]*\).*/\1/p') \
$(echo "$j" | sed -n 's/.*"ops":\([0-9]*\).*/\1/p') \
$(echo "$j" | sed -n 's/.*"stuck":\([0-9]*\).*/\1/p')"
}
members() { local n=$1 s=""; for i in $(seq 1 "$n"); do s="$s hsm$i"; done; echo "$s"; }

echo "p11sim nitrokey profile at scale $SCALE (RSA-2048 sign = $(awk "BEGIN{print 750*$SCALE}") ms), module_lock = $MODULE_LOCK, $SECS s per run, $(nproc) cores"

one=0
if want scaling || want mixed; then
	want scaling && printf '\n### Scaling (RSA-2048 sign, least-loaded, 4 client threads per member)\n\n'
	want scaling && echo "| members | threads | ops/s | p99 | errors | efficiency |"
	want scaling && echo "|---|---|---|---|---|---|"
	for n in 1 2 4 8; do
		[ "$n" -gt 1 ] && ! want scaling && break
		start_pool "$(members $n)" least-loaded
		read -r ops p99 err _ <<<"$(bench $((4 * n)) "$SECS")"
		stop_pool
		[ "$n" -eq 1 ] && one=$ops
		want scaling && echo "| $n | $((4 * n)) | $ops | ${p99} ms | $err | $(( 100 * ops / (n * one) ))% |"
	done
fi

if want mixed; then
echo
echo "### Mixed pool: hsm1, hsm2 fast; hsm3, hsm4 three times slower (24 threads)"
echo
start_pool "hsm3" least-loaded "token hsm3 slow 3"
read -r slow _ _ _ <<<"$(bench 8 "$SECS")"
stop_pool
cap=$(( 2 * one + 2 * slow ))
echo "Capacities measured alone: fast member $one ops/s, slow member $slow ops/s; sum $cap ops/s."
echo
echo "| scheduler | ops/s | of the sum of capacities | p99 | hsm1 | hsm2 | hsm3 (slow) | hsm4 (slow) |"
echo "|---|---|---|---|---|---|---|---|"
for sched in least-loaded round-robin; do
	start_pool "hsm1 hsm2 hsm3 hsm4" "$sched" "token hsm3 slow 3" "token hsm4 slow 3"
	read -r ops p99 err _ <<<"$(bench 24 "$SECS")"
	stop_pool
	counts=""
	for m in hsm1 hsm2 hsm3 hsm4; do
		counts="$counts $(grep -o "member $m: [0-9]* operations" "$W/daemon.log" | awk '{print $3}') |"
	done
	echo "| $sched | $ops | $(( 100 * ops / cap ))% | ${p99} ms |$counts"
done
fi

if want failover; then
if [ "$one" -eq 0 ]; then
	start_pool hsm1 least-loaded
	read -r one _ _ _ <<<"$(bench 4 "$SECS")"
	stop_pool
fi
echo
echo "### Failover under load (4 members, 16 threads, 6 s runs; the fault spans 0.5 s to the end)"
echo
echo "The healthy members' capacity is three times one member's alone ($one ops/s, measured in this run)."
echo
echo "| run | ops/s | failed operations | p99 | of the healthy members' capacity | daemon |"
echo "|---|---|---|---|---|---|"
for fault in none removed hang "error 0.3" crash "helper killed"; do
	start_pool "$(members 4)" least-loaded
	FP=
	DIED=
	WEDGED=
	if [ "$fault" = "helper killed" ]; then
		# The process that drives hsm2 is killed once (a daemon without helpers has none).
		( sleep 0.5; pkill -KILL -f "^p11muxd: member hsm2 " ) & FP=$!
	elif [ "$fault" != none ]; then
		( sleep 0.5; echo "$fault" > "$W/faults/hsm2" ) & FP=$!
	fi
	read -r ops p99 err _ stuck <<<"$(bench 16 6)"
	[ -z "$FP" ] || wait "$FP" || true
	: > "$W/faults/hsm2"
	stop_pool
	state=up
	[ "${stuck:-0}" -gt 0 ] && err="$err ($stuck stuck)"
	[ -n "$WEDGED" ] && state="wedged (no exit on SIGTERM)"
	[ -n "$DIED" ] && state="died (status $DIED)"
	echo "| hsm2: $fault | $ops | $err | ${p99} ms | $(( 100 * ops / (3 * (one > 0 ? one : 1)) ))% | $state |"
done
fi

want siege || exit 0
echo
echo "### The raymii.org article's siege shape: concurrent clients against 1 and 4 members (RSA-2048 sign)"
echo
echo "| clients | 1 member ops/s | availability | p99 | 4 members ops/s | availability | p99 | ratio |"
echo "|---|---|---|---|---|---|---|---|"
for c in 5 10 20 60; do
	start_pool "hsm1" least-loaded
	read -r o1 p1 e1 n1 _ <<<"$(bench "$c" "$SECS")"
	stop_pool
	start_pool "$(members 4)" least-loaded
	read -r o4 p4 e4 n4 _ <<<"$(bench "$c" "$SECS")"
	stop_pool
	a1=$(( 100 * n1 / (n1 + e1) )); a4=$(( 100 * n4 / (n4 + e4) ))
	echo "| $c | $o1 | ${a1}% | ${p1} ms | $o4 | ${a4}% | ${p4} ms | $(awk "BEGIN{printf \"%.2f\", $o4/$o1}") |"
done
