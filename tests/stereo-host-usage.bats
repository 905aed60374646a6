#!/usr/bin/env bats
# stereo-host's command line: addresses (vsock parsing is checked with --show-addr only: this
# machine is itself a guest and must never connect over vsock), usage errors (exit 2, nothing
# sent), --help. Nothing here needs a daemon.
load helpers
load helpers/clis

teardown() { clis_teardown; }

@test "the default address is vsock CID 3 port 1024" {
	unset STEREO_HOST_ADDR
	run stereo-host --show-addr
	assert_success
	assert_output 'vsock://3:1024'
}

@test "--vsock CID takes the default port and CID:PORT both" {
	run stereo-host --vsock 42 --show-addr
	assert_output 'vsock://42:1024'
	run stereo-host --vsock 7:2000 --show-addr
	assert_output 'vsock://7:2000'
	run stereo-host --vsock 4294967295:4294967295 --show-addr
	assert_output 'vsock://4294967295:4294967295'
}

@test "STEREO_HOST_ADDR gives vsock:// and tcp:// addresses, flags override it" {
	STEREO_HOST_ADDR=vsock://5 run stereo-host --show-addr
	assert_output 'vsock://5:1024'
	STEREO_HOST_ADDR=vsock://5:77 run stereo-host --show-addr
	assert_output 'vsock://5:77'
	STEREO_HOST_ADDR=tcp://127.0.0.1:1024 run stereo-host --show-addr
	assert_output 'tcp://127.0.0.1:1024'
	STEREO_HOST_ADDR=tcp://127.0.0.1:1024 run stereo-host --vsock 9 --show-addr
	assert_output 'vsock://9:1024'
	STEREO_HOST_ADDR=vsock://5 run stereo-host --tcp '[::1]:99' --show-addr
	assert_output 'tcp://[::1]:99'
	STEREO_HOST_ADDR=not-an-address run stereo-host --tcp 127.0.0.1:7 --show-addr
	assert_success
	assert_output 'tcp://127.0.0.1:7'
}

@test "malformed addresses are usage errors (exit 2)" {
	for a in '' x 3: :5 3:x -1 4294967296 '3:1024:1' 1.5; do
		run --separate-stderr stereo-host --vsock "$a" --show-addr
		assert_failure 2
		[[ $stderr == *"bad vsock address"* ]]
	done
	for a in '' 127.0.0.1 127.0.0.1: :99 127.0.0.1:0 127.0.0.1:65536 127.0.0.1:x; do
		run --separate-stderr stereo-host --tcp "$a" --show-addr
		assert_failure 2
	done
	for a in 3:1024 vsock:3 http://x:1 'tcp://'; do
		STEREO_HOST_ADDR=$a run --separate-stderr stereo-host --show-addr
		assert_failure 2
		[[ $stderr == *"STEREO_HOST_ADDR"* || $stderr == *"address"* ]]
	done
}

@test "usage errors exit 2 and send nothing" {
	start_peer p --ids
	h() { stereo-host --tcp "$PEER_ADDR" "$@"; }
	run h;                                           assert_failure 2
	run h frobnicate;                                assert_failure 2
	run h ping extra;                                assert_failure 2
	run h secret;                                    assert_failure 2
	run h secret set;                                assert_failure 2
	run h secret set name value-on-the-command-line; assert_failure 2
	run h secret set name --mode 0999;               assert_failure 2
	run h secret set name --from-file a --from-env B; assert_failure 2
	run h ssh-key add agent;                         assert_failure 2
	run h mount tag /mnt/x;                          assert_failure 2
	run h mount tag /mnt/x --type ext4;              assert_failure 2
	run h ping --ro;                                 assert_failure 2
	run h wait-ready --interval 0;                   assert_failure 2
	run h wait-ready --timeout soon;                 assert_failure 2
	run h events --count 0;                          assert_failure 2
	run h set-config;                                assert_failure 2
	run stereo-host --timeout -1s --tcp "$PEER_ADDR" ping; assert_failure 2
	run stereo-host --bogus ping;                    assert_failure 2
	run peer_received p
	assert_output ''
}

@test "a usage error names the problem and points to --help" {
	run --separate-stderr stereo-host mount tag /mnt/x
	assert_failure 2
	[[ $stderr == *"stereo-host: mount needs --type virtiofs|9p"* ]]
	[[ $stderr == *"--help"* ]]
}

@test "--help lists every subcommand and the exit codes" {
	run stereo-host --help
	assert_success
	for c in ping health wait-ready set-config 'secret set' 'ssh-key add' mount shutdown events hello; do
		grep -qE "^  $c( |\$)" <<<"$output"
	done
	assert_output --partial 'Exit codes: 0 ok, 1 the guest said no'
	run stereo-host secret set db --help
	assert_success
	assert_output --partial 'usage: stereo-host'
}

@test "input files that cannot be read exit 1 before connecting" {
	start_peer p --ids
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" set-config "$BATS_TEST_TMPDIR/missing"
	assert_failure 1
	[[ $stderr == *"opening"*"missing"* ]]
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" secret set db --from-env STEREO_NOT_SET_ANYWHERE
	assert_failure 2
	run peer_received p
	assert_output ''
}

@test "a secret value that is not UTF-8 is refused instead of being altered" {
	start_peer p --ids
	run --separate-stderr stereo-host --tcp "$PEER_ADDR" secret set bin < <(printf 'a\xffb')
	assert_failure 1
	[[ $stderr == *"not valid UTF-8"* ]]
	run peer_received p
	assert_output ''
}

@test "secret set refuses to read the value from a terminal (no hidden prompt)" {
	start_peer p --ids
	run script -qec "stereo-host --tcp $PEER_ADDR secret set db" /dev/null
	assert_failure 2
	assert_output --partial 'refusing to read a secret from a terminal'
	run peer_received p
	assert_output ''
}
