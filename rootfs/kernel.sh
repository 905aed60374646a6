#!/bin/sh
# kernel.sh - fetch Debian's generic kernel for the QEMU guest and cache it under build/kernel:
# the uncompressed vmlinux (QEMU boots it directly through its PVH note), the kernel config,
# and the .ko files of the virtio / 9p / vsock drivers that are modules in that kernel, in load
# order. Nothing is installed: the package is fetched with `apt-get download` and unpacked
# with `dpkg-deb --fsys-tarfile`. See docs/rootfs.md.
#
# Output (KDIR, default build/kernel):
#   KDIR/vmlinux        the kernel QEMU boots (-kernel)
#   KDIR/config         the kernel's /boot/config-*
#   KDIR/release        the kernel release, e.g. 6.1.0-57-amd64
#   KDIR/modules/*.ko   the modules the guest needs that are not built in
#   KDIR/modules.order  their names, dependencies first (init loads them in this order)
#   KDIR/want           the driver list the cache was made for (a new list redoes the cache)
#
# Environment: STEREO_KERNEL_PKG=linux-image-6.1.0-NN-amd64 pins the package (default: what
# linux-image-amd64 depends on); KDIR overrides the cache directory. A cached kernel is reused
# when apt cannot answer (offline).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
KDIR=${KDIR:-$top/build/kernel}
# the drivers the guest uses; their dependencies are found from each .ko's modinfo.
# virtio_pci for PCI machines (q35), virtio_mmio for PCI-less ones (Firecracker, QEMU microvm).
WANT="virtio_pci virtio_mmio virtio_net 9pnet_virtio 9p vmw_vsock_virtio_transport"

say() { echo "kernel: $*" >&2; }
fail() { echo "kernel: $*" >&2; exit 1; }

resolve_pkg() {
	[ -n "${STEREO_KERNEL_PKG:-}" ] && { echo "$STEREO_KERNEL_PKG"; return 0; }
	apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: *\(linux-image-[0-9][^ ]*\)$/\1/p' | head -1
}

mkdir -p "$KDIR"
# one fetch at a time (make test and make bench may build images together)
exec 9>"$KDIR/.lock"
flock -w 600 9 || fail "waited 10 minutes for $KDIR/.lock"
# apt-cache takes about a second; its answer can only change when apt's lists do
# (a cache made for another driver list is redone: KDIR/want records the list it was made for)
fresh() { [ -s "$KDIR/vmlinux" ] && [ -f "$KDIR/modules.order" ] && [ "$(cat "$KDIR/want" 2>/dev/null)" = "$WANT" ]; }
if [ -z "${STEREO_KERNEL_PKG:-}" ] && [ -s "$KDIR/pkg" ] && fresh && [ "$KDIR/pkg" -nt /var/lib/apt/lists ]; then
	exit 0
fi
pkg=$(resolve_pkg || true)
if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
	say "apt knows no linux-image-amd64 yet; running apt-get update"
	apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 || true
	pkg=$(resolve_pkg || true)
fi
if [ -z "$pkg" ]; then
	[ -s "$KDIR/pkg" ] || fail "cannot resolve linux-image-amd64 with apt-cache and nothing is cached in $KDIR"
	pkg=$(cat "$KDIR/pkg")
	say "apt cannot resolve linux-image-amd64; using the cached $pkg"
fi
case $pkg in linux-image-*) ;; *) fail "unexpected package name: $pkg" ;; esac

# Up to date: same package, every output present.
if [ "$(cat "$KDIR/pkg" 2>/dev/null)" = "$pkg" ] && fresh; then
	touch "$KDIR/pkg"
	exit 0
fi

work=$KDIR/tmp
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

say "downloading $pkg"
# apt-get download writes into the current directory; running as root, apt's _apt sandbox
# user may not be able to write there, so the sandbox is turned off for this one call.
(cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null) ||
	fail "apt-get download $pkg failed"
deb=$(ls "$work"/*.deb)

# One pass over the package: /boot plus the module folders the guest drivers live in.
# (--no-wildcards-match-slash: "drivers/net/*.ko" must not match drivers/net/wireless/...)
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" --wildcards --no-wildcards-match-slash \
	'./boot/vmlinuz-*' './boot/config-*' './lib/modules/*/modules.builtin' \
	'./lib/modules/*/kernel/drivers/virtio/*.ko' \
	'./lib/modules/*/kernel/drivers/net/*.ko' \
	'./lib/modules/*/kernel/net/core/*.ko' \
	'./lib/modules/*/kernel/net/9p/*.ko' \
	'./lib/modules/*/kernel/fs/9p/*.ko' \
	'./lib/modules/*/kernel/fs/netfs/*.ko' \
	'./lib/modules/*/kernel/fs/fscache/*.ko' \
	'./lib/modules/*/kernel/net/vmw_vsock/*.ko' ||
	fail "unpacking $deb failed"
release=$(ls "$work/lib/modules")
bz=$work/boot/vmlinuz-$release
[ -f "$bz" ] || fail "no /boot/vmlinuz-$release in $pkg"

# The bzImage carries the kernel as one XZ stream after the setup code: find its magic and
# decompress that stream alone (--single-stream ignores what follows it).
off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$bz" | head -1 | cut -d: -f1)
[ -n "$off" ] || fail "no XZ stream in $bz (is CONFIG_KERNEL_XZ still set?)"
tail -c +$((off + 1)) "$bz" | xz -dc --single-stream > "$work/vmlinux" ||
	fail "decompressing the kernel from $bz failed"
[ "$(head -c 4 "$work/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ] ||
	fail "the stream in $bz is not an ELF vmlinux"

# Modules in dependency order. A driver listed in modules.builtin is built in and skipped; one
# that is neither built in nor shipped is an error. Dependencies come from the NUL-separated
# .modinfo strings of each .ko ("depends=a,b"), so kmod's modinfo is not needed.
mods=$work/lib/modules/$release
mkdir -p "$work/modules"
: > "$work/modules.order"
ko_path() { find "$mods/kernel" -name "$1.ko" | head -1; }
ko_deps() { tr '\0' '\n' < "$1" | sed -n 's/^depends=//p' | head -1 | tr , ' ' | tr - _; }
builtin() { sed 's|.*/||; s|\.ko$||' "$mods/modules.builtin" | tr - _ | grep -qx "$1"; }
add_module() {
	local name ko d
	name=$(echo "$1" | tr - _)
	grep -qx "$name" "$work/modules.order" && return 0
	builtin "$name" && return 0
	ko=$(ko_path "$name")
	[ -n "$ko" ] || ko=$(ko_path "$(echo "$name" | tr _ -)")
	[ -n "$ko" ] || fail "module $name is neither built into $release nor unpacked (extend the list in $0)"
	for d in $(ko_deps "$ko"); do
		add_module "$d"
	done
	cp "$ko" "$work/modules/$name.ko"
	echo "$name" >> "$work/modules.order"
}
for m in $WANT; do
	add_module "$m"
done
[ -s "$work/modules.order" ] || say "every wanted driver is built into $release"

rm -rf "$KDIR/modules"
mv "$work/modules" "$KDIR/modules"
mv "$work/modules.order" "$KDIR/modules.order"
mv "$work/vmlinux" "$KDIR/vmlinux"
cp "$work/boot/config-$release" "$KDIR/config"
echo "$release" > "$KDIR/release"
echo "$WANT" > "$KDIR/want"
echo "$pkg" > "$KDIR/pkg"
say "$pkg: vmlinux $(wc -c < "$KDIR/vmlinux") bytes, modules: $(tr '\n' ' ' < "$KDIR/modules.order")"
