#!/bin/sh
# uffd.sh - stereo-uffd against floors measured in the same run (docs/stereo-uffd.md, "Measured"):
# pack, demand faults (sequential and random touch, sparse and dense image), fault-around,
# prefetch-all, and many clones of one snapshot served by one server at once.
# One image: UFFD_BENCH_MIB (default 256) MiB, ~30% non-zero pages in runs of 1-64 pages, on
# tmpfs. Floors are tests/helpers/uffd_floor.c; the client is fc_standin (Firecracker 1.12
# handshake). Floor and ours alternate in every round, UFFD_BENCH_ROUNDS (default 5) rounds;
# each figure is the median (min-max) over the rounds, ratios are per round. Where ours beats
# a floor, the line says so: that floor is not a floor for that load.
set -eu
top=${STEREO_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${STEREO_BIN:-$top/stereo}
t=${STEREO_T:-$top/build/t}
mib=${UFFD_BENCH_MIB:-256}
rounds=${UFFD_BENCH_ROUNDS:-5}
clones=${UFFD_BENCH_CLONES:-1 2 4 8}
w=$(mktemp -d /dev/shm/uffd-bench.XXXXXX)
bg=""
cleanup() {
	for p in $bg; do kill -9 "$p" 2>/dev/null || true; done
	rm -rf "$w"
}
trap cleanup EXIT INT TERM

wait_line() {   # wait_line FILE PATTERN: up to 60 s
	_wl=0
	while ! grep -q "$2" "$1" 2>/dev/null; do
		_wl=$((_wl + 1))
		[ $_wl -gt 6000 ] && { echo "uffd bench: timed out waiting for $2 in $1" >&2; exit 1; }
		sleep 0.01
	done
}

stat3() {   # stat3 VALUES...: "median min max"
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'
}

fmt3() {   # fmt3 FORMAT VALUES...: "M (min-max)" with FORMAT for each number
	f=$1
	shift
	# shellcheck disable=SC2046
	set -- $(stat3 "$@")
	printf "$f ($f-$f)" "$1" "$2" "$3"
}

median() { stat3 "$@" | cut -d' ' -f1; }

# beats WHAT RATIOS...: ratios are ours/floor for times (< 1 = ours faster)
beats() {
	what=$1
	shift
	n=0 k=0
	for r in "$@"; do
		n=$((n + 1))
		if awk -v r="$r" 'BEGIN { exit !(r < 1) }'; then k=$((k + 1)); fi
	done
	if [ "$k" -gt 0 ]; then
		echo "   ours beat the $what in $k of $n rounds: it is not a floor for this load"
	fi
}

standin() {   # standin SOCKET ARGS: prints touch_ns
	sock=$1
	shift
	"$t/fc_standin" --socket "$sock" --image "$w/img" --version 1.12 --no-verify --timeout 600 "$@" |
		sed -n 's/^touch_ns=\([0-9]*\).*/\1/p'
}

floor() {   # floor MODE STANDIN_ARGS...: touch ns
	mode=$1
	shift
	rm -f "$w/s.sock" "$w/floor.out"
	"$t/uffd_floor" "$mode" --socket "$w/s.sock" --image "$w/img" > "$w/floor.out" &
	srv=$!
	wait_line "$w/floor.out" listening
	standin "$w/s.sock" "$@"
	wait "$srv"
}

ours() {   # ours "SERVE ARGS" STANDIN_ARGS...: touch ns
	sargs=$1
	shift
	rm -f "$w/s.sock" "$w/ready"
	# shellcheck disable=SC2086
	"$bin" stereo-uffd serve --socket "$w/s.sock" --dir "$w/snap" --ready-fd 3 $sargs \
		3>"$w/ready" 2>"$w/serve.log" &
	srv=$!
	wait_line "$w/ready" listening
	standin "$w/s.sock" "$@"
	wait "$srv"
}

per() {   # per NS COUNT: microseconds per unit
	awk -v n="$1" -v c="$2" 'BEGIN { printf "%.3f", n / 1000 / c }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", a / b }'; }

pages=$((mib * 256))
bytes=$((mib * 1048576))
echo "image: $mib MiB ($pages pages), ~30% non-zero in runs of 1-64 pages, /dev/shm; $rounds rounds, median (min-max)"
"$t/uffd_floor" mkimg "$w/img" "$mib"
cat "$w/img" > /dev/null

# ---- pack ------------------------------------------------------------------------------------
c="" p="" r=""
for _ in $(seq "$rounds"); do
	t0=$(date +%s%N); cat "$w/img" > /dev/null; t1=$(date +%s%N)
	rm -rf "$w/snap"
	t2=$(date +%s%N); "$bin" stereo-uffd pack "$w/img" "$w/snap" > /dev/null; t3=$(date +%s%N)
	c="$c $(awk -v b=$bytes -v n=$((t1 - t0)) 'BEGIN { print b / n }')"
	p="$p $(awk -v b=$bytes -v n=$((t3 - t2)) 'BEGIN { print b / n }')"
done
# shellcheck disable=SC2086
printf "%-40s cat %s GB/s | ours %s GB/s (target >= 2 GB/s)\n" "pack from page cache (tmpfs, fsync)" \
	"$(fmt3 %.2f $c)" "$(fmt3 %.2f $p)"

# ---- demand faults -------------------------------------------------------------------------
# demand ORDER: per round floor raw, ours 4K, floor raw64k, ours (64 KiB fault-around)
demand() {
	order=$1
	f="" o="" rr="" f64="" o64="" r64=""
	for _ in $(seq "$rounds"); do
		a=$(per "$(floor raw --touch "$order")" "$pages")
		b=$(per "$(ours "--fault-around 4K" --touch "$order")" "$pages")
		c=$(per "$(floor raw64k --touch "$order")" "$pages")
		d=$(per "$(ours "" --touch "$order")" "$pages")
		f="$f $a" o="$o $b" rr="$rr $(ratio "$b" "$a")"
		f64="$f64 $c" o64="$o64 $d" r64="$r64 $(ratio "$d" "$c")"
	done
}

row() {   # row LABEL UNIT FLOORS OURS RATIOS
	# shellcheck disable=SC2086
	printf "%-40s floor %s us/%s | ours %s | ratio %s\n" "$1" "$(fmt3 %.2f $3)" "$2" \
		"$(fmt3 %.2f $4)" "$(fmt3 %.2f $5)"
}

for order in seq random; do
	demand "$order"
	# shellcheck disable=SC2086
	row "demand 4 KiB, $order touch (sparse)" fault "$f" "$o" "$rr"
	# shellcheck disable=SC2086
	beats "raw one-COPY-per-fault server (it copies zero pages ours maps by ZEROPAGE)" $rr
	# shellcheck disable=SC2086
	row "fault-around 64 KiB, $order (sparse)" page "$f64" "$o64" "$r64"
	# shellcheck disable=SC2086
	beats "raw 64 KiB COPY per fault" $r64
	# shellcheck disable=SC2086
	awk -v r="$(median $f)" -v o="$(median $o64)" 'BEGIN {
		printf "   ours (64 KiB fault-around) is %.1fx fewer us per page than raw 4 KiB (target >= 8x)\n", r / o }'
	eval "sparse_$order=\"\$rr\""
done

# the handler's own cost: a dense image, every page copied by both
dmib=$((mib / 4))
"$t/uffd_floor" mkimg "$w/dense" "$dmib" 100
rm -rf "$w/dsnap"
"$bin" stereo-uffd pack "$w/dense" "$w/dsnap" > /dev/null
mv "$w/img" "$w/img.sparse"; mv "$w/snap" "$w/snap.sparse"
mv "$w/dense" "$w/img"; mv "$w/dsnap" "$w/snap"
f="" o="" rr=""
for _ in $(seq "$rounds"); do
	a=$(per "$(floor raw --touch random)" $((dmib * 256)))
	b=$(per "$(ours "--fault-around 4K" --touch random)" $((dmib * 256)))
	f="$f $a" o="$o $b" rr="$rr $(ratio "$b" "$a")"
done
# shellcheck disable=SC2086
row "demand 4 KiB, random (dense, $dmib MiB)" fault "$f" "$o" "$rr"
# shellcheck disable=SC2086
beats "raw one-COPY-per-fault server" $rr
# shellcheck disable=SC2086
printf "   handler cost, ours / raw per fault: dense %s (target <= 1.1) | sparse seq %s, random %s\n" \
	"$(fmt3 %.2f $rr)" "$(fmt3 %.2f $sparse_seq)" "$(fmt3 %.2f $sparse_random)"
rm -rf "$w/img" "$w/snap"
mv "$w/img.sparse" "$w/img"; mv "$w/snap.sparse" "$w/snap"

# ---- prefetch everything ---------------------------------------------------------------------
held() {   # held SOCKET: a stand-in that touches nothing and stays until $w/go exists ($sts)
	"$t/fc_standin" --socket "$1" --image "$w/img" --version 1.12 --touch none --no-verify \
		--hold "$w/go" --timeout 600 > /dev/null &
	sts="$sts $!"
}
bulk() {   # bulk MODE N: the slowest prefetch ns of N floors at once
	rm -f "$w/go" "$w"/f*.sock "$w"/floor*.out
	srvs="" sts=""
	for i in $(seq "$2"); do
		"$t/uffd_floor" "$1" --socket "$w/f$i.sock" --image "$w/img" > "$w/floor$i.out" &
		srvs="$srvs $!"
	done
	for i in $(seq "$2"); do wait_line "$w/floor$i.out" listening; done
	for i in $(seq "$2"); do held "$w/f$i.sock"; done
	for i in $(seq "$2"); do wait_line "$w/floor$i.out" prefetch_ns; done
	touch "$w/go"
	for p in $sts $srvs; do wait "$p"; done
	bg=""
	cat "$w"/floor*.out | sed -n 's/^prefetch_ns=\([0-9]*\).*/\1/p' | sort -n | tail -1
}
prefetch_ours() {   # prefetch_ours N: the slowest clone's prefetch ns, N clones of one server
	rm -f "$w/go" "$w/s.sock" "$w/ready" "$w/stats.json"
	"$bin" stereo-uffd serve --socket "$w/s.sock" --dir "$w/snap" --ready-fd 3 --prefetch all \
		--clones "$1" --stats "$w/stats.json" 3>"$w/ready" 2>"$w/serve.log" &
	srv=$!
	wait_line "$w/ready" listening
	sts=""
	for _ in $(seq "$1"); do held "$w/s.sock"; done
	i=0
	until python3 - "$w/stats.json" "$1" 2>/dev/null <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
cl = [c for c in j["clones"] if c["state"] == "serving"]
sys.exit(not (len(cl) == int(sys.argv[2]) and all(c["prefetch_done"] for c in cl)))
EOF
	do
		kill -USR1 "$srv"
		sleep 0.02
		i=$((i + 1))
		[ $i -gt 3000 ] && { echo "uffd bench: prefetch did not finish" >&2; exit 1; }
	done
	touch "$w/go"
	for p in $sts; do wait "$p"; done
	bg=""
	wait "$srv" || true
	python3 -c 'import json,sys; print(max(c["prefetch_ns"] for c in json.load(open(sys.argv[1]))["clones"]))' "$w/stats.json"
}
bz="" b2m="" pw="" pf="" rz="" r2="" rp=""
for _ in $(seq "$rounds"); do
	a=$(bulk bulkzero 1); b=$(bulk bulk2m 1); c=$(bulk pagewise 1); d=$(prefetch_ours 1)
	bz="$bz $(awk -v n="$a" -v b=$bytes 'BEGIN { print b / n }')"
	b2m="$b2m $(awk -v n="$b" -v b=$bytes 'BEGIN { print b / n }')"
	pw="$pw $(awk -v n="$c" -v b=$bytes 'BEGIN { print b / n }')"
	pf="$pf $(awk -v n="$d" -v b=$bytes 'BEGIN { print b / n }')"
	rz="$rz $(ratio "$d" "$a")" r2="$r2 $(ratio "$d" "$b")" rp="$rp $(ratio "$d" "$c")"
done
thr() { for x in "$@"; do awk -v r="$x" 'BEGIN { printf "%.4f ", 1 / r }'; done; }
# shellcheck disable=SC2086
printf "%-40s floor %s GB/s (raw 2 MiB COPY + ZEROPAGE zero runs, like for like) | ours %s GB/s | ours/floor %s (target >= 0.9)\n" \
	"prefetch all, $mib MiB" "$(fmt3 %.2f $bz)" "$(fmt3 %.2f $pf)" "$(fmt3 %.2f $(thr $rz))"
# shellcheck disable=SC2086
beats "like-for-like 2 MiB COPY + ZEROPAGE floor" $rz
# shellcheck disable=SC2086
printf "   beside it: plain 2 MiB COPY %s GB/s, ours/it %s; page-by-page pread + COPY (Wrenn) %s GB/s, ours/it %s (target >= 2)\n" \
	"$(fmt3 %.2f $b2m)" "$(fmt3 %.2f $(thr $r2))" "$(fmt3 %.2f $pw)" "$(fmt3 %.2f $(thr $rp))"
echo "   (the plain COPY and page-by-page servers copy the zero pages ours maps by ZEROPAGE: neither is a floor for this image)"
# shellcheck disable=SC2086
awk -v b=$bytes -v g="$(median $pf)" 'BEGIN { printf "   resident %.1f ms after the handshake (median)\n", b / g / 1e6 }'

# ---- many clones of one snapshot ----------------------------------------------------------------
anon_kb() {   # anon_kb PID...: private anonymous memory (not page cache), summed, in KiB
	for p in "$@"; do awk '/^Anonymous:/ { print $2 }' "/proc/$p/smaps_rollup"; done |
		awk '{ s += $1 } END { print s + 0 }'
}
# clients SOCKETS...: one stand-in per socket (a socket may repeat), --lat, held until $w/go;
# sets agg (pages/s over the slowest), p99 (the worst clone's p99, us); runs $1 when all touched
clients() {
	hook=$1
	shift
	rm -f "$w/go" "$w"/c*.out
	sts="" nc=0
	for s in "$@"; do
		nc=$((nc + 1))
		"$t/fc_standin" --socket "$s" --image "$w/img" --version 1.12 --no-verify --timeout 600 \
			--lat --hold "$w/go" > "$w/c$nc.out" &
		sts="$sts $!"
	done
	bg="$bg $sts"
	for j in $(seq "$nc"); do wait_line "$w/c$j.out" "^ok "; done
	$hook
	touch "$w/go"
	for p in $sts; do wait "$p"; done
	bg=""
	slow=$(cat "$w"/c*.out | sed -n 's/^touch_ns=\([0-9]*\).*/\1/p' | sort -n | tail -1)
	agg=$(awk -v n="$slow" -v c=$((nc * pages)) 'BEGIN { printf "%.0f", c / n * 1e9 }')
	p99=$(cat "$w"/c*.out | sed -n 's/.*lat_p99_ns=\([0-9]*\).*/\1/p' | sort -n | tail -1)
	p99=$(awk -v n="$p99" 'BEGIN { printf "%.1f", n / 1000 }')
}
mem_floor() { mem=$(anon_kb $srvs); }
mem_ours() { mem=$(anon_kb "$srv"); }
many_floor() {   # many_floor N
	rm -f "$w"/f*.sock "$w"/floor*.out
	srvs="" socks=""
	for i in $(seq "$1"); do
		"$t/uffd_floor" raw --socket "$w/f$i.sock" --image "$w/img" > "$w/floor$i.out" &
		srvs="$srvs $!"
		socks="$socks $w/f$i.sock"
	done
	for i in $(seq "$1"); do wait_line "$w/floor$i.out" listening; done
	# shellcheck disable=SC2086
	clients mem_floor $socks
	for p in $srvs; do wait "$p"; done
}
many_ours() {   # many_ours N
	rm -f "$w/s.sock" "$w/ready" "$w/stats.json"
	"$bin" stereo-uffd serve --socket "$w/s.sock" --dir "$w/snap" --ready-fd 3 --fault-around 4K \
		--clones "$1" --stats "$w/stats.json" 3>"$w/ready" 2>"$w/serve.log" &
	srv=$!
	wait_line "$w/ready" listening
	socks=""
	for _ in $(seq "$1"); do socks="$socks $w/s.sock"; done
	# shellcheck disable=SC2086
	clients mem_ours $socks
	wait "$srv"
}
echo "many clones: N stand-ins (1 touching thread each, 4 KiB faults, no fault-around) restore the image at once;"
echo "   floor = N raw one-COPY-per-fault servers, ours = one server --clones N --fault-around 4K;"
echo "   with $(nproc) CPUs, N touching threads beyond it wait for a CPU whatever serves them (see the floor's own p99)"
kilo() { for x in "$@"; do awk -v x="$x" 'BEGIN { print x / 1000 }'; done; }
lone_p99="" mem1=""
for n in $clones; do
	fa="" oa="" ra="" fp="" op="" fm="" om=""
	for _ in $(seq "$rounds"); do
		many_floor "$n"; fa="$fa $agg" fp="$fp $p99" fm="$fm $mem"
		many_ours "$n"; oa="$oa $agg" op="$op $p99" om="$om $mem"
		ra="$ra $(ratio "$agg" "$(echo $fa | awk '{ print $NF }')")"
	done
	[ -z "$lone_p99" ] && lone_p99=$(median $op) && lone_fp99=$(median $fp) && mem1=$(median $om) && n1=$n
	# shellcheck disable=SC2086
	printf "N=%-2s aggregate floor %s kpages/s | ours %s | ours/floor %s (target >= 0.8)\n" "$n" \
		"$(fmt3 %.0f $(kilo $fa))" "$(fmt3 %.0f $(kilo $oa))" "$(fmt3 %.2f $ra)"
	# shellcheck disable=SC2086
	printf "     worst clone's p99 fault: floor %s us | ours %s us | ours/floor %.2f; vs a lone clone: ours %.2fx, floor %.2fx (target <= 2)\n" \
		"$(fmt3 %.1f $fp)" "$(fmt3 %.1f $op)" "$(awk -v a="$(median $op)" -v b="$(median $fp)" 'BEGIN { print a / b }')" \
		"$(awk -v a="$(median $op)" -v b="$lone_p99" 'BEGIN { print a / b }')" \
		"$(awk -v a="$(median $fp)" -v b="$lone_fp99" 'BEGIN { print a / b }')"
	# shellcheck disable=SC2086
	printf "     private anonymous memory: floor (N servers) %s KiB | ours (one server) %s KiB\n" \
		"$(fmt3 %.0f $fm)" "$(fmt3 %.0f $om)"
	if [ "$n" != "$n1" ]; then
		awk -v a="$(median $om)" -v b="$mem1" -v n="$n" -v n1="$n1" 'BEGIN {
			printf "     ours grows %.1f KiB per clone beyond %d (target <= 64 KiB)\n", (a - b) / (n - n1), n1 }'
	fi
	# shellcheck disable=SC2086
	awk -v r="$(median $ra)" 'BEGIN { exit !(r > 1) }' &&
		echo "     ours beat the N raw servers here: they are not a floor for this load"
done

n=8
fz="" oz="" rz=""
for _ in $(seq "$rounds"); do
	a=$(bulk bulkzero $n); b=$(prefetch_ours $n)
	fz="$fz $(awk -v n="$a" -v b=$((bytes * 8)) 'BEGIN { print b / n }')"
	oz="$oz $(awk -v n="$b" -v b=$((bytes * 8)) 'BEGIN { print b / n }')"
	rz="$rz $(ratio "$a" "$b")"
done
# shellcheck disable=SC2086
printf "%-40s floor (8 raw 2 MiB COPY + ZEROPAGE servers) %s GB/s | ours (one server) %s GB/s | ours/floor %s\n" \
	"8 clones, --prefetch all, aggregate" "$(fmt3 %.2f $fz)" "$(fmt3 %.2f $oz)" "$(fmt3 %.2f $rz)"
# shellcheck disable=SC2086
awk -v r="$(median $rz)" 'BEGIN { exit !(r > 1) }' &&
	echo "   ours beat the 8 floor servers here: they are not a floor for this load" || true
