#!/bin/sh
# clis.sh - what one CLI invocation costs in a script: N runs each of stereo-host ping (with the
# hello that learns ids, and --no-id), stereo-host health --json and stereo-health against a
# local stereod. Floor: exec of the same static binary doing nothing but print its version
# (process start-up, which no client can avoid). Figures only; nothing is asserted.
set -eu
top=${STEREO_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${STEREO_BIN:-$top/stereo}
n=${N:-200}
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
# per_run LABEL CMD...: microseconds per invocation, the best mean of 3 rounds of n runs (the
# machine is shared and noisy: the best round is the least disturbed one)
per_run() {
	label=$1
	shift
	best=""
	for round in 1 2 3; do
		t0=$(ns_now)
		k=0
		while [ $k -lt "$n" ]; do
			"$@" >/dev/null
			k=$((k + 1))
		done
		t1=$(ns_now)
		us=$(( (t1 - t0) / n / 1000 ))
		if [ -z "$best" ] || [ "$us" -lt "$best" ]; then best=$us; fi
	done
	echo "$best"
}

floor=$(per_run floor "$bin" --version)
noid=$(per_run noid "$bin" stereo-host --tcp "$addr" --no-id ping)
ping=$(per_run ping "$bin" stereo-host --tcp "$addr" ping)
health=$(per_run health "$bin" stereo-host --tcp "$addr" --json health)
probe=$(per_run probe "$bin" stereo-health --socket "$sock")
ratio() { awk -v a="$1" -v b="$floor" 'BEGIN { printf "%.2f", a / b }'; }
echo "floor: exec of the static binary (stereo --version): ${floor} us per run (n=$n)"
echo "stereo-host --no-id ping (1 round trip):  ${noid} us  ratio $(ratio "$noid")"
echo "stereo-host ping (hello + ping):          ${ping} us  ratio $(ratio "$ping")"
echo "stereo-host --json health:                ${health} us  ratio $(ratio "$health")"
echo "stereo-health (unix socket HTTP):         ${probe} us  ratio $(ratio "$probe")"
