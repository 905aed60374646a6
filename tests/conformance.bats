#!/usr/bin/env bats
# conformance.bats - replays the cases recorded from the real upstream stereosd (request bytes,
# reply bytes, file and command effects) against the built stereod, in the kit's throw-away
# namespace sandbox, and fails on any case that differs and is not listed, with its reason,
# in tests/conformance-differences.txt. The kit is not part of this repository: it is looked
# for beside the checkout (KIT below) or named by STEREO_CONFORMANCE_KIT, and only read.

load helpers

KIT=${STEREO_CONFORMANCE_KIT:-$STEREO_TOP/../shared/conformance/stereosd}

setup() {
	[ -x "$KIT/run-golden.sh" ] || { echo "conformance kit not found at $KIT" >&2; return 1; }
	W=$BATS_TEST_TMPDIR/stereod-under-test
	# ANCHOR_DAEMON is split on spaces: a wrapper keeps our paths whole
	cat >"$W" <<EOS
#!/bin/sh
exec "$STEREO_BIN" stereod --listen-mode tcp --listen "127.0.0.1:\$1" --allow-local-peers --root / \\
	--mount-helper "$KIT/mount-as-command.sh" --poweroff systemd
EOS
	chmod 0755 "$W"
}

@test "stereod answers every recorded upstream stereosd case byte for byte, but the listed intended differences" {
	export ANCHOR_DAEMON="$W {PORT}" ANCHOR_PORT=$(free_port) ANCHOR_ROOT=/
	run "$KIT/run-golden.sh" compare "$KIT/golden.ndjson"
	echo "$output" | tail -1
	[ "$status" -le 1 ] || { echo "$output" >&2; return 1; }   # 1: some case differs
	# every case was run (and the start-up tree, "baseline")
	[[ "$output" =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]
	local total=$((BASH_REMATCH[1] + BASH_REMATCH[2]))
	[ "$total" -eq $(($(grep -c '"kind": "case"' "$KIT/golden.ndjson") + 1)) ]
	local allowed unexpected="" id
	allowed=$(grep -v '^#' "$STEREO_TOP/tests/conformance-differences.txt" | awk 'NF {print $1}')
	while read -r id; do
		grep -qxF -- "$id" <<<"$allowed" || unexpected+=" $id"
	done < <(echo "$output" | awk '/^FAIL / {print $2}')
	if [ -n "$unexpected" ]; then
		echo "$output" >&2
		echo "differs from upstream, not listed in tests/conformance-differences.txt:$unexpected" >&2
		return 1
	fi
}
