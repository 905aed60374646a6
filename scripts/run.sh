#!/bin/sh
# run.sh - `make run`: start stereod on 127.0.0.1 TCP with a throwaway root under build/,
# print how to talk to it with stereo-host, and stay in the foreground until Ctrl-C.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
bin=$top/stereo
if ! "$bin" --list | grep -qx stereod; then
	echo "run: this build has no stereod applet (see make menuconfig)" >&2
	exit 1
fi
root=$top/build/run-root
port=${PORT:-10240}
rm -rf "$root"
mkdir -p "$root/etc"
printf 'root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:%s/home/agent:/bin/sh\n' "$root" >"$root/etc/passwd"
printf 'root:x:0:\nadmin:x:1001:\nagent:x:1000:\n' >"$root/etc/group"
cat <<MSG
stereod: listening on 127.0.0.1:$port, state under $root
Talk to it from another terminal:
  $bin stereo-host --tcp 127.0.0.1:$port health
  echo '{"type":"ping"}' | $bin stereo-host --tcp 127.0.0.1:$port ping
  $bin stereo-health --socket $root/run/stereos/stereosd.sock
Ctrl-C stops it.
MSG
exec "$bin" stereod --listen-mode tcp --allow-local-peers --listen 127.0.0.1:$port --root "$root" \
	--poweroff-cmd "echo stereod: poweroff requested (make run does not power anything off)"
