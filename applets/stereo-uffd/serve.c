/* serve.c - `serve`: the page server for many clones of one snapshot. Owns the serving loops
 * (the main thread's, and up to --threads - 1 workers started as clones come), the clones'
 * lives (accept, handshake, hand-over to a loop, end), the clone limit, fairness, the die hook,
 * signals and the fail-closed exits. One clone's faults live in fault.c, prefetch in
 * prefetch.c, counters in stats.c, the handshake's bytes in handshake.c.
 *
 * The main thread's loop watches the listening socket, a signalfd, the connections in
 * handshake and the clones it serves itself; each worker's loop only its clones. A clone is
 * handed to the loop with the fewest clones at its handshake (the main thread's first), so
 * one clone is served exactly as by a single-threaded server, and by default (--threads 64)
 * each of up to 64 clones has a loop of its own, scheduled like N separate servers would be.
 *
 * A loop turn: its ready events (peers gone first, then, on the main loop, signals, new
 * connections, handshake messages), then for each of its clones at most one batch of uffd
 * messages (REMOVEs first, deferred faults when due, then the faults), and only when none of
 * its clones had a fault waiting, one prefetch step (<= 2 MiB) for one clone, round robin. So
 * no clone's fault storm or prefetch delays another clone's fault by more than one turn.
 * The loop is its own (not common/loop.c) because it must poll with a zero timeout while
 * prefetch has work and order demand faults before prefetch within a turn.
 *
 * Fail closed: a clone's fatal error kills that clone's Firecracker only; a die() anywhere
 * (the die hook) or SIGTERM/SIGINT/SIGHUP kills every Firecracker still served. After
 * start-up nothing here exits on a failed allocation: a clone's memory is allocated at its
 * handshake, and when that fails the clone is killed and the others go on.
 *
 * Locks: a loop holds its worker's mutex while it works (not in epoll_wait); the main thread
 * takes the others' (in index order) to read counters or to end their clones on SIGTERM; the
 * server's mutex (taken last) guards the finished clones' counters and the live count.
 */
#include "serve.h"
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

enum { EV_LISTEN, EV_SIGNAL, EV_UFFD, EV_PIDFD, EV_SOCK, EV_WATCH, EV_EVFD };
#define EV(kind, key) ((uint64_t)(key) << 3 | (kind))

uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void poke(struct worker *W)
{
	uint64_t one = 1;
	if (W->evfd >= 0 && write(W->evfd, &one, sizeof one) < 0) {
		/* the counter is full: the loop is awake anyway */
	}
}

void serve_wake(struct server *S)
{
	for (unsigned i = 0; i < S->nw; i++)
		if (S->w[i].started) {
			__atomic_store_n(&S->w[i].wake, 1, __ATOMIC_RELEASE);
			poke(&S->w[i]);
		}
}

int serve_watch_fd(struct server *S, int fd, void (*cb)(struct server *S, void *ctx), void *ctx)
{
	if (S->nwatch == ARRAY_SIZE(S->watch))
		return -1;
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EV(EV_WATCH, S->nwatch)};
	if (epoll_ctl(S->w[0].ep, EPOLL_CTL_ADD, fd, &ev))
		return -1;
	S->watch[S->nwatch++] = (struct watch){fd, cb, ctx};
	return 0;
}

/* Remote layers: a chunk arrived (or failed, which the clone that needs it learns from
 * layer_get): every deferred fault and waiting prefetch tries again. */
static void remote_progress(struct server *S, void *ctx)
{
	(void)ctx;
	char err[ERRBUF];
	snap_poll(err);
	serve_wake(S);
}

/* Remote layers with --prefetch: every chunk the clone's regions need, in the order its
 * prefetch installs them (the trace's pages first), queued behind demand faults at once, so
 * they are fetched --fetch-concurrency at a time while the prefetch walks. Chunks already
 * cached or queued (another clone) are skipped; zero-fill is never fetched. */
static void queue_remote_prefetch(struct clone *C)
{
	struct snap *s = C->S->s;
	if (!snap_chunk(s))
		return;
	for (size_t t = 0; t < C->S->ntrace; t++) {
		uint64_t off = C->S->trace[t];
		if (off >= s->h.size)
			continue;
		size_t i = hdr_find(&s->h, off);
		if (s->src[i] >= 0)
			snap_prefetch(&s->l[s->src[i]], s->h.m[i].store + (off - s->h.m[i].off), C->page);
	}
	for (size_t g = 0; g < C->nreg; g++) {
		const struct region *r = &C->reg[g];
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

static int ep_add(int ep, int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev = {.events = events, .data.u64 = data};
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

/* The die hook: whatever fails, no Firecracker we serve is left with its vCPUs waiting. */
static void kill_all(void *ctx)
{
	struct server *S = ctx;
	struct clone *C;
	FOR_EACH_CLONE(S, C)
		if (C->state != CL_DEAD)
			peer_kill(&C->peer);
	for (size_t i = 0; i < S->nhs; i++)
		peer_kill(&S->hs[i]->peer);
}

/* Every worker's mutex but the main thread's own (held by its loop), then the server's. */
static void lock_all(struct server *S)
{
	for (unsigned i = 1; i < S->nw; i++)
		if (S->w[i].started)
			pthread_mutex_lock(&S->w[i].mu);
	pthread_mutex_lock(&S->mu);
}

static void unlock_all(struct server *S)
{
	pthread_mutex_unlock(&S->mu);
	for (unsigned i = S->nw; i-- > 1;)
		if (S->w[i].started)
			pthread_mutex_unlock(&S->w[i].mu);
}

static void clone_free(struct clone *C)
{
	for (size_t i = 0; i < C->nreg; i++) {
		free(C->reg[i].installed);
		free(C->reg[i].removed);
	}
	free(C->trace);
	free(C);
}

/* The end of a clone: kill its Firecracker when asked (fail closed) unless it has already
 * gone, log, keep its counters, close its fds. It leaves its list in reap(). Called by the
 * loop that owns it (or the main thread holding that loop's mutex). */
static void clone_end(struct clone *C, bool kill)
{
	struct server *S = C->S;
	if (C->state == CL_DEAD)
		return;
	if (kill) {
		char name[32] = "";
		if (C->id)
			snprintf(name, sizeof name, "clone %u: ", C->id);
		C->killed = peer_kill(&C->peer) > 0;
		if (C->killed)
			warnx("serve: %s%s; killed Firecracker (pid %d)", name, C->err, (int)C->peer.pid);
		else
			warnx("serve: %s%s; Firecracker (pid %d) had already exited", name, C->err,
			      (int)C->peer.pid);
	}
	if (C->state == CL_SERVING) {
		print_clone(C, C->killed ? "killed" : "gone");
		if (C->record && !C->killed) {
			char err[ERRBUF];
			if (trace_write(C, S->o->record, err))
				warnx("serve: %s", err);
		}
		log_info("clone gone", "clone=%u pid=%d end=%s", C->id, (int)C->peer.pid,
			 C->killed ? "kill" : "exit");
	}
	pthread_mutex_lock(&S->mu);
	if (C->killed)
		S->any_killed = true;
	if (C->state == CL_SERVING) {
		struct clone_summary *g = &S->ring[S->ngone % SUMMARY_RING];
		*g = (struct clone_summary){.id = C->id, .pid = C->peer.pid, .killed = C->killed,
					    .prefetch_done = C->pf.done, .npages = C->npages,
					    .npf_first = C->npf_first, .c = C->c};
		memcpy(g->pf_first, C->pf_first, sizeof g->pf_first);
		S->ngone++;
		stats_add(&S->gone, &C->c);
		S->live--;
		C->W->nlive--;
	}
	pthread_mutex_unlock(&S->mu);
	/* Firecracker holds the same open uffd: closing ours would not take it off the loop */
	if (C->uffd >= 0 && C->W)
		epoll_ctl(C->W->ep, EPOLL_CTL_DEL, C->uffd, NULL);
	if (C->uffd >= 0)
		close(C->uffd);
	if (C->peer.sock >= 0)
		close(C->peer.sock);
	if (C->peer.pidfd >= 0)
		close(C->peer.pidfd);
	C->uffd = C->peer.sock = C->peer.pidfd = -1;
	if (C->state == CL_SERVING && C->W != &S->w[0])
		poke(&S->w[0]);   /* the main loop decides whether that was the last clone */
	C->state = CL_DEAD;
}

static void reap(struct clone **cl, size_t *n)
{
	size_t k = 0;
	for (size_t i = 0; i < *n; i++) {
		if (cl[i]->state == CL_DEAD)
			clone_free(cl[i]);
		else
			cl[k++] = cl[i];
	}
	*n = k;
}

static struct clone *find_key(struct clone **cl, size_t n, unsigned key)
{
	for (size_t i = 0; i < n; i++)
		if (cl[i]->key == key)
			return cl[i];
	return NULL;
}

/* Append to a list that may grow; -1 when it cannot (the caller kills the clone). */
static int list_add(struct clone ***cl, size_t *n, size_t *cap, struct clone *C)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 8;
		struct clone **p = realloc(*cl, nc * sizeof *p);
		if (!p)
			return -1;
		*cl = p;
		*cap = nc;
	}
	(*cl)[(*n)++] = C;
	return 0;
}

static void drop_peer(struct peer *p)
{
	close(p->sock);
	if (p->pidfd >= 0)
		close(p->pidfd);
}

/* New connections: clones in handshake, or, past --clones, peers killed at once. */
static void on_accept(struct server *S)
{
	for (;;) {
		struct peer p;
		char err[ERRBUF];
		int r = hs_accept(S->listener.fd, &p, err);
		if (!r)
			return;
		if (r < 0) {
			if (p.sock < 0) {
				warnx("serve: %s", err);
				return;   /* accept itself failed: not now (epoll tells again) */
			}
			if (peer_kill(&p) > 0) {
				pthread_mutex_lock(&S->mu);
				S->any_killed = true;
				pthread_mutex_unlock(&S->mu);
			}
			warnx("serve: %s; killed Firecracker (pid %d)", err, (int)p.pid);
			drop_peer(&p);
			continue;
		}
		struct clone *C = NULL;
		const char *why = NULL;
		if (S->o->max_clones && S->accepted >= S->o->max_clones)
			why = "the clone limit (--clones) is reached";
		else if (!(C = calloc(1, sizeof *C)) || list_add(&S->hs, &S->nhs, &S->caphs, C))
			why = "out of memory";
		if (why) {
			free(C);
			if (peer_kill(&p) > 0) {
				pthread_mutex_lock(&S->mu);
				S->any_killed = true;
				pthread_mutex_unlock(&S->mu);
			}
			warnx("serve: %s (%u served); killed Firecracker (pid %d)", why, S->accepted, (int)p.pid);
			drop_peer(&p);
			continue;
		}
		C->S = S;
		C->key = ++S->nextkey;
		C->state = CL_HANDSHAKE;
		C->peer = p;
		C->uffd = C->keep_sock = -1;
		C->hs_deadline_ms = now_ms() + S->o->accept_ms;
		ep_add(S->w[0].ep, p.sock, EPOLLIN | EPOLLRDHUP, EV(EV_SOCK, C->key));
		if (p.pidfd >= 0)
			ep_add(S->w[0].ep, p.pidfd, EPOLLIN, EV(EV_PIDFD, C->key));
	}
}

static void *worker_main(void *arg);

/* The loop with the fewest clones (the main thread's on a tie); a worker not running yet is
 * started here (when that fails, the main thread's loop takes the clone). */
static struct worker *place(struct server *S)
{
	struct worker *best = &S->w[0];
	pthread_mutex_lock(&S->mu);
	for (unsigned i = 1; i < S->nw; i++)
		if (S->w[i].nlive < best->nlive)
			best = &S->w[i];
	pthread_mutex_unlock(&S->mu);
	if (best->started)
		return best;
	best->ep = epoll_create1(EPOLL_CLOEXEC);
	best->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (best->ep < 0 || best->evfd < 0 || ep_add(best->ep, best->evfd, EPOLLIN, EV(EV_EVFD, 0)) ||
	    pthread_create(&best->th, NULL, worker_main, best)) {
		if (best->ep >= 0)
			close(best->ep);
		if (best->evfd >= 0)
			close(best->evfd);
		best->ep = best->evfd = -1;
		return &S->w[0];
	}
	best->started = true;
	return best;
}

/* The handshake's message arrived: regions, per-page state, then a loop serves it. */
static int clone_setup(struct clone *C, const struct handshake *h)
{
	struct server *S = C->S;
	C->uffd = h->uffd;
	C->page = h->page;
	C->nreg = 0;
	for (size_t i = 0; i < h->n; i++) {
		struct region *r = &C->reg[i];
		r->base = h->r[i].base;
		r->size = h->r[i].size;
		r->offset = h->r[i].offset;
		r->npages = r->size / C->page;
		if (r->offset > S->s->h.size || r->size > S->s->h.size - r->offset)
			return clone_fail(C, "handshake: region %zu (offset %llu, size %llu) lies beyond the snapshot's %llu bytes",
					  i, (unsigned long long)r->offset, (unsigned long long)r->size,
					  (unsigned long long)S->s->h.size);
		size_t words = (r->npages + 63) / 64;
		r->installed = calloc(words, 8);
		r->removed = calloc(words, 8);
		C->nreg = i + 1;
		if (!r->installed || !r->removed)
			return clone_fail(C, "handshake: out of memory for the page state of %llu pages",
					  (unsigned long long)r->npages);
		C->npages += r->npages;
	}
	if (C->page == PAGE_2M && !S->zero2m) {
		S->zero2m = aligned_alloc(4096, PAGE_2M);
		if (!S->zero2m)
			return clone_fail(C, "handshake: out of memory for the huge zero page");
		memset(S->zero2m, 0, PAGE_2M);
	}
	/* --record-trace: the first clone's first faults; each page at most once */
	if (S->o->record && C->id == 1) {
		C->trace = calloc(C->npages ? C->npages : 1, sizeof *C->trace);
		if (!C->trace)
			return clone_fail(C, "handshake: out of memory for the fault trace");
		C->captrace = C->npages;
		C->record = true;
	}
	uint64_t fa = S->o->fault_around < C->page ? C->page : S->o->fault_around;
	C->fa_pages = fa / C->page;
	prefetch_init(C);
	if (C->pf.active)
		queue_remote_prefetch(C);
	return 0;
}

/* Give a set-up clone to a loop. C has left the handshake list: on failure (C->err) the
 * caller ends and frees it; on success its loop owns it and may end it at once. */
static int handover(struct clone *C, size_t nreg, bool has_page_size)
{
	struct server *S = C->S;
	epoll_ctl(S->w[0].ep, EPOLL_CTL_DEL, C->peer.sock, NULL);
	if (C->peer.pidfd >= 0)
		epoll_ctl(S->w[0].ep, EPOLL_CTL_DEL, C->peer.pidfd, NULL);
	/* up to 1.11 Firecracker closes its end after sending; from 1.12 it holds it until exit */
	if (has_page_size) {
		C->keep_sock = C->peer.sock;
	} else {
		close(C->peer.sock);
		C->peer.sock = -1;
	}
	struct worker *W = place(S);
	if (W != &S->w[0])
		pthread_mutex_lock(&W->mu);
	int r = 0;
	if (C->page == PAGE_2M && !W->bounce && !(W->bounce = aligned_alloc(4096, PAGE_2M)))
		r = clone_fail(C, "handshake: out of memory for the huge-page buffer");
	else if (list_add(&W->cl, &W->ncl, &W->capcl, C))
		r = clone_fail(C, "handshake: out of memory");
	if (!r) {
		log_info("serving", "clone=%u pid=%d regions=%zu page=%llu fault_around=%llu prefetch=%s loop=%u",
			 C->id, (int)C->peer.pid, nreg, (unsigned long long)C->page,
			 (unsigned long long)(C->fa_pages * C->page), S->o->prefetch, W->idx);
		C->W = W;
		C->state = CL_SERVING;
		pthread_mutex_lock(&S->mu);
		S->live++;
		W->nlive++;
		pthread_mutex_unlock(&S->mu);
		ep_add(W->ep, C->uffd, EPOLLIN, EV(EV_UFFD, C->key));
		if (C->peer.pidfd >= 0)
			ep_add(W->ep, C->peer.pidfd, EPOLLIN, EV(EV_PIDFD, C->key));
		if (C->keep_sock >= 0)
			ep_add(W->ep, C->keep_sock, EPOLLRDHUP, EV(EV_SOCK, C->key));
	}
	if (W != &S->w[0]) {
		pthread_mutex_unlock(&W->mu);   /* from here on C is its loop's */
		poke(W);   /* it may sleep with no timeout: prefetch has work without any event */
	}
	return r;
}

static void hs_remove(struct server *S, struct clone *C)
{
	for (size_t i = 0; i < S->nhs; i++)
		if (S->hs[i] == C) {
			S->hs[i] = S->hs[--S->nhs];
			return;
		}
}

static void on_handshake(struct clone *C)
{
	struct server *S = C->S;
	struct handshake h;
	int r = hs_recv(&C->peer, S->hsbuf, &h, C->err);
	if (r == 1)
		return;
	if (r == 2) {   /* e.g. another server checking whether this socket is in use */
		log_info("connection closed without a handshake", "pid=%d", (int)C->peer.pid);
		clone_end(C, false);
		return;
	}
	/* a clone counts once it has sent something: its message, or a broken one */
	if (S->o->max_clones && S->accepted >= S->o->max_clones) {
		if (!r)
			close(h.uffd);
		snprintf(C->err, sizeof C->err, "the clone limit (--clones) is reached (%u served)", S->accepted);
		clone_end(C, true);
		return;
	}
	C->id = ++S->accepted;
	if (r < 0 || clone_setup(C, &h)) {
		clone_end(C, true);   /* closes the uffd too once clone_setup has taken it */
		return;
	}
	hs_remove(S, C);
	if (handover(C, h.n, h.has_page_size)) {
		clone_end(C, true);
		clone_free(C);
	}
}

static bool prefetch_pending(const struct clone *C)
{
	return C->state == CL_SERVING && C->pf.active && !C->pf.done && !C->ndef &&
	       (!C->retry_due_ms || now_ms() >= C->retry_due_ms);
}

/* ms until this loop has work without an event (-1: none), from due (INT64_MAX: none) */
static int loop_timeout(struct worker *W, int64_t due)
{
	if (__atomic_load_n(&W->wake, __ATOMIC_ACQUIRE))
		return 0;
	int64_t now = now_ms();
	for (size_t i = 0; i < W->ncl; i++) {
		const struct clone *C = W->cl[i];
		if (C->state == CL_SERVING && C->pf.active && !C->pf.done && !C->ndef && !C->retry_due_ms)
			return 0;
		if (C->state == CL_SERVING && C->retry_due_ms && C->retry_due_ms < due)
			due = C->retry_due_ms;
	}
	if (due == INT64_MAX)
		return -1;
	return due <= now ? 0 : due - now > INT32_MAX ? INT32_MAX : (int)(due - now);
}

/* One turn of a loop over its own clones, for the events just returned. */
static void clones_turn(struct worker *W, const struct epoll_event *evs, int n)
{
	bool faults_waiting = false;
	bool woken = __atomic_exchange_n(&W->wake, 0, __ATOMIC_ACQ_REL);
	/* peers gone first: a peer that exited is a clean end, whatever else is pending */
	for (int i = 0; i < n; i++) {
		unsigned kind = evs[i].data.u64 & 7, key = (unsigned)(evs[i].data.u64 >> 3);
		if (kind != EV_PIDFD && kind != EV_SOCK && kind != EV_UFFD)
			continue;
		struct clone *C = find_key(W->cl, W->ncl, key);
		if (!C || C->state != CL_SERVING)
			continue;
		/* (the main loop may pass the event that brought a clone's handshake: not a hang-up) */
		bool gone = kind == EV_PIDFD ||
			    (kind == EV_SOCK && C->keep_sock >= 0 &&
			     (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) ||
			    (kind == EV_UFFD && (evs[i].events & (EPOLLERR | EPOLLHUP)));
		if (gone)
			clone_end(C, false);
	}
	for (int i = 0; i < n; i++) {
		unsigned kind = evs[i].data.u64 & 7, key = (unsigned)(evs[i].data.u64 >> 3);
		if (kind != EV_UFFD)
			continue;
		struct clone *C = find_key(W->cl, W->ncl, key);
		if (!C || C->state != CL_SERVING)
			continue;
		faults_waiting = true;
		enum serve_rc rc = clone_turn(C, true, woken);
		if (rc != SERVE_OK)
			clone_end(C, rc == SERVE_FATAL);
	}
	/* deferred faults that are due in clones without uffd events this turn */
	int64_t now = now_ms();
	for (size_t i = 0; i < W->ncl; i++) {
		struct clone *C = W->cl[i];
		if (C->state == CL_SERVING && C->ndef && (woken || now >= C->retry_due_ms)) {
			enum serve_rc rc = clone_turn(C, false, woken);
			if (rc != SERVE_OK)
				clone_end(C, rc == SERVE_FATAL);
		}
	}
	/* one prefetch step for one clone, only when none had a fault waiting */
	for (size_t k = 0; !faults_waiting && k < W->ncl; k++) {
		struct clone *C = W->cl[(W->rr + k) % W->ncl];
		if (!prefetch_pending(C))
			continue;
		W->rr = (unsigned)((W->rr + k + 1) % W->ncl);
		C->retry_due_ms = 0;
		enum serve_rc rc = prefetch_step(C);
		if (rc == SERVE_DEFER) {   /* a mapping change, or a layer not there yet */
			C->retry_due_ms = now_ms() + 1;
			rc = SERVE_OK;
		}
		if (rc != SERVE_OK)
			clone_end(C, rc == SERVE_FATAL);
		break;
	}
	reap(W->cl, &W->ncl);
}

static void drain_evfd(struct worker *W)
{
	uint64_t v;
	if (read(W->evfd, &v, sizeof v) < 0) {
		/* EAGAIN: nothing pending */
	}
}

static void *worker_main(void *arg)
{
	struct worker *W = arg;
	struct epoll_event evs[64];
	for (;;) {
		pthread_mutex_lock(&W->mu);
		int timeout = loop_timeout(W, INT64_MAX);
		pthread_mutex_unlock(&W->mu);
		int n = epoll_wait(W->ep, evs, ARRAY_SIZE(evs), timeout);
		if (n < 0)
			n = 0;
		pthread_mutex_lock(&W->mu);
		if (__atomic_load_n(&W->quit, __ATOMIC_ACQUIRE)) {
			pthread_mutex_unlock(&W->mu);
			return NULL;
		}
		for (int i = 0; i < n; i++)
			if ((evs[i].data.u64 & 7) == EV_EVFD)
				drain_evfd(W);
		clones_turn(W, evs, n);
		pthread_mutex_unlock(&W->mu);
	}
}

static void on_signal(struct server *S, int *stop)
{
	struct signalfd_siginfo si;
	while (read(S->sfd, &si, sizeof si) == sizeof si) {
		if (si.ssi_signo != SIGUSR1) {
			*stop = (int)si.ssi_signo;
		} else if (S->accepted) {   /* nothing served yet: no counters */
			lock_all(S);
			print_counters(S);
			if (S->o->stats)
				write_stats(S, S->o->stats);
			unlock_all(S);
		}
	}
}

/* SIGTERM (stop > 0) or a failed loop (stop < 0): end every clone, killing those still there. */
static void stop_all(struct server *S, int stop)
{
	char why[64];
	if (stop > 0)
		snprintf(why, sizeof why, "stopped by signal %d", stop);
	else
		snprintf(why, sizeof why, "the serve loop failed");
	for (size_t i = 0; i < S->nhs; i++) {
		snprintf(S->hs[i]->err, sizeof S->hs[i]->err, "%s", why);
		clone_end(S->hs[i], true);
	}
	reap(S->hs, &S->nhs);
	for (unsigned k = 0; k < S->nw; k++) {
		struct worker *W = &S->w[k];
		if (!W->started)
			continue;
		if (k)
			pthread_mutex_lock(&W->mu);
		for (size_t i = 0; i < W->ncl; i++) {
			snprintf(W->cl[i]->err, sizeof W->cl[i]->err, "%s", why);
			clone_end(W->cl[i], true);
		}
		reap(W->cl, &W->ncl);
		if (k)
			pthread_mutex_unlock(&W->mu);
	}
}

/* The main thread's loop. Returns the exit code. */
static int serve_loop(struct server *S)
{
	struct worker *W0 = &S->w[0];
	int64_t accept_deadline = now_ms() + S->o->accept_ms;
	int stop = 0;
	struct epoll_event evs[64];
	pthread_mutex_lock(&W0->mu);
	for (;;) {
		pthread_mutex_lock(&S->mu);
		bool done = S->o->max_clones && S->accepted >= S->o->max_clones && !S->live && !S->nhs;
		bool killed = S->any_killed;
		pthread_mutex_unlock(&S->mu);
		if (done)
			return killed ? EXIT_FAIL : EXIT_OK;   /* the last clone has gone */
		int64_t due = S->accepted ? INT64_MAX : accept_deadline;
		for (size_t i = 0; i < S->nhs; i++)
			if (S->hs[i]->hs_deadline_ms < due)
				due = S->hs[i]->hs_deadline_ms;
		int timeout = loop_timeout(W0, due);
		pthread_mutex_unlock(&W0->mu);
		int n = epoll_wait(W0->ep, evs, ARRAY_SIZE(evs), timeout);
		pthread_mutex_lock(&W0->mu);
		if (n < 0 && errno != EINTR) {
			warnx("serve: epoll_wait: %s", strerror(errno));
			stop = -1;
		}
		if (n < 0)
			n = 0;
		/* connections in handshake whose peer has gone: take what it sent (a clone that
		 * is then gone at once), or end it — nobody to serve or kill */
		for (int i = 0; i < n; i++) {
			unsigned kind = evs[i].data.u64 & 7, key = (unsigned)(evs[i].data.u64 >> 3);
			struct clone *C = kind == EV_PIDFD ? find_key(S->hs, S->nhs, key) : NULL;
			if (!C || C->state != CL_HANDSHAKE)
				continue;
			on_handshake(C);
			if (find_key(S->hs, S->nhs, key) == C && C->state == CL_HANDSHAKE)
				clone_end(C, false);
		}
		for (int i = 0; i < n; i++) {
			unsigned kind = evs[i].data.u64 & 7, key = (unsigned)(evs[i].data.u64 >> 3);
			if (kind == EV_SIGNAL) {
				on_signal(S, &stop);
			} else if (kind == EV_LISTEN) {
				on_accept(S);
			} else if (kind == EV_WATCH) {
				S->watch[key].cb(S, S->watch[key].ctx);
			} else if (kind == EV_EVFD) {
				drain_evfd(W0);
			} else if (kind == EV_SOCK) {
				struct clone *C = find_key(S->hs, S->nhs, key);
				if (C && C->state == CL_HANDSHAKE)
					on_handshake(C);
			}
		}
		int64_t now = now_ms();
		for (size_t i = 0; i < S->nhs; i++) {
			struct clone *C = S->hs[i];
			if (C->state == CL_HANDSHAKE && now >= C->hs_deadline_ms) {
				snprintf(C->err, sizeof C->err, "handshake: no message from Firecracker within %lld ms",
					 S->o->accept_ms);
				clone_end(C, true);
			}
		}
		reap(S->hs, &S->nhs);
		clones_turn(W0, evs, n);
		if (stop) {
			stop_all(S, stop);
			pthread_mutex_lock(&S->mu);
			bool any = S->any_killed;
			pthread_mutex_unlock(&S->mu);
			if (!S->accepted && stop > 0) {
				warnx("serve: stopped by signal %d while waiting for Firecracker", stop);
				return EXIT_FAIL;
			}
			if (stop > 0)
				log_info("stopped", "signal=%d", stop);
			return any || stop < 0 ? EXIT_FAIL : EXIT_OK;
		}
		if (!S->accepted && now_ms() >= accept_deadline) {
			warnx("serve: no connection from Firecracker within %lld ms", S->o->accept_ms);
			return EXIT_CONN;
		}
	}
}

/* While Firecracker starts: read the layers into the page cache and our page tables, so no
 * COPY pays for a page-cache miss or a fault on its source (Linux >= 5.14). In 32 MiB steps,
 * stopping as soon as Firecracker connects: a large layer on a slow disk must not delay it.
 * Remote layers: with --prefetch all every chunk the header maps is queued at once (the
 * download overlaps Firecracker's start), and only chunks already cached are populated. */
static void populate_layers(struct snap *s, int lfd, bool prefetch_all)
{
	const uint64_t step = 32ULL << 20;
	uint64_t ch = snap_chunk(s);
	if (ch && prefetch_all)
		for (size_t i = 0; i < s->h.n; i++)
			if (s->src[i] >= 0)
				snap_prefetch(&s->l[s->src[i]], s->h.m[i].store, s->h.m[i].len);
	for (size_t k = 0; k < s->nl; k++) {
		uint64_t unit = s->l[k].remote ? ch : step;
		for (uint64_t off = 0; s->l[k].map && off < s->l[k].size; off += unit) {
			if (fd_wait(lfd, POLLIN, 0) != 0)
				return;
			uint64_t n = s->l[k].size - off < unit ? s->l[k].size - off : unit;
			if (!snap_cached(&s->l[k], off, n))
				continue;   /* a remote chunk not cached yet */
			if (madvise((void *)(s->l[k].map + off), n, MADV_POPULATE_READ))
				return;   /* an older kernel: the faults happen in the COPYs instead */
		}
	}
}

static void server_free(struct server *S)
{
	for (size_t i = 0; i < S->nhs; i++)
		clone_free(S->hs[i]);
	free(S->hs);
	for (unsigned k = 0; k < S->nw; k++) {
		struct worker *W = &S->w[k];
		for (size_t i = 0; i < W->ncl; i++)
			clone_free(W->cl[i]);
		free(W->cl);
		free(W->bounce);
		if (W->ep >= 0)
			close(W->ep);
		if (W->evfd >= 0)
			close(W->evfd);
		pthread_mutex_destroy(&W->mu);
	}
	pthread_mutex_destroy(&S->mu);
	free(S->hsbuf);
	free(S->zero2m);
	free(S->trace);
}

int cmd_serve(int argc, char **argv)
{
	static const struct option opts[] = {
		{"socket", required_argument, NULL, 's'},
		{"header", required_argument, NULL, 'H'},
		{"layer", required_argument, NULL, 'l'},
		{"dir", required_argument, NULL, 'd'},
		{"clones", required_argument, NULL, 'c'},
		{"threads", required_argument, NULL, 'T'},
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
			       .ready_fd = -1, .sock_mode = 0600, .sock_gid = (gid_t)-1, .max_clones = 1};
	o.threads = WORKERS_MAX;   /* a loop per clone, started as clones come */
	static struct server S;
	memset(&S, 0, sizeof S);
	S.sfd = -1;
	S.listener.fd = -1;
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
		case 'c': {
			unsigned long v = strtoul(optarg, &end, 10);
			if (*end || !*optarg || *optarg == '-' || v > 100000)
				return usage_error("--clones: '%s' is not a number from 0 (unlimited) to 100000", optarg);
			o.max_clones = (unsigned)v;
			break;
		}
		case 'T': {
			unsigned long v = strtoul(optarg, &end, 10);
			if (*end || !*optarg || *optarg == '-' || v < 1 || v > WORKERS_MAX)
				return usage_error("--threads: '%s' is not a number from 1 to %d", optarg, WORKERS_MAX);
			o.threads = (unsigned)v;
			break;
		}
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
				return r > 0 ? r : usage_cmd("serve");
		}
		}
	}
	if (optind != argc || !o.socket || (!o.header && !o.dir))
		return usage_cmd("serve");
	if (strcmp(o.prefetch, "none") && strcmp(o.prefetch, "all") && strncmp(o.prefetch, "trace:", 6))
		return usage_error("--prefetch must be none, all or trace:FILE");
	/* registered before anything can fail: every exit through die() kills our Firecrackers */
	die_hook_add(kill_all, &S);
	char err[ERRBUF];
	struct snap s;
	if (snap_open(&s, o.header, o.dir, layers, o.nlayers, err))
		die(EXIT_FAIL, "serve: %s", err);
	S.s = &s;
	S.o = &o;
	if (prefetch_load(&S, o.prefetch, err))
		die(EXIT_FAIL, "serve: %s", err);
	S.hsbuf = xmalloc(HS_MAX_MSG);
	pthread_mutex_init(&S.mu, NULL);
	S.nw = o.threads;
	for (unsigned i = 0; i < S.nw; i++) {
		S.w[i] = (struct worker){.S = &S, .idx = i, .ep = -1, .evfd = -1};
		pthread_mutex_init(&S.w[i].mu, NULL);
	}
	signal(SIGPIPE, SIG_IGN);
	/* blocked from the start: SIGUSR1 while waiting for Firecracker must not kill us */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	S.sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	struct worker *W0 = &S.w[0];
	W0->ep = epoll_create1(EPOLL_CLOEXEC);
	W0->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (S.sfd < 0 || W0->ep < 0 || W0->evfd < 0)
		die_sys(EXIT_FAIL, "serve: signalfd/epoll/eventfd");
	W0->started = true;
	if (hs_listen(&S.listener, o.socket, o.sock_mode, o.sock_gid, err) < 0)
		die(EXIT_FAIL, "serve: %s", err);
	ep_add(W0->ep, S.sfd, EPOLLIN, EV(EV_SIGNAL, 0));
	ep_add(W0->ep, S.listener.fd, EPOLLIN, EV(EV_LISTEN, 0));
	ep_add(W0->ep, W0->evfd, EPOLLIN, EV(EV_EVFD, 0));
	if (snap_eventfd() >= 0 && serve_watch_fd(&S, snap_eventfd(), remote_progress, NULL))
		die(EXIT_FAIL, "serve: watching the fetcher: no room");
	if (o.ready_fd >= 0) {
		dprintf(o.ready_fd, "listening %s\n", o.socket);
		close(o.ready_fd);
	}
	log_info("listening", "socket=%s header=%s clones=%u", o.socket, s.hdr_path, o.max_clones);
	populate_layers(&s, S.listener.fd, !strcmp(o.prefetch, "all"));

	int code = serve_loop(&S);   /* returns holding worker 0's mutex */
	hs_unlisten(&S.listener);
	for (unsigned i = 1; i < S.nw; i++) {   /* every clone has ended: stop the other loops */
		struct worker *W = &S.w[i];
		if (!W->started)
			continue;
		pthread_mutex_lock(&W->mu);
		__atomic_store_n(&W->quit, 1, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&W->mu);
		poke(W);
		pthread_join(W->th, NULL);
	}
	pthread_mutex_unlock(&W0->mu);
	if (S.accepted) {
		print_counters(&S);
		if (o.stats)
			write_stats(&S, o.stats);
	}
	die_hook_del(kill_all, &S);
	close(S.sfd);
	server_free(&S);
	snap_close(&s);
	return code;
}
