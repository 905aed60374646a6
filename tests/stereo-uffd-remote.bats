# stereo-uffd-remote.bats - snapshot layers served from object storage: a real nginx on
# 127.0.0.1 (HTTP and HTTPS with a certificate made here), the Firecracker stand-in checking
# every byte, the shared chunk cache, and a fault-injecting proxy (helpers/faultproxy.py).
# Needs the host configuration's binary ($STEREO_REMOTE_BIN: make host / make host-asan).
load helpers

setup() {
	D=$BATS_TEST_TMPDIR
	RB=${STEREO_REMOTE_BIN:-$STEREO_TOP/build-host/stereo}
	[ -x "$RB" ] || { echo "no host build at $RB: run make host" >&2; return 1; }
	SP="" SP2="" NGX="" PXY="" HP_OLD=""
	mkdir -p "$D/www"
}

teardown() {
	for p in $SP $SP2; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	if [ -n "$PXY" ]; then kill "$PXY" 2>/dev/null || true; wait "$PXY" 2>/dev/null || true; fi
	if [ -n "$NGX" ]; then kill "$NGX" 2>/dev/null || true; wait "$NGX" 2>/dev/null || true; fi
	if [ -n "$HP_OLD" ]; then echo "$HP_OLD" > /proc/sys/vm/nr_hugepages; fi
	for f in "$D"/serve*.log; do [ -f "$f" ] && asan_clean "$f"; done
	true
}

ruffd() { "$RB" stereo-uffd "$@"; }

# mkimg FILE [PAGES [SEED]]: about 40% non-zero 4 KiB pages in runs of 1-16
mkimg() {
	python3 - "$@" <<'EOF'
import random, sys
path = sys.argv[1]
pages = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
rnd = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 11)
img = bytearray(pages * 4096)
i = 0
while i < pages:
    n = rnd.randint(1, 16)
    if rnd.random() < 0.4:
        for p in range(i, min(i + n, pages)):
            img[p * 4096:(p + 1) * 4096] = rnd.randbytes(4096)
            img[p * 4096] = 1 + p % 255
    i += n
open(path, "wb").write(img)
EOF
}

# nginx_start [tls]: nginx serving $D/www on its own port; URL is its base.
nginx_start() {
	local port tls=${1:-} listen scheme=http
	port=$(free_port)
	mkdir -p "$D/ngx/tmp"
	listen="listen 127.0.0.1:$port;"
	if [ "$tls" = tls ]; then
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
			-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
			-keyout "$D/ngx/key.pem" -out "$D/ngx/cert.pem" 2>/dev/null
		listen="listen 127.0.0.1:$port ssl http2; ssl_certificate $D/ngx/cert.pem; ssl_certificate_key $D/ngx/key.pem;"
		scheme=https
	fi
	cat > "$D/ngx/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $D/ngx/nginx.pid;
error_log $D/ngx/error.log;
events { worker_connections 256; }
http {
	log_format ranges '\$request_method \$uri \$http_range \$status \$body_bytes_sent \$server_protocol \$connection \$args';
	access_log $D/ngx/access.log ranges;
	client_body_temp_path $D/ngx/tmp; proxy_temp_path $D/ngx/tmp; fastcgi_temp_path $D/ngx/tmp;
	uwsgi_temp_path $D/ngx/tmp; scgi_temp_path $D/ngx/tmp;
	server { $listen root $D/www; }
}
EOF
	nginx -p "$D/ngx" -c "$D/ngx/nginx.conf" -g 'daemon off;' 2>"$D/ngx/stderr" &
	NGX=$!
	PORT=$port
	URL=$scheme://127.0.0.1:$port
	wait_for curl -sk -o /dev/null "$URL/"
}

# proxy_start: the fault-injecting proxy in front of nginx; PURL is its base, $D/mode its mode.
proxy_start() {
	echo pass > "$D/mode"
	python3 "$STEREO_TOP/tests/helpers/faultproxy.py" "$D/pport" "$PORT" "$D/mode" "$D/proxy.log" \
		2>"$D/proxy.err" &
	PXY=$!
	wait_file "$D/pport"
	PURL=http://127.0.0.1:$(cat "$D/pport")
}

# rserve NAME ARGS...: a host-build server on $D/NAME.sock, log $D/serve-NAME.log; pid in LASTPID
rserve() {
	local n=$1
	shift
	rm -f "$D/$n.ready" "$D/$n.sock"
	"$RB" stereo-uffd serve --socket "$D/$n.sock" --accept-timeout 30s --ready-fd 3 --cache "$D/cache" "$@" \
		3>"$D/$n.ready" 2>"$D/serve-$n.log" &
	LASTPID=$!
	wait_file "$D/$n.ready" listening
}

standin() {
	local n=$1
	shift
	timeout 120 "$STEREO_T/fc_standin" --socket "$D/$n.sock" "$@"
}

# chunk requests in nginx's log (method uri range status bytes), not the one-byte probes
chunk_lines() {
	grep -v ' bytes=0-0 ' "$D/ngx/access.log" | grep ' bytes=' || true
}

publish() {   # publish IMG: pack it into $D/www/snap
	ruffd pack "$1" "$D/www/snap" >/dev/null
	LAYER=$(basename "$(ls "$D"/www/snap/memfile.*-*)")
}

@test "remote: a snapshot served by nginx over HTTP restores byte for byte on demand, several regions" {
	mkimg "$D/img" 1024
	publish "$D/img"
	nginx_start
	rserve a --dir "$URL/snap/" --chunk 64K --stats "$D/stats.json"
	SP=$LASTPID
	run standin a --image "$D/img" --regions 3 --hole --touch random --threads 3
	assert_success
	assert_output --partial "ok 1024 pages verified=1"
	wait "$SP"
	SP=""
	# connections are reused (HTTP/1.1 keep-alive): far fewer than requests
	[ "$(chunk_lines | awk '{print $7}' | sort -u | wc -l)" -le 8 ]
	# demand only: no chunk fetched twice, every request a 206 range of a layer
	run chunk_lines
	[ "${#lines[@]}" -gt 4 ]
	assert_equal "$(chunk_lines | awk '{print $3}' | sort | uniq -d | wc -l)" 0
	refute_output --partial " 200 "
	# zero-fill is never fetched: fewer bytes than the image came over the wire
	total=$(chunk_lines | awk '{s += $5} END {print s}')
	[ "$total" -lt "$(stat -c %s "$D/img")" ]
}

@test "remote: HTTPS with a self-signed certificate (--cacert), --prefetch all, verified bytes" {
	mkimg "$D/img" 1024 5
	publish "$D/img"
	nginx_start tls
	# TLS is verified: without the certificate the server refuses to start
	run ruffd verify --cache "$D/cache" "$URL/snap"
	assert_failure 1
	assert_output --partial "certificate"
	rserve a --dir "$URL/snap" --cacert "$D/ngx/cert.pem" --chunk 128K --prefetch all --stats "$D/stats.json"
	SP=$LASTPID
	run standin a --image "$D/img" --touch seq
	assert_success
	assert_output --partial "verified=1"
	wait "$SP"
	SP=""
	grep -q '"prefetch_done":true' "$D/stats.json"
	# --prefetch all fetched every chunk of the layer, once
	layer_bytes=$(stat -c %s "$D/www/snap/$LAYER")
	assert_equal "$(chunk_lines | wc -l)" $(( (layer_bytes + 131071) / 131072 ))
	# over HTTP/2 (ALPN), on one connection per fetcher
	assert_equal "$(chunk_lines | awk '{print $6}' | sort -u)" "HTTP/2.0"
	[ "$(chunk_lines | awk '{print $7}' | sort -u | wc -l)" -le 2 ]
}

@test "remote: verify, inspect and cat take URLs; verify names an object shorter than its mappings" {
	mkimg "$D/img" 512
	publish "$D/img"
	nginx_start
	run ruffd verify --cache "$D/cache" "$URL/snap"
	assert_success
	assert_output --partial "ok: $URL/snap"
	run ruffd inspect --json --cache "$D/cache" "$URL/snap"
	assert_success
	assert_output --partial "\"file\":\"$URL/snap/$LAYER\""
	run ruffd cat --cache "$D/cache" --chunk 64K "$URL/snap" "$D/out"
	assert_success
	cmp "$D/img" "$D/out"
	# a header naming a layer the server does not have, and an object cut short
	truncate -s 8192 "$D/www/snap/$LAYER"
	run ruffd verify --cache "$D/cache" "$URL/snap"
	assert_failure 1
	assert_output --partial "is truncated"
	assert_output --partial "$URL/snap/$LAYER"
	rm "$D/www/snap/$LAYER"
	run ruffd verify --cache "$D/cache" "$URL/snap"
	assert_failure 1
	assert_output --partial "404"
	# the default (static) build says what it lacks
	run "$STEREO_BIN" stereo-uffd verify "$URL/snap"
	assert_failure
	assert_output --partial "CONFIG_STEREO_UFFD_REMOTE"
}

@test "remote: two servers at once fetch each chunk once; a third restore fetches nothing" {
	mkimg "$D/img" 2048 9
	publish "$D/img"
	nginx_start
	rserve a --dir "$URL/snap" --chunk 64K --prefetch all
	SP=$LASTPID
	rserve b --dir "$URL/snap" --chunk 64K --prefetch all
	SP2=$LASTPID
	standin a --image "$D/img" --touch random --threads 2 > "$D/a.out" &
	A=$!
	standin b --image "$D/img" --touch random --threads 2 > "$D/b.out" &
	B=$!
	wait "$A"
	wait "$B"
	grep -q verified=1 "$D/a.out"
	grep -q verified=1 "$D/b.out"
	wait "$SP"; SP=""
	wait "$SP2"; SP2=""
	layer_bytes=$(stat -c %s "$D/www/snap/$LAYER")
	assert_equal "$(chunk_lines | awk '{print $3}' | sort | uniq -d | wc -l)" 0
	assert_equal "$(chunk_lines | wc -l)" $(( (layer_bytes + 65535) / 65536 ))
	before=$(chunk_lines | wc -l)
	rserve c --dir "$URL/snap" --chunk 64K
	SP=$LASTPID
	run standin c --image "$D/img" --touch random
	assert_success
	wait "$SP"; SP=""
	assert_equal "$(chunk_lines | wc -l)" "$before"
}

@test "remote: kill -9 a server mid-download; the next one serves correct bytes" {
	mkimg "$D/img" 1024 3
	publish "$D/img"
	nginx_start
	proxy_start
	echo "stall 1 60" > "$D/mode"
	rserve a --dir "$PURL/snap" --chunk 64K
	SP=$LASTPID
	standin a --image "$D/img" --touch seq > /dev/null 2>&1 &
	S1=$!
	wait_file "$D/proxy.log" stall    # a chunk is half written into the cache now
	stalled=$(awk '$2 == "stall" {print $1}' "$D/proxy.log")
	kill -9 "$SP"; wait "$SP" 2>/dev/null || true; SP=""
	kill -9 "$S1"; wait "$S1" 2>/dev/null || true
	echo pass > "$D/mode"
	rserve b --dir "$PURL/snap" --chunk 64K
	SP=$LASTPID
	run standin b --image "$D/img" --touch seq
	assert_success
	assert_output --partial "verified=1"
	wait "$SP"; SP=""
	# the half-written chunk was never marked present: fetched again
	assert_equal "$(grep -c -- "^$stalled " "$D/proxy.log")" 2
}

@test "remote: transient faults (503, reset, short body, stall) are retried within the budget" {
	mkimg "$D/img" 512 4
	publish "$D/img"
	nginx_start
	proxy_start
	for m in "503 3" "reset 3" "short 2" "stall 1 3"; do
		echo "$m" > "$D/mode"
		rm -rf "$D/cache" "$D/out"
		run ruffd cat --cache "$D/cache" --chunk 64K --fetch-timeout 30s "$PURL/snap" "$D/out"
		assert_success
		cmp "$D/img" "$D/out"
		grep -q " ${m%% *}" "$D/proxy.log"
	done
}

@test "remote: faults that cannot recover fail closed with a message naming URL and chunk" {
	mkimg "$D/img" 512 4
	publish "$D/img"
	nginx_start
	proxy_start
	check() {   # check MODE MESSAGE
		echo "$1" > "$D/mode"
		rm -rf "$D/cache" "$D/out"
		run ruffd cat --cache "$D/cache" --chunk 64K --fetch-timeout 2s "$PURL/snap" "$D/out"
		assert_failure 1
		assert_output --partial "$2"
		assert_output --partial "$PURL/snap/$LAYER: chunk "
		assert_file_not_exist "$D/out"
		[ -z "$(ls -A "$D" | grep '^\.out\.tmp')" ]
	}
	check "503" "still missing after"
	check "short" "still missing after"
	check "badrange" "wrong Content-Range"
	check "whole" "answered 200 (the whole object)"
	cp "$D/www/snap/$LAYER" "$D/www/snap/$LAYER.new"
	echo x >> "$D/www/snap/$LAYER.new"
	check "replace 1 $D/www/snap/$LAYER.new" "the object changed"
}

@test "remote: a chunk that cannot be fetched while serving kills Firecracker, naming URL and chunk" {
	mkimg "$D/img" 512 6
	publish "$D/img"
	nginx_start
	proxy_start
	echo 503 > "$D/mode"
	rserve a --dir "$PURL/snap" --chunk 64K --fetch-timeout 2s
	SP=$LASTPID
	run standin a --image "$D/img" --touch random --threads 2
	assert_equal "$status" 137
	wait "$SP" || SRC=$?
	SP=""
	assert_equal "$SRC" 1
	run cat "$D/serve-a.log"
	assert_output --partial "fetching $PURL/snap/$LAYER: chunk "
	assert_output --partial "HTTP 503"
	assert_output --partial "killed Firecracker"
}

@test "remote: a layered snapshot with the parent on the server and the child local round-trips" {
	mkimg "$D/img" 1024 8
	ruffd pack "$D/img" "$D/parent" >/dev/null
	python3 - "$D/img" "$D/diff" "$D/expect" <<'EOF'
import random, sys
img = bytearray(open(sys.argv[1], "rb").read())
d = bytearray(len(img))
rnd = random.Random(3)
for p in rnd.sample(range(len(img) // 4096), 100):
    b = bytearray(rnd.randbytes(4096)); b[0] = 0xee
    d[p * 4096:(p + 1) * 4096] = b
    img[p * 4096:(p + 1) * 4096] = b
open(sys.argv[2], "wb").write(d)
open(sys.argv[3], "wb").write(img)
EOF
	ruffd layer "$D/parent" "$D/diff" "$D/child" >/dev/null
	puuid=$(basename "$(ls "$D"/parent/memfile.*-*)" | sed 's/^memfile\.//')
	mkdir -p "$D/www/parent"
	cp "$D/parent/memfile.$puuid" "$D/www/parent/"
	rm "$D/child/memfile.$puuid"   # the child directory holds its own layer only
	nginx_start
	rserve a --dir "$D/child" --layer "$puuid=$URL/parent/memfile.$puuid" --chunk 64K --prefetch all
	SP=$LASTPID
	run standin a --image "$D/expect" --touch random --threads 2
	assert_success
	assert_output --partial "verified=1"
	wait "$SP"; SP=""
	# the parent's chunks came from the server, the child's bytes from the local file
	[ "$(chunk_lines | grep -c "/parent/memfile.$puuid")" -gt 0 ]
}

@test "remote: --cache-max evicts the least recently used entry no server holds" {
	mkimg "$D/img1" 256 1
	mkimg "$D/img2" 256 2
	ruffd pack "$D/img1" "$D/www/one" >/dev/null
	ruffd pack "$D/img2" "$D/www/two" >/dev/null
	nginx_start
	ruffd cat --cache "$D/cache" --chunk 64K "$URL/one" "$D/o1"
	[ "$(ls "$D/cache" | wc -l)" -eq 1 ]
	first=$(ls "$D/cache")
	ruffd cat --cache "$D/cache" --chunk 64K --cache-max 64K "$URL/two" "$D/o2"
	cmp "$D/img2" "$D/o2"
	# the first entry went; the one just used stays
	[ "$(ls "$D/cache" | wc -l)" -eq 1 ]
	[ "$(ls "$D/cache")" != "$first" ]
	# a held entry is never evicted: a server holds two while cat adds one again
	rserve a --dir "$URL/two" --chunk 64K
	SP=$LASTPID
	ruffd cat --cache "$D/cache" --chunk 64K --cache-max 64K "$URL/one" "$D/o1"
	[ "$(ls "$D/cache" | wc -l)" -eq 2 ]
	run standin a --image "$D/img2" --touch seq
	assert_success
	wait "$SP"; SP=""
}

@test "remote: SIGUSR1 and SIGTERM reach the serve loop while the fetcher thread runs" {
	mkimg "$D/img" 256 12
	publish "$D/img"
	nginx_start
	rserve a --dir "$URL/snap" --chunk 64K --stats "$D/stats.json"
	SP=$LASTPID
	standin a --image "$D/img" --touch none --hold "$D/go" > /dev/null 2>&1 &
	S1=$!
	wait_for grep -q serving "$D/serve-a.log"
	kill -USR1 "$SP"
	wait_file "$D/stats.json"
	kill -0 "$SP"
	kill -TERM "$SP"
	SRC=0
	wait "$SP" || SRC=$?
	SP=""
	assert_equal "$SRC" 1
	run cat "$D/serve-a.log"
	assert_output --partial "stopped by signal 15; killed Firecracker"
	wait "$S1" || true
}

@test "remote: REMOVE racing readers while chunks arrive: dropped pages read zero, the rest exact" {
	mkimg "$D/img" 1024 13
	publish "$D/img"
	nginx_start
	rserve a --dir "$URL/snap" --chunk 64K --prefetch all
	SP=$LASTPID
	run standin a --image "$D/img" --threads 4 --churn 0:262144:300
	assert_success
	assert_output --partial "reads zero"
	wait "$SP"; SP=""
}

@test "remote: hugetlb 2 MiB pages from 4 KiB-block (assembled) and 2 MiB-block remote snapshots" {
	HP_OLD=$(cat /proc/sys/vm/nr_hugepages)
	echo $((HP_OLD + 8)) > /proc/sys/vm/nr_hugepages
	[ "$(cat /proc/sys/vm/nr_hugepages)" -ge $((HP_OLD + 8)) ]
	mkimg "$D/img" 2048 14
	ruffd pack "$D/img" "$D/www/s4k" >/dev/null
	ruffd pack --block-size 2M "$D/img" "$D/www/s2m" >/dev/null
	nginx_start
	rserve a --dir "$URL/s4k" --chunk 64K
	SP=$LASTPID
	run standin a --image "$D/img" --huge
	echo "$output" > "$D/o1"
	wait "$SP" || true; SP=""
	rserve b --dir "$URL/s2m" --chunk 2M --prefetch all
	SP=$LASTPID
	run standin b --image "$D/img" --huge --regions 2 --hole
	echo "$output" > "$D/o2"
	wait "$SP" || true; SP=""
	grep -q "page=2097152" "$D/o1"
	grep -q "verified=1" "$D/o1"
	grep -q "verified=1" "$D/o2"
}

@test "remote: pre-signed URLs: the query string reaches the server untouched and never a message" {
	mkimg "$D/img" 256 15
	publish "$D/img"
	uuid=${LAYER#memfile.}
	nginx_start
	sig='X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=0123abcdS3CR3T'
	run ruffd inspect --cache "$D/cache" --layer "$uuid=$URL/snap/$LAYER?$sig" "$URL/snap/?tok=S3CR3T2" 
	assert_success
	refute_output --partial S3CR3T
	run ruffd cat --cache "$D/cache" --chunk 64K --layer "$uuid=$URL/snap/$LAYER?$sig" "$URL/snap/?tok=S3CR3T2" "$D/out"
	assert_success
	cmp "$D/img" "$D/out"
	# every layer request carried the signature as given; the header its directory's token
	run awk -v l="/snap/$LAYER" '$2 == l {print $8}' "$D/ngx/access.log"
	assert_output --partial "$sig"
	[ "$(printf '%s\n' "$output" | sort -u)" = "$sig" ]
	grep -q "/snap/memfile.header - 200 .* tok=S3CR3T2$" "$D/ngx/access.log"
	# the cache key leaves the query string out: a new signature hits the same entry
	before=$(chunk_lines | wc -l)
	run ruffd cat --cache "$D/cache" --chunk 64K --layer "$uuid=$URL/snap/$LAYER?X-Amz-Signature=other" "$URL/snap" "$D/out2"
	assert_success
	assert_equal "$(chunk_lines | wc -l)" "$before"
	# and a failure names the URL without it
	rm "$D/www/snap/$LAYER"
	run ruffd verify --cache "$D/cache" --layer "$uuid=$URL/snap/$LAYER?$sig" "$URL/snap"
	assert_failure 1
	assert_output --partial "$URL/snap/$LAYER?..."
	refute_output --partial S3CR3T
}
