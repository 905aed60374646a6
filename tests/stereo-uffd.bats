# stereo-uffd.bats - the snapshot page server against a Firecracker stand-in with a real
# userfaultfd, and the snapshot tools (pack, layer, merge, inspect, verify, cat).
load helpers

setup() {
	D=$BATS_TEST_TMPDIR
	SP=""
	HP_OLD=""
}

teardown() {
	touch "$D/go"   # releases a stand-in held with --hold
	if [ -n "$SP" ]; then kill -9 "$SP" 2>/dev/null || true; wait "$SP" 2>/dev/null || true; fi
	if [ -n "$HP_OLD" ]; then echo "$HP_OLD" > /proc/sys/vm/nr_hugepages; fi
	if [ -f "$D/serve.log" ]; then asan_clean "$D/serve.log"; fi
}

# mkimg KIND FILE [PAGES [SEED]]: sparse (about 30% non-zero pages in runs of 1-16), dense
# (every page non-zero), zero (all zero). 4 KiB pages, 1024 by default.
mkimg() {
	python3 - "$@" <<'EOF'
import random, sys
kind, path = sys.argv[1], sys.argv[2]
pages = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
rnd = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 7)
img = bytearray(pages * 4096)
i = 0
while i < pages:
    n = rnd.randint(1, 16)
    if kind == "dense" or (kind == "sparse" and rnd.random() < 0.3):
        for p in range(i, min(i + n, pages)):
            img[p * 4096:(p + 1) * 4096] = rnd.randbytes(4096)
            img[p * 4096] = 1 + p % 255        # never an all-zero page
    i += n
open(path, "wb").write(img)
EOF
}

# mkdiff BASE DIFF EXPECTED PAGES SEED: a Firecracker diff file (only PAGES random dirty pages
# non-zero) and the image expected after applying it to BASE.
mkdiff() {
	python3 - "$@" <<'EOF'
import random, sys
base, diff, exp, n, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rnd = random.Random(seed)
img = bytearray(open(base, "rb").read())
d = bytearray(len(img))
for p in rnd.sample(range(len(img) // 4096), n):
    b = bytearray(rnd.randbytes(4096)); b[0] = 0xee
    d[p * 4096:(p + 1) * 4096] = b
    img[p * 4096:(p + 1) * 4096] = b
open(diff, "wb").write(d)
open(exp, "wb").write(img)
EOF
}

# mkhdr DIR VERSION SIZE MAPPINGS: write DIR/memfile.header; MAPPINGS is "off:len:build:store,..."
# with build "z" (zero-fill) or "a" (a fixed UUID).
mkhdr() {
	mkdir -p "$1"
	python3 - "$@" <<'EOF'
import struct, sys
d, ver, size, maps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
A = bytes.fromhex("11111111222233334444555555555555")
out = struct.pack("<QQQQ", ver, 4096, size, 0) + A + A
for m in filter(None, maps.split(",")):
    off, ln, b, st = m.split(":")
    out += struct.pack("<QQ", int(off), int(ln)) + (bytes(16) if b == "z" else A) + struct.pack("<Q", int(st))
open(d + "/memfile.header", "wb").write(out)
EOF
}

serve_start() {
	rm -f "$D/ready" "$D/s.sock"
	stereo-uffd serve --socket "$D/s.sock" --accept-timeout 30s --ready-fd 3 "$@" \
		3>"$D/ready" 2>"$D/serve.log" &
	SP=$!
	wait_file "$D/ready" listening
}

# serve_wait: the server's exit status in SRC
serve_wait() {
	SRC=0
	wait "$SP" || SRC=$?
	SP=""
}

standin() {
	"$STEREO_T/fc_standin" --socket "$D/s.sock" "$@"
}

# a stand-in that must be killed by the server: status 137 (SIGKILL), server exit 1 + reason
expect_killed() {
	local reason=$1
	shift
	run standin "$@"
	assert_equal "$status" 137
	serve_wait
	assert_equal "$SRC" 1
	run cat "$D/serve.log"
	assert_output --partial "$reason"
	assert_output --partial "killed Firecracker"
}

prefetch_done() {
	kill -USR1 "$SP"
	grep -q '"prefetch_done":true' "$D/stats.json"
}

stat_of() {   # stat_of NAME: a counter from the --stats file
	python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$D/stats.json" "$1"
}

@test "pack then cat reproduces a sparse image byte for byte and elides zero blocks" {
	mkimg sparse "$D/img"
	run stereo-uffd pack "$D/img" "$D/snap"
	assert_success
	assert_output --partial "packed"
	run stereo-uffd cat "$D/snap" "$D/out"
	assert_success
	cmp "$D/img" "$D/out"
	layer=$(ls "$D"/snap/memfile.*-*)
	[ "$(stat -c %s "$layer")" -lt "$(stat -c %s "$D/img")" ]
	# only the header and one layer: no temporary files left behind
	assert_equal "$(ls -A "$D/snap" | wc -l)" 2
}

@test "serve round trip: every page of a sparse image reads back exactly" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap" --stats "$D/stats.json"
	run standin --image "$D/img"
	assert_success
	assert_output --partial "ok 1024 pages verified=1"
	serve_wait
	assert_equal "$SRC" 0
	[ "$(stat_of pages_zeroed)" -gt 0 ]
	[ "$(stat_of pages_copied)" -gt 0 ]
}

@test "serve round trip: a dense image (no zero pages) reads back exactly" {
	mkimg dense "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap" --stats "$D/stats.json"
	run standin --image "$D/img" --touch random --threads 3
	assert_success
	serve_wait
	assert_equal "$SRC" 0
	assert_equal "$(stat_of pages_zeroed)" 0
	assert_equal "$(stat_of pages_copied)" 1024
}

@test "serve round trip: a 2 MiB-block snapshot serves 4 KiB pages, with prefetch racing faults" {
	mkimg sparse "$D/img"
	stereo-uffd pack --block-size 2M "$D/img" "$D/snap"
	run stereo-uffd inspect --json "$D/snap"
	assert_output --partial '"block_size":2097152'
	serve_start --dir "$D/snap" --prefetch all --fault-around 16K
	run standin --image "$D/img" --touch random --threads 2
	assert_success
	serve_wait
	assert_equal "$SRC" 0
}

@test "serve round trip: an all-zero image has no layer file and is served by ZEROPAGE only" {
	mkimg zero "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	assert_equal "$(ls -A "$D/snap")" "memfile.header"
	serve_start --dir "$D/snap" --stats "$D/stats.json"
	run standin --image "$D/img"
	assert_success
	serve_wait
	assert_equal "$SRC" 0
	assert_equal "$(stat_of pages_copied)" 0
	assert_equal "$(stat_of pages_zeroed)" 1024
}

@test "serve with --header and explicit --layer UUID=FILE (no snapshot directory)" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	layer=$(ls "$D"/snap/memfile.*-*)
	uuid=${layer##*/memfile.}
	mv "$layer" "$D/elsewhere.bin"
	serve_start --header "$D/snap/memfile.header" --layer "$uuid=$D/elsewhere.bin" \
		--socket-mode 660 --socket-group 0
	[ "$(stat -c %a "$D/s.sock")" = 660 ]
	run standin --image "$D/img"
	assert_success
	serve_wait
	assert_equal "$SRC" 0
	run stereo-uffd serve --socket "$D/s2.sock" --header "$D/snap/memfile.header" --layer "11111111-2222-3333-4444-55555555555x=f"
	assert_failure 1
	assert_output --partial "is not a UUID"
}

@test "several regions with holes between them in host memory are all served" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	run standin --image "$D/img" --regions 3 --hole --touch random --threads 4
	assert_success
	assert_output --partial "verified=1"
	serve_wait
	assert_equal "$SRC" 0
}

@test "generations: layer twice, merge, and serving either gives identical bytes" {
	mkimg sparse "$D/img0"
	mkdiff "$D/img0" "$D/diff1" "$D/img1" 100 1
	mkdiff "$D/img1" "$D/diff2" "$D/img2" 60 2
	stereo-uffd pack "$D/img0" "$D/g0"
	run stereo-uffd layer "$D/g0" "$D/diff1" "$D/g1"
	assert_success
	assert_output --partial "generation 1"
	run stereo-uffd layer "$D/g1" "$D/diff2" "$D/g2"
	assert_success
	assert_output --partial "generation 2"
	stereo-uffd merge "$D/g2" "$D/m"
	stereo-uffd cat "$D/g1" "$D/out1"
	cmp "$D/img1" "$D/out1"
	stereo-uffd cat "$D/g2" "$D/out2"
	cmp "$D/img2" "$D/out2"
	stereo-uffd cat "$D/m" "$D/outm"
	cmp "$D/img2" "$D/outm"
	run stereo-uffd inspect --json "$D/m"
	assert_output --partial '"generation":0'
	for snap in g2 m; do
		serve_start --dir "$D/$snap"
		run standin --image "$D/img2" --touch random --threads 2
		assert_success
		serve_wait
		assert_equal "$SRC" 0
	done
}

@test "layer of a sparse diff file: a page dirtied to zero reads zero, holes keep the parent" {
	python3 -c 'import os,sys; open(sys.argv[1],"wb").write(os.urandom(4096*16))' "$D/img0"
	stereo-uffd pack "$D/img0" "$D/g0"
	# Firecracker's diff file: sparse, dirty pages are data (page 3 dirtied to zeros, page 7 to 0xaa)
	truncate -s $((4096 * 16)) "$D/diff"
	dd if=/dev/zero of="$D/diff" bs=4096 seek=3 count=1 conv=notrunc 2>/dev/null
	python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(4096*7); f.write(b"\xaa"*4096)' "$D/diff"
	run stereo-uffd layer "$D/g0" "$D/diff" "$D/g1"
	assert_success
	stereo-uffd cat "$D/g1" "$D/out"
	python3 - "$D/img0" "$D/out" <<'EOF'
import sys
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
for p in range(16):
    got = b[p * 4096:(p + 1) * 4096]
    want = bytes(4096) if p == 3 else b"\xaa" * 4096 if p == 7 else a[p * 4096:(p + 1) * 4096]
    assert got == want, "page %d differs" % p
EOF
}

@test "layer and merge in place (OUTDIR = SNAPDIR) keep the bytes" {
	mkimg sparse "$D/img0"
	mkdiff "$D/img0" "$D/diff1" "$D/img1" 50 4
	stereo-uffd pack "$D/img0" "$D/s"
	stereo-uffd layer "$D/s" "$D/diff1" "$D/s"
	stereo-uffd cat "$D/s" "$D/out"
	cmp "$D/img1" "$D/out"
	stereo-uffd merge "$D/s" "$D/s"
	stereo-uffd cat "$D/s" "$D/out"
	cmp "$D/img1" "$D/out"
	run stereo-uffd verify "$D/s"
	assert_success
	assert_output --partial "generation 0"
}

@test "Wrenn layout: a version-1 header with a plain memfile is read and served" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/s"
	mv "$D"/s/memfile.*-* "$D/s/memfile"
	printf '\001\000\000\000\000\000\000\000' | dd of="$D/s/memfile.header" bs=1 conv=notrunc 2>/dev/null
	run stereo-uffd inspect --json "$D/s"
	assert_success
	assert_output --partial '"version":1'
	serve_start --dir "$D/s"
	run standin --image "$D/img" --version 1.6
	assert_success
	serve_wait
	assert_equal "$SRC" 0
}

@test "inspect reports size, generation, layers and the bytes each serves" {
	mkimg sparse "$D/img0"
	mkdiff "$D/img0" "$D/diff1" "$D/img1" 10 3
	stereo-uffd pack "$D/img0" "$D/g0"
	stereo-uffd layer "$D/g0" "$D/diff1" "$D/g1"
	run stereo-uffd inspect "$D/g1"
	assert_success
	assert_output --partial "generation 1"
	assert_output --partial "size 4194304"
	run stereo-uffd inspect --json "$D/g1"
	assert_success
	echo "$output" | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["generation"] == 1 and j["size"] == 4194304 and len(j["layers"]) == 2, j
assert sum(l["served_bytes"] for l in j["layers"]) + j["zero_bytes"] == j["size"], j
assert 10 * 4096 in [l["served_bytes"] for l in j["layers"]], j'
}

@test "REMOVE (MADV_DONTNEED) ranges read back as zeros, the rest keeps snapshot data" {
	mkimg dense "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap" --stats "$D/stats.json"
	run standin --image "$D/img" --version 1.12 --dontneed 65536:131072 --dontneed 0:4096
	assert_success
	assert_output --partial "dontneed 65536:131072 reads zero"
	assert_output --partial "dontneed 0:4096 reads zero"
	serve_wait
	assert_equal "$SRC" 0
	assert_equal "$(stat_of removes)" 2
}

@test "REMOVE during prefetch-all still reads zeros" {
	mkimg dense "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap" --prefetch all
	run standin --image "$D/img" --balloon --version 1.10 --dontneed 8192:1048576
	assert_success
	assert_output --partial "reads zero"
	serve_wait
	assert_equal "$SRC" 0
}

@test "REMOVE racing readers: EAGAIN is retried, and no read after a drop sees snapshot data" {
	mkimg dense "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap" --stats "$D/stats.json"
	# 4 readers x 1000 drops: a COPY meets a REMOVE in flight hundreds of times per run here
	run standin --image "$D/img" --threads 4 --churn 0:262144:1000
	assert_success
	assert_output --partial "churn 0:262144 x1000 reads zero"
	serve_wait
	assert_equal "$SRC" 0
	assert_equal "$(stat_of removes)" 1000
	[ "$(stat_of eagain)" -gt 0 ]
}

@test "the peer exiting in the middle of prefetch is a clean exit" {
	mkimg sparse "$D/img" 8192
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap" --prefetch all
	run standin --image "$D/img" --touch none --no-verify --version 1.10
	assert_success
	serve_wait
	assert_equal "$SRC" 0
	run cat "$D/serve.log"
	refute_output --partial "killed"
}

@test "handshake: the Firecracker 1.6 field set (no page size) is served" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	run standin --image "$D/img" --version 1.6
	assert_success
	serve_wait
	assert_equal "$SRC" 0
}

@test "handshake: the Firecracker 1.10 field set (page_size_kib in bytes) is served" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	run standin --image "$D/img" --version 1.10
	assert_success
	serve_wait
	assert_equal "$SRC" 0
}

@test "handshake: the Firecracker 1.12 field set is served and the open socket's close ends the server" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	run standin --image "$D/img" --version 1.12
	assert_success
	serve_wait
	assert_equal "$SRC" 0
}

@test "handshake: unknown extra fields are ignored" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	run standin --image "$D/img" --variant extra --regions 2
	assert_success
	serve_wait
	assert_equal "$SRC" 0
}

@test "handshake: a message without an fd kills the peer and names the cause" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	expect_killed "expected exactly one uffd in SCM_RIGHTS, got 0" --image "$D/img" --variant nofd
}

@test "handshake: two fds kill the peer and name the cause" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	expect_killed "expected exactly one uffd in SCM_RIGHTS, got 2" --image "$D/img" --variant twofds
}

@test "handshake: an fd that is not a userfaultfd kills the peer" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	expect_killed "the fd received is not a userfaultfd (/dev/null)" --image "$D/img" --variant notuffd
}

@test "handshake: garbage JSON kills the peer and names the cause" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	expect_killed "region list is not JSON" --image "$D/img" --variant garbage
}

@test "handshake: a region size that is not page-aligned kills the peer and names the region" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	expect_killed "region 0: base" --image "$D/img" --variant unaligned --version 1.6
	run cat "$D/serve.log"
	assert_output --partial "size 4194404"
}

@test "handshake: a region beyond the snapshot's memory size kills the peer" {
	mkimg sparse "$D/img"
	mkimg sparse "$D/small" 512
	stereo-uffd pack "$D/small" "$D/snap"
	serve_start --dir "$D/snap"
	expect_killed "lies beyond the snapshot's 2097152 bytes" --image "$D/img"
}

@test "a fault outside every region kills the peer with a clear error" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	expect_killed "outside every region" --image "$D/img" --outside
}

@test "a truncated layer is refused at start, naming the file, before listening" {
	mkimg dense "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	layer=$(ls "$D"/snap/memfile.*-*)
	truncate -s 65536 "$layer"
	run stereo-uffd serve --socket "$D/s.sock" --dir "$D/snap" --accept-timeout 5s
	assert_failure 1
	assert_output --partial "is truncated"
	assert_output --partial "$layer"
	assert_file_not_exist "$D/s.sock"
}

@test "a layer truncated while serving fails closed: peer killed, no hang" {
	mkimg dense "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	layer=$(ls "$D"/snap/memfile.*-*)
	serve_start --dir "$D/snap"
	truncate -s 65536 "$layer"
	expect_killed "is unreadable (truncated?)" --image "$D/img"
}

@test "malformed header: too short" {
	mkdir -p "$D/h"
	head -c 40 /dev/zero > "$D/h/memfile.header"
	run stereo-uffd verify "$D/h"
	assert_failure 1
	assert_output --partial "memfile.header: short header: 40 bytes"
}

@test "malformed header: unsorted mappings" {
	mkhdr "$D/h" 3 12288 "0:4096:z:0,8192:4096:z:0,4096:4096:z:0"
	run stereo-uffd verify "$D/h"
	assert_failure 1
	assert_output --partial "mapping 2 (offset 4096) is not sorted"
}

@test "malformed header: overlapping mappings" {
	mkhdr "$D/h" 3 12288 "0:8192:z:0,4096:8192:z:0"
	run stereo-uffd verify "$D/h"
	assert_failure 1
	assert_output --partial "mapping 1 (offset 4096) overlaps the previous one, which ends at 8192"
}

@test "malformed header: gaps inside and at the end" {
	mkhdr "$D/h" 3 12288 "0:4096:z:0,8192:4096:z:0"
	run stereo-uffd verify "$D/h"
	assert_failure 1
	assert_output --partial "gap before mapping 1: bytes 4096..8192"
	mkhdr "$D/h" 3 12288 "0:4096:z:0"
	run stereo-uffd verify "$D/h"
	assert_failure 1
	assert_output --partial "gap at the end"
}

@test "malformed header: unknown version" {
	mkhdr "$D/h" 7 4096 "0:4096:z:0"
	run stereo-uffd verify "$D/h"
	assert_failure 1
	assert_output --partial "unknown header version 7"
	for v in 1 2 3; do
		mkhdr "$D/h" $v 4096 "0:4096:z:0"
		run stereo-uffd verify "$D/h"
		assert_success
	done
}

@test "malformed header: a missing layer is named, and serve refuses to start" {
	mkhdr "$D/h" 3 8192 "0:4096:a:0,4096:4096:z:0"
	run stereo-uffd verify "$D/h"
	assert_failure 1
	assert_output --partial "missing layer 11111111-2222-3333-4444-555555555555"
	run stereo-uffd serve --socket "$D/s.sock" --dir "$D/h"
	assert_failure 1
	assert_output --partial "missing layer"
	assert_file_not_exist "$D/s.sock"
}

@test "failed merge and cat leave no output and no temporary files" {
	mkhdr "$D/h" 3 8192 "0:4096:a:0,4096:4096:z:0"
	run stereo-uffd merge "$D/h" "$D/out"
	assert_failure 1
	assert_equal "$(ls -A "$D/out" 2>/dev/null | wc -l)" 0
	run stereo-uffd cat "$D/h" "$D/img.out"
	assert_failure 1
	assert_equal "$(ls -A "$D" | grep -c img.out)" 0
	head -c 5000 /dev/urandom > "$D/odd"
	run stereo-uffd pack "$D/odd" "$D/p"
	assert_failure 1
	assert_output --partial "not a positive multiple of the block size"
	assert_equal "$(ls -A "$D/p" 2>/dev/null | wc -l)" 0
}

@test "hugetlb: 2 MiB pages are served (from 4K and 2M blocks) and REMOVE reads zero" {
	HP_OLD=$(cat /proc/sys/vm/nr_hugepages)
	echo $((HP_OLD + 8)) > /proc/sys/vm/nr_hugepages
	[ "$(cat /proc/sys/vm/nr_hugepages)" -ge $((HP_OLD + 8)) ]
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/s4k"
	stereo-uffd pack --block-size 2M "$D/img" "$D/s2m"
	serve_start --dir "$D/s4k"
	run standin --image "$D/img" --huge
	assert_success
	assert_output --partial "page=2097152"
	serve_wait
	assert_equal "$SRC" 0
	serve_start --dir "$D/s2m" --stats "$D/stats.json"
	run standin --image "$D/img" --huge --regions 2 --hole --dontneed 2097152:2097152
	assert_success
	assert_output --partial "reads zero"
	serve_wait
	assert_equal "$SRC" 0
	assert_equal "$(stat_of removes)" 1
}

@test "hugetlb: a layer truncated while serving huge pages assembled from 4K blocks fails closed" {
	HP_OLD=$(cat /proc/sys/vm/nr_hugepages)
	echo $((HP_OLD + 4)) > /proc/sys/vm/nr_hugepages
	[ "$(cat /proc/sys/vm/nr_hugepages)" -ge $((HP_OLD + 4)) ]
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	layer=$(ls "$D"/snap/memfile.*-*)
	serve_start --dir "$D/snap"
	truncate -s 4096 "$layer"
	expect_killed "is truncated" --image "$D/img" --huge
}

@test "prefetch all installs every page in the background" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap" --prefetch all --stats "$D/stats.json"
	standin --image "$D/img" --touch none --no-verify --hold "$D/go" > "$D/standin.out" &
	local st=$!
	wait_for prefetch_done
	# everything is resident: touching and checking every page needs no server work
	touch "$D/go"
	wait "$st"
	serve_wait
	assert_equal "$SRC" 0
	assert_equal "$(stat_of prefetch_done)" True
	assert_equal "$(stat_of faults)" 0
	assert_equal "$SRC" 0
	assert_equal "$(stat_of prefetch_done)" True
	[ $(( $(stat_of pages_copied) + $(stat_of pages_zeroed) )) -eq 1024 ]
}

@test "a recorded fault trace is replayed first by --prefetch trace:FILE" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap" --record-trace "$D/trace"
	run standin --image "$D/img" --touch random
	assert_success
	serve_wait
	assert_equal "$SRC" 0
	assert_file_exist "$D/trace"
	# a held clone that touches nothing: prefetch alone decides the order
	serve_start --dir "$D/snap" --prefetch "trace:$D/trace" --stats "$D/stats.json"
	standin --image "$D/img" --touch none --no-verify --hold "$D/go" > "$D/standin.out" &
	local st=$!
	wait_for prefetch_done
	touch "$D/go"
	wait "$st"
	serve_wait
	assert_equal "$SRC" 0
	[ "$(stat_of trace_pages)" -gt 0 ]
	# the first prefetch runs began at trace entries, in the trace's order, from its first
	python3 - "$D/trace" "$D/stats.json" <<'EOF2'
import json, struct, sys
t = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", t[16:24])[0]
trace = list(struct.unpack("<%dQ" % n, t[24:24 + 8 * n]))
first = json.load(open(sys.argv[2]))["clones"][0]["prefetch_first"]
assert len(first) == 16 and n >= 16, (n, first)
assert first[0] == trace[0] != 0, (first[:3], trace[:3])
idx = [trace.index(o) for o in first]   # ValueError: a run that is not a trace entry
assert idx == sorted(idx) and len(set(idx)) == len(idx), idx
EOF2
	rm -f "$D/go"
	# and replayed while the clone faults, every byte still right
	serve_start --dir "$D/snap" --prefetch "trace:$D/trace" --stats "$D/stats.json"
	run standin --image "$D/img"
	assert_success
	serve_wait
	assert_equal "$SRC" 0
	echo garbage > "$D/bad"
	run stereo-uffd serve --socket "$D/s2.sock" --dir "$D/snap" --prefetch "trace:$D/bad"
	assert_failure 1
	assert_output --partial "not a stereo-uffd trace file"
}

@test "SIGUSR1 prints the counters and writes the stats file while serving" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap" --stats "$D/stats.json"
	standin --image "$D/img" --hold "$D/go" > "$D/standin.out" &
	local st=$!
	wait_file "$D/standin.out" "verified=1"
	kill -USR1 "$SP"
	wait_file "$D/stats.json"
	wait_file "$D/serve.log" "stats faults="
	[ "$(stat_of faults)" -gt 0 ]
	touch "$D/go"
	wait "$st"
	serve_wait
	assert_equal "$SRC" 0
}

@test "no connection within --accept-timeout exits 3 and removes the socket" {
	mkimg zero "$D/img" 16
	stereo-uffd pack "$D/img" "$D/snap"
	run stereo-uffd serve --socket "$D/s.sock" --dir "$D/snap" --accept-timeout 200ms
	assert_failure 3
	assert_output --partial "no connection from Firecracker within 200 ms"
	assert_file_not_exist "$D/s.sock"
}

@test "COMMAND --help prints the usage and exits 0" {
	run stereo-uffd serve --help
	assert_success
	assert_output --partial "serve --socket PATH --header FILE"
	assert_output --partial "pack [--block-size 4K|2M] MEMFILE OUTDIR"
}

@test "SIGTERM while waiting for Firecracker exits 1 at once and removes the socket" {
	mkimg zero "$D/img" 16
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	kill -TERM "$SP"
	serve_wait
	assert_equal "$SRC" 1
	run cat "$D/serve.log"
	assert_output --partial "stopped by signal 15 while waiting for Firecracker"
	assert_file_not_exist "$D/s.sock"
}

@test "bad command lines exit 2" {
	run stereo-uffd
	assert_failure 2
	run stereo-uffd frobnicate
	assert_failure 2
	run stereo-uffd serve --dir /nonexistent
	assert_failure 2
	run stereo-uffd serve --socket x --dir y --prefetch sometimes
	assert_failure 2
	run stereo-uffd serve --socket x --dir y --fault-around 3K
	assert_failure 2
	run stereo-uffd pack --block-size 8K a b
	assert_failure 2
	run stereo-uffd serve --socket x --dir y --clones -1
	assert_failure 2
	run stereo-uffd serve --socket x --dir y --threads 0
	assert_failure 2
	run stereo-uffd verify --frobnicate y
	assert_failure 2
}

# ---- many clones through one server ---------------------------------------------------------

@test "8 clones restore one snapshot at once (some with REMOVE racing readers); one faulting outside its regions is killed, the rest and a 9th are served" {
	mkimg dense "$D/img" 2048
	stereo-uffd pack "$D/img" "$D/snap"
	# 4 loops: the main thread's and 3 workers, whatever the CPU count
	serve_start --dir "$D/snap" --clones 9 --threads 4 --stats "$D/stats.json"
	local pids=() i bad
	for i in 1 2 3 4 5 6 7; do
		if [ $((i % 2)) = 1 ]; then
			standin --image "$D/img" --threads 2 --churn $((i * 65536)):262144:100 > "$D/c$i.out" 2>&1 &
		else
			standin --image "$D/img" --touch random --threads 2 > "$D/c$i.out" 2>&1 &
		fi
		pids+=($!)
	done
	"$STEREO_T/fc_standin" --socket "$D/s.sock" --image "$D/img" --outside > "$D/bad.out" 2>&1 &
	bad=$!
	for i in 0 1 2 3 4 5 6; do
		wait "${pids[$i]}" || { cat "$D/c$((i + 1)).out"; false; }
		grep -q "verified=1" "$D/c$((i + 1)).out"
	done
	grep -q "reads zero" "$D/c1.out"
	local bst=0
	wait "$bad" || bst=$?
	assert_equal "$bst" 137
	# the server goes on: a 9th clone connects afterwards and is served
	run standin --image "$D/img" --touch random --threads 2
	assert_success
	assert_output --partial "verified=1"
	serve_wait
	assert_equal "$SRC" 1   # one clone was killed
	run cat "$D/serve.log"
	assert_output --partial "outside every region Firecracker sent; killed Firecracker (pid $bad)"
	assert_equal "$(grep -c 'killed Firecracker' "$D/serve.log")" 1
	python3 - "$D/stats.json" "$bad" <<'EOF2'
import json, sys
j = json.load(open(sys.argv[1]))
cl = j["clones"]
assert j["clones_served"] == 9 and len(cl) == 9, j["clones_served"]
killed = [c for c in cl if c["state"] == "killed"]
assert len(killed) == 1 and killed[0]["pid"] == int(sys.argv[2]), killed
assert sum(c["faults"] for c in cl) == j["faults"], "totals are the sum of the clones"
assert all(c["pages"] == 2048 for c in cl)
assert sum(c["removes"] for c in cl) == j["removes"] >= 400
EOF2
}

@test "--clones 2: a third Firecracker is killed at once and logged, the two are served" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap" --clones 2 --threads 1 --stats "$D/stats.json"
	standin --image "$D/img" --hold "$D/go" > "$D/c1.out" &
	local a=$!
	standin --image "$D/img" --touch random --hold "$D/go" > "$D/c2.out" &
	local b=$!
	wait_file "$D/c1.out" "verified=1"
	wait_file "$D/c2.out" "verified=1"
	run standin --image "$D/img"
	assert_equal "$status" 137
	touch "$D/go"
	wait "$a"
	wait "$b"
	serve_wait
	assert_equal "$SRC" 1
	run cat "$D/serve.log"
	assert_output --partial "the clone limit (--clones) is reached (2 served); killed Firecracker (pid"
	assert_equal "$(stat_of clones_served)" 2
}

all_prefetched() {   # all_prefetched N: N clones being served, every one prefetched
	kill -USR1 "$SP"
	python3 - "$D/stats.json" "$1" <<'EOF2'
import json, sys
j = json.load(open(sys.argv[1]))
cl = [c for c in j["clones"] if c["state"] == "serving"]
sys.exit(not (len(cl) == int(sys.argv[2]) and all(c["prefetch_done"] and c["prefetch_pages"] == c["pages"] for c in cl)))
EOF2
}

@test "--prefetch all with clones on several loops: every clone is prefetched without a fault" {
	mkimg sparse "$D/img" 2048
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap" --clones 3 --threads 2 --prefetch all --stats "$D/stats.json"
	local sts=() i
	for i in 1 2 3; do
		standin --image "$D/img" --touch none --no-verify --hold "$D/go" > "$D/c$i.out" &
		sts+=($!)
	done
	wait_for all_prefetched 3
	touch "$D/go"
	for i in 0 1 2; do wait "${sts[$i]}"; done
	serve_wait
	assert_equal "$SRC" 0
	assert_equal "$(stat_of faults)" 0
	assert_equal "$(stat_of prefetch_pages)" 6144
}

@test "with --clones 0 the server keeps serving until SIGTERM, which kills only the clones still served" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap" --clones 0 --stats "$D/stats.json"
	run standin --image "$D/img"
	assert_success
	run standin --image "$D/img" --version 1.10
	assert_success
	"$STEREO_T/fc_standin" --socket "$D/s.sock" --image "$D/img" --hold "$D/go" > "$D/c3.out" &
	local c=$!
	wait_file "$D/c3.out" "verified=1"
	kill -TERM "$SP"
	local cst=0
	wait "$c" || cst=$?
	assert_equal "$cst" 137
	serve_wait
	assert_equal "$SRC" 1
	run cat "$D/serve.log"
	assert_output --partial "clone 3: stopped by signal 15; killed Firecracker (pid $c)"
	assert_equal "$(grep -c 'killed Firecracker' "$D/serve.log")" 1
	assert_equal "$(stat_of clones_served)" 3
}

# ---- edges ----------------------------------------------------------------------------------

@test "a FIFO in place of memfile.header or a layer is refused at once, never waited on" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	cp -r "$D/snap" "$D/h"
	rm "$D/h/memfile.header"
	mkfifo "$D/h/memfile.header"
	layer=$(ls "$D"/snap/memfile.*-*)
	rm "$layer"
	mkfifo "$layer"
	for dir in "$D/h" "$D/snap"; do
		run timeout 20 stereo-uffd verify "$dir"
		assert_failure 1
		assert_output --partial "is not a regular file"
		run timeout 20 stereo-uffd inspect "$dir"
		assert_failure 1
		assert_output --partial "is not a regular file"
		run timeout 20 stereo-uffd cat "$dir" "$D/out"
		assert_failure 1
		assert_output --partial "is not a regular file"
		run timeout 20 stereo-uffd serve --socket "$D/s.sock" --dir "$dir" --accept-timeout 1s
		assert_failure 1
		assert_output --partial "is not a regular file"
	done
	run timeout 20 stereo-uffd serve --socket "$D/s.sock" --header "$D/h/memfile.header" --accept-timeout 1s
	assert_failure 1
	assert_output --partial "is not a regular file"
}

@test "--socket: a socket another server accepts on is refused (in use), a stale one is replaced" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	run stereo-uffd serve --socket "$D/s.sock" --dir "$D/snap" --accept-timeout 1s
	assert_failure 1
	assert_output --partial "is in use"
	# the first server still has its socket
	run standin --image "$D/img"
	assert_success
	serve_wait
	assert_equal "$SRC" 0
	# a stale socket (bound, nobody listening) is taken over
	python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$D/s.sock"
	[ -S "$D/s.sock" ]
	stereo-uffd serve --socket "$D/s.sock" --dir "$D/snap" --accept-timeout 30s --ready-fd 3 \
		3>"$D/ready" 2>"$D/serve.log" &
	SP=$!
	wait_file "$D/ready" listening
	run standin --image "$D/img"
	assert_success
	serve_wait
	assert_equal "$SRC" 0
	assert_file_not_exist "$D/s.sock"
}

@test "--socket: at exit the server removes only the socket it bound, not one that replaced it" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	mv "$D/s.sock" "$D/ours.sock"
	python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$D/s.sock"
	run "$STEREO_T/fc_standin" --socket "$D/ours.sock" --image "$D/img"
	assert_success
	serve_wait
	assert_equal "$SRC" 0
	[ -S "$D/s.sock" ]
}

@test "SIGTERM arriving together with Firecracker's own exit is a clean exit" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --dir "$D/snap"
	standin --image "$D/img" --hold "$D/go" > "$D/standin.out" &
	local st=$!
	wait_file "$D/standin.out" "verified=1"
	# the server sees both at once: Firecracker gone and the signal
	kill -STOP "$SP"
	touch "$D/go"
	wait "$st"
	kill -TERM "$SP"
	kill -CONT "$SP"
	serve_wait
	assert_equal "$SRC" 0
	run cat "$D/serve.log"
	refute_output --partial "killed Firecracker"
}

@test "--header FILE alone takes the layers from the header's directory" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	serve_start --header "$D/snap/memfile.header"
	run standin --image "$D/img"
	assert_success
	serve_wait
	assert_equal "$SRC" 0
}

@test "verify, inspect and cat take --layer UUID=FILE for a layer stored elsewhere" {
	mkimg sparse "$D/img0"
	mkdiff "$D/img0" "$D/diff1" "$D/img1" 50 5
	stereo-uffd pack "$D/img0" "$D/g0"
	stereo-uffd layer "$D/g0" "$D/diff1" "$D/g1"
	base=$(ls "$D"/g0/memfile.*-*)
	uuid=${base##*/memfile.}
	mv "$D/g1/memfile.$uuid" "$D/base.layer"
	run stereo-uffd verify "$D/g1"
	assert_failure 1
	assert_output --partial "nor a --layer for it"
	run stereo-uffd verify --layer "$uuid=$D/base.layer" "$D/g1"
	assert_success
	run stereo-uffd inspect --json --layer "$uuid=$D/base.layer" "$D/g1"
	assert_success
	assert_output --partial "$D/base.layer"
	run stereo-uffd cat --layer "$uuid=$D/base.layer" "$D/g1" "$D/out"
	assert_success
	cmp "$D/img1" "$D/out"
}

@test "a layer found through --dir that is a symlink is refused; an explicit --layer may name any file" {
	mkimg sparse "$D/img"
	stereo-uffd pack "$D/img" "$D/snap"
	layer=$(ls "$D"/snap/memfile.*-*)
	uuid=${layer##*/memfile.}
	# a crafted snapshot directory pointing a layer at a host file
	mv "$layer" "$D/outside.bin"
	ln -s "$D/outside.bin" "$layer"
	run stereo-uffd verify "$D/snap"
	assert_failure 1
	assert_output --partial "symlink"
	run stereo-uffd cat "$D/snap" "$D/out"
	assert_failure 1
	run stereo-uffd serve --socket "$D/s.sock" --dir "$D/snap" --accept-timeout 1s
	assert_failure 1
	assert_output --partial "symlink"
	assert_file_not_exist "$D/s.sock"
	# the operator's own choice
	run stereo-uffd verify --layer "$uuid=$D/outside.bin" "$D/snap"
	assert_success
	serve_start --dir "$D/snap" --layer "$uuid=$D/outside.bin"
	run standin --image "$D/img"
	assert_success
	serve_wait
	assert_equal "$SRC" 0
}

@test "no memory for a clone's page state at its handshake kills that clone only; the server serves the next" {
	[ "$STEREO_SUITE" != asan ] || skip "RLIMIT_AS cannot be lowered under AddressSanitizer"
	# 64 GiB of zero-fill: a clone that maps it all needs 2 x 2 MiB of bitmaps
	mkhdr "$D/snap" 3 $((64 << 30)) "0:$((64 << 30)):z:0"
	truncate -s $((64 << 30)) "$D/big.img"
	truncate -s $((4 << 20)) "$D/small.img"
	serve_start --dir "$D/snap" --clones 2
	# from here on the server cannot grow its address space by more than 1 MiB
	local vm
	vm=$(awk '/^VmSize:/ { print $2 }' "/proc/$SP/status")
	prlimit --pid "$SP" --as=$(((vm + 1024) * 1024))
	"$STEREO_T/fc_standin" --socket "$D/s.sock" --image "$D/big.img" --touch none --no-verify \
		--hold "$D/go" > "$D/big.out" 2>&1 &
	local big=$! bst=0
	wait "$big" || bst=$?
	assert_equal "$bst" 137
	run standin --image "$D/small.img"
	assert_success
	assert_output --partial "verified=1"
	serve_wait
	assert_equal "$SRC" 1
	run cat "$D/serve.log"
	assert_output --partial "clone 1: handshake: out of memory for the page state of 16777216 pages; killed Firecracker (pid $big)"
}
