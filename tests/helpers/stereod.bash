# stereod.bash - shared set-up for the stereod*.bats suites: a private root with passwd/group
# files, the daemon started on 127.0.0.1 port 0 with a readiness fd, and small clients.
#   start_stereod [ARGS...]   start it (defaults below; extra args appended), wait for ready
#   stop_stereod              SIGTERM, wait, expect exit 0 and a clean sanitizer log
#   nd [CLIENT-ARGS]          ndjson_client against the daemon (stdin: request lines)
#   ipc METHOD PATH [BODY]    HTTP over the IPC socket; prints "STATUS BODY"
# $R is the root, $EV a file the poweroff command and the mount helper append to.

stereod_setup() {
	R=$BATS_TEST_TMPDIR/root
	EV=$BATS_TEST_TMPDIR/events
	LOG=$BATS_TEST_TMPDIR/stereod.log
	mkdir -p "$R/etc" "$R/home/agent"
	# homes are resolved inside --root: /home/agent is $R/home/agent
	printf 'root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/home/agent:/bin/sh\n' >"$R/etc/passwd"
	printf 'root:x:0:\nadmin:x:1001:\nagent:x:1000:\n' >"$R/etc/group"
	chown 1000:1000 "$R/home/agent"
	: >"$EV"
	STEREOD_PID=
}

start_stereod() {
	rm -f "$BATS_TEST_TMPDIR/ready"
	stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:0 --root "$R" --ready-fd 3 \
		--allow-disk-secrets --poll-interval 100ms \
		--poweroff-cmd "echo poweroff >>'$EV'" "$@" 3>"$BATS_TEST_TMPDIR/ready" 2>>"$LOG" &
	STEREOD_PID=$!
	wait_ready
}

# wait for the readiness line; fail at once if the daemon died
wait_ready() {
	local i
	for i in $(seq 1 400); do
		if [ -s "$BATS_TEST_TMPDIR/ready" ] && grep -q . "$BATS_TEST_TMPDIR/ready"; then
			ADDR=$(head -1 "$BATS_TEST_TMPDIR/ready")
			SOCK=$R/run/stereos/stereosd.sock
			return 0
		fi
		kill -0 "$STEREOD_PID" 2>/dev/null || { cat "$LOG" >&2; return 1; }
		sleep 0.025
	done
	echo "stereod did not become ready" >&2
	return 1
}

stop_stereod() {
	[ -n "$STEREOD_PID" ] || return 0
	local pid=$STEREOD_PID rc=0
	STEREOD_PID=
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" || rc=$?
	asan_clean "$LOG"
	if [ "$rc" -ne 0 ]; then
		echo "stereod exited $rc" >&2
		cat "$LOG" >&2
		return 1
	fi
}

nd() {
	"$STEREO_T/ndjson_client" "$@" "$ADDR"
}

ipc() {
	local method=$1 path=$2 code
	shift 2
	if [ $# -gt 0 ]; then
		code=$(curl -s -o "$BATS_TEST_TMPDIR/ipc.out" -w '%{http_code}' --max-time 5 \
			--unix-socket "$SOCK" -X "$method" -H 'Content-Type: application/json' \
			--data-binary "$1" "http://stereod$path")
	else
		code=$(curl -s -o "$BATS_TEST_TMPDIR/ipc.out" -w '%{http_code}' --max-time 5 \
			--unix-socket "$SOCK" -X "$method" "http://stereod$path")
	fi
	echo "$code $(cat "$BATS_TEST_TMPDIR/ipc.out")"
}

# state: the lifecycle state get_health reports to a client that said hello (one that did not
# is shown upstream's view: never degraded)
state() {
	printf '{"type":"hello"}\n{"type":"get_health"}\n' | nd | tail -1 | jq -r .payload.state
}

# wait_state S: until get_health (after hello) says S
wait_state() {
	wait_for sh -c "[ \"\$(printf '{\"type\":\"hello\"}\\n{\"type\":\"get_health\"}\\n' | '$STEREO_T/ndjson_client' '$ADDR' | tail -1 | jq -r .payload.state)\" = '$1' ]"
}
