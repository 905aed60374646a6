#!/bin/sh
# build.sh - `make rootfs`: the guest initramfs, built from scratch. The image holds the static
# stereo binary, its applet links (made by `stereo --install -s`), /init -> stereo, a passwd and
# group database with root, admin and agent, the /etc/stereos skeleton, and the kernel modules
# the guest drivers need when the kernel does not build them in (loaded by init from
# /etc/stereos/modules). No busybox and no shell. See docs/rootfs.md.
#
# usage: build.sh [--test] [--no-modules] [--overlay DIR] [-o IMAGE]
#   --test        add the end-to-end probe service (tests/e2e.bats; never in a production image)
#   --no-modules  leave the kernel modules out (to measure the image alone)
#   --overlay DIR copy DIR over the tree last (debugging: a static shell, strace...)
#   -o IMAGE      output path (default build/rootfs/initramfs.cpio.zst; .xz and .gz work too)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
out=$top/build/rootfs/initramfs.cpio.zst
test_image=0 modules=1 overlay=""
while [ $# -gt 0 ]; do
	case $1 in
	--test) test_image=1 ;;
	--no-modules) modules=0 ;;
	--overlay) overlay=$2; shift ;;
	-o) out=$2; shift ;;
	*) echo "usage: build.sh [--test] [--no-modules] [--overlay DIR] [-o IMAGE]" >&2; exit 2 ;;
	esac
	shift
done
fail() { echo "rootfs: $*" >&2; exit 1; }

bin=${STEREO_BIN:-$top/stereo}
[ -x "$bin" ] || fail "no stereo binary at $bin (run make)"
# ldd fails on a static binary ("not a dynamic executable"): there is no libc in the image
! ldd "$bin" >/dev/null 2>&1 || fail "$bin is not statically linked (CONFIG_STATIC)"
"$bin" --list | grep -qx init || fail "$bin has no init applet (see make menuconfig)"

mkdir -p "$(dirname "$out")" "$top/build/rootfs"
stage=$(mktemp -d "$top/build/rootfs/stage.XXXXXX")
spec=$stage.spec
trap 'rm -rf "$stage" "$spec"' EXIT

# --- the tree ------------------------------------------------------------------------------
# No etc/stereos/services: without that directory init runs its built-in stereod service
# (docs/init.md); an empty one would mean "no services".
for d in bin dev proc sys run tmp mnt root home home/admin home/agent etc etc/stereos; do
	mkdir -p "$stage/$d"
done
chmod 0755 "$stage"/*
chmod 1777 "$stage/tmp"
chmod 0700 "$stage/root" "$stage/home/admin" "$stage/home/agent"

cp "$bin" "$stage/bin/stereo"
chmod 0755 "$stage/bin/stereo"
"$stage/bin/stereo" --install -s "$stage/bin" >/dev/null ||
	fail "stereo --install -s failed"
# --install links to the binary's own absolute path, which here is inside the staging
# directory: make every such link point to where the binary lives in the guest.
for l in "$stage"/bin/*; do
	[ -L "$l" ] || continue
	case $(readlink "$l") in "$stage"/*) ln -sfn /bin/stereo "$l" ;; esac
done
ln -s /bin/stereo "$stage/init"

cat > "$stage/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/false
admin:x:1000:1000:stereOS admin:/home/admin:/bin/false
agent:x:1001:1001:stereOS agent:/home/agent:/bin/false
EOF
cat > "$stage/etc/group" <<'EOF'
root:x:0:
admin:x:1000:
agent:x:1001:
EOF
chmod 0644 "$stage/etc/passwd" "$stage/etc/group"
echo stereo > "$stage/etc/hostname"

cat > "$spec" <<'EOF'
own /home/admin 1000 1000
own /home/agent 1001 1001
nod /dev/console 0600 c 5 1
nod /dev/null 0666 c 1 3
EOF

# --- kernel modules (only those the kernel does not build in) ------------------------------
if [ "$modules" = 1 ]; then
	kdir=${KDIR:-$top/build/kernel}
	sh "$top/rootfs/kernel.sh"
	rel=$(cat "$kdir/release")
	mdir=/lib/modules/$rel
	mkdir -p "$stage$mdir"
	printf '# %s (%s): loaded by init in this order\n' "$(cat "$kdir/pkg")" "$rel" > "$stage/etc/stereos/modules"
	while read -r m; do
		cp "$kdir/modules/$m.ko" "$stage$mdir/$m.ko"
		echo "$mdir/$m.ko" >> "$stage/etc/stereos/modules"
	done < "$kdir/modules.order"
	chmod -R u=rwX,go=rX "$stage/lib"
fi

# --- test variant: the end-to-end probe --------------------------------------------------
if [ "$test_image" = 1 ]; then
	. "$top/rootfs/e2e-image.sh"
fi

if [ -n "$overlay" ]; then
	[ -d "$overlay" ] || fail "--overlay $overlay: not a directory"
	cp -a "$overlay/." "$stage/"
fi

# --- the archive ---------------------------------------------------------------------------
case $out in
*.zst) compress="zstd -19 -q -c" ;;
*.xz) compress="xz -9 --check=crc32 -c" ;;   # the kernel's XZ decoder wants crc32
*.gz) compress="gzip -9 -n -c" ;;
*.cpio) compress=cat ;;
*) fail "-o $out: name it .cpio.zst, .cpio.xz, .cpio.gz or .cpio" ;;
esac
sh "$top/rootfs/mkcpio.sh" "$stage" "$spec" | $compress > "$out.tmp"
mv "$out.tmp" "$out"
size=$(wc -c < "$out")
if [ "$modules" = 1 ]; then
	# the size target (< 1 MiB) is for the image without kernel modules: measure that too
	rm -rf "$stage/lib" "$stage/etc/stereos/modules"
	bare=$(sh "$top/rootfs/mkcpio.sh" "$stage" "$spec" | $compress | wc -c)
	echo "rootfs: $out: $size bytes compressed; $bare bytes without the kernel modules"
else
	echo "rootfs: $out: $size bytes compressed (no kernel modules)"
fi
