# clis.bash - set-up shared by the CLI suites (stereo-host*, stereo-secret, stereo-mount,
# stereo-health): the real stereod in a temp root, the ndjson_peer test peer, and teardown
# that kills what was started. Load after helpers: `load helpers; load helpers/clis`.

bats_require_minimum_version 1.5.0

# start_stereod [EXTRA ARGS...]: stereod on 127.0.0.1:<any> with its root in the test's temp
# dir; sets ROOT, ADDR (HOST:PORT), SOCK (its IPC socket), LOG, STEREOD_PID, and exports
# STEREO_HOST_ADDR and STEREO_SOCKET so the CLIs find it without flags.
start_stereod() {
	ROOT=$BATS_TEST_TMPDIR/root
	LOG=$BATS_TEST_TMPDIR/stereod.log
	mkdir -p "$ROOT/etc"
	: >"$BATS_TEST_TMPDIR/ready"
	stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:0 --root "$ROOT" --ready-fd 3 \
		--poweroff-cmd "echo poweroff >>'$BATS_TEST_TMPDIR/poweroff'" --allow-disk-secrets \
		"$@" 3>"$BATS_TEST_TMPDIR/ready" 2>"$LOG" &
	STEREOD_PID=$!
	wait_file "$BATS_TEST_TMPDIR/ready" ':'
	ADDR=$(head -n1 "$BATS_TEST_TMPDIR/ready")
	SOCK=$ROOT/run/stereos/stereosd.sock
	wait_for test -S "$SOCK"
	export STEREO_HOST_ADDR=tcp://$ADDR STEREO_SOCKET=$SOCK
}

# start_peer NAME [ndjson_peer ARGS...]: a test peer; sets PEER_ADDR (HOST:PORT or socket
# path) and records its pid for teardown. Received lines go to $BATS_TEST_TMPDIR/NAME.rec.
start_peer() {
	local name=$1
	shift
	local ready=$BATS_TEST_TMPDIR/$name.ready
	"$STEREO_T/ndjson_peer" --ready "$ready" --record "$BATS_TEST_TMPDIR/$name.rec" "$@" \
		2>"$BATS_TEST_TMPDIR/$name.log" &
	PEER_PIDS="${PEER_PIDS:-} $!"
	wait_file "$ready"
	PEER_ADDR=$(head -n1 "$ready")
}

# The lines the peer NAME received, one per line.
peer_received() {
	cat "$BATS_TEST_TMPDIR/$1.rec" 2>/dev/null
}

clis_teardown() {
	local p
	for p in ${BG_PIDS:-} ${PEER_PIDS:-} ${STEREOD_PID:-}; do
		kill "$p" 2>/dev/null || true
	done
	for p in ${BG_PIDS:-} ${PEER_PIDS:-} ${STEREOD_PID:-}; do
		wait "$p" 2>/dev/null || true
	done
	if [ -n "${LOG:-}" ] && [ -f "$LOG" ]; then
		asan_clean "$LOG"
	fi
}

# A port on which nothing listens (connection refused).
refused_addr() {
	echo "127.0.0.1:$(free_port)"
}

# bg_status PID: wait for a background job started by the test (give it a `timeout N` hang
# guard) and set BG_STATUS to its exit code (`run wait` does not see the test's jobs).
bg_status() {
	BG_STATUS=0
	wait "$1" || BG_STATUS=$?
}
