#!/usr/bin/env bats
# stereo-host against peers that misbehave or behave like upstream stereosd (tests/helpers/
# ndjson_peer.c): exit codes for refused, silent and vanishing peers, replies read correctly
# between interleaved pushes, byte-for-byte upstream requests, wait-ready polling.
load helpers
load helpers/clis

teardown() { clis_teardown; }

@test "connection refused exits 3 with the reason on stderr" {
	run --separate-stderr stereo-host --tcp "$(refused_addr)" ping
	assert_failure 3
	assert_output ''
	[[ $stderr == *"stereo-host: ping: connecting to 127.0.0.1:"*"Connection refused"* ]]
}

@test "connection refused with --json prints ok:false as JSON on stdout" {
	run --separate-stderr stereo-host --json --tcp "$(refused_addr)" health
	assert_failure 3
	echo "$output" | jq -e '.ok == false and (.error | test("refused"))'
}

@test "a listener that never answers times out with exit 3" {
	start_peer silent --silent
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" --timeout 300ms ping
	assert_failure 3
	[[ $stderr == *"timed out"* ]]
}

@test "--timeout after the command name is the per-request timeout" {
	start_peer silent --silent
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" health --timeout 200ms
	assert_failure 3
	[[ $stderr == *"timed out"* ]]
}

@test "a peer that hangs up before replying exits 3" {
	start_peer closer --close
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" ping
	assert_failure 3
	[[ $stderr == *"connection closed"* || $stderr == *"reset"* ]]
}

@test "a reply that is not JSON exits 1" {
	start_peer junk --garbage
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" --json ping
	assert_failure 1
	[[ $stderr == *"malformed reply"* ]]
	echo "$output" | jq -e '.ok == false'
}

@test "an ack with ok:false exits 1 and prints the guest's error" {
	start_peer no --ids --ack-error "denied by the test peer"
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" mount share /mnt/x --type 9p
	assert_failure 1
	[[ $stderr == *"stereo-host: mount: denied by the test peer"* ]]
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" --json shutdown
	assert_failure 1
	echo "$output" | jq -e '.ok == false and .error == "denied by the test peer"'
}

@test "replies are matched by id when lifecycle pushes and stale replies arrive first" {
	start_peer noisy --ids --push --states degraded
	run stereo-host --tcp "$PEER_ADDR" ping
	assert_success
	run stereo-host --tcp "$PEER_ADDR" --json health
	assert_success
	echo "$output" | jq -e '.state == "degraded"'
	run stereo-host --tcp "$PEER_ADDR" set-config - <<<'x = 1'
	assert_success
	# requests after hello carry ids, and the reply with the stale id 999999 was skipped
	run peer_received noisy
	assert_line --index 0 '{"type":"hello"}'
	assert_line --index 1 '{"type":"ping","id":1}'
}

@test "without ids, lifecycle pushes before a reply are skipped" {
	start_peer plainnoisy --push --states booting
	run stereo-host --tcp "$PEER_ADDR" --json health
	assert_success
	echo "$output" | jq -e '.state == "booting"'
	run stereo-host --tcp "$PEER_ADDR" shutdown
	assert_success
}

@test "against an upstream stereosd (no hello) requests carry no id" {
	start_peer up
	run stereo-host --tcp "$PEER_ADDR" ping
	assert_success
	run peer_received up
	assert_output "$(printf '%s\n' '{"type":"hello"}' '{"type":"ping"}')"
}

@test "--no-id sends exactly the upstream Go client's bytes for every command" {
	start_peer up
	h() { stereo-host --tcp "$PEER_ADDR" --no-id "$@"; }
	h ping
	h health >/dev/null
	printf 'a = "<b> & c"\n' | h set-config -
	printf 'p\xe2\x80\xa8w\n' | h secret set db
	printf 'ssh-ed25519 AAAAC3 me@host\n' | h ssh-key add agent -
	h mount share /mnt/data --type virtiofs
	h mount share2 /mnt/ro --type 9p --ro
	h shutdown
	h shutdown maintenance window
	run peer_received up
	assert_output - <<'EOF'
{"type":"ping"}
{"type":"get_health"}
{"type":"set_config","payload":{"content":"a = \"\u003cb\u003e \u0026 c\"\n"}}
{"type":"inject_secret","payload":{"name":"db","value":"p\u2028w\n","mode":384}}
{"type":"inject_ssh_key","payload":{"user":"agent","public_key":"ssh-ed25519 AAAAC3 me@host"}}
{"type":"mount","payload":{"tag":"share","guest_path":"/mnt/data","fs_type":"virtiofs"}}
{"type":"mount","payload":{"tag":"share2","guest_path":"/mnt/ro","fs_type":"9p","read_only":true}}
{"type":"shutdown","payload":{}}
{"type":"shutdown","payload":{"reason":"maintenance window"}}
EOF
}

@test "hello against an upstream stereosd exits 1" {
	start_peer up
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" hello
	assert_failure 1
	[[ $stderr == *"does not know hello"* ]]
}

@test "wait-ready polls until the guest reports ready" {
	start_peer late --ids --states booting,booting,booting,ready
	run stereo-host --tcp "$PEER_ADDR" wait-ready --interval 20ms --timeout 10s
	assert_success
	assert_output ready
	[ "$(peer_received late | grep -c get_health)" -eq 4 ]
}

@test "wait-ready accepts healthy and prints the health payload with --json" {
	start_peer late --states booting,healthy
	run stereo-host --tcp "$PEER_ADDR" --json wait-ready --interval 20ms
	assert_success
	echo "$output" | jq -e '.state == "healthy"'
}

@test "wait-ready keeps polling through degraded" {
	start_peer late --ids --states degraded,degraded,ready
	run stereo-host --tcp "$PEER_ADDR" wait-ready --interval 20ms
	assert_success
	assert_output ready
}

@test "wait-ready fails with exit 1 when the guest is shutting down" {
	start_peer down --ids --states booting,shutdown
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" wait-ready --interval 20ms
	assert_failure 1
	[[ $stderr == *"shutting down"* ]]
}

@test "wait-ready gives up with exit 3 after --timeout when never ready" {
	start_peer slow --ids --states booting
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" wait-ready --interval 50ms --timeout 400ms
	assert_failure 3
	[[ $stderr == *"not ready after"*"state booting"* ]]
}

@test "wait-ready gives up with exit 3 when nothing ever listens" {
	run --separate-stderr stereo-host --tcp "$(refused_addr)" wait-ready --interval 50ms --timeout 300ms
	assert_failure 3
	[[ $stderr == *"Connection refused"* ]]
}

@test "wait-ready retries a peer that never answers until its deadline" {
	start_peer silent --silent
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" --timeout 100ms wait-ready --timeout 500ms
	assert_failure 3
	[[ $stderr == *"timed out"* ]]
}

@test "events prints each lifecycle push as one JSON line and stops after --count" {
	start_peer pusher --ids --pushes-after-subscribe 3
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" events --count 2
	assert_success
	[ "${#lines[@]}" -eq 2 ]
	echo "${lines[0]}" | jq -e '.type == "lifecycle" and .payload.state == "healthy"'
	echo "${lines[1]}" | jq -e '.type == "lifecycle" and .payload.state == "degraded"'
	[[ $stderr == *"subscribed"* ]]
	run peer_received pusher
	assert_line '{"type":"subscribe","id":1}'
}

@test "events against a guest without subscribe exits 1" {
	start_peer up
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" events
	assert_failure 1
	[[ $stderr == *"unknown message type: subscribe"* ]]
}

@test "events exits 3 when the guest goes away without shutting down" {
	start_peer pusher --ids --pushes-after-subscribe 1
	timeout 30 stereo-host --tcp "$PEER_ADDR" events >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
	local pid=$!
	BG_PIDS=$pid
	wait_file "$BATS_TEST_TMPDIR/out" healthy
	kill $PEER_PIDS
	bg_status $pid
	[ "$BG_STATUS" -eq 3 ]
	grep -q "connection closed" "$BATS_TEST_TMPDIR/err"
}

@test "wait-ready gives up on a mute connection after one attempt's cap, not a whole request timeout" {
	# a forwarder that accepts before the guest listens (QEMU user networking) looks like this
	start_peer mute --mute
	run stereo-host --tcp "$PEER_ADDR" wait-ready --interval 100ms --timeout 3500ms
	assert_failure 3
	assert_output --partial 'not ready after'
	# attempts of at most 1 s each: several connections, each sending its first request
	[ "$(peer_received mute | wc -l)" -ge 2 ]
}

@test "guest text with terminal escapes is printed escaped; --json keeps it exact" {
	start_peer esc --ids --states $'\\u001b[31mready\\u001b]0;owned\\u0007' \
		--ack-payload '{"reply_to":"snapshot_prepare","ok":false,"error":"bad\u001b[2J","steps":[{"step":"fr\u001b[31meeze\u009b2J","ok":false,"path":"/x\u001b","error":"e\u001b[0m"}]}'
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" health
	assert_success
	assert_line 'state: \x1b[31mready\x1b]0;owned\x07'
	[[ "$output" != *$'\e'* ]]
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" snapshot-prepare
	assert_failure 1
	assert_output 'FAIL fr\x1b[31meeze\u009b2J /x\x1b: e\x1b[0m'
	[[ "$stderr" == *'bad\x1b[2J'* ]]
	[[ "$stderr" != *$'\e'* ]]
	run --separate-stderr stereo-host --json --tcp "$PEER_ADDR" snapshot-prepare
	assert_failure 1
	[ "$(echo "$output" | jq -r '.steps[0].step')" = $'fr\e[31meeze\u009b2J' ]
}
