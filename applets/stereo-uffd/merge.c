/* merge.c - `merge SNAPDIR OUTDIR`: a chain of layers to one generation-0 layer with the same
 * bytes. Zero blocks inside old layers are elided again on the way through the packer; the
 * header is written last, so OUTDIR may be SNAPDIR itself (the old layers are left in place).
 */
#include "uffd.h"

int cmd_merge(int argc, char **argv)
{
	char err[ERRBUF];
	if (argc != 3)
		return usage_cmd("merge");
	const char *dir = argv[1], *outdir = argv[2];
	struct snap s;
	if (snap_open(&s, NULL, dir, NULL, 0, err))
		die(EXIT_FAIL, "merge: %s: %s", dir, err);
	int dirfd = open_outdir(outdir, err);
	if (dirfd < 0)
		die(EXIT_FAIL, "merge: %s", err);
	struct snap_hdr nh = {.version = HDR_VERSION, .block = s.h.block, .size = s.h.size};
	struct packer p;
	packer_init(&p, dirfd, s.h.block, false, &nh, err);
	memcpy(nh.build, p.build, 16);
	memcpy(nh.base, p.build, 16);
	for (size_t i = 0; i < s.h.n; i++) {
		const struct mapping *m = &s.h.m[i];
		if (s.src[i] < 0) {
			hdr_push(&nh, m->off, m->len, m->build, 0);
			p.zero_bytes += m->len;
		} else if (packer_feed(&p, m->off, s.l[s.src[i]].map + m->store, m->len, err)) {
			goto fail;
		}
	}
	if (packer_publish(&p, &nh, err))
		goto fail;
	char u[37];
	uuid_format(nh.build, u);
	printf("merged %s (generation %llu, %zu layers): %llu data bytes, build %s, %zu mappings\n",
	       dir, (unsigned long long)s.h.gen, s.nl, (unsigned long long)p.data_bytes, u, nh.n);
	hdr_free(&nh);
	snap_close(&s);
	close(dirfd);
	return EXIT_OK;
fail:
	packer_abort(&p);
	die(EXIT_FAIL, "merge: %s", err);
}
