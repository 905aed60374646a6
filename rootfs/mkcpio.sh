#!/bin/sh
# mkcpio.sh - write a cpio "newc" archive (the initramfs format) of a staging directory to
# stdout, with the ownership and device nodes of the target rather than of the builder:
# every entry is root:root unless an OWNERS line says otherwise, mtimes are SOURCE_DATE_EPOCH
# (default 0) and entries are sorted, so the same tree always gives the same bytes. Device
# nodes come from NODES lines, so building needs neither root nor mknod nor fakeroot.
#
# usage: mkcpio.sh STAGE [SPEC] > image.cpio
#   SPEC lines:  own PATH UID GID          (PATH as in the image: /home/agent)
#                nod PATH MODE c|b MAJOR MINOR   (MODE octal, e.g. nod /dev/console 0600 c 5 1)
# Regular files, directories and symlinks are taken from STAGE as they are (mode from the
# file system, symlink targets verbatim). The newc layout is in the kernel's
# Documentation/driver-api/early-userspace/buffer-format.rst.
set -eu
[ $# -ge 1 ] && [ -d "$1" ] || { echo "usage: mkcpio.sh STAGE [SPEC] > image.cpio" >&2; exit 2; }
stage=$(cd "$1" && pwd)
spec=${2:-/dev/null}
mtime=${SOURCE_DATE_EPOCH:-0}
ino=100

# pad N: write zero bytes up to the next multiple of 4 after N bytes
pad() { n=$(( (4 - $1 % 4) % 4 )); [ $n -eq 0 ] || head -c $n /dev/zero; }

# header NAME MODE(decimal) UID GID NLINK SIZE RMAJ RMIN: one newc header plus name and padding
header() {
	ino=$((ino + 1))
	nlen=$(( $(printf '%s' "$1" | wc -c) + 1 ))
	printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
		"$ino" "$2" "$3" "$4" "$5" "$mtime" "$6" 0 0 "$7" "$8" "$nlen" 0
	printf '%s\0' "$1"
	pad $((110 + nlen))
}

owner() {
	o=$(awk -v p="$1" '$1 == "own" && $2 == p { print $3, $4; exit }' "$spec")
	echo "${o:-0 0}"
}

list=$(mktemp)
trap 'rm -f "$list"' EXIT
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort) > "$list"
while IFS= read -r rel; do
	p=$stage/${rel#./}
	name=${rel#./}
	set -- $(owner "/$name")
	uid=$1 gid=$2
	perm=$((0$(stat -c %a "$p")))
	if [ -L "$p" ]; then
		t=$(readlink "$p")
		len=$(printf '%s' "$t" | wc -c)
		header "$name" $((0120000 | 0777)) "$uid" "$gid" 1 "$len" 0 0
		printf '%s' "$t"
		pad "$len"
	elif [ -d "$p" ]; then
		header "$name" $((0040000 | perm)) "$uid" "$gid" 2 0 0 0
	elif [ -f "$p" ]; then
		len=$(stat -c %s "$p")
		header "$name" $((0100000 | perm)) "$uid" "$gid" 1 "$len" 0 0
		cat "$p"
		pad "$len"
	else
		echo "mkcpio: $p: only files, directories and symlinks are copied (use a nod line)" >&2
		exit 1
	fi
done < "$list"
awk '$1 == "nod" { print $2, $3, $4, $5, $6 }' "$spec" > "$list"
while read -r path mode kind maj min; do
	case $kind in c) type=0020000 ;; b) type=0060000 ;; *) echo "mkcpio: bad nod line for $path" >&2; exit 1 ;; esac
	header "${path#/}" $((type | 0$mode)) 0 0 1 0 "$maj" "$min"
done < "$list"
header TRAILER!!! 0 0 0 1 0 0 0
