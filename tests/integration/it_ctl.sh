#!/usr/bin/env bash
# p11muxctl against the real daemon over simulated members: status before and after a
# removal, counts that match the operations made, --json and its schema, keys flagging a
# member with a different key, drain under load, metrics in the Prometheus format, and a
# user who may not use the control socket.
. "$(dirname "$0")/lib.sh"
it_setup --odd-token hsm2
DAEMON_EXTRA='probe_interval_ms = 100; probe_max_ms = 300; op_timeout_ms = 2000;'
sim_setup 0.01
start_daemon
CTL="$P11MUX_BUILD/p11muxctl"

# status: every member up, zero operations.
out=$("$CTL" status)
echo "$out"
for m in hsm1 hsm2 hsm3; do
	grep -qE "^$m +[0-9a-f]+ +up " <<< "$out" || fail "status does not show $m up"
done
pass "status lists every member, up"

# Exactly 4 x 10 signatures (the test client makes no other private-key operation).
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$SHIM" threads 4 10 "$KEYS/rsa.pub.pem" "$KEYS/ec.pub.pem" ||
	fail "signing"
"$CTL" status --json > "$WORK/status.json"
python3 - "$WORK/status.json" <<'PY' || fail "status --json does not follow the schema, or counts are wrong"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["version"] == 1 and len(s["pools"]) == 1
p = s["pools"][0]
for k, t in {"label": str, "slot": int, "clients": int, "scheduler": str, "members": list,
             "ops_per_s": (int, float)}.items():
    assert isinstance(p[k], t), k
types = {"label": str, "serial": str, "state": str, "reason": str, "state_seconds": (int, float),
         "in_flight": int, "queued": int, "done": int, "errors": int, "failovers": int,
         "service_ms": (int, float, type(None)), "latency_p50_ms": (int, float, type(None)),
         "latency_p99_ms": (int, float, type(None)), "last_error": (str, type(None)),
         "last_error_seconds_ago": (int, float, type(None))}
for m in p["members"]:
    for k, t in types.items():
        assert isinstance(m[k], t), (m["label"], k, m[k])
    assert m["state"] in ("up", "draining", "down", "probing", "excluded")
done = sum(m["done"] for m in p["members"])
assert done == 40, "members report %d operations, the test made 40" % done
print("schema ok; operations", {m["label"]: m["done"] for m in p["members"]})
PY
pass "status --json: schema, and the members' counts add up to the 40 operations made"

# keys: hsm2 holds a different RSA key under ID 01: flagged, exit status 1.
rc=0
keys=$("$CTL" keys) || rc=$?
echo "$keys"
[ "$rc" -eq 1 ] || fail "keys exited $rc with an inconsistent pool, expected 1"
echo "$keys" | grep -E '^private "httpdcert" +01 +RSA +2048 ' | grep -q ' hsm2$' ||
	fail "keys does not name hsm2 as holding a different httpdcert key"
"$CTL" keys --json > "$WORK/keys.json" || true
python3 -c 'import json,sys; k=json.load(open(sys.argv[1])); assert k["consistent"] is False; assert any(x["different"]=="hsm2" for x in k["keys"])' "$WORK/keys.json" ||
	fail "keys --json"
# Sorted by label, then ID (then class), in the text and in the JSON.
rows=$(echo "$keys" | awk 'NR > 2 && NF { l = $2; gsub(/"/, "", l); print l "\t" $3 }')
[ "$(echo "$rows" | wc -l)" -ge 2 ] || fail "keys lists fewer than 2 keys: $keys"
[ "$rows" = "$(echo "$rows" | LC_ALL=C sort -s -t "$(printf '\t')" -k1,1 -k2,2)" ] ||
	fail "keys is not sorted by label, then ID: $keys"
python3 -c 'import json,sys; k=[(x["label"],x["id"]) for x in json.load(open(sys.argv[1]))["keys"]]; assert k==sorted(k), k' "$WORK/keys.json" ||
	fail "keys --json is not sorted by label, then ID"
pass "keys flags hsm2's different key and exits 1, sorted by label and ID"

# A removal shows in the status, with its reason; the member comes back.
fault hsm3 removed
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$SHIM" threads 4 10 "$KEYS/rsa.pub.pem" "$KEYS/ec.pub.pem" ||
	fail "signing with hsm3 out"
out=$("$CTL" status)
echo "$out"
grep -qE "^hsm3 .* (down: CKR_DEVICE_REMOVED|down: probe: not present|probing)" <<< "$out" ||
	fail "status does not show hsm3 out of service"
fault hsm3 ""
for _ in $(seq 1 300); do "$CTL" status | grep -qE "^hsm3 +[0-9a-f]+ +up " && break; sleep 0.1; done
"$CTL" status | grep -qE "^hsm3 +[0-9a-f]+ +up " || fail "hsm3 did not come back up"
pass "status shows hsm3 down after its removal, and up again"

# drain under load: no operation fails, and the drained member's queue empties.
P11MUX_PIN=$PIN "$P11MUX_BUILD/tests/itest_client" "$SHIM" threads 12 40 "$KEYS/rsa.pub.pem" "$KEYS/ec.pub.pem" > "$WORK/load.out" 2>&1 &
LOAD=$!
busy() { "$CTL" status --json | python3 -c '
import json, sys
m = {x["label"]: x for x in json.load(sys.stdin)["pools"][0]["members"]}["hsm1"]
assert m["in_flight"] + m["queued"] > 0 or m["done"] > 0, m' 2>/dev/null; }
wait_until 30 busy || fail "the load never reached hsm1"
"$CTL" drain hsm1 | grep -q draining || fail "drain"
drained() { "$CTL" status --json | python3 -c '
import json, sys
m = {x["label"]: x for x in json.load(sys.stdin)["pools"][0]["members"]}["hsm1"]
assert m["state"] == "draining" and m["queued"] == 0 and m["in_flight"] == 0, m' 2>/dev/null; }
wait_until 30 drained || fail "hsm1's queue did not empty after drain: $("$CTL" status)"
wait "$LOAD" || { cat "$WORK/load.out"; fail "operations failed during the drain"; }
"$CTL" resume hsm1 | grep -q "back in service" || fail "resume"
rc=0; "$CTL" drain nosuch 2> "$WORK/err" || rc=$?
[ "$rc" -eq 1 ] && grep -q 'no member "nosuch"; members: .*hsm1 (' "$WORK/err" || fail "unknown member: $(cat "$WORK/err")"
pass "drain under load: no failed operation, queue empty; resume; unknown member named"

# metrics: the Prometheus text exposition format.
"$CTL" metrics > "$WORK/metrics"
python3 - "$WORK/metrics" <<'PY' || fail "metrics are not valid Prometheus text"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
typed, seen = {}, set()
sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*)\})? (-?[0-9.eE+-]+|\+Inf|NaN)$')
for l in lines:
    if l.startswith("# TYPE "):
        _, _, name, t = l.split(" ", 3)
        assert t in ("counter", "gauge", "histogram"), l
        assert name not in typed, "TYPE twice: " + name
        typed[name] = t
        continue
    if l.startswith("# HELP ") or not l:
        continue
    m = sample.match(l)
    assert m, "bad sample line: " + l
    name = m.group(1)
    base = re.sub(r'_(bucket|sum|count)$', '', name)
    assert name in typed or base in typed, "sample without TYPE: " + l
    if name in typed and typed[name] == "counter":
        assert name.endswith("_total"), name
    seen.add(base if base in typed else name)
# histogram buckets are cumulative and end with +Inf == _count
buckets = {}
for l in lines:
    m = re.match(r'^p11mux_member_latency_seconds_bucket\{(.*),le="([^"]+)"\} (\d+)$', l)
    if m:
        buckets.setdefault(m.group(1), []).append((m.group(2), int(m.group(3))))
assert buckets
for k, b in buckets.items():
    vals = [v for _, v in b]
    assert vals == sorted(vals) and b[-1][0] == "+Inf", k
for n in ("p11mux_member_up", "p11mux_member_operations_total", "p11mux_member_latency_seconds"):
    assert n in seen, n
print("metrics ok:", len(lines), "lines,", len(typed), "metric families")
PY
pass "metrics pass the exposition-format check"

# A user not allowed on the control socket is refused by the daemon (SO_PEERCRED).
chmod 0666 "$WORK/control.sock"
chmod 0755 "$WORK"
rc=0
setpriv --reuid=nobody --regid=nogroup --clear-groups "$CTL" -s "$WORK/control.sock" status 2> "$WORK/err" || rc=$?
[ "$rc" -eq 1 ] && grep -q "user nobody (uid $(id -u nobody)) may not use the control socket" "$WORK/err" ||
	fail "nobody was not refused: rc=$rc $(cat "$WORK/err")"
rc=0; "$CTL" -s "$WORK/nosuch.sock" status 2> "$WORK/err" || rc=$?
[ "$rc" -eq 2 ] && grep -q "cannot reach p11muxd at $WORK/nosuch.sock" "$WORK/err" || fail "no-daemon message"
pass "a user outside control_allowed_users is refused; a missing daemon is named"
stop_daemon
