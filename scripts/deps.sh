#!/bin/sh
# deps.sh - install the Debian 12 packages stereo builds and tests with; quick and silent
# when everything is already there (dpkg is asked first, apt-get only for what is missing).
# `deps.sh --check` installs nothing: it names what `make` itself needs and is missing.
set -eu
build="build-essential pkg-config python3-kconfiglib libjsmn-dev libnl-3-dev libnl-route-3-dev"
if [ "${1:-}" = --check ]; then
	missing=""
	for p in $build; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
	done
	[ -z "$missing" ] && exit 0
	echo "make: missing Debian packages:$missing; install them with 'make deps' (as root)" >&2
	exit 1
fi
pkgs="$build
bats bats-support bats-assert bats-file jq curl libcurl4-openssl-dev nginx openssl cpio xz-utils zstd iproute2 util-linux e2fsprogs
procps clang libclang-rt-14-dev qemu-system-x86"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "deps: missing Debian packages:$missing (run as root, or apt-get install them)" >&2
	exit 1
fi
echo "deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $missing >/dev/null
