#!/usr/bin/env bash
# removed: the token leaves C_GetSlotList(CK_TRUE) within 100 ms, its sessions answer
# CKR_DEVICE_REMOVED, C_GetTokenInfo/C_OpenSession CKR_TOKEN_NOT_PRESENT; back within 100 ms of
# clearing the file, with the old sessions invalid and the login gone; a removal in the middle
# of a signature fails it at once. Tokens that share a label are named by serial number.
. "$(dirname "$0")/lib.sh"
sim_setup
sim_client removed

# Two devices with the same label, as SmartCard-HSMs have: each has its own control file,
# named after its serial number.
SAME="$WORK/same"
mkdir -p "$SAME/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
	"$SAME/tokens" > "$SAME/softhsm2.conf"
export SOFTHSM2_CONF="$SAME/softhsm2.conf"
for _ in 1 2; do
	softhsm2-util --init-token --free --label "SmartCard-HSM (UserPIN)" \
		--so-pin 0102030405060708 --pin "$PIN" >/dev/null
done
serials=$(softhsm2-util --show-slots | sed -n 's/.*Serial number: *\([0-9a-f]\{16\}\).*/\1/p')
[ "$(echo "$serials" | wc -l)" -eq 2 ] || fail "expected two serial numbers: $serials"
first=$(echo "$serials" | head -n 1)
second=$(echo "$serials" | tail -n 1)
echo removed > "$CTL/$first"
out=$(simtool -L)
grep -q "serial num *: $second" <<< "$out" || fail "the other device is gone too: $out"
grep -q "serial num *: $first" <<< "$out" && fail "device $first still present: $out"
[ "$(echo "$out" | grep -c '(empty)')" -eq 1 ] || fail "expected one empty slot: $out"
pass "same label: '$CTL/$first' removes only the device with that serial number"
