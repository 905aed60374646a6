#!/usr/bin/env bats
# e2e-clone.bats - snapshot a running guest and clone it, for real: the test image
# (rootfs/build.sh --test) boots under QEMU with a vmgenid device and a QMP socket; after
# `stereo-host snapshot-prepare` QMP stops it and migrates it into a file; the file sits for
# 2 s; then four clones start from it at once (-incoming), each with its own vmgenid GUID,
# MAC, forwarded ports and 9p share. Three get `stereo-host restored` with their own
# generation, hostname, machine-id and network; the fourth gets nothing, to show what a
# clone nobody told sees. The e2e probe in the test image reports each guest's identity,
# 32 bytes of /dev/urandom, its clocks and its control-port connections into the clone's
# 9p share once stereod mounts it (after `restored`). See docs/snapshot.md.
load helpers

NCLONES=4         # clones 1-3 are sent `restored`, clone 4 is not
SNAPSHOT_AGE=2    # seconds the snapshot file sits before the clones start

alive() {
	[ -r "/proc/$1/stat" ] && ! sed 's/^.*) //' "/proc/$1/stat" | grep -q '^Z'
}

# host N ARGS...: stereo-host against clone N (0 = the source) through its first forward
host() {
	local n=$1
	shift
	stereo-host --tcp "127.0.0.1:$(cat "$C/port.$n")" --timeout 20s "$@"
}

qmp() {
	/usr/bin/python3 "$STEREO_TOP/tests/helpers/qmp.py" "$@"
}

ns_now() { date +%s%N; }

# boot N [vm.sh options...]: start QEMU for guest N in the background (double fork: it is not
# our child; teardown_file kills it by its -pidfile PID, timeout is the last guard)
boot() {
	local n=$1
	shift
	[ -s "$C/port.$n" ] || free_port > "$C/port.$n"
	mkdir -p "$C/share.$n"
	(timeout 900 sh "$STEREO_TOP/rootfs/vm.sh" --image "$C/image.cpio.zst" \
		--port "$(cat "$C/port.$n")" --share "$C/share.$n" --tag e2e \
		--serial "$C/serial.$n.log" --pidfile "$C/qemu.$n.pid" --qmp "$C/qmp.$n.sock" \
		--append "loglevel=7" --mem 256 "$@" >"$C/vm.$n.log" 2>&1 </dev/null 3>&- &)
}

# value KEY FILE: the value of the first "KEY value" line of a probe report
value() {
	sed -n "s/^$1 //p" "$2" | head -1
}

setup_file() {
	C=$BATS_FILE_TMPDIR/clone
	export C NCLONES SNAPSHOT_AGE
	mkdir -p "$C"
	if ! command -v qemu-system-x86_64 >/dev/null; then
		skip "QEMU CANNOT RUN: qemu-system-x86_64 is not installed (make deps installs it)"
	fi
	sh "$STEREO_TOP/rootfs/build.sh" --test -o "$C/image.cpio.zst" >"$C/build.log" 2>&1 ||
		{ cat "$C/build.log" >&2; return 1; }

	# the source: boot, and open a connection that must not survive into a restored clone
	boot 0 --vmgenid auto
	host 0 --timeout 500ms wait-ready --interval 20ms --timeout 120s >/dev/null ||
		{ tr -d '\r' < "$C/serial.0.log" | tail -30 >&2; return 1; }
	# two connections held across the snapshot: a plain one (its port in held.port) and a
	# lifecycle subscriber (held.sub); the guest sees QEMU's forwarder as 10.0.2.2:PORT
	/usr/bin/python3 -c '
import socket, sys, time
port = int(sys.argv[1])
held = []
for msg, want in ((b"ping", b"pong"), (b"subscribe", b"ack")):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"{\"type\":\"" + msg + b"\",\"id\":1}\n")
    if want not in s.recv(4096):
        sys.exit(1)
    held.append(s)
print(held[0].getsockname()[1], held[1].getsockname()[1], flush=True)
time.sleep(900)' "$(cat "$C/port.0")" >"$C/held.ports" 2>"$C/held.err" </dev/null 3>&- &
	echo $! > "$C/held.pid"
	for _ in $(seq 1 400); do [ -s "$C/held.ports" ] && break; sleep 0.05; done
	[ -s "$C/held.ports" ] || { cat "$C/held.err" >&2; return 1; }
	cut -d' ' -f1 "$C/held.ports" > "$C/held.port"
	cut -d' ' -f2 "$C/held.ports" > "$C/held.sub"

	# The kernel says "crng reseeded due to virtual machine fork" on a restore (stereod's
	# restore detector) only when its RNG was initialised before the snapshot. Under TCG
	# (no RDRAND) that takes a few seconds of interrupts after boot.
	local t0=$SECONDS
	for _ in $(seq 1 1800); do
		grep -q 'random: crng init done' "$C/serial.0.log" && break
		sleep 0.1
	done
	grep -q 'random: crng init done' "$C/serial.0.log" ||
		{ echo "the source's RNG was not initialised after 180 s" >&2; return 1; }
	echo "# source: RNG initialised $((SECONDS - t0)) s after ready" >&3

	host 0 snapshot-prepare > "$C/prepare.out" 2>&1 || { cat "$C/prepare.out" >&2; return 1; }
	qmp "$C/qmp.0.sock" stop "migrate={\"uri\":\"exec:cat > $C/snapshot\"}" wait-migrate quit \
		> "$C/migrate.out" 2>&1 || { cat "$C/migrate.out" >&2; return 1; }
	date +%s%N > "$C/t_snapshot"
	kill "$(cat "$C/held.pid")" 2>/dev/null || true
	# the snapshot's age is the scenario here, not a wait for something: the clones' clocks
	# must come back this far behind
	sleep "$SNAPSHOT_AGE"

	local n
	for n in $(seq 1 "$NCLONES"); do
		# the clone's control port and its second forward: two distinct ports
		free_ports 2 | { read -r a; read -r b; echo "$a" > "$C/port.$n"; echo "$b" > "$C/fwd.$n"; }
		boot "$n" --vmgenid "$(cat /proc/sys/kernel/random/uuid)" --mac "02:fc:00:00:00:0$n" \
			--fwd "$(cat "$C/fwd.$n"):10.0.2.2$n" \
			--incoming "exec:cat $C/snapshot"
	done
	# clones of a stopped source come up paused, once their incoming migration is loaded;
	# each restored clone gets `restored` as soon as it answers, as a host would send it
	for n in $(seq 1 "$NCLONES"); do
		qmp "$C/qmp.$n.sock" wait-incoming cont > "$C/cont.$n.out" 2>&1 ||
			{ cat "$C/cont.$n.out" "$C/vm.$n.log" >&2; return 1; }
		[ "$n" -eq "$NCLONES" ] && continue
		ns_now > "$C/t_cont.$n"
		host "$n" --timeout 1s wait-ready --interval 20ms --timeout 120s > "$C/ready.$n" 2>&1
		restore "$n" || true     # the tests read restored.N
	done
}

teardown_file() {
	local f pid
	[ -s "$C/held.pid" ] && kill "$(cat "$C/held.pid")" 2>/dev/null
	for f in "$C"/qemu.*.pid; do
		[ -s "$f" ] || continue
		pid=$(cat "$f")
		alive "$pid" || continue
		kill "$pid" 2>/dev/null
		for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.05; done
		alive "$pid" && kill -9 "$pid" 2>/dev/null
	done
	return 0
}

# On a failure, show what the clones said.
teardown() {
	if [ -n "${BATS_TEST_COMPLETED:-}" ]; then return 0; fi
	local f
	for f in "$C"/serial.*.log; do
		[ -f "$f" ] || continue
		echo "--- $f:" >&2
		tr -d '\r' < "$f" | tail -15 >&2
	done
}

# restore N: `restored` with clone N's identity; the ack in restored.N; then mount the 9p share
# so the probe reports (identity.N), with the host's clock read just before and just after
restore() {
	local n=$1
	cat > "$C/net.$n.json" <<EOF
{"interface":"eth0","mac":"02:fc:00:00:00:0$n","addresses":["10.0.2.15/24","10.0.2.2$n/24"],"gateway":"10.0.2.2"}
EOF
	# the request comes in to 10.0.2.15 through QEMU's first forward: that address stays in
	# the list, or the ack would have no address to leave from; the second forward reaches
	# only the new one
	ns_now > "$C/t_restore_before.$n"
	host "$n" restored --generation "$((100 + n))" --hostname "clone-$n" \
		--machine-id "$(printf '%032x' "$((0xc10e0000 + n))")" --network "$C/net.$n.json" \
		> "$C/restored.$n" 2>&1
	local rc=$?
	ns_now > "$C/t_restore_after.$n"
	return $rc
}

# probe N: mount clone N's share and wait for its report; the host's clock around it
probe() {
	local n=$1
	ns_now > "$C/t_before.$n"
	host "$n" mount e2e /mnt/e2e --type 9p >/dev/null
	for _ in $(seq 1 1200); do [ -s "$C/share.$n/hello" ] && break; sleep 0.02; done
	ns_now > "$C/t_after.$n"
	cp "$C/share.$n/identity" "$C/identity.$n"
}

@test "the source migrates into a file after snapshot-prepare, and every clone comes up from it" {
	assert_file_contains "$C/prepare.out" '^ok   sync$'
	assert_file_contains "$C/prepare.out" '^ok   freeze_hook 50-e2e exit_code=0$'
	assert_file_contains "$C/migrate.out" '"status": "completed"'
	local size n
	size=$(wc -c < "$C/snapshot")
	echo "# snapshot: $size bytes" >&3
	[ "$size" -gt 1000000 ]
	for n in $(seq 1 "$NCLONES"); do
		run host "$n" --timeout 1s wait-ready --interval 50ms --timeout 120s
		assert_success
	done
}

@test "a clone that is not sent restored detects the restore from the kernel log, and keeps the source's clock and identity" {
	local n=$NCLONES t_snap age_ms lag_ms
	# the detector waits 5 s for a `restored` that never comes, then recovers what it can
	for _ in $(seq 1 600); do
		grep -q 'msg="restore detected, recovered" source=kmsg' "$C/serial.$n.log" && break
		sleep 0.1
	done
	assert_file_contains "$C/serial.$n.log" 'msg="restore detected, recovered" source=kmsg'
	run host "$n" metrics --json
	assert_success
	[ "$(echo "$output" | jq -r .restores)" = 1 ]
	[ "$(echo "$output" | jq -r .generation)" = 1 ]
	probe "$n"
	# what the kernel saw: the vmgenid ACPI notification (QEMU signals it on GPE 5), the
	# RNG reseeded, and no uevent: stereod's uevent detector did not fire
	assert_file_contains "$C/identity.$n" '^acpi_gpe05 *1 '
	assert_file_contains "$C/identity.$n" '^kmsg random: crng reseeded due to virtual machine fork$'
	refute grep -q 'source=vmgenid' "$C/serial.$n.log"
	# nor did the clock detector: MONOTONIC and BOOTTIME ran on together
	refute grep -q 'source=clock' "$C/serial.$n.log"
	# without the host's time its wall clock stays behind by at least the snapshot's age
	t_snap=$(cat "$C/t_snapshot")
	lag_ms=$(( ($(cat "$C/t_before.$n") - $(value realtime_ns "$C/identity.$n")) / 1000000 ))
	age_ms=$(( ($(cat "$C/t_before.$n") - t_snap) / 1000000 ))
	echo "# unrestored clone: wall clock ${lag_ms} ms behind the host (snapshot taken ${age_ms} ms before)" >&3
	[ "$lag_ms" -ge $((SNAPSHOT_AGE * 1000)) ]
	# and the source's identity
	[ "$(value hostname "$C/identity.$n")" = stereo ]
	[ "$(value mac "$C/identity.$n")" = 52:54:00:12:34:56 ]
	[ "$(value addr "$C/identity.$n")" = 10.0.2.15/24 ]
	# the detected restore closed the plain connection from before the snapshot
	refute grep -q "^tcp 01 10.0.2.2:$(cat "$C/held.port")\$" "$C/identity.$n"
	# the thaw hooks ran, with the stale clock
	grep -q '^hook_thaw ' "$C/identity.$n"
}

@test "each restored clone acks every step of restored with its own generation, the detected restore superseded" {
	local n
	for n in $(seq 1 $((NCLONES - 1))); do
		run cat "$C/restored.$n"
		assert_line --regexp '^ok +thaw thawed=\[\]$'
		assert_line --regexp '^ok +thaw_hook 50-e2e exit_code=0$'
		assert_line --regexp '^ok +clock skew_ms=-?[0-9]+ stepped=true$'
		assert_line --regexp '^ok +entropy bytes=64 reseeded=true'
		assert_line --regexp "^ok +generation generation=$((100 + n)) previous=0\$"
		assert_line --regexp "^ok +hostname hostname=clone-$n\$"
		assert_line --regexp '^ok +machine_id$'
		assert_line --regexp '^ok +network_link interface=eth0$'
		assert_line --regexp '^ok +network_addresses$'
		assert_line --regexp '^ok +network_routes$'
		# the connection held open across the snapshot is one of those closed
		assert_line --regexp '^ok +connections closed=[1-9][0-9]*$'
		refute_line --regexp '^FAIL'
		echo "# clone $n: $(grep -o 'skew_ms=-*[0-9]*' "$C/restored.$n"), restored acked $(( ($(cat "$C/t_restore_after.$n") - $(cat "$C/t_cont.$n")) / 1000000 )) ms after cont" >&3
		# the kernel-log detector saw the restore too, and the host's restored replaced it
		assert_file_contains "$C/serial.$n.log" 'msg="restore detected, waiting for the host.s restored" source=kmsg'
		refute grep -q 'msg="restore detected, recovered"' "$C/serial.$n.log"
	done
}

@test "each restored clone's wall clock is within 100 ms of the host's" {
	local n before after rt
	for n in $(seq 1 $((NCLONES - 1))); do
		probe "$n"
		before=$(cat "$C/t_before.$n")
		after=$(cat "$C/t_after.$n")
		rt=$(value realtime_ns "$C/identity.$n")
		echo "# clone $n: guest clock read $(( (rt - before) / 1000000 )) ms after the host's 'before', window $(( (after - before) / 1000000 )) ms" >&3
		# the guest read its clock between the host's two readings, give or take 100 ms
		[ "$rt" -ge $((before - 100000000)) ]
		[ "$rt" -le $((after + 100000000)) ]
	done
}

@test "32 bytes of /dev/urandom read after restored differ between every pair of clones" {
	local i j
	for i in $(seq 1 $((NCLONES - 1))); do
		[ "$(value urandom "$C/identity.$i" | wc -c)" -eq 65 ]
	done
	for i in $(seq 1 $((NCLONES - 1))); do
		for j in $(seq $((i + 1)) $((NCLONES - 1))); do
			[ "$(value urandom "$C/identity.$i")" != "$(value urandom "$C/identity.$j")" ]
		done
	done
}

@test "each restored clone has the hostname, machine-id, MAC and addresses it was sent" {
	local n
	for n in $(seq 1 $((NCLONES - 1))); do
		[ "$(value hostname "$C/identity.$n")" = "clone-$n" ]
		[ "$(value machine_id "$C/identity.$n")" = "$(printf '%032x' "$((0xc10e0000 + n))")" ]
		[ "$(value mac "$C/identity.$n")" = "02:fc:00:00:00:0$n" ]
		[ "$(sed -n 's/^addr //p' "$C/identity.$n" | sort | tr '\n' ' ')" = "10.0.2.15/24 10.0.2.2$n/24 " ]
	done
}

@test "each restored clone answers on its new address, and is ready" {
	local n
	for n in $(seq 1 $((NCLONES - 1))); do
		# QEMU's second forward goes to 10.0.2.2N only
		run stereo-host --tcp "127.0.0.1:$(cat "$C/fwd.$n")" --timeout 20s health --json
		assert_success
		[ "$(echo "$output" | jq -r .state)" = ready ] || [ "$(echo "$output" | jq -r .state)" = healthy ]
		run host "$n" metrics --json
		assert_success
		[ "$(echo "$output" | jq -r .generation)" = $((100 + n)) ]
		[ "$(echo "$output" | jq -r .restores)" = 1 ]
	done
}

@test "connections opened before the snapshot are gone from every restored clone" {
	local n port sub
	port=$(cat "$C/held.port")
	sub=$(cat "$C/held.sub")
	for n in $(seq 1 $((NCLONES - 1))); do
		refute grep -q "^tcp 01 10.0.2.2:$port\$" "$C/identity.$n"
		refute grep -q "^tcp 01 10.0.2.2:$sub\$" "$C/identity.$n"
	done
}

@test "the thaw hooks of each restored clone see the host's time" {
	local n t before after
	for n in $(seq 1 $((NCLONES - 1))); do
		run sed -n 's/^hook_thaw \([0-9]*\) .*/\1/p' "$C/identity.$n"
		assert_success
		t=$output
		[ -n "$t" ] || { cat "$C/identity.$n" "$C/restored.$n" >&2; false; }
		before=$(cat "$C/t_restore_before.$n")
		after=$(cat "$C/t_restore_after.$n")
		echo "# clone $n: thaw hook ran $(( (t - before) / 1000000 )) ms after the host sent restored ($(( (after - before) / 1000000 )) ms round trip)" >&3
		[ "$t" -ge $((before - 100000000)) ]
		[ "$t" -le $((after + 100000000)) ]
	done
}
