#!/usr/bin/env bats
# stereo-secret against the real stereod over its unix socket: set (stdin, file, env), list,
# rm, refusals, exit codes for an unreachable or silent socket, values kept out of argv, /proc
# and stereod's log.
load helpers
load helpers/clis

teardown() { clis_teardown; }

@test "set from stdin stores the exact bytes; list shows the name" {
	start_stereod
	run stereo-secret set api_key < <(printf 'multi\nline "value" \xe2\x82\xac\n')
	assert_success
	assert_output ''
	cmp "$ROOT/run/stereos/secrets/api_key" <(printf 'multi\nline "value" \xe2\x82\xac\n')
	[ "$(stat -c %a "$ROOT/run/stereos/secrets/api_key")" = 600 ]
	run stereo-secret list
	assert_success
	assert_output api_key
}

@test "set --from-file with --mode and --from-env" {
	start_stereod
	printf 'filevalue' >"$BATS_TEST_TMPDIR/v"
	run stereo-secret set one --from-file "$BATS_TEST_TMPDIR/v" --mode 0640
	assert_success
	[ "$(cat "$ROOT/run/stereos/secrets/one")" = filevalue ]
	[ "$(stat -c %a "$ROOT/run/stereos/secrets/one")" = 640 ]
	VAL=envvalue run stereo-secret set two --from-env VAL
	assert_success
	[ "$(cat "$ROOT/run/stereos/secrets/two")" = envvalue ]
}

@test "list --json and set --json print valid JSON" {
	start_stereod
	run stereo-secret list --json
	assert_success
	echo "$output" | jq -e '.secrets == []'
	run stereo-secret --json set b <<<x
	assert_success
	echo "$output" | jq -e '.status == "ok" and .name == "b"'
	stereo-secret set a <<<y
	run stereo-secret --json list
	echo "$output" | jq -e '(.secrets | sort) == ["a", "b"]'
}

@test "rm removes a secret, removing a missing one succeeds" {
	start_stereod
	stereo-secret set gone <<<x
	run stereo-secret rm gone
	assert_success
	assert_file_not_exists "$ROOT/run/stereos/secrets/gone"
	run stereo-secret rm gone
	assert_success
	run stereo-secret --json rm never-was
	assert_success
	echo "$output" | jq -e '.status == "ok" and .name == "never-was"'
}

@test "names with spaces and non-ASCII characters survive the URL of rm" {
	start_stereod
	stereo-secret set 'my key é' <<<x
	assert_file_exists "$ROOT/run/stereos/secrets/my key é"
	run stereo-secret list
	assert_output 'my key é'
	run stereo-secret rm 'my key é'
	assert_success
	assert_file_not_exists "$ROOT/run/stereos/secrets/my key é"
}

@test "a name stereod refuses exits 1 with its error and writes nothing" {
	start_stereod
	for bad in ../up .hidden 'a/b' '..'; do
		run --separate-stderr stereo-secret set "$bad" <<<x
		assert_failure 1
		[[ $stderr == "stereo-secret: set: "*"(HTTP 4"* ]]
	done
	run --separate-stderr stereo-secret --json rm ../up
	assert_failure 1
	echo "$output" | jq -e '.ok == false'
	run ls -A "$ROOT/run/stereos/secrets"
	assert_output ''
}

@test "--socket overrides STEREO_SOCKET" {
	start_stereod
	STEREO_SOCKET=$BATS_TEST_TMPDIR/nowhere.sock run stereo-secret --socket "$SOCK" list
	assert_success
	STEREO_SOCKET=$BATS_TEST_TMPDIR/nowhere.sock run stereo-secret list
	assert_failure 3
}

@test "an unreachable socket exits 3, --json says why" {
	run --separate-stderr stereo-secret --socket "$BATS_TEST_TMPDIR/none.sock" --json list
	assert_failure 3
	echo "$output" | jq -e '.ok == false and (.error | test("No such file"))'
	[[ $stderr == "stereo-secret: list: connecting to "* ]]
}

@test "a socket that never answers times out with exit 3" {
	start_peer silent --unix "$BATS_TEST_TMPDIR/silent.sock" --silent
	run --separate-stderr stereo-secret --socket "$BATS_TEST_TMPDIR/silent.sock" --timeout 300ms set x <<<v
	assert_failure 3
	[[ $stderr == *"timed out"* ]]
}

@test "set refuses to read the value from a terminal (no hidden prompt)" {
	run script -qec "stereo-secret --socket $BATS_TEST_TMPDIR/none.sock set db" /dev/null
	assert_failure 2
	assert_output --partial 'refusing to read a secret from a terminal'
}

@test "usage errors exit 2, --help anywhere prints the help" {
	run stereo-secret;                          assert_failure 2
	run stereo-secret frob;                     assert_failure 2
	run stereo-secret set;                      assert_failure 2
	run stereo-secret set name value-in-argv;   assert_failure 2
	run stereo-secret set n --mode 8;           assert_failure 2
	run stereo-secret set n --from-file f --from-env E; assert_failure 2
	run stereo-secret list --mode 0600;         assert_failure 2
	run stereo-secret rm;                       assert_failure 2
	run stereo-secret --timeout x list;         assert_failure 2
	run stereo-secret set n --from-env STEREO_UNSET_VAR_X; assert_failure 2
	run stereo-secret set x --help
	assert_success
	assert_output --partial "usage: stereo-secret"
	assert_output --partial "Exit codes:"
}

@test "secret values never reach argv, /proc/PID/environ, stereod's log or our errors" {
	start_stereod
	local v1=stdin-Hh71aQ v2=file-Lr30sW v3=env-Pq02mZ
	printf %s "$v2" >"$BATS_TEST_TMPDIR/v2"
	stereo-secret set a <<<"$v1"
	stereo-secret set b --from-file "$BATS_TEST_TMPDIR/v2"
	SV=$v3 stereo-secret set c --from-env SV
	run --separate-stderr stereo-secret set ../refused <<<"$v1"
	assert_failure 1
	[[ $stderr != *"$v1"* ]]
	run grep -r -e "$v1" -e "$v2" -e "$v3" "$LOG"
	assert_failure
	local pids=""
	start_peer m1 --unix "$BATS_TEST_TMPDIR/m1.sock" --mute
	stereo-secret --socket "$BATS_TEST_TMPDIR/m1.sock" --timeout 20s set a <<<"$v1" &
	pids="$pids $!"
	start_peer m2 --unix "$BATS_TEST_TMPDIR/m2.sock" --mute
	stereo-secret --socket "$BATS_TEST_TMPDIR/m2.sock" --timeout 20s set b --from-file "$BATS_TEST_TMPDIR/v2" &
	pids="$pids $!"
	start_peer m3 --unix "$BATS_TEST_TMPDIR/m3.sock" --mute
	SV=$v3 stereo-secret --socket "$BATS_TEST_TMPDIR/m3.sock" --timeout 20s set c --from-env SV &
	pids="$pids $!"
	BG_PIDS=$pids
	for m in m1 m2 m3; do wait_file "$BATS_TEST_TMPDIR/$m.rec" 'POST /v1/secrets'; done
	run sh -c 'ps -eo args; for p in '"$pids"'; do cat /proc/$p/cmdline /proc/$p/environ | tr "\0" "\n"; done'
	assert_success
	assert_output --partial 'set c --from-env SV'
	refute_output --partial "$v1"
	refute_output --partial "$v2"
	refute_output --partial "$v3"
}
