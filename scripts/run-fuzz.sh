#!/bin/sh
# run-fuzz.sh - `make test-fuzz`: a short bounded libFuzzer run per target (FUZZ_SECONDS,
# default 60), seeded from tests/fuzz/seeds/TARGET/ when present.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
secs=${FUZZ_SECONDS:-60}
rc=0
for t in "$@"; do
	corpus=tests/fuzz/corpus-$t
	mkdir -p "$corpus"
	seeds=tests/fuzz/seeds/$t
	[ -d "$seeds" ] || seeds=
	echo "=== fuzz $t for ${secs}s"
	if build/fuzz/$t -max_total_time="$secs" -max_len=65536 -print_final_stats=1 "$corpus" $seeds 2>"build/fuzz/$t.log"; then
		grep -E 'stat::number_of_executed_units|cov:' "build/fuzz/$t.log" | tail -2
	else
		tail -40 "build/fuzz/$t.log"
		rc=1
	fi
done
exit $rc
