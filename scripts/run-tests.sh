#!/bin/sh
# run-tests.sh - run every bats suite against the normal build and the ASan+UBSan build,
# keep bats' TAP output, and end with one line "N passed, N failed[, N skipped]".
# STEREO_SUITES="normal asan" chooses the builds; TESTS="tests/x.bats ..." the files.
# Suites that need the host configuration (remote layers) run $STEREO_REMOTE_BIN, the
# same suite's build of configs/host.config (make host / make host-asan).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
suites=${STEREO_SUITES:-normal asan}
files=${TESTS:-$(ls tests/*.bats)}
pass=0 fail=0 skip=0 rc=0
for suite in $suites; do
	case $suite in
	normal) bin=$top/stereo; t=$top/build/t; rbin=$top/build-host/stereo ;;
	asan) bin=$top/build-asan/stereo; t=$top/build-asan/t; rbin=$top/build-host/build-asan/stereo ;;
	*) echo "run-tests: unknown suite $suite" >&2; exit 2 ;;
	esac
	bindir=$top/build/bin-$suite
	rm -rf "$bindir"
	"$bin" --install -s "$bindir" >/dev/null || { echo "run-tests: --install failed" >&2; exit 1; }
	these=""
	for f in $files; do
		# the QEMU end-to-end suite boots the static binary only
		case "$suite:$f" in asan:*e2e*|asan:*build-config*) continue ;; esac
		these="$these $f"
	done
	echo "# suite: $suite ($bin)"
	out=$(mktemp)
	STEREO_BIN=$bin STEREO_REMOTE_BIN=$rbin STEREO_T=$t STEREO_SUITE=$suite STEREO_TOP=$top PATH=$bindir:$PATH \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		bats --tap $these | tee "$out"
	# the pipeline's status is tee's: the verdict is read from the TAP below
	p=$(grep -c '^ok ' "$out" | tr -d ' ')
	s=$(grep -c '^ok .*# skip' "$out" | tr -d ' ')
	f=$(grep -c '^not ok ' "$out" | tr -d ' ')
	plan=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' "$out" | head -1)
	p=$((p - s))
	# tests that never reported count as failures, and so does a bats error with none
	missing=$(( ${plan:-0} - p - s - f ))
	[ "$missing" -gt 0 ] && f=$((f + missing))
	[ -z "$plan" ] && f=$((f + 1))   # bats died before its plan line
	pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s))
	[ "$f" -ne 0 ] && rc=1
	rm -f "$out"
done
if [ "$skip" -gt 0 ]; then
	echo "$pass passed, $fail failed, $skip skipped"
else
	echo "$pass passed, $fail failed"
fi
exit $rc
