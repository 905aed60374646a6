#!/usr/bin/env bats
# e2e.bats - the whole product in one run: the test image (rootfs/build.sh --test) boots
# under QEMU with stereo as PID 1 and stereod inside, and the same binary drives it from the
# host as stereo-host over the forwarded TCP port. The guest boots once for the file; the
# tests run in order against it and the last one shuts it down. See docs/rootfs.md.
load helpers

# alive PID: the process exists and is not a zombie
alive() {
	[ -r "/proc/$1/stat" ] && ! sed 's/^.*) //' "/proc/$1/stat" | grep -q '^Z'
}

host() {
	stereo-host --tcp "127.0.0.1:$(cat "$E2E/port")" --timeout 10s "$@"
}

setup_file() {
	E2E=$BATS_FILE_TMPDIR/e2e
	export E2E
	mkdir -p "$E2E/share"
	if ! command -v qemu-system-x86_64 >/dev/null; then
		skip "QEMU CANNOT RUN: qemu-system-x86_64 is not installed (make deps installs it)"
	fi
	if ! qemu-system-x86_64 --version >/dev/null 2>&1 </dev/null; then
		skip "QEMU CANNOT RUN: qemu-system-x86_64 --version fails here"
	fi
	sh "$STEREO_TOP/rootfs/build.sh" --test -o "$E2E/image.cpio.zst" >"$E2E/build.log" 2>&1 ||
		{ cat "$E2E/build.log" >&2; return 1; }
	free_port > "$E2E/port"
	date +%s%N > "$E2E/t0"
	# double fork: QEMU is not our child, so nothing here has to reap it; its PID comes from
	# -pidfile and every path out of this file kills it by that PID (teardown_file); timeout
	# is the last guard should bats itself die. loglevel=7 puts init's log lines (it logs to
	# /dev/kmsg) on the console next to stereod's (stderr).
	(timeout 600 sh "$STEREO_TOP/rootfs/vm.sh" --image "$E2E/image.cpio.zst" --port "$(cat "$E2E/port")" \
		--share "$E2E/share" --tag e2e --serial "$E2E/serial.log" --pidfile "$E2E/qemu.pid" \
		--append "loglevel=7" \
		>"$E2E/vm.log" 2>&1 </dev/null 3>&- &)
	for _ in $(seq 1 400); do
		[ -s "$E2E/qemu.pid" ] && break
		sleep 0.05
	done
	[ -s "$E2E/qemu.pid" ] || { cat "$E2E/vm.log" >&2; return 1; }
}

teardown_file() {
	local pid
	pid=$(cat "$E2E/qemu.pid" 2>/dev/null) || return 0
	if alive "$pid"; then
		kill "$pid" 2>/dev/null
		for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.05; done
		alive "$pid" && kill -9 "$pid" 2>/dev/null
	fi
	return 0
}

# On a failure, show what the guest said.
teardown() {
	if [ -n "${BATS_TEST_COMPLETED:-}" ] || [ ! -f "$E2E/serial.log" ]; then return 0; fi
	echo "--- guest console:" >&2
	tr -d '\r' < "$E2E/serial.log" | tail -40 >&2
}

@test "the guest boots and stereod reports ready to wait-ready (boot time printed)" {
	# 500 ms per attempt: until the guest's eth0 is up, QEMU's forwarder accepts the connection
	# but its SYN to the guest is lost and only retried seconds later; a fresh connection is
	# the quicker way to notice that the guest listens (the benchmark uses 200 ms)
	run host --timeout 500ms wait-ready --interval 20ms --timeout 60s
	local t1 ms
	t1=$(date +%s%N)
	assert_success
	assert_output --regexp '^(ready|healthy)$'
	ms=$(( (t1 - $(cat "$E2E/t0")) / 1000000 ))
	echo "# boot to ready: $ms ms (QEMU start -> wait-ready returned)" >&3
}

@test "the forwarded control port listens on loopback only" {
	run ss -Hltn "sport = :$(cat "$E2E/port")"
	assert_success
	assert_output --partial "127.0.0.1:$(cat "$E2E/port") "
	assert_equal "$(echo "$output" | grep -c .)" 1
}

@test "health shows the state and an uptime" {
	run host health
	assert_success
	assert_line --regexp '^state: (ready|healthy)$'
	assert_line --regexp '^uptime: [0-9]+s$'
	run host health --json
	assert_success
	[ "$(echo "$output" | jq -r .state)" = ready ] || [ "$(echo "$output" | jq -r .state)" = healthy ]
	[ "$(echo "$output" | jq -r '.uptime_seconds | type')" = number ]
}

@test "set-config is accepted" {
	printf '[agent]\nname = "e2e"\n' > "$E2E/jcard.toml"
	run host set-config "$E2E/jcard.toml"
	assert_success
}

@test "a secret is injected from a file, never from argv" {
	head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$E2E/secret.value"
	run host secret set e2e_token --from-file "$E2E/secret.value"
	assert_success
}

@test "the guest refuses a secret name that escapes the secrets directory" {
	run host secret set ../escape --from-file "$E2E/secret.value"
	assert_failure 1
}

@test "an ssh key is injected for agent" {
	echo "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2eE2eE2eE2eE2eE2eE2eE2eE2eE2eE2eE2eE2eE2e e2e@host" > "$E2E/key.pub"
	run host ssh-key add agent "$E2E/key.pub"
	assert_success
}

@test "a 9p mount through the protocol shows a file written by the guest on the host" {
	run host mount e2e /mnt/e2e --type 9p
	assert_success
	# the guest's e2e probe writes hello last, when it sees the 9p mount appear
	wait_file "$E2E/share/hello" "hello from the guest"
}

@test "the injected secret reads back through the guest with its value and mode 0600" {
	wait_file "$E2E/share/hello"
	assert_file_exists "$E2E/share/secrets/e2e_token"
	[ "$(cat "$E2E/share/secrets/e2e_token")" = "$(cat "$E2E/secret.value")" ]
	assert_file_contains "$E2E/share/manifest" '^/run/stereos/secrets/e2e_token 0600 0 0$'
	run grep -c '^/run/stereos/secrets/' "$E2E/share/manifest"
	assert_output 1
}

@test "agent's authorized_keys holds the injected key, owned by agent, mode 0600" {
	wait_file "$E2E/share/hello"
	cmp "$E2E/key.pub" "$E2E/share/agent.authorized_keys"
	assert_file_contains "$E2E/share/manifest" '^/home/agent/.ssh 0700 1001 1001$'
	assert_file_contains "$E2E/share/manifest" '^/home/agent/.ssh/authorized_keys 0600 1001 1001$'
}

@test "jcard.toml in the guest holds the config that was sent" {
	wait_file "$E2E/share/hello"
	cmp "$E2E/jcard.toml" "$E2E/share/jcard.toml"
	assert_file_contains "$E2E/share/manifest" '^/etc/stereos/jcard.toml 0644 0 0$'
}

@test "shutdown unmounts, syncs and powers off, and QEMU exits by itself" {
	local pid
	pid=$(cat "$E2E/qemu.pid")
	alive "$pid"
	run host shutdown e2e-done
	assert_success
	# the guest powers off (not a panic, not a reboot) and QEMU ends on its own: -no-reboot
	for _ in $(seq 1 300); do alive "$pid" || break; sleep 0.05; done
	refute alive "$pid"
	tr -d '\r' < "$E2E/serial.log" > "$E2E/console.txt"
	# stereod's own account, in order: unmount the share, sync, ask init to power off
	run grep -n -e 'msg="unmounted".*path=/mnt/e2e' -e 'msg="filesystems synced"' \
		-e 'reboot: Power down' "$E2E/console.txt"
	assert_line --index 0 --partial 'msg="unmounted"'
	assert_line --index 1 --partial 'msg="filesystems synced"'
	assert_line --index 2 --partial 'reboot: Power down'
	refute grep -q 'Kernel panic' "$E2E/console.txt"
}

# ---- the production image (make rootfs), checked without booting it -----------------------

# build it once for these tests: the listing in prod.list, a few files unpacked under x/
prod_image() {
	[ -s "$E2E/prod.list" ] && return 0
	sh "$STEREO_TOP/rootfs/build.sh" -o "$E2E/prod.cpio.zst" >/dev/null
	mkdir -p "$E2E/x"
	(cd "$E2E/x" && zstd -dc "$E2E/prod.cpio.zst" |
		cpio -id --quiet etc/passwd etc/group etc/stereos/modules)
	zstd -dc "$E2E/prod.cpio.zst" | cpio -itvn --quiet > "$E2E/prod.list"
}

@test "the production image holds stereo, its applet links and /init, and no shell, probe or services dir" {
	prod_image
	assert_file_contains "$E2E/prod.list" ' bin/stereo$'
	assert_file_contains "$E2E/prod.list" ' init -> /bin/stereo$'
	local a
	for a in $("$STEREO_BIN" --list); do
		grep -q " bin/$a -> /bin/stereo$" "$E2E/prod.list"
	done
	refute grep -qE ' (bin/sh|bin/busybox|bin/e2e-probe|etc/stereos/services)( |$)' "$E2E/prod.list"
	assert_file_contains "$E2E/prod.list" '^crw------- .* dev/console$'
	assert_file_contains "$E2E/prod.list" '^drwx------ .* 1001 *1001 .* home/agent$'
}

@test "the production image's passwd and group have root, admin and agent" {
	prod_image
	assert_file_contains "$E2E/x/etc/passwd" '^root:x:0:0:'
	assert_file_contains "$E2E/x/etc/passwd" '^admin:x:1000:1000:'
	assert_file_contains "$E2E/x/etc/passwd" '^agent:x:1001:1001:.*:/home/agent:'
	assert_file_contains "$E2E/x/etc/group" '^admin:x:1000:'
	assert_file_contains "$E2E/x/etc/group" '^agent:x:1001:'
}

@test "the production image lists its modules in dependency order, each present in the image" {
	prod_image
	local kdir=${KDIR:-$STEREO_TOP/build/kernel}
	run grep -v '^#' "$E2E/x/etc/stereos/modules"
	assert_success
	[ "$(echo "$output" | sed 's|.*/||; s|\.ko$||')" = "$(cat "$kdir/modules.order")" ]
	local m
	for m in $output; do
		grep -q " ${m#/}$" "$E2E/prod.list"
	done
	# virtio before virtio_pci before virtio_net; 9pnet before 9p
	echo "$output" | tr '\n' ' ' | grep -q '/virtio.ko .*/virtio_pci.ko .*/virtio_net.ko'
	echo "$output" | tr '\n' ' ' | grep -q '/9pnet.ko .*/9p.ko'
}

@test "the image without modules is under 1 MiB compressed, and mkcpio is reproducible" {
	sh "$STEREO_TOP/rootfs/build.sh" --no-modules -o "$E2E/bare1.cpio.zst" >/dev/null
	sh "$STEREO_TOP/rootfs/build.sh" --no-modules -o "$E2E/bare2.cpio.zst" >/dev/null
	cmp "$E2E/bare1.cpio.zst" "$E2E/bare2.cpio.zst"
	local size
	size=$(wc -c < "$E2E/bare1.cpio.zst")
	echo "# image without modules: $size bytes" >&3
	[ "$size" -lt 1048576 ]
}
