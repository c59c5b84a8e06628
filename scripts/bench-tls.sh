#!/usr/bin/env bash
# Full TLS handshakes per second through NSS's TLS server (selfserv, the engine under mod_nss)
# with the pool's key, driven by strsclnt -N (no session reuse: every connection is a full
# handshake with one private-key operation), at the raymii.org article's siege concurrencies (5, 10, 20,
# 60 clients), on 1 and on 4 simulated Nitrokey HSMs (p11sim "nitrokey" profile at SCALE),
# RSA-2048 and EC P-256; then nginx (OpenSSL's PKCS#11 engine, forked workers) under siege at
# the same concurrencies, RSA-2048. Usage:
#   scripts/bench-tls.sh [SCALE, default 0.05] [HANDSHAKES per client, default 4]
#                        [SIEGE seconds, default 10] [EC_SCALE, default SCALE]
# EC_SCALE runs the EC P-256 part at another time scale: at 0.05 a simulated member signs in
# 12.5 ms, and four of them outrun what a 2-core machine's own TLS work allows, so the
# machine, not the pool, is what gets measured; a slower scale keeps the devices the limit,
# as real ones (250 ms per signature) are.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tests/fixtures/testlib.sh"
SCALE=${1:-0.05}
PER=${2:-4}
SIEGE_SECS=${3:-10}
EC_SCALE=${4:-$SCALE}
"$top/scripts/deps.sh"
"$top/scripts/build.sh"
B="$top/build"
PIN=$TEST_PIN
DPID= SPID= NPID=
script_workdir p11mux-tlsbench 4 SPID NPID DPID
export P11SIM_CONFIG="$W/p11sim.conf"
sim_scale() { p11sim_conf "$P11SIM_CONFIG" "$1" "$W/faults"; }
sim_scale "$SCALE"
pin_file "$W/pin" pool
mkdir "$W/db"
certutil -N -d "sql:$W/db" --empty-password
echo | modutil -dbdir "sql:$W/db" -add pool -libfile "$B/p11mux-pkcs11.so" -string "socket=$W/p11mux.sock" -force >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

start_pool() { # members...
	pool_conf "$W/p11mux.conf" "$W" pool "$B/p11sim-pkcs11.so" "$*" \
		'allowed_users = [ "www-data" ]' 'socket_group = "www-data"'
	: > "$W/daemon.log"
	start_p11muxd "$B/p11muxd" "$W/p11mux.conf" "$W/daemon.log" || exit 1
	DPID=$DAEMON_PID
}
stop_pool() { kill "$DPID"; wait "$DPID" || true; DPID=; }
start_server() { # nickname
	selfserv -d "sql:$W/db" -n "pool:$1" -p "$PORT" -f "$W/pin" -V tls1.2:tls1.3 -t 64 > "$W/selfserv.log" 2>&1 &
	SPID=$!
	for _ in $(seq 1 50); do (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0; sleep 0.1; done
	cat "$W/selfserv.log" >&2; exit 1
}
stop_server() { kill "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=; }
# run CLIENTS -> "handshakes/s availability%"
run() {
	local n=$(( $1 * PER )) t0 t1 ok
	t0=$(date +%s%N)
	strsclnt -p "$PORT" -d "sql:$W/db" -o -N -c "$n" -t "$1" -V tls1.2:tls1.2 127.0.0.1 > "$W/st.out" 2>&1 || true
	t1=$(date +%s%N)
	ok=$(sed -n 's/.*NoReuse - \([0-9]*\) server certificates tested.*/\1/p' "$W/st.out")
	ok=${ok:-0}
	echo "$(awk "BEGIN{printf \"%.1f\", $ok / (($t1 - $t0) / 1e9)}") $(( 100 * ok / n ))"
}

echo "p11sim nitrokey profile: RSA-2048 at scale $SCALE ($(awk "BEGIN{print 750*$SCALE}") ms per signature), EC P-256 at scale $EC_SCALE ($(awk "BEGIN{print 250*$EC_SCALE}") ms); $PER full handshakes per client; TLS 1.2 ECDHE"
declare -A R
for key in httpdcert eccert; do
	[ $key = httpdcert ] && sim_scale "$SCALE" || sim_scale "$EC_SCALE"
	for members in 1 4; do
		start_pool $(for i in $(seq 1 "$members"); do echo "hsm$i"; done)
		start_server "$key"
		for c in 5 10 20 60; do
			R[$members,$key,$c]=$(run "$c")
		done
		stop_server
		stop_pool
	done
done
sim_scale "$SCALE"
# table UNIT ARRAY KEY: a Markdown table of ARRAY[MEMBERS,KEYc] ("rate availability") for
# 1 and 4 members at each client count, with the ratio of the rates.
pct() { [[ $1 =~ ^[0-9.]+$ ]] && echo "$1%" || echo "$1"; }
table() {
	local -n res=$2
	local c r1 a1 r4 a4
	echo
	echo "| clients | 1 member $1 | availability | 4 members $1 | availability | 4 / 1 |"
	echo "|---|---|---|---|---|---|"
	for c in 5 10 20 60; do
		read -r r1 a1 <<<"${res[1,$3$c]}"
		read -r r4 a4 <<<"${res[4,$3$c]}"
		# "-" for a run that never ended (siege_run), and for a ratio to nothing.
		echo "| $c | $r1 | $(pct "$a1") | $r4 | $(pct "$a4") |" \
			"$(awk -v a="$r4" -v b="$r1" 'BEGIN { if (a ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2f", a / b; else printf "-" }') |"
	done
}
echo
echo "RSA-2048 (scale $SCALE):"
table handshakes/s R httpdcert,
echo
echo "EC P-256 (scale $EC_SCALE):"
table handshakes/s R eccert,

# nginx with OpenSSL's engine, workers as www-data (the socket admits them), under siege.
chmod 0755 "$W"
engine_conf "$W/openssl.cnf" "$B/p11mux-pkcs11.so" "$PIN"
mkdir -p "$W/nginx/logs"
# Each worker blocks in the engine during a private-key operation, so the number of workers
# bounds how many operations run at once: more workers than members.
nginx_conf "$W/nginx" "$PORT" "$W/hsm/keys/rsa.crt.pem" pool httpdcert 16
export P11MUX_SOCKET="$W/p11mux.sock"
# siege writes its configuration on its first run (and has been seen to deadlock doing so).
HOME="$W" timeout -k 2 20 siege -C > /dev/null 2>&1 || true
# One siege run of c clients: "RATE AVAILABILITY". siege has been seen to hang at the end of a
# run with 60 clients (killed after SIEGE_SECS + 60 s, no summary): then once more, and if it
# hangs again the table says "-" for that cell.
siege_run() {
	local c=$1 try rate avail
	for try in 1 2; do
		HOME="$W" timeout -k 5 $((SIEGE_SECS + 60)) siege -c "$c" -t "${SIEGE_SECS}S" -b \
			-H "Connection: close" "https://127.0.0.1:$PORT/" > "$W/siege.out" 2>&1 || true
		rate=$(sed -n 's/.*"transaction_rate":[[:space:]]*\([0-9.]*\).*/\1/p' "$W/siege.out")
		avail=$(sed -n 's/.*"availability":[[:space:]]*\([0-9.]*\).*/\1/p' "$W/siege.out")
		if [ -n "$rate" ]; then
			echo "$rate $avail"
			return
		fi
		echo "bench-tls.sh: siege -c $c ended without a summary (run $try of 2)" >&2
	done
	echo "- -"
}
declare -A N
for members in 1 4; do
	start_pool $(for i in $(seq 1 "$members"); do echo "hsm$i"; done)
	OPENSSL_CONF="$W/openssl.cnf" nginx -p "$W/nginx" -c "$W/nginx/nginx.conf" > "$W/nginx/out.log" 2>&1 &
	NPID=$!
	for _ in $(seq 1 50); do (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
	for c in 5 10 20 60; do
		N[$members,$c]=$(siege_run "$c")
	done
	kill "$NPID"; wait "$NPID" 2>/dev/null || true; NPID=
	stop_pool
done
echo
echo "nginx + siege (RSA-2048, a new TLS connection per request: ssl_session_cache off, $SIEGE_SECS s per run):"
table requests/s N ""
