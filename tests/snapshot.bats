#!/usr/bin/env bats
# snapshot.bats - stereod's snapshot subsystem: prepare/abort (freeze hooks, FIFREEZE on real
# filesystems, the watchdog), the restore pipeline step by step, restore detection and metrics.
# stereod runs in mount, UTS or network namespaces where a test touches real kernel state; the
# wall clock is always a fake-clock file (CLOCK_REALTIME has no namespace).
load helpers
load helpers/stereod

setup() {
	stereod_setup
	mkdir -p "$R/dev" "$R/proc/sys/vm" "$R/run/stereos"
	ln -s /dev/random "$R/dev/random"
	: >"$R/proc/sys/vm/drop_caches"
	export STEREO_FAKE_CLOCK=$BATS_TEST_TMPDIR/clock
	CLOCK=$STEREO_FAKE_CLOCK
	NS=()                          # a prefix that reaches the daemon's network namespace
	WRITER=
}

teardown() {
	# a writer blocked on a frozen filesystem ignores SIGKILL: thaw from its namespace first,
	# or a failed test would leave bats waiting on it for ever
	if [ -n "$WRITER" ] && [ -d "/proc/$WRITER" ]; then
		nsenter -m -t "$WRITER" fsfreeze -u "$R/mnt" 2>/dev/null || true
	fi
	[ -n "$WRITER" ] && kill "$WRITER" 2>/dev/null || true
	stop_stereod                   # stereod thaws what it froze on the way out
}

# start_snap [WRAPPER...]: stereod on the test root, inside WRAPPER (e.g. unshare -m).
start_snap() {
	[ -e "$CLOCK" ] || echo "0 0" >"$CLOCK"
	rm -f "$BATS_TEST_TMPDIR/ready"
	"$@" stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:0 --root "$R" --ready-fd 3 \
		--allow-disk-secrets 3>"$BATS_TEST_TMPDIR/ready" 2>>"$LOG" &
	STEREOD_PID=$!
	wait_ready
}

# req JSON: one request; its reply in $reply.
req() { reply=$("${NS[@]}" "$STEREO_T/ndjson_client" "$ADDR" <<<"$1"); }

# step NAME: the first step object of that name in $reply.
step() { jq -c --arg n "$1" '[.payload.steps[] | select(.step == $n)][0]' <<<"$reply"; }

now_ns() { date +%s%N; }

# start_snap_with_ext4: a fresh ext4 image loop-mounted at $R/mnt in stereod's mount namespace.
start_snap_with_ext4() {
	truncate -s 16M "$BATS_TEST_TMPDIR/fs.img"
	mkfs.ext4 -q -F "$BATS_TEST_TMPDIR/fs.img"
	mkdir -p "$R/mnt"
	start_snap unshare -m --propagation private sh -c \
		'mount -o loop "$0" "$1" && shift && exec "$@"' "$BATS_TEST_TMPDIR/fs.img" "$R/mnt"
	grep -q " $R/mnt " "/proc/$STEREOD_PID/mounts"
}

# write_in_ns: append to $R/mnt/file from stereod's mount namespace, then touch $BATS_TEST_TMPDIR/written.
write_in_ns() {
	nsenter -m -t "$STEREOD_PID" sh -c 'echo data >"$0/mnt/file" && echo done >"$1"' "$R" \
		"$BATS_TEST_TMPDIR/written" &
	WRITER=$!
}

# blocked PID: the process sleeps uninterruptibly (as a writer on a frozen superblock does).
blocked() { [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = D ]; }

# subscribe FILE: a subscriber printing its ack and the next push to FILE.
subscribe() {
	"${NS[@]}" "$STEREO_T/ndjson_client" --timeout 10000 --lines 2 "$ADDR" \
		<<<'{"type":"subscribe"}' >"$1" &
	SUB=$!
	wait_file "$1" '"reply_to":"subscribe"'
}

@test "snapshot_prepare freezes a loop-mounted ext4: a write blocks until snapshot_abort thaws" {
	start_snap_with_ext4
	req '{"type":"snapshot_prepare","payload":{"freeze":["/mnt"],"timeout_ms":60000}}'
	assert_equal "$(jq -r .payload.ok <<<"$reply")" true
	assert_equal "$(jq -c .payload.frozen <<<"$reply")" '["/mnt"]'
	assert_equal "$(step freeze | jq -r .ok)" true

	write_in_ns
	wait_for blocked "$WRITER"
	assert_file_not_exists "$BATS_TEST_TMPDIR/written"

	req '{"type":"snapshot_abort"}'
	assert_equal "$(jq -r .payload.ok <<<"$reply")" true
	assert_equal "$(step thaw | jq -c .thawed)" '["/mnt"]'
	wait_file "$BATS_TEST_TMPDIR/written"
	assert_equal "$(nsenter -m -t "$STEREOD_PID" cat "$R/mnt/file")" data
}

@test "the watchdog thaws a frozen filesystem when neither abort nor restore arrives" {
	start_snap_with_ext4
	req '{"type":"snapshot_prepare","payload":{"freeze":["/mnt"],"timeout_ms":300}}'
	assert_equal "$(jq -r .payload.timeout_ms <<<"$reply")" 300
	assert_equal "$(jq -c .payload.frozen <<<"$reply")" '["/mnt"]'
	write_in_ns
	wait_file "$BATS_TEST_TMPDIR/written"
	wait_file "$LOG" 'snapshot watchdog: thawed'
	req '{"type":"get_metrics"}'
	assert_equal "$(jq -r .payload.snapshot_prepared <<<"$reply")" false
}

@test "a stereod killed while frozen leaves the thaw to its backstop child" {
	start_snap_with_ext4
	req '{"type":"snapshot_prepare","payload":{"freeze":["/mnt"],"timeout_ms":3000}}'
	assert_equal "$(jq -c .payload.frozen <<<"$reply")" '["/mnt"]'
	write_in_ns
	wait_for blocked "$WRITER"
	kill -KILL "$STEREOD_PID"
	wait "$STEREOD_PID" || true
	STEREOD_PID=
	wait_file "$BATS_TEST_TMPDIR/written"          # thawed 2 s after the watchdog's time
	refute grep -q 'snapshot watchdog: thawed' "$LOG"
}

@test "restored thaws what snapshot_prepare froze before anything else" {
	start_snap_with_ext4
	req '{"type":"snapshot_prepare","payload":{"freeze":["/mnt","/mnt/."],"timeout_ms":60000}}'
	assert_equal "$(jq -c '[.payload.steps[] | select(.step == "freeze") | .ok]' <<<"$reply")" '[true,true]'
	assert_equal "$(jq -c .payload.frozen <<<"$reply")" '["/mnt"]'
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"\"}}"
	assert_equal "$(jq -r '.payload.steps[0].step' <<<"$reply")" thaw
	assert_equal "$(step thaw | jq -c .thawed)" '["/mnt"]'
	nsenter -m -t "$STEREOD_PID" sh -c 'echo data >"$0/mnt/file"' "$R"
}

@test "freeze hooks run by name with freeze, and in reverse with thaw" {
	mkdir -p "$R/etc/stereos/hooks/freeze.d"
	for h in 20-b 10-a 30-c; do
		printf '#!/bin/sh\necho "%s $1" >>"%s"\n' "$h" "$BATS_TEST_TMPDIR/hooks.log" \
			>"$R/etc/stereos/hooks/freeze.d/$h"
		chmod +x "$R/etc/stereos/hooks/freeze.d/$h"
	done
	printf '#!/bin/sh\necho never >>"%s"\n' "$BATS_TEST_TMPDIR/hooks.log" >"$R/etc/stereos/hooks/freeze.d/40-not-executable"
	start_snap
	req '{"type":"snapshot_prepare"}'
	assert_equal "$(jq -c '[.payload.steps[] | select(.step == "freeze_hook") | .name]' <<<"$reply")" \
		'["10-a","20-b","30-c"]'
	req '{"type":"snapshot_abort"}'
	assert_equal "$(jq -c '[.payload.steps[] | select(.step == "thaw_hook") | .name]' <<<"$reply")" \
		'["30-c","20-b","10-a"]'
	assert_equal "$(cat "$BATS_TEST_TMPDIR/hooks.log" | tr '\n' ,)" \
		"10-a freeze,20-b freeze,30-c freeze,30-c thaw,20-b thaw,10-a thaw,"
}

@test "a freeze hook that fails or outlives the timeout is reported and the rest still run" {
	mkdir -p "$R/etc/stereos/hooks/freeze.d"
	printf '#!/bin/sh\nexit 3\n' >"$R/etc/stereos/hooks/freeze.d/10-fails"
	printf '#!/bin/sh\nexec sleep 100\n' >"$R/etc/stereos/hooks/freeze.d/20-hangs"
	printf '#!/bin/sh\necho ran >"%s"\n' "$BATS_TEST_TMPDIR/ran" >"$R/etc/stereos/hooks/freeze.d/30-ok"
	chmod +x "$R/etc/stereos/hooks/freeze.d/"*
	start_snap
	req '{"type":"snapshot_prepare","payload":{"timeout_ms":500,"drop_caches":true}}'
	assert_equal "$(jq -r .payload.ok <<<"$reply")" false
	run jq -c '[.payload.steps[] | select(.step == "freeze_hook") | {name, ok, error}]' <<<"$reply"
	assert_output '[{"name":"10-fails","ok":false,"error":"exit status 3"},{"name":"20-hangs","ok":false,"error":"timed out, killed"},{"name":"30-ok","ok":false,"error":"timed out, killed"}]'
	assert_equal "$(step drop_caches | jq -r .ok)" true
	assert_equal "$(cat "$R/proc/sys/vm/drop_caches")" 3
	assert_equal "$(jq -r .payload.error <<<"$reply")" \
		"3 steps failed: freeze hook 10-fails: exit status 3; freeze hook 20-hangs: timed out, killed; freeze hook 30-ok: timed out, killed"
}

@test "snapshot_prepare reports each filesystem it cannot freeze and still drops caches" {
	mkdir -p "$R/tmpfs"
	start_snap unshare -m --propagation private sh -c 'mount -t tmpfs none "$0" && exec "$@"' "$R/tmpfs"
	grep -q " $R/tmpfs " "/proc/$STEREOD_PID/mounts"
	rm "$R/proc/sys/vm/drop_caches"
	req '{"type":"snapshot_prepare","payload":{"freeze":["/missing","relative","/tmpfs"],"drop_caches":true}}'
	assert_equal "$(jq -r .payload.ok <<<"$reply")" false
	run jq -c '[.payload.steps[] | select(.step == "freeze" or .step == "drop_caches") | .ok]' <<<"$reply"
	assert_output '[false,false,false,false]'
	assert_equal "$(jq -r '.payload.steps[] | select(.path == "/tmpfs") | .error' <<<"$reply")" \
		"FIFREEZE: filesystem cannot be frozen"
	assert_equal "$(jq -r .payload.frozen <<<"$reply")" "[]"
}

@test "snapshot_prepare rejects a bad payload and does nothing" {
	start_snap
	for p in '[]' '{"freeze":"/mnt"}' '{"freeze":[1]}' '{"timeout_ms":0}' '{"timeout_ms":"5"}' \
		'{"drop_caches":1}'; do
		req "{\"type\":\"snapshot_prepare\",\"payload\":$p}"
		assert_equal "$(jq -r .payload.ok <<<"$reply")" false
		assert_equal "$(jq -r .payload.steps <<<"$reply")" null
	done
	assert_equal "$(jq -r .payload.error <<<"$reply")" "drop_caches must be a boolean"
	assert_equal "$(cat "$R/proc/sys/vm/drop_caches")" ""
}

@test "restored steps the wall clock only when it is skewed beyond 100 ms" {
	echo "-3600000000000 0" >"$CLOCK"             # the guest is an hour behind
	start_snap
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"\"}}"
	assert_equal "$(step clock | jq -r .stepped)" true
	assert [ "$(step clock | jq -r .skew_ms)" -ge 3599000 ]
	off=$(awk '{print $1}' "$CLOCK")
	assert [ "${off#-}" -lt 1000000000 ]          # now within a second of the host's time
	# 90 ms ahead when sent, less the time in flight: within the threshold, left alone
	echo "0 0" >"$CLOCK"
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(($(now_ns) + 90000000)),\"entropy_b64\":\"\"}}"
	assert_equal "$(step clock | jq -r .stepped)" false
	assert_equal "$(cat "$CLOCK")" "0 0"
}

@test "restored adds the host's entropy to the real /dev/random and reseeds the CRNG" {
	start_snap
	e=$(head -c 64 /dev/urandom | base64 -w0)
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"$e\"}}"
	run step entropy
	assert_output --partial '"bytes":64,"reseeded":true'
	assert_output --partial '"ok":true'
	assert [ "$(step entropy | jq -r .entropy_avail)" -gt 0 ]
}

@test "restored writes the generation, hostname and machine-id" {
	start_snap unshare -u
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"AAAA\",\"generation\":41,\"hostname\":\"clone-7\",\"machine_id\":\"0123456789ABCDEF0123456789abcdef\"}}"
	assert_equal "$(jq -r .payload.ok <<<"$reply")" true
	assert_equal "$(cat "$R/run/stereos/generation")" 41
	assert_equal "$(cat "$R/etc/hostname")" clone-7
	assert_equal "$(nsenter -u -t "$STEREOD_PID" hostname)" clone-7
	assert_equal "$(cat "$R/etc/machine-id")" 0123456789abcdef0123456789abcdef
	assert_equal "$(stat -c %a "$R/etc/machine-id")" 444
	assert_not_equal "$(hostname)" clone-7
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"\"}}"
	assert_equal "$(step generation | jq -c '[.previous, .generation]')" '[41,42]'
	assert_equal "$(cat "$R/run/stereos/generation")" 42
}

@test "restored reports every failing step and still runs the rest" {
	rm "$R/dev/random"
	mkdir "$R/etc/hostname" "$R/etc/machine-id"   # directories: neither file can be replaced
	echo "-3600000000000 0" >"$CLOCK"
	start_snap unshare -u
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"AAAA\",\"generation\":5,\"hostname\":\"h\",\"machine_id\":\"0123456789abcdef0123456789abcdef\",\"network\":{\"interface\":\"nosuch0\"}}}"
	assert_equal "$(jq -r .payload.ok <<<"$reply")" false
	run jq -c '[.payload.steps[] | {(.step): .ok}] | add' <<<"$reply"
	assert_output '{"thaw":true,"clock":true,"entropy":false,"generation":true,"hostname":false,"machine_id":false,"network_link":false,"connections":true}'
	assert_equal "$(cat "$R/run/stereos/generation")" 5
	assert_equal "$(nsenter -u -t "$STEREOD_PID" hostname)" h      # sethostname ran though the file failed
	run jq -r .payload.error <<<"$reply"
	assert_output --regexp '^4 steps failed: entropy: open /dev/random: .*; hostname: .*; machine_id: .*; network_link: no interface nosuch0$'
}

@test "restored rejects bad fields, naming them, and does nothing" {
	start_snap
	t=$(now_ns)
	for p in '{}' '{"wall_clock_ns":-1,"entropy_b64":""}' "{\"wall_clock_ns\":$t}" \
		"{\"wall_clock_ns\":$t,\"entropy_b64\":\"!!\"}" \
		"{\"wall_clock_ns\":$t,\"entropy_b64\":\"\",\"generation\":-2}" \
		"{\"wall_clock_ns\":$t,\"entropy_b64\":\"\",\"hostname\":\"a b\"}" \
		"{\"wall_clock_ns\":$t,\"entropy_b64\":\"\",\"machine_id\":\"00000000000000000000000000000000\"}" \
		"{\"wall_clock_ns\":$t,\"entropy_b64\":\"\",\"network\":{\"interface\":\"eth0\",\"mac\":\"01:00:00:00:00:01\"}}" \
		"{\"wall_clock_ns\":$t,\"entropy_b64\":\"\",\"network\":{\"interface\":\"eth0\",\"addresses\":[\"10.0.0.1/33\"]}}"; do
		req "{\"type\":\"restored\",\"payload\":$p}"
		assert_equal "$(jq -r .payload.ok <<<"$reply")" false
		assert_equal "$(jq -r .payload.steps <<<"$reply")" null
	done
	req '{"type":"restored","payload":[]}'
	assert_equal "$(jq -r .payload.ok <<<"$reply")" false
	assert_file_not_exists "$R/run/stereos/generation"
}

@test "restored reconfigures MAC, MTU, addresses and routes over netlink" {
	start_snap unshare -n sh -c 'ip link set lo up && exec "$@"' _
	NS=(nsenter -n -t "$STEREOD_PID")
	nsenter -n -t "$STEREOD_PID" ip link add v0 type veth peer name v1
	nsenter -n -t "$STEREOD_PID" ip addr add 192.168.9.9/24 dev v0
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"\",\"network\":{\"interface\":\"v0\",\"mac\":\"02:fc:00:00:00:05\",\"mtu\":1400,\"addresses\":[\"10.20.0.5/24\",\"fd00::5/64\"],\"gateway\":\"10.20.0.1\",\"routes\":[{\"dst\":\"10.99.0.0/16\",\"via\":\"10.20.0.254\"}]}}}"
	assert_equal "$(jq -r .payload.ok <<<"$reply")" true
	run nsenter -n -t "$STEREOD_PID" ip -j addr show dev v0
	assert_equal "$(jq -r '.[0].address' <<<"$output")" 02:fc:00:00:00:05
	assert_equal "$(jq -r '.[0].mtu' <<<"$output")" 1400
	assert_equal "$(jq -c '[.[0].addr_info[] | select(.scope == "global") | "\(.local)/\(.prefixlen)"]' <<<"$output")" \
		'["10.20.0.5/24","fd00::5/64"]'
	run nsenter -n -t "$STEREOD_PID" ip -j route show
	assert_equal "$(jq -r '.[] | select(.dst == "default") | .gateway' <<<"$output")" 10.20.0.1
	assert_equal "$(jq -r '.[] | select(.dst == "10.99.0.0/16") | .gateway' <<<"$output")" 10.20.0.254
}

@test "a jump of CLOCK_BOOTTIME against CLOCK_MONOTONIC is detected as a restore" {
	echo "0 0" >"$CLOCK"
	start_snap
	req '{"type":"get_metrics"}'
	assert_equal "$(jq -r .payload.generation <<<"$reply")" 0
	subscribe "$BATS_TEST_TMPDIR/sub"
	echo "0 30000000000" >"$CLOCK"                # 30 s passed that MONOTONIC did not see
	wait "$SUB"
	assert_equal "$(sed -n 2p "$BATS_TEST_TMPDIR/sub" | jq -c .payload)" '{"state":"ready","message":"restored"}'
	assert_equal "$(cat "$R/run/stereos/generation")" 1
	grep -q 'msg="restore detected, recovered" source=clock' "$LOG"
}

@test "a wall-clock jump is a restore only while a snapshot is prepared" {
	echo "0 0" >"$CLOCK"
	start_snap
	echo "60000000000 0" >"$CLOCK"
	wait_file "$LOG" 'wall clock stepped'
	req '{"type":"get_metrics"}'
	assert_equal "$(jq -r .payload.restores <<<"$reply")" 0
	req '{"type":"snapshot_prepare","payload":{"timeout_ms":60000}}'
	subscribe "$BATS_TEST_TMPDIR/sub"
	echo "120000000000 0" >"$CLOCK"
	wait "$SUB"
	assert_equal "$(sed -n 2p "$BATS_TEST_TMPDIR/sub" | jq -r .payload.message)" restored
	req '{"type":"get_metrics"}'
	assert_equal "$(jq -c '.payload | [.generation, .restores, .snapshot_prepared]' <<<"$reply")" '[1,1,false]'
}

@test "a vmgenid uevent from root is detected as a restore" {
	start_snap unshare -n sh -c 'ip link set lo up && exec "$@"' _
	NS=(nsenter -n -t "$STEREOD_PID")
	subscribe "$BATS_TEST_TMPDIR/sub"
	# the kernel's vmgenid driver sends this on a VM generation change; fake it in our netns
	send_uevent() {
		nsenter -n -t "$STEREOD_PID" /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)
s.bind((0, 0))
s.sendto(sys.argv[1].replace(",", "\0").encode() + b"\0", (0, 1))' "$1"
	}
	send_uevent "change@/devices/x,ACTION=change,SUBSYSTEM=acpi,SOMETHING=1"
	send_uevent "change@/devices/LNXSYSTM:00/VMGENCTR:00,ACTION=change,SUBSYSTEM=acpi,NEW_VMGENID=1"
	wait "$SUB"
	assert_equal "$(sed -n 2p "$BATS_TEST_TMPDIR/sub" | jq -r .payload.message)" restored
	grep -q 'msg="restore detected, recovered" source=vmgenid' "$LOG"
	assert_equal "$(cat "$R/run/stereos/generation")" 1
}

@test "get_metrics reports envd's fields with sane values" {
	start_snap
	req '{"type":"get_metrics"}'
	p=$(jq -c .payload <<<"$reply")
	assert_equal "$(jq -r .cpu_count <<<"$p")" "$(nproc)"
	run jq -e '(.ts - now | fabs) < 60 and .cpu_used_pct >= 0 and .cpu_used_pct <= 100
		and .mem_total > 0 and .mem_used > 0 and .mem_used <= .mem_total
		and .mem_total_mib == ((.mem_total / 1048576) | floor)
		and .disk_total > 0 and .disk_used <= .disk_total
		and .load_1 >= 0 and .load_5 >= 0 and .load_15 >= 0
		and .uptime_seconds > 0 and .generation == 0 and .restores == 0
		and (.psi.cpu.some | has("avg10") and has("avg60") and has("avg300") and has("total_us"))
		and (.psi.memory.full.avg10 >= 0) and (.psi.io.some.total_us >= 0)' <<<"$p"
	assert_success
	memtotal=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 1024))
	assert_equal "$(jq -r .mem_total <<<"$p")" "$memtotal"
	disk=$(df -B1 --output=size "$R" | tail -1 | tr -d ' ')
	assert_equal "$(jq -r .disk_total <<<"$p")" "$disk"
}
