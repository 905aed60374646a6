/* serve.c - `serve`: the page server. Owns the event loop (epoll over the uffd, a signalfd,
 * the peer's pidfd and, for Firecracker >= 1.12, its socket), the per-page state, fault
 * handling with fault-around, REMOVE, EAGAIN deferral, counters and fail-closed exits.
 * Background prefetch lives in prefetch.c; the handshake in handshake.c.
 *
 * Each loop turn: read every queued uffd message, apply the REMOVEs of the batch first,
 * retry deferred faults, serve the batch's faults, and only then take one prefetch step
 * (<= 2 MiB), so a demand fault never waits behind more than one step.
 * The loop is its own (not common/loop.c) because it must poll with a zero timeout while
 * prefetch has work and order demand faults before prefetch within a turn.
 *
 * Remote layers (object storage): a run whose bytes are in a chunk not yet in the cache is
 * not installed; the fault waits (SERVE_WAIT) with its chunk first in the fetch queue and is
 * retried when the fetcher signals its eventfd; a failed chunk is fatal like a bad layer.
 *
 * Spec: shared/spec/uffd.md §1-2.
 */
#include "serve.h"
#include <fcntl.h>
#include <getopt.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define DEFER_RETRY_MS 1
#define DEFER_GIVE_UP_MS 10000
#define MSG_BATCH 64

uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

bool page_bit(const uint64_t *bm, uint64_t p)
{
	return bm[p >> 6] >> (p & 63) & 1;
}

static void bits_set(uint64_t *bm, uint64_t p, uint64_t n)
{
	for (; n && (p & 63); p++, n--)
		bm[p >> 6] |= 1ULL << (p & 63);
	for (; n >= 64; p += 64, n -= 64)
		bm[p >> 6] = ~0ULL;
	for (; n; p++, n--)
		bm[p >> 6] |= 1ULL << (p & 63);
}

static void bits_clear(uint64_t *bm, uint64_t p, uint64_t n)
{
	for (; n; p++, n--)
		bm[p >> 6] &= ~(1ULL << (p & 63));
}

static enum serve_rc fatal(struct server *S, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static enum serve_rc fatal(struct server *S, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(S->err, sizeof S->err, fmt, ap);
	va_end(ap);
	return SERVE_FATAL;
}

static void wake(struct server *S, struct region *r, uint64_t p, uint64_t n)
{
	struct uffdio_range rg = {.start = r->base + p * S->page, .len = n * S->page};
	ioctl(S->uffd, UFFDIO_WAKE, &rg);
	S->c.wakes++;
}

/* The kernel's answer to a COPY/ZEROPAGE that did not complete: pages done (> 0), or
 * an error. Shared by both ioctls since their result fields mean the same thing. */
static enum serve_rc ioctl_result(struct server *S, struct region *r, uint64_t *p, uint64_t *n,
				  int64_t done, int e, const char *what, const char *src)
{
	if (done > 0) {   /* partial: it stopped at a present page or a mapping change */
		uint64_t k = (uint64_t)done / S->page;
		bits_set(r->installed, *p, k);
		*p += k;
		*n -= k;
		return SERVE_OK;
	}
	if (e == EEXIST) {   /* someone else installed it: wake whoever waits on it */
		bits_set(r->installed, *p, 1);
		wake(S, r, *p, 1);
		S->c.eexist++;
		*p += 1;
		*n -= 1;
		return SERVE_OK;
	}
	if (e == EAGAIN) {   /* a REMOVE (or other mapping change) is in flight */
		S->c.eagain++;
		return SERVE_DEFER;
	}
	if (e == ESRCH)
		return SERVE_GONE;
	if (e == ENOENT) {   /* no longer registered (unmapped): nobody can wait on it */
		bits_set(r->installed, *p, *n);
		*n = 0;
		return SERVE_OK;
	}
	if (e == EFAULT && src)
		return fatal(S, "%s at 0x%llx: layer %s is unreadable (truncated?)", what,
			     (unsigned long long)(r->base + *p * S->page), src);
	return fatal(S, "%s at 0x%llx (%llu bytes): %s", what,
		     (unsigned long long)(r->base + *p * S->page),
		     (unsigned long long)(*n * S->page), strerror(e));
}

static enum serve_rc do_copy(struct server *S, struct region *r, uint64_t p, uint64_t n,
			     const uint8_t *src, const char *srcname)
{
	const uint8_t *base_src = src;
	uint64_t p0 = p;
	while (n) {
		struct uffdio_copy c = {.dst = r->base + p * S->page,
					.src = (uintptr_t)(base_src + (p - p0) * S->page),
					.len = n * S->page};
		if (!ioctl(S->uffd, UFFDIO_COPY, &c)) {
			bits_set(r->installed, p, n);
			S->c.pages_copied += n;
			S->c.bytes_copied += n * S->page;
			return SERVE_OK;
		}
		int e = errno;
		uint64_t before = n;
		enum serve_rc rc = ioctl_result(S, r, &p, &n, c.copy, e, "UFFDIO_COPY", srcname);
		if (c.copy > 0) {
			S->c.pages_copied += before - n;
			S->c.bytes_copied += (before - n) * S->page;
		}
		if (rc != SERVE_OK)
			return rc;
	}
	return SERVE_OK;
}

static enum serve_rc do_zero(struct server *S, struct region *r, uint64_t p, uint64_t n)
{
	if (S->page == PAGE_2M) {
		/* hugetlb has no ZEROPAGE: copy a zero huge page */
		for (uint64_t i = 0; i < n; i++) {
			uint64_t before = S->c.pages_copied;
			enum serve_rc rc = do_copy(S, r, p + i, 1, S->zero2m, NULL);
			uint64_t k = S->c.pages_copied - before;   /* 0 when it met EEXIST */
			S->c.pages_copied -= k;
			S->c.bytes_copied -= k * S->page;
			S->c.pages_zeroed += k;
			if (rc != SERVE_OK)
				return rc;
		}
		return SERVE_OK;
	}
	while (n) {
		struct uffdio_zeropage z = {.range = {.start = r->base + p * S->page, .len = n * S->page}};
		if (!ioctl(S->uffd, UFFDIO_ZEROPAGE, &z)) {
			bits_set(r->installed, p, n);
			S->c.pages_zeroed += n;
			return SERVE_OK;
		}
		int e = errno;
		uint64_t before = n;
		enum serve_rc rc = ioctl_result(S, r, &p, &n, z.zeropage, e, "UFFDIO_ZEROPAGE", NULL);
		if (z.zeropage > 0)
			S->c.pages_zeroed += before - n;
		if (rc != SERVE_OK)
			return rc;
	}
	return SERVE_OK;
}

/* A huge page whose bytes come from more than one mapping: assemble it, then one COPY. */
static enum serve_rc copy_assembled(struct server *S, struct region *r, uint64_t p)
{
	const struct snap *s = S->s;
	uint64_t off = r->offset + p * S->page, done = 0;
	while (done < S->page) {
		size_t i = hdr_find(&s->h, off + done);
		const struct mapping *m = &s->h.m[i];
		uint64_t take = m->off + m->len - (off + done);
		if (take > S->page - done)
			take = S->page - done;
		if (s->src[i] < 0) {
			memset(S->bounce + done, 0, take);
		} else {
			/* pread, not the mapping: a layer truncated under us must be an error, not SIGBUS */
			struct layer *L = &s->l[s->src[i]];
			off_t at = (off_t)(m->store + (off + done - m->off));
			if (!snap_ready(L, (uint64_t)at, take, S->urgent))
				return SERVE_WAIT;
			errno = 0;
			if (pread(L->fd, S->bounce + done, take, at) != (ssize_t)take)
				return fatal(S, "reading layer %s at %lld: %s", L->path, (long long)at,
					     errno ? strerror(errno) : "is truncated");
		}
		done += take;
	}
	return do_copy(S, r, p, 1, S->bounce, NULL);
}

enum serve_rc serve_run(struct server *S, struct region *r, uint64_t p, uint64_t lo, uint64_t hi)
{
	if (page_bit(r->installed, p)) {
		/* installed meanwhile (fault-around or prefetch): the waiter may still sleep */
		wake(S, r, p, 1);
		S->c.spurious++;
		return SERVE_OK;
	}
	if (page_bit(r->removed, p)) {
		uint64_t a = p, b = p + 1;
		while (a > lo && page_bit(r->removed, a - 1) && !page_bit(r->installed, a - 1))
			a--;
		while (b < hi && page_bit(r->removed, b) && !page_bit(r->installed, b))
			b++;
		return do_zero(S, r, a, b - a);
	}
	const struct snap *s = S->s;
	uint64_t off = r->offset + p * S->page;
	size_t i = hdr_find(&s->h, off);
	const struct mapping *m = &s->h.m[i];
	if (off + S->page > m->off + m->len)
		return copy_assembled(S, r, p);
	/* clip the window to the pages wholly inside this mapping */
	uint64_t first = m->off > r->offset ? (m->off - r->offset + S->page - 1) / S->page : 0;
	uint64_t last = (m->off + m->len - r->offset) / S->page;
	if (lo < first)
		lo = first;
	if (hi > last)
		hi = last;
	uint64_t a = p, b = p + 1;
	while (a > lo && !page_bit(r->installed, a - 1) && !page_bit(r->removed, a - 1))
		a--;
	while (b < hi && !page_bit(r->installed, b) && !page_bit(r->removed, b))
		b++;
	if (s->src[i] < 0)
		return do_zero(S, r, a, b - a);
	struct layer *L = &s->l[s->src[i]];
	if (L->remote) {
		/* only what the faulting page's chunk(s) hold; the page waits for them */
		uint64_t ps = m->store + (off - m->off), ch = snap_chunk_size();
		if (!snap_ready(L, ps, S->page, S->urgent))
			return SERVE_WAIT;
		uint64_t back = (ps - ps / ch * ch) / S->page;
		uint64_t fwd = ((ps + S->page + ch - 1) / ch * ch - ps) / S->page;
		if (p >= back && a < p - back)
			a = p - back;
		if (b > p + fwd)
			b = p + fwd;
	}
	uint64_t aoff = r->offset + a * S->page;
	return do_copy(S, r, a, b - a, L->map + m->store + (aoff - m->off), L->path);
}

static struct region *find_region(struct server *S, uint64_t addr)
{
	for (size_t i = 0; i < S->nreg; i++)
		if (addr >= S->reg[i].base && addr - S->reg[i].base < S->reg[i].size)
			return &S->reg[i];
	return NULL;
}

static enum serve_rc handle_fault(struct server *S, uint64_t addr, bool first)
{
	struct region *r = find_region(S, addr);
	if (!r)
		return fatal(S, "page fault at 0x%llx outside every region Firecracker sent",
			     (unsigned long long)addr);
	uint64_t p = (addr - r->base) / S->page;
	if (first && S->record && !page_bit(r->installed, p) && !page_bit(r->removed, p)) {
		if (S->ntrace == S->captrace) {
			S->captrace = S->captrace ? S->captrace * 2 : 4096;
			S->trace = xrealloc(S->trace, S->captrace * sizeof *S->trace);
		}
		S->trace[S->ntrace++] = r->offset + p * S->page;
	}
	uint64_t lo = p / S->fa_pages * S->fa_pages, hi = lo + S->fa_pages;
	if (hi > r->npages)
		hi = r->npages;
	uint64_t before = S->c.pages_copied + S->c.pages_zeroed;
	S->urgent = true;
	enum serve_rc rc = serve_run(S, r, p, lo, hi);
	/* The faulting run is in and its waiter woken. The rest of the window may come from
	 * other sources (zero-fill next to data): an ioctl each costs far less than the
	 * fault that would otherwise follow. Removed pages stay missing until touched. */
	for (uint64_t q = lo; q < hi && rc == SERVE_OK; q++)
		if (!page_bit(r->installed, q) && !page_bit(r->removed, q))
			rc = serve_run(S, r, q, q, hi);
	if ((rc == SERVE_DEFER || rc == SERVE_WAIT) && page_bit(r->installed, p))
		rc = SERVE_OK;   /* only the extra pages met a mapping change or a missing chunk */
	S->urgent = false;
	S->c.fault_pages += S->c.pages_copied + S->c.pages_zeroed - before;
	return rc;
}

static void on_remove(struct server *S, uint64_t start, uint64_t end)
{
	S->c.removes++;
	for (size_t i = 0; i < S->nreg; i++) {
		struct region *r = &S->reg[i];
		uint64_t a = start > r->base ? start : r->base;
		uint64_t b = end < r->base + r->size ? end : r->base + r->size;
		if (a >= b)
			continue;
		uint64_t p = (a - r->base) / S->page, q = (b - r->base + S->page - 1) / S->page;
		bits_set(r->removed, p, q - p);
		bits_clear(r->installed, p, q - p);
		S->c.removed_pages += q - p;
	}
}

/* A waiting fault (wait: for a remote chunk) is retried at the next wake-up of the loop,
 * which the fetcher's eventfd causes; an EAGAIN one on the timer. */
static void defer(struct server *S, uint64_t addr, int64_t since, uint64_t t0_ns, bool wait)
{
	if (S->ndef == S->capdef) {
		S->capdef = S->capdef ? S->capdef * 2 : 64;
		S->def = xrealloc(S->def, S->capdef * sizeof *S->def);
	}
	S->def[S->ndef++] = (struct deferred){addr, since, t0_ns, wait};
	if (!wait && !S->retry_due_ms)
		S->retry_due_ms = now_ms() + DEFER_RETRY_MS;
}

static enum serve_rc retry_deferred(struct server *S)
{
	size_t n = S->ndef;
	struct deferred *d = S->def;
	S->def = NULL;
	S->ndef = S->capdef = 0;
	S->retry_due_ms = 0;
	enum serve_rc rc = SERVE_OK;
	for (size_t i = 0; i < n; i++) {
		if (rc != SERVE_OK) {   /* keep the rest for later */
			defer(S, d[i].addr, d[i].since_ms, d[i].t0_ns, d[i].wait);
			continue;
		}
		rc = handle_fault(S, d[i].addr, false);
		if (rc == SERVE_OK && d[i].wait)
			lat_record(S, mono_ns() - d[i].t0_ns);
		if (rc == SERVE_DEFER) {
			if (now_ms() - d[i].since_ms > DEFER_GIVE_UP_MS) {
				rc = fatal(S, "page at 0x%llx still refused with EAGAIN after %d ms",
					   (unsigned long long)d[i].addr, DEFER_GIVE_UP_MS);
				break;
			}
			defer(S, d[i].addr, d[i].since_ms, d[i].t0_ns, false);
			rc = SERVE_OK;
		} else if (rc == SERVE_WAIT) {
			/* the fetcher fails a chunk within its budget; this is only a hang guard */
			if (now_ms() - d[i].since_ms > snap_fetch_timeout_ms() + DEFER_GIVE_UP_MS) {
				rc = fatal(S, "page at 0x%llx: its remote chunk is still missing after %lld ms",
					   (unsigned long long)d[i].addr, (long long)(now_ms() - d[i].since_ms));
				break;
			}
			defer(S, d[i].addr, d[i].since_ms, d[i].t0_ns, true);
			rc = SERVE_OK;
		}
	}
	free(d);
	return rc;
}

/* Read every queued message; REMOVEs of a batch before its faults. */
static enum serve_rc drain(struct server *S)
{
	struct uffd_msg msg[MSG_BATCH];
	for (;;) {
		ssize_t n = read(S->uffd, msg, sizeof msg);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			return fatal(S, "reading the uffd: %s", strerror(errno));
		}
		if (!n)
			return fatal(S, "reading the uffd: end of file");
		size_t k = (size_t)n / sizeof msg[0];
		bool removed = false;
		for (size_t i = 0; i < k; i++)
			if (msg[i].event == UFFD_EVENT_REMOVE) {
				on_remove(S, msg[i].arg.remove.start, msg[i].arg.remove.end);
				removed = true;
			}
		if (S->ndef && (removed || now_ms() >= S->retry_due_ms)) {
			enum serve_rc rc = retry_deferred(S);
			if (rc != SERVE_OK)
				return rc;
		}
		for (size_t i = 0; i < k; i++) {
			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			uint64_t t0 = mono_ns();
			uint64_t addr = msg[i].arg.pagefault.address & ~(S->page - 1);
			S->c.faults++;
			enum serve_rc rc = handle_fault(S, addr, true);
			if (rc == SERVE_DEFER || rc == SERVE_WAIT)
				defer(S, addr, now_ms(), t0, rc == SERVE_WAIT);
			else if (rc != SERVE_OK)
				return rc;
			else
				lat_record(S, mono_ns() - t0);
		}
		if (k < MSG_BATCH)
			break;
	}
	if (S->ndef && now_ms() >= S->retry_due_ms)
		return retry_deferred(S);
	return SERVE_OK;
}

/* ---- set-up and the loop ------------------------------------------------------------------ */
static int setup_regions(struct server *S, const struct handshake *h, char *err)
{
	S->page = h->page;
	S->nreg = h->n;
	for (size_t i = 0; i < h->n; i++) {
		struct region *r = &S->reg[i];
		r->base = h->r[i].base;
		r->size = h->r[i].size;
		r->offset = h->r[i].offset;
		r->npages = r->size / S->page;
		if (r->offset > S->s->h.size || r->size > S->s->h.size - r->offset)
			return errf(err, "handshake: region %zu (offset %llu, size %llu) lies beyond the snapshot's %llu bytes",
				    i, (unsigned long long)r->offset, (unsigned long long)r->size,
				    (unsigned long long)S->s->h.size);
		size_t words = (r->npages + 63) / 64;
		r->installed = xcalloc(words, 8);
		r->removed = xcalloc(words, 8);
	}
	if (S->page == PAGE_2M) {
		S->zero2m = aligned_alloc(4096, PAGE_2M);
		S->bounce = aligned_alloc(4096, PAGE_2M);
		if (!S->zero2m || !S->bounce)
			return errf(err, "out of memory");
		memset(S->zero2m, 0, PAGE_2M);
	}
	return 0;
}

struct serve_opts {
	const char *socket, *header, *dir, *prefetch, *record, *stats;
	char **layers;
	int nlayers;
	unsigned long long fault_around;
	long long accept_ms;
	int ready_fd;
	mode_t sock_mode;
	gid_t sock_gid;
};

static void server_free(struct server *S)
{
	for (size_t i = 0; i < S->nreg; i++) {
		free(S->reg[i].installed);
		free(S->reg[i].removed);
	}
	free(S->zero2m);
	free(S->bounce);
	free(S->def);
	free(S->trace);
	free(S->pf.trace);
}

static int finish(struct server *S, const struct serve_opts *o, int code)
{
	if (S->uffd < 0)   /* the handshake failed: nothing was served */
		return code;
	print_counters(S);
	if (o->stats)
		write_stats(S, o->stats);
	if (o->record && code == EXIT_OK) {
		char err[ERRBUF];
		if (trace_write(S, o->record, err))
			warnx("serve: %s", err);
	}
	return code;
}

static int fail_closed(struct server *S, const struct serve_opts *o)
{
	peer_kill(S->peer);
	warnx("serve: %s; killed Firecracker (pid %d)", S->err, (int)S->peer->pid);
	return finish(S, o, EXIT_FAIL);
}

static int run_loop(struct server *S, const struct serve_opts *o, int keep_sock, int sfd)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		snprintf(S->err, sizeof S->err, "epoll/signalfd: %s", strerror(errno));
		return fail_closed(S, o);
	}
	struct epoll_event ev = {.events = EPOLLIN};
	ev.data.fd = S->uffd;
	epoll_ctl(ep, EPOLL_CTL_ADD, S->uffd, &ev);
	ev.data.fd = sfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
	if (S->peer->pidfd >= 0) {
		ev.data.fd = S->peer->pidfd;
		epoll_ctl(ep, EPOLL_CTL_ADD, S->peer->pidfd, &ev);
	}
	if (keep_sock >= 0) {
		ev.events = EPOLLRDHUP;
		ev.data.fd = keep_sock;
		epoll_ctl(ep, EPOLL_CTL_ADD, keep_sock, &ev);
	}
	int rfd = snap_eventfd();   /* remote layers: a chunk arrived or failed */
	if (rfd >= 0) {
		ev.events = EPOLLIN;
		ev.data.fd = rfd;
		epoll_ctl(ep, EPOLL_CTL_ADD, rfd, &ev);
	}
	int code = -1;
	while (code < 0) {
		/* block, unless a retry is due (deferred faults, or prefetch after EAGAIN) or
		 * prefetch has work */
		bool prefetching = S->pf.active && !S->pf.done && !S->ndef && !S->pf_wait;
		int timeout = -1;
		if (S->retry_due_ms) {
			int64_t left = S->retry_due_ms - now_ms();
			timeout = left > 0 ? (int)left : 0;
		} else if (prefetching) {
			timeout = 0;
		}
		struct epoll_event evs[8];
		int n = epoll_wait(ep, evs, 8, timeout);
		if (n < 0 && errno != EINTR) {
			snprintf(S->err, sizeof S->err, "epoll_wait: %s", strerror(errno));
			code = fail_closed(S, o);
			break;
		}
		bool gone = false;
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == sfd) {
				struct signalfd_siginfo si;
				while (read(sfd, &si, sizeof si) == sizeof si) {
					if (si.ssi_signo == SIGUSR1) {
						print_counters(S);
						if (o->stats)
							write_stats(S, o->stats);
					} else {
						snprintf(S->err, sizeof S->err, "stopped by signal %u", si.ssi_signo);
						code = fail_closed(S, o);
					}
				}
			} else if (fd == rfd) {
				char e[ERRBUF];
				S->pf_wait = false;
				if (snap_poll(e)) {
					snprintf(S->err, sizeof S->err, "fetching %.230s", e);
					code = fail_closed(S, o);
				}
			} else if (fd == S->peer->pidfd || fd == keep_sock) {
				gone = true;
			} else if (fd == S->uffd && (evs[i].events & (EPOLLERR | EPOLLHUP))) {
				gone = true;   /* never seen in practice: do not spin on it */
			}
		}
		if (code >= 0)
			break;
		enum serve_rc rc = gone ? SERVE_GONE : drain(S);
		if (rc == SERVE_OK && S->pf.active && !S->pf.done && !S->ndef && !S->pf_wait &&
		    (!S->retry_due_ms || now_ms() >= S->retry_due_ms)) {
			S->retry_due_ms = 0;
			rc = prefetch_step(S);
			if (rc == SERVE_WAIT) {   /* its chunk is on the way: the eventfd resumes it */
				S->pf_wait = true;
				rc = SERVE_OK;
			}
		}
		if (rc == SERVE_DEFER) {   /* prefetch met a mapping change: try again shortly */
			if (!S->retry_due_ms)
				S->retry_due_ms = now_ms() + DEFER_RETRY_MS;
			rc = SERVE_OK;
		}
		if (rc == SERVE_GONE)
			code = finish(S, o, EXIT_OK);
		else if (rc == SERVE_FATAL)
			code = fail_closed(S, o);
	}
	close(ep);
	return code;
}

/* Remote layers with --prefetch: every chunk the regions need, in the order the prefetch
 * installs them (the trace's pages first), queued behind demand faults at once, so they are
 * fetched --fetch-concurrency at a time while the prefetch walks. Zero-fill is never fetched. */
static void queue_remote_prefetch(struct server *S)
{
	struct snap *s = S->s;
	bool any = false;
	for (size_t k = 0; k < s->nl; k++)
		any |= s->l[k].remote != NULL;
	if (!any)
		return;
	for (size_t t = 0; t < S->pf.ntrace; t++) {
		uint64_t off = S->pf.trace[t];
		if (off >= s->h.size)
			continue;
		size_t i = hdr_find(&s->h, off);
		if (s->src[i] >= 0)
			snap_prefetch(&s->l[s->src[i]], s->h.m[i].store + (off - s->h.m[i].off), S->page);
	}
	for (size_t g = 0; g < S->nreg; g++) {
		const struct region *r = &S->reg[g];
		for (size_t i = hdr_find(&s->h, r->offset); i < s->h.n && s->h.m[i].off < r->offset + r->size; i++) {
			const struct mapping *m = &s->h.m[i];
			if (s->src[i] < 0)
				continue;
			uint64_t a = m->off > r->offset ? m->off : r->offset;
			uint64_t b = m->off + m->len < r->offset + r->size ? m->off + m->len : r->offset + r->size;
			snap_prefetch(&s->l[s->src[i]], m->store + (a - m->off), b - a);
		}
	}
}

/* While Firecracker starts: read the layers into the page cache and our page tables, so no
 * COPY pays for a page-cache miss or a fault on its source (Linux >= 5.14). In 32 MiB steps,
 * stopping as soon as Firecracker connects: a large layer on a slow disk must not delay it. */
static void populate_layers(const struct snap *s, int lfd)
{
	const uint64_t step = 32ULL << 20;
	for (size_t k = 0; k < s->nl; k++) {
		if (s->l[k].remote)
			continue;   /* a cache file: its chunks are not there yet */
		for (uint64_t off = 0; s->l[k].map && off < s->l[k].size; off += step) {
			if (fd_wait(lfd, POLLIN, 0) != 0)
				return;
			uint64_t n = s->l[k].size - off < step ? s->l[k].size - off : step;
			if (madvise((void *)(s->l[k].map + off), n, MADV_POPULATE_READ))
				return;   /* an older kernel: the faults happen in the COPYs instead */
		}
	}
}

static const char serve_usage[] =
	"usage: serve --socket PATH --header FILE [--layer UUID=FILE ...|--dir SNAPDIR] "
	"[--prefetch none|all|trace:FILE] [--fault-around 64K] [--record-trace FILE] [--stats FILE] "
	"[--accept-timeout 60s] [--ready-fd N] [--socket-mode 600] [--socket-group GID] "
	SNAP_REMOTE_USAGE;

int cmd_serve(int argc, char **argv)
{
	static const struct option opts[] = {
		{"socket", required_argument, NULL, 's'},
		{"header", required_argument, NULL, 'H'},
		{"layer", required_argument, NULL, 'l'},
		{"dir", required_argument, NULL, 'd'},
		{"prefetch", required_argument, NULL, 'p'},
		{"fault-around", required_argument, NULL, 'f'},
		{"record-trace", required_argument, NULL, 'r'},
		{"stats", required_argument, NULL, 'S'},
		{"accept-timeout", required_argument, NULL, 'a'},
		{"ready-fd", required_argument, NULL, 'R'},
		{"socket-mode", required_argument, NULL, 'M'},
		{"socket-group", required_argument, NULL, 'G'},
		SNAP_REMOTE_OPTIONS,
		{0},
	};
	struct serve_opts o = {.prefetch = "none", .fault_around = 64 * 1024, .accept_ms = 60000,
			       .ready_fd = -1, .sock_mode = 0600, .sock_gid = (gid_t)-1};
	char *layers[64];
	o.layers = layers;
	int c;
	char *end;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': o.socket = optarg; break;
		case 'H': o.header = optarg; break;
		case 'l':
			if (o.nlayers == (int)ARRAY_SIZE(layers))
				return usage_error("more than %zu --layer options", ARRAY_SIZE(layers));
			layers[o.nlayers++] = optarg;
			break;
		case 'd': o.dir = optarg; break;
		case 'p': o.prefetch = optarg; break;
		case 'r': o.record = optarg; break;
		case 'S': o.stats = optarg; break;
		case 'f':
			if (parse_size(optarg, &o.fault_around) || o.fault_around > (1ULL << 30) ||
			    (o.fault_around & (o.fault_around - 1)))
				return usage_error("--fault-around: '%s' is not a power of two up to 1G", optarg);
			break;
		case 'a':
			if (parse_duration_ms(optarg, &o.accept_ms) || o.accept_ms <= 0 || o.accept_ms > INT32_MAX)
				return usage_error("--accept-timeout: bad duration '%s'", optarg);
			break;
		case 'R':
			o.ready_fd = (int)strtol(optarg, &end, 10);
			if (*end || o.ready_fd < 0)
				return usage_error("--ready-fd: bad fd '%s'", optarg);
			break;
		case 'M':
			o.sock_mode = (mode_t)strtoul(optarg, &end, 8);
			if (*end || !*optarg || o.sock_mode > 0777)
				return usage_error("--socket-mode: bad octal mode '%s'", optarg);
			break;
		case 'G':
			o.sock_gid = (gid_t)strtoul(optarg, &end, 10);
			if (*end || !*optarg)
				return usage_error("--socket-group: bad gid '%s'", optarg);
			break;
		default: {
			int r = snap_remote_opt(c, optarg);
			if (r)
				return r > 0 ? r : usage_error("%s", serve_usage);
		}
		}
	}
	if (optind != argc || !o.socket || (!o.header && !o.dir))
		return usage_error("%s", serve_usage);
	if (strcmp(o.prefetch, "none") && strcmp(o.prefetch, "all") && strncmp(o.prefetch, "trace:", 6))
		return usage_error("--prefetch must be none, all or trace:FILE");
	char err[ERRBUF];
	char *hp = o.header ? xstrdup(o.header) : snap_header_path(o.dir);
	struct snap s;
	if (snap_open(&s, hp, o.dir, layers, o.nlayers, err))
		die(EXIT_FAIL, "serve: %s", err);
	free(hp);
	struct server S = {.s = &s, .uffd = -1};
	S.record = o.record != NULL;
	if (prefetch_init(&S, o.prefetch, err))
		die(EXIT_FAIL, "serve: %s", err);
	signal(SIGPIPE, SIG_IGN);
	/* blocked from the start: SIGUSR1 while waiting for Firecracker must not kill us */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		die_sys(EXIT_FAIL, "serve: signalfd");

	int lfd = hs_listen(o.socket, o.sock_mode, o.sock_gid, err);
	if (lfd < 0)
		die(EXIT_FAIL, "serve: %s", err);
	if (o.ready_fd >= 0) {
		dprintf(o.ready_fd, "listening %s\n", o.socket);
		close(o.ready_fd);
	}
	log_info("listening", "socket=%s header=%s", o.socket, s.hdr_path);
	populate_layers(&s, lfd);
	struct peer peer;
	S.peer = &peer;
	if (hs_accept(lfd, sfd, (int)o.accept_ms, &peer, err)) {
		close(lfd);
		unlink(o.socket);
		bool timeout = peer.sock < 0 && strstr(err, "no connection");
		if (peer.sock >= 0) {
			peer_kill(&peer);
			die(EXIT_FAIL, "serve: %s; killed Firecracker (pid %d)", err, (int)peer.pid);
		}
		die(timeout ? EXIT_CONN : EXIT_FAIL, "serve: %s", err);
	}
	close(lfd);
	unlink(o.socket);
	struct handshake hs = {0}, *h = &hs;
	if (hs_receive(&peer, (int)o.accept_ms, h, err) || setup_regions(&S, h, err)) {
		snprintf(S.err, sizeof S.err, "%s", err);
		int code = fail_closed(&S, &o);
		server_free(&S);
		snap_close(&s);
		return code;
	}
	S.uffd = h->uffd;
	uint64_t fa = o.fault_around < S.page ? S.page : o.fault_around;
	S.fa_pages = fa / S.page;
	S.pf.t0_ns = mono_ns();
	if (S.pf.active)
		queue_remote_prefetch(&S);
	log_info("serving", "pid=%d regions=%zu page=%llu fault_around=%llu prefetch=%s", (int)peer.pid,
		 h->n, (unsigned long long)S.page, (unsigned long long)fa, o.prefetch);
	/* up to 1.11 Firecracker closes its end after sending; from 1.12 it holds it until exit */
	int keep = h->has_page_size ? peer.sock : -1;
	if (keep < 0) {
		close(peer.sock);
		peer.sock = -1;
	}
	int code = run_loop(&S, &o, keep, sfd);
	close(sfd);
	if (peer.sock >= 0)
		close(peer.sock);
	if (peer.pidfd >= 0)
		close(peer.pidfd);
	close(S.uffd);
	server_free(&S);
	snap_close(&s);
	return code;
}
