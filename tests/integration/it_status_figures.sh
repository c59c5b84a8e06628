#!/usr/bin/env bash
# Figures an operator can use (issue 18, part 3):
#   - under systemd (stderr is the journal: $JOURNAL_STREAM names it), each log line carries
#     its priority as "<N>" and no timestamp of ours;
#   - p11muxctl status lists the clients: uid, pid, program name, connections, operations per
#     second; status --json too;
#   - the latency percentiles are exact to 2.5% (unit_latency checks the arithmetic) and
#     exported as a Prometheus summary beside the histogram.
. "$(dirname "$0")/lib.sh"
it_setup
: > "$WORK/daemon.log"
export JOURNAL_STREAM
JOURNAL_STREAM=$(stat -c '%d:%i' "$WORK/daemon.log")
start_daemon
unset JOURNAL_STREAM
head -1 "$WORK/daemon.log" | grep -Eq '^<[0-7]>p11muxd (info|warning|error): ' ||
	fail "not a journal line: $(head -1 "$WORK/daemon.log")"
grep -q '^<6>p11muxd info: ready$' "$WORK/daemon.log" || fail "no <6> ready line"
grep -Eq '^[0-9]{4}-' "$WORK/daemon.log" && fail "a timestamp of our own in the journal"
pass "under the journal: priorities as <N>, no timestamps of our own"

CTL="$P11MUX_BUILD/p11muxctl"
"$P11MUX_BUILD/p11mux-bench" --module "$CLIENT_SHIM" --token "$LABEL" --pin "$PIN" \
	--key-label httpdcert --op sign --mech rsa-pkcs --threads 2 --seconds 6 > "$WORK/bench.out" 2>&1 &
BENCH=$!
clients_busy() {
	"$CTL" status --json | python3 -c '
import json, sys
c = [x for x in json.load(sys.stdin)["clients"] if x["program"] == "p11mux-bench"]
sys.exit(0 if c and c[0]["ops_per_s"] > 0 and c[0]["operations"] > 0 and c[0]["pid"] > 0 else 1)'
}
wait_until 30 clients_busy || fail "p11mux-bench not listed as a busy client: $("$CTL" status --json)"
"$CTL" status > "$WORK/status.txt"
grep -Eq "^ +[0-9]+ +$BENCH +p11mux-bench +[0-9]+ +[0-9.]+ " "$WORK/status.txt" ||
	fail "the text status does not list p11mux-bench (pid $BENCH): $(cat "$WORK/status.txt")"
"$CTL" metrics > "$WORK/metrics.txt"
grep -Eq '^p11mux_member_latency_quantile_seconds\{pool="p11mux pool",member="hsm[123]",quantile="0.99"\} [0-9.]+$' \
	"$WORK/metrics.txt" || fail "no latency quantiles in the metrics"
wait "$BENCH" || fail "p11mux-bench: $(cat "$WORK/bench.out")"
stop_daemon
pass "status lists p11mux-bench (uid, pid $BENCH, program, ops/s); metrics have the latency percentiles"
