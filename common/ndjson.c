/* ndjson.c - NDJSON line framing with a hard cap (see ndjson.h). */
#include "common/stereo.h"
#include <unistd.h>

#define NDJSON_READ_CHUNK (64 * 1024)

void ndjson_init(struct ndjson *n, size_t max_line)
{
	memset(n, 0, sizeof *n);
	n->max_line = max_line;
}

void ndjson_free(struct ndjson *n) { buf_wipe(&n->in); }

size_t ndjson_pending(const struct ndjson *n) { return n->in.len - n->off; }

static void compact(struct ndjson *n)
{
	if (n->off) {
		buf_consume(&n->in, n->off);
		n->off = 0;
	}
}

/* Room we may still fill: the unfinished line plus its newline must stay under max_line+1. */
static size_t room(const struct ndjson *n)
{
	size_t pend = ndjson_pending(n);
	return pend >= n->max_line + 1 ? 0 : n->max_line + 1 - pend;
}

ssize_t ndjson_fill(struct ndjson *n, int fd)
{
	compact(n);
	size_t want = room(n);
	if (!want)
		return -EMSGSIZE;
	if (want > NDJSON_READ_CHUNK)
		want = NDJSON_READ_CHUNK;
	if (buf_reserve(&n->in, want))
		return -ENOMEM;
	ssize_t r = read(fd, n->in.p + n->in.len, want);
	if (r < 0)
		return -errno;
	n->in.len += r;
	n->in.p[n->in.len] = 0;
	return r;
}

int ndjson_feed(struct ndjson *n, const void *data, size_t len)
{
	compact(n);
	if (len > room(n))
		return -EMSGSIZE;
	return buf_append(&n->in, data, len);
}

ssize_t ndjson_find(const char *p, size_t len, size_t *scanned, size_t max)
{
	const char *nl = len > *scanned ? memchr(p + *scanned, '\n', len - *scanned) : NULL;
	if (!nl) {
		*scanned = len;
		return len > max ? -EMSGSIZE : -EAGAIN;
	}
	return nl - p > (ssize_t)max ? -EMSGSIZE : nl - p;
}

int ndjson_line(struct ndjson *n, char **line, size_t *len)
{
	char *start = n->in.p + n->off;
	ssize_t f = ndjson_find(start, ndjson_pending(n), &n->scanned, n->max_line);
	if (f == -EAGAIN)
		return 0;
	if (f < 0)
		return (int)f;
	size_t l = f;
	start[l] = 0;
	*line = start;
	*len = l;
	n->off += l + 1;
	n->scanned = 0;
	return 1;
}
