/* serve.h - the page server's state, shared by serve.c (event loop, faults, REMOVE, counters)
 * and prefetch.c (background installation, fault traces). */
#ifndef STEREO_UFFD_SERVE_H
#define STEREO_UFFD_SERVE_H
#include "uffd.h"

/* Per-page state, two bits per page: installed (a page is mapped, by us or a racing copy)
 * and removed (a REMOVE event dropped it: it must read back as zeros, never as snapshot
 * data). Not installed + not removed = missing, served from the snapshot. */
struct region {
	uint64_t base, size, offset, npages;
	uint64_t *installed, *removed;
};

/* SERVE_WAIT: the bytes are in a remote layer's chunk that is not in the cache yet (it is
 * queued); retried when the fetcher reports progress (snap_eventfd). */
enum serve_rc { SERVE_OK, SERVE_DEFER, SERVE_GONE, SERVE_FATAL, SERVE_WAIT };

#define LAT_BUCKETS 24   /* log2 microseconds: [0] < 1 us ... [23] >= 4 s */

struct counters {
	uint64_t faults, fault_pages, pages_copied, pages_zeroed, bytes_copied;
	uint64_t removes, removed_pages, eagain, eexist, wakes, spurious;
	uint64_t prefetch_pages, prefetch_bytes, prefetch_ns;
	uint64_t lat[LAT_BUCKETS];
};

struct deferred {
	uint64_t addr;
	int64_t since_ms;
	uint64_t t0_ns;           /* when the fault was read (latency of faults that wait) */
	bool wait;                /* waits for a remote chunk, not an EAGAIN retry */
};

struct prefetch {
	bool active, done;
	uint64_t *trace;          /* memory-file offsets to install first */
	size_t ntrace, ti;
	size_t ri;                /* sequential pass: region, page */
	uint64_t pi;
	uint64_t step_pages;
	uint64_t t0_ns;
};

struct server {
	struct snap *s;
	struct peer *peer;
	int uffd;
	uint64_t page;
	uint64_t fa_pages;        /* fault-around window, in pages (>= 1) */
	struct region reg[64];
	size_t nreg;
	uint8_t *zero2m, *bounce; /* hugetlb only: COPY sources for zero and straddling pages */
	struct deferred *def;
	size_t ndef, capdef;
	int64_t retry_due_ms;     /* 0 = no retry pending */
	struct prefetch pf;
	bool urgent;              /* the current install is for a demand fault (remote: first in line) */
	bool pf_wait;             /* prefetch waits for a remote chunk */
	uint64_t *trace;          /* --record-trace: first demand fault order */
	size_t ntrace, captrace;
	bool record;
	struct counters c;
	char err[ERRBUF];         /* the fatal cause */
};

/* serve.c */
uint64_t mono_ns(void);
/* Install the run of pages around page p inside [lo, hi) that share p's state and source. */
enum serve_rc serve_run(struct server *S, struct region *r, uint64_t p, uint64_t lo, uint64_t hi);
bool page_bit(const uint64_t *bm, uint64_t p);

/* stats.c */
void lat_record(struct server *S, uint64_t ns);
void print_counters(const struct server *S);
void write_stats(const struct server *S, const char *path);

/* prefetch.c */
int prefetch_init(struct server *S, const char *mode, char *err);
/* One step (<= 2 MiB); SERVE_OK while there is more to do, or when finished (pf.done). */
enum serve_rc prefetch_step(struct server *S);
int trace_write(const struct server *S, const char *path, char *err);
#endif
