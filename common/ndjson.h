/* ndjson.h - newline-delimited framing with a hard line cap.
 *
 * The reader never holds more than max_line + 1 bytes of an unfinished line: it reads only
 * into the room left under the cap, so a peer that sends 2 MiB without a newline costs at
 * most the cap before ndjson_line() reports -EMSGSIZE. */
#ifndef STEREO_NDJSON_H
#define STEREO_NDJSON_H
#include <sys/types.h>
#include "common/buf.h"

#define NDJSON_MAX_LINE (1024 * 1024)

struct ndjson {
	struct buf in;
	size_t off;       /* start of the first unconsumed byte */
	size_t scanned;   /* bytes after off already known to hold no newline */
	size_t max_line;
};

void ndjson_init(struct ndjson *n, size_t max_line);
void ndjson_free(struct ndjson *n);
/* One read(2) into the room under the cap: bytes read, 0 at EOF, -errno (-EAGAIN included). */
ssize_t ndjson_fill(struct ndjson *n, int fd);
/* Feed bytes from elsewhere (tests, fuzzers); -EMSGSIZE when they do not fit under the cap. */
int ndjson_feed(struct ndjson *n, const void *data, size_t len);
/* Next complete line (newline removed, NUL-terminated in place; valid until the next fill):
 * 1 = a line, 0 = need more bytes, -EMSGSIZE = the pending line is over the cap. */
int ndjson_line(struct ndjson *n, char **line, size_t *len);
size_t ndjson_pending(const struct ndjson *n);
/* The framing alone, for buffers owned elsewhere (common/conn.c): the length of the first
 * line in p[0..len) (its newline at p[result]), -EAGAIN when it is not complete yet, or
 * -EMSGSIZE when it is already longer than max. *scanned is the resume offset: bytes known
 * to hold no newline; start it at 0, keep it while the same bytes stay at p, reset it to 0
 * after consuming a line. Allocation-free. */
ssize_t ndjson_find(const char *p, size_t len, size_t *scanned, size_t max);
#endif
