/* base64.h - standard base64 (RFC 4648 §4, alphabet A-Z a-z 0-9 + /, '=' padding). */
#ifndef STEREO_BASE64_H
#define STEREO_BASE64_H
#include <stddef.h>
#include "common/buf.h"

/* Strict decode: the length must be a multiple of 4 with the padding written out, only the
 * alphabet (no whitespace, no URL-safe - _), '=' only at the end, and the bits the padding
 * hides must be zero (so every value has exactly one encoding). Appends to out; 0, or -1 with
 * err naming the problem and its offset. out may hold a secret: the caller wipes it. */
int base64_decode(const char *s, size_t len, struct buf *out, char *err);
/* Append the padded encoding of data to out. */
void base64_encode(const void *data, size_t len, struct buf *out);
#endif
