#!/usr/bin/env bash
# Writes the fuzz targets' seed corpora (tests/fuzz/NAME/seeds) and fuzz_rpc's dictionary,
# from a fuzz build (CC=clang cmake -S . -B build-fuzz -DP11MUX_FUZZ=ON):
#   tests/fuzz/make-seeds.sh [BUILD_DIR]      (default: build-fuzz)
#   proto    every call's request and reply from fuzz_corpus --write-seeds, merged down by
#            fuzz_proto -merge=1 to the files that add coverage
#   rpc      short sessions written by fuzz_rpc itself (rpc_seeds.c), with the stub daemon's
#            real object handles; and rpc.dict
#   config   the example configuration and variants of it, one feature or one mistake each
#   pinfile  mod_nss-style PIN files (first byte: which labels are looked for)
#   ctlline  every command (first byte: rights and member states, see fuzz_ctlline.c)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$top/build-fuzz}" && pwd)
fz="$top/tests/fuzz"
cmake --build "$build" -j2 --target fuzz_targets fuzz_corpus >/dev/null

fresh() {
	rm -rf "$fz/$1/seeds"
	mkdir -p "$fz/$1/seeds"
	echo "$fz/$1/seeds"
}

# --- proto ---
d=$(fresh proto)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$build/tests/unit/fuzz_corpus" --write-seeds "$tmp" >/dev/null
"$build/tests/fuzz/fuzz_proto" -merge=1 "$d" "$tmp" 2>/dev/null
echo "proto: $(ls "$d" | wc -l) seeds"

# --- rpc ---
d=$(fresh rpc)
P11MUX_FUZZ_WRITE_SEEDS="$d" P11MUX_FUZZ_WRITE_DICT="$fz/rpc.dict" "$build/tests/fuzz/fuzz_rpc"

# --- config ---
d=$(fresh config)
ex="$top/config/p11mux.conf.example"
# The example without its comments (the fuzzer's inputs stay short).
grep -v '^ *#' "$ex" | grep -v '^$' >"$d/example"
pool='pools = ( { label = "pool"; module = "/usr/lib/softhsm/libsofthsm2.so"; pin_file = "/etc/p11mux/pin"; } );'
printf '%s\n' "$pool" >"$d/minimal"
printf 'state_dir = "/var/lib/p11mux";\nsocket = "/run/p.sock";\ncontrol_socket = "/run/c.sock";\nlog_level = "debug";\n%s\n' "$pool" >"$d/paths"
printf 'allowed_users = [ "root" ];\nallowed_groups = [ "root" ];\ncontrol_allowed_users = [ "nobody" ];\ncontrol_allowed_groups = [ "adm" ];\nsocket_group = "root";\n%s\n' "$pool" >"$d/users"
printf 'max_clients = 10;\nmax_clients_per_uid = 5;\nmax_clients_per_pid = 2;\nhello_timeout_ms = 100;\nframe_timeout_ms = 100;\nwrite_timeout_ms = 100;\n%s\n' "$pool" >"$d/limits"
cat >"$d/sched" <<'EOF'
scheduler = "round-robin"; op_timeout_ms = 500; max_attempts = 2; probe_interval_ms = 50;
probe_max_ms = 20; workers_per_member = 4; pin_max_failures = 0;
pools = ( { pin_file = "/p"; scheduler = "least-loaded"; max_attempts = 64; op_timeout_ms = 3600000L; },
          { pin_file = "/q"; slot_id = 7; label = "second"; } );
EOF
cat >"$d/members" <<'EOF'
pools = ( { label = "pool"; pin_file = "/p"; members = ( "hsm1",
  { token = "hsm2"; env = [ "OPENSC_CONF=/etc/o.conf", "A=" ]; },
  { token = "hsm3"; module = "/usr/lib/p11-kit-client.so"; } ); } );
EOF
printf 'pools = ( { pin_file = "/p"; slot_id = 1; }, { pin_file = "/q"; } );\n' >"$d/bad-slot-twice"
printf 'pools = ( { pin_file = "/p"; label = "a:b"; } );\n' >"$d/bad-label"
printf 'pools = ( { pin_file = "/p"; members = [ ]; } );\n' >"$d/bad-members-empty"
printf 'pools = ( { pin_file = "/p"; members = ( { token = "x"; env = [ "NOVALUE" ]; } ); } );\n' >"$d/bad-env"
printf 'max_attempts = 0;\npools = ( { pin_file = "/p"; } );\n' >"$d/bad-range"
printf 'socket = "relative.sock";\npools = ( { pin_file = "/p"; } );\n' >"$d/bad-path"
printf 'socket = "/s"; control_socket = "/s";\npools = ( { pin_file = "/p"; } );\n' >"$d/bad-same-socket"
printf 'colour = "blue";\npools = ( { pin_file = "/p"; } );\n' >"$d/bad-key"
printf 'pools = ( { label = "x" } )\n' >"$d/bad-syntax"
echo "config: $(ls "$d" | wc -l) seeds"

# --- pinfile --- (first byte: labels looked for, a bit each: pool-a hsm1 a:b pool "" ...)
d=$(fresh pinfile)
printf '\x01%s\n' '1234' >"$d/bare"
printf '\x03# the pool\npool-a:1234\nhsm1: 5678 \n' >"$d/labels"
printf '\x02pool-a:1234\nhsm1:5678\nhsm1:9999\r\n' >"$d/last-wins"
printf '\x08pool-abc:1\npool:2\n' >"$d/prefix"
printf '\x04a:b:pin:with:colons\n' >"$d/colon-label"
printf '\x10:empty-label\n' >"$d/empty-label"
printf '\x20SmartCard-HSM (UserPIN):648219\n\t\n' >"$d/opensc-label"
printf '\x01pool-a:\n' >"$d/empty-pin"
printf '\x01one\ntwo\n' >"$d/two-bare"
printf '\x00\n\n# nothing\n' >"$d/nothing"
echo "pinfile: $(ls "$d" | wc -l) seeds"

# --- ctlline --- (first byte: bit 0 may read, bit 1 admin, then 2 bits per member state)
d=$(fresh ctlline)
i=0
seed() {
	i=$((i + 1))
	printf "$1$2\n" >"$d/$(printf %02d $i)"
}
for line in "status" "status json" "keys" "keys json" "metrics" "drain hsm-a1" "resume hsm-a2" \
	"drain A300" "resume B100" "drain hsm" "unlock-pin pool-a" "unlock-pin pool-c" "drain " \
	"help" "status\r\nkeys"; do
	seed '\x03' "$line"
done
seed '\x01' "drain hsm-a1"      # may read, not an admin
seed '\x00' "status"            # may not read
seed '\x57' "resume hsm-a2"     # members: draining, draining, down
seed '\xe3' "status json"       # members: up, down, excluded
echo "ctlline: $(ls "$d" | wc -l) seeds"
