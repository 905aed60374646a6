#!/bin/sh
# boot.sh - boot-to-ready of the production image under QEMU (QEMU start -> `stereo-host
# wait-ready` returns) on both machines vm.sh knows, q35 (PCI) and microvm (virtio-mmio, the
# shape of a Firecracker VM), in interleaved rounds (each round boots the floor and ours on
# each machine, so load changes hit both alike): median (min-max) of STEREO_BENCH_RUNS rounds
# (default 5). Also the image size with and without kernel modules.
# Floor: the same vm.sh (QEMU, kernel, command line, devices) with an initramfs whose PID 1
# (floor-init.c) powers off at once, from QEMU start until QEMU exits: the cost of firmware
# and kernel that no rootfs can remove. Ours minus the floor is what the image adds
# (decompressing it, module loading, network set-up, stereod start, the first reply through
# QEMU's forwarder). Figures only; nothing is asserted (target <= 3 s under TCG).
set -eu
top=${STEREO_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${STEREO_BIN:-$top/stereo}
out=$top/build/bench/boot
rm -rf "$out"
mkdir -p "$out/share"
runs=${STEREO_BENCH_RUNS:-5}
machines="q35 microvm"
pid=""
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ms_now() { date +%s%N | cut -c1-13; }
# CPU time (user + system, ms) of a live process, and of the children a subshell reaped
# (the `times` builtin's second line, "0m1.234s 0m0.100s"): wall time on this shared machine
# moves with the load, the CPU QEMU burns much less
tck=$(getconf CLK_TCK)
cpu_of() { awk -v t="$tck" '{ sub(/^.*\) /, ""); printf "%d\n", ($12 + $13) * 1000 / t }' "/proc/$1/stat"; }
cpu_times() { tail -1 | awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60000 + a[2] * 1000 } printf "%d\n", n }'; }
# FILE -> "median (min-max)"
stat_of() { sort -n "$1" | awk '{ v[NR] = $1 } END { printf "%d (%d-%d)", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
median_of() { sort -n "$1" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

sh "$top/rootfs/build.sh" -o "$out/image.cpio.zst" >/dev/null
sh "$top/rootfs/build.sh" --no-modules -o "$out/bare.cpio.zst" >/dev/null
kdir=${KDIR:-$top/build/kernel}

# --- rounds: floor and ours on each machine --------------------------------------------
mkdir -p "$out/floor"
${CC:-cc} -static -O2 -s -o "$out/floor/init" "$top/tests/bench/floor-init.c"
sh "$top/rootfs/mkcpio.sh" "$out/floor" > "$out/floor.cpio"
for m in $machines; do
	: > "$out/$m.floor.txt"; : > "$out/$m.floor.cpu"; : > "$out/$m.ours.txt"; : > "$out/$m.ours.cpu"
done
for i in $(seq "$runs"); do
	for m in $machines; do
		t0=$(ms_now)
		(timeout 60 sh "$top/rootfs/vm.sh" --machine "$m" --image "$out/floor.cpio" \
			--share "$out/share" --serial "$out/$m.floor.$i.log" </dev/null >/dev/null 2>&1 ||
			echo "boot: $m floor run $i failed" >&2
		 times) | cpu_times >> "$out/$m.floor.cpu"
		echo $(( $(ms_now) - t0 )) >> "$out/$m.floor.txt"

		port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
		t0=$(ms_now)
		sh "$top/rootfs/vm.sh" --machine "$m" --image "$out/image.cpio.zst" --port "$port" \
			--share "$out/share" --serial "$out/$m.serial.$i.log" </dev/null >/dev/null 2>&1 &
		pid=$!
		"$bin" stereo-host --tcp "127.0.0.1:$port" --timeout 200ms wait-ready --interval 20ms \
			--timeout 60s >/dev/null || echo "boot: $m run $i never answered" >&2
		echo $(( $(ms_now) - t0 )) >> "$out/$m.ours.txt"
		cpu_of "$pid" >> "$out/$m.ours.cpu"
		"$bin" stereo-host --tcp "127.0.0.1:$port" shutdown bench >/dev/null || true
		for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
		kill "$pid" 2>/dev/null || true   # still there after 10 s: the shutdown failed
		wait "$pid" || true
		pid=""
	done
done

img=$(wc -c < "$out/image.cpio.zst")
bare=$(wc -c < "$out/bare.cpio.zst")
echo "boot, $runs interleaved rounds, median (min-max) ms; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
for m in $machines; do
	floor=$(median_of "$out/$m.floor.txt")
	ours=$(median_of "$out/$m.ours.txt")
	echo "$m: floor (a PID 1 that powers off) $(stat_of "$out/$m.floor.txt"); to ready $(stat_of "$out/$m.ours.txt")"
	awk -v m="$m" -v o="$ours" -v f="$floor" 'BEGIN { printf "%s: ratio ours/floor %.2f (the image adds %d ms; target: ready <= 3000 ms)\n", m, o / f, o - f }'
	echo "$m: QEMU CPU time (user+sys): floor $(stat_of "$out/$m.floor.cpu"), to ready $(stat_of "$out/$m.ours.cpu")"
done
echo "image without modules: $bare bytes ($(awk -v b="$bare" 'BEGIN { printf "%.3f", b / 1048576 }') MiB; target < 1 MiB)"
echo "image with modules:    $img bytes ($(cat "$kdir/release"): $(wc -l < "$kdir/modules.order") modules)"
