#!/usr/bin/env bash
# What the pool's indirection costs: RSA-2048 private-key operations straight on SoftHSM,
# through p11-kit remote (p11-kit server + p11-kit-client.so) and through p11mux (p11muxd +
# p11mux-pkcs11.so), all on the same SoftHSM token, in one run, rounds interleaved so that
# machine noise hits all three alike. Two clients: p11mux-bench (signatures, NSS's call
# sequence) and NSS's own rsaperf -s (C_Decrypt with CKM_RSA_X_509). Usage:
#   scripts/bench-overhead.sh [SECONDS per run, default 5] [ROUNDS, default 3]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
SECS=${1:-5}
ROUNDS=${2:-3}
"$top/scripts/deps.sh"
"$top/scripts/build.sh"
B="$top/build"
PIN=648219
W=$(mktemp -d /tmp/p11mux-bench.XXXXXX)
DPID=
SPID=
cleanup() {
	[ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
	[ -n "$SPID" ] && kill "$SPID" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT
eval "$("$top/tests/fixtures/mktokens.sh" "$W/hsm" --tokens 1 --pin "$PIN")"
export SOFTHSM2_CONF
printf '%s\n' "$PIN" > "$W/pin"
cat > "$W/p11mux.conf" <<CONF
socket = "$W/p11mux.sock";
control_socket = "$W/control.sock";
# SoftHSM computes in parallel, unlike a USB HSM: let the member run as many operations
# at once as there are cores.
workers_per_member = $(nproc);
pools = ( { label = "hsm1"; module = "/usr/lib/softhsm/libsofthsm2.so"; pin_file = "$W/pin"; } );
CONF
"$B/p11muxd" -c "$W/p11mux.conf" -f > "$W/daemon.log" 2>&1 &
DPID=$!
export XDG_RUNTIME_DIR="$W/run"
mkdir -m 700 "$XDG_RUNTIME_DIR"
eval "$(p11-kit server --provider /usr/lib/softhsm/libsofthsm2.so -s "pkcs11:token=hsm1")"
SPID=$P11_KIT_SERVER_PID
for _ in $(seq 1 50); do grep -q ': ready$' "$W/daemon.log" && break; sleep 0.1; done

run() { # name module threads
	local env=()
	[ "$1" = p11mux ] && env=(P11MUX_SOCKET="$W/p11mux.sock")
	env "${env[@]}" "$B/p11mux-bench" --module "$2" --token hsm1 --pin "$PIN" --key-label httpdcert \
		--op sign --mech rsa-pkcs --threads "$3" --seconds "$SECS" --name "$1" --json
}
module_of() {
	case $1 in
	softhsm) echo /usr/lib/softhsm/libsofthsm2.so ;;
	p11-kit) echo /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so ;;
	p11mux) echo "$B/p11mux-pkcs11.so" ;;
	esac
}
# One NSS database per module (each shows a token named hsm1).
for name in softhsm p11-kit p11mux; do
	mkdir "$W/db-$name"
	certutil -N -d "sql:$W/db-$name" --empty-password
	str=()
	[ "$name" = p11mux ] && str=(-string "socket=$W/p11mux.sock")
	echo | modutil -dbdir "sql:$W/db-$name" -add "$name" -libfile "$(module_of "$name")" "${str[@]}" -force >/dev/null
done
printf 'hsm1:%s\n' "$PIN" > "$W/nsspin"
rsaperf_run() { # name threads
	rsaperf -d "sql:$W/db-$1" -n "hsm1:httpdcert" -f "$W/nsspin" -s -p "$SECS" -t "$2" 2>&1 |
		sed -n 's/^\([0-9.]*\) operations\/s.*/\1/p' | cut -d. -f1
}

declare -A sum
echo "RSA-2048, $SECS s per run, $ROUNDS rounds, $(nproc) cores" >&2
for t in 1 2; do
	for r in $(seq 1 "$ROUNDS"); do
		for name in softhsm p11-kit p11mux; do
			j=$(run "$name" "$(module_of "$name")" "$t")
			ops=$(echo "$j" | sed -n 's/.*"ops_per_s":\([0-9]*\).*/\1/p')
			p99=$(echo "$j" | sed -n 's/.*"p99_us":\([0-9]*\).*/\1/p')
			nss=$(rsaperf_run "$name" "$t")
			echo "  threads=$t round=$r $name: p11mux-bench sign $ops ops/s (p99 $p99 us), rsaperf -s $nss ops/s" >&2
			sum[bench,$name,$t]=$(( ${sum[bench,$name,$t]:-0} + ops ))
			sum[nss,$name,$t]=$(( ${sum[nss,$name,$t]:-0} + nss ))
		done
	done
done
for tool in bench nss; do
	[ $tool = bench ] && printf '\np11mux-bench, RSA-2048 PKCS#1 v1.5 sign (mean of %s rounds):\n' "$ROUNDS"
	[ $tool = nss ] && printf '\nrsaperf -s, RSA-2048 raw decrypt through NSS (mean of %s rounds):\n' "$ROUNDS"
	printf '\n| threads | SoftHSM direct | p11-kit remote | p11mux | p11-kit / direct | p11mux / direct |\n'
	printf '|---|---|---|---|---|---|\n'
	for t in 1 2; do
		d=$(( ${sum[$tool,softhsm,$t]} / ROUNDS )); k=$(( ${sum[$tool,p11-kit,$t]} / ROUNDS ))
		m=$(( ${sum[$tool,p11mux,$t]} / ROUNDS ))
		printf '| %s | %s ops/s | %s ops/s | %s ops/s | %s%% | %s%% |\n' "$t" "$d" "$k" "$m" \
			$(( 100 * k / d )) $(( 100 * m / d ))
	done
done
