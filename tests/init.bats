#!/usr/bin/env bats
# init.bats - supervision, reaping and the ordered stop, with init as PID 1 of a PID + mount
# namespace. Services are small sh scripts that append to $EV; every wait is on a condition.
load helpers
load fixtures/init/lib

setup() { init_setup; }
teardown() {
	subreaper_teardown
	init_teardown
}

# a service that logs NAME-start, signals readiness on fd 3, and logs NAME-stop on SIGTERM
ready_svc() {
	local n=$1
	shift
	svc "${FILE:-$n}" "exec=/bin/sh -c 'trap \"echo $n-stop >> $EV; exit 0\" TERM; echo $n-start >> $EV; echo >&3; sleep 1000 & wait'" \
		"notify-fd=3" "$@"
}

@test "services start in dependency order, not file order" {
	FILE=1-web ready_svc web "name=web" "after=app"
	FILE=2-db ready_svc db "name=db"
	FILE=3-app ready_svc app "name=app" "after=db"
	start_init
	wait_state web ready
	run cat "$EV"
	assert_output "$(printf 'db-start\napp-start\nweb-start')"
}

@test "a dependent waits until its dependency reports readiness on the notification fd" {
	svc slow "exec=/bin/sh -c 'echo slow-start >> $EV; while [ ! -e $BATS_TEST_TMPDIR/go ]; do sleep 0.05; done; echo slow-ready >> $EV; echo >&3; exec sleep 1000'" \
		"notify-fd=3"
	svc after "exec=/bin/sh -c 'echo after-start >> $EV; exec sleep 1000'" "after=slow"
	start_init
	wait_state slow starting
	wait_for events_has slow-start
	assert_equal "$(state after)" declared
	touch "$BATS_TEST_TMPDIR/go"
	wait_state after running
	assert_equal "$(state slow)" ready
	run cat "$EV"
	assert_output "$(printf 'slow-start\nslow-ready\nafter-start')"
}

@test "a service that never becomes ready is killed after the ready timeout and restarted" {
	svc mute "exec=/bin/sh -c 'echo x >> $EV; exec sleep 1000'" "notify-fd=3" "ready-timeout=200ms"
	start_init
	wait_for lines_ge "$EV" 2
	grep -q 'msg="service not ready in time, killing it" name=mute' "$LOG"
	grep -q 'name=mute pid=[0-9]* status="signal 9"' "$LOG"
}

@test "a crashing service backs off with growing gaps and is quarantined after N crashes" {
	svc crash "exec=/bin/sh -c 'date +%s%N >> $EV; exit 3'"
	start_init --backoff-min 200ms --backoff-max 10s --quarantine 4/60s
	wait_state crash quarantined
	assert_equal "$(lines "$EV")" 4
	assert_equal "$(field crash last_exit)" "exit 3"
	assert_equal "$(field crash restarts)" 3
	# the delays init chose: 200ms * 2^(k-1) plus at most a quarter of jitter
	run sh -c "grep -o 'name=crash in_ms=[0-9]*' '$LOG' | cut -d= -f3"
	assert_equal "${#lines[@]}" 3
	for k in 0 1 2; do
		base=$((200 << k))
		assert [ "${lines[$k]}" -ge "$base" ]
		assert [ "${lines[$k]}" -le $((base + base / 4)) ]
	done
	# and the recorded start times: each gap at least its delay, the last longer than the first
	delays="${lines[*]}"
	run awk -v d="$delays" 'BEGIN { split(d, delay, " ") }
		NR > 1 { g = ($1 - p) / 1e6; if (g < delay[NR - 1]) { print "gap " NR - 1 ": " g " ms < " delay[NR - 1]; bad = 1 }
			 if (NR == 2) first = g; last = g }
		{ p = $1 }
		END { if (last <= first) { print "last gap " last " <= first " first; bad = 1 } exit bad }' "$EV"
	assert_success
	grep -q 'msg="service quarantined" name=crash crashes=4' "$LOG"
}

@test "a quarantined service stays down until SIGHUP releases it" {
	svc crash "exec=/bin/sh -c 'echo run >> $EV; exit 1'"
	start_init --quarantine 2/60s
	wait_state crash quarantined
	assert_equal "$(lines "$EV")" 2
	kill -HUP "$(init_pid)"
	wait_for lines_ge "$EV" 3
	grep -q 'msg="service released" name=crash by=reload' "$LOG"
	wait_state crash quarantined
	assert_equal "$(lines "$EV")" 4
}

@test "sinit --ctl release restarts a quarantined service" {
	svc crash "exec=/bin/sh -c 'echo run >> $EV; exit 1'"
	start_init --quarantine 2/60s
	wait_state crash quarantined
	run sinit --ctl release crash --root "$R"
	assert_success
	wait_for lines_ge "$EV" 3
	grep -q 'msg="service released" name=crash by=control' "$LOG"
}

@test "--ctl release refuses a service that is not quarantined, and an unknown one" {
	svc up "exec=/bin/sleep 1000"
	start_init
	wait_state up running
	run sinit --ctl release up --root "$R"
	assert_failure 1
	assert_output --partial "is running, not quarantined"
	run sinit --ctl release nope --root "$R"
	assert_failure 1
	assert_output --partial "no service 'nope'"
	run sinit --ctl frobnicate up --root "$R"
	assert_failure 1
	assert_output --partial "unknown command 'frobnicate'"
}

@test "--ctl and --status report when init is not running" {
	run sinit --ctl stop x --root "$R"
	assert_failure 3
	run sinit --status --root "$R"
	assert_failure 3
	assert_output --partial "reading status file"
}

@test "--ctl stop and start stop a service without a restart and start it again" {
	svc up "exec=/bin/sh -c 'echo run >> $EV; exec sleep 1000'"
	start_init
	wait_state up running
	sinit --ctl stop up --root "$R"
	wait_state up stopped
	assert_equal "$(field up last_exit)" "signal 15"
	assert_equal "$(lines "$EV")" 1
	sinit --ctl start up --root "$R"
	wait_state up running
	assert_equal "$(lines "$EV")" 2
}

@test "a service that ran longer than --stable restarts with the first backoff again" {
	svc flaky "exec=/bin/sh -c 'echo run >> $EV; sleep 0.4; exit 1'"
	start_init --stable 200ms --quarantine 3/60s
	wait_state flaky quarantined
	run grep -c 'msg="service restarting" name=flaky in_ms=[0-9]* failures=1$' "$LOG"
	assert_output 2
}

@test "restart=on-failure leaves a clean exit stopped; restart=never leaves a failure stopped" {
	svc ok "exec=/bin/sh -c 'echo ok >> $EV; exit 0'" "restart=on-failure"
	svc bad "exec=/bin/sh -c 'echo bad >> $EV; exit 7'" "restart=never"
	start_init
	wait_state ok stopped
	wait_state bad stopped
	assert_equal "$(field ok last_exit)" "exit 0"
	assert_equal "$(field bad last_exit)" "exit 7"
	assert_equal "$(field ok restarts)" 0
	assert_equal "$(field bad restarts)" 0
}

@test "a one-shot with a notification fd holds its dependents until it exits 0" {
	svc setup "exec=/bin/sh -c 'sleep 0.2; echo setup >> $EV'" "restart=never" "notify-fd=3"
	svc main "exec=/bin/sh -c 'echo main >> $EV; exec sleep 1000'" "after=setup"
	start_init
	wait_state main running
	run cat "$EV"
	assert_output "$(printf 'setup\nmain')"
}

@test "orphans re-parented to init are reaped (a service that double-forks)" {
	svc zmaker "exec=/bin/sh -c 'for i in 1 2 3 4 5; do sh -c \"sleep 0.2 &\"; done; echo spawned >> $EV; exec sleep 1000'"
	start_init -v
	wait_for events_has spawned
	wait_for lines_ge_reaped 5
	p=$(init_pid)
	# only the service itself is left as a child of init, and no child is a zombie
	wait_for only_one_child "$p"
}

lines_ge_reaped() { [ "$(grep -c 'msg="reaped"' "$LOG")" -ge "$1" ]; }
only_one_child() {
	local kids
	kids=$(cat /proc/"$1"/task/*/children)
	[ "$(echo $kids | wc -w)" -eq 1 ] || return 1
	! grep -q '^[0-9]* (.*) Z' /proc/$kids/stat
}

@test "SIGTERM stops services in reverse dependency order and init exits 0" {
	ready_svc a
	ready_svc b "after=a"
	ready_svc c "after=b"
	start_init
	wait_state c ready
	kill -TERM "$(init_pid)"
	wait_init_exit
	assert_equal "$INIT_RC" 0
	run grep -- -stop "$EV"
	assert_output "$(printf 'c-stop\nb-stop\na-stop')"
	assert_equal "$(jq -r .phase "$R/run/stereos/init.status")" stopped
	assert_equal "$(field a state)" stopped
}

@test "a service that ignores SIGTERM is SIGKILLed after the stop timeout" {
	svc stubborn "exec=/bin/sh -c 'trap \"\" TERM; echo up >> $EV; while :; do sleep 0.05; done'"
	start_init --stop-timeout 300ms
	wait_for events_has up
	kill -TERM "$(init_pid)"
	wait_init_exit
	assert_equal "$INIT_RC" 0
	assert_equal "$(field stubborn last_exit)" "signal 9"
	grep -q 'msg="service ignored SIGTERM, sending SIGKILL" name=stubborn' "$LOG"
}

@test "processes outside any service are stopped too before init exits" {
	svc leaver "exec=/bin/sh -c 'sh -c \"trap \\\"\\\" TERM; echo orphan > $BATS_TEST_TMPDIR/orphan; exec sleep 1000\" & exit 0'" "restart=never"
	start_init --stop-timeout 300ms
	wait_file "$BATS_TEST_TMPDIR/orphan"
	wait_state leaver stopped
	kill -TERM "$(init_pid)"
	wait_init_exit
	assert_equal "$INIT_RC" 0
	grep -q 'msg="killing remaining processes" signal=KILL' "$LOG"
}

@test "SIGINT means reboot: init exits 129 when it is not the real PID 1" {
	svc up "exec=/bin/sleep 1000"
	start_init
	wait_state up running
	kill -INT "$(init_pid)"
	wait_init_exit
	assert_equal "$INIT_RC" 129
	grep -q 'msg="halting" action=reboot' "$LOG"
}

@test "--ctl poweroff stops init like SIGTERM" {
	svc up "exec=/bin/sleep 1000"
	start_init
	wait_state up running
	run sinit --ctl poweroff --root "$R"
	assert_success
	wait_init_exit
	assert_equal "$INIT_RC" 0
}

@test "--status prints state, pid, restarts and last exit; --json prints the status file" {
	svc up "exec=/bin/sleep 1000"
	svc once "exec=/bin/sh -c 'exit 4'" "restart=never"
	start_init
	wait_state up running
	wait_state once stopped
	run sinit --status --root "$R"
	assert_success
	assert_line --index 0 --regexp '^NAME +STATE +PID +RESTARTS +LAST_EXIT$'
	assert_line --regexp '^once +stopped +- +0  exit 4$'
	assert_line --regexp '^up +running +[0-9]+ +0  -$'
	run sinit --status --json --root "$R"
	assert_success
	echo "$output" | jq -e '.phase == "running" and (.services | length) == 2'
}

@test "services get STEREO_INIT=1, their env= entries and user=" {
	echo 'svcuser:x:4321:4322::/home/svc:/bin/sh' >"$R/etc/passwd"
	# a service's stdout is init's (the console): the line lands in init's log
	svc who "exec=/bin/sh -c 'echo who=\$(id -u):\$(id -g):\$HOME:\$FOO:\$STEREO_INIT'" \
		"user=svcuser" "env=FOO=bar baz" "restart=never"
	start_init
	wait_state who stopped
	assert_equal "$(field who last_exit)" "exit 0"
	grep -qx 'who=4321:4322:/home/svc:bar baz:1' "$LOG"
}

@test "without a services directory init runs the built-in stereod service" {
	rmdir "$R/etc/stereos/services"
	mkdir -p "$R/bin"
	printf '#!/bin/sh\necho "$* STEREO_INIT=$STEREO_INIT" > %s\necho 127.0.0.1:1024 >&3\nexec sleep 1000 3>&-\n' "$EV" >"$R/bin/stereod"
	chmod +x "$R/bin/stereod"
	start_init
	wait_state stereod ready
	wait_for events_has "--listen-mode auto --ready-fd 3 STEREO_INIT=1"
}

@test "a bad service file is reported and the other services still start" {
	svc good "exec=/bin/sleep 1000"
	svc broken "exec=/bin/true" "colour=blue"
	start_init
	wait_state good running
	grep -q "broken.conf:2: unknown key 'colour'" "$LOG"
	run jq -r '.services[].name' "$R/run/stereos/init.status"
	assert_output good
}

@test "services in a dependency cycle or after an unknown service never start; others do" {
	svc a "exec=/bin/sleep 1000" "after=b"
	svc b "exec=/bin/sleep 1000" "after=a"
	svc c "exec=/bin/sleep 1000" "after=ghost"
	svc d "exec=/bin/sleep 1000"
	start_init
	wait_state d running
	assert_equal "$(state a)" declared
	assert_equal "$(state b)" declared
	assert_equal "$(state c)" declared
	assert_equal "$(field a broken)" true
	grep -q 'msg="unknown dependency" name=c after=ghost' "$LOG"
	grep -q 'msg="dependency cycle"' "$LOG"
}

@test "SIGHUP adds new services and stops removed ones" {
	svc old "exec=/bin/sleep 1000"
	start_init
	wait_state old running
	rm "$R/etc/stereos/services/old.conf"
	svc new "exec=/bin/sleep 1000"
	kill -HUP "$(init_pid)"
	wait_state new running
	wait_for test "$(jq -r '[.services[].name] | join(",")' "$R/run/stereos/init.status")" = new
}

@test "an exec that does not exist exits 127 and is restarted with backoff" {
	svc missing "exec=/nonexistent/prog"
	start_init --quarantine 2/60s
	wait_state missing quarantined
	assert_equal "$(field missing last_exit)" "exit 127"
}

@test "modules: a missing or invalid module is logged and boot goes on" {
	echo 'not an ELF file' >"$R/bad.ko"
	printf '# drivers\n/nonexistent/virtio.ko\nrelative.ko\n\n/bad.ko\n' >"$R/etc/stereos/modules"
	svc up "exec=/bin/sleep 1000"
	start_init
	wait_state up running
	grep -q 'msg="opening module" path=.*/nonexistent/virtio.ko error="No such file or directory"' "$LOG"
	grep -q 'msg="module path is not absolute" path=relative.ko line=3' "$LOG"
	grep -q 'msg="loading module" path=.*/bad.ko' "$LOG"
}

@test "SIGUSR2 powers off, and --halt reboot turns a power off into a reboot" {
	svc up "exec=/bin/sleep 1000"
	start_init
	wait_state up running
	kill -USR2 "$(init_pid)"
	wait_init_exit
	assert_equal "$INIT_RC" 0
	start_init --halt reboot
	wait_state up running
	kill -TERM "$(init_pid)"
	wait_init_exit
	assert_equal "$INIT_RC" 129
}

@test "SIGHUP leaves a finished one-shot stopped" {
	svc once "exec=/bin/sh -c 'echo once >> $EV'" "restart=never"
	svc up "exec=/bin/sleep 1000"
	start_init
	wait_state once stopped
	kill -HUP "$(init_pid)"
	wait_for grep -q 'msg="reloading services"' "$LOG"
	svc up2 "exec=/bin/sleep 1000"
	kill -HUP "$(init_pid)"
	wait_state up2 running
	assert_equal "$(state once)" stopped
	assert_equal "$(lines "$EV")" 1
}

# Not PID 1: init makes itself a subreaper, so orphans of its services come back to it.
subreaper_teardown() {
	if [ -n "${SPID:-}" ]; then
		# a killed subreaper leaves its services running: kill them first, by pid
		kill -KILL $(cat /proc/"$SPID"/task/*/children 2>/dev/null) 2>/dev/null
		kill -KILL "$SPID" 2>/dev/null
		wait "$SPID" 2>/dev/null
	fi
	if [ -s "$BATS_TEST_TMPDIR/orphan.pid" ]; then
		kill -KILL "$(cat "$BATS_TEST_TMPDIR/orphan.pid")" 2>/dev/null
	fi
	return 0
}

@test "not PID 1: init reaps orphans as a subreaper and kills them when it stops" {
	svc leaver "exec=/bin/sh -c 'sh -c \"trap \\\"\\\" TERM; echo \\\$\\\$ > $BATS_TEST_TMPDIR/orphan.pid; exec sleep 1000\" & sh -c \"sleep 0.1 &\"; exit 0'" \
		"restart=never"
	"$STEREO_BIN" init --root "$R" -v --stop-timeout 300ms >"$LOG" 2>&1 3>&- &
	SPID=$!
	wait_file "$BATS_TEST_TMPDIR/orphan.pid"
	orphan=$(cat "$BATS_TEST_TMPDIR/orphan.pid")
	# the orphan's parent is init itself, not the original service
	wait_for grep -q "^PPid:[[:space:]]*$SPID\$" "/proc/$orphan/status"
	wait_for grep -q 'msg="reaped"' "$LOG"
	kill -TERM "$SPID"
	rc=0
	wait "$SPID" || rc=$?
	SPID=
	assert_equal "$rc" 0
	run kill -0 "$orphan"
	assert_failure
	grep -q 'msg="killing remaining processes" signal=KILL' "$LOG"
	asan_clean "$LOG"
}

@test "the control socket answers status, refuses an over-long line and keeps serving" {
	svc up "exec=/bin/sleep 1000"
	start_init
	wait_state up running
	run sinit --ctl status --root "$R"
	assert_success
	echo "$output" | jq -e '.ok and .status.services[0].name == "up" and .status.services[0].state == "running"'
	run /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"x" * 600)
print(s.recv(4096).decode().strip())
' "$R/run/stereos/init.sock"
	assert_output '{"ok":false,"error":"command line too long"}'
	run sinit --ctl stop up --root "$R"
	assert_success
	wait_state up stopped
}

@test "--ctl start refuses a service that is still stopping (stop-timeout= per service)" {
	svc stubborn "exec=/bin/sh -c 'trap \"\" TERM; echo up >> $EV; while :; do sleep 0.05; done'" \
		"stop-timeout=2s"
	start_init --stop-timeout 100ms
	wait_for events_has up
	sinit --ctl stop stubborn --root "$R"
	wait_state stubborn stopping
	run sinit --ctl start stubborn --root "$R"
	assert_failure 1
	assert_output --partial "is still stopping"
	wait_state stubborn stopped
	assert_equal "$(field stubborn last_exit)" "signal 9"
	grep -q 'msg="service ignored SIGTERM, sending SIGKILL" name=stubborn' "$LOG"
}

@test "stereod under init: ready through --ready-fd, and its shutdown message powers init off" {
	port=$(free_port)
	svc stereod "exec=$STEREO_BIN stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:$port --root $R --allow-disk-secrets --ready-fd 3" \
		"notify-fd=3"
	start_init
	wait_state stereod ready
	run stereo-host --tcp "127.0.0.1:$port" shutdown "init test"
	assert_success
	wait_init_exit
	assert_equal "$INIT_RC" 0
	grep -q 'msg="signal" name=SIGUSR2' "$LOG"
	assert_equal "$(field stereod last_exit)" "exit 0"
}
