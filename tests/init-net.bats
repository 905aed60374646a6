#!/usr/bin/env bats
# init-net.bats - the network part of init: the kernel ip= parser and the network file parser
# (through --net-only --dry-run), and netlink configuration of a veth pair inside a network
# namespace of its own (unshare -n), checked with `ip -j`.
load helpers
load fixtures/init/lib

setup() {
	init_setup
	NET=$BATS_TEST_TMPDIR/network
	CMD=$BATS_TEST_TMPDIR/cmdline
	: >"$NET"
}
teardown() { init_teardown; }

dry() { sinit --net-only --dry-run --root "$R" --network "$NET" "$@"; }

# in_netns SCRIPT: run SCRIPT in a new network + UTS namespace holding a veth pair v0/v1
in_netns() {
	unshare -n -u sh -ec "ip link add v0 type veth peer name v1; $1"
}

@test "ip= in the Firecracker form gives an address, a gateway and the device" {
	echo "console=ttyS0 reboot=k ip=172.16.0.2::172.16.0.1:255.255.255.0::eth0:off quiet" >"$CMD"
	run dry --cmdline "$CMD"
	assert_success
	assert_output '{"interfaces":[{"name":"eth0","addresses":["172.16.0.2/24"],"gateway":"172.16.0.1"}],"dns":[]}'
}

@test "ip= takes hostname and two dns servers, and the last ip= wins" {
	echo "ip=10.9.9.9:::255.0.0.0::eth1:off ip=10.0.0.2::10.0.0.1:255.255.255.252:vm1:eth0:none:1.1.1.1:8.8.8.8" >"$CMD"
	run dry --cmdline "$CMD"
	assert_success
	assert_output '{"interfaces":[{"name":"eth0","addresses":["10.0.0.2/30"],"gateway":"10.0.0.1"}],"dns":["1.1.1.1","8.8.8.8"],"hostname":"vm1"}'
}

@test "ip= without a netmask uses the address class, and without a device eth0" {
	echo "ip=172.20.1.5::::::off" >"$CMD"
	run dry --cmdline "$CMD"
	assert_success
	assert_output --partial '"name":"eth0","addresses":["172.20.1.5/16"]'
}

@test "ip=off and a command line without ip= configure nothing" {
	echo "console=ttyS0 ip=off" >"$CMD"
	run dry --cmdline "$CMD"
	assert_success
	assert_output '{"interfaces":[],"dns":[]}'
}

@test "ip= with dhcp, a bad netmask or a bad address is refused with the reason" {
	echo "ip=dhcp" >"$CMD"
	run dry --cmdline "$CMD"
	assert_failure 1
	assert_output --partial "a static CLIENT address is required"
	echo "ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:dhcp" >"$CMD"
	run dry --cmdline "$CMD"
	assert_failure 1
	assert_output --partial "autoconfiguration 'dhcp' is not supported"
	echo "ip=10.0.0.2::10.0.0.1:255.0.255.0::eth0:off" >"$CMD"
	run dry --cmdline "$CMD"
	assert_failure 1
	assert_output --partial "bad netmask '255.0.255.0'"
	echo "ip=10.0.0.300::::::off" >"$CMD"
	run dry --cmdline "$CMD"
	assert_failure 1
	assert_output --partial "bad client address '10.0.0.300'"
}

@test "the network file holds interfaces with addresses, mtu and gateways, plus dns, search and hostname" {
	cat >"$NET" <<-'EOF'
	# guest network
	interface = eth0
	address = 10.0.0.2/24
	address=fd00::2/64
	mtu=1400
	gateway=10.0.0.1
	gateway=fd00::1
	interface=eth1
	address=192.168.7.2/24
	dns=10.0.0.53
	search=corp.test example.test
	hostname=sandbox
	EOF
	run dry
	assert_success
	assert_output '{"interfaces":[{"name":"eth0","addresses":["10.0.0.2/24","fd00::2/64"],"mtu":1400,"gateway":"10.0.0.1","gateway6":"fd00::1"},{"name":"eth1","addresses":["192.168.7.2/24"]}],"dns":["10.0.0.53"],"search":"corp.test example.test","hostname":"sandbox"}'
}

@test "network file errors name the file, the line and the problem" {
	printf 'interface=eth0\ncolour=blue\n' >"$NET"
	run dry
	assert_failure 1
	assert_output --partial "$NET:2: unknown key 'colour'"
	printf 'address=10.0.0.2/24\n' >"$NET"
	run dry
	assert_failure 1
	assert_output --partial "$NET:1: address before any interface="
	printf 'interface=eth0\naddress=10.0.0.2\n' >"$NET"
	run dry
	assert_failure 1
	assert_output --partial "needs a /PREFIX"
	printf 'interface=eth0\nmtu=9\n' >"$NET"
	run dry
	assert_failure 1
	assert_output --partial "bad mtu '9'"
	printf 'interface=eth0\nno equals sign\n' >"$NET"
	run dry
	assert_failure 1
	assert_output --partial "$NET:2: expected key=value"
	printf 'dns=1.1.1.1\ndns=1.0.0.1\ndns=8.8.8.8\ndns=8.8.4.4\n' >"$NET"
	run dry
	assert_failure 1
	assert_output --partial "more than 3 dns servers"
}

@test "--net-only configures addresses, mtu, default routes, resolv.conf and the hostname over netlink" {
	cat >"$NET" <<-'EOF'
	interface=v0
	address=10.1.0.2/24
	address=fd00::2/64
	mtu=1400
	gateway=10.1.0.1
	dns=10.1.0.53
	search=example.test
	hostname=guest1
	EOF
	run in_netns "'$STEREO_BIN' init --net-only --root '$R' --network '$NET' 2>'$LOG'
		ip -j addr show; echo; ip -j route show; echo; ip -j link show v0; echo; hostname"
	assert_success
	addrs=$(echo "$output" | sed -n 1p)
	routes=$(echo "$output" | sed -n 3p)
	link=$(echo "$output" | sed -n 5p)
	echo "$addrs" | jq -e '.[] | select(.ifname == "lo") | .flags | index("UP")'
	echo "$addrs" | jq -e '.[] | select(.ifname == "v0") | [.addr_info[] | "\(.local)/\(.prefixlen)"] | (index("10.1.0.2/24") and index("fd00::2/64"))'
	echo "$addrs" | jq -e '.[] | select(.ifname == "v0") | .addr_info[] | select(.local == "10.1.0.2") | .broadcast == "10.1.0.255"'
	echo "$routes" | jq -e '.[] | select(.dst == "default") | .gateway == "10.1.0.1" and .dev == "v0"'
	echo "$link" | jq -e '.[0].mtu == 1400 and (.[0].flags | index("UP"))'
	assert_equal "$(echo "$output" | sed -n 7p)" guest1
	run cat "$R/etc/resolv.conf"
	assert_output "$(printf '# written by stereo init\nsearch example.test\nnameserver 10.1.0.53')"
}

@test "--net-only applies the kernel ip= line and is idempotent" {
	echo "ip=172.16.0.2::172.16.0.1:255.255.255.0:vmhost:v1:off" >"$CMD"
	run in_netns "'$STEREO_BIN' init --net-only --root '$R' --cmdline '$CMD' 2>'$LOG'
		'$STEREO_BIN' init --net-only --root '$R' --cmdline '$CMD' 2>>'$LOG'
		ip -j -4 addr show v1; echo; ip -j route show default"
	assert_success
	echo "$output" | sed -n 1p | jq -e '[.[0].addr_info[] | "\(.local)/\(.prefixlen)"] == ["172.16.0.2/24"]'
	echo "$output" | sed -n 3p | jq -e '.[0].gateway == "172.16.0.1" and .[0].dev == "v1"'
}

@test "--net-only reports a missing interface and still configures the others" {
	printf 'interface=nosuch0\naddress=10.3.0.2/24\ninterface=v0\naddress=10.2.0.2/24\n' >"$NET"
	run in_netns "'$STEREO_BIN' init --net-only --root '$R' --network '$NET' 2>&1 && exit 9
		ip -j -4 addr show v0"
	assert_success
	assert_line --partial "interface nosuch0"
	echo "${lines[-1]}" | jq -e '.[0].addr_info[0].local == "10.2.0.2"'
}

@test "init configures the network file before it starts services" {
	printf 'interface=v0\naddress=10.4.0.2/24\n' >"$R/etc/stereos/network"
	svc probe "exec=/bin/sh -c 'ip -j -4 addr show v0 > $EV'" "restart=never"
	run unshare -n sh -ec "ip link add v0 type veth peer name v1
		unshare -fp --mount-proc '$STEREO_BIN' init --root '$R' > '$LOG' 2>&1 &
		p=\$!
		for i in \$(seq 1 200); do grep -q '\"stopped\"' '$R/run/stereos/init.status' 2>/dev/null && break; sleep 0.05; done
		kill -TERM \$(cat /proc/\$p/task/\$p/children)
		wait \$p"
	assert_success
	jq -e '.[0].addr_info[0].local == "10.4.0.2"' "$EV"
}

@test "--check reports every bad service file and unknown dependency" {
	svc a "exec=/bin/true" "restart=sometimes"
	svc b "exec=/bin/true 'unterminated"
	svc c "exec=/bin/true" "after=ghost"
	svc d "restart=never"
	svc e "exec=/bin/true" "notify-fd=1"
	svc f "exec=/bin/true" "user=nobody-here"
	svc ok "exec=/bin/true"
	echo 'root:x:0:0::/root:/bin/sh' >"$R/etc/passwd"
	run sinit --check --root "$R"
	assert_failure 1
	assert_output --partial "a.conf:2: bad restart 'sometimes' (always, on-failure or never)"
	assert_output --partial "b.conf:1: unterminated quote in exec"
	assert_output --partial "service 'c': unknown dependency 'ghost'"
	assert_output --partial "d.conf: no exec line"
	assert_output --partial "e.conf:2: bad notify-fd '1' (3..1023 or none)"
	assert_output --partial "f.conf:2: user 'nobody-here' not found"
	assert_output --partial "service ok: /bin/true (restart=always)"
}

@test "--check passes a good configuration" {
	svc web "exec=/usr/bin/env FOO=1 sleep 1" "after=db" "notify-fd=4" "restart=on-failure"
	svc db "exec=/bin/sleep 1"
	printf 'interface=eth0\naddress=10.0.0.2/24\n' >"$R/etc/stereos/network"
	run sinit --check --root "$R"
	assert_success
}

@test "bad options are usage errors" {
	run sinit --quarantine 0/1s --root "$R"
	assert_failure 2
	assert_output --partial "--quarantine: N/WINDOW"
	run sinit --backoff-min soon --root "$R"
	assert_failure 2
	run sinit --halt sideways --root "$R"
	assert_failure 2
	run sinit --root relative/dir
	assert_failure 2
}
