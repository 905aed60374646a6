/* base64.c - strict standard base64 (see base64.h). Used by the guest-metadata listener of
 * stereod (secret values arrive base64-encoded) and by stereo-host, which encodes them. */
#include "common/stereo.h"
#include "common/base64.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z') return c - 'A';
	if (c >= 'a' && c <= 'z') return c - 'a' + 26;
	if (c >= '0' && c <= '9') return c - '0' + 52;
	if (c == '+') return 62;
	if (c == '/') return 63;
	return -1;
}

int base64_decode(const char *s, size_t len, struct buf *out, char *err)
{
	for (size_t i = 0; i < len; i++) {   /* name the first character that cannot be there */
		unsigned char c = s[i];
		if (c == '=' || value(c) >= 0)
			continue;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			return errf(err, "invalid base64: whitespace at offset %zu", i);
		return errf(err, c >= 0x20 && c < 0x7f ? "invalid base64: character '%c' at offset %zu"
			    : "invalid base64: byte 0x%02x at offset %zu", c, i);
	}
	if (len % 4)
		return errf(err, "invalid base64: length %zu is not a multiple of 4 (padding missing?)", len);
	if (buf_reserve(out, len / 4 * 3))
		return errf(err, "out of memory");
	for (size_t i = 0; i < len; i += 4) {
		int v[4], pad = 0;
		for (int k = 0; k < 4; k++) {
			unsigned char c = s[i + k];
			if (c == '=' && i + 4 == len && k >= 2) {
				pad++;
				v[k] = 0;
				continue;
			}
			if (pad)
				return errf(err, "invalid base64: data after padding at offset %zu", i + k);
			if ((v[k] = value(c)) < 0)
				return errf(err, "invalid base64: '=' at offset %zu is not final padding", i + k);
		}
		uint32_t n = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
		if ((pad == 1 && (n & 0xff)) || (pad == 2 && (n & 0xffff)))
			return errf(err, "invalid base64: non-zero bits in the padded group at offset %zu", i);
		unsigned char b[3] = {n >> 16, n >> 8, n};
		buf_append(out, (const char *)b, 3 - pad);
		explicit_bzero(b, sizeof b);
		explicit_bzero(v, sizeof v);
	}
	return 0;
}

void base64_encode(const void *data, size_t len, struct buf *out)
{
	const unsigned char *p = data;
	char q[4];
	buf_reserve(out, (len + 2) / 3 * 4);
	for (size_t i = 0; i < len; i += 3) {
		uint32_t n = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0) |
			     (i + 2 < len ? p[i + 2] : 0);
		q[0] = alphabet[n >> 18 & 63];
		q[1] = alphabet[n >> 12 & 63];
		q[2] = i + 1 < len ? alphabet[n >> 6 & 63] : '=';
		q[3] = i + 2 < len ? alphabet[n & 63] : '=';
		buf_append(out, q, 4);
	}
	explicit_bzero(q, sizeof q);
}
