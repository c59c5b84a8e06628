#!/usr/bin/env bash
# A soak of p11muxd (issue 14): 4 simulated Nitrokey HSMs (p11sim over SoftHSM, scale 0.01,
# module_lock as OpenSC), 16 threads signing without a pause (itest_client threads, every
# signature verified), and a random fault every few seconds on a random member: removed, hang,
# error 0.3, crash (the helper aborts in C_Sign) or the helper killed with SIGKILL, cleared
# after 2 to 6 s. One member at a time is faulted: three are always healthy.
#   scripts/soak.sh [MINUTES, default 60]
# Every minute: elapsed time, operations, failures, the daemon's RSS and open descriptors,
# each member's state, faults so far. At the end a verdict, exit 1 when it fails:
#   - 0 failed operations (a member was up all the time);
#   - the daemon still running, and exits 0 on SIGTERM;
#   - RSS steady: every sample of the second half of the run within 20% (and 4 MiB) of the
#     baseline, the sample at minute 10 (at a sixth of the run when it is shorter);
#   - descriptors steady: every sample of the second half within 16 of the baseline's.
# Environment:
#   BUILD_DIR=DIR  the build to run (default: a plain build of this tree in build/; ASan
#                  would inflate the RSS)
#   THREADS=N      signing threads (default 16)
#   KEEP_WORK=1    keep the work directory (daemon log, samples)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tests/fixtures/testlib.sh"
MINUTES=${1:-60}
THREADS=${THREADS:-16}
PIN=$TEST_PIN
B=${BUILD_DIR:-}
if [ -z "$B" ]; then
	"$top/scripts/build.sh"
	B=$top/build
fi
B=$(cd "$B" && pwd)
DPID= LPID=
script_workdir p11mux-soak 4 LPID DPID
export P11MUX_SOCKET="$W/p11mux.sock" P11MUX_CONTROL="$W/control.sock"
pin_file "$W/pin" pool
export P11SIM_CONFIG="$W/p11sim.conf"
p11sim_conf "$P11SIM_CONFIG" 0.01 "$W/faults" "module_lock = yes"
# op_timeout_ms: a hung member's operation goes elsewhere after 3 s; a healthy one on a
# loaded 2-core machine needs well under 100 ms (7.5 ms of simulated device time).
pool_conf "$W/p11mux.conf" "$W" pool "$B/p11sim-pkcs11.so" "hsm1 hsm2 hsm3 hsm4" \
	'log_level = "info"' "op_timeout_ms = 3000" "probe_interval_ms = 200" "probe_max_ms = 1000"
start_p11muxd "$B/p11muxd" "$W/p11mux.conf" "$W/daemon.log" || exit 1
DPID=$DAEMON_PID

helper_pid() { "$B/p11muxctl" status --json | python3 -c '
import json, sys
for m in json.load(sys.stdin)["pools"][0]["members"]:
    if m["label"] == sys.argv[1] and m["helper_pid"] > 0:
        print(m["helper_pid"])' "$1"; }
states() { "$B/p11muxctl" status --json 2>/dev/null | python3 -c '
import json, sys
print(" ".join("%s:%s" % (m["label"], m["state"]) for m in json.load(sys.stdin)["pools"][0]["members"]))' ||
	echo "(no status)"; }

# The faults, one member at a time, for the whole run (a subshell; counts in $W/faults.log).
faults() {
	local m kind pid
	sleep 5
	while [ ! -e "$W/stop" ]; do
		m=hsm$((RANDOM % 4 + 1))
		case $((RANDOM % 5)) in
		0) kind=removed ;;
		1) kind=hang ;;
		2) kind="error 0.3" ;;
		3) kind=crash ;;
		4) kind=kill ;;
		esac
		echo "$(date -u +%FT%TZ) $m $kind" >> "$W/faults.log"
		if [ "$kind" = kill ]; then
			pid=$(helper_pid "$m" || true)
			[ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true
		else
			echo "$kind" > "$W/faults/$m"
		fi
		sleep $((RANDOM % 5 + 2))
		: > "$W/faults/$m"
		sleep $((RANDOM % 3 + 1))
	done
}
faults &
FPID=$!

ITEST_UNTIL="$W/stop" ITEST_PROGRESS="$W/progress" P11MUX_PIN=$PIN \
	"$B/tests/itest_client" "$B/p11mux-pkcs11.so" threads "$THREADS" 1 \
	"$W/hsm/keys/rsa.pub.pem" "$W/hsm/keys/ec.pub.pem" > "$W/client.out" 2> "$W/client.err" &
LPID=$!
echo "p11muxd $B/p11muxd (pid $DPID), 4 simulated members, $THREADS threads signing, a fault every few seconds, $MINUTES min ($(nproc) cores)"
echo
echo "| min | operations | failed | RSS (KiB) | fds | faults | members |"
echo "|---|---|---|---|---|---|---|"
start=$(date +%s)
for min in $(seq 1 "$MINUTES"); do
	while [ $(($(date +%s) - start)) -lt $((min * 60)) ]; do
		kill -0 "$DPID" 2>/dev/null || break 2
		sleep 1
	done
	read -r _ ops _ failed < "$W/progress" || true
	rss=$(awk '/^VmRSS/ {print $2}' "/proc/$DPID/status" 2>/dev/null || echo 0)
	fds=$(ls "/proc/$DPID/fd" 2>/dev/null | wc -l)
	nf=$(wc -l < "$W/faults.log" 2>/dev/null || echo 0)
	echo "$min $ops $failed $rss $fds" >> "$W/samples"
	echo "| $min | $ops | $failed | $rss | $fds | $nf | $(states) |"
done
touch "$W/stop"
wait "$FPID" || true
for m in hsm1 hsm2 hsm3 hsm4; do : > "$W/faults/$m"; done
lrc=0
wait "$LPID" || lrc=$?
LPID=
violations=()
if kill -0 "$DPID" 2>/dev/null; then
	drc=0
	kill -TERM "$DPID"
	wait "$DPID" || drc=$?
	DPID=
	[ "$drc" -eq 0 ] || violations+=("p11muxd exited with status $drc on SIGTERM")
else
	violations+=("p11muxd died during the run")
fi
read -r _ ops _ failed < "$W/progress" || true
[ "$lrc" -eq 0 ] && [ "${failed:-1}" -eq 0 ] ||
	violations+=("${failed:-?} of ${ops:-?} operations failed (client status $lrc): $(grep -v '^20' "$W/client.err" | sort | uniq -c | sort -rn | head -3)")
echo
echo "faults: $(awk '{print $3}' "$W/faults.log" | sort | uniq -c | awk '{printf "%s%s %d", (NR>1?", ":""), $2, $1}')"
echo "members at the end: $(grep -o 'member hsm[0-9]: [0-9]* operations*, [0-9]* device errors*, [0-9]* failovers*, [0-9]* helpers*' "$W/daemon.log" | awk '{printf "%s %s operations, %s failovers, %s helpers; ", $2, $3, $8, $10}')"
echo "operations: ${ops:-?}, failed: ${failed:-?} ($(awk -v o="${ops:-0}" -v m="$MINUTES" 'BEGIN{printf "%.0f", o/(m*60)}') per second)"
steady=$(python3 - "$W/samples" "$MINUTES" <<'PY'
import sys
rows = [list(map(int, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 5]
total = int(sys.argv[2])
base_min = max(1, min(10, total // 6))
base = [r for r in rows if r[0] == base_min]
late = [r for r in rows if r[0] > total // 2 and r[0] > base_min]
if not base or not late:
    print("ok too short to judge (%d samples)" % len(rows)); sys.exit()
b = base[0]
rss_hi, rss_lo = max(r[3] for r in late), min(r[3] for r in late)
fd_hi, fd_lo = max(r[4] for r in late), min(r[4] for r in late)
ok_rss = rss_hi <= b[3] * 1.2 + 4096 and rss_lo >= b[3] * 0.8 - 4096
ok_fd = fd_hi <= b[4] + 16 and fd_lo >= b[4] - 16
print("%s RSS at minute %d %d KiB, minutes %d-%d %d..%d KiB (%+.1f%% at most); fds at minute %d %d, then %d..%d" %
      ("ok" if ok_rss and ok_fd else "FAIL", base_min, b[3], late[0][0], late[-1][0], rss_lo, rss_hi,
       100.0 * (rss_hi - b[3]) / b[3], base_min, b[4], fd_lo, fd_hi))
PY
)
echo "steady: ${steady#* }"
[ "${steady%% *}" = ok ] || violations+=("RSS or descriptors not steady: ${steady#* }")
if [ "${#violations[@]}" -gt 0 ]; then
	echo
	echo "VERDICT: FAIL"
	printf '  - %s\n' "${violations[@]}"
	echo "--- daemon log (last 30 lines) ---"
	tail -n 30 "$W/daemon.log"
	KEEP_WORK=1
	echo "(work directory kept: $W)"
	exit 1
fi
echo
echo "VERDICT: PASS (0 failed operations with a fault on one member at a time, RSS and descriptors steady, clean exit)"
