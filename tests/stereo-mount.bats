#!/usr/bin/env bats
# stereo-mount against the real stereod over its unix socket (stereod's --mount-helper test
# hook records the mounts instead of calling mount(2)): mount, list, refusals, exit codes.
load helpers
load helpers/clis

teardown() { clis_teardown; }

start_with_helper() {
	start_stereod --mount-helper "echo \"\$@\" >>'$BATS_TEST_TMPDIR/mounts'" "$@"
}

@test "mounts a virtiofs share read-only and a 9p share read-write" {
	start_with_helper
	run stereo-mount share /mnt/data --type virtiofs --ro
	assert_success
	assert_output ''
	run stereo-mount --type 9p nine /mnt/nine
	assert_success
	run cat "$BATS_TEST_TMPDIR/mounts"
	assert_line --index 0 --regexp '^virtiofs share .*/mnt/data ro$'
	assert_line --index 1 --regexp '^9p nine .*/mnt/nine rw$'
}

@test "list prints the mounts in order, --json as stereod's mounts array" {
	start_with_helper
	run stereo-mount list
	assert_success
	assert_output ''
	stereo-mount share /mnt/data --type virtiofs --ro
	stereo-mount nine /mnt/nine --type 9p
	run stereo-mount list
	assert_success
	assert_line --index 0 'share /mnt/data virtiofs ro'
	assert_line --index 1 'nine /mnt/nine 9p rw'
	run stereo-mount --json list
	assert_success
	echo "$output" | jq -e '.mounts | length == 2 and .[0].tag == "share" and .[0].read_only == true and .[1].fs_type == "9p"'
}

@test "mount --json prints stereod's reply" {
	start_with_helper
	run stereo-mount --json share /mnt/data --type virtiofs
	assert_success
	echo "$output" | jq -e '.status == "ok" and .tag == "share" and .guest_path == "/mnt/data"'
}

@test "system directories and relative paths are refused with exit 1" {
	start_with_helper
	for p in /etc /proc/x / relative/path /run/stereos; do
		run --separate-stderr stereo-mount share "$p" --type virtiofs
		assert_failure 1
		[[ $stderr == "stereo-mount: mount: "*"(HTTP 4"* ]]
	done
	assert_file_not_exists "$BATS_TEST_TMPDIR/mounts"
}

@test "a failing mount is reported with exit 1" {
	start_stereod --mount-helper false
	run --separate-stderr stereo-mount share /mnt/data --type 9p
	assert_failure 1
	[[ $stderr == "stereo-mount: mount: "* ]]
}

@test "usage errors exit 2, --help anywhere prints the help" {
	run stereo-mount;                             assert_failure 2
	run stereo-mount share /mnt/x;                assert_failure 2
	run stereo-mount share /mnt/x --type nfs;     assert_failure 2
	run stereo-mount share --type 9p;             assert_failure 2
	run stereo-mount a b c --type 9p;             assert_failure 2
	run stereo-mount list --ro;                   assert_failure 2
	run stereo-mount --bogus list;                assert_failure 2
	run stereo-mount list --help
	assert_success
	assert_output --partial "usage: stereo-mount"
	assert_output --partial "Exit codes:"
}

@test "an unreachable or silent socket exits 3" {
	run --separate-stderr stereo-mount --socket "$BATS_TEST_TMPDIR/none.sock" list
	assert_failure 3
	start_peer silent --unix "$BATS_TEST_TMPDIR/silent.sock" --silent
	STEREO_SOCKET=$BATS_TEST_TMPDIR/silent.sock run --separate-stderr stereo-mount --timeout 300ms --json s /mnt/s --type 9p
	assert_failure 3
	echo "$output" | jq -e '.ok == false and (.error | test("timed out"))'
}
