/* serve.c - `serve`: the page server for many clones of one snapshot. Owns the event loop
 * (one thread, one epoll over the listening socket, a signalfd and, per clone, its socket,
 * pidfd and uffd), the clones' lives (accept, handshake, serving, end), the clone limit,
 * fairness between clones, the die hook and the fail-closed exits. One clone's faults live in
 * fault.c, prefetch in prefetch.c, counters in stats.c, the handshake's bytes in handshake.c.
 *
 * A loop turn: every ready event (signals, new connections, handshake messages, peers
 * gone), then for each clone at most one batch of uffd messages (REMOVEs first, deferred
 * faults when due, then the faults), and only when no clone had a fault waiting, one
 * prefetch step (<= 2 MiB) for one clone, round robin. So no clone's fault storm or prefetch
 * delays another clone's fault by more than one turn.
 * The loop is its own (not common/loop.c) because it must poll with a zero timeout while
 * prefetch has work and order demand faults before prefetch within a turn.
 *
 * Fail closed: a clone's fatal error kills that clone's Firecracker only; a die() anywhere
 * (the die hook) or SIGTERM/SIGINT/SIGHUP kills every Firecracker still served. After
 * start-up nothing here exits on a failed allocation: a clone's memory is allocated at its
 * handshake, and when that fails the clone is killed and the others go on.
 */
#include "serve.h"
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

enum { EV_LISTEN, EV_SIGNAL, EV_UFFD, EV_PIDFD, EV_SOCK, EV_WATCH };
#define EV(kind, id) ((uint64_t)(id) << 3 | (kind))

uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void serve_wake(struct server *S)
{
	S->wake = true;
}

int serve_watch_fd(struct server *S, int fd, void (*cb)(struct server *S, void *ctx), void *ctx)
{
	if (S->nwatch == ARRAY_SIZE(S->watch))
		return -1;
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EV(EV_WATCH, S->nwatch)};
	if (epoll_ctl(S->ep, EPOLL_CTL_ADD, fd, &ev))
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

static void ep_add(struct server *S, int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev = {.events = events, .data.u64 = data};
	epoll_ctl(S->ep, EPOLL_CTL_ADD, fd, &ev);
}

/* The die hook: whatever fails, no Firecracker we serve is left with its vCPUs waiting. */
static void kill_all(void *ctx)
{
	struct server *S = ctx;
	for (size_t i = 0; i < S->ncl; i++)
		if (S->cl[i]->state != CL_DEAD)
			peer_kill(&S->cl[i]->peer);
}

static struct clone *clone_by_key(struct server *S, unsigned key)
{
	for (size_t i = 0; i < S->ncl; i++)
		if (S->cl[i]->key == key)
			return S->cl[i];
	return NULL;
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
 * gone, log, keep its counters, close its fds. It is removed from the list by reap(). */
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
		if (C->killed) {
			S->any_killed = true;
			warnx("serve: %s%s; killed Firecracker (pid %d)", name, C->err, (int)C->peer.pid);
		} else {
			warnx("serve: %s%s; Firecracker (pid %d) had already exited", name, C->err,
			      (int)C->peer.pid);
		}
	}
	if (C->state == CL_SERVING) {
		print_clone(C, C->killed ? "killed" : "gone");
		if (C->record && !C->killed) {
			char err[ERRBUF];
			if (trace_write(C, S->o->record, err))
				warnx("serve: %s", err);
		}
		struct clone_summary *g = &S->ring[S->ngone % SUMMARY_RING];
		*g = (struct clone_summary){.id = C->id, .pid = C->peer.pid, .killed = C->killed,
					    .prefetch_done = C->pf.done, .npages = C->npages,
					    .npf_first = C->npf_first, .c = C->c};
		memcpy(g->pf_first, C->pf_first, sizeof g->pf_first);
		S->ngone++;
		stats_add(&S->gone, &C->c);
		log_info("clone gone", "clone=%u pid=%d end=%s", C->id, (int)C->peer.pid, C->killed ? "kill" : "exit");
	}
	if (C->uffd >= 0)
		close(C->uffd);
	if (C->peer.sock >= 0)
		close(C->peer.sock);
	if (C->peer.pidfd >= 0)
		close(C->peer.pidfd);
	C->uffd = C->peer.sock = C->peer.pidfd = -1;
	C->state = CL_DEAD;
}

static void reap(struct server *S)
{
	size_t k = 0;
	for (size_t i = 0; i < S->ncl; i++) {
		if (S->cl[i]->state == CL_DEAD)
			clone_free(S->cl[i]);
		else
			S->cl[k++] = S->cl[i];
	}
	S->ncl = k;
}

/* A new connection: a clone in handshake, or, past --clones, a peer killed at once. */
static void on_accept(struct server *S)
{
	for (;;) {
		struct peer p;
		char err[ERRBUF];
		int r = hs_accept(S->listener.fd, &p, err);
		if (!r)
			return;
		if (r < 0) {
			if (p.sock >= 0) {
				peer_kill(&p);
				S->any_killed = true;
				warnx("serve: %s; killed Firecracker (pid %d)", err, (int)p.pid);
				close(p.sock);
				if (p.pidfd >= 0)
					close(p.pidfd);
			} else {
				warnx("serve: %s", err);
			}
			if (p.sock < 0)
				return;   /* accept itself failed: not now (epoll tells again) */
			continue;
		}
		struct clone *C = NULL;
		const char *why = NULL;
		if (S->o->max_clones && S->accepted >= S->o->max_clones) {
			why = "the clone limit (--clones) is reached";
		} else if (S->ncl == S->capcl) {
			size_t nc = S->capcl * 2;
			struct clone **cl = realloc(S->cl, nc * sizeof *cl);
			if (cl) {
				S->cl = cl;
				S->capcl = nc;
			} else {
				why = "out of memory";
			}
		}
		if (!why && !(C = calloc(1, sizeof *C)))
			why = "out of memory";
		if (why) {
			peer_kill(&p);
			S->any_killed = true;
			warnx("serve: %s (%u served); killed Firecracker (pid %d)", why, S->accepted, (int)p.pid);
			close(p.sock);
			if (p.pidfd >= 0)
				close(p.pidfd);
			continue;
		}
		C->S = S;
		C->key = ++S->nextkey;
		C->state = CL_HANDSHAKE;
		C->peer = p;
		C->uffd = C->keep_sock = -1;
		C->hs_deadline_ms = now_ms() + S->o->accept_ms;
		S->cl[S->ncl++] = C;
		ep_add(S, p.sock, EPOLLIN | EPOLLRDHUP, EV(EV_SOCK, C->key));
		if (p.pidfd >= 0)
			ep_add(S, p.pidfd, EPOLLIN, EV(EV_PIDFD, C->key));
	}
}

/* The handshake's message arrived: regions, per-page state, then serving. */
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
		S->bounce = aligned_alloc(4096, PAGE_2M);
		if (!S->zero2m || !S->bounce) {
			free(S->zero2m);
			free(S->bounce);
			S->zero2m = S->bounce = NULL;
			return clone_fail(C, "handshake: out of memory for the huge-page buffers");
		}
		memset(S->zero2m, 0, PAGE_2M);
	}
	/* --record-trace: the first clone's first faults; each page at most once */
	if (S->o->record && C->id == 1) {   /* the first clone served */
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
	ep_add(S, C->uffd, EPOLLIN, EV(EV_UFFD, C->key));
	/* up to 1.11 Firecracker closes its end after sending; from 1.12 it holds it until exit */
	if (h->has_page_size) {
		C->keep_sock = C->peer.sock;
		struct epoll_event ev = {.events = EPOLLRDHUP, .data.u64 = EV(EV_SOCK, C->key)};
		epoll_ctl(S->ep, EPOLL_CTL_MOD, C->peer.sock, &ev);
	} else {
		close(C->peer.sock);
		C->peer.sock = -1;
	}
	C->state = CL_SERVING;
	log_info("serving", "clone=%u pid=%d regions=%zu page=%llu fault_around=%llu prefetch=%s",
		 C->id, (int)C->peer.pid, h->n, (unsigned long long)C->page, (unsigned long long)fa,
		 S->o->prefetch);
	return 0;
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
		if (!r && h.uffd >= 0 && C->uffd < 0)
			close(h.uffd);
		clone_end(C, true);
	}
}

static void on_signal(struct server *S, int *stop)
{
	struct signalfd_siginfo si;
	while (read(S->sfd, &si, sizeof si) == sizeof si) {
		if (si.ssi_signo != SIGUSR1) {
			*stop = (int)si.ssi_signo;
		} else if (S->accepted) {   /* nothing served yet: no counters */
			print_counters(S);
			if (S->o->stats)
				write_stats(S, S->o->stats);
		}
	}
}

static bool prefetch_pending(const struct clone *C)
{
	return C->state == CL_SERVING && C->pf.active && !C->pf.done && !C->ndef &&
	       (!C->retry_due_ms || now_ms() >= C->retry_due_ms);
}

static int loop_timeout(struct server *S, int64_t accept_deadline)
{
	if (S->wake)
		return 0;
	int64_t now = now_ms(), due = INT64_MAX;
	if (!S->accepted)
		due = accept_deadline;
	for (size_t i = 0; i < S->ncl; i++) {
		const struct clone *C = S->cl[i];
		if (C->state == CL_HANDSHAKE && C->hs_deadline_ms < due)
			due = C->hs_deadline_ms;
		if (C->state == CL_SERVING && C->pf.active && !C->pf.done && !C->ndef && !C->retry_due_ms)
			return 0;
		if (C->state == CL_SERVING && C->retry_due_ms && C->retry_due_ms < due)
			due = C->retry_due_ms;
	}
	if (due == INT64_MAX)
		return -1;
	return due <= now ? 0 : due - now > INT32_MAX ? INT32_MAX : (int)(due - now);
}

/* Returns the exit code. */
static int serve_loop(struct server *S)
{
	int64_t accept_deadline = now_ms() + S->o->accept_ms;
	int stop = 0;
	for (;;) {
		if (S->o->max_clones && S->accepted >= S->o->max_clones && !S->ncl)
			return S->any_killed ? EXIT_FAIL : EXIT_OK;   /* the last clone has gone */
		struct epoll_event evs[64];
		int n = epoll_wait(S->ep, evs, ARRAY_SIZE(evs), loop_timeout(S, accept_deadline));
		if (n < 0 && errno != EINTR) {
			warnx("serve: epoll_wait: %s", strerror(errno));
			stop = -1;
			n = 0;
		}
		bool faults_waiting = false, woken = S->wake;
		S->wake = false;
		/* peers gone first: a peer that exited is a clean end, whatever else is pending */
		for (int i = 0; i < n; i++) {
			unsigned kind = evs[i].data.u64 & 7, id = (unsigned)(evs[i].data.u64 >> 3);
			struct clone *C = kind == EV_PIDFD || kind == EV_SOCK || kind == EV_UFFD ? clone_by_key(S, id) : NULL;
			if (!C || C->state == CL_DEAD)
				continue;
			bool gone = kind == EV_PIDFD ||
				    (kind == EV_SOCK && C->state == CL_SERVING) ||
				    (kind == EV_UFFD && (evs[i].events & (EPOLLERR | EPOLLHUP)));
			if (gone)
				clone_end(C, false);
		}
		for (int i = 0; i < n; i++) {
			unsigned kind = evs[i].data.u64 & 7, id = (unsigned)(evs[i].data.u64 >> 3);
			if (kind == EV_SIGNAL) {
				on_signal(S, &stop);
			} else if (kind == EV_LISTEN) {
				on_accept(S);
			} else if (kind == EV_WATCH) {
				S->watch[id].cb(S, S->watch[id].ctx);
			} else if (kind == EV_SOCK) {
				struct clone *C = clone_by_key(S, id);
				if (C && C->state == CL_HANDSHAKE)
					on_handshake(C);
			} else if (kind == EV_UFFD) {
				struct clone *C = clone_by_key(S, id);
				if (!C || C->state != CL_SERVING)
					continue;
				faults_waiting = true;
				enum serve_rc rc = clone_turn(C, true, woken);
				if (rc != SERVE_OK)
					clone_end(C, rc == SERVE_FATAL);
			}
		}
		int64_t now = now_ms();
		/* deferred faults that are due (clones without a uffd event this turn), handshakes
		 * that took too long */
		for (size_t i = 0; i < S->ncl; i++) {
			struct clone *C = S->cl[i];
			if (C->state == CL_HANDSHAKE && now >= C->hs_deadline_ms) {
				snprintf(C->err, sizeof C->err, "handshake: no message from Firecracker within %lld ms",
					 S->o->accept_ms);
				clone_end(C, true);
			} else if (C->state == CL_SERVING && C->ndef && (woken || now >= C->retry_due_ms)) {
				enum serve_rc rc = clone_turn(C, false, woken);
				if (rc != SERVE_OK)
					clone_end(C, rc == SERVE_FATAL);
			}
		}
		/* one prefetch step for one clone, only when no clone had a fault waiting */
		for (size_t k = 0; !faults_waiting && k < S->ncl; k++) {
			struct clone *C = S->cl[(S->rr + k) % S->ncl];
			if (!prefetch_pending(C))
				continue;
			S->rr = (unsigned)((S->rr + k + 1) % S->ncl);
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
		reap(S);
		if (stop) {
			for (size_t i = 0; i < S->ncl; i++) {
				struct clone *C = S->cl[i];
				if (stop > 0)
					snprintf(C->err, sizeof C->err, "stopped by signal %d", stop);
				else
					snprintf(C->err, sizeof C->err, "the serve loop failed");
				clone_end(C, true);
			}
			reap(S);
			if (!S->accepted && stop > 0) {
				warnx("serve: stopped by signal %d while waiting for Firecracker", stop);
				return EXIT_FAIL;
			}
			if (stop > 0)
				log_info("stopped", "signal=%d", stop);
			return S->any_killed || stop < 0 ? EXIT_FAIL : EXIT_OK;
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

static const char serve_usage[] =
	"usage: serve --socket PATH --header FILE [--layer UUID=FILE ...|--dir SNAPDIR] "
	"[--clones N] [--prefetch none|all|trace:FILE] [--fault-around 64K] [--record-trace FILE] "
	"[--stats FILE] [--accept-timeout 60s] [--ready-fd N] [--socket-mode 600] [--socket-group GID] "
	SNAP_REMOTE_USAGE;

static void server_free(struct server *S)
{
	for (size_t i = 0; i < S->ncl; i++)
		clone_free(S->cl[i]);
	free(S->cl);
	free(S->hsbuf);
	free(S->zero2m);
	free(S->bounce);
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
	static struct server S;
	memset(&S, 0, sizeof S);
	S.ep = S.sfd = S.lfd = -1;
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
	S.cl = xcalloc(8, sizeof *S.cl);
	S.capcl = 8;
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
	S.ep = epoll_create1(EPOLL_CLOEXEC);
	if (S.sfd < 0 || S.ep < 0)
		die_sys(EXIT_FAIL, "serve: signalfd/epoll");
	if (hs_listen(&S.listener, o.socket, o.sock_mode, o.sock_gid, err) < 0)
		die(EXIT_FAIL, "serve: %s", err);
	ep_add(&S, S.sfd, EPOLLIN, EV(EV_SIGNAL, 0));
	ep_add(&S, S.listener.fd, EPOLLIN, EV(EV_LISTEN, 0));
	if (snap_eventfd() >= 0 && serve_watch_fd(&S, snap_eventfd(), remote_progress, NULL))
		die(EXIT_FAIL, "serve: watching the fetcher: no room");
	if (o.ready_fd >= 0) {
		dprintf(o.ready_fd, "listening %s\n", o.socket);
		close(o.ready_fd);
	}
	log_info("listening", "socket=%s header=%s clones=%u", o.socket, s.hdr_path, o.max_clones);
	populate_layers(&s, S.listener.fd, !strcmp(o.prefetch, "all"));

	int code = serve_loop(&S);
	hs_unlisten(&S.listener);
	if (S.accepted) {
		print_counters(&S);
		if (o.stats)
			write_stats(&S, o.stats);
	}
	die_hook_del(kill_all, &S);
	close(S.sfd);
	close(S.ep);
	server_free(&S);
	snap_close(&s);
	return code;
}
