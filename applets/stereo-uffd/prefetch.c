/* prefetch.c - background installation after the handshake (--prefetch all|trace:FILE) and
 * the fault-order trace (--record-trace FILE).
 *
 * A step installs at most 2 MiB for one clone, as runs of missing pages that each share one
 * source (one layer mapping, or zero-fill / removed, installed with ZEROPAGE), one ioctl per
 * run. The serve loop takes a step only when no clone has a fault waiting, one clone per
 * turn in turn. The trace is read once and shared; each clone has its own cursor.
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
	S->trace = xcalloc(n ? n : 1, 8);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t v;
		memcpy(&v, b.p + 24 + i * 8, 8);
		S->trace[i] = le64toh(v);
	}
	S->ntrace = n;
	buf_free(&b);
	return 0;
}

int trace_write(const struct clone *C, const char *path, char *err)
{
	struct buf b = {0};
	uint64_t v;
	int r = buf_reserve(&b, 24 + C->ntrace * 8);
	if (!r) {
		buf_append(&b, TRACE_MAGIC, 8);
		v = htole64(C->page);
		buf_append(&b, &v, 8);
		v = htole64(C->ntrace);
		buf_append(&b, &v, 8);
		for (size_t i = 0; i < C->ntrace; i++) {
			v = htole64(C->trace[i]);
			buf_append(&b, &v, 8);
		}
		r = atomic_write(path, b.p, b.len, 0644, (uid_t)-1, (gid_t)-1);
	}
	buf_free(&b);
	if (r)
		return errf(err, "writing trace %s: %s", path, strerror(-r));
	return 0;
}

int prefetch_load(struct server *S, const char *mode, char *err)
{
	if (!strcmp(mode, "none"))
		return 0;
	S->prefetch_all = true;
	if (!strncmp(mode, "trace:", 6))
		return trace_read(S, mode + 6, err);
	return 0;
}

void prefetch_init(struct clone *C)
{
	memset(&C->pf, 0, sizeof C->pf);
	C->pf.active = C->S->prefetch_all;
	C->pf.t0_ns = mono_ns();
}

static void pf_finish(struct clone *C)
{
	C->pf.done = true;
	C->c.prefetch_ns = mono_ns() - C->pf.t0_ns;
	log_info("prefetch done", "clone=%u pid=%d pages=%llu ms=%.3f", C->id, (int)C->peer.pid,
		 (unsigned long long)C->c.prefetch_pages, (double)C->c.prefetch_ns / 1e6);
}

static enum serve_rc install(struct clone *C, struct region *r, uint64_t p, uint64_t lo, uint64_t hi,
			     bool from_trace)
{
	if (C->npf_first < ARRAY_SIZE(C->pf_first))
		C->pf_first[C->npf_first++] = r->offset + p * C->page;
	uint64_t before = C->c.pages_copied + C->c.pages_zeroed;
	enum serve_rc rc = serve_run(C, r, p, lo, hi);
	uint64_t k = C->c.pages_copied + C->c.pages_zeroed - before;
	C->c.prefetch_pages += k;
	C->c.prefetch_bytes += k * C->page;
	if (from_trace)
		C->c.trace_pages += k;
	return rc;
}

static bool missing(const struct region *r, uint64_t p)
{
	return !page_bit(r->installed, p);
}

static enum serve_rc prefetch_run(struct clone *C, uint64_t max_pages);

enum serve_rc prefetch_step(struct clone *C)
{
	struct prefetch *pf = &C->pf;
	if (!pf->step_pages)
		pf->step_pages = STEP_BYTES / C->page ? STEP_BYTES / C->page : 1;
	/* several runs per step, up to STEP_BYTES in all, then back to the demand faults */
	uint64_t budget = STEP_BYTES, start = C->c.prefetch_bytes;
	enum serve_rc rc = SERVE_OK;
	while (rc == SERVE_OK && !pf->done && C->c.prefetch_bytes - start < budget)
		rc = prefetch_run(C, (budget - (C->c.prefetch_bytes - start) + C->page - 1) / C->page);
	return rc;
}

/* One run: the next trace entry's window, else the next missing run in address order. */
static enum serve_rc prefetch_run(struct clone *C, uint64_t max_pages)
{
	struct prefetch *pf = &C->pf;
	const struct server *S = C->S;
	/* the trace first: each entry with its fault-around window */
	while (pf->ti < S->ntrace) {
		uint64_t off = S->trace[pf->ti++];
		for (size_t i = 0; i < C->nreg; i++) {
			struct region *r = &C->reg[i];
			if (off < r->offset || off - r->offset >= r->size)
				continue;
			uint64_t p = (off - r->offset) / C->page;
			if (!missing(r, p))
				break;
			/* forward from the page to its fault-around window's end, within the budget */
			uint64_t hi = p / C->fa_pages * C->fa_pages + C->fa_pages;
			if (hi > p + max_pages)
				hi = p + max_pages;
			return install(C, r, p, p, hi < r->npages ? hi : r->npages, true);
		}
	}
	/* then every missing page in address order */
	while (pf->ri < C->nreg) {
		struct region *r = &C->reg[pf->ri];
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
			return install(C, r, p, p, hi < r->npages ? hi : r->npages, false);
		}
		pf->ri++;
		pf->pi = 0;
	}
	pf_finish(C);
	return SERVE_OK;
}
