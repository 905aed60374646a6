/* serve.h - the page server's state: one server (the snapshot, opened and mapped once, the
 * listening socket, the loop) serving many clones (one per Firecracker connection, each with
 * its own handshake, peer, regions, per-page state, deferred faults, prefetch cursor and
 * counters). Shared by serve.c (the loop and the clones' lives), fault.c (faults, REMOVE,
 * EAGAIN deferral), prefetch.c (background installation, traces) and stats.c (counters). */
#ifndef STEREO_UFFD_SERVE_H
#define STEREO_UFFD_SERVE_H
#include "uffd.h"
#include <pthread.h>

/* Per-page state, two bits per page: installed (a page is mapped, by us or a racing copy)
 * and removed (a REMOVE event dropped it: it must read back as zeros, never as snapshot
 * data). Not installed + not removed = missing, served from the snapshot. */
struct region {
	uint64_t base, size, offset, npages;
	uint64_t *installed, *removed;
};

enum serve_rc { SERVE_OK, SERVE_DEFER, SERVE_GONE, SERVE_FATAL };

#define LAT_BUCKETS 24   /* log2 microseconds: [0] < 1 us ... [23] >= 4 s */

struct counters {
	uint64_t faults, fault_pages, pages_copied, pages_zeroed, bytes_copied;
	uint64_t removes, removed_pages, eagain, eexist, wakes, spurious, layer_waits;
	uint64_t prefetch_pages, prefetch_bytes, prefetch_ns;
	uint64_t trace_pages;     /* --prefetch trace: pages installed from the trace, in its order */
	uint64_t lat[LAT_BUCKETS];
};

/* A fault that could not be served yet: the kernel said EAGAIN (a REMOVE in flight), or its
 * layer range is not available yet (layer_get said LAYER_WAIT). Retried on the clone's timer
 * and whenever the server is woken (serve_wake). A fixed array per clone: when it is nearly
 * full the clone's uffd is not read (its faults wait in the kernel), so it never grows. */
struct deferred {
	uint64_t addr;
	int64_t since_ms;
	bool layer;               /* waiting for its layer range, not for the kernel */
};
#define DEFER_MAX 256

struct prefetch {
	bool active, done;
	size_t ti;                /* next entry of the server's trace */
	size_t ri;                /* sequential pass: region, page */
	uint64_t pi;
	uint64_t step_pages;
	uint64_t t0_ns;
};

enum clone_state { CL_HANDSHAKE, CL_SERVING, CL_DEAD };

struct server;
struct clone;

/* A serving loop: the main thread is worker 0; more are started as clones come, up to
 * --threads (default 64: a loop per clone). A clone is served by one worker from its handshake to its end; a worker holds
 * its mutex while it works on its clones (outside epoll_wait), so the main thread can read
 * their counters and end them (SIGTERM) under that mutex. */
struct worker {
	struct server *S;
	unsigned idx;
	int ep, evfd;             /* evfd: wakes the loop (a clone handed over, a wake-up, quit) */
	bool started;
	pthread_t th;
	pthread_mutex_t mu;
	struct clone **cl;        /* its clones being served */
	size_t ncl, capcl;
	size_t nlive;             /* under S->mu: how many clones it serves (for placement) */
	unsigned rr;              /* prefetch round robin */
	int wake, quit;           /* atomics: serve_wake / stop */
	uint8_t *bounce;          /* hugetlb only: a straddling page is assembled here */
};
#define WORKERS_MAX 64

struct clone {
	struct server *S;
	struct worker *W;         /* the loop serving it (NULL during the handshake) */
	unsigned id;              /* 1, 2, ... in order of handshake (0 before it) */
	unsigned key;             /* the loop's name for it, from its accept */
	enum clone_state state;
	struct peer peer;
	int uffd;
	int keep_sock;            /* Firecracker >= 1.12 holds its socket until it exits; else -1 */
	int64_t hs_deadline_ms;   /* handshake: the message must come by then */
	uint64_t page;
	uint64_t fa_pages;        /* fault-around window, in pages (>= 1) */
	struct region reg[64];
	size_t nreg;
	uint64_t npages;          /* all regions */
	struct deferred def[DEFER_MAX];
	size_t ndef;
	int64_t retry_due_ms;     /* 0 = no retry pending */
	bool layer_wait;          /* the last SERVE_DEFER came from layer_get/layer_read */
	struct prefetch pf;
	uint64_t pf_first[16];    /* memory-file offsets where the first prefetch runs began */
	unsigned npf_first;
	uint64_t *trace;          /* --record-trace (the first clone only): first-fault order */
	size_t ntrace, captrace;
	bool record;
	bool killed;              /* we killed its Firecracker (fail closed) */
	struct counters c;
	char err[ERRBUF];         /* the fatal cause */
};

/* What a finished clone leaves for the stats (a ring of the most recent ones). */
struct clone_summary {
	unsigned id;
	pid_t pid;
	bool killed, prefetch_done;
	uint64_t npages;
	uint64_t pf_first[16];
	unsigned npf_first;
	struct counters c;
};
#define SUMMARY_RING 64

/* An extra fd on the serve loop (for layer sources that complete work asynchronously):
 * when it is readable, cb runs; it calls serve_wake when deferred faults may go on. */
struct watch {
	int fd;
	void (*cb)(struct server *S, void *ctx);
	void *ctx;
};

struct serve_opts {
	const char *socket, *header, *dir, *prefetch, *record, *stats;
	char **layers;
	int nlayers;
	unsigned long long fault_around;
	long long accept_ms;
	int ready_fd;
	mode_t sock_mode;
	gid_t sock_gid;
	unsigned max_clones;      /* 0 = unlimited */
	unsigned threads;         /* serving loops, 1..WORKERS_MAX */
};

struct server {
	struct snap *s;
	const struct serve_opts *o;
	int sfd;
	struct hs_listener listener;
	struct clone **hs;        /* connections in handshake (the main thread's) */
	size_t nhs, caphs;
	struct worker w[WORKERS_MAX];
	unsigned nw;              /* --threads */
	unsigned accepted;        /* clones counted so far: those that sent their message */
	unsigned nextkey;
	pthread_mutex_t mu;       /* what follows, shared by the workers */
	size_t live;              /* clones being served */
	bool any_killed;
	struct counters gone;     /* the counters of every clone that has finished */
	unsigned ngone;
	struct clone_summary ring[SUMMARY_RING];
	char *hsbuf;              /* the handshake message buffer (main thread only) */
	uint8_t *zero2m;          /* hugetlb only: the COPY source for a zero page (read-only) */
	uint64_t *trace;          /* --prefetch trace:FILE, shared by every clone (read-only) */
	size_t ntrace;
	bool prefetch_all;
	struct watch watch[4];
	size_t nwatch;
};

/* Every clone being served; the caller holds every worker's mutex (or they have stopped). */
#define FOR_EACH_CLONE(S, C)                                                  \
	for (unsigned _w = 0; _w < (S)->nw; _w++)                             \
		for (size_t _i = 0; _i < (S)->w[_w].ncl && ((C) = (S)->w[_w].cl[_i], 1); _i++)

/* serve.c */
uint64_t mono_ns(void);
/* Deferred faults of every clone are retried in the next turn of every loop (a layer range
 * came in). Safe from any thread. */
void serve_wake(struct server *S);
/* Put fd on the main loop; cb runs there (holding worker 0's mutex only) when fd is readable.
 * -1 when the table (4) is full. */
int serve_watch_fd(struct server *S, int fd, void (*cb)(struct server *S, void *ctx), void *ctx);

/* fault.c */
bool page_bit(const uint64_t *bm, uint64_t p);
/* Install the run of pages around page p inside [lo, hi) that share p's state and source. */
enum serve_rc serve_run(struct clone *C, struct region *r, uint64_t p, uint64_t lo, uint64_t hi);
/* One turn for a clone: at most one batch of messages from its uffd, REMOVEs first, then
 * the deferred faults when due (or woken), then the batch's faults. */
enum serve_rc clone_turn(struct clone *C, bool readable, bool woken);
enum serve_rc clone_fail(struct clone *C, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* stats.c */
void lat_record(struct clone *C, uint64_t ns);
void print_counters(const struct server *S);
void print_clone(const struct clone *C, const char *what);
void write_stats(const struct server *S, const char *path);
void stats_add(struct counters *to, const struct counters *c);

/* prefetch.c */
int prefetch_load(struct server *S, const char *mode, char *err);
void prefetch_init(struct clone *C);
/* One step (<= 2 MiB); SERVE_OK while there is more to do, or when finished (pf.done). */
enum serve_rc prefetch_step(struct clone *C);
int trace_write(const struct clone *C, const char *path, char *err);
#endif
