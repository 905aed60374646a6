#!/bin/sh
# vm.sh - `make vm`: boot the rootfs under QEMU with Debian's generic kernel, booted as an
# uncompressed vmlinux through its PVH entry on q35 (TCG; KVM when it really works here).
# The guest's control port 1024 is forwarded to 127.0.0.1:PORT only (user networking with
# restrict=on: the guest reaches nothing outside), and DIR is shared over virtio-9p with the
# mount tag TAG. With -no-reboot a guest poweroff or reboot ends QEMU (exit 0).
# The script ends by exec'ing QEMU, so `vm.sh ... &` gives QEMU's PID in $!.
#
# usage: vm.sh [--image IMG] [--port PORT] [--share DIR] [--tag TAG] [--serial FILE]
#              [--append ARGS] [--mem MIB] [--pidfile FILE]
#   --image   initramfs (default build/rootfs/initramfs.cpio.zst)
#   --port    host loopback port forwarded to the guest's 1024 (default: a free one)
#   --share   host directory shared over 9p (default build/vm/share), --tag its tag (share)
#   --serial  file for the guest console (default: this terminal)
#   --append  more kernel command line
#   --pidfile QEMU writes its PID there (for scripts that must kill it)
# Environment: STEREO_ACCEL=tcg|kvm forces the accelerator; STEREO_VM_BIOS=qboot (default
# when installed)|seabios|FILE the firmware; KDIR the kernel cache; STEREO_VM_CID (default 3)
# the guest CID when /dev/vhost-vsock exists.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
image=$top/build/rootfs/initramfs.cpio.zst
port="" share=$top/build/vm/share tag=share serial="" append="" mem=256 pidfile=""
usage() {
	echo "usage: vm.sh [--image IMG] [--port PORT] [--share DIR] [--tag TAG] [--serial FILE] [--append ARGS] [--mem MIB] [--pidfile FILE]" >&2
	exit 2
}
while [ $# -gt 0 ]; do
	[ $# -ge 2 ] || usage
	case $1 in
	--image) image=$2 ;;
	--port) port=$2 ;;
	--share) share=$2 ;;
	--tag) tag=$2 ;;
	--serial) serial=$2 ;;
	--append) append=$2 ;;
	--mem) mem=$2 ;;
	--pidfile) pidfile=$2 ;;
	*) usage ;;
	esac
	shift 2
done
fail() { echo "vm: $*" >&2; exit 1; }

kdir=${KDIR:-$top/build/kernel}
[ -s "$kdir/vmlinux" ] || sh "$top/rootfs/kernel.sh"
[ -s "$image" ] || fail "no image at $image (make rootfs)"
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 is not installed (make deps)"
if [ -z "$port" ]; then
	port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi
mkdir -p "$share"
# QEMU's option syntax: a comma inside a value is written twice
qshare=$(printf '%s' "$share" | sed 's/,/,,/g')

# /dev/kvm can exist where KVM cannot run a guest (nested without VMX/SVM: QEMU then fails
# with "KVM internal error"), so KVM is used only when the CPU also advertises it.
accel=${STEREO_ACCEL:-}
if [ -z "$accel" ]; then
	accel=tcg
	if [ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
		accel=kvm
	fi
fi
cpu=""
[ "$accel" = kvm ] && cpu="-cpu host"
# Firmware: qboot (shipped with QEMU in Debian) only loads the kernel; SeaBIOS, QEMU's
# default, also walks option ROMs and boot devices first. qboot reached wait-ready sooner in
# interleaved boots here (docs/rootfs.md). STEREO_VM_BIOS=seabios keeps QEMU's default.
case ${STEREO_VM_BIOS:-qboot} in
qboot) bios=/usr/share/qemu/qboot.rom; [ -f "$bios" ] || bios="" ;;
seabios) bios="" ;;
*) bios=$STEREO_VM_BIOS ;;
esac
[ -n "$bios" ] && bios="-bios $bios"

# QEMU's user network: the guest is 10.0.2.15/24, the gateway 10.0.2.2. init reads ip=.
# cryptomgr.notests: the crypto self-tests at boot take 0.35-0.4 s under TCG (the largest
# initcall by far, initcall_debug); they check the implementations, they guard nothing.
# noreplace-smp: with one CPU the kernel rewrites every SMP lock prefix to its UP form, and
# self-modifying code is slow under TCG (0.1-0.25 s); the prefixes are correct either way.
# printk.devkmsg=on: init logs through /dev/kmsg, which by default keeps only 10 lines per
# 5 s from user space; a boot writes about 25.
cmdline="console=ttyS0 quiet panic=-1 cryptomgr.notests noreplace-smp printk.devkmsg=on"
cmdline="$cmdline ip=10.0.2.15::10.0.2.2:255.255.255.0:stereo:eth0:off"
[ -n "$append" ] && cmdline="$cmdline $append"

vsock=""
if [ -c /dev/vhost-vsock ] && [ -w /dev/vhost-vsock ]; then
	vsock="-device vhost-vsock-pci,guest-cid=${STEREO_VM_CID:-3}"
fi
# stereod never serves TCP unasked: without vsock the host reaches it through the forwarded TCP
# port, so the command line asks (its peer is QEMU's gateway 10.0.2.2, not a local address).
[ -z "$vsock" ] && cmdline="$cmdline stereod.listen=tcp"

echo "vm: $accel, ${bios:+$(basename "${bios#-bios }"), }kernel $(cat "$kdir/release" 2>/dev/null), image $image ($(wc -c < "$image") bytes)" >&2
echo "vm: reach the guest with: stereo-host --tcp 127.0.0.1:$port wait-ready" >&2
[ -n "$vsock" ] && echo "vm: or over vsock: stereo-host --vsock ${STEREO_VM_CID:-3}:1024 wait-ready" >&2
echo "vm: 9p share $share (tag $tag); a guest poweroff ends QEMU" >&2

if [ -n "$serial" ]; then
	console="-serial file:$serial"
else
	console="-serial stdio"
fi
extra=""
[ -n "$pidfile" ] && extra="-pidfile $pidfile"
# shellcheck disable=SC2086 # cpu, vsock, console and extra are lists of words on purpose
exec qemu-system-x86_64 -machine q35 -accel "$accel" $cpu $bios -m "$mem" -smp 1 \
	-nodefaults -no-reboot -display none $console \
	-kernel "$kdir/vmlinux" -initrd "$image" -append "$cmdline" \
	-netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:1024" \
	-device virtio-net-pci,netdev=n0,romfile= \
	-fsdev "local,id=fs0,path=$qshare,security_model=none" \
	-device "virtio-9p-pci,fsdev=fs0,mount_tag=$tag" \
	$vsock $extra
