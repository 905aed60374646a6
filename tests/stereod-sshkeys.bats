#!/usr/bin/env bats
# stereod inject_ssh_key: ~/.ssh/authorized_keys replaced (upstream) or appended once, with
# the user's ownership and modes, key validation, and a hostile user's symlinks.
load helpers
load helpers/stereod

setup() {
	stereod_setup
	H=$R/home/agent
	KEY='ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl host@sandbox'
}
teardown() { stop_stereod; }

inject() {   # inject USER KEY [APPEND]
	local extra=${3:+,\"append\":$3}
	jq -nc --arg u "$1" --arg k "$2" '{type:"inject_ssh_key",payload:{user:$u,public_key:$k}}' |
		sed "s/}}\$/$extra}}/" | nd
}

@test "inject_ssh_key replaces authorized_keys with the key, owned by the user, 0600 in a 0700 ~/.ssh" {
	mkdir -p "$H/.ssh"
	echo 'ssh-rsa AAAAold old@key' >"$H/.ssh/authorized_keys"
	start_stereod
	run inject agent "$KEY"
	assert_output '{"type":"ack","payload":{"reply_to":"inject_ssh_key","ok":true}}'
	[ "$(cat "$H/.ssh/authorized_keys")" = "$KEY" ]
	[ "$(tail -c1 "$H/.ssh/authorized_keys" | od -An -c | tr -d ' ')" = '\n' ]
	[ "$(stat -c '%a %u %g' "$H/.ssh")" = '700 1000 1000' ]
	[ "$(stat -c '%a %u %g' "$H/.ssh/authorized_keys")" = '600 1000 1000' ]
	[ "$(ls -A "$H/.ssh")" = authorized_keys ]
}

@test "inject_ssh_key creates ~/.ssh when it is missing" {
	start_stereod
	run inject agent "$KEY"
	assert_output --partial '"ok":true'
	[ "$(stat -c '%a %u' "$H/.ssh")" = '700 1000' ]
}

@test "append: true adds a key once and keeps the others" {
	mkdir -p "$H/.ssh"
	printf 'ssh-rsa AAAAold old@key\n' >"$H/.ssh/authorized_keys"
	chown -R 1000:1000 "$H/.ssh"   # append reads only a file the user owns
	start_stereod
	run inject agent "$KEY" true
	assert_output --partial '"ok":true'
	run inject agent "${KEY% *} other-comment" true
	assert_output --partial '"ok":true'
	run cat "$H/.ssh/authorized_keys"
	assert_output "ssh-rsa AAAAold old@key
$KEY"
}

@test "every allowed key type is accepted and anything else is refused" {
	start_stereod
	for t in ssh-ed25519 ssh-rsa ecdsa-sha2-nistp256 ecdsa-sha2-nistp384 ecdsa-sha2-nistp521 \
		sk-ssh-ed25519@openssh.com sk-ecdsa-sha2-nistp256@openssh.com; do
		run inject agent "$t AAAAB3Nza c"
		assert_output --partial '"ok":true'
	done
	for k in 'ssh-dss AAAAB3 c' 'ssh-ed25519' 'ssh-ed25519AAAA' '' 'garbage' "$(printf 'ssh-rsa AAAA a\nssh-rsa BBBB b')"; do
		run inject agent "$k"
		assert_output --partial '"reply_to":"inject_ssh_key","ok":false'
	done
}

@test "inject_ssh_key refuses unknown users and bad payloads" {
	start_stereod
	run inject nobody-here "$KEY"
	assert_output --partial '"ok":false,"error":"lookup user \"nobody-here\": user: unknown user nobody-here"'
	run inject "" "$KEY"
	assert_output --partial '"ok":false,"error":"user cannot be empty"'
	run inject agent ""
	assert_output --partial '"ok":false,"error":"public_key cannot be empty"'
	run inject agent "not-a-key AAAA"
	assert_output --partial '"ok":false,"error":"invalid SSH public key format: must start with a recognized key type (e.g., ssh-ed25519)"'
	run nd <<<'{"type":"inject_ssh_key","payload":{"user":"agent","public_key":7}}'
	assert_output --partial '"error":"decode ssh key payload: json: cannot unmarshal number into Go struct field SSHKeyPayload.public_key of type string"'
	run nd <<<'{"type":"inject_ssh_key","payload":{"user":"agent","public_key":"ssh-rsa A b","append":1}}'
	assert_output --partial '"error":"decode ssh key payload: json: cannot unmarshal number into Go struct field SSHKeyPayload.append of type bool"'
}

@test "a symlinked ~/.ssh is refused and root writes and chowns nothing outside the home" {
	mkdir -p "$BATS_TEST_TMPDIR/victim"
	echo precious >"$BATS_TEST_TMPDIR/victim/authorized_keys"
	ln -s "$BATS_TEST_TMPDIR/victim" "$H/.ssh"
	chown -h 1000:1000 "$H/.ssh"
	start_stereod
	run inject agent "$KEY"
	assert_output --partial '"ok":false,"error":"opening '
	assert_output --partial 'it is a symlink or not a directory'
	[ "$(cat "$BATS_TEST_TMPDIR/victim/authorized_keys")" = precious ]
	[ "$(stat -c '%u %a' "$BATS_TEST_TMPDIR/victim")" = "0 $(stat -c %a "$BATS_TEST_TMPDIR/victim")" ]
	[ "$(stat -c %u "$BATS_TEST_TMPDIR/victim/authorized_keys")" = 0 ]
	[ "$(ls -A "$BATS_TEST_TMPDIR/victim")" = authorized_keys ]
}

@test "a symlinked authorized_keys is replaced, never followed" {
	echo precious >"$BATS_TEST_TMPDIR/shadow"
	mkdir -p "$H/.ssh"
	chown 1000:1000 "$H/.ssh"
	ln -s "$BATS_TEST_TMPDIR/shadow" "$H/.ssh/authorized_keys"
	start_stereod
	run inject agent "$KEY"
	assert_output --partial '"ok":true'
	[ ! -L "$H/.ssh/authorized_keys" ]
	[ "$(cat "$H/.ssh/authorized_keys")" = "$KEY" ]
	[ "$(cat "$BATS_TEST_TMPDIR/shadow")" = precious ]
	[ "$(stat -c %u "$BATS_TEST_TMPDIR/shadow")" = 0 ]
}

@test "append through a symlinked authorized_keys is refused and reads nothing outside" {
	echo 'ssh-rsa AAAAsecret root@elsewhere' >"$BATS_TEST_TMPDIR/shadow"
	mkdir -p "$H/.ssh"
	ln -s "$BATS_TEST_TMPDIR/shadow" "$H/.ssh/authorized_keys"
	start_stereod
	run inject agent "$KEY" true
	assert_output --partial '"ok":false,"error":"opening authorized_keys: it is a symlink"'
	[ -L "$H/.ssh/authorized_keys" ]
	[ "$(cat "$BATS_TEST_TMPDIR/shadow")" = 'ssh-rsa AAAAsecret root@elsewhere' ]
}

@test "a symlinked home directory is refused" {
	rm -rf "$H"
	mkdir -p "$BATS_TEST_TMPDIR/elsewhere"
	ln -s "$BATS_TEST_TMPDIR/elsewhere" "$H"
	start_stereod
	run inject agent "$KEY"
	assert_output --partial '"ok":false'
	[ -z "$(ls -A "$BATS_TEST_TMPDIR/elsewhere")" ]
}

@test "append refuses an authorized_keys hard-linked to a root-only file, whose content appears nowhere" {
	mkdir -p "$R/root" "$H/.ssh"
	echo 'ssh-rsa AAAArootonly root@secret' >"$R/root/secret"
	chmod 0600 "$R/root/secret"
	chown 1000:1000 "$H/.ssh"
	ln "$R/root/secret" "$H/.ssh/authorized_keys"
	start_stereod
	run inject agent "$KEY" true
	assert_output --partial '"ok":false,"error":"authorized_keys has 2 links (a hard link?): not appending"'
	refute_output --partial AAAArootonly
	# the only file holding the content is the root-only inode itself
	[ "$(grep -rl AAAArootonly "$BATS_TEST_TMPDIR" | xargs stat -c %i | sort -u)" = "$(stat -c %i "$R/root/secret")" ]
	[ "$(stat -c '%u %a %h' "$R/root/secret")" = '0 600 2' ]
}

@test "append refuses an authorized_keys the user does not own" {
	mkdir -p "$H/.ssh"
	echo 'ssh-rsa AAAAbyroot root@planted' >"$H/.ssh/authorized_keys"
	start_stereod
	run inject agent "$KEY" true
	assert_output --partial '"ok":false,"error":"authorized_keys is not owned by the user: not appending"'
	[ "$(cat "$H/.ssh/authorized_keys")" = 'ssh-rsa AAAAbyroot root@planted' ]
}

@test "under --root a home from the passwd file is resolved inside ROOT: the key lands in ROOT/home/x" {
	local home=/home/stereo-guard-x-$$
	[ ! -e "$home" ]
	echo "x:x:1002:1002:x:$home:/bin/sh" >>"$R/etc/passwd"
	mkdir -p "$R$home"
	chown 1002:1002 "$R$home"
	start_stereod
	run inject x "$KEY"
	assert_output --partial '"ok":true'
	[ "$(cat "$R$home/.ssh/authorized_keys")" = "$KEY" ]
	[ "$(stat -c '%u %a' "$R$home/.ssh/authorized_keys")" = '1002 600' ]
	[ ! -e "$home" ]
}

@test "under --root a passwd home naming a path outside ROOT is looked up inside ROOT: nothing written outside" {
	mkdir -p "$BATS_TEST_TMPDIR/elsewhere/y"
	chown 1003:1003 "$BATS_TEST_TMPDIR/elsewhere/y"
	echo "y:x:1003:1003:y:$BATS_TEST_TMPDIR/elsewhere/y:/bin/sh" >>"$R/etc/passwd"
	start_stereod
	run inject y "$KEY"
	assert_output --partial '"ok":false,"error":"opening home '"$BATS_TEST_TMPDIR"'/elsewhere/y: No such file or directory"'
	[ -z "$(ls -A "$BATS_TEST_TMPDIR/elsewhere/y")" ]
}
