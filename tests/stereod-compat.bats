#!/usr/bin/env bats
# stereod as a drop-in for upstream stereosd: what a Go client of stereosd relies on and
# stereod once did differently (docs/stereod.md, "Drop-in"). The byte-for-byte replay of
# upstream's recorded answers is tests/conformance.bats.
load helpers
load helpers/stereod

setup() { stereod_setup; S=$R/run/stereos/secrets; }
teardown() {
	[ -z "${AGENTD:-}" ] || { kill "$AGENTD" 2>/dev/null; wait "$AGENTD" 2>/dev/null || true; }
	stop_stereod
}

@test "degraded: a client without hello sees ready plus a degraded field; hello, subscribers and IPC see degraded" {
	A=$BATS_TEST_TMPDIR/agentd
	mkdir -p "$A"
	echo '[{"name":"a1","running":false,"restarts":3,"error":"exit status 1"}]' >"$A/agents"
	start_stereod
	"$STEREO_T/fake_agentd" "$R/run/stereos/agentd.sock" "$A" &
	AGENTD=$!
	wait_state degraded
	# an old client (the real host client's WaitForReady): upstream's state, reason beside it
	run nd <<<'{"type":"get_health"}'
	[ "$(jq -r .payload.state <<<"$output")" = ready ]
	[ "$(jq -r .payload.degraded.reason <<<"$output")" = "agent a1 reports an error" ]
	# hello
	run nd <<<$'{"type":"hello"}\n{"type":"get_health"}'
	[ "$(tail -1 <<<"$output" | jq -r .payload.state)" = degraded ]
	[ "$(tail -1 <<<"$output" | jq -c '.payload | has("degraded")')" = false ]
	# a subscriber
	run nd <<<$'{"type":"subscribe"}\n{"type":"get_health"}'
	[ "$(tail -1 <<<"$output" | jq -r .payload.state)" = degraded ]
	# the IPC API (our CLIs)
	run ipc GET /v1/health
	[ "$(cut -d' ' -f2- <<<"$output" | jq -r .state)" = degraded ]
	run stereo-health --socket "$SOCK" --json
	[ "$(jq -r .state <<<"$output")" = degraded ]
}

@test "degraded after an agent ran: a client without hello sees healthy, as upstream never leaves it" {
	A=$BATS_TEST_TMPDIR/agentd
	mkdir -p "$A"
	echo '[{"name":"a1","running":true,"restarts":0}]' >"$A/agents"
	start_stereod
	"$STEREO_T/fake_agentd" "$R/run/stereos/agentd.sock" "$A" &
	AGENTD=$!
	wait_state healthy
	echo '[{"name":"a1","running":false,"restarts":1,"error":"oom"}]' >"$A/agents"
	wait_state degraded
	run nd <<<'{"type":"get_health"}'
	[ "$(jq -r .payload.state <<<"$output")" = healthy ]
	[ "$(jq -r .payload.degraded.reason <<<"$output")" = "agent a1 reports an error" ]
}

@test "secret names of 252 to 255 bytes are written, and a temp file left by a kill -9 is removed at start" {
	start_stereod
	for n in 252 255; do
		name=$(printf 'n%.0s' $(seq 1 "$n"))
		run nd <<<"{\"type\":\"inject_secret\",\"payload\":{\"name\":\"$name\",\"value\":\"v$n\"}}"
		assert_output '{"type":"ack","payload":{"reply_to":"inject_secret","ok":true}}'
		[ "$(cat "$S/$name")" = "v$n" ]
	done
	# kill -9 while big secrets are being written, then restart
	big=$(head -c 600000 /dev/zero | tr '\0' x)
	for i in $(seq 1 20); do echo "{\"type\":\"inject_secret\",\"payload\":{\"name\":\"big$i\",\"value\":\"$big\"}}"; done \
		>"$BATS_TEST_TMPDIR/big"
	"$STEREO_T/ndjson_client" "$ADDR" <"$BATS_TEST_TMPDIR/big" >/dev/null 2>&1 &
	client=$!
	wait_for sh -c "ls -A '$S' | grep -q big"
	kill -9 "$STEREOD_PID"
	wait "$STEREOD_PID" 2>/dev/null || true
	wait "$client" 2>/dev/null || true
	STEREOD_PID=
	# and one a killed writer surely left (the kill above may land between two writes)
	: >"$S/.stereo-tmp-0123456789ab"
	start_stereod
	[ -z "$(ls -A "$S" | grep '^\.')" ]
	grep -q 'msg="removed stale temp files from the secrets dir"' "$LOG"
}

@test "keys match as in Go: exact or ASCII case-insensitive, the last one wins, in NDJSON and IPC" {
	start_stereod
	run nd <<'EOF2'
{"TYPE":"ping"}
{"Type":"ping","Payload":null}
{"type":"inject_secret","payload":{"NAME":"casey","Value":"v"}}
{"type":"ping","TYPE":"get_health"}
{"\u0074ype":"ping"}
EOF2
	assert_line -n 0 '{"type":"pong"}'
	assert_line -n 1 '{"type":"pong"}'
	assert_line -n 2 '{"type":"ack","payload":{"reply_to":"inject_secret","ok":true}}'
	assert_line -n 3 --partial '{"type":"health",'
	assert_line -n 4 '{"type":"pong"}'
	[ "$(cat "$S/casey")" = v ]
	run ipc POST /v1/secrets '{"Name":"ipc","VALUE":"w"}'
	assert_output '201 {"status":"ok","name":"ipc"}'
	[ "$(cat "$S/ipc")" = w ]
}

@test "an id of null is no id: the request runs; another bad id is refused with the real reply_to" {
	start_stereod
	run nd <<'EOF2'
{"type":"inject_secret","id":null,"payload":{"name":"nullid","value":"v"}}
{"type":"inject_secret","id":{"a":1},"payload":{"name":"badid","value":"v"}}
EOF2
	assert_line -n 0 '{"type":"ack","payload":{"reply_to":"inject_secret","ok":true}}'
	assert_line -n 1 '{"type":"ack","payload":{"reply_to":"inject_secret","ok":false,"error":"id must be a string or a number of at most 128 bytes"}}'
	[ "$(cat "$S/nullid")" = v ]
	[ ! -e "$S/badid" ]
}

@test "a missing value or content writes an empty secret or config, as upstream does" {
	start_stereod
	echo old >"$R/etc/stereos/jcard.toml"
	run nd <<'EOF2'
{"type":"inject_secret","payload":{"name":"empty"}}
{"type":"set_config","payload":{}}
{"type":"set_config","payload":null}
EOF2
	assert_line -n 0 '{"type":"ack","payload":{"reply_to":"inject_secret","ok":true}}'
	assert_line -n 1 '{"type":"ack","payload":{"reply_to":"set_config","ok":true}}'
	assert_line -n 2 '{"type":"ack","payload":{"reply_to":"set_config","ok":true}}'
	[ -f "$S/empty" ] && [ ! -s "$S/empty" ]
	[ ! -s "$R/etc/stereos/jcard.toml" ]
}

@test "a line of blanks gets upstream's malformed-JSON ack; only an empty line is skipped" {
	start_stereod
	run nd < <(printf ' \t \n\n\r\n{"type":"ping"}\n')
	assert_output '{"type":"ack","payload":{"reply_to":"","ok":false,"error":"malformed JSON: unexpected end of JSON input"}}
{"type":"pong"}'
}
