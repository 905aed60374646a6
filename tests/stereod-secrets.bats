#!/usr/bin/env bats
# stereod secrets: inject_secret over NDJSON and /v1/secrets over the IPC API, name and mode
# validation, atomic replace, the tmpfs requirement.
load helpers
load helpers/stereod

setup() { stereod_setup; S=$R/run/stereos/secrets; NOBODY=; }
teardown() {
	stop_stereod
	[ -z "$NOBODY" ] || rm -rf "$NOBODY"
}

secret() {   # secret NAME-JSON [MODE-JSON]: one inject_secret, prints the ack
	local mode=${2:+,\"mode\":$2}
	echo "{\"type\":\"inject_secret\",\"payload\":{\"name\":$1,\"value\":\"v4lue\"$mode}}" | nd
}

@test "inject_secret writes the value with mode 0600 by default and never logs it" {
	start_stereod
	run nd <<<'{"type":"inject_secret","payload":{"name":"api_token","value":"hunter2-SECRET\n"}}'
	assert_output '{"type":"ack","payload":{"reply_to":"inject_secret","ok":true}}'
	[ "$(stat -c %a "$S/api_token")" = 600 ]
	printf 'hunter2-SECRET\n' | cmp - "$S/api_token"
	run grep -c hunter2 "$LOG"
	assert_output 0
	grep -q 'msg="secret written" name=api_token' "$LOG"
}

@test "inject_secret honours the payload's mode (384 = 0600 as the Go client sends, 0440)" {
	start_stereod
	run secret '"a"' 384
	assert_output --partial '"ok":true'
	run secret '"b"' 288
	assert_output --partial '"ok":true'
	[ "$(stat -c %a "$S/a")" = 600 ]
	[ "$(stat -c %a "$S/b")" = 440 ]
}

@test "inject_secret refuses modes that are not plain permission bits and writes nothing" {
	start_stereod
	run secret '"m1"' 2559      # 0o4777
	assert_output '{"type":"ack","payload":{"reply_to":"inject_secret","ok":false,"error":"mode 04777 is not a plain permission mode (0..0777)"}}'
	run secret '"m2"' 512       # 0o1000
	assert_output --partial '"ok":false'
	run secret '"m3"' -1
	assert_output --partial '"error":"decode secret payload: json: cannot unmarshal number -1 into Go struct field SecretPayload.mode of type uint32"'
	run secret '"m4"' '"0600"'
	assert_output --partial '"error":"decode secret payload: json: cannot unmarshal string into Go struct field SecretPayload.mode of type uint32"'
	run secret '"m5"' 1.5
	assert_output --partial '"ok":false'
	[ -z "$(ls -A "$S")" ]
}

@test "inject_secret refuses bad names (../x, a/b, ., .., empty, 300 chars, NUL, control, leading dot)" {
	start_stereod
	long=$(printf 'x%.0s' $(seq 1 300))
	for name in '"../x"' '"a/b"' '"."' '".."' '""' "\"$long\"" '"a\u0000b"' '"a\nb"' '".hidden"' '"a..b"'; do
		run secret "$name"
		assert_output --partial '"reply_to":"inject_secret","ok":false,"error":"'
	done
	# upstream's words where upstream refuses too
	run secret '"a/b"'
	assert_output --partial '"error":"invalid secret name: \"a/b\" (must be a simple filename)"'
	run secret '""'
	assert_output --partial '"error":"secret name cannot be empty"'
	run secret "\"$long\""
	assert_output --partial '.tmp: file name too long"}}'
	run secret '"a\u0000b"'
	assert_output --partial '"error":"write secret \"a\\x00b\": open '
	run secret '".hidden"'
	assert_output --partial "\"error\":\"name must not start with '.'\""
	[ -z "$(ls -A "$S")" ]
	[ ! -e "$R/run/stereos/x" ]
}

@test "a second inject_secret replaces the value atomically and leaves no temp files" {
	start_stereod
	run nd <<'EOF2'
{"type":"inject_secret","payload":{"name":"k","value":"first"}}
{"type":"inject_secret","payload":{"name":"k","value":"second","mode":256}}
EOF2
	assert_line -n 1 --partial '"ok":true'
	[ "$(cat "$S/k")" = second ]
	[ "$(stat -c %a "$S/k")" = 400 ]
	[ "$(ls -A "$S")" = k ]
}

@test "POST /v1/secrets writes a secret and answers 201 with its name" {
	start_stereod
	run ipc POST /v1/secrets '{"name":"db","value":"pw","mode":416}'
	assert_output '201 {"status":"ok","name":"db"}'
	[ "$(cat "$S/db")" = pw ]
	[ "$(stat -c %a "$S/db")" = 640 ]
}

@test "POST /v1/secrets answers 400 for bad JSON or field types and 422 for refused secrets" {
	start_stereod
	run ipc POST /v1/secrets '{"name":"db",'
	assert_output --partial '400 {"error":"invalid JSON: '
	run ipc POST /v1/secrets '{"name":"db","value":5}'
	assert_output '400 {"error":"json: cannot unmarshal number into Go struct field SecretPayload.value of type string"}'
	run ipc POST /v1/secrets '{"name":"../db","value":"x"}'
	assert_output '422 {"error":"invalid secret name: \"../db\" (must be a simple filename)"}'
	run ipc POST /v1/secrets '{"name":"db","value":"x","mode":4095}'
	assert_output --partial '422 {"error":"mode 07777'
	[ -z "$(ls -A "$S")" ]
}

@test "GET /v1/secrets lists names sorted, [] when none, hiding temp files and non-files" {
	start_stereod
	run ipc GET /v1/secrets
	assert_output '200 {"secrets":[]}'
	ipc POST /v1/secrets '{"name":"zeta","value":"1"}'
	ipc POST /v1/secrets '{"name":"alpha","value":"2"}'
	: >"$S/.alpha.tmp-123"
	mkdir "$S/adir"
	run ipc GET /v1/secrets
	assert_output '200 {"secrets":["alpha","zeta"]}'
}

@test "DELETE /v1/secrets/NAME removes it, succeeds when missing, refuses bad names" {
	start_stereod
	ipc POST /v1/secrets '{"name":"gone","value":"1"}'
	run ipc DELETE /v1/secrets/gone
	assert_output '200 {"status":"ok","name":"gone"}'
	[ ! -e "$S/gone" ]
	run ipc DELETE /v1/secrets/never-was
	assert_output '200 {"status":"ok","name":"never-was"}'
	run ipc DELETE /v1/secrets/
	assert_output '400 {"error":"secret name is missing"}'
	run ipc DELETE /v1/secrets/%2e%2e
	assert_output --partial '422 {"error":"name must not be'
	run ipc DELETE /v1/secrets/a%2fb
	assert_output --partial '422'
	run ipc DELETE /v1/secrets/a%zz
	assert_output '400 {"error":"bad percent-encoding in the path"}'
}

@test "without --allow-disk-secrets a non-root daemon refuses secrets on persistent storage" {
	NOBODY=$(mktemp -d /tmp/stereod-nobody.XXXXXX)
	chmod 755 "$NOBODY"
	R=$NOBODY/root S=$R/run/stereos/secrets
	mkdir -p "$R"
	chown -R 65534:65534 "$NOBODY"
	setpriv --reuid 65534 --regid 65534 --clear-groups \
		stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:0 --root "$R" --ready-fd 3 \
		3>"$BATS_TEST_TMPDIR/ready" 2>>"$LOG" &
	STEREOD_PID=$!
	wait_ready
	run secret '"k"'
	assert_output --partial '"ok":false,"error":"refusing to write a secret to persistent storage: '
	[ ! -e "$S/k" ]
	grep -q 'secrets dir is not a tmpfs: secrets will be refused' "$LOG"
}

@test "as root, stereod mounts a tmpfs on the secrets dir and writes secrets there" {
	unshare -m --propagation private \
		stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:0 --root "$R" --ready-fd 3 \
		--poweroff none 3>"$BATS_TEST_TMPDIR/ready" 2>>"$LOG" &
	STEREOD_PID=$!
	wait_ready
	grep -q "msg=\"mounted a tmpfs on the secrets dir\"" "$LOG"
	awk -v p="$S" '$5 == p { print $9 }' "/proc/$STEREOD_PID/mountinfo" | grep -qx tmpfs
	run secret '"k"'
	assert_output --partial '"ok":true'
	[ "$(nsenter -t "$STEREOD_PID" -m cat "$S/k")" = v4lue ]
	[ ! -e "$S/k" ]    # not on the disk outside the namespace
}

@test "under a scratch --root the secrets tmpfs it mounted is unmounted when it stops" {
	: >"$BATS_TEST_TMPDIR/ready"
	run unshare -m --propagation private sh -c '
		"$1" stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:0 --root "$2" --ready-fd 3 \
			--poweroff none 3>"$3" 2>>"$4" &
		pid=$!
		i=0
		until grep -q : "$3"; do i=$((i + 1)); [ $i -lt 400 ] || exit 9; sleep 0.025; done
		grep -c " $2/run/stereos/secrets " /proc/self/mountinfo
		kill -TERM $pid
		wait $pid
		echo "exit $?"
		grep -c " $2/run/stereos/secrets " /proc/self/mountinfo
		true' sh "$STEREO_BIN" "$R" "$BATS_TEST_TMPDIR/ready" "$LOG"
	assert_output "1
exit 0
0"
	asan_clean "$LOG"
}
