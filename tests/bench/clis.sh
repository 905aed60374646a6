#!/bin/sh
# clis.sh - what one CLI invocation costs in a script: N runs each of stereo-host ping (with the
# hello that learns ids, and --no-id), stereo-host health --json and stereo-health against a
# local stereod. Floor: exec of the same static binary doing nothing but print its version
# (process start-up, which no client can avoid). Floor and ours alternate over $ROUNDS rounds of n
# runs each: median (min-max) of the per-round ratio. Figures only; nothing is asserted.
set -eu
top=${STEREO_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${STEREO_BIN:-$top/stereo}
n=${N:-60}
. "$top/tests/bench/lib.sh"
out=$top/build/bench/clis
rm -rf "$out"
mkdir -p "$out/root"
pid=""
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin" stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:0 --root "$out/root" --allow-disk-secrets \
	--poweroff none --ready-fd 3 3>"$out/ready" 2>"$out/stereod.log" &
pid=$!
i=0
until grep -q : "$out/ready" 2>/dev/null; do
	i=$((i + 1))
	[ $i -lt 200 ] || { echo "clis: stereod did not start" >&2; exit 1; }
	sleep 0.05
done
addr=$(head -n1 "$out/ready")
sock=$out/root/run/stereos/stereosd.sock

ns_now() { date +%s%N; }
# per_run CMD...: microseconds per invocation over n runs
per_run() {
	t0=$(ns_now)
	k=0
	while [ $k -lt "$n" ]; do
		"$@" >/dev/null
		k=$((k + 1))
	done
	t1=$(ns_now)
	echo $(( (t1 - t0) / n / 1000 ))
}

fl="" a="" b="" c="" d="" ra="" rb="" rc="" rd=""
r=0
while [ $r -lt "$ROUNDS" ]; do
	f=$(per_run "$bin" --version)
	x=$(per_run "$bin" stereo-host --tcp "$addr" --no-id ping)
	y=$(per_run "$bin" stereo-host --tcp "$addr" ping)
	z=$(per_run "$bin" stereo-host --tcp "$addr" --json health)
	w=$(per_run "$bin" stereo-health --socket "$sock")
	fl="$fl $f" a="$a $x" b="$b $y" c="$c $z" d="$d $w"
	ra="$ra $(ratio "$x" "$f")" rb="$rb $(ratio "$y" "$f")" rc="$rc $(ratio "$z" "$f")" rd="$rd $(ratio "$w" "$f")"
	r=$((r + 1))
done
# shellcheck disable=SC2086
{
echo "floor: exec of the static binary (stereo --version): $(summary $fl) us per run (n=$n, $ROUNDS rounds)"
echo "stereo-host --no-id ping (1 round trip):  $(summary $a) us  ratio $(summary $ra)"
echo "stereo-host ping (hello + ping):          $(summary $b) us  ratio $(summary $rb)"
echo "stereo-host --json health:                $(summary $c) us  ratio $(summary $rc)"
echo "stereo-health (unix socket HTTP):         $(summary $d) us  ratio $(summary $rd)"
}
