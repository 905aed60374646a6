/* buf.h - the one owning byte buffer: a struct buf owns p; slices into it are borrowed. */
#ifndef STEREO_BUF_H
#define STEREO_BUF_H
#include <stddef.h>
#include <stdarg.h>

struct buf {
	char *p;
	size_t len, cap;
};

int buf_reserve(struct buf *b, size_t extra);          /* 0 or -ENOMEM */
int buf_append(struct buf *b, const void *data, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_putc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_consume(struct buf *b, size_t n);             /* drop n bytes from the front */
void buf_free(struct buf *b);
void buf_wipe(struct buf *b);                          /* explicit_bzero, then free */
const char *buf_cstr(struct buf *b);                   /* NUL-terminated view, "" when empty */
#endif
