/* conn.c - one connection layer for the stream servers (see conn.h).
 *
 * Every event runs pump(): dispatch the complete requests already buffered while the output
 * stays under out_high, send, read more only when the protocol asked for more, repeat; then
 * choose the epoll events from the state. Lines left buffered when output drains are answered
 * in that same pass (waiting for a readable event that may never come loses them).
 *
 * Memory is bounded three ways: one request never holds more than max_request + 1 bytes of
 * input; unfinished input of all connections of a pool is counted from its first byte against
 * in_budget (past it, a connection holding more than IN_SMALL unfinished bytes is failed);
 * output stops being produced on a connection above out_high, and on any connection that
 * still has output once the pool is over out_budget. Reads go through one scratch buffer, so
 * an idle connection holds no read buffer.
 *
 * Closing never frees at once: a closed connection is unlinked, its fd closed, and freed by a
 * zero-delay timer, so a caller up the stack may still look at its state (CONN_CLOSED).
 */
#include "common/stereo.h"
#include "common/conn.h"
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK (64 * 1024)
#define READS_PER_EVENT 16
#define IN_SMALL 4096            /* unfinished input a connection may hold over the budget */
#define CONN_CLOSED ((enum conn_state)-1)

struct conn {
	struct conn_server *s;
	int fd;
	enum conn_state state;
	bool peer_eof;              /* the peer half-closed: answer what came, then close */
	bool dispatching;
	bool want_input;            /* the protocol needs more bytes for the next request */
	uint32_t events;
	struct buf in;              /* in.p[off..len) not consumed yet */
	size_t off;
	size_t counted_in;          /* our share of the pool's input count */
	size_t counted_out;         /* our share of the pool's output count */
	struct buf out;
	struct conn_defer *defer;
	int64_t accepted, last_io, partial_since, out_since, drain_since;
	struct conn *prev, *next;
	struct conn *next_dead;
	max_align_t priv[];
};

struct conn_defer {
	struct conn *c;             /* NULL once the connection is gone */
	max_align_t user[];         /* the protocol's fields */
};

struct conn_server {
	struct conn_pool *p;
	const struct conn_ops *ops;
	struct conn_limits lim;
	conn_allow_fn allow;
	int lfd;
	struct conn *conns;
	int nconns;
	uint64_t sweep, accept_timer;
	max_align_t ctx[];          /* the protocol's server state */
};

struct conn_pool {
	struct loop *l;
	size_t in_budget, out_budget, in, out;
	struct conn *dead;
	uint64_t reaper;
	char scratch[READ_CHUNK];
};

/* ---- pool ------------------------------------------------------------------------------ */

struct conn_pool *conn_pool_new(struct loop *l, size_t in_budget, size_t out_budget)
{
	struct conn_pool *p = calloc(1, sizeof *p);
	if (p)
		*p = (struct conn_pool){.l = l, .in_budget = in_budget, .out_budget = out_budget};
	return p;
}

static void reap(struct loop *l, void *ctx)
{
	struct conn_pool *p = ctx;
	p->reaper = 0;
	while (p->dead) {
		struct conn *c = p->dead;
		p->dead = c->next_dead;
		buf_wipe(&c->in);
		buf_free(&c->out);
		free(c);
	}
}

void conn_pool_free(struct conn_pool *p)
{
	if (!p)
		return;
	if (p->reaper)
		loop_timer_cancel(p->l, p->reaper);
	reap(p->l, p);
	free(p);
}

size_t conn_pool_in(const struct conn_pool *p) { return p->in; }
size_t conn_pool_out(const struct conn_pool *p) { return p->out; }

/* ---- accessors ------------------------------------------------------------------------- */

void *conn_priv(struct conn *c) { return c->priv; }
struct conn *conn_of_priv(void *priv) { return (struct conn *)((char *)priv - offsetof(struct conn, priv)); }
struct conn_server *conn_server(struct conn *c) { return c->s; }
void *conn_ctx(struct conn *c) { return c->s->ctx; }
void *conn_server_ctx(struct conn_server *s) { return s->ctx; }
struct conn_server *conn_server_of(void *ctx)
{
	return (struct conn_server *)((char *)ctx - offsetof(struct conn_server, ctx));
}
int conn_server_count(const struct conn_server *s) { return s->nconns; }
enum conn_state conn_state(const struct conn *c) { return c->state; }
int conn_fd(const struct conn *c) { return c->fd; }
struct buf *conn_out(struct conn *c) { return &c->out; }

static size_t pending(const struct conn *c) { return c->in.len - c->off; }

/* Keep the pool's counts in step with this connection's buffers. Unfinished input is what
 * is buffered while the protocol waits for more (a complete request waiting for its turn is
 * not "unfinished"; it is bounded by max_request like any other). */
static void account(struct conn *c)
{
	struct conn_pool *p = c->s->p;
	size_t in = pending(c), out = c->out.len;
	p->in = p->in - c->counted_in + in;
	p->out = p->out - c->counted_out + out;
	c->counted_in = in;
	c->counted_out = out;
}

/* ---- closing --------------------------------------------------------------------------- */

void conn_close(struct conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	struct conn_server *s = c->s;
	struct conn_pool *p = s->p;
	if (s->ops->closed)
		s->ops->closed(c);
	loop_del(p->l, c->fd);
	close(c->fd);
	c->fd = -1;
	c->state = CONN_CLOSED;
	if (c->defer)
		c->defer->c = NULL;   /* its reply, when it comes, is dropped */
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	p->in -= c->counted_in;
	p->out -= c->counted_out;
	c->counted_in = c->counted_out = 0;
	if (!c->dispatching) {   /* else the handler still holds its line: reap() frees */
		buf_wipe(&c->in);     /* requests may hold secrets */
		buf_free(&c->out);
		c->off = 0;
	}
	c->next_dead = p->dead;
	p->dead = c;
	if (!p->reaper)
		p->reaper = loop_timer(p->l, 0, reap, p);
}

static void set_events(struct conn *c, uint32_t ev)
{
	if (ev != c->events) {
		c->events = ev;
		loop_mod(c->s->p->l, c->fd, ev);
	}
}

/* Send what is queued. -1 when c was closed (a send error). */
static int send_out(struct conn *c)
{
	size_t before = c->out.len;
	while (c->out.len) {
		ssize_t n = send(c->fd, c->out.p, c->out.len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			conn_close(c);
			return -1;
		}
		buf_consume(&c->out, n);
	}
	int64_t now = now_ms();
	if (c->out.len != before)
		c->last_io = now;
	if (!c->out.len)
		c->out_since = 0;
	else if (!c->out_since || c->out.len != before)
		c->out_since = now;   /* the stall deadline runs from the last progress */
	if (!c->out.len && c->out.cap > READ_CHUNK)
		buf_free(&c->out);   /* give a big reply's buffer back */
	return 0;
}

static void start_drain(struct conn *c)
{
	shutdown(c->fd, SHUT_WR);
	c->state = CONN_DRAINING;
	c->drain_since = now_ms();
	buf_wipe(&c->in);
	c->off = 0;
	account(c);
	if (c->peer_eof)
		conn_close(c);
	else
		set_events(c, EPOLLIN | EPOLLRDHUP);
}

/* After everything else: the events to wait for, or the end of the connection. */
static void settle(struct conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	account(c);
	const struct conn_limits *lim = &c->s->lim;
	switch (c->state) {
	case CONN_ENDING:
		if (!c->out.len) {
			start_drain(c);
			return;
		}
		set_events(c, EPOLLOUT);
		return;
	case CONN_DRAINING:
		return;
	case CONN_WAITING:
		c->partial_since = 0;
		set_events(c, c->out.len ? EPOLLOUT : 0);
		return;
	case CONN_OPEN:
		break;
	}
	if (c->peer_eof && c->want_input && !c->out.len) {
		conn_close(c);   /* everything that came is answered */
		return;
	}
	if (c->want_input && pending(c)) {
		if (!c->partial_since)
			c->partial_since = now_ms();
	} else {
		c->partial_since = 0;
	}
	bool reading = c->want_input && !c->peer_eof && c->out.len < lim->out_high &&
		       pending(c) <= c->s->ops->max_request;
	set_events(c, (reading ? EPOLLIN | EPOLLRDHUP : 0) | (c->out.len ? EPOLLOUT : 0));
}

void conn_end(struct conn *c)
{
	if (c->state == CONN_CLOSED || c->state == CONN_DRAINING)
		return;
	c->state = CONN_ENDING;
	if (!c->dispatching && !send_out(c))
		settle(c);
}

static void fail(struct conn *c, enum conn_fail why)
{
	c->s->ops->fail(c, why);
	conn_end(c);
}

/* ---- input ----------------------------------------------------------------------------- */

static void consume(struct conn *c, size_t n)
{
	explicit_bzero(c->in.p + c->off, n);
	c->off += n;
	if (c->off == c->in.len) {
		c->in.len = c->off = 0;
		if (c->in.cap > READ_CHUNK)
			buf_wipe(&c->in);   /* a big request's buffer goes back */
	}
	c->partial_since = 0;
}

/* Dispatch the complete requests buffered while output may grow. Sets want_input when it
 * stopped for want of bytes. */
static void dispatch(struct conn *c)
{
	const struct conn_limits *lim = &c->s->lim;
	struct conn_pool *p = c->s->p;
	c->want_input = false;
	c->dispatching = true;
	while (c->state == CONN_OPEN && c->out.len < lim->out_high &&
	       !(c->out.len && p->out > p->out_budget)) {
		if (!pending(c) && !c->peer_eof) {
			c->want_input = true;
			break;
		}
		char *in = c->in.p ? c->in.p + c->off : p->scratch;
		in[pending(c)] = 0;   /* buf keeps a spare byte */
		size_t n = c->s->ops->dispatch(c, in, pending(c), c->peer_eof);
		if (c->state == CONN_CLOSED)
			break;   /* closed by its own handler (a push to a subscriber that does not read) */
		if (!n) {
			c->want_input = c->state == CONN_OPEN;
			break;
		}
		consume(c, n);
		p->out = p->out - c->counted_out + c->out.len;
		c->counted_out = c->out.len;
	}
	c->dispatching = false;
}

/* One read through the pool's scratch buffer: bytes, 0 at EOF, -errno. */
static ssize_t read_some(struct conn *c)
{
	struct conn_pool *p = c->s->p;
	size_t room = c->s->ops->max_request + 1 - pending(c);
	if (room > READ_CHUNK)
		room = READ_CHUNK;
	ssize_t n = recv(c->fd, p->scratch, room, 0);
	if (n < 0)
		return -errno;
	if (n > 0) {
		if (c->off && c->in.len + n >= c->in.cap) {   /* compact before growing */
			memmove(c->in.p, c->in.p + c->off, pending(c));
			c->in.len -= c->off;
			c->off = 0;
		}
		int r = buf_append(&c->in, p->scratch, n);
		explicit_bzero(p->scratch, n);
		if (r)
			return -ENOMEM;
		c->last_io = now_ms();
	}
	return n;
}

static void pump(struct conn *c)
{
	struct conn_pool *p = c->s->p;
	for (int reads = 0;;) {
		dispatch(c);
		if (c->state == CONN_CLOSED || send_out(c))
			return;
		if (c->state != CONN_OPEN || c->out.len >= c->s->lim.out_high)
			break;
		if (!c->want_input) {
			if (c->out.len && p->out > p->out_budget)
				break;   /* the pool is over its output budget: wait for this client */
			continue;    /* output drained below the mark: answer the next requests */
		}
		if (c->peer_eof || reads++ == READS_PER_EVENT ||
		    pending(c) > c->s->ops->max_request)
			break;
		ssize_t n = read_some(c);
		if (n == -EAGAIN || n == -EINTR)
			break;
		if (n < 0) {
			conn_close(c);
			return;
		}
		if (n == 0) {
			c->peer_eof = true;
			continue;
		}
		account(c);
		if (p->in > p->in_budget && pending(c) > IN_SMALL) {
			log_warn("refusing an unfinished request: input budget exceeded", "server=%s pending=%zu total=%zu",
				 c->s->ops->name, pending(c), p->in);
			fail(c, CONN_FAIL_BUDGET);
			break;
		}
	}
	settle(c);
}

void conn_flush(struct conn *c)
{
	if (c->state == CONN_CLOSED || c->dispatching)
		return;
	if (!send_out(c))
		settle(c);
}

static void drain(struct conn *c)
{
	struct conn_pool *p = c->s->p;
	for (;;) {
		ssize_t n = recv(c->fd, p->scratch, sizeof p->scratch, 0);
		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		conn_close(c);
		return;
	}
}

static void on_conn(struct loop *l, int fd, uint32_t events, void *ctx)
{
	struct conn *c = ctx;
	if (c->state == CONN_DRAINING) {
		drain(c);
		return;
	}
	if ((events & EPOLLERR) || ((events & EPOLLHUP) && !(events & EPOLLIN))) {
		conn_close(c);
		return;
	}
	if (c->state == CONN_WAITING || c->state == CONN_ENDING) {
		if (!send_out(c))
			settle(c);
		return;
	}
	pump(c);
}

/* ---- deferred replies ------------------------------------------------------------------ */

void *conn_defer(struct conn *c, size_t size)
{
	if (c->state != CONN_OPEN || c->defer)
		return NULL;
	struct conn_defer *d = calloc(1, sizeof *d + size);
	if (!d)
		return NULL;
	d->c = c;
	c->defer = d;
	c->state = CONN_WAITING;
	return d->user;
}

static struct conn_defer *defer_of(void *user)
{
	return (struct conn_defer *)((char *)user - offsetof(struct conn_defer, user));
}

struct conn *conn_defer_conn(void *user) { return defer_of(user)->c; }

void conn_defer_done(void *user)
{
	struct conn_defer *d = defer_of(user);
	struct conn *c = d->c;
	free(d);
	if (!c)
		return;
	c->defer = NULL;
	if (c->state == CONN_WAITING)
		c->state = CONN_OPEN;
	if (!c->dispatching)
		pump(c);   /* answer what waited, then read again */
}

/* ---- deadlines ------------------------------------------------------------------------- */

static void sweep(struct loop *l, void *ctx);

static int64_t sweep_ms(const struct conn_limits *lim)
{
	int64_t ms = 1000;
	if (lim->line_timeout_ms && lim->line_timeout_ms / 4 < ms)
		ms = lim->line_timeout_ms / 4;
	if (lim->drain_ms && lim->drain_ms / 2 < ms)
		ms = lim->drain_ms / 2;
	return ms < 10 ? 10 : ms;
}

static void arm_sweep(struct conn_server *s)
{
	if (!s->sweep && s->nconns)
		s->sweep = loop_timer(s->p->l, sweep_ms(&s->lim), sweep, s);
}

static void sweep(struct loop *l, void *ctx)
{
	struct conn_server *s = ctx;
	const struct conn_limits *lim = &s->lim;
	int64_t now = now_ms();
	s->sweep = 0;
	for (struct conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		if (c->state == CONN_DRAINING) {
			if (now - c->drain_since >= lim->drain_ms)
				conn_close(c);
			continue;
		}
		if (c->out.len && c->out_since && lim->stall_ms && now - c->out_since >= lim->stall_ms) {
			log_warn("closing a connection whose client does not read", "server=%s pending=%zu",
				 s->ops->name, c->out.len);
			conn_close(c);
			continue;
		}
		if (c->state == CONN_OPEN && c->partial_since && lim->line_timeout_ms &&
		    now - c->partial_since >= lim->line_timeout_ms) {
			log_info("closing a connection with a request unfinished for too long",
				 "server=%s bytes=%zu", s->ops->name, pending(c));
			fail(c, CONN_FAIL_TIMEOUT);
			continue;
		}
		if (c->state == CONN_OPEN && lim->idle_ms && !c->out.len && now - c->last_io >= lim->idle_ms)
			conn_close(c);
	}
	arm_sweep(s);
}

/* ---- accepting ------------------------------------------------------------------------- */

/* The table is full: the connection that has waited longest without completing a request
 * goes. A connection holding part of a request has been waiting since its first byte; an
 * idle one only since its last reply, and idle ones go only when no connection holds a
 * partial request. One that waits for our own deferred work is never chosen. */
static struct conn *victim(struct conn_server *s)
{
	struct conn *best = NULL;
	bool best_partial = false;
	int64_t best_t = 0;
	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->state == CONN_WAITING)
			continue;
		bool partial = c->partial_since || c->state != CONN_OPEN;
		int64_t t = c->state != CONN_OPEN ? 0 : partial ? c->partial_since : c->last_io;
		if (!best || (partial && !best_partial) || (partial == best_partial && t < best_t)) {
			best = c;
			best_partial = partial;
			best_t = t;
		}
	}
	return best;
}

static void resume_accept(struct loop *l, void *ctx)
{
	struct conn_server *s = ctx;
	s->accept_timer = 0;
	loop_mod(l, s->lfd, EPOLLIN);
}

static void on_accept(struct loop *l, int fd, uint32_t events, void *ctx)
{
	struct conn_server *s = ctx;
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* Out of descriptors: stop accepting for a moment instead of spinning. */
				log_warn("cannot accept connections", "server=%s err=\"%s\"", s->ops->name,
					 strerror(errno));
				loop_mod(l, fd, 0);
				s->accept_timer = loop_timer(l, 100, resume_accept, s);
			}
			return;
		}
		if (s->allow && !s->allow((struct sockaddr *)&ss, sl, s->ctx)) {
			close(cfd);
			continue;
		}
		if (s->nconns >= s->lim.max_conns) {
			struct conn *v = victim(s);
			if (v) {
				log_warn("connection table full: evicting the longest waiting", "server=%s",
					 s->ops->name);
				if (v->state == CONN_OPEN)
					s->ops->fail(v, CONN_FAIL_EVICTED);
				send_out(v);
				conn_close(v);
			}
		}
		struct conn *c = calloc(1, sizeof *c + s->ops->priv_size);
		if (!c) {
			close(cfd);
			continue;
		}
		int64_t now = now_ms();
		c->s = s;
		c->fd = cfd;
		c->state = CONN_OPEN;
		c->want_input = true;
		c->events = EPOLLIN | EPOLLRDHUP;
		c->accepted = c->last_io = now;
		if (loop_add(l, cfd, c->events, on_conn, c)) {
			close(cfd);
			free(c);
			continue;
		}
		c->next = s->conns;
		if (s->conns)
			s->conns->prev = c;
		s->conns = c;
		s->nconns++;
		if (s->ops->opened)
			s->ops->opened(c);
		arm_sweep(s);
	}
}

struct conn_server *conn_server_new(struct conn_pool *p, int lfd, const struct conn_ops *ops,
				    const struct conn_limits *lim, conn_allow_fn allow,
				    const void *ctx, size_t ctx_size)
{
	struct conn_server *s = calloc(1, sizeof *s + ctx_size);
	if (!s)
		return NULL;
	*s = (struct conn_server){.p = p, .ops = ops, .lim = *lim, .allow = allow, .lfd = lfd};
	memcpy(s->ctx, ctx, ctx_size);
	if (loop_add(p->l, lfd, EPOLLIN, on_accept, s)) {
		free(s);
		return NULL;
	}
	return s;
}

void conn_server_each(struct conn_server *s, void (*fn)(struct conn *c, void *arg), void *arg)
{
	for (struct conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		fn(c, arg);
	}
}

void conn_server_free(struct conn_server *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_close(s->conns);
	if (s->sweep)
		loop_timer_cancel(s->p->l, s->sweep);
	if (s->accept_timer)
		loop_timer_cancel(s->p->l, s->accept_timer);
	loop_del(s->p->l, s->lfd);
	close(s->lfd);
	free(s);
}
