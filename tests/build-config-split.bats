#!/usr/bin/env bats
# The two deployment configurations (make guest / make host, configs/*.config): the guest one
# static and without the host-only applets, the host one with remote layers and libcurl.
# Builds a copy of the tree, so it runs in the normal suite only (scripts/run-tests.sh).
load helpers

setup_file() {
	src=$BATS_FILE_TMPDIR/src
	mkdir -p "$src"
	(cd "$STEREO_TOP" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$src")
	(cd "$src" && make -j2 guest host > "$BATS_FILE_TMPDIR/build.log" 2>&1) || { cat "$BATS_FILE_TMPDIR/build.log" >&2; return 1; }
}

@test "make guest: a static binary with init, stereod and the guest CLIs, nothing host-only" {
	g=$BATS_FILE_TMPDIR/src/build-guest/stereo
	run file -L "$g"
	assert_output --regexp 'statically linked|static-pie linked'
	run "$g" --list
	assert_line init
	assert_line stereod
	assert_line stereo-secret
	refute_line stereo-uffd
	refute_line stereo-host
	# no libcurl inside: the remote-layer code is not compiled in
	run grep -c "CONFIG_STEREO_UFFD_REMOTE 1" "$BATS_FILE_TMPDIR/src/build-guest/generated/autoconf.h"
	assert_output 0
}

@test "make host: stereo-uffd with remote layers, dynamically linked against libcurl" {
	h=$BATS_FILE_TMPDIR/src/build-host/stereo
	run ldd "$h"
	assert_output --partial libcurl
	run "$h" --list
	assert_line stereo-uffd
	assert_line stereo-host
	refute_line init
	run "$h" stereo-uffd cat --help
	assert_output --partial "--fetch-concurrency"
	grep -q "CONFIG_STEREO_UFFD_REMOTE 1" "$BATS_FILE_TMPDIR/src/build-host/generated/autoconf.h"
	# the default configuration stays static and curl-free
	run ldd "$STEREO_BIN"
	refute_output --partial libcurl
}
