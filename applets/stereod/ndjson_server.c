/* ndjson_server.c - NDJSON servers on the connection layer (common/conn.c): line framing,
 * the per-protocol line handler (struct ndjson_proto), deferred replies, lifecycle pushes to
 * subscribers and closing stale connections after a restore. The stereosd protocol itself
 * (messages, replies) is in ndjson_api.c; who may connect is checked by peer_allowed
 * (common/peer.c) before a connection exists.
 *
 * Every NDJSON server shares stereod's connection pool, so the input and output budgets
 * count every connection of every listener. Numbers: docs/stereod.md "Timeouts and budgets".
 */
#include "stereod.h"
#include "common/conn.h"

#define OUT_HARD (4 * 1024 * 1024)     /* drop a subscriber whose pushes pile up past this */

struct nconn {
	size_t scanned;             /* resume offset of the line search */
	bool subscribed;
	bool hello;                 /* said hello (ours): shown our states, degraded included */
};

struct ndjson_server {        /* kept by the connection layer: conn_ctx() */
	struct stereod *d;
	const struct ndjson_proto *proto;
	void *ctx;
};

struct buf *ndjson_out(struct nconn *c) { return conn_out(conn_of_priv(c)); }
void ndjson_subscribe(struct nconn *c) { c->subscribed = true; }
void ndjson_said_hello(struct nconn *c) { c->hello = true; }
bool ndjson_old_client(struct nconn *c) { return !c->hello && !c->subscribed; }
struct stereod *ndjson_daemon(struct nconn *c)
{
	return ((struct ndjson_server *)conn_ctx(conn_of_priv(c)))->d;
}

static size_t nd_dispatch(struct conn *c, char *in, size_t len, bool eof)
{
	struct ndjson_server *s = conn_ctx(c);
	struct nconn *nc = conn_priv(c);
	ssize_t l = ndjson_find(in, len, &nc->scanned, NDJSON_MAX_LINE);
	size_t used = l + 1;
	if (l == -EAGAIN && eof && len) {
		/* A last line without its newline is still a request, as with Go's bufio.Scanner
		 * upstream. */
		l = len;
		used = len;
	}
	if (l == -EAGAIN)
		return 0;
	if (l < 0) {
		s->proto->error(nc, "message too long (max 1048576 bytes)", s->ctx);
		conn_end(c);
		return 0;
	}
	nc->scanned = 0;
	in[l] = 0;
	if (l)   /* empty lines are skipped */
		s->proto->line(nc, in, l, s->ctx);
	return used;
}

static void nd_fail(struct conn *c, enum conn_fail why)
{
	struct ndjson_server *s = conn_ctx(c);
	static const char *const msg[] = {
		[CONN_FAIL_BUDGET] = "too much unfinished input across connections (max 33554432 bytes): "
				     "line refused",
		[CONN_FAIL_TIMEOUT] = "line not finished in time",
		[CONN_FAIL_EVICTED] = "connection table full: closing the connection that waited longest",
	};
	s->proto->error(conn_priv(c), msg[why], s->ctx);
}

static const struct conn_ops nd_ops = {
	.name = "ndjson",
	.priv_size = sizeof(struct nconn),
	.max_request = NDJSON_MAX_LINE,
	.dispatch = nd_dispatch,
	.fail = nd_fail,
};

static bool nd_allow(const struct sockaddr *sa, socklen_t len, void *ctx)
{
	struct ndjson_server *s = ctx;
	return peer_allowed(&s->d->peers, s->proto->name, sa, len);
}

struct ndjson_server *ndjson_server_new(struct stereod *d, int lfd, const struct ndjson_proto *proto,
					void *ctx)
{
	struct conn_limits lim = {
		.max_conns = NDJSON_MAX_CONNS, .out_high = NDJSON_OUT_HIGH,
		.line_timeout_ms = d->line_timeout_ms, .stall_ms = CONN_STALL_MS, .drain_ms = CONN_DRAIN_MS,
	};
	struct ndjson_server init = {.d = d, .proto = proto, .ctx = ctx};
	struct conn_server *cs = conn_server_new(d->pool, lfd, &nd_ops, &lim, nd_allow, &init, sizeof init);
	return cs ? conn_server_ctx(cs) : NULL;
}

void ndjson_server_free(struct ndjson_server *s)
{
	if (s)
		conn_server_free(conn_server_of(s));
}

/* ---- deferred replies -------------------------------------------------------------------- */

struct defer *ndjson_defer(struct nconn *c)
{
	struct defer *d = conn_defer(conn_of_priv(c), sizeof *d);
	if (d)
		d->d = ndjson_daemon(c);
	return d;
}

struct buf *defer_out(struct defer *d)
{
	struct conn *c = conn_defer_conn(d);
	return c ? conn_out(c) : NULL;
}

void defer_end(struct defer *d)
{
	buf_free(&d->id);
	buf_free(&d->type);
	conn_defer_done(d);   /* frees d, answers the lines that waited, then reads again */
}

void defer_line(struct defer *d, const char *line, size_t len)
{
	struct buf *out = defer_out(d);
	if (out) {
		buf_append(out, line, len);
		buf_putc(out, '\n');
	}
	defer_end(d);
}

/* ---- pushes and restores ----------------------------------------------------------------- */

struct push {
	const struct buf *line;
};

static void push_one(struct conn *c, void *arg)
{
	struct push *p = arg;
	struct nconn *nc = conn_priv(c);
	enum conn_state st = conn_state(c);
	if (!nc->subscribed || (st != CONN_OPEN && st != CONN_WAITING))
		return;
	struct buf *out = conn_out(c);
	if (out->len > OUT_HARD) {
		log_warn("dropping a subscriber that does not read", "pending=%zu", out->len);
		conn_close(c);
		return;
	}
	buf_append(out, p->line->p, p->line->len);
	conn_flush(c);
}

void ndjson_push_lifecycle(struct ndjson_server *s, const char *state, const char *message)
{
	struct buf line = {0};
	struct jw w;
	jw_init(&w, &line);
	jw_obj(&w);
	jw_kstr(&w, "type", "lifecycle");
	jw_key(&w, "payload");
	jw_obj(&w);
	jw_kstr(&w, "state", state);
	if (message && *message) {
		jw_key(&w, "message");
		jw_strn(&w, message, strlen(message));
	}
	jw_obj_end(&w);
	jw_obj_end(&w);
	buf_putc(&line, '\n');
	struct push p = {&line};
	conn_server_each(conn_server_of(s), push_one, &p);
	buf_free(&line);
}

struct stale {
	struct nconn *keep;
	int n;
};

static void close_stale(struct conn *c, void *arg)
{
	struct stale *st = arg;
	struct nconn *nc = conn_priv(c);
	enum conn_state cs = conn_state(c);
	if (nc == st->keep || (nc->subscribed && (cs == CONN_OPEN || cs == CONN_WAITING)))
		return;
	conn_close(c);
	st->n++;
}

int ndjson_close_stale(struct ndjson_server *s, struct nconn *keep)
{
	struct stale st = {keep, 0};
	conn_server_each(conn_server_of(s), close_stale, &st);
	return st.n;
}
