#!/bin/sh
# uffd.sh - stereo-uffd against floors measured in the same run (shared/spec/performance.md):
# demand faults (sequential and random touch), fault-around, prefetch-all and pack.
# One image for everything: UFFD_BENCH_MIB (default 256) MiB, ~30% non-zero pages in runs of
# 1-64 pages, on tmpfs. Floors are tests/helpers/uffd_floor.c; the client is fc_standin
# (Firecracker 1.12 handshake, one touching thread). Prints floor, ours and the ratio.
set -eu
top=${STEREO_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${STEREO_BIN:-$top/stereo}
t=${STEREO_T:-$top/build/t}
mib=${UFFD_BENCH_MIB:-256}
w=$(mktemp -d /dev/shm/uffd-bench.XXXXXX)
srv="" ngx=""
cleanup() {
	[ -n "$srv" ] && kill -9 "$srv" 2>/dev/null
	[ -n "$ngx" ] && kill "$ngx" 2>/dev/null
	rm -rf "$w"
}
trap cleanup EXIT INT TERM

wait_line() {   # wait_line FILE PATTERN: up to 10 s
	i=0
	while ! grep -q "$2" "$1" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 1000 ] && { echo "uffd bench: timed out waiting for $2 in $1" >&2; exit 1; }
		sleep 0.01
	done
}

standin() {   # standin ARGS: prints touch_ns
	"$t/fc_standin" --socket "$w/s.sock" --image "$w/img" --version 1.12 --no-verify --timeout 300 "$@" |
		sed -n 's/^touch_ns=\([0-9]*\).*/\1/p'
}

floor() {   # floor MODE STANDIN_ARGS...: touch ns (or prefetch ns for bulk modes, in $w/floor.out)
	mode=$1
	shift
	rm -f "$w/s.sock" "$w/floor.out"
	"$t/uffd_floor" "$mode" --socket "$w/s.sock" --image "$w/img" > "$w/floor.out" &
	srv=$!
	wait_line "$w/floor.out" listening
	standin "$@"
	wait "$srv"
	srv=""
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
	standin "$@"
	wait "$srv"
	srv=""
}

pages=$((mib * 256))
row() {   # row LABEL FLOOR_NS OURS_NS UNITS_PER_RUN UNIT
	awk -v l="$1" -v f="$2" -v o="$3" -v n="$4" -v u="$5" -v b="$((mib * 1048576))" 'BEGIN {
		printf "%-44s floor %8.2f us/%s %7.0f MB/s | ours %8.2f us/%s %7.0f MB/s | ratio %.2f\n",
			l, f / 1000 / n, u, b / f * 1000, o / 1000 / n, u, b / o * 1000, o / f }'
}

# ---- layers from object storage (the host build; nginx on loopback) -------------------------
# The same snapshot served from the local directory and from nginx on 127.0.0.1 (the chunk
# cache on the same tmpfs), interleaved round by round: --prefetch all to fully resident from
# the local directory, with a cold (empty) cache and with a warm one; demand-fault latency
# quantiles (the stats file's: upper bounds of log2 buckets) local vs cold; the chunks a second
# server fetches. UFFD_BENCH_PARTS=remote runs only this part (after pack).
remote_bench() {
	rbin=${STEREO_REMOTE_BIN:-$top/build-host/stereo}
	if [ ! -x "$rbin" ] || ! command -v nginx > /dev/null; then
		echo "object storage: skipped (no host build at $rbin: make host; or no nginx)"
		return 0
	fi
	mkdir -p "$w/www" "$w/ngx/tmp"
	cp "$w/snap"/* "$w/www/"
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	{
		echo "user root; worker_processes 1; pid $w/ngx/nginx.pid; error_log $w/ngx/error.log;"
		echo "events { worker_connections 256; }"
		echo "http { log_format ranges '\$uri \$http_range \$status \$body_bytes_sent';"
		echo "  access_log $w/ngx/access.log ranges; sendfile on;"
		echo "  client_body_temp_path $w/ngx/tmp; proxy_temp_path $w/ngx/tmp; fastcgi_temp_path $w/ngx/tmp;"
		echo "  uwsgi_temp_path $w/ngx/tmp; scgi_temp_path $w/ngx/tmp;"
		echo "  server { listen 127.0.0.1:$port; root $w/www; } }"
	} > "$w/ngx/nginx.conf"
	nginx -p "$w/ngx" -c "$w/ngx/nginx.conf" -g 'daemon off;' > /dev/null 2> "$w/ngx/stderr" &
	ngx=$!
	i=0
	until curl -s -o /dev/null "http://127.0.0.1:$port/memfile.header"; do
		i=$((i + 1))
		if [ $i -gt 500 ]; then echo "uffd bench: nginx did not start" >&2; kill "$ngx"; exit 1; fi
		sleep 0.02
	done
	url=http://127.0.0.1:$port/
	rprefetch() {   # rprefetch DIR_OR_URL: ns from the handshake to fully resident
		rm -f "$w/s.sock" "$w/ready" "$w/stats.json"
		"$rbin" stereo-uffd serve --socket "$w/s.sock" --dir "$1" --ready-fd 3 --prefetch all \
			--cache "$w/cache" --stats "$w/stats.json" 3>"$w/ready" 2>"$w/serve.log" &
		srv=$!
		wait_line "$w/ready" listening
		rm -f "$w/go"
		"$t/fc_standin" --socket "$w/s.sock" --image "$w/img" --version 1.12 --touch none --no-verify \
			--hold "$w/go" --timeout 300 > /dev/null &
		st=$!
		i=0
		until grep -q '"prefetch_done":true' "$w/stats.json" 2>/dev/null; do
			kill -USR1 "$srv"
			sleep 0.02
			i=$((i + 1))
			if [ $i -gt 3000 ]; then echo "uffd bench: remote prefetch did not finish" >&2; exit 1; fi
		done
		touch "$w/go"
		wait "$st"
		wait "$srv"
		srv=""
		python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prefetch_ns"])' "$w/stats.json"
	}
	rdemand() {   # rdemand DIR_OR_URL: "p50 p99" of demand faults (random touch), in us
		rm -f "$w/s.sock" "$w/ready" "$w/stats.json"
		"$rbin" stereo-uffd serve --socket "$w/s.sock" --dir "$1" --ready-fd 3 --cache "$w/cache" \
			--stats "$w/stats.json" 3>"$w/ready" 2>"$w/serve.log" &
		srv=$!
		wait_line "$w/ready" listening
		standin --touch random > /dev/null
		wait "$srv"
		srv=""
		python3 - "$w/stats.json" <<-'PY'
		import json, sys
		h = json.load(open(sys.argv[1]))["fault_latency_us_log2"]
		def q(f):
		    n, acc = sum(h), 0
		    for k, c in enumerate(h):
		        acc += c
		        if acc >= f * n:
		            return 1 << k
		    return 1 << len(h)
		print(q(0.5), q(0.99))
		PY
	}
	loc="" cold="" warm="" lp50="" lp99="" cp50="" cp99="" second=""
	for _ in $(seq "$reps"); do
		loc=$(best "$loc" "$(rprefetch "$w/snap")")
		rm -rf "$w/cache"
		cold=$(best "$cold" "$(rprefetch "$url")")
		n0=$(grep -c ' bytes=' "$w/ngx/access.log" || true)
		warm=$(best "$warm" "$(rprefetch "$url")")
		n1=$(grep -c ' bytes=' "$w/ngx/access.log" || true)
		second=$((n1 - n0 - 1))   # minus the layer's one-byte probe
		# shellcheck disable=SC2046
		set -- $(rdemand "$w/snap")
		lp50=$(best "$lp50" "$1"); lp99=$(best "$lp99" "$2")
		rm -rf "$w/cache"
		# shellcheck disable=SC2046
		set -- $(rdemand "$url")
		cp50=$(best "$cp50" "$1"); cp99=$(best "$cp99" "$2")
	done
	kill "$ngx"
	wait "$ngx" 2>/dev/null || true
	ngx=""
	awk -v l="$loc" -v c="$cold" -v wm="$warm" -v b="$((mib * 1048576))" 'BEGIN {
		printf "%-44s %6.2f GB/s (%.1f ms)\n", "object storage: local dir, --prefetch all", b / l, l / 1e6
		printf "%-44s %6.2f GB/s (%.1f ms) | %.2fx local (target <= 2)\n", "object storage: cold cache, --prefetch all", b / c, c / 1e6, c / l
		printf "%-44s %6.2f GB/s (%.1f ms) | %.2fx local (target <= 1.1)\n", "object storage: warm cache, --prefetch all", b / wm, wm / 1e6, wm / l }'
	echo "object storage: chunks a second server fetched: $second (target 0)"
	echo "object storage: demand faults p50/p99 (log2 bucket bounds): local ${lp50}/${lp99} us, cold cache ${cp50}/${cp99} us"
}

echo "image: $mib MiB ($pages pages), ~30% non-zero in runs of 1-64 pages, /dev/shm"
"$t/uffd_floor" mkimg "$w/img" "$mib"
cat "$w/img" > /dev/null

# ---- pack (best of $reps) -------------------------------------------------------------------
reps=${UFFD_BENCH_REPS:-3}
best() {   # best CURRENT NEW: the smaller
	if [ -z "$1" ] || [ "$2" -lt "$1" ]; then echo "$2"; else echo "$1"; fi
}
c="" p=""
for _ in $(seq "$reps"); do
	t0=$(date +%s%N); cat "$w/img" > /dev/null; t1=$(date +%s%N)
	rm -rf "$w/snap"
	t2=$(date +%s%N); "$bin" stereo-uffd pack "$w/img" "$w/snap" > /dev/null; t3=$(date +%s%N)
	c=$(best "$c" $((t1 - t0)))
	p=$(best "$p" $((t3 - t2)))
done
awk -v c="$c" -v p="$p" -v b="$((mib * 1048576))" 'BEGIN {
	printf "%-44s floor %6.2f GB/s (cat > /dev/null) | ours %6.2f GB/s | ratio %.2f (target >= 2 GB/s)\n",
		"pack from page cache (tmpfs out, fsync)", b / c, b / p, (b / p) / (b / c) }'
case " ${UFFD_BENCH_PARTS:-local remote} " in
*" local "*) ;;
*) remote_bench; exit 0 ;;
esac

# ---- demand faults (best of $reps runs each, floor and ours interleaved) -------------------
for order in seq random; do
	f="" o="" f64="" o64=""
	for _ in $(seq "$reps"); do
		f=$(best "$f" "$(floor raw --touch $order)")
		o=$(best "$o" "$(ours "--fault-around 4K" --touch $order)")
		f64=$(best "$f64" "$(floor raw64k --touch $order)")
		o64=$(best "$o64" "$(ours "" --touch $order)")
	done
	row "demand 4 KiB, $order touch, per fault" "$f" "$o" "$pages" fault
	echo "   (target: ours <= 1.1x the raw round trip)"
	row "fault-around 64 KiB, $order, per page" "$f64" "$o64" "$pages" page
	awk -v r="$f" -v o="$o64" 'BEGIN { printf "   ours (64 KiB fault-around) is %.1fx fewer us per page than raw 4 KiB (target >= 8x)\n", r / o }'
done

# ---- the handler's own cost: a dense image (every page copied by both) ---------------------
dmib=$((mib / 4))
"$t/uffd_floor" mkimg "$w/dense" "$dmib" 100
rm -rf "$w/dsnap"
"$bin" stereo-uffd pack "$w/dense" "$w/dsnap" > /dev/null
mv "$w/img" "$w/img.sparse"; mv "$w/snap" "$w/snap.sparse"
mv "$w/dense" "$w/img"; mv "$w/dsnap" "$w/snap"
f="" o=""
for _ in $(seq "$reps"); do
	f=$(best "$f" "$(floor raw --touch random)")
	o=$(best "$o" "$(ours "--fault-around 4K" --touch random)")
done
mib_saved=$mib; mib=$dmib
row "dense image ($dmib MiB), random, per fault" "$f" "$o" $((dmib * 256)) fault
echo "   (every page copied by both: the handler's overhead over the raw round trip)"
mib=$mib_saved
rm -rf "$w/img" "$w/snap"
mv "$w/img.sparse" "$w/img"; mv "$w/snap.sparse" "$w/snap"

# ---- prefetch everything (best of $reps) ----------------------------------------------------
held() {   # held: a stand-in that touches nothing and stays until $w/go exists
	rm -f "$w/go"
	"$t/fc_standin" --socket "$w/s.sock" --image "$w/img" --version 1.12 --touch none --no-verify \
		--hold "$w/go" --timeout 300 > /dev/null &
	st=$!
}
bulk() {   # bulk MODE: prefetch ns of a floor
	rm -f "$w/s.sock" "$w/floor.out"
	"$t/uffd_floor" "$1" --socket "$w/s.sock" --image "$w/img" > "$w/floor.out" &
	srv=$!
	wait_line "$w/floor.out" listening
	held
	wait_line "$w/floor.out" prefetch_ns
	touch "$w/go"
	wait "$st"
	wait "$srv"
	srv=""
	sed -n 's/^prefetch_ns=\([0-9]*\).*/\1/p' "$w/floor.out"
}
prefetch_ours() {
	rm -f "$w/s.sock" "$w/ready" "$w/stats.json"
	"$bin" stereo-uffd serve --socket "$w/s.sock" --dir "$w/snap" --ready-fd 3 --prefetch all \
		--stats "$w/stats.json" 3>"$w/ready" 2>"$w/serve.log" &
	srv=$!
	wait_line "$w/ready" listening
	held
	i=0
	until grep -q '"prefetch_done":true' "$w/stats.json" 2>/dev/null; do
		kill -USR1 "$srv"
		sleep 0.02
		i=$((i + 1))
		[ $i -gt 1500 ] && { echo "uffd bench: prefetch did not finish" >&2; exit 1; }
	done
	touch "$w/go"
	wait "$st"
	wait "$srv"
	srv=""
	python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prefetch_ns"])' "$w/stats.json"
}
b2m="" bz="" pw="" pf=""
for _ in $(seq "$reps"); do
	b2m=$(best "$b2m" "$(bulk bulk2m)")
	bz=$(best "$bz" "$(bulk bulkzero)")
	pw=$(best "$pw" "$(bulk pagewise)")
	pf=$(best "$pf" "$(prefetch_ours)")
done
awk -v b2m="$b2m" -v bz="$bz" -v pw="$pw" -v o="$pf" -v b="$((mib * 1048576))" 'BEGIN {
	printf "%-44s %6.2f GB/s (%.1f ms)\n", "floor: raw 2 MiB UFFDIO_COPY ceiling", b / b2m, b2m / 1e6
	printf "%-44s %6.2f GB/s (%.1f ms)\n", "floor: raw 2 MiB COPY + ZEROPAGE zero runs", b / bz, bz / 1e6
	printf "%-44s %6.2f GB/s (%.1f ms)\n", "floor: page-by-page pread + COPY (Wrenn)", b / pw, pw / 1e6
	printf "%-44s %6.2f GB/s (%.1f ms)\n", "ours: --prefetch all", b / o, o / 1e6
	printf "   ours / 2 MiB ceiling %.2f (target >= 0.9), ours / page-by-page %.2f (target >= 2)\n", b2m / o, pw / o }'

case " ${UFFD_BENCH_PARTS:-local remote} " in
*" remote "*) remote_bench ;;
esac
