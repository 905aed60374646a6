#!/bin/sh
# clone.sh - a clone from a VM snapshot against a cold boot of the same image, under QEMU.
# The test image boots once with a vmgenid device, gets snapshot-prepare and is migrated into
# a file over QMP (as tests/e2e-clone.bats does). Then, interleaved for $ROUNDS rounds:
#   cold:  QEMU start -> `stereo-host wait-ready` returns (vm.sh, the same devices)
#   clone: QEMU start with -incoming from the file -> loaded, QMP cont -> wait-ready returns
#          -> `restored` (clock, entropy, generation, hostname, machine-id, network) acked
# Prints median (min-max) of each; nothing is asserted. Figures only.
set -eu
top=${STEREO_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${STEREO_BIN:-$top/stereo}
out=$top/build/bench/clone
rounds=${ROUNDS:-${BENCH_ROUNDS:-5}}
rm -rf "$out"
mkdir -p "$out"
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ms_now() { date +%s%N | cut -c1-13; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
host() { hp=$1; shift; "$bin" stereo-host --tcp "127.0.0.1:$hp" "$@"; }
qmp() { /usr/bin/python3 "$top/tests/helpers/qmp.py" "$@"; }
# stats FILE: "median ms (min-max)"
stats() { sort -n "$1" | awk '{ v[NR] = $1 } END { printf "%d ms (%d-%d)", v[int((NR + 1) / 2)], v[1], v[NR] }'; }

# vm NAME PORT [vm.sh options]: start QEMU in the background, its PID in $out/NAME.pid
vm() {
	name=$1 port=$2
	shift 2
	mkdir -p "$out/share.$name"
	rm -f "$out/$name.pid"
	sh "$top/rootfs/vm.sh" --image "$out/image.cpio.zst" --port "$port" --share "$out/share.$name" \
		--tag e2e --serial "$out/$name.log" --pidfile "$out/$name.pid" --qmp "$out/$name.qmp" \
		--mem 256 "$@" </dev/null >"$out/$name.vm.log" 2>&1 &
	pids="$pids $!"
}

# stop NAME PORT: power the guest off, or kill QEMU after 10 s
stop() {
	host "$2" --timeout 5s shutdown bench >/dev/null 2>&1 || true
	p=$(cat "$out/$1.pid" 2>/dev/null || echo)
	[ -n "$p" ] || return 0
	for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.05; done
	kill "$p" 2>/dev/null || true
}

STEREO_BIN=$bin sh "$top/rootfs/build.sh" --test -o "$out/image.cpio.zst" >/dev/null

# --- the snapshot ---------------------------------------------------------------------------
port=$(free_port)
vm src "$port" --vmgenid auto
host "$port" --timeout 500ms wait-ready --interval 20ms --timeout 120s >/dev/null
host "$port" snapshot-prepare >/dev/null
qmp "$out/src.qmp" stop "migrate={\"uri\":\"exec:cat > $out/snapshot\"}" wait-migrate quit >/dev/null
echo '{"interface":"eth0","mac":"02:fc:00:00:00:09","addresses":["10.0.2.15/24","10.0.2.29/24"],"gateway":"10.0.2.2"}' \
	> "$out/net.json"

: > "$out/cold.txt"
: > "$out/ready.txt"
: > "$out/restored.txt"
for i in $(seq "$rounds"); do
	# cold boot
	port=$(free_port)
	t0=$(ms_now)
	vm "cold$i" "$port" --vmgenid auto
	host "$port" --timeout 200ms wait-ready --interval 20ms --timeout 120s >/dev/null
	echo $(( $(ms_now) - t0 )) >> "$out/cold.txt"
	stop "cold$i" "$port"

	# clone
	port=$(free_port)
	t0=$(ms_now)
	vm "clone$i" "$port" --vmgenid "$(cat /proc/sys/kernel/random/uuid)" --mac 02:fc:00:00:00:09 \
		--incoming "exec:cat $out/snapshot"
	qmp "$out/clone$i.qmp" wait-incoming cont >/dev/null
	host "$port" --timeout 200ms wait-ready --interval 20ms --timeout 120s >/dev/null
	t1=$(ms_now)
	host "$port" restored --generation "$i" --hostname "bench-$i" \
		--machine-id "$(printf '%032x' "$i")" --network "$out/net.json" >/dev/null
	t2=$(ms_now)
	echo $((t1 - t0)) >> "$out/ready.txt"
	echo $((t2 - t0)) >> "$out/restored.txt"
	stop "clone$i" "$port"
done

echo "snapshot: $(wc -c < "$out/snapshot") bytes (256 MiB guest, $(cat "$top/build/kernel/release" 2>/dev/null))"
echo "cold boot, QEMU start -> wait-ready (median of $rounds):               $(stats "$out/cold.txt")  [$(tr '\n' ' ' < "$out/cold.txt")]"
echo "clone, QEMU -incoming start -> cont -> wait-ready (median of $rounds): $(stats "$out/ready.txt")  [$(tr '\n' ' ' < "$out/ready.txt")]"
echo "clone, ... -> every restored step acked (median of $rounds):          $(stats "$out/restored.txt")  [$(tr '\n' ' ' < "$out/restored.txt")]"
