#!/bin/sh
# stereod.sh - stereod against its floor: a minimal C echo server on loopback TCP
# (tests/helpers/echo_floor.c) driven by the same load generator (tests/helpers/ndjson_load.c).
# Floor and ours alternate over $ROUNDS rounds; each load prints floor, ours and the per-round
# ratio as median (min-max). Asserts nothing.
set -eu
top=${STEREO_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${STEREO_BIN:-$top/stereo}
t=${STEREO_T:-$top/build/t}
secs_ms=${BENCH_MS:-1000}
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

. "$top/tests/bench/lib.sh"
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

echo "stereod benchmark: $ROUNDS rounds of ${secs_ms} ms per load, floor and ours alternating, loopback TCP, $(nproc) CPUs"
# bench LABEL TARGET CONNS DEPTH: floor and ours in alternation, then one row
bench() {
	fs="" os="" rs=""
	r=0
	while [ $r -lt "$ROUNDS" ]; do
		f=$(load "$FLOOR" "$3" "$4" "$PING" =)
		o=$(load "$OURS" "$3" "$4" "$PING" "$PONG")
		fs="$fs $f" os="$os $o" rs="$rs $(ratio "$o" "$f")"
		r=$((r + 1))
	done
	# shellcheck disable=SC2086
	printf '%-34s floor %s  ours %s replies/s  ratio %s (target %s)%s\n' "$1" \
		"$(summary $fs)" "$(summary $os)" "$(summary $rs)" "$2" "$(verdict $rs)"
}
bench "ping, 1 conn, 1 in flight" ">= 0.8" 1 1
bench "ping, 1 conn, 64 in flight" ">= 0.3" 1 64
bench "ping, 50 conns, 1 in flight each" ">= 0.5" 50 1

SECRET='{"type":"inject_secret","payload":{"name":"bench","value":"s3cret-value","mode":384}}'
ACK='{"type":"ack","payload":{"reply_to":"inject_secret","ok":true}}'
mkdir -p "$work/atomic"
if [ "$(id -u)" = 0 ]; then mount -t tmpfs tmpfs "$work/atomic" 2>/dev/null && umount_atomic=1 || true; fi
fs="" os="" rs=""
r=0
while [ $r -lt "$ROUNDS" ]; do
	f=$("$t/ndjson_load" atomic "$work/atomic" "$secs_ms" | awk '{print $2}')
	o=$(load "$OURS" 1 1 "$SECRET" "$ACK")
	fs="$fs $f" os="$os $o" rs="$rs $(ratio "$o" "$f")"
	r=$((r + 1))
done
[ -n "${umount_atomic:-}" ] && umount "$work/atomic"
# shellcheck disable=SC2086
printf '%-34s floor %s  ours %s per s  ratio %s (floor: atomic_write_at loop on tmpfs)\n' \
	"inject_secret, 1 conn ($secrets_fs)" "$(summary $fs)" "$(summary $os)" "$(summary $rs)"

# start-up and idle memory: the floor is the echo server's own exec-to-listening time
fu="" ou="" fr="" or_="" fa="" oa=""
r=0
while [ $r -lt "$ROUNDS" ]; do
	set -- $("$t/ndjson_load" startup "$t/echo_floor" --ready-fd 3)
	fu="$fu $2" fr="$fr $4" fa="$fa $6"
	rm -rf "$work/root2" && mkdir -p "$work/root2"
	set -- $("$t/ndjson_load" startup "$bin" stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:0 \
		--root "$work/root2" --ready-fd 3 --allow-disk-secrets --poweroff none)
	ou="$ou $2" or_="$or_ $4" oa="$oa $6"
	r=$((r + 1))
done
# shellcheck disable=SC2086
{
printf '%-34s floor %s  ours %s us (target <= 10000 us)\n' "exec to ready" "$(summary $fu)" "$(summary $ou)"
printf '%-34s floor %s  ours %s kB (target <= 1024 kB)\n' "idle RSS after ready" "$(summary $fr)" "$(summary $or_)"
printf '%-34s floor %s  ours %s kB (the rest: shared binary pages)\n' "  of which anonymous" "$(summary $fa)" "$(summary $oa)"
}
