/* fuzz_http.c - libFuzzer target: request and response parsers, the resumable head search
 * (fed in two pieces it must agree with one call) and the chunked decoder.
 * The input is copied to an exact-size heap block so ASan catches any over-read. */
#include "common/stereo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *p = malloc(size ? size : 1);
	memcpy(p, data, size);
	struct http_msg m;
	int r = http_parse_request(p, size, &m);
	if (r > 0) {
		if ((size_t)r > size || m.nh > HTTP_MAX_HEADERS)
			__builtin_trap();
		http_header(&m, "content-type");
	}
	size_t scanned = 0, whole_scan = 0;
	long once = http_head_end(p, size, &whole_scan);
	long first = http_head_end(p, size / 2, &scanned);
	long resumed = first > 0 ? first : http_head_end(p, size, &scanned);
	if (once != resumed || (once > 0 && (size_t)once > size))
		__builtin_trap();
	r = http_parse_response(p, size, &m);
	struct buf out = {0};
	if (r > 0 && m.chunked)
		http_dechunk(p + r, size - r, &out, 4096);
	http_dechunk(p, size, &out, 4096);
	buf_free(&out);
	free(p);
	return 0;
}
