# helpers.bash - shared set-up for every bats file: bats-support/assert/file, the binary
# under test ($STEREO_BIN, applet links first on PATH) and small waiting helpers.
bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert
bats_load_library bats-file

: "${STEREO_TOP:=$(cd "$BATS_TEST_DIRNAME/.." && pwd)}"
: "${STEREO_BIN:=$STEREO_TOP/stereo}"
: "${STEREO_T:=$STEREO_TOP/build/t}"
: "${STEREO_SUITE:=normal}"
export STEREO_BIN STEREO_T STEREO_TOP

# wait_for CMD... : retry a command until it succeeds (10 s hang guard, never a fixed sleep).
wait_for() {
	local i
	for i in $(seq 1 200); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	echo "wait_for timed out: $*" >&2
	return 1
}

# wait_file FILE [PATTERN]: until FILE exists (and holds PATTERN).
wait_file() {
	local f=$1 pat=${2:-}
	if [ -n "$pat" ]; then wait_for grep -q -- "$pat" "$f"; else wait_for test -e "$f"; fi
}

# free_port: a TCP port nobody listens on right now (the kernel picks it).
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# free_ports N: N distinct free TCP ports, one a line (all held at once while the kernel picks
# them; two free_port calls in a row can be given the same port)
free_ports() {
	python3 -c 'import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1", 0))
print("\n".join(str(x.getsockname()[1]) for x in s))' "$1"
}

# asan_clean FILE: fail when a sanitizer report is in FILE (daemon logs).
asan_clean() {
	if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$1"; then
		cat "$1" >&2
		return 1
	fi
}
