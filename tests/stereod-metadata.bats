#!/usr/bin/env bats
# stereod's guest-metadata listener (microvm-runtime's protocol): set_env merged into the env
# file, set_secret with strict base64, ping; replies byte for byte; and init's env-file= that
# carries the variables to a service.
load helpers
load helpers/stereod
load fixtures/init/lib

setup() {
	stereod_setup
	MD=$R/var/run/microvm-guest
	ENVF=$MD/env
	UPID=
}
teardown() {
	init_teardown
	stop_stereod
}

# start stereod with the metadata listener on TCP (port 0) and find its address in the log
start_md() {
	start_stereod --metadata-listen-mode tcp --metadata-listen 127.0.0.1:0 "$@"
	wait_file "$LOG" 'msg="guest metadata listening"'
	MADDR=$(sed -n 's/.*msg="guest metadata listening" addr=\([^ ]*\).*/\1/p' "$LOG" | tail -1)
}

md() { "$STEREO_T/ndjson_client" "$@" "$MADDR"; }

@test "requests as microvm-runtime's serde writes them get the reference daemon's replies byte for byte" {
	start_md
	run md --seq <<'EOF2'
{"op":"set_env","id":"0b7e6c1a-4d8f-4a57-9d1e-3c2b1a0f9e8d","env":{"FOO":"bar","BAZ":""}}
{"op":"set_secret","id":"6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f","name":"sidecar_token","value_b64":"c2VjcmV0"}
{"op":"ping","id":"a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"}
EOF2
	assert_success
	assert_output '{"id":"0b7e6c1a-4d8f-4a57-9d1e-3c2b1a0f9e8d","ok":true}
{"id":"6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f","ok":true}
{"id":"a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d","ok":true}'
	[ "$(cat "$ENVF")" = "FOO=bar" ]
	[ "$(cat "$MD/secrets/sidecar_token")" = secret ]
	[ "$(stat -c %a "$ENVF") $(stat -c %a "$MD/secrets/sidecar_token")" = "600 600" ]
	[ "$(stat -c %a "$MD") $(stat -c %a "$MD/secrets")" = "700 700" ]
	# values and decoded secrets never reach the log
	! grep -q 'bar\|secret"\|c2VjcmV0' "$LOG"
}

@test "set_env merges: given keys are set, an empty value deletes, keys not sent stay; lines sorted" {
	start_md
	run md <<'EOF2'
{"op":"set_env","id":"1","env":{"B":"2","A":"1","C":"3"}}
{"op":"set_env","id":"2","env":{"B":"","D":"4=four","A":"one"}}
EOF2
	assert_output '{"id":"1","ok":true}
{"id":"2","ok":true}'
	[ "$(cat "$ENVF")" = "$(printf 'A=one\nC=3\nD=4=four')" ]
}

@test "a bad key anywhere in a set_env batch changes nothing" {
	start_md
	md <<<'{"op":"set_env","id":"1","env":{"KEEP":"me"}}' >/dev/null
	before=$(cat "$ENVF")
	for key in 1BAD A-B '' 'A B' 'É'; do
		run md <<<"{\"op\":\"set_env\",\"id\":\"k\",\"env\":{\"GOOD\":\"x\",\"$key\":\"v\",\"ZED\":\"y\"}}"
		assert_output --partial '{"id":"k","ok":false,"error":"invalid env key '
		[ "$(cat "$ENVF")" = "$before" ]
	done
}

@test "a newline in a set_env value is refused and nothing changes" {
	start_md
	md <<<'{"op":"set_env","id":"1","env":{"KEEP":"me"}}' >/dev/null
	run md <<<'{"op":"set_env","id":"n","env":{"A":"ok","B":"two\nlines"}}'
	assert_output '{"id":"n","ok":false,"error":"env value for \"B\" contains newline"}'
	[ "$(cat "$ENVF")" = KEEP=me ]
}

@test "a binary secret (NUL, 0xff) round-trips byte for byte" {
	start_md
	printf 'a\000b\377\001\r\n\000' >"$BATS_TEST_TMPDIR/bin"
	b64=$(base64 -w0 "$BATS_TEST_TMPDIR/bin")
	run md <<<"{\"op\":\"set_secret\",\"id\":\"s\",\"name\":\"blob\",\"value_b64\":\"$b64\"}"
	assert_output '{"id":"s","ok":true}'
	cmp "$BATS_TEST_TMPDIR/bin" "$MD/secrets/blob"
}

@test "invalid base64 (bad character, missing padding, whitespace, URL-safe) is refused and writes nothing" {
	start_md
	for v in 'c2Vj!mV0' 'c2VjcmV' 'c2VjcmU' 'c2Vj cmV0' 'c2VjcmV0\n' 'c2V-cmV0' 'c2VjcmV0=' 'c2Vj=mV0' 'c2VjcmW='; do
		run md <<<"{\"op\":\"set_secret\",\"id\":\"b\",\"name\":\"x\",\"value_b64\":\"$v\"}"
		assert_output --partial '{"id":"b","ok":false,"error":"invalid base64: '
	done
	run md <<<'{"op":"set_secret","id":"b","name":"x","value_b64":"c2VjcmV"}'
	assert_output '{"id":"b","ok":false,"error":"invalid base64: length 7 is not a multiple of 4 (padding missing?)"}'
	run md <<<'{"op":"set_secret","id":"b","name":"x","value_b64":"c2Vj cmV0"}'
	assert_output '{"id":"b","ok":false,"error":"invalid base64: whitespace at offset 4"}'
	run md <<<'{"op":"set_secret","id":"b","name":"x","value_b64":"c2Vj!mV0"}'
	assert_output '{"id":"b","ok":false,"error":"invalid base64: character '"'!'"' at offset 4"}'
	[ -z "$(ls -A "$MD/secrets")" ]
}

@test "secret names: . .. a/b and 256 bytes are refused, - and 255 bytes are written" {
	start_md
	long=$(printf 'n%.0s' $(seq 1 255))
	for name in . .. a/b "${long}n" '' 'a b'; do
		run md <<<"{\"op\":\"set_secret\",\"id\":\"n\",\"name\":\"$name\",\"value_b64\":\"dg==\"}"
		assert_output --partial '{"id":"n","ok":false,"error":"invalid secret name '
	done
	[ -z "$(ls -A "$MD/secrets")" ]
	for name in - "$long" A_b-9; do
		run md <<<"{\"op\":\"set_secret\",\"id\":\"n\",\"name\":\"$name\",\"value_b64\":\"dg==\"}"
		assert_output '{"id":"n","ok":true}'
		[ "$(cat "$MD/secrets/$name")" = v ]
	done
	[ ! -e "$R/var/run/microvm-guest/v" ] && [ ! -e "$MD/a" ]
}

@test "invalid JSON gets id \"\" and invalid request json; an unknown op is named with its id" {
	start_md
	run md <<'EOF2'
{"op":"ping","id":"x"
{"op":"reboot","id":"u1"}
{"op":"ping"}
EOF2
	assert_line -n 0 --partial '{"id":"","ok":false,"error":"invalid request json: '
	assert_line -n 1 '{"id":"u1","ok":false,"error":"unknown op \"reboot\", expected one of `set_env`, `set_secret`, `ping`"}'
	assert_line -n 2 '{"id":"","ok":false,"error":"invalid request json: missing field `id`"}'
}

@test "pipelined requests are answered in order, each with its id" {
	start_md
	for i in $(seq 1 200); do
		case $((i % 3)) in
		0) echo "{\"op\":\"ping\",\"id\":\"r$i\"}" ;;
		1) echo "{\"op\":\"set_env\",\"id\":\"r$i\",\"env\":{\"V$i\":\"$i\"}}" ;;
		2) echo "{\"op\":\"set_secret\",\"id\":\"r$i\",\"name\":\"s$i\",\"value_b64\":\"dg==\"}" ;;
		esac
	done >"$BATS_TEST_TMPDIR/reqs"
	run md <"$BATS_TEST_TMPDIR/reqs"
	assert_success
	[ "$(echo "$output" | jq -r .id | tr '\n' ' ')" = "$(seq 1 200 | sed 's/^/r/' | tr '\n' ' ')" ]
	[ "$(echo "$output" | jq -r .ok | sort -u)" = true ]
	[ "$(wc -l <"$ENVF")" -eq 67 ]
}

@test "the listener is off by default when the control plane is on TCP, and --metadata-listen-mode off stops it" {
	start_stereod
	grep -q 'msg="guest metadata listener off" metadata_listen_mode=auto' "$LOG"
	stop_stereod
	start_stereod --metadata-listen-mode off
	grep -q 'msg="guest metadata listener off" metadata_listen_mode=off' "$LOG"
	run stereod --metadata-listen-mode bogus
	assert_failure 2
}

@test "a service with env-file= restarted after set_env sees the new variable" {
	start_md
	mkdir -p "$R/etc/stereos/services"
	EVI=$BATS_TEST_TMPDIR/svc-events
	: >"$EVI"
	printf '%s\n' "exec=/bin/sh -c 'echo greeting=\$GREETING >> $EVI; exec sleep 1000'" \
		"env-file=$ENVF" >"$R/etc/stereos/services/hello.conf"
	LOG_STEREOD=$LOG
	LOG=$BATS_TEST_TMPDIR/init.log
	start_init
	wait_state hello running
	wait_for grep -qx 'greeting=' "$EVI"
	run md <<<'{"op":"set_env","id":"e","env":{"GREETING":"hi there"}}'
	assert_output '{"id":"e","ok":true}'
	sinit --ctl stop hello --root "$R"
	wait_state hello stopped
	sinit --ctl start hello --root "$R"
	wait_for grep -qx 'greeting=hi there' "$EVI"
	LOG=$LOG_STEREOD
}

@test "stereo-host metadata ping, set-env (K= deletes) and set-secret (file, env, binary) drive the listener" {
	start_md
	run -0 stereo-host --tcp "$MADDR" metadata ping
	assert_output ok
	run -0 stereo-host --tcp "$MADDR" metadata set-env A=1 'B=two words' C=3
	run -0 stereo-host --tcp "$MADDR" --json metadata set-env C=
	[ "$(jq -r .ok <<<"$output")" = true ]
	[ "$(cat "$ENVF")" = "$(printf 'A=1\nB=two words')" ]
	run -1 stereo-host --tcp "$MADDR" metadata set-env 9X=1
	assert_output --partial 'invalid env key "9X"'
	[ "$(cat "$ENVF")" = "$(printf 'A=1\nB=two words')" ]
	run -2 stereo-host --tcp "$MADDR" metadata set-env novalue
	head -c 3000 /dev/urandom >"$BATS_TEST_TMPDIR/rnd"
	printf '\000\377' >>"$BATS_TEST_TMPDIR/rnd"
	run -0 stereo-host --tcp "$MADDR" metadata set-secret blob --from-file "$BATS_TEST_TMPDIR/rnd"
	cmp "$BATS_TEST_TMPDIR/rnd" "$MD/secrets/blob"
	TOKEN=s3cr3t run -0 stereo-host --tcp "$MADDR" metadata set-secret tok --from-env TOKEN
	[ "$(cat "$MD/secrets/tok")" = s3cr3t ]
	TOKEN=x run -1 stereo-host --tcp "$MADDR" metadata set-secret a.b --from-env TOKEN
	assert_output --partial 'invalid secret name'
}

@test "the metadata listener applies the control plane's peer rules: a local TCP peer is refused without --allow-local-peers" {
	stereod --listen-mode tcp --listen 127.0.0.1:0 --root "$R" --ready-fd 3 --allow-disk-secrets \
		--metadata-listen-mode tcp --metadata-listen 127.0.0.1:0 3>"$BATS_TEST_TMPDIR/ready" 2>>"$LOG" &
	STEREOD_PID=$!
	wait_ready
	wait_file "$LOG" 'msg="guest metadata listening"'
	MADDR=$(sed -n 's/.*msg="guest metadata listening" addr=\([^ ]*\).*/\1/p' "$LOG" | tail -1)
	run md <<<'{"op":"set_env","id":"x","env":{"A":"1"}}'
	refute_output --partial '"ok":true'
	wait_file "$LOG" 'msg="refused a connection" server=metadata'
	[ ! -e "$ENVF" ]
}
