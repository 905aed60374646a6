/* http_server.c - the keep-alive HTTP/1.1 server (see http.h) on the connection layer
 * (common/conn.c), which gives it what every server here has: back-pressure, the shared input
 * and output budgets, the unfinished-request and idle deadlines, eviction when the table is
 * full, half-close (a request that came with the client's FIN is answered), and deferred
 * replies. This file only frames requests and writes responses. */
#include "common/stereo.h"
#include "common/conn.h"
#include <sys/socket.h>

struct http_conn {
	int uid;
	bool replied, close_after;
	size_t scanned;       /* resume offset of the head search */
	size_t need;          /* once a head is parsed: head + body bytes of that request */
};

struct http_server {          /* kept by the connection layer: conn_ctx() */
	http_handler h;
	void *ctx;
};

struct http_defer {            /* allocated by conn_defer */
	bool close_after;
};

void http_reply(struct http_conn *c, int status, const char *body, size_t len)
{
	if (c->replied)
		return;
	c->replied = true;
	struct buf *out = conn_out(conn_of_priv(c));
	buf_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
		   "Content-Length: %zu\r\n%s\r\n", status, http_reason(status), len,
		   c->close_after ? "Connection: close\r\n" : "");
	buf_append(out, body, len);
}

void http_reply_json(struct http_conn *c, int status, const struct buf *json)
{
	http_reply(c, status, json->p ? json->p : "", json->len);
}

static void error_body(struct buf *b, const char *msg)
{
	struct jw w;
	jw_init(&w, b);
	jw_obj(&w);
	jw_kstr(&w, "error", msg);
	jw_obj_end(&w);
	buf_putc(b, '\n');
}

void http_reply_error(struct http_conn *c, int status, const char *msg)
{
	struct buf b = {0};
	error_body(&b, msg);
	http_reply_json(c, status, &b);
	buf_free(&b);
}

int http_conn_peer_uid(struct http_conn *c) { return c->uid; }

/* ---- deferred replies ------------------------------------------------------------------ */

struct http_defer *http_defer(struct http_conn *c)
{
	struct http_defer *d = conn_defer(conn_of_priv(c), sizeof *d);
	if (!d)
		return NULL;
	d->close_after = c->close_after;
	c->replied = true;   /* the reply is the defer's now */
	return d;
}

void http_defer_reply(struct http_defer *d, int status, const char *body, size_t len)
{
	struct conn *c = conn_defer_conn(d);
	if (c) {
		struct http_conn *h = conn_priv(c);
		h->replied = false;
		h->close_after = d->close_after;
		http_reply(h, status, body, len);
		if (h->close_after)
			conn_end(c);
	}
	conn_defer_done(d);   /* frees d, serves the requests that waited */
}

void http_defer_json(struct http_defer *d, int status, const struct buf *json)
{
	http_defer_reply(d, status, json->p ? json->p : "", json->len);
}

void http_defer_error(struct http_defer *d, int status, const char *msg)
{
	struct buf b = {0};
	error_body(&b, msg);
	http_defer_json(d, status, &b);
	buf_free(&b);
}

/* ---- framing --------------------------------------------------------------------------- */

/* A request that can never be served: answer it and end the connection. */
static size_t refuse(struct conn *c, struct http_conn *h, int status, const char *msg)
{
	h->close_after = true;
	h->replied = false;
	http_reply_error(h, status, msg);
	conn_end(c);
	return 0;
}

static size_t http_dispatch(struct conn *c, char *in, size_t len, bool eof)
{
	struct http_server *s = conn_ctx(c);
	struct http_conn *h = conn_priv(c);
	if (h->need && len < h->need)
		return 0;   /* the body is still coming */
	long head = http_head_end(in, len, &h->scanned);
	if (head == HTTP_PARTIAL)
		return 0;
	if (head < 0)
		return refuse(c, h, 431, "request head too large");
	struct http_msg m;
	int r = http_parse_request(in, len, &m);
	if (r == HTTP_BAD || r == HTTP_PARTIAL)
		return refuse(c, h, 400, "malformed HTTP request");
	if (r < 0)
		return refuse(c, h, 431, "request head too large");
	if (m.chunked)
		return refuse(c, h, 411, "chunked request bodies are not supported; send Content-Length");
	if (m.content_length > HTTP_MAX_BODY)
		return refuse(c, h, 413, "request body too large (max 1048576 bytes)");
	size_t cl = m.content_length < 0 ? 0 : (size_t)m.content_length;
	if (len < (size_t)r + cl) {
		h->need = r + cl;
		return 0;
	}
	h->need = 0;
	h->scanned = 0;
	h->replied = false;
	if (!m.keep_alive)
		h->close_after = true;
	char saved = in[r + cl];
	in[r + cl] = 0;   /* the body is a C string for the handler too */
	s->h(h, &m, in + r, cl, s->ctx);
	in[r + cl] = saved;
	if (!h->replied)
		http_reply_error(h, 500, "no reply");
	if (h->close_after && conn_state(c) == CONN_OPEN)
		conn_end(c);
	return r + cl;
}

static void http_fail(struct conn *c, enum conn_fail why)
{
	struct http_conn *h = conn_priv(c);
	h->close_after = true;
	h->replied = false;
	if (why == CONN_FAIL_BUDGET)
		http_reply_error(h, 503, "too much unfinished input across connections (max 33554432 "
			 "bytes): request refused");
	else if (why == CONN_FAIL_TIMEOUT)
		http_reply_error(h, 408, "request not finished in time");
	else
		http_reply_error(h, 503, "connection table full: closing the connection that waited longest");
}

static void http_opened(struct conn *c)
{
	struct http_conn *h = conn_priv(c);
	struct ucred cr;
	socklen_t cl = sizeof cr;
	h->uid = getsockopt(conn_fd(c), SOL_SOCKET, SO_PEERCRED, &cr, &cl) ? -1 : (int)cr.uid;
}

const struct conn_limits http_default_limits = {
	.max_conns = 1024, .out_high = 256 * 1024, .line_timeout_ms = 10000, .idle_ms = 60000,
	.stall_ms = 30000, .drain_ms = 2000,
};

static const struct conn_ops http_ops = {
	.name = "ipc",
	.priv_size = sizeof(struct http_conn),
	.max_request = HTTP_MAX_HEAD + HTTP_MAX_BODY,
	.dispatch = http_dispatch,
	.fail = http_fail,
	.opened = http_opened,
};

struct http_server *http_server_new(struct conn_pool *pool, int lfd, const struct conn_limits *lim,
				    http_handler h, void *ctx)
{
	struct http_server init = {.h = h, .ctx = ctx};
	struct conn_server *cs = conn_server_new(pool, lfd, &http_ops, lim ? lim : &http_default_limits,
						 NULL, &init, sizeof init);
	return cs ? conn_server_ctx(cs) : NULL;
}

void http_server_free(struct http_server *s)
{
	if (s)
		conn_server_free(conn_server_of(s));
}
