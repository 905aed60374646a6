#!/usr/bin/env bats
# e2e.bats - the whole product in one run, on two machines at once: the test image
# (rootfs/build.sh --test) boots under QEMU on q35 (PCI devices) and on microvm (virtio-mmio
# devices, no PCI: the shape of a Firecracker VM), with stereo as PID 1 and stereod inside.
# The same binary drives both from the host as stereo-host: q35 over the forwarded TCP port,
# microvm the way a Firecracker host does, through a hybrid vsock socket (tests/helpers/
# vsock_mux in front of the forwarded port). q35 powers off; microvm runs init with
# --halt=reboot and ends with a reboot, which ends QEMU (-no-reboot) as it ends Firecracker.
# Each guest boots once for the file; the tests run in order against both and the last ones
# shut them down. See docs/rootfs.md.
load helpers

MACHINES="q35 microvm"

# alive PID: the process exists and is not a zombie
alive() {
	[ -r "/proc/$1/stat" ] && ! sed 's/^.*) //' "/proc/$1/stat" | grep -q '^Z'
}

# host MACHINE ARGS...: stereo-host at that guest
host() {
	local m=$1
	shift
	if [ "$m" = microvm ]; then
		stereo-host --uds "$E2E/microvm/v.sock" --timeout 10s "$@"
	else
		stereo-host --tcp "127.0.0.1:$(cat "$E2E/$m/port")" --timeout 10s "$@"
	fi
}

# boot MACHINE APPEND: start QEMU double-forked (QEMU is not our child, so nothing here has to
# reap it); its PID comes from -pidfile and teardown_file kills it by that PID; timeout is the
# last guard should bats itself die. loglevel=7 puts init's log lines (it logs to /dev/kmsg)
# on the console next to stereod's (stderr).
boot() {
	local m=$1 d=$E2E/$1
	mkdir -p "$d/share"
	free_port > "$d/port"
	free_port > "$d/mdport"
	date +%s%N > "$d/t0"
	(timeout 600 sh "$STEREO_TOP/rootfs/vm.sh" --machine "$m" --image "$E2E/image.cpio.zst" \
		--port "$(cat "$d/port")" --md-port "$(cat "$d/mdport")" --share "$d/share" --tag e2e --serial "$d/serial.log" \
		--pidfile "$d/qemu.pid" --append "$2" \
		>"$d/vm.log" 2>&1 </dev/null 3>&- &)
}

setup_file() {
	E2E=$BATS_FILE_TMPDIR/e2e
	export E2E
	mkdir -p "$E2E"
	if ! command -v qemu-system-x86_64 >/dev/null; then
		skip "QEMU CANNOT RUN: qemu-system-x86_64 is not installed (make deps installs it)"
	fi
	if ! qemu-system-x86_64 --version >/dev/null 2>&1 </dev/null; then
		skip "QEMU CANNOT RUN: qemu-system-x86_64 --version fails here"
	fi
	sh "$STEREO_TOP/rootfs/build.sh" --test -o "$E2E/image.cpio.zst" >"$E2E/build.log" 2>&1 ||
		{ cat "$E2E/build.log" >&2; return 1; }
	boot q35 "loglevel=7"
	# Firecracker-style power-off: init's options come after "--" on the kernel command line
	boot microvm "loglevel=7 -- --halt=reboot"
	# the VMM's hybrid vsock socket: guest port 1024 is the microvm's forwarded port
	("$STEREO_T/vsock_mux" --uds "$E2E/microvm/v.sock" --ready "$E2E/mux.ready" \
		--forward "1024=127.0.0.1:$(cat "$E2E/microvm/port")" \
		--forward "5555=127.0.0.1:$(cat "$E2E/microvm/mdport")" --record "$E2E/mux.rec" \
		>"$E2E/mux.log" 2>&1 </dev/null 3>&- & echo $! > "$E2E/mux.pid")
	local m
	for m in $MACHINES; do
		for _ in $(seq 1 400); do
			[ -s "$E2E/$m/qemu.pid" ] && break
			sleep 0.05
		done
		[ -s "$E2E/$m/qemu.pid" ] || { cat "$E2E/$m/vm.log" >&2; return 1; }
	done
	wait_file "$E2E/mux.ready"
}

stop_pid() {
	local pid=$1
	if alive "$pid"; then
		kill "$pid" 2>/dev/null
		for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.05; done
		alive "$pid" && kill -9 "$pid" 2>/dev/null
	fi
	return 0
}

teardown_file() {
	local m pid
	for m in $MACHINES; do
		pid=$(cat "$E2E/$m/qemu.pid" 2>/dev/null) && stop_pid "$pid"
	done
	pid=$(cat "$E2E/mux.pid" 2>/dev/null) && stop_pid "$pid"
	return 0
}

# On a failure, show what the guests said.
teardown() {
	if [ -n "${BATS_TEST_COMPLETED:-}" ]; then return 0; fi
	local m
	for m in $MACHINES; do
		[ -f "$E2E/$m/serial.log" ] || continue
		echo "--- $m guest console:" >&2
		tr -d '\r' < "$E2E/$m/serial.log" | tail -40 >&2
	done
}

@test "both guests boot and stereod reports ready to wait-ready (q35 over TCP, microvm over hybrid vsock)" {
	# 500 ms per attempt: until the guest's eth0 is up, QEMU's forwarder accepts the connection
	# but its SYN to the guest is lost and only retried seconds later; a fresh connection is
	# the quicker way to notice that the guest listens (the benchmark uses 200 ms). Both wait
	# at once, so each boot time is its own.
	local m pids=""
	for m in $MACHINES; do
		( host "$m" --timeout 500ms wait-ready --interval 20ms --timeout 90s > "$E2E/$m/ready.out" 2>&1
		  echo $? > "$E2E/$m/ready.rc"; date +%s%N > "$E2E/$m/t1" ) &
		pids="$pids $!"
	done
	wait $pids
	for m in $MACHINES; do
		[ "$(cat "$E2E/$m/ready.rc")" = 0 ] || { echo "$m: $(cat "$E2E/$m/ready.out")" >&2; return 1; }
		grep -qxE '(ready|healthy)' "$E2E/$m/ready.out"
		echo "# $m boot to ready: $(( ($(cat "$E2E/$m/t1") - $(cat "$E2E/$m/t0")) / 1000000 )) ms (QEMU start -> wait-ready returned)" >&3
	done
	# the microvm answers went through the multiplexer's CONNECT exchange
	grep -qx 'CONNECT 1024' "$E2E/mux.rec"
}

@test "the microvm guest found its devices over virtio-mmio: virtio_mmio loaded, eth0 configured, no PCI" {
	tr -d '\r' < "$E2E/microvm/serial.log" > "$E2E/microvm/console.txt"
	assert_file_contains "$E2E/microvm/console.txt" 'msg="module loaded" path=/lib/modules/[^ ]*/virtio_mmio.ko'
	assert_file_contains "$E2E/microvm/console.txt" 'msg="interface configured" name=eth0'
	assert_file_contains "$E2E/microvm/console.txt" 'PCI: System does not support PCI'
	tr -d '\r' < "$E2E/q35/serial.log" > "$E2E/q35/console.txt"
	refute grep -q 'PCI: System does not support PCI' "$E2E/q35/console.txt"
}

@test "the forwarded control ports listen on loopback only" {
	local m
	for m in $MACHINES; do
		run ss -Hltn "sport = :$(cat "$E2E/$m/port")"
		assert_success
		assert_output --partial "127.0.0.1:$(cat "$E2E/$m/port") "
		assert_equal "$(echo "$output" | grep -c .)" 1
	done
}

@test "health shows the state and an uptime" {
	local m
	for m in $MACHINES; do
		run host "$m" health
		assert_success
		assert_line --regexp '^state: (ready|healthy)$'
		assert_line --regexp '^uptime: [0-9]+s$'
		run host "$m" health --json
		assert_success
		[ "$(echo "$output" | jq -r .state)" = ready ] || [ "$(echo "$output" | jq -r .state)" = healthy ]
		[ "$(echo "$output" | jq -r '.uptime_seconds | type')" = number ]
	done
}

@test "set-config is accepted" {
	printf '[agent]\nname = "e2e"\n' > "$E2E/jcard.toml"
	local m
	for m in $MACHINES; do
		run host "$m" set-config "$E2E/jcard.toml"
		assert_success
	done
}

@test "a secret is injected from a file, never from argv" {
	head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$E2E/secret.value"
	local m
	for m in $MACHINES; do
		run host "$m" secret set e2e_token --from-file "$E2E/secret.value"
		assert_success
	done
}

@test "the guest refuses a secret name that escapes the secrets directory" {
	local m
	for m in $MACHINES; do
		run host "$m" secret set ../escape --from-file "$E2E/secret.value"
		assert_failure 1
	done
}

@test "an ssh key is injected for agent" {
	echo "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2eE2eE2eE2eE2eE2eE2eE2eE2eE2eE2eE2eE2eE2e e2e@host" > "$E2E/key.pub"
	local m
	for m in $MACHINES; do
		run host "$m" ssh-key add agent "$E2E/key.pub"
		assert_success
	done
}

@test "the guest-metadata listener takes set-env and set-secret (q35 over TCP, microvm over hybrid vsock port 5555)" {
	printf 'md\0bytes\n\377' > "$E2E/md.secret"
	local m
	for m in $MACHINES; do
		if [ "$m" = microvm ]; then
			run stereo-host --uds "$E2E/microvm/v.sock" --timeout 10s metadata set-env E2E_VAR=hello E2E_GONE=x
		else
			run stereo-host --tcp "127.0.0.1:$(cat "$E2E/$m/mdport")" --timeout 10s metadata set-env E2E_VAR=hello E2E_GONE=x
		fi
		assert_success
		if [ "$m" = microvm ]; then
			run stereo-host --uds "$E2E/microvm/v.sock" --timeout 10s metadata set-env E2E_GONE=
			assert_success
			run stereo-host --uds "$E2E/microvm/v.sock" --timeout 10s metadata set-secret md_tok --from-file "$E2E/md.secret"
		else
			run stereo-host --tcp "127.0.0.1:$(cat "$E2E/$m/mdport")" --timeout 10s metadata set-env E2E_GONE=
			assert_success
			run stereo-host --tcp "127.0.0.1:$(cat "$E2E/$m/mdport")" --timeout 10s metadata set-secret md_tok --from-file "$E2E/md.secret"
		fi
		assert_success
	done
	# the microvm's metadata went through the multiplexer with the default port 5555
	grep -qx 'CONNECT 5555' "$E2E/mux.rec"
}

@test "a 9p mount through the protocol shows a file written by the guest on the host" {
	local m
	for m in $MACHINES; do
		run host "$m" mount e2e /mnt/e2e --type 9p
		assert_success
	done
	# each guest's e2e probe writes hello last, when it sees the 9p mount appear
	for m in $MACHINES; do
		wait_file "$E2E/$m/share/hello" "hello from the guest"
	done
}

@test "the injected secret reads back through the guest with its value and mode 0600" {
	local m s
	for m in $MACHINES; do
		s=$E2E/$m/share
		wait_file "$s/hello"
		assert_file_exists "$s/secrets/e2e_token"
		[ "$(cat "$s/secrets/e2e_token")" = "$(cat "$E2E/secret.value")" ]
		assert_file_contains "$s/manifest" '^/run/stereos/secrets/e2e_token 0600 0 0$'
		run grep -c '^/run/stereos/secrets/' "$s/manifest"
		assert_output 1
	done
}

@test "set-env and set-secret reached files inside the guest: the env file and the secret, 0600 in a 0700 directory" {
	local m s
	for m in $MACHINES; do
		s=$E2E/$m/share
		wait_file "$s/hello"
		assert_file_exists "$s/md.env"
		run cat "$s/md.env"
		assert_output 'E2E_VAR=hello'
		cmp "$E2E/md.secret" "$s/md-secrets/md_tok"
		assert_file_contains "$s/manifest" '^/var/run/microvm-guest/env 0600 0 0$'
		assert_file_contains "$s/manifest" '^/var/run/microvm-guest/secrets 0700 0 0$'
		assert_file_contains "$s/manifest" '^/var/run/microvm-guest/secrets/md_tok 0600 0 0$'
	done
}

@test "agent's authorized_keys holds the injected key, owned by agent, mode 0600" {
	local m s
	for m in $MACHINES; do
		s=$E2E/$m/share
		wait_file "$s/hello"
		cmp "$E2E/key.pub" "$s/agent.authorized_keys"
		assert_file_contains "$s/manifest" '^/home/agent/.ssh 0700 1001 1001$'
		assert_file_contains "$s/manifest" '^/home/agent/.ssh/authorized_keys 0600 1001 1001$'
	done
}

@test "jcard.toml in the guest holds the config that was sent" {
	local m s
	for m in $MACHINES; do
		s=$E2E/$m/share
		wait_file "$s/hello"
		cmp "$E2E/jcard.toml" "$s/jcard.toml"
		assert_file_contains "$s/manifest" '^/etc/stereos/jcard.toml 0644 0 0$'
	done
}

# shut_down MACHINE LAST_LINE: shutdown through the protocol; QEMU must end by itself and the
# console must show stereod's unmount and sync, then LAST_LINE, in that order, and no panic.
shut_down() {
	local m=$1 pid
	pid=$(cat "$E2E/$m/qemu.pid")
	alive "$pid"
	run host "$m" shutdown e2e-done
	assert_success
	for _ in $(seq 1 300); do alive "$pid" || break; sleep 0.05; done
	refute alive "$pid"
	tr -d '\r' < "$E2E/$m/serial.log" > "$E2E/$m/console.txt"
	run grep -n -e 'msg="unmounted".*path=/mnt/e2e' -e 'msg="filesystems synced"' \
		-e "$2" "$E2E/$m/console.txt"
	assert_line --index 0 --partial 'msg="unmounted"'
	assert_line --index 1 --partial 'msg="filesystems synced"'
	assert_line --index 2 --partial "$2"
	refute grep -q 'Kernel panic' "$E2E/$m/console.txt"
}

@test "q35: shutdown unmounts, syncs and powers off, and QEMU exits by itself" {
	shut_down q35 'reboot: Power down'
}

@test "microvm with --halt=reboot: shutdown unmounts, syncs and reboots, and QEMU exits by itself (Firecracker style)" {
	shut_down microvm 'reboot: Restarting system'
	assert_file_contains "$E2E/microvm/console.txt" 'msg="halting" action=reboot'
	refute grep -q 'reboot: Power down' "$E2E/microvm/console.txt"
}

@test "init hands virtio_mmio.device= words to the module: a real kernel receives them (microvm without ACPI)" {
	# Without ACPI, QEMU's microvm announces its devices as virtio_mmio.device= words. Debian's
	# virtio_mmio has no such parameter (no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), so the guest
	# finds no NIC; what this shows is that the words reached finit_module: the kernel names
	# the parameter it was given. The guest is stopped once both lines are on its console.
	local d=$E2E/noacpi pid
	mkdir -p "$d/share"
	(STEREO_VM_MICROVM_ACPI=off timeout 600 sh "$STEREO_TOP/rootfs/vm.sh" --machine microvm \
		--image "$E2E/image.cpio.zst" --port "$(free_port)" --share "$d/share" \
		--serial "$d/serial.log" --pidfile "$d/qemu.pid" --append "loglevel=7" \
		>"$d/vm.log" 2>&1 </dev/null 3>&- &)
	# a hang guard, not a timing: a loaded machine boots TCG guests slowly
	for _ in $(seq 1 2400); do
		grep -q "virtio_mmio: unknown parameter 'device' ignored" "$d/serial.log" 2>/dev/null &&
			grep -q 'msg="module loaded" path=[^ ]*/virtio_mmio.ko params="device=512@0x' "$d/serial.log" &&
			break
		sleep 0.05
	done
	if [ -s "$d/qemu.pid" ]; then stop_pid "$(cat "$d/qemu.pid")"; else cat "$d/vm.log" >&2; fi
	tr -d '\r' < "$d/serial.log" > "$d/console.txt"
	assert_file_contains "$d/console.txt" 'Command line: .* virtio_mmio.device=512@0x'
	assert_file_contains "$d/console.txt" 'msg="module loaded" path=[^ ]*/virtio_mmio.ko params="device=512@0x[0-9a-f]*:[0-9]* device=512@0x'
	assert_file_contains "$d/console.txt" "virtio_mmio: unknown parameter 'device' ignored"
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
	# virtio before virtio_pci before virtio_net; virtio before virtio_mmio; 9pnet before 9p
	echo "$output" | tr '\n' ' ' | grep -q '/virtio.ko .*/virtio_pci.ko .*/virtio_net.ko'
	echo "$output" | tr '\n' ' ' | grep -q '/virtio_ring.ko .*/virtio.ko .*/virtio_mmio.ko'
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
