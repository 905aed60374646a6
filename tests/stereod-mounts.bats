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
		//etc/ /mnt/../proc/x; do
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
