#!/bin/sh
# snapshot.sh - what the snapshot messages cost through stereod, one request at a time on one
# NDJSON connection (as the host sends them around a snapshot):
#   floor: ping, the cheapest round trip stereod has;
#   ours:  restored (clock in sync, 64 bytes of entropy, generation, stale-connection sweep),
#          snapshot_prepare of a loop-mounted ext4 (sync + FIFREEZE) followed by snapshot_abort
#          (FITHAW), per pair;
#   and restore detection: time from a BOOTTIME jump to the lifecycle push (bounded by the 1 s
#   detector tick; reported, not a target).
# The wall clock is a fake-clock file: a benchmark never steps the real clock.
# Figures only; nothing is asserted.
set -eu
top=${STEREO_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${STEREO_BIN:-$top/stereo}
t=${STEREO_T:-$top/build/t}
out=$top/build/bench/snapshot
rm -rf "$out"
mkdir -p "$out/root/etc" "$out/root/dev" "$out/root/mnt"
R=$out/root
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\nadmin:x:1001:\n' >"$R/etc/group"
ln -s /dev/random "$R/dev/random"
export STEREO_FAKE_CLOCK=$out/clock
echo "0 0" >"$STEREO_FAKE_CLOCK"
truncate -s 32M "$out/fs.img"
mkfs.ext4 -q -F "$out/fs.img"
n=${N:-300}
pid=""
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null
	wait 2>/dev/null
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

unshare -m --propagation private sh -c 'mount -o loop "$0" "$1" && shift && exec "$@"' \
	"$out/fs.img" "$R/mnt" "$bin" stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:0 --root "$R" \
	--ready-fd 3 --allow-disk-secrets 3>"$out/ready" 2>"$out/log" &
pid=$!
i=0
while ! grep -q . "$out/ready" 2>/dev/null; do
	i=$((i + 1))
	[ $i -lt 400 ] || { cat "$out/log" >&2; exit 1; }
	sleep 0.025
done
addr=$(head -1 "$out/ready")

ns_now() { date +%s%N; }
# per ITEMS FILE: microseconds per request for the requests in FILE, one at a time
per() {
	t0=$(ns_now)
	"$t/ndjson_client" --seq --timeout 30000 "$addr" <"$2" >"$out/replies"
	t1=$(ns_now)
	if grep -q '"ok":false' "$out/replies"; then
		echo "snapshot bench: a request failed:" >&2
		grep '"ok":false' "$out/replies" | head -1 >&2
		exit 1
	fi
	echo $(( (t1 - t0) / 1000 / $1 ))
}

for i in $(seq $n); do echo '{"type":"ping"}'; done >"$out/ping"
e=$(head -c 64 /dev/urandom | base64 -w0)
for i in $(seq $n); do
	echo "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(ns_now),\"entropy_b64\":\"$e\"}}"
done >"$out/restored"
m=$((n / 3))
for i in $(seq $m); do
	echo '{"type":"snapshot_prepare","payload":{"freeze":["/mnt"],"timeout_ms":60000}}'
	echo '{"type":"snapshot_abort"}'
done >"$out/freeze"

# detection first: a restore within 2 s of another is coalesced
"$t/ndjson_client" --timeout 10000 --lines 2 "$addr" <<EOF >"$out/push" &
{"type":"subscribe"}
EOF
sub=$!
while ! grep -q subscribe "$out/push" 2>/dev/null; do sleep 0.01; done
t0=$(ns_now)
echo "0 30000000000" >"$STEREO_FAKE_CLOCK"
wait $sub
t1=$(ns_now)
detect=$(( (t1 - t0) / 1000000 ))

floor=$(per "$n" "$out/ping")
restored=$(per "$n" "$out/restored")
freeze=$(per "$m" "$out/freeze")

echo "floor    ping round trip:                  ${floor} us"
echo "ours     restored round trip:              ${restored} us  ($(awk "BEGIN{printf \"%.1f\", $restored/$floor}")x floor)"
echo "ours     prepare(FIFREEZE)+abort(FITHAW):  ${freeze} us  ($(awk "BEGIN{printf \"%.1f\", $freeze/$floor}")x floor)"
echo "detect   BOOTTIME jump -> lifecycle push:  ${detect} ms  (1 s detector tick)"
