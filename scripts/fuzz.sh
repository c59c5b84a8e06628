#!/usr/bin/env bash
# A long fuzzing campaign (docs/fuzzing.md). Builds the libFuzzer targets (clang,
# -DP11MUX_FUZZ=ON) and runs each in turn for SECONDS, or until RUNS executions with -r, then
# prints for each: executions, coverage (libFuzzer's cov: edges, ft: features), corpus size and
# crashes.
#   scripts/fuzz.sh [-r RUNS] [SECONDS] [TARGET...]
#     SECONDS  per target (default 600; with -r and no SECONDS: as long as RUNS take)
#     TARGET   rpc or fuzz_rpc, ... (default: every fuzz_* target of the build)
#   e.g. nice -n 10 scripts/fuzz.sh -r 10000000 0 rpc config
#   scripts/fuzz.sh --coverage [TARGET...]
#     runs each target once over its saved corpus in a coverage build (BUILD_DIR-cov,
#     -DP11MUX_FUZZ_COVERAGE=ON) and prints llvm-cov's report, function by function, for the
#     code the target is about (fuzz_rpc: rpc.c's handlers, dispatch.c, guard.c, ...)
# Each target's grown corpus, crash inputs and log are kept outside the source tree, in
# $P11MUX_FUZZ_DIR/NAME/ (default ~/.cache/p11mux-fuzz): a later campaign starts from that
# corpus, the seeds in tests/fuzz/NAME/seeds and the inputs that once failed
# (tests/fuzz/NAME/regressions). BUILD_DIR (default build-fuzz) is the build,
# JOBS (default 2) its make jobs. Exit status 1 when a target crashed (the input is in
# NAME/crashes/; replay it with build-fuzz/tests/fuzz/fuzz_NAME FILE).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$top/build-fuzz}
work=${P11MUX_FUZZ_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/p11mux-fuzz}
runs=
coverage=
if [ "${1:-}" = "--coverage" ]; then
	coverage=1
	build=$build-cov
	shift
fi
if [ "${1:-}" = "-r" ]; then
	runs=$2
	shift 2
fi
seconds=${1:-}
if [ -n "$seconds" ] && ! [[ $seconds =~ ^[0-9]+$ ]]; then
	seconds=
fi
[ -n "$seconds" ] && shift
[ -z "$seconds" ] && seconds=$([ -n "$runs" ] && echo 0 || echo 600)

CC=clang cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DP11MUX_FUZZ=ON \
	-DP11MUX_FUZZ_COVERAGE=${coverage:+ON} >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target fuzz_targets >/dev/null

targets=()
for t in "$@"; do
	targets+=("fuzz_${t#fuzz_}")
done
if [ ${#targets[@]} -eq 0 ]; then
	for f in "$build"/tests/fuzz/fuzz_*; do
		[ -x "$f" ] && [ -f "$f" ] && targets+=("$(basename "$f")")
	done
fi

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$top/tests/fuzz/lsan.supp:print_suppressions=0

# Runs one target; appends its line to the summary.
run_one() {
	local t=$1 name=${1#fuzz_} dir=$work/${1#fuzz_} bin=$build/tests/fuzz/$1 rc=0
	local args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=60
		-artifact_prefix="$dir/crashes/")
	local fz=$top/tests/fuzz start end
	[ -x "$bin" ] || { echo "fuzz.sh: no target $t in $build" >&2; return 2; }
	mkdir -p "$dir/corpus" "$dir/crashes"
	[ -n "$runs" ] && args+=(-runs="$runs")
	[ -f "$fz/$name.dict" ] && args+=(-dict="$fz/$name.dict")
	[ -f "$fz/$name.options" ] && mapfile -t -O ${#args[@]} args < <(grep '^-' "$fz/$name.options")
	# The crashes of this run are the files written after this stamp (earlier ones may have
	# been moved away, or kept beside them).
	local stamp=$dir/.run-start
	: >"$stamp"
	local limit=
	[ -n "$runs" ] && limit="$runs runs"
	[ "$seconds" -gt 0 ] && limit="${limit:+$limit or }$seconds s"
	echo "fuzz.sh: $t: $limit; log in $dir/log" >&2
	start=$(date +%s)
	# New inputs go to the first directory, the saved corpus; the others are only read.
	local dirs=("$dir/corpus" "$fz/$name/seeds")
	[ -d "$fz/$name/regressions" ] && dirs+=("$fz/$name/regressions")
	"$bin" "${args[@]}" "${dirs[@]}" >"$dir/log" 2>&1 || rc=$?
	end=$(date +%s)
	local execs rate last cov ft corpus crashes
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log" | tail -1)
	last=$(grep -E '^#[0-9]+.*cov: ' "$dir/log" | tail -1 || true)
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
	corpus=$(find "$dir/corpus" -type f | wc -l)
	crashes=$(find "$dir/crashes" -type f -newer "$stamp" | wc -l)
	[ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ] && crashes="exit $rc"
	printf '%-14s %8s %12s %8s %7s %7s %8s %8s\n' "$t" "$((end - start))" "${execs:-?}" \
		"${rate:-?}" "${cov:-?}" "${ft:-?}" "$corpus" "$crashes" >>"$summary"
	[ "$rc" -eq 0 ]
}

# The files a target is about, for its coverage report.
sources_of() {
	case $1 in
	fuzz_rpc) echo daemon/rpc.c daemon/dispatch.c daemon/guard.c daemon/view.c ;;
	fuzz_ctlline) echo daemon/control.c ;;
	fuzz_config) echo daemon/config.c ;;
	fuzz_pinfile) echo daemon/pin.c ;;
	fuzz_proto) echo common/proto.c common/transport.c common/buffer.c ;;
	fuzz_shim) echo module/*.c ;;
	fuzz_hproto) echo daemon/hproto.c daemon/helper.c daemon/link.c ;;
	esac
}

# Runs one target over its saved corpus and seeds in the coverage build; prints the report.
cover_one() {
	local t=$1 name=${1#fuzz_} dir=$work/${1#fuzz_} bin=$build/tests/fuzz/$1 src=()
	mkdir -p "$dir/corpus"
	rm -f "$dir"/cov-*.profraw
	LLVM_PROFILE_FILE="$dir/cov-%p.profraw" "$bin" -runs=0 "$dir/corpus" \
		"$top/tests/fuzz/$name/seeds" >"$dir/cov.log" 2>&1
	llvm-profdata merge -sparse "$dir"/cov-*.profraw -o "$dir/cov.profdata"
	mapfile -t src < <(cd "$top" && for f in $(sources_of "$t"); do echo "$top/$f"; done)
	echo "== $t: $(find "$dir/corpus" -type f | wc -l) corpus files"
	if [ ${#src[@]} -eq 0 ]; then
		llvm-cov report "$bin" -instr-profile="$dir/cov.profdata"
	else
		llvm-cov report "$bin" -instr-profile="$dir/cov.profdata" -show-functions "${src[@]}"
	fi | sed "s|$top/||"
}

mkdir -p "$work"
if [ -n "$coverage" ]; then
	for t in "${targets[@]}"; do
		cover_one "$t"
	done
	exit 0
fi
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
status=0
for t in "${targets[@]}"; do
	run_one "$t" || status=1
done
{
	echo "p11mux fuzzing campaign, $(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?'), corpora in $work"
	printf '%-14s %8s %12s %8s %7s %7s %8s %8s\n' target seconds executions exec/s cov ft corpus crashes
	cat "$summary"
} | tee -a "$work/campaigns.txt"
exit $status
