#!/usr/bin/env bash
# What the pool's indirection costs: RSA-2048 private-key operations straight on SoftHSM,
# through p11-kit remote (p11-kit server + p11-kit-client.so) and through p11mux (p11muxd +
# p11mux-pkcs11.so), with two clients: p11mux-bench (NSS's call sequence, C_OpenSession,
# C_SignInit, C_Sign, C_CloseSession) and NSS's own rsaperf -s (C_Decrypt, CKM_RSA_X_509).
#
#   scripts/bench-overhead.sh [--base REV] [--rounds N] [--seconds S] [--no-p11kit]
#
#   --base REV    also build git revision REV (a commit, a branch, "main") in a temporary
#                 worktree and run its p11mux beside this tree's: "no worse than before"
#                 within the noise of one invocation
#   --rounds N    rounds per thread count (default 10)
#   --seconds S   length of one run (default 1)
#   --no-p11kit   leave p11-kit remote out
#
# How it stays honest on a noisy machine (docs/benchmarks.md, "The overhead harness"):
#   - every path has its own copy of the token, so no process shares a token with another;
#   - runs are short and interleaved: each round runs every path once, in an order that
#     rotates from round to round, so a slow phase of the machine (they last seconds) hits
#     neighbouring runs of all paths alike;
#   - each round's figures are compared with the direct run of the same round, and the
#     median over the rounds is reported, with the range of the single runs;
#   - the machines here switch between a fast and a slow phase (the same signature takes
#     0.85 ms or 1.25 ms, for seconds at a time): noise only ever slows a run down, so the
#     fastest run of each path (best of the rounds) is compared too;
#   - the overhead is given as a ratio and as microseconds added per operation:
#     threads x (1e6 / ops_per_s(path) - 1e6 / ops_per_s(direct)).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tests/fixtures/testlib.sh"
BASE=
ROUNDS=10
SECS=1
P11KIT=1
while [ $# -gt 0 ]; do
	case $1 in
	--base) BASE=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--seconds) SECS=$2; shift 2 ;;
	--no-p11kit) P11KIT=; shift ;;
	-h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
	*) echo "bench-overhead.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
"$top/scripts/deps.sh"
"$top/scripts/build.sh"
B="$top/build"
PIN=$TEST_PIN
W=$(mktemp -d /tmp/p11mux-overhead.XXXXXX)
PIDS=()
cleanup() {
	# (p11-kit's server is not this shell's child: its wait fails, which set -e must not
	# turn into the script's status.)
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && { wait "$p" 2>/dev/null || true; }; done
	if [ -d "$W/base-src" ]; then git -C "$top" worktree remove --force "$W/base-src" || true; fi
	rm -rf "$W"
}
trap 'rc=$?; cleanup; exit $rc' EXIT

# The builds of p11mux to measure: this tree ("work"), and --base.
NAMES=(work)
declare -A BUILD=([work]="$B")
if [ -n "$BASE" ]; then
	rev=$(git -C "$top" rev-parse --short "$BASE")
	git -C "$top" worktree add --detach "$W/base-src" "$rev" >/dev/null 2>&1
	BUILD_DIR="$W/base-build" "$W/base-src/scripts/build.sh"
	NAMES+=("base")
	BUILD[base]="$W/base-build"
	echo "base: $BASE ($rev); work: the working tree of $(git -C "$top" rev-parse --short HEAD)" >&2
fi

# One token, copied for each path.
eval "$("$top/tests/fixtures/mktokens.sh" "$W/hsm" --tokens 1 --pin "$PIN")"
copy_token() { # NAME -> SOFTHSM2_CONF of a private copy
	cp -a "$W/hsm/tokens" "$W/tokens-$1"
	sed "s#^directories.tokendir = .*#directories.tokendir = $W/tokens-$1#" \
		"$W/hsm/softhsm2.conf" > "$W/softhsm2-$1.conf"
	echo "$W/softhsm2-$1.conf"
}
printf '%s\n' "$PIN" > "$W/pin"
chmod 600 "$W/pin"
printf 'hsm1:%s\n' "$PIN" > "$W/nsspin"

# PATHS: direct, p11-kit, and one p11mux per build.
PATHS=(direct)
declare -A MODULE CONF INIT
MODULE[direct]=/usr/lib/softhsm/libsofthsm2.so
CONF[direct]=$(copy_token direct)
if [ -n "$P11KIT" ]; then
	PATHS+=(p11-kit)
	MODULE[p11-kit]=/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so
	CONF[p11-kit]=$(copy_token p11-kit)
	export XDG_RUNTIME_DIR="$W/run"
	mkdir -m 700 "$XDG_RUNTIME_DIR"
	eval "$(SOFTHSM2_CONF=${CONF[p11-kit]} p11-kit server \
		--provider /usr/lib/softhsm/libsofthsm2.so -s "pkcs11:token=hsm1")"
	PIDS+=("$P11_KIT_SERVER_PID")
fi
for n in "${NAMES[@]}"; do
	p="p11mux-$n"
	PATHS+=("$p")
	MODULE[$p]="${BUILD[$n]}/p11mux-pkcs11.so"
	CONF[$p]=$(copy_token "$p")
	INIT[$p]="socket=$W/$p.sock"
	cat > "$W/$p.conf" <<CONF
socket = "$W/$p.sock";
control_socket = "$W/$p.control";
state_dir = "$W/$p.state";
# SoftHSM computes in parallel, unlike a USB HSM: as many operations at once as cores.
workers_per_member = $(nproc);
pools = ( { label = "hsm1"; module = "/usr/lib/softhsm/libsofthsm2.so"; pin_file = "$W/pin"; } );
CONF
	SOFTHSM2_CONF=${CONF[$p]} start_p11muxd "${BUILD[$n]}/p11muxd" "$W/$p.conf" "$W/$p.log" ||
		exit 1
	PIDS+=("$DAEMON_PID")
done

# One NSS database per path, the module added with modutil as an admin would.
for p in "${PATHS[@]}"; do
	mkdir "$W/db-$p"
	certutil -N -d "sql:$W/db-$p" --empty-password
	str=()
	[ -n "${INIT[$p]:-}" ] && str=(-string "${INIT[$p]}")
	echo | modutil -dbdir "sql:$W/db-$p" -add "$p" -libfile "${MODULE[$p]}" "${str[@]}" \
		-force >/dev/null
done

bench_run() { # PATH THREADS -> ops/s
	local init=()
	[ -n "${INIT[$1]:-}" ] && init=(--init-args "${INIT[$1]}")
	SOFTHSM2_CONF=${CONF[$1]} "$B/p11mux-bench" --module "${MODULE[$1]}" "${init[@]}" \
		--token hsm1 --pin "$PIN" --key-label httpdcert --op sign --mech rsa-pkcs \
		--threads "$2" --seconds "$SECS" --json | sed -n 's/.*"ops_per_s":\([0-9]*\).*/\1/p'
}
rsaperf_run() { # PATH THREADS -> ops/s
	SOFTHSM2_CONF=${CONF[$1]} rsaperf -d "sql:$W/db-$1" -n "hsm1:httpdcert" -f "$W/nsspin" \
		-s -p "$SECS" -t "$2" 2>&1 | sed -n 's/^\([0-9.]*\) operations\/s.*/\1/p' | cut -d. -f1
}

declare -A R # R[tool,path,threads,round] = ops/s
np=${#PATHS[@]}
echo "RSA-2048, $SECS s per run, $ROUNDS rounds, $(nproc) cores; paths: ${PATHS[*]}" >&2
for t in 1 2; do
	for r in $(seq 1 "$ROUNDS"); do
		line="  threads=$t round=$r:"
		for k in $(seq 0 $((np - 1))); do
			p=${PATHS[$(( (k + r) % np ))]}
			R[bench,$p,$t,$r]=$(bench_run "$p" "$t")
			R[nss,$p,$t,$r]=$(rsaperf_run "$p" "$t")
			line="$line $p ${R[bench,$p,$t,$r]}/${R[nss,$p,$t,$r]}"
		done
		echo "$line" >&2
	done
done

# median of the numbers on stdin
median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
range() { sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%d-%d", lo, hi}'; }

best() { # TOOL PATH THREADS -> the fastest run
	for r in $(seq 1 "$ROUNDS"); do echo "${R[$1,$2,$3,$r]}"; done | sort -g | tail -1
}

# TOOL PATH BASE THREADS -> the medians over the rounds of PATH's rate as a percentage of
# BASE's in the same round, and of the microseconds PATH adds per operation over BASE.
against() {
	local r ratio us
	ratio=$(for r in $(seq 1 "$ROUNDS"); do
		awk -v a="${R[$1,$2,$4,$r]}" -v b="${R[$1,$3,$4,$r]}" 'BEGIN{print 100*a/b}'
	done | median)
	us=$(for r in $(seq 1 "$ROUNDS"); do
		awk -v a="${R[$1,$2,$4,$r]}" -v b="${R[$1,$3,$4,$r]}" -v t="$4" 'BEGIN{print t*(1e6/a - 1e6/b)}'
	done | median)
	echo "$ratio $us"
}

table() { # TOOL TITLE
	printf '\n%s (median of %s rounds; range of the single runs):\n\n' "$2" "$ROUNDS"
	printf '| threads | path | ops/s (median) | range | of direct | µs added per operation | best of direct |\n'
	printf '|---|---|---|---|---|---|---|\n'
	for t in 1 2; do
		for p in "${PATHS[@]}"; do
			ops=$(for r in $(seq 1 "$ROUNDS"); do echo "${R[$1,$p,$t,$r]}"; done | median)
			rng=$(for r in $(seq 1 "$ROUNDS"); do echo "${R[$1,$p,$t,$r]}"; done | range)
			if [ "$p" = direct ]; then
				printf '| %s | %s | %.0f | %s | 100%% | 0 | 100%% |\n' "$t" "$p" "$ops" "$rng"
				continue
			fi
			best=$(awk -v a="$(best "$1" "$p" "$t")" -v d="$(best "$1" direct "$t")" \
				'BEGIN{printf "%.0f", 100*a/d}')
			read -r ratio us <<<"$(against "$1" "$p" direct "$t")"
			printf '| %s | %s | %.0f | %s | %.0f%% | %.0f | %s%% |\n' "$t" "$p" "$ops" "$rng" "$ratio" "$us" "$best"
		done
	done
	if [ -n "$BASE" ]; then
		printf '\nthis tree against %s, the same rounds:\n\n' "$BASE"
		printf '| threads | work / base (median of rounds) | µs per operation, work - base | best work / best base | µs, best work - best base |\n|---|---|---|---|---|\n'
		for t in 1 2; do
			read -r ratio us <<<"$(against "$1" p11mux-work p11mux-base "$t")"
			bw=$(best "$1" p11mux-work "$t")
			bb=$(best "$1" p11mux-base "$t")
			printf '| %s | %.1f%% | %+.0f | %s | %s |\n' "$t" "$ratio" "$us" \
				"$(awk -v a="$bw" -v b="$bb" 'BEGIN{printf "%.1f%%", 100*a/b}')" \
				"$(awk -v a="$bw" -v b="$bb" -v t="$t" 'BEGIN{printf "%+.0f", t*(1e6/a-1e6/b)}')"
		done
	fi
}
table bench "p11mux-bench, RSA-2048 PKCS#1 v1.5 sign, NSS's call sequence"
table nss "rsaperf -s, RSA-2048 raw decrypt through NSS"
