#!/usr/bin/env bats
# stereo-health as a readiness probe: exit 0 ready/healthy, 1 booting/degraded/shutdown, 3
# unreachable; --json, --agents, --wait. The real stereod for the states it really reaches;
# the HTTP mode of the test peer for "booting" and scripted sequences.
load helpers
load helpers/clis

teardown() { clis_teardown; }

@test "a ready stereod exits 0 and prints its state" {
	start_stereod
	run stereo-health
	assert_success
	assert_output ready
	run stereo-health --json
	assert_success
	echo "$output" | jq -e '.state == "ready" and (.uptime_seconds | type == "number")'
}

@test "healthy with --agents lists the agents, --json always has the agents array" {
	mkdir -p "$BATS_TEST_TMPDIR/agentd"
	echo '[{"name":"claude","running":true,"restarts":1,"session":"tmux-1"}]' >"$BATS_TEST_TMPDIR/agentd/agents"
	"$STEREO_T/fake_agentd" "$BATS_TEST_TMPDIR/agentd.sock" "$BATS_TEST_TMPDIR/agentd" 2>/dev/null &
	BG_PIDS=$!
	wait_for test -S "$BATS_TEST_TMPDIR/agentd.sock"
	start_stereod --agentd-socket "$BATS_TEST_TMPDIR/agentd.sock" --poll-interval 100ms
	run stereo-health --wait 10s --interval 50ms
	assert_success
	assert_output healthy
	run stereo-health --agents
	assert_success
	assert_line --index 0 healthy
	assert_line --index 1 'agent claude: running, restarts 1, session tmux-1'
	run stereo-health --agents --json
	assert_success
	echo "$output" | jq -e '.state == "healthy" and .agents[0].name == "claude" and .agents[0].restarts == 1'
}

@test "--agents --json has an empty agents array when there are none" {
	start_stereod
	run stereo-health --agents --json
	assert_success
	echo "$output" | jq -e '.state == "ready" and .agents == []'
	run stereo-health --agents
	assert_line --index 1 'agents: none'
}

@test "degraded exits 1 (agentd failing after it answered)" {
	mkdir -p "$BATS_TEST_TMPDIR/agentd"
	echo '[{"name":"a","running":true,"restarts":0}]' >"$BATS_TEST_TMPDIR/agentd/agents"
	"$STEREO_T/fake_agentd" "$BATS_TEST_TMPDIR/agentd.sock" "$BATS_TEST_TMPDIR/agentd" 2>/dev/null &
	BG_PIDS=$!
	wait_for test -S "$BATS_TEST_TMPDIR/agentd.sock"
	start_stereod --agentd-socket "$BATS_TEST_TMPDIR/agentd.sock" --poll-interval 100ms
	stereo-health --wait 10s --interval 50ms
	echo error >"$BATS_TEST_TMPDIR/agentd/mode"
	wait_for sh -c '[ "$(stereo-health)" = degraded ]'
	run stereo-health --json
	assert_failure 1
	echo "$output" | jq -e '.state == "degraded"'
}

@test "shutdown exits 1, and --wait stops at once instead of waiting it out" {
	start_stereod
	stereo-host shutdown
	run stereo-health
	assert_failure 1
	assert_output shutdown
	run stereo-health --wait 60s
	assert_failure 1
	assert_output shutdown
}

@test "booting exits 1; --wait polls until ready" {
	start_peer boot --unix "$BATS_TEST_TMPDIR/boot.sock" --http --states booting,booting,ready
	run stereo-health --socket "$BATS_TEST_TMPDIR/boot.sock"
	assert_failure 1
	assert_output booting
	run stereo-health --socket "$BATS_TEST_TMPDIR/boot.sock" --wait 10s --interval 20ms
	assert_success
	assert_output ready
	[ "$(grep -c 'GET /v1/health' "$BATS_TEST_TMPDIR/boot.rec")" -eq 3 ]
}

@test "--wait gives up at its deadline with the last answer's exit code" {
	start_peer boot --unix "$BATS_TEST_TMPDIR/boot.sock" --http --states booting
	run stereo-health --socket "$BATS_TEST_TMPDIR/boot.sock" --wait 1500ms --interval 100ms
	assert_failure 1
	assert_output booting
}

@test "unreachable stereod exits 3, --json explains" {
	run --separate-stderr stereo-health --socket "$BATS_TEST_TMPDIR/none.sock"
	assert_failure 3
	assert_output ''
	[[ $stderr == "stereo-health: health: connecting to "* ]]
	run --separate-stderr stereo-health --socket "$BATS_TEST_TMPDIR/none.sock" --json --wait 200ms
	assert_failure 3
	echo "$output" | jq -e '.ok == false'
}

@test "a socket that never answers times out with exit 3" {
	start_peer silent --unix "$BATS_TEST_TMPDIR/silent.sock" --silent
	run --separate-stderr stereo-health --socket "$BATS_TEST_TMPDIR/silent.sock" --timeout 300ms
	assert_failure 3
	[[ $stderr == *"timed out"* ]]
}

@test "--wait bounds each request by its deadline (a silent socket does not cost --timeout)" {
	start_peer silent --unix "$BATS_TEST_TMPDIR/silent.sock" --silent
	# the default per-request timeout is 10 s; the hang guard fires long before that
	run --separate-stderr timeout 5 stereo-health --socket "$BATS_TEST_TMPDIR/silent.sock" --wait 300ms
	assert_failure 3
	[[ $stderr == *"timed out"* ]]
}

@test "--wait picks up a stereod that starts late" {
	mkdir -p "$BATS_TEST_TMPDIR/root"
	timeout 30 stereo-health --socket "$BATS_TEST_TMPDIR/root/run/stereos/stereosd.sock" \
		--wait 20s --interval 50ms >"$BATS_TEST_TMPDIR/out" &
	local pid=$!
	BG_PIDS=$pid
	start_stereod
	bg_status $pid
	[ "$BG_STATUS" -eq 0 ]
	[ "$(cat "$BATS_TEST_TMPDIR/out")" = ready ]
}

@test "STEREO_SOCKET is used, --socket wins over it" {
	start_stereod
	STEREO_SOCKET=$SOCK run stereo-health
	assert_success
	STEREO_SOCKET=$SOCK run stereo-health --socket "$BATS_TEST_TMPDIR/none.sock"
	assert_failure 3
}

@test "usage errors exit 2, --help anywhere prints the help" {
	run stereo-health extra;          assert_failure 2
	run stereo-health --wait soon;    assert_failure 2
	run stereo-health --interval 0;   assert_failure 2
	run stereo-health --timeout 0;    assert_failure 2
	run stereo-health --bogus;        assert_failure 2
	run stereo-health --wait 1s --help
	assert_success
	assert_output --partial "usage: stereo-health"
	assert_output --partial "Exit codes:"
}
