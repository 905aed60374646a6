/* header.c - the snapshot memory header (e2b "header V3" layout, also Wrenn's): parse with
 * full validation, encode, look up, and UUID helpers.
 *
 * Layout (little-endian, no padding): Version, BlockSize, Size, Generation (u64 each),
 * BuildID[16], BaseBuildID[16], then 40-byte mappings {Offset, Length, BuildID[16],
 * BuildStorageOffset} to end of file. See docs/stereo-uffd.md.
 */
#include "uffd.h"
#include <endian.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return le64toh(v);
}

static void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

bool uuid_is_nil(const uint8_t u[16])
{
	static const uint8_t nil[16];
	return !memcmp(u, nil, 16);
}

void uuid_format(const uint8_t u[16], char out[37])
{
	static const char hex[] = "0123456789abcdef";
	char *o = out;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*o++ = '-';
		*o++ = hex[u[i] >> 4];
		*o++ = hex[u[i] & 15];
	}
	*o = 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The canonical 8-4-4-4-12 form only. */
int uuid_parse(const char *s, uint8_t u[16])
{
	if (strlen(s) != 36)
		return -1;
	for (int i = 0, j = 0; i < 16; i++) {
		if (j == 8 || j == 13 || j == 18 || j == 23) {
			if (s[j] != '-')
				return -1;
			j++;
		}
		int hi = hexval(s[j]), lo = hexval(s[j + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		u[i] = (uint8_t)(hi << 4 | lo);
		j += 2;
	}
	return 0;
}

/* RFC 4122 version 4. */
void uuid_random(uint8_t u[16])
{
	size_t got = 0;
	while (got < 16) {
		ssize_t n = getrandom(u + got, 16 - got, 0);
		if (n < 0 && errno != EINTR)
			die_sys(EXIT_FAIL, "getrandom");
		if (n > 0)
			got += (size_t)n;
	}
	u[6] = (u[6] & 0x0f) | 0x40;
	u[8] = (u[8] & 0x3f) | 0x80;
}

void hdr_push(struct snap_hdr *h, uint64_t off, uint64_t len, const uint8_t build[16], uint64_t store)
{
	if (!len)
		return;
	if (h->n) {
		struct mapping *last = &h->m[h->n - 1];
		bool same = !memcmp(last->build, build, 16);
		if (same && last->off + last->len == off &&
		    (uuid_is_nil(build) || last->store + last->len == store)) {
			last->len += len;
			return;
		}
	}
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 64;
		h->m = xrealloc(h->m, h->cap * sizeof *h->m);
	}
	struct mapping *m = &h->m[h->n++];
	m->off = off;
	m->len = len;
	memcpy(m->build, build, 16);
	m->store = uuid_is_nil(build) ? 0 : store;
}

void hdr_free(struct snap_hdr *h)
{
	free(h->m);
	h->m = NULL;
	h->n = h->cap = 0;
}

int hdr_parse(const uint8_t *p, size_t len, const char *name, struct snap_hdr *h, char *err)
{
	memset(h, 0, sizeof *h);
	if (len < HDR_META_SIZE)
		return errf(err, "%s: short header: %zu bytes, the metadata alone is %d", name, len,
			    HDR_META_SIZE);
	if ((len - HDR_META_SIZE) % HDR_MAP_SIZE)
		return errf(err, "%s: truncated mapping: %zu bytes after the metadata, not a multiple of %d",
			    name, len - HDR_META_SIZE, HDR_MAP_SIZE);
	h->version = get64(p);
	h->block = get64(p + 8);
	h->size = get64(p + 16);
	h->gen = get64(p + 24);
	memcpy(h->build, p + 32, 16);
	memcpy(h->base, p + 48, 16);
	uint64_t fmt = h->version & 0xffff;
	if (fmt < 1 || fmt > 3)
		return errf(err, "%s: unknown header version %llu (this reads 1 to 3)", name,
			    (unsigned long long)h->version);
	if (h->block != PAGE_4K && h->block != PAGE_2M)
		return errf(err, "%s: block size %llu is neither 4096 nor 2097152", name,
			    (unsigned long long)h->block);
	if (!h->size || h->size % h->block)
		return errf(err, "%s: memory size %llu is not a positive multiple of the block size %llu",
			    name, (unsigned long long)h->size, (unsigned long long)h->block);
	size_t n = (len - HDR_META_SIZE) / HDR_MAP_SIZE;
	if (!n) {
		/* Wrenn: an empty mapping list means the whole memory is the header's build. */
		hdr_push(h, 0, h->size, h->build, 0);
		return 0;
	}
	for (size_t i = 1; i < n; i++) {   /* order first, so "unsorted" is named as such */
		uint64_t a = get64(p + HDR_META_SIZE + (i - 1) * HDR_MAP_SIZE);
		uint64_t b = get64(p + HDR_META_SIZE + i * HDR_MAP_SIZE);
		if (b < a)
			return errf(err, "%s: mapping %zu (offset %llu) is not sorted: it comes after offset %llu",
				    name, i, (unsigned long long)b, (unsigned long long)a);
	}
	h->m = xcalloc(n, sizeof *h->m);
	h->cap = n;
	uint64_t end = 0;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *q = p + HDR_META_SIZE + i * HDR_MAP_SIZE;
		struct mapping *m = &h->m[i];
		m->off = get64(q);
		m->len = get64(q + 8);
		memcpy(m->build, q + 16, 16);
		m->store = get64(q + 32);
		unsigned long long o = m->off, l = m->len;
		if (!m->len || m->len % h->block || m->off % h->block)
			goto bad_align;
		if (!uuid_is_nil(m->build) && m->store % h->block)
			return errf(err, "%s: mapping %zu (offset %llu): storage offset %llu is not block-aligned",
				    name, i, o, (unsigned long long)m->store);
		if (m->off < end)
			return errf(err, "%s: mapping %zu (offset %llu) overlaps the previous one, which ends at %llu",
				    name, i, o, (unsigned long long)end);
		if (m->off > end)
			return errf(err, "%s: gap before mapping %zu: bytes %llu..%llu are not mapped", name, i,
				    (unsigned long long)end, o);
		if (m->len > h->size - m->off)
			return errf(err, "%s: mapping %zu (offset %llu, length %llu) runs past the memory size %llu",
				    name, i, o, l, (unsigned long long)h->size);
		if (!uuid_is_nil(m->build) && m->store + m->len < m->store)
			return errf(err, "%s: mapping %zu (offset %llu): storage offset overflows", name, i, o);
		end = m->off + m->len;
		h->n = i + 1;
		continue;
bad_align:
		return errf(err, "%s: mapping %zu (offset %llu, length %llu) is empty or not aligned to the block size %llu",
			    name, i, o, l, (unsigned long long)h->block);
	}
	if (end != h->size)
		return errf(err, "%s: gap at the end: mappings stop at %llu, the memory size is %llu", name,
			    (unsigned long long)end, (unsigned long long)h->size);
	return 0;
}

/* fd: opened by the caller (non-blocking, checked to be a regular file: a FIFO must not
 * hang us); read up to HDR_MAX_BYTES. */
int hdr_read_fd(int fd, const char *path, struct snap_hdr *h, char *err)
{
	struct buf b = {0};
	memset(h, 0, sizeof *h);
	int r = 0;
	for (;;) {
		if (b.len > HDR_MAX_BYTES) {
			r = -EFBIG;
			break;
		}
		if (buf_reserve(&b, 65536)) {
			r = -ENOMEM;
			break;
		}
		ssize_t n = read(fd, b.p + b.len, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (!n)
			break;
		b.len += (size_t)n;
	}
	if (r < 0) {
		buf_free(&b);
		return errf(err, "reading header %s: %s", path,
			    r == -EFBIG ? "larger than 64 MiB" : strerror(-r));
	}
	r = hdr_parse((const uint8_t *)b.p, b.len, path, h, err);
	buf_free(&b);
	if (r)
		hdr_free(h);
	return r;
}

int hdr_encode(const struct snap_hdr *h, struct buf *out)
{
	size_t len = HDR_META_SIZE + h->n * HDR_MAP_SIZE;
	if (buf_reserve(out, len))
		return -ENOMEM;
	uint8_t *p = (uint8_t *)out->p + out->len;
	memset(p, 0, len);
	put64(p, h->version);
	put64(p + 8, h->block);
	put64(p + 16, h->size);
	put64(p + 24, h->gen);
	memcpy(p + 32, h->build, 16);
	memcpy(p + 48, h->base, 16);
	for (size_t i = 0; i < h->n; i++) {
		uint8_t *q = p + HDR_META_SIZE + i * HDR_MAP_SIZE;
		put64(q, h->m[i].off);
		put64(q + 8, h->m[i].len);
		memcpy(q + 16, h->m[i].build, 16);
		put64(q + 32, h->m[i].store);
	}
	out->len += len;
	return 0;
}

size_t hdr_find(const struct snap_hdr *h, uint64_t off)
{
	size_t lo = 0, hi = h->n;   /* last mapping with m.off <= off */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (h->m[mid].off <= off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}
