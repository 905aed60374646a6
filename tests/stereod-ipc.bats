#!/usr/bin/env bats
# stereod IPC HTTP API on the unix socket: every route's success shape and the generic errors
# (404, 405, 413), keep-alive, and shutdown over HTTP.
load helpers
load helpers/stereod

setup() { stereod_setup; }
teardown() { stop_stereod; }

@test "GET /v1/ping answers {\"status\":\"ok\"} as JSON" {
	start_stereod
	run curl -s -i --unix-socket "$SOCK" http://stereod/v1/ping
	assert_output --partial 'HTTP/1.1 200 OK'
	assert_output --partial 'Content-Type: application/json'
	assert_output --partial '{"status":"ok"}'
}

@test "GET /v1/health answers the health payload" {
	start_stereod
	run ipc GET /v1/health
	assert_output '200 {"state":"ready","uptime_seconds":0}'
}

@test "GET /v1/agents answers [] without agentd and the agents once it reports them" {
	A=$BATS_TEST_TMPDIR/agentd
	mkdir -p "$A"
	start_stereod
	run ipc GET /v1/agents
	assert_output '200 {"agents":[]}'
	echo '[{"name":"x","running":true,"restarts":1,"type":"claude"}]' >"$A/agents"
	"$STEREO_T/fake_agentd" "$R/run/stereos/agentd.sock" "$A" &
	AGENTD=$!
	wait_state healthy
	run ipc GET /v1/agents
	kill "$AGENTD"
	assert_output '200 {"agents":[{"name":"x","running":true,"restarts":1}]}'
}

@test "unknown paths answer 404 and wrong methods 405, as JSON errors" {
	start_stereod
	run ipc GET /v1/nothing
	assert_output '404 {"error":"not found"}'
	run ipc DELETE /v1/ping
	assert_output '405 {"error":"method not allowed"}'
	run ipc PUT /v1/secrets '{}'
	assert_output '405 {"error":"method not allowed"}'
	run ipc GET /v1/secrets/x
	assert_output '405 {"error":"method not allowed"}'
}

@test "a body over 1 MiB is refused with 413 and nothing is written" {
	start_stereod
	head -c $((1024 * 1024 + 10)) /dev/zero | tr '\0' a >"$BATS_TEST_TMPDIR/big"
	run curl -s -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" -X POST \
		--data-binary @"$BATS_TEST_TMPDIR/big" http://stereod/v1/secrets
	assert_output 413
	[ -z "$(ls -A "$R/run/stereos/secrets")" ]
}

@test "keep-alive: several requests on one connection" {
	start_stereod
	run curl -s -v --unix-socket "$SOCK" http://stereod/v1/ping http://stereod/v1/health http://stereod/v1/secrets
	assert_output --partial 'Re-using existing connection'
	assert_output --partial '{"secrets":[]}'
}

@test "POST /v1/shutdown answers 202, then runs the shutdown" {
	start_stereod
	run ipc POST /v1/shutdown '{"reason":"maintenance"}'
	assert_output '202 {"status":"shutting_down"}'
	wait_file "$EV" poweroff
	grep -q 'reason="maintenance"' "$LOG"
	run ipc GET /v1/health
	assert_output --partial '"state":"shutdown"'
}

@test "POST /v1/shutdown without a body is accepted and a bad body is 400" {
	start_stereod
	run ipc POST /v1/shutdown '{"reason":5}'
	assert_output '400 {"error":"reason: expected a string"}'
	run ipc POST /v1/shutdown
	assert_output '202 {"status":"shutting_down"}'
	wait_file "$EV" poweroff
}
