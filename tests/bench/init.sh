#!/bin/sh
# init.sh - what supervision costs, inside a PID namespace (unshare -fp --mount-proc), the root
# on tmpfs as /run is in the guest. Figures only; nothing is asserted.
#  1. start N services and stop them all: floor = a shell that starts N `sleep` processes and
#     waits until all exist, then kills them; ours = init from exec to "N running" in its status
#     file, then SIGTERM until init has exited (reverse-order stop included).
#  2. restart rate of a service that exits at once (backoff 1ms, no quarantine): floor = a
#     shell loop running /bin/true; ours = restarts counted by init in the same time.
# Floor and ours alternate over $ROUNDS rounds: median (min-max) of each and of the ratio.
set -eu
top=${STEREO_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${STEREO_BIN:-$top/stereo}
n=${INIT_BENCH_SERVICES:-50}
secs=2
. "$top/tests/bench/lib.sh"
base=$(mktemp -d /dev/shm/stereo-init-bench.XXXXXX 2>/dev/null || mktemp -d)
upid=""
cleanup() {
	if [ -n "$upid" ]; then
		kill -KILL "$(cat /proc/$upid/task/$upid/children 2>/dev/null)" 2>/dev/null || true
		wait "$upid" 2>/dev/null || true
	fi
	rm -rf "$base"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ms_now() { date +%s%N | cut -c1-13; }

# --- 1. start and stop N services -------------------------------------------------------------
bench_ss_floor() {
t0=$(ms_now)
unshare -fp --mount-proc sh -c '
	i=0; while [ $i -lt '"$n"' ]; do sleep 1000 & i=$((i + 1)); done
	until [ "$(ls /proc | grep -c "^[0-9]")" -gt '"$n"' ]; do :; done
	kill -TERM -1 2>/dev/null; wait' 2>/dev/null || true
floor_ss=$(( $(ms_now) - t0 ))
}

bench_ss_ours() {
r=$base/ss
rm -rf "$r"
mkdir -p "$r/etc/stereos/services"
i=0
while [ $i -lt "$n" ]; do
	printf 'exec=/bin/sleep 1000\n' > "$r/etc/stereos/services/s$i.conf"
	# a chain s0 <- s1 <- ... so the stop runs in reverse dependency order
	[ $i -gt 0 ] && printf 'after=s%d\n' $((i - 1)) >> "$r/etc/stereos/services/s$i.conf"
	i=$((i + 1))
done
t0=$(ms_now)
unshare -fp --mount-proc "$bin" init --root "$r" --stop-timeout 5s >"$base/ss.log" 2>&1 &
upid=$!
until [ -f "$r/run/stereos/init.status" ] &&
	[ "$(grep -o '"state":"running"' "$r/run/stereos/init.status" | wc -l)" -eq "$n" ]; do :; done
t1=$(ms_now)
kill -TERM "$(cat /proc/$upid/task/$upid/children)"
wait "$upid" || true
upid=""
t2=$(ms_now)
ours_start=$((t1 - t0))
ours_stop=$((t2 - t1))
}

# --- 2. restart rate ---------------------------------------------------------------------------
bench_rate_floor() {
floor_rate=$(unshare -fp --mount-proc sh -c '
	end=$(( $(date +%s) + '"$secs"' )); c=0
	while [ "$(date +%s)" -lt $end ]; do /bin/true; c=$((c + 1)); done; echo $((c / '"$secs"'))')
}

bench_rate_ours() {
r=$base/rs
rm -rf "$r"
mkdir -p "$r/etc/stereos/services"
printf 'exec=/bin/true\n' > "$r/etc/stereos/services/crash.conf"
unshare -fp --mount-proc "$bin" init --root "$r" --backoff-min 1ms --backoff-max 1ms \
	--quarantine 32/1ms >"$base/rs.log" 2>&1 &
upid=$!
until [ -f "$r/run/stereos/init.status" ]; do :; done
a=$(sed 's/.*"restarts":\([0-9]*\).*/\1/' "$r/run/stereos/init.status")
t0=$(ms_now)
until [ $(( $(ms_now) - t0 )) -ge $((secs * 1000)) ]; do sleep 0.1; done
b=$(sed 's/.*"restarts":\([0-9]*\).*/\1/' "$r/run/stereos/init.status")
t1=$(ms_now)
kill -TERM "$(cat /proc/$upid/task/$upid/children)"
wait "$upid" || true
upid=""
ours_rate=$(( (b - a) * 1000 / (t1 - t0) ))
}

fss="" oss="" ost="" rss="" frt="" ort="" rrt=""
k=0
while [ $k -lt "$ROUNDS" ]; do
	bench_ss_floor
	bench_ss_ours
	bench_rate_floor
	bench_rate_ours
	fss="$fss $floor_ss" oss="$oss $ours_start" ost="$ost $ours_stop"
	rss="$rss $(ratio $((ours_start + ours_stop)) "$floor_ss")"
	frt="$frt $floor_rate" ort="$ort $ours_rate" rrt="$rrt $(ratio "$ours_rate" "$floor_rate")"
	k=$((k + 1))
done

# shellcheck disable=SC2086
{
echo "init, $ROUNDS rounds alternating, median (min-max):"
echo "start+stop $n services: floor (sh: spawn $n sleeps, kill them) $(summary $fss) ms; init: all running after $(summary $oss) ms, stopped in reverse order after $(summary $ost) ms"
echo "ratio ours/floor (start+stop): $(summary $rss)"
echo "restart rate of a service exiting at once: floor (sh loop of /bin/true) $(summary $frt)/s; init $(summary $ort) restarts/s (status file rewritten each time)"
echo "ratio ours/floor (restarts): $(summary $rrt)$(verdict $rrt)"
}
