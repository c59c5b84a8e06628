#!/usr/bin/env bash
# An end-to-end fuzzer of p11muxd's client socket (issue 14): the real daemon, 4 simulated
# Nitrokey HSMs (p11sim over SoftHSM, module_lock as OpenSC), FUZZ_PROCS processes sending
# structure-aware random requests (tests/integration/fuzz_socket.py: mostly well-formed,
# a fifth mutated), a poison input now and then, and a legitimate client signing alongside.
#   scripts/fuzz-socket.sh [SECONDS, default 300]
# Environment:
#   BUILD_DIR=DIR   the build to run (default: a sanitized build of this tree in build-san/;
#                   CTest passes its own, P11MUX_BUILD)
#   FUZZ_PROCS=N    fuzzing processes (default 3), each with 3 connections
#   FUZZ_SEED=N     repeat a run's choices (printed at the start)
#   LEGIT_THREADS=N the legitimate client's signing threads (default 4)
#   KEEP_WORK=1     keep the work directory
# Invariants, checked at the end (exit 1 and the daemon log's tail on a violation):
#   - the daemon stayed up, exits 0 on SIGTERM, and its log has no sanitizer report;
#   - the legitimate client (itest_client threads, every signature verified) saw 0 failures.
#     Its inputs are never poison (ASCII text and SHA-256 digests, the poison prefix is 8
#     bytes); only the fuzzer's poison SIGNs may be refused, and each "cost the helpers of two
#     members" line in the log must name the poison's operation (SIGN, mechanism 0x1), which
#     the legitimate client never uses;
#   - every member is up again within 60 s of the end (p11muxctl status --json);
#   - every well-formed request was answered within 30 s (90 s for a LOGIN with a PIN).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tests/fixtures/testlib.sh"
SECS=${1:-300}
PROCS=${FUZZ_PROCS:-3}
LEGIT=${LEGIT_THREADS:-4}
PIN=$TEST_PIN
POISON=f022edc0ffee0bad
B=${BUILD_DIR:-${P11MUX_BUILD:-}}
if [ -z "$B" ]; then
	BUILD_DIR=$top/build-san "$top/scripts/build.sh" -DP11MUX_SANITIZE=ON
	B=$top/build-san
fi
B=$(cd "$B" && pwd)
DPID= LPID=
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$top/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
script_workdir p11mux-fuzzsock 4 LPID DPID
export P11MUX_SOCKET="$W/p11mux.sock" P11MUX_CONTROL="$W/control.sock"
# Every member crashes on the poison input (crash-on: the helper aborts in C_Sign).
for m in hsm1 hsm2 hsm3 hsm4; do echo "crash-on $POISON" > "$W/faults/$m"; done
pin_file "$W/pin" pool
export P11SIM_CONFIG="$W/p11sim.conf"
p11sim_conf "$P11SIM_CONFIG" 0.01 "$W/faults" "module_lock = yes"
# pin_max_failures = 0: the fuzzer's wrong PINs never lock the pool (each still delays the
# next check, up to 60 s; the fuzzer sends few). op_timeout_ms is far above what a
# sanitized daemon on a busy machine needs.
pool_conf "$W/p11mux.conf" "$W" pool "$B/p11sim-pkcs11.so" "hsm1 hsm2 hsm3 hsm4" \
	'log_level = "info"' "op_timeout_ms = 8000" "probe_interval_ms = 200" "probe_max_ms = 2000" \
	"pool.pin_max_failures = 0"
start_p11muxd "$B/p11muxd" "$W/p11mux.conf" "$W/daemon.log" || exit 1
DPID=$DAEMON_PID

violations=()
violation() { violations+=("$*"); }
status_json() { "$B/p11muxctl" status --json; }
members_up() { status_json | python3 -c '
import json, sys
ms = json.load(sys.stdin)["pools"][0]["members"]
sys.exit(0 if ms and all(m["state"] == "up" for m in ms) else 1)'; }

# The legitimate client logs in (with the PIN, before any wrong PIN can delay it) and signs
# until the fuzzing is over.
ITEST_UNTIL="$W/stop" ITEST_PROGRESS="$W/legit.progress" P11MUX_PIN=$PIN \
	"$B/tests/itest_client" "$B/p11mux-pkcs11.so" threads "$LEGIT" 1 \
	"$W/hsm/keys/rsa.pub.pem" "$W/hsm/keys/ec.pub.pem" > "$W/legit.out" 2> "$W/legit.err" &
LPID=$!
for _ in $(seq 1 300); do
	[ -s "$W/legit.progress" ] && ! grep -q '^ops 0 ' "$W/legit.progress" && break
	sleep 0.1
done
echo "p11muxd $B/p11muxd (pid $DPID), 4 simulated members; fuzzing for $SECS s with $PROCS processes, $LEGIT legitimate threads signing"
frc=0
nice -n 5 python3 "$top/tests/integration/fuzz_socket.py" "$W/p11mux.sock" "$PIN" "$SECS" "$PROCS" \
	"$W/fuzz.json" "$POISON" "$B/p11muxctl" || frc=$?
touch "$W/stop"
lrc=0
wait "$LPID" || lrc=$?
LPID=
[ "$frc" -eq 0 ] || violation "the fuzzing client failed (status $frc)"
kill -0 "$DPID" 2>/dev/null || violation "the daemon exited during the run"
read -r _ lops _ lfail < "$W/legit.progress" || true
[ "$lrc" -eq 0 ] && [ "${lfail:-1}" -eq 0 ] ||
	violation "the legitimate client: ${lfail:-?} of ${lops:-?} signatures failed (status $lrc): $(head -5 "$W/legit.err")"
# Members taken down by the poison inputs come back: wait for the probes, with a deadline.
for _ in $(seq 1 600); do members_up && break; sleep 0.1; done
members_up || violation "members still down 60 s after the end: $("$B/p11muxctl" status)"
status_json > "$W/status.json" || true
charged=$(grep -c 'cost the helpers of two members' "$W/daemon.log" || true)
others=$(grep 'cost the helpers of two members' "$W/daemon.log" | grep -vc 'SIGN with mechanism 0x1 on' || true)
[ "$others" -eq 0 ] || violation "$others operations other than the poison SIGNs were charged as poison: $(grep 'cost the helpers' "$W/daemon.log" | grep -v 'mechanism 0x1 on' | head -3)"
if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
	drc=0
	kill -TERM "$DPID"
	wait "$DPID" || drc=$?
	DPID=
	[ "$drc" -eq 0 ] || violation "p11muxd exited with status $drc on SIGTERM"
fi
if grep -q 'Sanitizer\|runtime error:' "$W/daemon.log"; then
	violation "a sanitizer report in the daemon's log: $(grep -m3 'Sanitizer\|runtime error:' "$W/daemon.log")"
fi

prc=0
python3 - "$W/fuzz.json" "$W/status.json" "$charged" "${lops:-0}" "${lfail:-?}" <<'PY' || prc=$?
import json, sys
r = json.load(open(sys.argv[1]))
calls = sorted({k.split()[0] for k in r["sent"]})
print("\nrequests sent (valid / mutated; connections the daemon closed after one):")
print("| call | valid | mutated | closed after valid | closed after mutated |")
print("|---|---|---|---|---|")
for c in calls:
    g = lambda d, kind: d.get("%s %s" % (c, kind), 0)
    print("| %s | %d | %d | %d | %d |" % (c, g(r["sent"], "valid"), g(r["sent"], "mutated"),
                                          g(r["closed"], "valid"), g(r["closed"], "mutated")))
tv = sum(v for k, v in r["sent"].items() if k.endswith(" valid"))
tm = sum(v for k, v in r["sent"].items() if k.endswith("mutated"))
print("total: %d valid, %d mutated (%s); %d mutated frames not waited for" %
      (tv, tm, ", ".join("%s %d" % kv for kv in sorted(r["mutations"].items())),
       sum(r["abandoned"].values())))
print("replies: " + ", ".join("%s %d" % kv for kv in sorted(r["replies"].items(), key=lambda kv: -kv[1])))
print("wrong PINs sent: %d; seed %d" % (r["wrong_pins"], r["seed"]))
print("poison SIGNs: %d sent, answers %s; operations charged as poison in the log: %s" %
      (r["poison"]["sent"], r["poison"]["answers"] or "{}", sys.argv[3]))
try:
    ms = json.load(open(sys.argv[2]))["pools"][0]["members"]
    print("members at the end: " + ", ".join("%s %s (helpers started %d)" % (m["label"], m["state"], m["helpers_started"]) for m in ms))
except (OSError, ValueError, KeyError, IndexError):
    print("members at the end: (no status)")
print("legitimate client: %s signatures, %s failed" % (sys.argv[4], sys.argv[5]))
if r["late"]:
    print("not answered in time or answered out of turn: %d: %s" % (len(r["late"]), "; ".join(r["late"][:5])))
    sys.exit(3)
PY
[ "$prc" -eq 0 ] || violation "well-formed requests were not answered in time, or the summary failed (status $prc)"
if [ "${#violations[@]}" -gt 0 ]; then
	echo
	echo "VERDICT: FAIL"
	printf '  - %s\n' "${violations[@]}"
	echo "--- daemon log (last 40 lines) ---"
	tail -n 40 "$W/daemon.log"
	KEEP_WORK=1
	echo "(work directory kept: $W)"
	exit 1
fi
echo
echo "VERDICT: PASS (the daemon stayed up and exited cleanly, no sanitizer report, 0 failed legitimate signatures, every member up)"
