#!/usr/bin/env bats
# stereod mounts: guest_path and fs_type validation, the mount helper hook, the real
# mount(2)/umount2(2) path in a private mount namespace (tmpfs standing in for virtio
# devices), GET/POST /v1/mounts and LIFO unmount at shutdown.
load helpers
load helpers/stereod

# the helper gets TYPE TAG PATH ro|rw appended as "$@" (the trailing ':' takes them)
setup() { stereod_setup; HELPER="echo \"\$*\" >>'$EV'; :"; }
teardown() { stop_stereod; }

mnt() {   # mnt GUEST_PATH [FS [RO]]: one mount request, prints the ack
	echo "{\"type\":\"mount\",\"payload\":{\"tag\":\"share\",\"guest_path\":\"$1\",\"fs_type\":\"${2:-virtiofs}\",\"read_only\":${3:-false}}}" | nd
}

# the mount table line of PATH in the daemon's namespace: "FSTYPE OPTIONS"
mountinfo_of() {
	awk -v p="$1" '$5 == p { for (i = 7; $i != "-"; i++); print $(i + 1), $6 }' "/proc/$STEREOD_PID/mountinfo"
}

@test "mount refuses /, system directories, /etc/../etc/x and relative paths, and runs nothing" {
	start_stereod --mount-helper "$HELPER"
	for p in / /etc /etc/../etc/x /nix/store /bin /boot/x /dev/shm /proc /sys/fs /run/stereos /run \
		//etc/ /mnt/../proc/x /usr /usr/bin /lib/x /lib64 /sbin /var/lib /root /root/.ssh /home /mnt \
		/tmp; do
		run mnt "$p"
		assert_output --partial '"reply_to":"mount","ok":false,"error":"cannot mount over system directory: \"/'
	done
	run mnt /etc/../etc/x
	assert_output '{"type":"ack","payload":{"reply_to":"mount","ok":false,"error":"cannot mount over system directory: \"/etc/x\""}}'
	run mnt relative/dir
	assert_output '{"type":"ack","payload":{"reply_to":"mount","ok":false,"error":"guest_path must be absolute: \"relative/dir\""}}'
	run mnt ""
	assert_output --partial '"ok":false,"error":"mount guest_path cannot be empty"'
	[ ! -s "$EV" ]
}

@test "mount refuses fs types other than virtiofs and 9p, and bad tags" {
	start_stereod --mount-helper "$HELPER"
	run mnt /mnt/x ext4
	assert_output --partial '"ok":false,"error":"unsupported filesystem type: \"ext4\" (must be virtiofs or 9p)"'
	run nd <<<'{"type":"mount","payload":{"tag":"","guest_path":"/mnt/x","fs_type":"9p"}}'
	assert_output --partial '"ok":false,"error":"mount tag cannot be empty"'
	run nd <<<'{"type":"mount","payload":{"tag":"a,b","guest_path":"/mnt/x","fs_type":"9p"}}'
	assert_output --partial '"ok":false'
	[ ! -s "$EV" ]
}

@test "mount creates the mount point 0755, runs the helper with TYPE TAG PATH ro|rw and lists it" {
	start_stereod --mount-helper "$HELPER"
	run mnt /mnt/work/../data/ 9p true
	assert_output '{"type":"ack","payload":{"reply_to":"mount","ok":true}}'
	[ "$(stat -c '%a %u %g' "$R/mnt/data")" = '755 1000 1000' ]
	[ "$(cat "$EV")" = "9p share $R/mnt/data ro" ]
	run ipc GET /v1/mounts
	assert_output '200 {"mounts":[{"tag":"share","guest_path":"/mnt/data","fs_type":"9p","read_only":true}]}'
}

@test "mounting the same path twice is refused" {
	start_stereod --mount-helper "$HELPER"
	mnt /mnt/x
	run mnt /mnt/x/
	assert_output --partial '"ok":false,"error":"/mnt/x is already mounted"'
}

@test "a mount point reached through a symlink is refused" {
	mkdir -p "$R/srv"
	ln -s "$R/etc" "$R/srv/link"
	start_stereod --mount-helper "$HELPER"
	run mnt /srv/link/x
	assert_output --partial '"ok":false,"error":"guest_path /srv/link/x goes through a symlink"'
	[ ! -s "$EV" ]
}

@test "a failing mount helper gives ok:false and the mount is not tracked" {
	start_stereod --mount-helper "exit 3"
	run mnt /mnt/x
	assert_output --partial '"ok":false,"error":"mounting share on /mnt/x: the mount helper failed"'
	run ipc GET /v1/mounts
	assert_output '200 {"mounts":[]}'
}

@test "real mount(2): a missing virtio device is a clear error" {
	unshare -m --propagation private stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:0 --root "$R" \
		--allow-disk-secrets --poweroff none --ready-fd 3 3>"$BATS_TEST_TMPDIR/ready" 2>>"$LOG" &
	STEREOD_PID=$!
	wait_ready
	run mnt /mnt/x virtiofs
	assert_output --partial '"ok":false,"error":"mounting share (virtiofs) on /mnt/x: '
	run mnt /mnt/y 9p
	assert_output --partial '"ok":false,"error":"mounting share (9p) on /mnt/y: '
}

@test "real mount(2) with a tmpfs stand-in: mounted rw and ro, then unmounted LIFO at shutdown" {
	unshare -m --propagation private stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:0 --root "$R" \
		--allow-disk-secrets --mount-stand-in tmpfs --poweroff-cmd "echo poweroff >>'$EV'" \
		--ready-fd 3 3>"$BATS_TEST_TMPDIR/ready" 2>>"$LOG" &
	STEREOD_PID=$!
	wait_ready
	run mnt /mnt/rw 9p false
	assert_output --partial '"ok":true'
	run ipc POST /v1/mounts '{"tag":"t2","guest_path":"/mnt/ro","fs_type":"virtiofs","read_only":true}'
	assert_output '201 {"status":"ok","tag":"t2","guest_path":"/mnt/ro"}'
	[[ "$(mountinfo_of "$R/mnt/rw")" == "tmpfs rw"* ]]
	[[ "$(mountinfo_of "$R/mnt/ro")" == "tmpfs ro"* ]]
	[ -z "$(awk -v p="$R/mnt/rw" '$5 == p' /proc/self/mountinfo)" ]   # private to the daemon
	run nd <<<'{"type":"shutdown"}'
	assert_output --partial '"ok":true'
	wait_file "$EV" poweroff
	[ -z "$(mountinfo_of "$R/mnt/rw")" ]
	[ -z "$(mountinfo_of "$R/mnt/ro")" ]
	[ "$(grep 'msg="unmounted"' "$LOG" | grep -o 'tag=[a-z0-9]*' | tr '\n' ' ')" = 'tag=t2 tag=share ' ]
}

@test "POST /v1/mounts answers 400 for bad JSON or types and 422 for refused mounts" {
	start_stereod --mount-helper "$HELPER"
	run ipc POST /v1/mounts 'nope'
	assert_output --partial '400 {"error":"invalid JSON: '
	run ipc POST /v1/mounts '{"tag":"t","guest_path":5,"fs_type":"9p"}'
	assert_output '400 {"error":"json: cannot unmarshal number into Go struct field MountPayload.guest_path of type string"}'
	run ipc POST /v1/mounts '{"tag":"t","guest_path":"/etc","fs_type":"9p"}'
	assert_output '422 {"error":"cannot mount over system directory: \"/etc\""}'
	run ipc POST /v1/mounts '{"tag":"t","guest_path":"/mnt/t","fs_type":"9p"}'
	assert_output '201 {"status":"ok","tag":"t","guest_path":"/mnt/t"}'
}

@test "an fs_type with a NUL inside is refused" {
	start_stereod --mount-helper "$HELPER"
	run nd <<<'{"type":"mount","payload":{"tag":"t","guest_path":"/mnt/x","fs_type":"9p\u0000x"}}'
	assert_output --partial '"ok":false,"error":"unsupported filesystem type: \"9p\\x00x\" (must be virtiofs or 9p)"'
	[ ! -s "$EV" ]
}

# start_private [ARGS...]: the daemon in its own mount namespace (real mount(2), no helper)
start_private() {
	unshare -m --propagation private stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:0 --root "$R" \
		--allow-disk-secrets --poweroff none --ready-fd 3 "$@" 3>"$BATS_TEST_TMPDIR/ready" 2>>"$LOG" &
	STEREOD_PID=$!
	wait_ready
}

@test "a refused mount leaves the owner of an existing root-owned directory and of /usr/bin unchanged" {
	mkdir -p "$R/srv/data" "$R/usr/bin" "$R/var"
	start_private
	run mnt /srv/data virtiofs    # no such virtio device: mount fails
	assert_output --partial '"ok":false,"error":"mounting share (virtiofs) on /srv/data: '
	run mnt /usr/bin 9p
	assert_output --partial '"ok":false,"error":"cannot mount over system directory: \"/usr/bin\""'
	run mnt /var 9p
	assert_output --partial '"ok":false'
	[ "$(stat -c '%u:%g' "$R/srv/data" "$R/usr/bin" "$R/var" | sort -u)" = 0:0 ]
}

@test "a successful mount chowns the new filesystem's root after mounting, never the directory under it" {
	mkdir -p "$R/srv/data"
	start_private --mount-stand-in tmpfs
	run mnt /srv/data virtiofs
	assert_output '{"type":"ack","payload":{"reply_to":"mount","ok":true}}'
	# in the daemon's namespace the mount point is the tmpfs root, owned by agent
	[ "$(nsenter -t "$STEREOD_PID" -m stat -c '%u:%g' "$R/srv/data")" = 1000:1000 ]
	[[ "$(mountinfo_of "$R/srv/data")" == "tmpfs rw"* ]]
	# the directory that existed before the request (seen without the mount) keeps its owner
	[ "$(stat -c '%u:%g' "$R/srv/data")" = 0:0 ]
}

@test "a symlink in the middle of a mount path is refused and nothing is created anywhere" {
	OUT=$BATS_TEST_TMPDIR/outside
	mkdir -p "$R/srv" "$OUT"
	ln -s "$OUT" "$R/srv/link"
	start_stereod --mount-helper "$HELPER"
	run mnt /srv/link/newdir/sub
	assert_output --partial '"ok":false,"error":"guest_path /srv/link/newdir/sub goes through a symlink"'
	[ -z "$(ls -A "$OUT")" ]
	[ "$(ls -A "$R/srv")" = link ]
	[ ! -s "$EV" ]
}

@test "a failed mount removes exactly the directories the request created" {
	mkdir -p "$R/srv/keep"
	start_private
	run mnt /srv/keep/a/b/c virtiofs
	assert_output --partial '"ok":false'
	[ -d "$R/srv/keep" ]
	[ -z "$(ls -A "$R/srv/keep")" ]
}

@test "flip-flop race: a directory swapped with a symlink during 200 mounts never touches anything outside it" {
	OUT=$BATS_TEST_TMPDIR/outside
	mkdir -p "$OUT" "$R/home/agent/d"
	chmod 0755 "$OUT"
	chown 1000:1000 "$R/home/agent/d"
	ln -s "$OUT" "$R/home/agent/l"
	start_private --mount-stand-in tmpfs
	# swap d (a directory) and l (a symlink to OUT) atomically, over and over
	python3 -c '
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
os.chdir(sys.argv[1])
n = 0
while not os.path.exists(sys.argv[2]):
    if libc.renameat2(-100, b"d", -100, b"l", 2) == 0:
        n += 1
    if n == 2:
        open(sys.argv[3], "w").close()
' "$R/home/agent" "$BATS_TEST_TMPDIR/stop" "$BATS_TEST_TMPDIR/flipping" &
	local flipper=$!
	wait_file "$BATS_TEST_TMPDIR/flipping"
	for i in $(seq 1 200); do
		echo "{\"type\":\"mount\",\"payload\":{\"tag\":\"t$i\",\"guest_path\":\"/home/agent/d/x$i\",\"fs_type\":\"9p\"}}"
	done | nd --seq --timeout 30000 >"$BATS_TEST_TMPDIR/acks"
	touch "$BATS_TEST_TMPDIR/stop"
	wait "$flipper"
	[ "$(wc -l <"$BATS_TEST_TMPDIR/acks")" -eq 200 ]
	echo "ok: $(grep -c '"ok":true' "$BATS_TEST_TMPDIR/acks") refused: $(grep -c '"ok":false' "$BATS_TEST_TMPDIR/acks")"
	# nothing created, chowned or mounted outside the requested path
	[ -z "$(ls -A "$OUT")" ]
	[ "$(stat -c '%u:%g %a' "$OUT")" = '0:0 755' ]
	run awk -v o="$OUT" 'index($5, o) == 1' "/proc/$STEREOD_PID/mountinfo"
	assert_output ''
	# every mount the daemon made sits in the agent's directory (under either name)
	# the daemon's mounts by source (the tag): every one sits in the agent's directory
	awk '{ for (i = 7; $i != "-"; i++); if ($(i + 2) ~ /^t[0-9]+$/) print $5 }' \
		"/proc/$STEREOD_PID/mountinfo" >"$BATS_TEST_TMPDIR/ours"
	run grep -v "^$R/home/agent/[dl]/x[0-9]*\$" "$BATS_TEST_TMPDIR/ours"
	assert_output ''
	[ "$(wc -l <"$BATS_TEST_TMPDIR/ours")" -eq "$(grep -c '"ok":true' "$BATS_TEST_TMPDIR/acks")" ]
}

@test "a slow mount runs off the loop: pings on other connections are answered meanwhile, its ack comes in order" {
	# the helper says it started, then waits until the test has had its 100 pings answered
	# (10 s at most: stereod's own limit for a mount helper)
	cat >"$BATS_TEST_TMPDIR/slow-helper" <<EOF
#!/bin/sh
touch '$BATS_TEST_TMPDIR/started'
i=0
while [ ! -e '$BATS_TEST_TMPDIR/go' ] && [ \$i -lt 400 ]; do sleep 0.025; i=\$((i + 1)); done
EOF
	chmod +x "$BATS_TEST_TMPDIR/slow-helper"
	start_stereod --mount-helper "$BATS_TEST_TMPDIR/slow-helper"
	run "$BATS_TEST_DIRNAME/helpers/pings_during.py" "$ADDR" "$BATS_TEST_TMPDIR/started" \
		"$BATS_TEST_TMPDIR/go" '{"type":"mount","payload":{"tag":"t","guest_path":"/mnt/slow","fs_type":"9p"}}'
	sed "s/^/# /" <<<"$output" >&3
	assert_success
	assert_line --index 0 '{"type":"ack","id":1,"payload":{"reply_to":"mount","ok":true}}'
}

@test "shutdown unmounts off the loop: pings are answered while a slow unmount runs, then poweroff" {
	# the first call (the mount) is instant; the next (the unmount) says it started, then
	# waits for the test's go (a marker, not \$1: the helper may be run without arguments)
	cat >"$BATS_TEST_TMPDIR/umount-helper" <<EOF
#!/bin/sh
[ -e '$BATS_TEST_TMPDIR/mounted' ] || { touch '$BATS_TEST_TMPDIR/mounted'; exit 0; }
touch '$BATS_TEST_TMPDIR/started'
i=0
while [ ! -e '$BATS_TEST_TMPDIR/go' ] && [ \$i -lt 200 ]; do sleep 0.025; i=\$((i + 1)); done
touch '$BATS_TEST_TMPDIR/started.ended'
EOF
	chmod +x "$BATS_TEST_TMPDIR/umount-helper"
	start_stereod --mount-helper "$BATS_TEST_TMPDIR/umount-helper"
	run mnt /mnt/x
	assert_output --partial '"ok":true'
	run "$BATS_TEST_DIRNAME/helpers/pings_during.py" --reply-first "$ADDR" "$BATS_TEST_TMPDIR/started" \
		"$BATS_TEST_TMPDIR/go" '{"type":"shutdown"}'
	sed "s/^/# /" <<<"$output" >&3
	assert_success
	assert_line --index 0 '{"type":"ack","id":1,"payload":{"reply_to":"shutdown","ok":true}}'
	wait_file "$EV" poweroff
	assert_file_contains "$LOG" 'msg="unmounted" tag=share path=/mnt/x'
}

@test "POST /v1/mounts with a slow helper: other IPC clients are answered meanwhile, then 201" {
	cat >"$BATS_TEST_TMPDIR/slow-helper" <<EOF
#!/bin/sh
touch '$BATS_TEST_TMPDIR/started'
i=0
while [ ! -e '$BATS_TEST_TMPDIR/go' ] && [ \$i -lt 400 ]; do sleep 0.025; i=\$((i + 1)); done
touch '$BATS_TEST_TMPDIR/started.ended'
EOF
	chmod +x "$BATS_TEST_TMPDIR/slow-helper"
	start_stereod --mount-helper "$BATS_TEST_TMPDIR/slow-helper"
	curl -s -o "$BATS_TEST_TMPDIR/post.out" -w '%{http_code}' --max-time 30 --unix-socket "$SOCK" \
		-X POST -H 'Content-Type: application/json' \
		--data-binary '{"tag":"t","guest_path":"/mnt/slow","fs_type":"9p"}' \
		http://stereod/v1/mounts >"$BATS_TEST_TMPDIR/post.code" &
	local post=$!
	wait_file "$BATS_TEST_TMPDIR/started"
	for i in 1 2 3 4 5; do
		run ipc GET /v1/ping
		assert_output '200 {"status":"ok"}'
	done
	[ ! -e "$BATS_TEST_TMPDIR/started.ended" ]   # all answered while the helper was running
	[ ! -s "$BATS_TEST_TMPDIR/post.code" ]
	touch "$BATS_TEST_TMPDIR/go"
	wait "$post"
	[ "$(cat "$BATS_TEST_TMPDIR/post.code") $(cat "$BATS_TEST_TMPDIR/post.out")" = \
		'201 {"status":"ok","tag":"t","guest_path":"/mnt/slow"}' ]
}
