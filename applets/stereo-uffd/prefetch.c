/* prefetch.c - background installation after the handshake (--prefetch all|trace:FILE) and
 * the fault-order trace (--record-trace FILE).
 *
 * A step installs at most 2 MiB, as runs of missing pages that each share one source (one
 * layer mapping, or zero-fill / removed, installed with ZEROPAGE), one ioctl per run. The
 * serve loop takes a step only after it has served every queued demand fault.
 *
 * Trace file: "SUFFDTR1", u64 page size, u64 count, then count u64 memory-file offsets in
 * first-fault order (little-endian). Replay installs those pages (with their fault-around
 * window) first, then everything else in address order.
 */
#include "serve.h"
#include <endian.h>

#define STEP_BYTES PAGE_2M
#define TRACE_MAGIC "SUFFDTR1"
#define TRACE_MAX (64u << 20)

static int trace_read(struct server *S, const char *path, char *err)
{
	struct buf b = {0};
	int r = read_file(path, &b, TRACE_MAX);
	if (r < 0) {
		buf_free(&b);
		return errf(err, "reading trace %s: %s", path, r == -EFBIG ? "too large" : strerror(-r));
	}
	uint64_t n = 0;
	if (b.len >= 24) {
		memcpy(&n, b.p + 16, 8);
		n = le64toh(n);
	}
	if (b.len < 24 || memcmp(b.p, TRACE_MAGIC, 8) || n != (b.len - 24) / 8 || (b.len - 24) % 8) {
		buf_free(&b);
		return errf(err, "trace %s is not a stereo-uffd trace file", path);
	}
	S->pf.trace = xcalloc(n ? n : 1, 8);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t v;
		memcpy(&v, b.p + 24 + i * 8, 8);
		S->pf.trace[i] = le64toh(v);
	}
	S->pf.ntrace = n;
	buf_free(&b);
	return 0;
}

int trace_write(const struct server *S, const char *path, char *err)
{
	struct buf b = {0};
	uint64_t v;
	buf_append(&b, TRACE_MAGIC, 8);
	v = htole64(S->page);
	buf_append(&b, &v, 8);
	v = htole64(S->ntrace);
	buf_append(&b, &v, 8);
	for (size_t i = 0; i < S->ntrace; i++) {
		v = htole64(S->trace[i]);
		buf_append(&b, &v, 8);
	}
	int r = atomic_write(path, b.p, b.len, 0644, (uid_t)-1, (gid_t)-1);
	buf_free(&b);
	if (r)
		return errf(err, "writing trace %s: %s", path, strerror(-r));
	return 0;
}

int prefetch_init(struct server *S, const char *mode, char *err)
{
	memset(&S->pf, 0, sizeof S->pf);
	if (!strcmp(mode, "none"))
		return 0;
	S->pf.active = true;
	if (!strncmp(mode, "trace:", 6))
		return trace_read(S, mode + 6, err);
	return 0;
}

static void pf_finish(struct server *S)
{
	S->pf.done = true;
	S->c.prefetch_ns = mono_ns() - S->pf.t0_ns;
	log_info("prefetch done", "pages=%llu ms=%.3f", (unsigned long long)S->c.prefetch_pages,
		 (double)S->c.prefetch_ns / 1e6);
}

static enum serve_rc install(struct server *S, struct region *r, uint64_t p, uint64_t lo, uint64_t hi)
{
	uint64_t before = S->c.pages_copied + S->c.pages_zeroed;
	enum serve_rc rc = serve_run(S, r, p, lo, hi);
	uint64_t k = S->c.pages_copied + S->c.pages_zeroed - before;
	S->c.prefetch_pages += k;
	S->c.prefetch_bytes += k * S->page;
	return rc;
}

static bool missing(const struct region *r, uint64_t p)
{
	return !page_bit(r->installed, p);
}

static enum serve_rc prefetch_run(struct server *S, uint64_t max_pages);

enum serve_rc prefetch_step(struct server *S)
{
	struct prefetch *pf = &S->pf;
	if (!pf->step_pages)
		pf->step_pages = STEP_BYTES / S->page ? STEP_BYTES / S->page : 1;
	/* several runs per step, up to STEP_BYTES in all, then back to the demand faults */
	uint64_t budget = STEP_BYTES, start = S->c.prefetch_bytes;
	enum serve_rc rc = SERVE_OK;
	while (rc == SERVE_OK && !pf->done && S->c.prefetch_bytes - start < budget)
		rc = prefetch_run(S, (budget - (S->c.prefetch_bytes - start) + S->page - 1) / S->page);
	return rc;
}

/* One run: the next trace entry's window, else the next missing run in address order. */
static enum serve_rc prefetch_run(struct server *S, uint64_t max_pages)
{
	struct prefetch *pf = &S->pf;
	/* the trace first: each entry with its fault-around window */
	while (pf->ti < pf->ntrace) {
		uint64_t off = pf->trace[pf->ti++];
		for (size_t i = 0; i < S->nreg; i++) {
			struct region *r = &S->reg[i];
			if (off < r->offset || off - r->offset >= r->size)
				continue;
			uint64_t p = (off - r->offset) / S->page;
			if (!missing(r, p))
				break;
			/* forward from the page to its fault-around window's end, within the budget */
			uint64_t hi = p / S->fa_pages * S->fa_pages + S->fa_pages;
			if (hi > p + max_pages)
				hi = p + max_pages;
			return install(S, r, p, p, hi < r->npages ? hi : r->npages);
		}
	}
	/* then every missing page in address order */
	while (pf->ri < S->nreg) {
		struct region *r = &S->reg[pf->ri];
		while (pf->pi < r->npages) {
			uint64_t w = pf->pi >> 6;
			/* skip whole words of installed pages */
			if (!(pf->pi & 63) && r->installed[w] == ~0ULL) {
				pf->pi += 64;
				continue;
			}
			if (!missing(r, pf->pi)) {
				pf->pi++;
				continue;
			}
			uint64_t p = pf->pi, hi = p + (max_pages < pf->step_pages ? max_pages : pf->step_pages);
			return install(S, r, p, p, hi < r->npages ? hi : r->npages);
		}
		pf->ri++;
		pf->pi = 0;
	}
	pf_finish(S);
	return SERVE_OK;
}
