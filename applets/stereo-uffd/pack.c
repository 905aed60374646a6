/* pack.c - `pack MEMFILE OUTDIR`: a full Firecracker memory file to a generation-0 snapshot
 * (one diff file with the non-zero blocks, a header mapping zero blocks to the zero build).
 * Also the packer that layer and merge write through, and the atomic header write.
 *
 * Speed: 8 MiB reads, an OR-reduce zero check over 16-byte vectors with an early exit on
 * the first non-zero word, and one write per run of non-zero blocks.
 */
#include "uffd.h"
#include <fcntl.h>
#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>

#define PACK_CHUNK (8u << 20)

typedef uint64_t v2u64 __attribute__((vector_size(16)));

bool block_is_zero(const uint8_t *p, size_t n)
{
	uint64_t head;
	memcpy(&head, p, sizeof head);   /* most data blocks fail here */
	if (head)
		return false;
	size_t i = 0;
	while (i + 256 <= n) {
		v2u64 acc = {0, 0};
		for (size_t j = 0; j < 256; j += 16) {
			v2u64 v;
			memcpy(&v, p + i + j, 16);
			acc |= v;
		}
		if (acc[0] | acc[1])
			return false;
		i += 256;
	}
	for (; i < n; i++)
		if (p[i])
			return false;
	return true;
}

int open_outdir(const char *dir, char *err)
{
	int r = mkdir_p(dir, 0755);
	if (r)
		return errf(err, "creating %s: %s", dir, strerror(-r));
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errf(err, "opening %s: %s", dir, strerror(errno));
	return fd;
}

int write_header_at(int dirfd, const struct snap_hdr *h, char *err)
{
	struct buf b = {0};
	if (hdr_encode(h, &b))
		return errf(err, "out of memory");
	int r = atomic_write_at(dirfd, "memfile.header", b.p, b.len, 0644, (uid_t)-1, (gid_t)-1);
	buf_free(&b);
	if (r)
		return errf(err, "writing memfile.header: %s", strerror(-r));
	return 0;
}

int packer_init(struct packer *p, int dirfd, uint64_t block, bool keep_holes, struct snap_hdr *out,
		char *err)
{
	memset(p, 0, sizeof *p);
	p->dirfd = dirfd;
	p->fd = -1;
	p->block = block;
	p->keep_holes = keep_holes;
	p->out = out;
	uuid_random(p->build);
	char u[37];
	uuid_format(p->build, u);
	snprintf(p->name, sizeof p->name, "memfile.%s", u);
	snprintf(p->tmpname, sizeof p->tmpname, ".memfile.%s.tmp", u);
	(void)err;
	return 0;
}

static int packer_write(struct packer *p, uint64_t off, const uint8_t *data, size_t len, char *err)
{
	if (p->fd < 0) {
		p->fd = openat(p->dirfd, p->tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (p->fd < 0)
			return errf(err, "creating %s: %s", p->tmpname, strerror(errno));
	}
	int r = write_all(p->fd, data, len);
	if (r)
		return errf(err, "writing %s: %s", p->tmpname, strerror(-r));
	hdr_push(p->out, off, len, p->build, p->store);
	p->store += len;
	p->data_bytes += len;
	return 0;
}

int packer_feed(struct packer *p, uint64_t off, const uint8_t *data, size_t len, char *err)
{
	size_t bs = p->block, i = 0;
	while (i < len) {
		bool zero = block_is_zero(data + i, bs);
		size_t j = i + bs;
		while (j < len && block_is_zero(data + j, bs) == zero)
			j += bs;
		if (!zero) {
			if (packer_write(p, off + i, data + i, j - i, err))
				return -1;
		} else {
			p->zero_bytes += j - i;
			if (!p->keep_holes) {
				static const uint8_t nil[16];
				hdr_push(p->out, off + i, j - i, nil, 0);
			}
		}
		i = j;
	}
	return 0;
}

int packer_commit(struct packer *p, char *err)
{
	if (p->fd < 0)
		return 0;
	if (fsync(p->fd) || close(p->fd)) {
		p->fd = -1;
		errf(err, "writing %s: %s", p->tmpname, strerror(errno));
		packer_abort(p);
		return -1;
	}
	p->fd = -1;
	if (renameat(p->dirfd, p->tmpname, p->dirfd, p->name)) {
		errf(err, "renaming %s: %s", p->tmpname, strerror(errno));
		packer_abort(p);
		return -1;
	}
	p->tmpname[0] = 0;
	return 0;
}

int packer_publish(struct packer *p, const struct snap_hdr *h, char *err)
{
	if (packer_commit(p, err))
		return -1;
	if (write_header_at(p->dirfd, h, err)) {
		if (p->data_bytes)
			unlinkat(p->dirfd, p->name, 0);   /* no header refers to it */
		return -1;
	}
	return 0;
}

void packer_abort(struct packer *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	if (p->tmpname[0])
		unlinkat(p->dirfd, p->tmpname, 0);
}

/* Read [from, to) of fd through the packer, chunk by chunk. */
int pack_range(struct packer *p, int fd, const char *name, uint64_t from, uint64_t to, char *err)
{
	uint8_t *buf = aligned_alloc(4096, PACK_CHUNK);
	if (!buf)
		return errf(err, "out of memory");
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	uint64_t off = from, size = to;
	int rc = 0;
	while (off < size) {
		size_t want = size - off < PACK_CHUNK ? (size_t)(size - off) : PACK_CHUNK, got = 0;
		while (got < want) {
			ssize_t n = pread(fd, buf + got, want - got, (off_t)(off + got));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				rc = errf(err, "reading %s at %llu: %s", name, (unsigned long long)(off + got),
					  n < 0 ? strerror(errno) : "file shrank while reading");
				goto out;
			}
			got += (size_t)n;
		}
		if ((rc = packer_feed(p, off, buf, want, err)))
			goto out;
		off += want;
	}
out:
	free(buf);
	return rc;
}

int pack_stream(struct packer *p, int fd, const char *name, uint64_t size, char *err)
{
	return pack_range(p, fd, name, 0, size, err);
}

int parse_block_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	if (parse_size(s, &v) || (v != PAGE_4K && v != PAGE_2M))
		return -1;
	*out = v;
	return 0;
}

int cmd_pack(int argc, char **argv)
{
	static const struct option opts[] = {{"block-size", required_argument, NULL, 'b'}, {0}};
	uint64_t block = PAGE_4K;
	int c;
	char err[ERRBUF];
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'b' && !parse_block_size(optarg, &block))
			continue;
		if (c == 'b')
			return usage_error("--block-size must be 4K or 2M, not '%s'", optarg);
		return usage_error("pack: bad option");
	}
	if (argc - optind != 2)
		return usage_cmd("pack");
	const char *mem = argv[optind], *outdir = argv[optind + 1];
	int fd = open(mem, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st))
		die_sys(EXIT_FAIL, "pack: opening %s", mem);
	if (!S_ISREG(st.st_mode) || !st.st_size || (uint64_t)st.st_size % block)
		die(EXIT_FAIL, "pack: %s: size %lld is not a positive multiple of the block size %llu", mem,
		    (long long)st.st_size, (unsigned long long)block);
	int dirfd = open_outdir(outdir, err);
	if (dirfd < 0)
		die(EXIT_FAIL, "pack: %s", err);
	struct snap_hdr h = {.version = HDR_VERSION, .block = block, .size = (uint64_t)st.st_size};
	struct packer p;
	packer_init(&p, dirfd, block, false, &h, err);
	memcpy(h.build, p.build, 16);
	memcpy(h.base, p.build, 16);
	if (pack_stream(&p, fd, mem, h.size, err) || packer_publish(&p, &h, err)) {
		packer_abort(&p);
		die(EXIT_FAIL, "pack: %s", err);
	}
	char u[37];
	uuid_format(p.build, u);
	printf("packed %s: %llu bytes, %llu data, %llu zero, build %s, %zu mappings\n", mem,
	       (unsigned long long)h.size, (unsigned long long)p.data_bytes,
	       (unsigned long long)p.zero_bytes, u, h.n);
	hdr_free(&h);
	close(fd);
	close(dirfd);
	return EXIT_OK;
}
