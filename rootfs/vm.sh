#!/bin/sh
# vm.sh - `make vm`: boot the rootfs under QEMU with Debian's generic kernel, booted as an
# uncompressed vmlinux through its PVH entry on q35 or, Firecracker-shaped, on microvm
# (virtio-mmio devices, no PCI) (TCG; KVM when it really works here).
# The guest's control port 1024 is forwarded to 127.0.0.1:PORT only (user networking with
# restrict=on: the guest reaches nothing outside), and DIR is shared over virtio-9p with the
# mount tag TAG. With -no-reboot a guest poweroff or reboot ends QEMU (exit 0).
# The script ends by exec'ing QEMU, so `vm.sh ... &` gives QEMU's PID in $!.
#
# usage: vm.sh [--image IMG] [--port PORT] [--md-port PORT] [--share DIR] [--tag TAG] [--serial FILE]
#              [--append ARGS] [--mem MIB] [--pidfile FILE] [--machine q35|microvm]
#              [--qmp SOCK] [--vmgenid GUID|auto] [--mac MAC] [--fwd PORT:IP] [--incoming URI]
#   --image   initramfs (default build/rootfs/initramfs.cpio.zst)
#   --port    host loopback port forwarded to the guest's 1024 (default: a free one)
#   --md-port host loopback port forwarded to the guest's 5555 (stereod's guest-metadata
#             listener, docs/stereod.md; none by default)
#   --share   host directory shared over 9p (default build/vm/share), --tag its tag (share)
#   --serial  file for the guest console (default: this terminal)
#   --append  more kernel command line
#   --pidfile QEMU writes its PID there (for scripts that must kill it)
#   --machine q35 (default: PCI devices) or microvm (virtio-mmio devices found through ACPI,
#             as Firecracker >= 1.8 announces them on x86_64; docs/rootfs.md)
# Snapshot and clone (tests/e2e-clone.bats, tests/bench/clone.sh; docs/snapshot.md):
#   --qmp SOCK        a QMP unix socket (server, no wait)
#   --vmgenid GUID    a vmgenid device with this GUID ("auto": a new one per QEMU start);
#                     also SeaBIOS and, under TCG, -cpu max (see below)
#   --mac MAC         the NIC's MAC address
#   --fwd PORT:IP     one more forward, 127.0.0.1:PORT to the guest address IP, port 1024
#   --incoming URI    start from a migration stream (QEMU comes up paused: QMP cont)
# Environment: STEREO_ACCEL=tcg|kvm forces the accelerator; STEREO_VM_BIOS=qboot (default
# when installed)|seabios|FILE the firmware; KDIR the kernel cache; STEREO_VM_CID (default 3)
# the guest CID when /dev/vhost-vsock exists. STEREO_VM_TSC_KHZ: microvm under TCG only, the
# guest's TSC frequency (default: the host's, from /proc/cpuinfo). STEREO_VM_MICROVM_ACPI=off:
# microvm without ACPI; QEMU then announces the devices as virtio_mmio.device= words instead
# (for kernels with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES; Debian's has not).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
image=$top/build/rootfs/initramfs.cpio.zst
port="" mdport="" share=$top/build/vm/share tag=share serial="" append="" mem=256 pidfile="" machine=q35
qmp="" vmgenid="" mac="" fwd="" incoming=""
usage() {
	echo "usage: vm.sh [--image IMG] [--port PORT] [--md-port PORT] [--share DIR] [--tag TAG] [--serial FILE] [--append ARGS] [--mem MIB] [--pidfile FILE] [--machine q35|microvm]" >&2
	echo "             [--qmp SOCK] [--vmgenid GUID|auto] [--mac MAC] [--fwd PORT:IP] [--incoming URI]" >&2
	exit 2
}
while [ $# -gt 0 ]; do
	[ $# -ge 2 ] || usage
	case $1 in
	--image) image=$2 ;;
	--port) port=$2 ;;
	--md-port) mdport=$2 ;;
	--share) share=$2 ;;
	--tag) tag=$2 ;;
	--serial) serial=$2 ;;
	--append) append=$2 ;;
	--mem) mem=$2 ;;
	--pidfile) pidfile=$2 ;;
	--machine) machine=$2 ;;
	# snapshot and clone
	--qmp) qmp=$2 ;;
	--vmgenid) vmgenid=$2 ;;
	--mac) mac=$2 ;;
	--fwd) fwd=$2 ;;
	--incoming) incoming=$2 ;;
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

# --- the machine: q35 (PCI) or microvm (virtio-mmio, Firecracker-shaped) ---------------------
# microvm,acpi=on: Debian's kernel has virtio_mmio as a module without
# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so it finds the devices in the ACPI tables (LNRO0005),
# not in virtio_mmio.device= words. Its firmware is QEMU's default for microvm (qboot).
# Under TCG the kernel calibrates the TSC against the PIT; when the QEMU thread loses the CPU
# during that window (a loaded host) the calibration fails, and microvm has no HPET or ACPI
# PM timer to fall back on: the kernel marks the TSC unstable and hangs before any console
# output. tsc_early_khz gives it the frequency instead: under TCG the guest's TSC is the
# host's (docs/rootfs.md has the trial). KVM guests get it from kvmclock.
vsock=""
case $machine in
q35)
	qmachine=q35 devsuffix=pci romfile=",romfile="
	;;
microvm)
	qmachine=microvm,acpi=${STEREO_VM_MICROVM_ACPI:-on} devsuffix=device romfile=""
	[ -z "${STEREO_VM_BIOS:-}" ] && bios=""
	if [ "$accel" = tcg ]; then
		tsc=${STEREO_VM_TSC_KHZ:-}
		if [ -z "$tsc" ] && grep -qw constant_tsc /proc/cpuinfo; then
			tsc=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
		fi
		[ -n "$tsc" ] && cmdline="$cmdline tsc_early_khz=$tsc"
	fi
	;;
*) usage ;;
esac
if [ -c /dev/vhost-vsock ] && [ -w /dev/vhost-vsock ]; then
	vsock="-device vhost-vsock-$devsuffix,guest-cid=${STEREO_VM_CID:-3}"
fi
# stereod never serves TCP unasked: without vsock the host reaches it through the forwarded TCP
# port, so the command line asks (its peer is QEMU's gateway 10.0.2.2, not a local address).
# Before --append: words after a "--" there belong to init, not to the kernel.
[ -z "$vsock" ] && cmdline="$cmdline stereod.listen=tcp"
[ -n "$append" ] && cmdline="$cmdline $append"

echo "vm: $machine, $accel, ${bios:+$(basename "${bios#-bios }"), }kernel $(cat "$kdir/release" 2>/dev/null), image $image ($(wc -c < "$image") bytes)" >&2
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
# ---- snapshot and clone -------------------------------------------------------------------
# A clone's devices must match the source's: every option here changes a property, never the
# set of devices, except --vmgenid, which the source and its clones must all have.
hostfwd="hostfwd=tcp:127.0.0.1:$port-:1024"
[ -n "$mdport" ] && hostfwd="$hostfwd,hostfwd=tcp:127.0.0.1:$mdport-:5555"
nic="virtio-net-$devsuffix,netdev=n0$romfile"
set --
if [ -n "$fwd" ]; then
	case $fwd in *:*.*.*.*) ;; *) fail "--fwd wants PORT:IPV4, not $fwd" ;; esac
	hostfwd="$hostfwd,hostfwd=tcp:127.0.0.1:${fwd%%:*}-${fwd#*:}:1024"
fi
[ -n "$mac" ] && nic="$nic,mac=$mac"
[ -n "$qmp" ] && set -- "$@" -qmp "unix:$qmp,server=on,wait=off"
if [ -n "$vmgenid" ]; then
	# qboot cannot place the vmgenid buffer (QEMU's ACPI linker/loader commands): with it the
	# guest hangs before its first console line. SeaBIOS can.
	[ -z "${STEREO_VM_BIOS:-}" ] && bios=""
	# The kernel reports a VM fork (docs/snapshot.md) only once its RNG is initialised. KVM's
	# host CPU has RDRAND and the RNG is ready at boot; TCG's default model has none, and an
	# idle guest then took minutes. "max" has RDRAND under TCG too.
	[ -z "$cpu" ] && cpu="-cpu max"
	set -- "$@" -device "vmgenid,guid=$vmgenid"
fi
[ -n "$incoming" ] && set -- "$@" -incoming "$incoming"
# ---------------------------------------------------------------------------------------------
# shellcheck disable=SC2086 # cpu, vsock, console and extra are lists of words on purpose
exec qemu-system-x86_64 -machine "$qmachine" -accel "$accel" $cpu $bios -m "$mem" -smp 1 \
	-nodefaults -no-reboot -display none $console \
	-kernel "$kdir/vmlinux" -initrd "$image" -append "$cmdline" \
	-netdev "user,id=n0,restrict=on,$hostfwd" \
	-device "$nic" \
	-fsdev "local,id=fs0,path=$qshare,security_model=none" \
	-device "virtio-9p-$devsuffix,fsdev=fs0,mount_tag=$tag" \
	$vsock $extra "$@"
