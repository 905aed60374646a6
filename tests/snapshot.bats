#!/usr/bin/env bats
# snapshot.bats - stereod's snapshot subsystem (prepare/abort, the restore pipeline, restore
# detection, metrics) driven through build/t/snapdrv: requests on a FIFO, replies and
# lifecycle pushes in a file. Real filesystems are frozen inside mount namespaces; the wall
# clock is a fake-clock file (CLOCK_REALTIME has no namespace).
load helpers

setup() {
	R=$BATS_TEST_TMPDIR/root
	mkdir -p "$R/dev" "$R/proc/sys/vm" "$R/etc" "$R/run/stereos"
	ln -s /dev/random "$R/dev/random"
	: >"$R/proc/sys/vm/drop_caches"
	CLOCK=$BATS_TEST_TMPDIR/clock
	OUT=$BATS_TEST_TMPDIR/out
	LOG=$BATS_TEST_TMPDIR/log
	DRV=
	NREQ=0
}

teardown() {
	if [ -n "$DRV" ]; then
		exec 7>&-                  # EOF: snapdrv thaws what it froze and exits
		wait "$DRV" || true
	fi
	[ -n "${WRITER:-}" ] && kill "$WRITER" 2>/dev/null || true
	asan_clean "$LOG"
}

# start_drv [WRAPPER...]: run snapdrv (inside WRAPPER, e.g. unshare -m) on the test root.
start_drv() {
	mkfifo "$BATS_TEST_TMPDIR/in"
	: >"$OUT"
	STEREO_FAKE_CLOCK=$CLOCK "$@" "$STEREO_T/snapdrv" --root "$R" \
		<"$BATS_TEST_TMPDIR/in" >"$OUT" 2>"$LOG" &
	DRV=$!
	exec 7>"$BATS_TEST_TMPDIR/in"
	req '{"type":"get_metrics"}'                 # answered: set up and ticking
}

# req JSON: send one request (an id is added) and leave its reply in $reply.
req() {
	NREQ=$((NREQ + 1))
	local id="r$NREQ"
	echo "{\"id\":\"$id\",${1#\{}" >&7
	wait_file "$OUT" "\"id\":\"$id\""
	reply=$(grep "\"id\":\"$id\"" "$OUT")
}

# step NAME: the first step object of that name in $reply.
step() { jq -c --arg n "$1" '[.payload.steps[] | select(.step == $n)][0]' <<<"$reply"; }

now_ns() { date +%s%N; }

# start_drv_with_ext4: a fresh ext4 image loop-mounted at $R/mnt inside snapdrv's mount namespace.
start_drv_with_ext4() {
	truncate -s 16M "$BATS_TEST_TMPDIR/fs.img"
	mkfs.ext4 -q -F "$BATS_TEST_TMPDIR/fs.img"
	mkdir -p "$R/mnt"
	start_drv unshare -m --propagation private sh -c \
		'mount -o loop "$0" "$1" && shift && exec "$@"' "$BATS_TEST_TMPDIR/fs.img" "$R/mnt"
	wait_for grep -q " $R/mnt " "/proc/$DRV/mounts"
}

in_ns() { nsenter -m -t "$DRV" "$@"; }

# blocked PID: the process sleeps uninterruptibly (as a writer on a frozen superblock does).
blocked() { [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = D ]; }

@test "snapshot_prepare freezes a loop-mounted ext4: a write blocks until snapshot_abort thaws" {
	start_drv_with_ext4
	req '{"type":"snapshot_prepare","payload":{"freeze":["/mnt"],"timeout_ms":60000}}'
	assert_equal "$(jq -r .payload.ok <<<"$reply")" true
	assert_equal "$(jq -c .payload.frozen <<<"$reply")" '["/mnt"]'
	assert_equal "$(step freeze | jq -r .ok)" true

	nsenter -m -t "$DRV" sh -c 'echo data >"$0/mnt/file" && echo done >"$1"' "$R" \
		"$BATS_TEST_TMPDIR/written" &
	WRITER=$!
	wait_for blocked "$WRITER"
	assert_file_not_exists "$BATS_TEST_TMPDIR/written"

	req '{"type":"snapshot_abort"}'
	assert_equal "$(jq -r .payload.ok <<<"$reply")" true
	assert_equal "$(step thaw | jq -c .thawed)" '["/mnt"]'
	wait_file "$BATS_TEST_TMPDIR/written"
	assert_equal "$(in_ns cat "$R/mnt/file")" data
}

@test "the watchdog thaws a frozen filesystem when neither abort nor restore arrives" {
	start_drv_with_ext4
	req '{"type":"snapshot_prepare","payload":{"freeze":["/mnt"],"timeout_ms":300}}'
	assert_equal "$(jq -r .payload.timeout_ms <<<"$reply")" 300
	assert_equal "$(jq -c .payload.frozen <<<"$reply")" '["/mnt"]'
	nsenter -m -t "$DRV" sh -c 'echo data >"$0/mnt/file" && echo done >"$1"' "$R" \
		"$BATS_TEST_TMPDIR/written" &
	WRITER=$!
	wait_file "$BATS_TEST_TMPDIR/written"
	wait_file "$LOG" 'snapshot watchdog: thawed'
	req '{"type":"get_metrics"}'
	assert_equal "$(jq -r .payload.snapshot_prepared <<<"$reply")" false
}

@test "restored thaws what snapshot_prepare froze before anything else" {
	start_drv_with_ext4
	req '{"type":"snapshot_prepare","payload":{"freeze":["/mnt","/mnt/."],"timeout_ms":60000}}'
	assert_equal "$(jq -c '[.payload.steps[] | select(.step == "freeze") | .ok]' <<<"$reply")" '[true,true]'
	assert_equal "$(jq -c .payload.frozen <<<"$reply")" '["/mnt"]'
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"\"}}"
	assert_equal "$(jq -r '.payload.steps[0].step' <<<"$reply")" thaw
	assert_equal "$(step thaw | jq -c .thawed)" '["/mnt"]'
	in_ns sh -c 'echo data >"$0/mnt/file"' "$R"
}

@test "freeze hooks run by name with freeze, and in reverse with thaw" {
	mkdir -p "$R/etc/stereos/hooks/freeze.d"
	for h in 20-b 10-a 30-c; do
		printf '#!/bin/sh\necho "%s $1" >>"%s"\n' "$h" "$BATS_TEST_TMPDIR/hooks.log" \
			>"$R/etc/stereos/hooks/freeze.d/$h"
		chmod +x "$R/etc/stereos/hooks/freeze.d/$h"
	done
	printf '#!/bin/sh\necho never >>"%s"\n' "$BATS_TEST_TMPDIR/hooks.log" >"$R/etc/stereos/hooks/freeze.d/40-not-executable"
	start_drv
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
	start_drv
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
	start_drv unshare -m --propagation private sh -c 'mount -t tmpfs none "$0" && exec "$@"' "$R/tmpfs"
	wait_for grep -q " $R/tmpfs " "/proc/$DRV/mounts"
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
	start_drv
	for p in '{"freeze":"/mnt"}' '{"freeze":[1]}' '{"timeout_ms":0}' '{"timeout_ms":"5"}' \
		'{"drop_caches":1}' '[]'; do
		req "{\"type\":\"snapshot_prepare\",\"payload\":$p}"
		assert_equal "$(jq -r .payload.ok <<<"$reply")" false
		assert_equal "$(jq -r .payload.steps <<<"$reply")" null
	done
	assert_equal "$(jq -r .payload.error <<<"$reply")" "payload must be an object"
	assert_equal "$(cat "$R/proc/sys/vm/drop_caches")" ""
}

@test "restored steps the wall clock only when it is skewed beyond 100 ms" {
	echo "-3600000000000 0" >"$CLOCK"             # the guest is an hour behind
	start_drv
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"\"}}"
	assert_equal "$(step clock | jq -r .stepped)" true
	assert [ "$(step clock | jq -r .skew_ms)" -ge 3599000 ]
	off=$(awk '{print $1}' "$CLOCK")
	assert [ "${off#-}" -lt 1000000000 ]          # now within a second of the host's time
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"\"}}"
	assert_equal "$(step clock | jq -r .stepped)" false
}

@test "restored adds the host's entropy to the real /dev/random and reseeds the CRNG" {
	start_drv
	e=$(head -c 64 /dev/urandom | base64 -w0)
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"$e\"}}"
	run step entropy
	assert_output --partial '"bytes":64,"reseeded":true'
	assert_output --partial '"ok":true'
	assert [ "$(step entropy | jq -r .entropy_avail)" -gt 0 ]
}

@test "restored writes the generation, hostname and machine-id" {
	start_drv unshare -u
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"AAAA\",\"generation\":41,\"hostname\":\"clone-7\",\"machine_id\":\"0123456789ABCDEF0123456789abcdef\"}}"
	assert_equal "$(jq -r .payload.ok <<<"$reply")" true
	assert_equal "$(cat "$R/run/stereos/generation")" 41
	assert_equal "$(cat "$R/etc/hostname")" clone-7
	assert_equal "$(nsenter -u -t "$DRV" hostname)" clone-7
	assert_equal "$(cat "$R/etc/machine-id")" 0123456789abcdef0123456789abcdef
	assert_equal "$(stat -c %a "$R/etc/machine-id")" 444
	assert_not_equal "$(hostname)" clone-7
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"\"}}"
	assert_equal "$(step generation | jq -c '[.previous, .generation]')" '[41,42]'
	assert_equal "$(cat "$R/run/stereos/generation")" 42
}

@test "restored reports every failing step and still runs the rest" {
	rm "$R/dev/random"
	rmdir "$R/etc" && : >"$R/etc"                 # /etc is a file: hostname and machine-id fail
	echo "-3600000000000 0" >"$CLOCK"
	start_drv unshare -u
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"AAAA\",\"generation\":5,\"hostname\":\"h\",\"machine_id\":\"0123456789abcdef0123456789abcdef\",\"network\":{\"interface\":\"nosuch0\"}}}"
	assert_equal "$(jq -r .payload.ok <<<"$reply")" false
	run jq -c '[.payload.steps[] | {(.step): .ok}] | add' <<<"$reply"
	assert_output '{"thaw":true,"clock":true,"entropy":false,"generation":true,"hostname":false,"machine_id":false,"network_link":false,"connections":true}'
	assert_equal "$(cat "$R/run/stereos/generation")" 5
	assert_equal "$(nsenter -u -t "$DRV" hostname)" h      # sethostname ran though the file failed
	run jq -r .payload.error <<<"$reply"
	assert_output --regexp '^4 steps failed: entropy: open /dev/random: .*; hostname: .*; machine_id: .*; network_link: no interface nosuch0$'
}

@test "restored rejects bad fields, naming them, and does nothing" {
	start_drv
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
	req '{"type":"restored"}'
	assert_equal "$(jq -r .payload.error <<<"$reply")" "payload {wall_clock_ns, entropy_b64, ...} is required"
	assert_file_not_exists "$R/run/stereos/generation"
}

@test "restored reconfigures MAC, MTU, addresses and routes over netlink" {
	start_drv unshare -n
	nsenter -n -t "$DRV" ip link add v0 type veth peer name v1
	nsenter -n -t "$DRV" ip addr add 192.168.9.9/24 dev v0
	req "{\"type\":\"restored\",\"payload\":{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"\",\"network\":{\"interface\":\"v0\",\"mac\":\"02:fc:00:00:00:05\",\"mtu\":1400,\"addresses\":[\"10.20.0.5/24\",\"fd00::5/64\"],\"gateway\":\"10.20.0.1\",\"routes\":[{\"dst\":\"10.99.0.0/16\",\"via\":\"10.20.0.254\"}]}}}"
	assert_equal "$(jq -r .payload.ok <<<"$reply")" true
	run nsenter -n -t "$DRV" ip -j addr show dev v0
	assert_equal "$(jq -r '.[0].address' <<<"$output")" 02:fc:00:00:00:05
	assert_equal "$(jq -r '.[0].mtu' <<<"$output")" 1400
	assert_equal "$(jq -c '[.[0].addr_info[] | select(.scope == "global") | "\(.local)/\(.prefixlen)"]' <<<"$output")" \
		'["10.20.0.5/24","fd00::5/64"]'
	run nsenter -n -t "$DRV" ip -j route show
	assert_equal "$(jq -r '.[] | select(.dst == "default") | .gateway' <<<"$output")" 10.20.0.1
	assert_equal "$(jq -r '.[] | select(.dst == "10.99.0.0/16") | .gateway' <<<"$output")" 10.20.0.254
}

@test "a jump of CLOCK_BOOTTIME against CLOCK_MONOTONIC is detected as a restore" {
	echo "0 0" >"$CLOCK"
	start_drv
	req '{"type":"get_metrics"}'
	assert_equal "$(jq -r .payload.generation <<<"$reply")" 0
	echo "0 30000000000" >"$CLOCK"                # 30 s passed that MONOTONIC did not see
	wait_file "$OUT" '"type":"lifecycle"'
	run jq -c 'select(.type == "lifecycle") | .payload | {message, source, generation}' "$OUT"
	assert_output '{"message":"restored","source":"clock","generation":1}'
	assert_equal "$(cat "$R/run/stereos/generation")" 1
	wait_file "$LOG" 'restore detected, recovered'
}

@test "a wall-clock jump is a restore only while a snapshot is prepared" {
	echo "0 0" >"$CLOCK"
	start_drv
	echo "60000000000 0" >"$CLOCK"
	wait_file "$LOG" 'wall clock stepped'
	req '{"type":"snapshot_prepare","payload":{"timeout_ms":60000}}'
	echo "120000000000 0" >"$CLOCK"
	wait_file "$OUT" '"type":"lifecycle"'
	assert_equal "$(grep -c '"type":"lifecycle"' "$OUT")" 1
	req '{"type":"get_metrics"}'
	assert_equal "$(jq -c '.payload | [.generation, .restores, .snapshot_prepared]' <<<"$reply")" '[1,1,false]'
}

@test "a vmgenid uevent from root is detected as a restore" {
	start_drv unshare -n
	wait_for nsenter -n -t "$DRV" true
	# the kernel's vmgenid driver sends this on a VM generation change; fake it in our netns
	send_uevent() {
		nsenter -n -t "$DRV" /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)
s.bind((0, 0))
s.sendto(sys.argv[1].replace(",", "\0").encode() + b"\0", (0, 1))' "$1"
	}
	send_uevent "change@/devices/x,ACTION=change,SUBSYSTEM=acpi,SOMETHING=1"
	send_uevent "change@/devices/LNXSYSTM:00/VMGENCTR:00,ACTION=change,SUBSYSTEM=acpi,NEW_VMGENID=1"
	wait_file "$OUT" '"type":"lifecycle"'
	run jq -c 'select(.type == "lifecycle") | .payload | {message, source, generation}' "$OUT"
	assert_output '{"message":"restored","source":"vmgenid","generation":1}'
}

@test "get_metrics reports envd's fields with sane values" {
	start_drv
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
