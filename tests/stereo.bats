#!/usr/bin/env bats
# The multiplexer: both call forms, --list/--version/--help, --install, unknown applets.
load helpers

first_applet() { "$STEREO_BIN" --list | head -1; }

@test "--list prints one compiled-in applet per line" {
	run "$STEREO_BIN" --list
	assert_success
	[ "${#lines[@]}" -ge 1 ]
	for a in "${lines[@]}"; do [[ "$a" =~ ^[a-z][a-z0-9-]*$ ]]; done
}

@test "--version prints the version and the compiled-in applets" {
	run "$STEREO_BIN" --version
	assert_success
	assert_line --index 0 --regexp '^stereo [0-9]+\.[0-9]+\.[0-9]+$'
	for a in $("$STEREO_BIN" --list); do assert_line --index 1 --partial "$a"; done
}

@test "unknown applet exits 2 and lists the applets on stderr" {
	run --separate-stderr "$STEREO_BIN" no-such-applet
	assert_equal "$status" 2
	assert_equal "$output" ""
	[[ "$stderr" == *"unknown applet 'no-such-applet'"* ]]
	[[ "$stderr" == *"$(first_applet)"* ]]
	run "$STEREO_BIN" --help no-such-applet
	assert_equal "$status" 2
}

@test "no arguments prints usage to stderr and exits 2" {
	run --separate-stderr "$STEREO_BIN"
	assert_equal "$status" 2
	[[ "$stderr" == *"usage: stereo APPLET"* ]]
}

@test "APPLET --help, stereo --help APPLET and the argv[0] form print the same usage" {
	a=$(first_applet)
	run "$STEREO_BIN" "$a" --help
	assert_success
	assert_output --partial "usage:"
	h1=$output
	run "$STEREO_BIN" --help "$a"
	assert_equal "$output" "$h1"
	ln -s "$STEREO_BIN" "$BATS_TEST_TMPDIR/$a"
	run "$BATS_TEST_TMPDIR/$a" --help
	assert_equal "$output" "$h1"
	ln -s "$STEREO_BIN" "$BATS_TEST_TMPDIR/-$a"
	run "$BATS_TEST_TMPDIR/-$a" --help
	assert_equal "$output" "$h1"
}

@test "the help text is the applet's Kconfig help" {
	a=$(first_applet)
	sym=CONFIG_$(echo "$a" | tr 'a-z-' 'A-Z_')
	line=$("$STEREO_BIN" "$a" --help | head -1)
	grep -qF -- "$line" "$STEREO_TOP/generated/Kconfig.applets"
}

@test "--install -s DIR makes a symlink per applet that dispatches by argv[0]" {
	d=$BATS_TEST_TMPDIR/bin
	run "$STEREO_BIN" --install -s "$d"
	assert_success
	for a in $("$STEREO_BIN" --list); do
		assert_link_exists "$d/$a"
		run "$d/$a" --help
		assert_success
	done
}

@test "--install DIR (hard links) is repeatable and leaves foreign files alone" {
	d=$BATS_TEST_TMPDIR/bin
	mkdir -p "$d"
	cp "$STEREO_BIN" "$BATS_TEST_TMPDIR/stereo"
	a=$(first_applet)
	echo foreign >"$d/$a"
	run "$BATS_TEST_TMPDIR/stereo" --install "$d"
	assert_failure 1
	assert_output --partial "exists and is not a stereo link"
	assert_equal "$(cat "$d/$a")" foreign
	rm "$d/$a"
	run "$BATS_TEST_TMPDIR/stereo" --install "$d"
	assert_success
	run "$BATS_TEST_TMPDIR/stereo" --install "$d"
	assert_success
	assert_equal "$(stat -c %i "$d/$a")" "$(stat -c %i "$BATS_TEST_TMPDIR/stereo")"
}

@test "--install without DIR is a usage error" {
	run "$STEREO_BIN" --install
	assert_equal "$status" 2
}

@test "a write error on stdout fails the multiplexer: --list, --version, --help >/dev/full exit 1 with a message" {
	for opt in --list --version --help; do
		run --separate-stderr "$STEREO_BIN" "$opt"
		assert_success
		run --separate-stderr sh -c '"$0" "$1" >/dev/full' "$STEREO_BIN" "$opt"
		assert_equal "$status" 1
		[[ "$stderr" == "stereo: writing to stdout: No space left on device" ]] || fail "$opt: '$stderr'"
	done
}

@test "a write error on stdout fails every applet: APPLET --help >/dev/full exits 1 with a message" {
	for a in $("$STEREO_BIN" --list); do
		run --separate-stderr sh -c '"$0" "$1" --help >/dev/full' "$STEREO_BIN" "$a"
		assert_equal "$status" 1
		[[ "$stderr" == "$a: writing to stdout: No space left on device" ]] || fail "$a: '$stderr'"
	done
}

# usage_from_help APPLET CMD [ARGS...]: the usage error for CMD names the applet and the command
# and is, word for word, the command's text in APPLET --help (the one place it is written)
usage_from_help() {
	local applet=$1
	shift
	run --separate-stderr "$STEREO_BIN" "$applet" "$@"
	assert_equal "$status" 2
	local first
	first=$(grep -m1 -F "$applet: usage: " <<<"$stderr") || true   # getopt may speak first
	[[ "$first" == "$applet: usage: $applet $1"* ]] || fail "$applet $1: '$stderr'"
	local u=${first#"$applet: usage: $applet "}
	"$STEREO_BIN" "$applet" --help | tr -s ' \n' '  ' | grep -qF -- "$u" ||
		fail "$applet $1: '$u' is not in the help"
}

@test "a subcommand's usage error is its text in --help: stereo-secret set, rm, list" {
	usage_from_help stereo-secret set
	usage_from_help stereo-secret rm
	usage_from_help stereo-secret list extra
}

@test "a subcommand's usage error is its text in --help: every stereo-uffd command" {
	for c in serve pack layer merge inspect verify cat; do
		usage_from_help stereo-uffd "$c"
	done
	usage_from_help stereo-uffd serve --no-such-option
}

@test "a subcommand's usage error is its text in --help: stereo-host commands" {
	export STEREO_HOST_ADDR=tcp://127.0.0.1:1   # usage errors send nothing; never vsock here
	usage_from_help stereo-host secret
	usage_from_help stereo-host ssh-key add one
	usage_from_help stereo-host mount tag-only
	usage_from_help stereo-host set-config
	usage_from_help stereo-host restored extra
	usage_from_help stereo-host ping extra
}
