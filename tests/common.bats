#!/usr/bin/env bats
# common/ through the unit driver (tests/helpers/unit.c): JSON, NDJSON, atomic writes,
# symlink-refusing opens, validation, HTTP parsing.
load helpers

unit() { "$STEREO_T/unit" "$@"; }

@test "json: \\u escapes, surrogate pairs and control escapes unescape to UTF-8" {
	run unit json-str <<<'{"s":"a\u00e9\ud83d\ude00\n\t\"\\\/"}'
	assert_success
	assert_output 'a\xc3\xa9\xf0\x9f\x98\x80\x0a\x09"\x5c/'
}

@test "json: lone surrogates and bad escapes are rejected" {
	run unit json-str <<<'{"s":"\ud83d"}'
	assert_failure
	assert_output --partial 'surrogate'
	run unit json-str <<<'{"s":"\ude00x"}'
	assert_failure
	run unit json-str <<<'{"s":"\x41"}'
	assert_failure
	run unit json-str <<<'{"s":"\u12G4"}'
	assert_failure
}

@test "json: embedded NUL is rejected where a name is expected, kept elsewhere" {
	run unit json-str name <<<'{"s":"a\u0000b"}'
	assert_failure
	assert_output --partial 'NUL'
	run unit json-str <<<'{"s":"a\u0000b"}'
	assert_success
	assert_output 'a\x00b'
}

@test "json: invalid UTF-8 and raw control characters in strings are rejected" {
	run unit json-parse < <(printf '{"s":"\xc3\x28"}')
	assert_failure
	assert_output --partial 'UTF-8'
	run unit json-parse < <(printf '{"s":"\xed\xa0\x80"}')
	assert_failure
	run unit json-parse < <(printf '{"s":"a\tb"}')
	assert_failure
	assert_output --partial 'control character'
}

@test "json: strictness beyond jsmn (trailing commas, literals, numbers, trailing data)" {
	for bad in '{"a":[1,2,]}' '{"a":1,}' '{"a":tru}' '{"a":01}' '{"a":1.}' '{"a":-}' \
		'{"a":1} {"b":2}' '{"a":1}x' '{a:1}' '{"a" 1}' '' '{"a":"x' '{"a":+1}' '{"a":.5}'; do
		run unit json-parse <<<"$bad"
		assert_failure
		assert_output --partial 'error:'
	done
	for good in '{}' '{"a":[1,2.5e-3,-0,true,false,null,{"b":"c"}]}' ' {"a" : "b" } '; do
		run unit json-parse <<<"$good"
		assert_success
	done
}

@test "json: nesting deeper than the limit is rejected without crashing" {
	deep=$(printf '[%.0s' $(seq 1 100000))
	run unit json-parse <<<"$deep"
	assert_failure
	assert_output --partial 'nesting too deep'
}

@test "json: integer getters reject fractions, negatives and overflow" {
	run unit json-get n u64 <<<'{"n":18446744073709551615}'
	assert_output '18446744073709551615'
	run unit json-get n u64 <<<'{"n":18446744073709551616}'
	assert_failure
	run unit json-get n u64 <<<'{"n":-1}'
	assert_failure
	run unit json-get n u64 <<<'{"n":1.5}'
	assert_failure
	run unit json-get n i64 <<<'{"n":-9223372036854775808}'
	assert_output '-9223372036854775808'
	run unit json-get n bool <<<'{"n":"true"}'
	assert_failure
	run unit json-get n u64 <<<'{"n":1,"n":2}'
	assert_output '2'
}

@test "json writer: Go's string form (quotes, controls, <>& and U+2028 escaped, bad UTF-8 as \\ufffd)" {
	run unit json-quote < <(printf 'a"b\\c\n\x01\x1f\b<&>\xc3\xa9\xe2\x80\xa8\xff')
	assert_success
	assert_line --index 0 '"a\"b\\c\n\u0001\u001f\u0008\u003c\u0026\u003eé\u2028\ufffd"'
}

@test "ndjson: frames lines, ignores nothing, keeps the partial tail" {
	run unit ndjson 1048576 < <(printf 'ab\n\ncd\nxyz')
	assert_success
	assert_line --index 0 'line 2'
	assert_line --index 1 'line 0'
	assert_line --index 2 'line 2'
	assert_line --index 3 --partial 'eof pending=3 '
}

@test "ndjson: a 2 MiB line without newline stops at the cap and never buffers more" {
	run unit ndjson 1048576 < <(head -c 2097152 /dev/zero | tr '\0' a)
	assert_success
	assert_output --partial 'too long'
	held=$(sed -n 's/.*held at most \([0-9]*\) bytes.*/\1/p' <<<"$output")
	[ "$held" -le 2097152 ]
	[ "$held" -ge 1048577 ]
}

@test "ndjson: a line of exactly the cap is accepted, one byte more is not" {
	run unit ndjson 1000 < <(head -c 1000 /dev/zero | tr '\0' a; echo)
	assert_output --partial 'line 1000'
	run unit ndjson 1000 < <(head -c 1001 /dev/zero | tr '\0' a; echo)
	assert_output --partial 'too long'
}

@test "atomic write: new content, requested mode, no temp files left" {
	d=$BATS_TEST_TMPDIR
	echo old >"$d/f"
	run unit atomic-write "$d/f" 640 <<<"new"
	assert_success
	assert_equal "$(cat "$d/f")" new
	assert_equal "$(stat -c %a "$d/f")" 640
	assert_equal "$(ls -A "$d")" f
}

@test "atomic write: a failing write (full filesystem) leaves the old file intact" {
	[ "$(id -u)" = 0 ] || skip "needs root for a tmpfs in a mount namespace"
	d=$BATS_TEST_TMPDIR/fs
	mkdir -p "$d"
	run unshare -m sh -c "mount -t tmpfs -o size=64k tmpfs '$d' && echo old >'$d/f' &&
		head -c 1048576 /dev/zero | '$STEREO_T/unit' atomic-write '$d/f' 644;
		echo rc=\$?; cat '$d/f'; ls -A '$d'"
	assert_output --partial 'No space left on device'
	assert_output --partial 'rc=1'
	assert_line --index 2 'old'
	assert_line --index 3 'f'
}

@test "atomic write: a symlink at the target is replaced, never written through" {
	d=$BATS_TEST_TMPDIR
	mkdir "$d/real"
	ln -s /etc/passwd "$d/real/target"
	run unit atomic-write "$d/real/target" 600 <<<"replaced"
	assert_success
	# the symlink itself is replaced, /etc/passwd is untouched
	[ ! -L "$d/real/target" ]
	assert_equal "$(cat "$d/real/target")" replaced
	run grep -c replaced /etc/passwd
	assert_output 0
}

@test "open_beneath: refuses symlinks in any component and .." {
	d=$BATS_TEST_TMPDIR
	mkdir -p "$d/home/.ssh" "$d/outside"
	ln -s "$d/outside" "$d/home/link"
	ln -s "$d/outside/x" "$d/home/.ssh/authorized_keys"
	run unit open-beneath "$d/home" link/authorized_keys
	assert_failure
	run unit open-beneath "$d/home" .ssh/authorized_keys
	assert_failure
	run unit open-beneath "$d/home" ../outside/y
	assert_failure
	[ ! -e "$d/outside/x" ] && [ ! -e "$d/outside/y" ]
	run unit open-beneath "$d/home" .ssh/new
	assert_success
	assert_file_exists "$d/home/.ssh/new"
}

@test "names: rejects empty, dots, slashes, controls, leading dot, over 255 bytes" {
	for bad in '' . .. ../x a/b '.hidden' 'a..b' "$(printf 'a\tb')" "$(head -c 256 /dev/zero | tr '\0' a)"; do
		run unit valid-name "$bad"
		assert_failure
	done
	run unit valid-name "$(head -c 255 /dev/zero | tr '\0' a)"
	assert_success
	run unit valid-name 'api-key_1.txt'
	assert_success
}

@test "paths: cleaned like Go's filepath.Clean, relative rejected" {
	run unit path-clean '/etc/../etc/x'
	assert_output '/etc/x'
	run unit path-clean '//a/./b/../c/'
	assert_output '/a/c'
	run unit path-clean '/../..'
	assert_output '/'
	run unit path-clean 'rel/path'
	assert_failure
}

@test "http: parses request line, headers, Content-Length and keep-alive" {
	run unit http-parse < <(printf 'POST /v1/secrets HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n')
	assert_success
	assert_output 'method=POST target=/v1/secrets minor=1 headers=2 cl=12 keepalive=1 head=58'
	run unit http-parse < <(printf 'GET / HTTP/1.0\r\n\r\n')
	assert_output --partial 'keepalive=0'
	run unit http-parse < <(printf 'GET / HTTP/1.1\r\nConnection: close\r\n\r\n')
	assert_output --partial 'keepalive=0'
}

@test "http: partial, malformed and oversized heads are told apart" {
	run unit http-parse < <(printf 'GET / HTTP/1.1\r\nHost: x\r\n')
	assert_output partial
	for bad in 'GET /\r\n\r\n' 'GET / HTTP/2.0\r\n\r\n' 'G@T / HTTP/1.1\r\n\r\n' \
		'GET / HTTP/1.1\r\nbad header\r\n\r\n' 'GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n' \
		'GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n' \
		'GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n'; do
		run unit http-parse < <(printf "$bad")
		assert_output bad
	done
	run unit http-parse < <(printf 'GET / HTTP/1.1\r\nX: %s\r\n\r\n' "$(head -c 20000 /dev/zero | tr '\0' a)")
	assert_output 'too large'
}

@test "durations: ms, s, m, h and bare seconds" {
	run unit duration 500ms
	assert_output 500
	run unit duration 1.5s
	assert_output 1500
	run unit duration 2m
	assert_output 120000
	run unit duration 10
	assert_output 10000
	run unit duration 5x
	assert_failure
}

# --- HTTP server and client over a unix socket -------------------------------------------
start_echo() {
	sock=$BATS_TEST_TMPDIR/h.sock
	"$STEREO_T/unit" http-serve "$sock" "$BATS_TEST_TMPDIR/ready" 2>"$BATS_TEST_TMPDIR/srv.log" &
	srv=$!
	wait_file "$BATS_TEST_TMPDIR/ready"
}
stop_echo() { kill "$srv" 2>/dev/null; wait "$srv" 2>/dev/null || true; asan_clean "$BATS_TEST_TMPDIR/srv.log"; }

# raw REQUESTS to the socket, print everything the server answers until it closes or 1 s idle
raw_http() {
	python3 - "$sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(1.0)
s.sendall(sys.argv[2].encode().decode('unicode_escape').encode('latin-1'))
out = b''
try:
    while True:
        d = s.recv(65536)
        if not d: break
        out += d
except socket.timeout:
    pass
sys.stdout.write(out.decode('latin-1'))
PY
}

@test "http: client and server round trip a POST body" {
	start_echo
	run "$STEREO_T/unit" http-call "$sock" POST /v1/x '{"a":1}'
	stop_echo
	assert_success
	assert_output '200 {"method":"POST","path":"/v1/x","body":"{\"a\":1}"}'
}

@test "http: keep-alive serves pipelined requests on one connection in order" {
	start_echo
	run raw_http 'GET /one HTTP/1.1\r\nHost: x\r\n\r\nPOST /two HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /three HTTP/1.1\r\nConnection: close\r\n\r\n'
	stop_echo
	assert_equal "$(grep -o 'HTTP/1.1 200 OK' <<<"$output" | wc -l)" 3
	[[ "$output" == *'"/one"'*'"/two","body":"abc"'*'"/three"'* ]]
}

@test "http: 413 for a body over 1 MiB, 400 for garbage, 411 for chunked requests" {
	start_echo
	run raw_http 'POST /x HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n'
	assert_output --partial 'HTTP/1.1 413'
	assert_output --partial '{"error":"request body too large'
	run raw_http 'NOT HTTP\r\n\r\n'
	assert_output --partial 'HTTP/1.1 400'
	run raw_http 'POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n'
	assert_output --partial 'HTTP/1.1 411'
	# the server is still serving others
	run "$STEREO_T/unit" http-call "$sock" GET /alive
	stop_echo
	assert_output --partial '200 {"method":"GET","path":"/alive"'
}

@test "http client: reads chunked responses and times out on a silent server" {
	sock=$BATS_TEST_TMPDIR/c.sock
	python3 - "$sock" "$BATS_TEST_TMPDIR/ready" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(4)
open(sys.argv[2], 'w').write('ready\n')
c, _ = s.accept(); c.recv(65536)
c.sendall(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[1,2]\r\n3\r\n,[]\r\n0\r\n\r\n'); c.close()
c, _ = s.accept(); c.recv(65536)
import time; time.sleep(5)
PY
	py=$!
	wait_file "$BATS_TEST_TMPDIR/ready"
	run "$STEREO_T/unit" http-call "$sock" GET /v1/agents
	assert_output '200 [1,2],[]'
	run "$STEREO_T/unit" http-call "$sock" GET /v1/agents
	kill $py 2>/dev/null || true
	assert_equal "$status" 3
	assert_output --partial 'timed out'
}

@test "http client: connection refused is reported, not a crash" {
	run "$STEREO_T/unit" http-call "$BATS_TEST_TMPDIR/none.sock" GET /
	assert_equal "$status" 1
	assert_output --partial 'No such file or directory'
}

@test "loop: timers fire in deadline order and a cancelled timer never fires" {
	run "$STEREO_T/unit" loop-timers
	assert_success
	assert_output 'order 1 3 0 elapsed>=60:1'
}

@test "proc_run waits for its own child even while another thread reaps with waitpid(-1)" {
	run unit proc-run 0 sh -c 'sleep 0.3; exit 3'
	assert_success
	assert_output "exit 3 reaped-elsewhere=0"
}

@test "proc_run kills the child's whole process group at the deadline" {
	run unit proc-run 300 sh -c 'sleep 100 & echo $! >"$0"; wait' "$BATS_TEST_TMPDIR/grandchild"
	assert_success
	assert_output "timed out, signal 9 reaped-elsewhere=0"
	gc=$(cat "$BATS_TEST_TMPDIR/grandchild")
	wait_for sh -c "! kill -0 $gc 2>/dev/null"
}

@test "proc_run reports an exec failure as exit 127 with the reason on stderr" {
	run --separate-stderr unit proc-run 0 /nonexistent/tool
	assert_success
	assert_output "exit 127 reaped-elsewhere=0"
	assert_equal "$stderr" "/nonexistent/tool: exec: No such file or directory"
}
