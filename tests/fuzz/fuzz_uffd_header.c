/* fuzz_uffd_header.c - libFuzzer target for stereo-uffd's two parsers of untrusted bytes: the
 * snapshot header (hdr_parse) and Firecracker's region JSON (hs_parse_regions). The first
 * input byte picks the parser. The applet's files are compiled in directly. */
#include "applets/stereo-uffd/header.c"
#include "applets/stereo-uffd/handshake.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[ERRBUF];
	if (!size)
		return 0;
	if (data[0] & 1) {
		struct snap_hdr h;
		if (!hdr_parse(data + 1, size - 1, "fuzz", &h, err)) {
			/* a valid header: every offset resolves to a mapping that holds it */
			for (uint64_t off = 0; off < h.size; off += h.size / 7 + h.block) {
				size_t i = hdr_find(&h, off);
				if (off < h.m[i].off || off - h.m[i].off >= h.m[i].len)
					__builtin_trap();
			}
			struct buf b = {0};
			hdr_encode(&h, &b);
			buf_free(&b);
		}
		hdr_free(&h);
	} else {
		static struct handshake hs;
		hs_parse_regions((const char *)data + 1, size - 1, &hs, err);
	}
	return 0;
}
