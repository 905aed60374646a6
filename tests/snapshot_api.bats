#!/usr/bin/env bats
# snapshot_api.bats - the snapshot messages through the real stereod: NDJSON (ids, stale
# connections, lifecycle pushes), the IPC routes, and stereo-host's snapshot commands.
# The wall clock is always a fake-clock file here: a restored must never step the real clock.
load helpers
load helpers/stereod

setup() {
	stereod_setup
	export STEREO_FAKE_CLOCK=$BATS_TEST_TMPDIR/clock
	echo "0 0" >"$STEREO_FAKE_CLOCK"
	mkdir -p "$R/dev"
	ln -s /dev/random "$R/dev/random"
	SUB=
}

teardown() {
	[ -n "$SUB" ] && kill "$SUB" 2>/dev/null || true
	stop_stereod
}

now_ns() { date +%s%N; }

# subscribe FILE [N]: a subscriber that prints its ack and N-1 pushes to FILE, then exits.
subscribe() {
	nd --timeout 10000 --lines "${2:-2}" <<<'{"type":"subscribe"}' >"$1" &
	SUB=$!
	wait_file "$1" '"reply_to":"subscribe"'
}

@test "hello lists the snapshot messages and they answer with the request's id" {
	start_stereod
	run nd <<<'{"type":"hello"}'
	assert_equal "$(jq -c '[.payload.capabilities[] | select(test("snapshot|restored|metrics"))]' <<<"$output")" \
		'["snapshot_prepare","snapshot_abort","restored","get_metrics"]'
	run nd --seq <<EOF
{"type":"snapshot_prepare","id":"p1","payload":{"timeout_ms":60000}}
{"type":"get_metrics","id":2}
{"type":"snapshot_abort","id":"a3"}
EOF
	assert_success
	assert_equal "$(jq -c '[.id, .type, .payload.reply_to, .payload.ok]' <<<"$output" | tr '\n' ' ')" \
		'["p1","ack","snapshot_prepare",true] [2,"metrics",null,null] ["a3","ack","snapshot_abort",true] '
	assert_equal "$(sed -n 2p <<<"$output" | jq -r .payload.snapshot_prepared)" true
}

@test "restored needs a payload, and a bad one is refused with the field named" {
	start_stereod
	run nd <<<'{"type":"restored"}'
	assert_equal "$(jq -r .payload.ok <<<"$output")" false
	assert_equal "$(jq -r .payload.reply_to <<<"$output")" restored
	assert_output --partial payload
	run nd <<<'{"type":"restored","payload":{"wall_clock_ns":"soon","entropy_b64":""}}'
	assert_equal "$(jq -r .payload.error <<<"$output")" \
		"wall_clock_ns must be a positive integer (ns since the epoch)"
	assert_file_not_exists "$R/run/stereos/generation"
}

@test "restored closes stale connections, keeps the requester, and pushes lifecycle to subscribers after the ack" {
	start_stereod
	subscribe "$BATS_TEST_TMPDIR/sub" 2
	# an idle client from before the snapshot: it waits for a second line that never comes
	nd --timeout 10000 --lines 2 <<<'{"type":"ping"}' >"$BATS_TEST_TMPDIR/idle" &
	idle=$!
	wait_file "$BATS_TEST_TMPDIR/idle" pong
	run nd --seq <<EOF
{"type":"restored","payload":{"wall_clock_ns":$(now_ns),"entropy_b64":"AAAAAAAAAAA=","generation":3}}
{"type":"ping"}
EOF
	assert_success
	assert_equal "$(sed -n 2p <<<"$output")" '{"type":"pong"}'   # the requester stays open
	assert_equal "$(sed -n 1p <<<"$output" | jq -r '.payload | "\(.ok) \(.generation)"')" "true 3"
	assert_equal "$(sed -n 1p <<<"$output" | jq -r '.payload.steps[] | select(.step == "connections") | .closed')" 1
	run wait "$idle"
	assert_failure 3                     # closed under it
	wait "$SUB"
	SUB=
	assert_equal "$(sed -n 2p "$BATS_TEST_TMPDIR/sub" | jq -c .payload)" '{"state":"ready","message":"restored"}'
	assert_equal "$(cat "$R/run/stereos/generation")" 3
}

@test "a restore stereod detects by itself is pushed to subscribers as lifecycle restored" {
	start_stereod
	subscribe "$BATS_TEST_TMPDIR/sub" 2
	echo "0 45000000000" >"$STEREO_FAKE_CLOCK"       # BOOTTIME moved 45 s past MONOTONIC
	wait "$SUB"
	SUB=
	assert_equal "$(sed -n 2p "$BATS_TEST_TMPDIR/sub" | jq -c .payload)" '{"state":"ready","message":"restored"}'
	assert_equal "$(cat "$R/run/stereos/generation")" 1
	run nd <<<'{"type":"get_metrics"}'
	assert_equal "$(jq -c '.payload | [.generation, .restores]' <<<"$output")" '[1,1]'
	grep -q 'msg="restore detected, recovered" source=clock' "$LOG"
}

@test "the IPC API serves snapshot prepare, abort, restored and metrics" {
	start_stereod
	# never freeze a real path here: the temp dir is on the machine's root filesystem
	run ipc POST /v1/snapshot/prepare '{"freeze":["/missing"],"timeout_ms":60000}'
	assert_equal "${output%% *}" 500
	assert_equal "$(jq -r .error <<<"${output#* }")" "1 step failed: freeze /missing: open: No such file or directory"
	run ipc POST /v1/snapshot/prepare '{"timeout_ms":60000}'
	assert_equal "${output%% *}" 200
	assert_equal "$(jq -r .status <<<"${output#* }")" ok
	run ipc POST /v1/snapshot/prepare '{"timeout_ms":-1}'
	assert_equal "$output" '400 {"error":"timeout_ms must be an integer 1..600000"}'
	run ipc POST /v1/snapshot/prepare '{"timeout_ms":'
	assert_equal "${output%% *}" 400
	run ipc POST /v1/snapshot/abort
	assert_equal "$(jq -c . <<<"${output#* }")" '{"steps":[{"step":"thaw","thawed":[],"ok":true}],"status":"ok"}'
	run ipc POST /v1/restored "{\"wall_clock_ns\":$(now_ns),\"entropy_b64\":\"AAAA\",\"machine_id\":\"00112233445566778899aabbccddeeff\"}"
	assert_equal "${output%% *}" 200
	assert_equal "$(jq -r '"\(.source) \(.generation)"' <<<"${output#* }")" "host 1"
	assert_equal "$(cat "$R/etc/machine-id")" 00112233445566778899aabbccddeeff
	run ipc POST /v1/restored
	assert_equal "${output%% *}" 400
	run ipc GET /v1/metrics
	assert_equal "${output%% *}" 200
	run jq -e '.cpu_count > 0 and .mem_total > 0 and .disk_total > 0 and .generation == 1' <<<"${output#* }"
	assert_success
	run ipc GET /v1/snapshot/prepare
	assert_equal "${output%% *}" 405
}

@test "stereo-host restored sends the host's clock and 64 fresh random bytes and prints each step" {
	echo "-7200000000000 0" >"$STEREO_FAKE_CLOCK"     # the guest woke up two hours behind
	start_stereod
	run stereo-host --tcp "$ADDR" restored --bogus 2>&1
	assert_failure 2
	run stereo-host --tcp "$ADDR" restored --generation 9
	assert_success
	assert_line --regexp '^ok   clock skew_ms=[0-9]+ stepped=true$'
	assert_line "ok   entropy bytes=64 reseeded=true entropy_avail=256"
	assert_line "ok   generation generation=9 previous=0"
	off=$(awk '{print $1}' "$STEREO_FAKE_CLOCK")
	assert [ "${off#-}" -lt 5000000000 ]              # stepped to the host's time
	run stereo-host --tcp "$ADDR" --json restored
	assert_success
	assert_equal "$(jq -c '[.ok, (.steps[] | select(.step == "entropy") | .bytes), .generation]' <<<"$output")" '[true,64,10]'
	assert [ "$(jq -r '.steps[] | select(.step == "clock") | .skew_ms | fabs' <<<"$output")" -lt 1000 ]
	assert_equal "$(cat "$R/run/stereos/generation")" 10
}

@test "stereo-host restored passes the network object and exits 1 naming the failed step" {
	start_stereod
	run stereo-host --tcp "$ADDR" restored --network - <<<$'{"interface": "nosuch0",\n "mtu": 1400}'
	assert_failure 1
	assert_line "FAIL network_link interface=nosuch0: no interface nosuch0"
	assert_output --partial "stereo-host: restored: 1 step failed: network_link: no interface nosuch0"
	run stereo-host --tcp "$ADDR" restored --network - <<<'{"interface":'
	assert_failure 2
}

@test "stereo-host snapshot-prepare and snapshot-abort print the steps and exit 1 when one failed" {
	start_stereod
	mkdir -p "$R/proc/sys/vm"
	: >"$R/proc/sys/vm/drop_caches"
	run stereo-host --tcp "$ADDR" snapshot-prepare --drop-caches --thaw-after 1m
	assert_success
	assert_output $'ok   sync\nok   drop_caches'
	assert_equal "$(cat "$R/proc/sys/vm/drop_caches")" 3
	run stereo-host --tcp "$ADDR" snapshot-prepare --freeze /missing
	assert_failure 1
	assert_line "FAIL freeze /missing: open: No such file or directory"
	run stereo-host --tcp "$ADDR" --json snapshot-prepare --freeze /missing --thaw-after 2s
	assert_failure 1
	assert_equal "$(jq -c '[.ok, .timeout_ms]' <<<"$output")" '[false,2000]'
	run stereo-host --tcp "$ADDR" snapshot-abort
	assert_success
	assert_output "ok   thaw thawed=[]"
}

@test "stereo-host metrics prints one line per field; --json prints the payload" {
	start_stereod
	run stereo-host --tcp "$ADDR" metrics
	assert_success
	assert_line "cpu_count: $(nproc)"
	assert_line "generation: 0"
	assert_line --regexp '^mem_total: [0-9]+$'
	run stereo-host --tcp "$ADDR" metrics --json
	assert_success
	assert_equal "$(jq -r '.cpu_count' <<<"$output")" "$(nproc)"
}
