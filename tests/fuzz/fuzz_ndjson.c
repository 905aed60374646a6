/* fuzz_ndjson.c - libFuzzer target: line framing with a small cap, fed in fuzzer-chosen
 * chunks; checks that every line is within the cap and holds no newline. */
#include "common/stereo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	struct ndjson n;
	ndjson_init(&n, 1 + data[0] % 200);
	size_t chunk = 1 + data[1] % 64;
	data += 2;
	size -= 2;
	while (size) {
		size_t k = size < chunk ? size : chunk;
		if (ndjson_feed(&n, data, k) < 0)
			break;
		data += k;
		size -= k;
		char *line;
		size_t len;
		int r;
		while ((r = ndjson_line(&n, &line, &len)) == 1)
			if (len > n.max_line || memchr(line, '\n', len))
				__builtin_trap();
		if (r < 0)
			break;
	}
	ndjson_free(&n);
	return 0;
}
