#!/usr/bin/env bash
# Installs the Debian packages p11mux needs to build and test, when they are missing.
# Run as root (or with sudo) on Debian 12.
set -euo pipefail
# libclang-rt-14-dev: libFuzzer and clang's sanitizer runtimes (the fuzz build); clang only
# recommends it, and recommends are not installed here. debhelper, dpkg-dev, fakeroot, lintian:
# the Debian package and its test (it_debian_package); man-db: `man -w` there.
PACKAGES=(
	build-essential cmake pkg-config clang-format clang libclang-rt-14-dev
	libp11-kit-dev libconfig-dev libcmocka-dev libssl-dev libnss3-dev
	softhsm2 opensc opensc-pkcs11 p11-kit libnss3-tools openssl python3 util-linux procps systemd
	libengine-pkcs11-openssl gnutls-bin nginx siege curl socat strace openssh-server
	groff-base debhelper dpkg-dev fakeroot lintian man-db
)
missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "p11mux: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
