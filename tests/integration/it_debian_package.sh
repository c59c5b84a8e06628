#!/usr/bin/env bash
# The Debian package, as an administrator meets it: built with dpkg-buildpackage from a clean
# copy of the source tree, checked with lintian (no errors), installed with
# `apt-get install ./p11mux_*.deb ./p11mux-sim_*.deb`. Installing starts no daemon (no PIN
# file yet). Then the installed p11muxd serves three simulated devices (the installed
# p11sim-pkcs11.so over SoftHSM tokens made by the installed p11mux-sim-setup and
# mktokens.sh), the installed module signs through it (pkcs11-tool, and GnuTLS through the
# installed p11-kit registration), and `apt-get remove --purge` takes every file away again: p11-kit's module
# directories are as before, and the test removes the p11mux user and group it caused.
#
# Needs root, apt-get and dpkg-buildpackage (scripts/deps.sh); skipped otherwise, and when a
# p11mux package is installed already (it is not this test's to remove). RUN_SERIAL: it
# changes p11-kit's system directory, which it_p11kit and the GnuTLS tests read.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "skip: installing a package needs root"
	exit 77
fi
for tool in apt-get dpkg-buildpackage dh lintian fakeroot; do
	if ! command -v "$tool" > /dev/null; then
		echo "skip: $tool is not installed (scripts/deps.sh)"
		exit 77
	fi
done
installed() { # PACKAGE: whether dpkg has it installed (or half-installed)
	dpkg-query -W -f='${db:Status-Status}' "$1" 2> /dev/null | grep -qv '^not-installed$'
}
for p in p11mux p11mux-sim; do
	if installed "$p"; then
		echo "skip: the package $p is installed on this machine; this test would remove it"
		exit 77
	fi
done

TRIPLET=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
MODDIR=/usr/lib/$TRIPLET/pkcs11
SHIM_INSTALLED=$MODDIR/p11mux-pkcs11.so
SIM_INSTALLED=$MODDIR/p11sim-pkcs11.so
APT=(apt-get -y -q -o DPkg::Lock::Timeout=300)

# What the machine looks like before: the test leaves it so.
had_user=$(getent passwd p11mux || true)
had_group=$(getent group p11mux || true)
# (Registrations other worktrees' it_p11kit make for a moment are left out.)
p11kit_dirs() {
	{ find /usr/share/p11-kit/modules /etc/pkcs11/modules -mindepth 1 -maxdepth 1 \
		! -name 'p11mux-it-*' -printf '%p %s %m %U\n' 2> /dev/null || true; } | sort
}

cleanup() {
	local rc=$?
	if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2> /dev/null; then
		kill "$DAEMON_PID" 2> /dev/null || true
		wait "$DAEMON_PID" 2> /dev/null || true
	fi
	DAEMON_PID=
	if installed p11mux || installed p11mux-sim; then
		"${APT[@]}" remove --purge p11mux p11mux-sim > "$WORK/cleanup-remove.log" 2>&1 ||
			echo "clean-up: apt-get remove --purge failed: $(cat "$WORK/cleanup-remove.log")" >&2
	fi
	# Debian leaves a package's system user behind on purge (files may still be its); this
	# test removes the one its installation made.
	[ -n "$had_user" ] || ! getent passwd p11mux > /dev/null || userdel p11mux || true
	[ -n "$had_group" ] || ! getent group p11mux > /dev/null || groupdel p11mux || true
	test_cleanup
	exit "$rc"
}
WORK=$(mktemp -d /tmp/p11mux-deb.XXXXXX)
trap cleanup EXIT
p11kit_dirs > "$WORK/p11kit.before"

# ---------------------------------------------------------------- build
# A clean copy: the files git knows, committed or not, without build trees.
mkdir "$WORK/src"
if git -C "$P11MUX_SOURCE" rev-parse --git-dir > /dev/null 2>&1; then
	git -C "$P11MUX_SOURCE" ls-files -z -c -o --exclude-standard |
		(cd "$P11MUX_SOURCE" && tar --null -T - --ignore-failed-read -cf - 2> /dev/null) |
		tar -xf - -C "$WORK/src"
else
	tar -C "$P11MUX_SOURCE" --exclude='./build*' --exclude='./obj-*' -cf - . | tar -xf - -C "$WORK/src"
fi
[ -x "$WORK/src/debian/rules" ] || fail "no debian/rules in the copy of $P11MUX_SOURCE"
start=$(date +%s)
(cd "$WORK/src" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" dpkg-buildpackage -b -us -uc) \
	> "$WORK/build.log" 2>&1 || fail "dpkg-buildpackage: $(tail -40 "$WORK/build.log")"
debs=("$WORK"/p11mux_*.deb "$WORK"/p11mux-sim_*.deb)
[ -f "${debs[0]}" ] && [ -f "${debs[1]}" ] || fail "dpkg-buildpackage made no p11mux and p11mux-sim: $(ls "$WORK")"
pass "dpkg-buildpackage -b built $(cd "$WORK" && echo *.deb) in $(($(date +%s) - start)) s"

lintian "${debs[@]}" > "$WORK/lintian.log" 2>&1 || true
if grep -q '^E: ' "$WORK/lintian.log"; then
	fail "lintian reports errors: $(cat "$WORK/lintian.log")"
fi
grep '^W: ' "$WORK/lintian.log" | sed 's/^/  lintian /' || true
pass "lintian: no errors ($(grep -c '^W: ' "$WORK/lintian.log" || true) warnings)"

# ---------------------------------------------------------------- install
(cd "$WORK" && "${APT[@]}" install --no-install-recommends ./"${debs[0]##*/}" ./"${debs[1]##*/}") \
	> "$WORK/install.log" 2>&1 || fail "apt-get install: $(cat "$WORK/install.log")"
# apt's own account of what it did (the machine is shared: another session's apt-get may
# install something meanwhile, so the package list is not compared).
grep -q '^0 upgraded, 2 newly installed, 0 to remove' "$WORK/install.log" ||
	fail "apt-get did more than install the two packages: $(cat "$WORK/install.log")"
for f in /usr/sbin/p11muxd /usr/bin/p11muxctl "$SHIM_INSTALLED" /lib/systemd/system/p11mux.service \
	/usr/share/p11-kit/modules/p11mux.module /etc/p11mux/p11mux.conf /usr/lib/sysusers.d/p11mux.conf \
	/usr/bin/p11mux-bench "$SIM_INSTALLED" /usr/share/p11mux-sim/mktokens.sh /usr/bin/p11mux-sim-setup; do
	[ -e "$f" ] || fail "the packages did not install $f"
done
dpkg-query -W -f='${Conffiles}\n' p11mux | grep -q '^ /etc/p11mux/p11mux.conf ' ||
	fail "/etc/p11mux/p11mux.conf is not a conffile: $(dpkg-query -W -f='${Conffiles}' p11mux)"
getent passwd p11mux > /dev/null && getent group p11mux > /dev/null ||
	fail "installing made no p11mux user and group"
grep -q '^socket_group = "p11mux";$' /etc/p11mux/p11mux.conf ||
	fail "/etc/p11mux/p11mux.conf does not give the socket to the group p11mux"
grep -q "^    module = \"/usr/lib/$TRIPLET/opensc-pkcs11.so\";" /etc/p11mux/p11mux.conf ||
	fail "/etc/p11mux/p11mux.conf does not name this architecture's OpenSC"
pass "apt-get install put the files in place and installed nothing else; p11mux.conf a conffile, a p11mux user and group"

mod=/usr/share/p11-kit/modules/p11mux.module
grep -q "^module: $SHIM_INSTALLED$" "$mod" || fail "$mod does not name $SHIM_INSTALLED: $(cat "$mod")"
grep -q '^x-init-reserved: quiet=1$' "$mod" || fail "$mod does not set quiet=1: $(cat "$mod")"
unit=/lib/systemd/system/p11mux.service
grep -q '^ConditionPathExists=/etc/p11mux/pin$' "$unit" || fail "the unit has no ConditionPathExists= on the PIN file"
grep -q '^RestartPreventExitStatus=3$' "$unit" || fail "the unit restarts after a refused PIN (exit status 3)"
grep -q '^ExecStart=/usr/sbin/p11muxd ' "$unit" || fail "the unit does not start /usr/sbin/p11muxd"
out=$(cd / && systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify $unit: $out"
[ -z "$out" ] || fail "systemd-analyze verify $unit: $out"
# Without a PIN file nothing may have started the daemon (a booted systemd would have
# skipped the unit on its condition; here postinst had no systemd to ask).
[ ! -e /etc/p11mux/pin ] || fail "installing wrote a PIN file"
if pgrep -f '^/usr/sbin/p11muxd' > /dev/null; then
	fail "installing started p11muxd: $(pgrep -af '^/usr/sbin/p11muxd')"
fi
pass "the p11-kit module file names $SHIM_INSTALLED with quiet=1; the unit waits for the PIN file, does not restart on status 3, and passes systemd-analyze verify"

# ---------------------------------------------------------------- run
# The no-hardware path as the README gives it, from the installed files only: p11mux-sim-setup
# makes the tokens with the installed mktokens.sh and writes a pool of the installed
# simulator; the installed daemon serves it.
out=$(/usr/bin/p11mux-sim-setup "$WORK/sim" 2>&1) || fail "p11mux-sim-setup: $out"
grep -q "^  module = \"$SIM_INSTALLED\";" "$WORK/sim/p11mux.conf" ||
	fail "p11mux-sim-setup's pool does not use the installed simulator: $(cat "$WORK/sim/p11mux.conf")"
echo "$out" | grep -q "pkcs11-tool --module $SHIM_INSTALLED -L" ||
	fail "p11mux-sim-setup does not name the installed module: $out"
. "$WORK/sim/env"
LABEL=$(sed -n 's/^  label = "\(.*\)";$/\1/p' "$WORK/sim/p11mux.conf")
KEYS="$WORK/sim/hsm/keys"
DAEMON=/usr/sbin/p11muxd
"$DAEMON" -t -c "$WORK/sim/p11mux.conf" > "$WORK/check.log" 2>&1 ||
	fail "p11muxd -t: $(cat "$WORK/check.log")"
"$DAEMON" -c "$WORK/sim/p11mux.conf" -f > "$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
wait_until 60 grep -q ': ready$' "$WORK/daemon.log" || fail "the installed p11muxd did not become ready"
out=$(/usr/bin/p11muxctl status 2>&1) || fail "p11muxctl status: $out"
[ "$(echo "$out" | grep -c ' up ')" -eq 3 ] || fail "not 3 members up: $out"
pass "the installed p11muxd serves the 3 simulated devices p11mux-sim-setup made (installed p11sim and mktokens.sh)"

echo "signed through the installed module" > "$WORK/data"
pkcs11-tool --module "$SHIM_INSTALLED" --login --pin "$PIN" --sign -m SHA256-RSA-PKCS --id 01 \
	-i "$WORK/data" -o "$WORK/sig" > "$WORK/sign.log" 2>&1 || fail "pkcs11-tool --sign: $(cat "$WORK/sign.log")"
verify_rsa "$WORK/data" "$WORK/sig" || fail "the signature made through $SHIM_INSTALLED does not verify"
pass "pkcs11-tool signs through $SHIM_INSTALLED; openssl verifies the signature"

# GnuTLS finds the pool through the installed registration, with no module path given.
out=$(p11-kit list-modules 2>&1 || true)
echo "$out" | grep -q "^p11mux: $SHIM_INSTALLED" && echo "$out" | grep -q "token: $LABEL" ||
	fail "p11-kit list-modules does not show the installed module and the pool: $out"
pass "p11-kit list-modules shows the installed p11mux module and the pool's token"

if dpkg-query -L p11mux | grep -q '^/usr/share/man/man8/p11muxd\.'; then
	out=$(man -w p11muxd 2>&1) || fail "man -w p11muxd: $out"
	pass "man -w p11muxd: $out"
else
	echo "skip: the package has no man page p11muxd(8) yet"
fi

stop_daemon
pass "the installed p11muxd stops cleanly"

# With no daemon, a GnuTLS program that loads every registered module stays quiet: the
# module file's quiet=1 silences the shim's "cannot reach p11muxd" line.
p11-kit list-modules > /dev/null 2> "$WORK/list.err" || true
if grep -q 'p11mux' "$WORK/list.err"; then
	fail "p11-kit list-modules, no daemon: the shim spoke despite quiet=1: $(cat "$WORK/list.err")"
fi
pass "with the daemon stopped, p11-kit list-modules prints nothing from the shim (quiet=1)"

# ---------------------------------------------------------------- remove
dpkg-query -L p11mux p11mux-sim | sort -u > "$WORK/files"
"${APT[@]}" remove --purge p11mux p11mux-sim > "$WORK/remove.log" 2>&1 ||
	fail "apt-get remove --purge: $(cat "$WORK/remove.log")"
grep -q '^0 upgraded, 0 newly installed, 2 to remove' "$WORK/remove.log" ||
	fail "apt-get did more than remove the two packages: $(cat "$WORK/remove.log")"
! installed p11mux && ! installed p11mux-sim || fail "p11mux or p11mux-sim still installed after the purge"
left=
while read -r f; do
	# Directories other packages share stay; a file of ours must not.
	if [ -e "$f" ] && { [ ! -d "$f" ] || [ -z "$(ls -A "$f")" ]; }; then left="$left $f"; fi
done < "$WORK/files"
[ ! -e /etc/p11mux ] || left="$left /etc/p11mux"
[ ! -e /etc/systemd/system/multi-user.target.wants/p11mux.service ] ||
	left="$left /etc/systemd/system/multi-user.target.wants/p11mux.service"
[ -z "$left" ] || fail "left after the purge:$left"
p11kit_dirs > "$WORK/p11kit.after"
diff -u "$WORK/p11kit.before" "$WORK/p11kit.after" > "$WORK/p11kit.diff" ||
	fail "p11-kit's module directories changed: $(cat "$WORK/p11kit.diff")"
pass "apt-get remove --purge removed only the two packages and left none of their files; p11-kit's module directories are as before"
