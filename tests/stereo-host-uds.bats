#!/usr/bin/env bats
# stereo-host over hybrid vsock (the Unix socket Firecracker and Cloud Hypervisor expose for a
# guest's vsock device): tests/helpers/vsock_mux plays the VMM ("CONNECT <port>\n", "OK
# <host_port>\n", then the byte stream) in front of a real stereod on TCP. The exchanges a
# VMM can get wrong each end in exit 3 with a message that says what came back.
load helpers
load helpers/clis

teardown() { clis_teardown; }

# start_mux [vsock_mux ARGS...]: the multiplexer on $MUX (port 1024 -> $ADDR, the stereod of
# start_stereod, when there is one); requests it got go to $MUXREC.
start_mux() {
	MUX=$BATS_TEST_TMPDIR/v.sock
	MUXREC=$BATS_TEST_TMPDIR/mux.rec
	rm -f "$BATS_TEST_TMPDIR/mux.ready"
	"$STEREO_T/vsock_mux" --uds "$MUX" --ready "$BATS_TEST_TMPDIR/mux.ready" --record "$MUXREC" \
		--forward "1024=${ADDR:-127.0.0.1:1}" "$@" 2>"$BATS_TEST_TMPDIR/mux.log" &
	BG_PIDS="${BG_PIDS:-} $!"
	wait_file "$BATS_TEST_TMPDIR/mux.ready"
}

@test "--uds PATH[:PORT] and unix://PATH[:PORT] address a hybrid vsock socket, port 1024 by default" {
	unset STEREO_HOST_ADDR
	run stereo-host --uds /run/vm/v.sock --show-addr
	assert_output 'unix:///run/vm/v.sock:1024'
	run stereo-host --uds /run/vm/v.sock:52 --show-addr
	assert_output 'unix:///run/vm/v.sock:52'
	run stereo-host --uds /run/vm:a/v.sock --show-addr
	assert_output 'unix:///run/vm:a/v.sock:1024'
	STEREO_HOST_ADDR=unix:///run/vm/v.sock:5555 run stereo-host --show-addr
	assert_output 'unix:///run/vm/v.sock:5555'
	STEREO_HOST_ADDR=unix:///run/vm/v.sock run stereo-host --show-addr
	assert_output 'unix:///run/vm/v.sock:1024'
	STEREO_HOST_ADDR=unix:///run/vm/v.sock run stereo-host --tcp 127.0.0.1:7 --show-addr
	assert_output 'tcp://127.0.0.1:7'
}

@test "malformed hybrid vsock addresses are usage errors (exit 2)" {
	local long
	long=/tmp/$(printf 'x%.0s' $(seq 1 120))
	for a in '' ':1024' "$long" '/v.sock:99999999999'; do
		run --separate-stderr stereo-host --uds "$a" --show-addr
		assert_failure 2
		[[ $stderr == *"address"* || $stderr == *"too long"* ]]
	done
	STEREO_HOST_ADDR=unix:// run --separate-stderr stereo-host --show-addr
	assert_failure 2
}

@test "every command works through the multiplexer: CONNECT 1024 first, then hello, ids and replies" {
	start_stereod
	start_mux
	unset STEREO_HOST_ADDR
	run stereo-host --uds "$MUX" hello
	assert_success
	assert_line --regexp '^capabilities: .*\bid\b'
	run stereo-host --uds "$MUX:1024" health
	assert_success
	assert_line 'state: ready'
	printf '[agent]\nname = "uds"\n' >"$BATS_TEST_TMPDIR/jcard.toml"
	run stereo-host --uds "$MUX" set-config "$BATS_TEST_TMPDIR/jcard.toml"
	assert_success
	cmp "$BATS_TEST_TMPDIR/jcard.toml" "$ROOT/etc/stereos/jcard.toml"
	printf 's3cr3t' | STEREO_HOST_ADDR=unix://$MUX:1024 stereo-host secret set uds_token
	[ "$(cat "$ROOT/run/stereos/secrets/uds_token")" = s3cr3t ]
	run stereo-host --uds "$MUX" --json ping
	assert_success
	run cat "$MUXREC"
	assert_output "$(printf 'CONNECT 1024\n%.0s' 1 2 3 4 5)"
}

@test "metadata commands through the multiplexer: CONNECT 5555 by default, or the port named" {
	start_stereod --metadata-listen-mode tcp --metadata-listen 127.0.0.1:0
	wait_file "$LOG" 'msg="guest metadata listening"'
	local maddr
	maddr=$(sed -n 's/.*msg="guest metadata listening" addr=\([^ ]*\).*/\1/p' "$LOG" | tail -1)
	start_mux --forward "5555=$maddr" --forward "6000=$maddr"
	unset STEREO_HOST_ADDR
	run stereo-host --uds "$MUX" metadata set-env UDS_VAR=one
	assert_success
	printf 'b\0in' | stereo-host --uds "$MUX:6000" metadata set-secret uds_md
	run cat "$ROOT/var/run/microvm-guest/env"
	assert_output 'UDS_VAR=one'
	cmp "$ROOT/var/run/microvm-guest/secrets/uds_md" <(printf 'b\0in')
	run cat "$MUXREC"
	assert_output "$(printf 'CONNECT 5555\nCONNECT 6000')"
}

@test "events stream through the multiplexer until the guest shuts down" {
	start_stereod
	start_mux
	timeout 30 stereo-host --uds "$MUX" events >"$BATS_TEST_TMPDIR/events" 2>"$BATS_TEST_TMPDIR/events.err" &
	BG_PIDS="$BG_PIDS $!"
	wait_file "$BATS_TEST_TMPDIR/events.err" subscribed
	stereo-host --uds "$MUX" shutdown
	wait_file "$BATS_TEST_TMPDIR/events" shutdown
	run jq -e -s 'all(.type == "lifecycle") and (map(.payload.state) | index("shutdown"))' \
		"$BATS_TEST_TMPDIR/events"
	assert_success
}

@test "a port nothing listens on in the guest: the VMM hangs up, exit 3 says so" {
	start_stereod
	start_mux
	run --separate-stderr stereo-host --uds "$MUX:1025" health
	assert_failure 3
	assert_equal "$stderr" "stereo-host: health: hybrid vsock $MUX: closed before OK (is the guest listening on port 1025?)"
	assert_equal "$(cat "$MUXREC")" 'CONNECT 1025'
}

@test "a missing socket and a socket nobody listens on exit 3 with the reason" {
	run --separate-stderr stereo-host --uds "$BATS_TEST_TMPDIR/none.sock" health
	assert_failure 3
	assert_equal "$stderr" "stereo-host: health: connecting to $BATS_TEST_TMPDIR/none.sock: No such file or directory"
	start_mux --no-listen
	run --separate-stderr stereo-host --uds "$MUX" health
	assert_failure 3
	assert_equal "$stderr" "stereo-host: health: connecting to $MUX: Connection refused"
}

@test "garbage instead of OK exits 3 and shows the line, escaped" {
	start_stereod
	start_mux --garbage
	run --separate-stderr stereo-host --uds "$MUX" health
	assert_failure 3
	assert_equal "$stderr" 'stereo-host: health: hybrid vsock '"$MUX"': CONNECT 1024 answered "NOPE \x01\x1b[31m\x22not ok\x22\x0a", not "OK <port>"'
	run --separate-stderr stereo-host --uds "$MUX" --json health
	assert_failure 3
	echo "$output" | jq -e '.ok == false and (.error | contains("NOPE \\x01"))'
}

@test "EOF right after CONNECT exits 3: closed before OK" {
	start_stereod
	start_mux --eof
	run --separate-stderr stereo-host --uds "$MUX" ping
	assert_failure 3
	assert_equal "$stderr" "stereo-host: ping: hybrid vsock $MUX: closed before OK (is the guest listening on port 1024?)"
}

@test "an OK slower than the exchange's timeout exits 3 (2 s by default, less with --connect-timeout)" {
	start_stereod
	start_mux --delay-ok 20000
	run --separate-stderr timeout 30 stereo-host --uds "$MUX" health
	assert_failure 3
	assert_equal "$stderr" "stereo-host: health: hybrid vsock $MUX: no answer to CONNECT 1024 within 2000 ms"
	run --separate-stderr timeout 30 stereo-host --connect-timeout 300ms --uds "$MUX" health
	assert_failure 3
	[[ $stderr == *"no answer to CONNECT 1024 within "*" ms" ]]
}

@test "wait-ready retries while the socket is missing, then refused, then answers EOF and garbage" {
	start_stereod
	unset STEREO_HOST_ADDR
	MUX=$BATS_TEST_TMPDIR/v.sock
	timeout 60 stereo-host --uds "$MUX" wait-ready --interval 50ms --timeout 50s \
		>"$BATS_TEST_TMPDIR/wr.out" 2>"$BATS_TEST_TMPDIR/wr.err" &
	local pid=$!
	BG_PIDS=$pid
	# the socket does not exist yet; then a VMM that is not listening; then one that hangs up
	# after every CONNECT; then one whose first two answers are garbage, before OK
	sleep 0.3
	"$STEREO_T/vsock_mux" --uds "$MUX" --ready "$BATS_TEST_TMPDIR/nl.ready" --no-listen &
	local nl=$!
	wait_file "$BATS_TEST_TMPDIR/nl.ready"
	sleep 0.3
	kill $nl
	wait $nl || true
	start_mux --eof
	wait_for sh -c "[ \$(grep -c CONNECT '$MUXREC') -ge 2 ]"
	kill "${BG_PIDS##* }"
	# its own record: a child of the first multiplexer may still be writing to the other one
	start_mux --garbage --bad 2 --record "$BATS_TEST_TMPDIR/mux2.rec"
	bg_status $pid
	[ "$BG_STATUS" -eq 0 ] || { cat "$BATS_TEST_TMPDIR/wr.err" >&2; return 1; }
	assert_equal "$(cat "$BATS_TEST_TMPDIR/wr.out")" ready
	# the second multiplexer saw its two bad exchanges and then the good one
	assert_equal "$(cat "$BATS_TEST_TMPDIR/mux2.rec")" "$(printf 'CONNECT 1024\nCONNECT 1024\nCONNECT 1024')"
}

@test "wait-ready gives up at its deadline with the last answer, escaped" {
	start_stereod
	start_mux --garbage
	run --separate-stderr timeout 30 stereo-host --uds "$MUX" wait-ready --interval 50ms --timeout 1s
	assert_failure 3
	[[ $stderr == 'stereo-host: wait-ready: not ready after 1s (last: hybrid vsock '*': CONNECT 1024 answered "NOPE \x01'* ]]
}

@test "wait-ready stops at once on a socket path it can never use (exit 3)" {
	run --separate-stderr timeout 30 stereo-host --uds /etc/passwd/v.sock wait-ready --timeout 25s
	assert_failure 3
	assert_equal "$stderr" "stereo-host: wait-ready: connecting to /etc/passwd/v.sock: Not a directory"
}
