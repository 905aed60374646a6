#!/usr/bin/env bats
# Kconfig: a configured-out applet is not compiled in. Builds a copy of the tree, so it runs
# in the normal suite only (scripts/run-tests.sh), like the QEMU suite.
load helpers

@test "the default build is a static binary" {
	run file -L "$STEREO_BIN"
	assert_output --regexp 'statically linked|static-pie linked'
}

@test "an applet configured off with Kconfig is absent from the binary" {
	src=$BATS_TEST_TMPDIR/src
	mkdir -p "$src"
	(cd "$STEREO_TOP" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$src")
	cd "$src"
	all=$("$STEREO_BIN" --list)
	victim=$(echo "$all" | tail -1)
	sym=$(echo "$victim" | tr 'a-z-' 'A-Z_')
	make defconfig >/dev/null
	KCONFIG_CONFIG=.config srctree=$src /usr/bin/python3 -m setconfig --kconfig Kconfig "$sym=n"
	grep -q "# CONFIG_$sym is not set" .config
	make -j2 >/dev/null 2>&1
	run ./stereo --list
	assert_success
	# not refute_line: bats-assert trips over an empty output (the only applet configured off)
	if printf '%s\n' "$output" | grep -qx -- "$victim"; then false; fi
	assert_equal "${#lines[@]}" $(( $(echo "$all" | wc -l) - 1 ))
	run ./stereo "$victim" --help
	assert_equal "$status" 2
	# the binary got smaller, and every applet left in it still runs
	[ "$(stat -c %s ./stereo)" -lt "$(stat -c %s "$STEREO_BIN")" ]
	for a in $(./stereo --list); do
		run ./stereo "$a" --help
		assert_success
		assert_output --partial "usage: $a"
	done
	run grep -c "define CONFIG_$sym 1" generated/autoconf.h
	assert_output 0
	# its code and text are gone too, not just its table entry
	grep -qa "usage: $victim" "$STEREO_TOP/stereo"
	run grep -ca "usage: $victim" ./stereo
	assert_output 0
	run make savedefconfig
	assert_success
	# the minimal config records exactly the one choice that differs from the defaults
	run grep -v '^$' defconfig
	assert_output "# CONFIG_$sym is not set"
}

@test "plain make names the missing Debian packages in one line instead of failing inside the build" {
	fake=$BATS_TEST_TMPDIR/bin
	mkdir -p "$fake"
	# a dpkg that knows nothing: every build dependency looks missing
	printf '#!/bin/sh\nexit 1\n' >"$fake/dpkg-query"
	chmod +x "$fake/dpkg-query"
	cd "$STEREO_TOP"
	PATH=$fake:$PATH run make -n
	assert_failure
	assert_line --partial "missing Debian packages: build-essential pkg-config python3-kconfiglib"
	assert_line --partial "make deps"
	refute_output --partial "No module named"
}
