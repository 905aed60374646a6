#!/bin/sh
# stereod.sh - stereod against its floor (shared/spec/performance.md): a minimal C echo server
# on loopback TCP (tests/helpers/echo_floor.c) driven by the same load generator
# (tests/helpers/ndjson_load.c). Prints floor, ours and the ratio for each load; asserts nothing.
set -eu
top=${STEREO_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${STEREO_BIN:-$top/stereo}
t=${STEREO_T:-$top/build/t}
secs_ms=${BENCH_MS:-2000}
work=$(mktemp -d)
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

start() {   # start NAME CMD...: run it with a readiness fd, set ADDR
	name=$1
	shift
	"$@" 3>"$work/$name.ready" 2>"$work/$name.log" &
	pids="$pids $!"
	i=0
	until grep -q : "$work/$name.ready" 2>/dev/null; do
		i=$((i + 1))
		[ $i -lt 400 ] || { echo "bench: $name did not start" >&2; cat "$work/$name.log" >&2; exit 1; }
		sleep 0.025
	done
	ADDR=$(head -1 "$work/$name.ready")
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
row() {     # row LABEL FLOOR OURS UNIT
	printf '%-34s floor %10s  ours %10s  ratio %s %s\n' "$1" "$2" "$3" "$(ratio "$3" "$2")" "$4"
}

PING='{"type":"ping"}'
PONG='{"type":"pong"}'
start floor "$t/echo_floor" --ready-fd 3
FLOOR=$ADDR
mkdir -p "$work/root"
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
	# as root: a private mount namespace where stereod mounts its tmpfs secrets dir, as in a guest
	set -- unshare -m --propagation private "$bin" stereod
	secrets_fs=tmpfs
else
	set -- "$bin" stereod --allow-disk-secrets
	secrets_fs=disk
fi
set -- "$@" --listen-mode tcp --allow-local-peers --listen 127.0.0.1:0 --root "$work/root" --ready-fd 3 --poweroff none
start ours "$@"
OURS=$ADDR

load() { "$t/ndjson_load" load "$1" "$2" "$3" "$secs_ms" "$4" "$5" | awk '{print $2}'; }

echo "stereod benchmark: ${secs_ms} ms per load, loopback TCP, $(nproc) CPUs"
f=$(load "$FLOOR" 1 1 "$PING" =); o=$(load "$OURS" 1 1 "$PING" "$PONG")
row "ping, 1 conn, 1 in flight" "$f" "$o" "replies/s (target >= 0.8)"
f=$(load "$FLOOR" 1 64 "$PING" =); o=$(load "$OURS" 1 64 "$PING" "$PONG")
row "ping, 1 conn, 64 in flight" "$f" "$o" "replies/s (target >= 0.3)"
f=$(load "$FLOOR" 50 1 "$PING" =); o=$(load "$OURS" 50 1 "$PING" "$PONG")
row "ping, 50 conns, 1 in flight each" "$f" "$o" "replies/s (target >= 0.5)"

SECRET='{"type":"inject_secret","payload":{"name":"bench","value":"s3cret-value","mode":384}}'
ACK='{"type":"ack","payload":{"reply_to":"inject_secret","ok":true}}'
o=$(load "$OURS" 1 1 "$SECRET" "$ACK")
mkdir -p "$work/atomic"
if [ "$(id -u)" = 0 ]; then mount -t tmpfs tmpfs "$work/atomic" 2>/dev/null && umount_atomic=1 || true; fi
f=$("$t/ndjson_load" atomic "$work/atomic" "$secs_ms" | awk '{print $2}')
[ -n "${umount_atomic:-}" ] && umount "$work/atomic"
row "inject_secret, 1 conn ($secrets_fs)" "$f" "$o" "per s (floor: atomic_write_at loop on tmpfs)"

# start-up and idle memory: the floor is the echo server's own exec-to-listening time
fs=$("$t/ndjson_load" startup "$t/echo_floor" --ready-fd 3)
mkdir -p "$work/root2"
os=$("$t/ndjson_load" startup "$bin" stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:0 --root "$work/root2" \
	--ready-fd 3 --allow-disk-secrets --poweroff none)
row "exec to ready (us)" "$(echo "$fs" | awk '{print $2}')" "$(echo "$os" | awk '{print $2}')" "us (target <= 10000 us)"
row "idle RSS after ready (kB)" "$(echo "$fs" | awk '{print $4}')" "$(echo "$os" | awk '{print $4}')" "kB (target <= 1024 kB)"
row "  of which anonymous (kB)" "$(echo "$fs" | awk '{print $6}')" "$(echo "$os" | awk '{print $6}')" "kB (the rest: shared binary pages)"
