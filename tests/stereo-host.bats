#!/usr/bin/env bats
# stereo-host against the real stereod over TCP: every subcommand, --json output checked with
# jq, secrets kept out of argv, /proc and logs, wait-ready against a late daemon, events.
load helpers
load helpers/clis

teardown() { clis_teardown; }

@test "ping gets a pong and reports the round trip" {
	start_stereod
	run stereo-host ping
	assert_success
	assert_output --regexp "^pong from tcp://$ADDR in [0-9.]+ ms$"
	run stereo-host --tcp "$ADDR" --json ping
	assert_success
	echo "$output" | jq -e '.ok == true and (.rtt_us | type == "number")'
}

@test "health prints the state and uptime, --json the health payload" {
	start_stereod
	run stereo-host health
	assert_success
	assert_line 'state: ready'
	assert_line --regexp '^uptime: [0-9]+s$'
	assert_line 'agents: none'
	run stereo-host health --json
	assert_success
	echo "$output" | jq -e '.state == "ready" and (.uptime_seconds | type == "number")'
}

@test "health lists the agents stereod got from agentd" {
	mkdir -p "$BATS_TEST_TMPDIR/agentd"
	echo '[{"name":"claude","type":"claude-code","running":true,"session":"s1","restarts":2}]' \
		>"$BATS_TEST_TMPDIR/agentd/agents"
	"$STEREO_T/fake_agentd" "$BATS_TEST_TMPDIR/agentd.sock" "$BATS_TEST_TMPDIR/agentd" 2>/dev/null &
	BG_PIDS=$!
	wait_for test -S "$BATS_TEST_TMPDIR/agentd.sock"
	start_stereod --agentd-socket "$BATS_TEST_TMPDIR/agentd.sock" --poll-interval 100ms
	wait_for sh -c 'stereo-host --json health | jq -e ".state == \"healthy\""'
	run stereo-host health
	assert_success
	assert_line 'state: healthy'
	assert_line 'agent claude: running, restarts 2, session s1'
	run stereo-host --json health
	echo "$output" | jq -e '.agents[0].name == "claude" and .agents[0].running == true'
}

@test "hello shows the protocol version and the id capability" {
	start_stereod
	run stereo-host hello
	assert_success
	assert_line 'proto: 1'
	assert_line --regexp '^capabilities: .*\bid\b'
	run stereo-host --json hello
	echo "$output" | jq -e '.proto == 1 and (.capabilities | index("id")) and (.version | type == "string")'
}

@test "set-config FILE and set-config - write jcard.toml" {
	start_stereod
	printf '[agent]\nname = "a <b> & c"\n' >"$BATS_TEST_TMPDIR/jcard.toml"
	run stereo-host set-config "$BATS_TEST_TMPDIR/jcard.toml"
	assert_success
	assert_output ''
	cmp "$BATS_TEST_TMPDIR/jcard.toml" "$ROOT/etc/stereos/jcard.toml"
	run stereo-host --json set-config - <<<'x = 2'
	assert_success
	echo "$output" | jq -e '.ok == true and .reply_to == "set_config"'
	[ "$(cat "$ROOT/etc/stereos/jcard.toml")" = 'x = 2' ]
}

@test "secret set stores the exact bytes from stdin with mode 0600" {
	start_stereod
	printf 'line one\n"quoted" <tag> & \xc3\xa9\n' | stereo-host secret set db
	cmp "$ROOT/run/stereos/secrets/db" <(printf 'line one\n"quoted" <tag> & \xc3\xa9\n')
	[ "$(stat -c %a "$ROOT/run/stereos/secrets/db")" = 600 ]
}

@test "secret set --from-file with --mode, and --from-env" {
	start_stereod
	printf 'from-a-file' >"$BATS_TEST_TMPDIR/value"
	run stereo-host secret set token --from-file "$BATS_TEST_TMPDIR/value" --mode 0640
	assert_success
	[ "$(cat "$ROOT/run/stereos/secrets/token")" = from-a-file ]
	[ "$(stat -c %a "$ROOT/run/stereos/secrets/token")" = 640 ]
	MY_SECRET=from-the-env run stereo-host --json secret set envy --from-env MY_SECRET
	assert_success
	echo "$output" | jq -e '.ok == true and .reply_to == "inject_secret"'
	[ "$(cat "$ROOT/run/stereos/secrets/envy")" = from-the-env ]
}

@test "secret set with a name the guest refuses exits 1 with its error" {
	start_stereod
	run --separate-stderr stereo-host secret set ../escape <<<'v'
	assert_failure 1
	[[ $stderr == "stereo-host: secret set: "* ]]
	assert_file_not_exists "$ROOT/run/stereos/escape"
	run --separate-stderr stereo-host --json secret set .hidden <<<'v'
	assert_failure 1
	echo "$output" | jq -e '.ok == false and (.error | length > 0)'
}

@test "secret values never reach argv, /proc/PID/environ, stereod's log or our errors" {
	start_stereod
	local v1=stdin-Zq81hG v2=file-Kx27pL v3=env-Wm55rT
	stereo-host secret set a <<<"$v1"
	printf %s "$v2" >"$BATS_TEST_TMPDIR/v2"
	stereo-host secret set b --from-file "$BATS_TEST_TMPDIR/v2"
	SECRET_VAR=$v3 stereo-host secret set c --from-env SECRET_VAR
	[ "$(cat "$ROOT/run/stereos/secrets/c")" = "$v3" ]
	run --separate-stderr stereo-host secret set ../refused <<<"$v1"
	assert_failure 1
	[[ $stderr != *"$v1"* ]]
	run grep -r -e "$v1" -e "$v2" -e "$v3" "$LOG"
	assert_failure
	# while requests are in flight (peers that never answer), look at the processes
	local pids=""
	start_peer m1 --mute
	stereo-host --tcp "$PEER_ADDR" --timeout 20s secret set a <<<"$v1" &
	pids="$pids $!"
	start_peer m2 --mute
	stereo-host --tcp "$PEER_ADDR" --timeout 20s secret set b --from-file "$BATS_TEST_TMPDIR/v2" &
	pids="$pids $!"
	start_peer m3 --mute
	SECRET_VAR=$v3 stereo-host --tcp "$PEER_ADDR" --timeout 20s secret set c --from-env SECRET_VAR &
	pids="$pids $!"
	BG_PIDS=$pids
	for m in m1 m2 m3; do wait_file "$BATS_TEST_TMPDIR/$m.rec" hello; done
	run sh -c 'ps -eo args; for p in '"$pids"'; do cat /proc/$p/cmdline /proc/$p/environ | tr "\0" "\n"; done'
	assert_success
	assert_output --partial 'secret set c --from-env SECRET_VAR'
	refute_output --partial "$v1"
	refute_output --partial "$v2"
	refute_output --partial "$v3"
}

@test "ssh-key add installs the key from a file or stdin" {
	mkdir -p "$BATS_TEST_TMPDIR/root/etc" "$BATS_TEST_TMPDIR/root/home/agent"
	echo "agent:x:0:0::/home/agent:/bin/sh" >"$BATS_TEST_TMPDIR/root/etc/passwd"   # resolved inside --root
	start_stereod
	echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE1 me@host' >"$BATS_TEST_TMPDIR/key.pub"
	run stereo-host ssh-key add agent "$BATS_TEST_TMPDIR/key.pub"
	assert_success
	cmp "$BATS_TEST_TMPDIR/key.pub" "$ROOT/home/agent/.ssh/authorized_keys"
	echo 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB other@host' | stereo-host ssh-key add agent -
	[ "$(cat "$ROOT/home/agent/.ssh/authorized_keys")" = 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB other@host' ]
}

@test "ssh-key add with a bad key or unknown user exits 1" {
	start_stereod
	run --separate-stderr stereo-host ssh-key add agent - <<<'not-a-key AAAA'
	assert_failure 1
	[[ $stderr == "stereo-host: ssh-key add: "* ]]
	run --separate-stderr stereo-host ssh-key add nobody-here - <<<'ssh-ed25519 AAAA x'
	assert_failure 1
}

@test "mount asks stereod to mount the share, --ro included" {
	start_stereod --mount-helper "echo \"\$@\" >>'$BATS_TEST_TMPDIR/mounts'"
	run stereo-host mount share /mnt/data --type virtiofs --ro
	assert_success
	run stereo-host --json mount other /mnt/nine --type 9p
	assert_success
	echo "$output" | jq -e '.ok == true and .reply_to == "mount"'
	run cat "$BATS_TEST_TMPDIR/mounts"
	assert_line --index 0 --regexp '^virtiofs share .*/mnt/data ro$'
	assert_line --index 1 --regexp '^9p other .*/mnt/nine rw$'
}

@test "mount on a system directory exits 1 with the guest's reason" {
	start_stereod --mount-helper true
	run --separate-stderr stereo-host mount share /etc --type virtiofs
	assert_failure 1
	[[ $stderr == "stereo-host: mount: "* ]]
}

@test "shutdown is acknowledged, then the guest powers off" {
	start_stereod
	run stereo-host shutdown tests are done
	assert_success
	wait_file "$BATS_TEST_TMPDIR/poweroff" poweroff
	grep -q 'tests are done' "$LOG"
}

@test "events prints the lifecycle pushes of a shutdown as JSON lines" {
	start_stereod
	stereo-host events >"$BATS_TEST_TMPDIR/events" 2>"$BATS_TEST_TMPDIR/events.err" &
	BG_PIDS=$!
	wait_file "$BATS_TEST_TMPDIR/events.err" subscribed
	stereo-host shutdown
	wait_file "$BATS_TEST_TMPDIR/events" shutdown
	run jq -e -s 'all(.type == "lifecycle") and (map(.payload.state) | index("shutdown"))' \
		"$BATS_TEST_TMPDIR/events"
	assert_success
}

@test "events --count N exits 0 after N pushes (agentd makes the guest healthy)" {
	mkdir -p "$BATS_TEST_TMPDIR/agentd"
	echo '[{"name":"a1","running":true,"restarts":0}]' >"$BATS_TEST_TMPDIR/agentd/agents"
	start_stereod --agentd-socket "$BATS_TEST_TMPDIR/agentd.sock" --poll-interval 100ms
	timeout 30 stereo-host events --count 1 >"$BATS_TEST_TMPDIR/events" 2>"$BATS_TEST_TMPDIR/events.err" &
	local pid=$!
	BG_PIDS=$pid
	wait_file "$BATS_TEST_TMPDIR/events.err" subscribed
	"$STEREO_T/fake_agentd" "$BATS_TEST_TMPDIR/agentd.sock" "$BATS_TEST_TMPDIR/agentd" 2>/dev/null &
	BG_PIDS="$pid $!"
	bg_status $pid
	[ "$BG_STATUS" -eq 0 ]
	run jq -e '.type == "lifecycle" and .payload.state == "healthy"' "$BATS_TEST_TMPDIR/events"
	assert_success
}

@test "wait-ready returns once a late stereod comes up" {
	local port
	port=$(free_port)
	timeout 30 stereo-host --tcp "127.0.0.1:$port" wait-ready --interval 50ms --timeout 20s \
		>"$BATS_TEST_TMPDIR/wait" 2>&1 &
	local pid=$!
	BG_PIDS=$pid
	# it is polling against a refused port now; then the daemon arrives
	start_stereod --listen "127.0.0.1:$port"
	bg_status $pid
	[ "$BG_STATUS" -eq 0 ]
	run cat "$BATS_TEST_TMPDIR/wait"
	assert_output ready
}
