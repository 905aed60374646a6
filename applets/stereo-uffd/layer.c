/* layer.c - `layer PARENT_DIR DIFF_MEMFILE OUTDIR`: generation N+1 from a Firecracker diff
 * memory file.
 *
 * Firecracker writes a diff memory file sparse: dirtied pages are data, the rest are holes.
 * When the file has holes, its data extents (SEEK_DATA/SEEK_HOLE) are the dirty pages, so a
 * page the guest dirtied *to zero* becomes zero-fill instead of keeping the parent's bytes;
 * holes keep the parent's mapping. A fully allocated diff file (copied without --sparse)
 * carries no such information: there a zero block is taken as unchanged. OUTDIR receives the new layer, the
 * parent layers the new header still uses (hard links, or copies across filesystems), and
 * the header last, so a crash leaves either the old snapshot or the new one.
 */
#include "uffd.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static void push_piece(struct snap_hdr *out, const struct mapping *m, uint64_t from, uint64_t to)
{
	hdr_push(out, from, to - from, m->build, m->store + (from - m->off));
}

/* out = base with every range of d (sorted, non-overlapping, may have gaps) laid on top. */
static void overlay(const struct snap_hdr *base, const struct snap_hdr *d, struct snap_hdr *out)
{
	size_t di = 0;
	for (size_t i = 0; i < base->n; i++) {
		const struct mapping *b = &base->m[i];
		uint64_t cur = b->off, end = b->off + b->len;
		while (cur < end) {
			while (di < d->n && d->m[di].off + d->m[di].len <= cur)
				di++;
			if (di < d->n && d->m[di].off < end) {
				const struct mapping *x = &d->m[di];
				if (x->off > cur) {
					push_piece(out, b, cur, x->off);
					cur = x->off;
				}
				uint64_t e = x->off + x->len < end ? x->off + x->len : end;
				push_piece(out, x, cur, e);
				cur = e;
			} else {
				push_piece(out, b, cur, end);
				cur = end;
			}
		}
	}
}

static bool same_file(int dirfd, const char *name, const struct stat *st)
{
	struct stat o;
	return !fstatat(dirfd, name, &o, AT_SYMLINK_NOFOLLOW) && o.st_dev == st->st_dev &&
	       o.st_ino == st->st_ino;
}

/* Make dirfd/memfile.<uuid> the same bytes as L (link, or copy to a temp name + rename). */
static int place_layer(int dirfd, const struct layer *L, char *err)
{
	char u[37], name[64], tmp[80];
	uuid_format(L->id, u);
	snprintf(name, sizeof name, "memfile.%s", u);
	snprintf(tmp, sizeof tmp, ".memfile.%s.tmp", u);
	struct stat st;
	if (fstat(L->fd, &st))
		return errf(err, "stat %s: %s", L->path, strerror(errno));
	if (same_file(dirfd, name, &st))
		return 0;
	unlinkat(dirfd, tmp, 0);
	if (!linkat(AT_FDCWD, L->path, dirfd, tmp, 0))
		goto publish;
	int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return errf(err, "creating %s: %s", tmp, strerror(errno));
	loff_t in = 0;
	while ((uint64_t)in < L->size) {
		ssize_t n = copy_file_range(L->fd, &in, fd, NULL, L->size - (uint64_t)in, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int r = write_all(fd, L->map + in, L->size - (uint64_t)in);
			if (r) {
				errf(err, "copying %s: %s", L->path, strerror(-r));
				goto fail;
			}
			break;
		}
	}
	if (fsync(fd)) {
		errf(err, "copying %s: %s", L->path, strerror(errno));
		goto fail;
	}
	close(fd);
publish:
	if (renameat(dirfd, tmp, dirfd, name)) {
		errf(err, "renaming %s: %s", tmp, strerror(errno));
		unlinkat(dirfd, tmp, 0);
		return -1;
	}
	return 0;
fail:
	close(fd);
	unlinkat(dirfd, tmp, 0);
	return -1;
}

/* Feed the dirty blocks of the diff file to the packer (see the file comment). */
static int pack_dirty(struct packer *p, int fd, const char *name, uint64_t size, uint64_t block,
		      char *err)
{
	off_t hole = lseek(fd, 0, SEEK_HOLE);
	if (hole < 0 || (uint64_t)hole >= size)
		return pack_stream(p, fd, name, size, err);   /* no holes: zero = unchanged */
	p->keep_holes = false;   /* inside a data extent a zero block is a dirtied-to-zero page */
	uint64_t off = 0;
	while (off < size) {
		off_t d = lseek(fd, (off_t)off, SEEK_DATA);
		if (d < 0) {
			if (errno == ENXIO)
				break;   /* only a hole is left */
			return errf(err, "seeking data in %s: %s", name, strerror(errno));
		}
		off_t h = lseek(fd, d, SEEK_HOLE);
		if (h < 0)
			return errf(err, "seeking a hole in %s: %s", name, strerror(errno));
		uint64_t a = (uint64_t)d / block * block;
		uint64_t b = ((uint64_t)h + block - 1) / block * block;
		if (a < off)
			a = off;   /* a block shared by two extents is fed once */
		if (b > size)
			b = size;
		if (a < b && pack_range(p, fd, name, a, b, err))
			return -1;
		off = b > off ? b : off + block;
	}
	return 0;
}

int cmd_layer(int argc, char **argv)
{
	char err[ERRBUF];
	if (argc != 4)
		return usage_cmd("layer");
	const char *pdir = argv[1], *diff = argv[2], *outdir = argv[3];
	struct snap parent;
	if (snap_open(&parent, NULL, pdir, NULL, 0, err))
		die(EXIT_FAIL, "layer: parent %s: %s", pdir, err);
	const struct snap_hdr *ph = &parent.h;
	int fd = open(diff, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st))
		die_sys(EXIT_FAIL, "layer: opening %s", diff);
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > ph->size || (uint64_t)st.st_size % ph->block)
		die(EXIT_FAIL, "layer: %s: size %lld does not fit the parent's memory (%llu bytes, block %llu)",
		    diff, (long long)st.st_size, (unsigned long long)ph->size, (unsigned long long)ph->block);
	int dirfd = open_outdir(outdir, err);
	if (dirfd < 0)
		die(EXIT_FAIL, "layer: %s", err);

	struct snap_hdr d = {0};
	struct snap_hdr nh = {.version = HDR_VERSION, .block = ph->block, .size = ph->size,
			      .gen = ph->gen + 1};
	struct packer p;
	packer_init(&p, dirfd, ph->block, true, &d, err);
	memcpy(nh.build, p.build, 16);
	memcpy(nh.base, ph->base, 16);
	if (pack_dirty(&p, fd, diff, (uint64_t)st.st_size, ph->block, err))
		goto fail;
	overlay(ph, &d, &nh);
	/* the parent layers the new header still refers to must be in OUTDIR */
	for (size_t k = 0; k < parent.nl; k++) {
		bool used = false;
		for (size_t i = 0; i < nh.n && !used; i++)
			used = !memcmp(nh.m[i].build, parent.l[k].id, 16);
		if (used && place_layer(dirfd, &parent.l[k], err))
			goto fail;
	}
	if (packer_publish(&p, &nh, err))
		goto fail;
	char u[37];
	uuid_format(nh.build, u);
	printf("layered %s on %s: generation %llu, %llu dirty bytes, build %s, %zu mappings\n", diff,
	       pdir, (unsigned long long)nh.gen, (unsigned long long)p.data_bytes, u, nh.n);
	hdr_free(&d);
	hdr_free(&nh);
	snap_close(&parent);
	close(fd);
	close(dirfd);
	return EXIT_OK;
fail:
	packer_abort(&p);
	die(EXIT_FAIL, "layer: %s", err);
}
