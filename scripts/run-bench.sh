#!/bin/sh
# run-bench.sh - `make bench`: run every tests/bench/*.sh; each prints its floor, ours and
# the ratio (docs/performance.md). Nothing here asserts: the figures are the output.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export STEREO_BIN=$top/stereo STEREO_T=$top/build/t STEREO_TOP=$top
rc=0
for b in ${BENCH:-tests/bench/*.sh}; do
	[ -f "$b" ] || continue
	echo "=== $b"
	sh "$b" || { echo "bench $b failed" >&2; rc=1; }
done
exit $rc
