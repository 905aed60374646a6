/* http.c - HTTP/1.1 parser, server and client (see http.h). */
#include "common/stereo.h"
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- parser ---------------------------------------------------------------------------- */
static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool ieq(const char *a, size_t an, const char *b)
{
	return strlen(b) == an && !strncasecmp(a, b, an);
}

/* Find the end of the line starting at p: returns pointer to '\n', or NULL. */
static const char *line_end(const char *p, const char *end)
{
	return memchr(p, '\n', end - p);
}

static int parse_headers(const char *p, const char *end, struct http_msg *m)
{
	const char *start = p;
	m->nh = 0;
	m->content_length = -1;
	m->chunked = false;
	for (;;) {
		const char *nl = line_end(p, end);
		if (!nl)
			return HTTP_PARTIAL;
		const char *le = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
		if (le == p)
			return (int)(nl + 1 - start);
		if (m->nh == HTTP_MAX_HEADERS)
			return HTTP_TOO_LARGE;
		const char *c = p;
		while (c < le && is_tchar(*c))
			c++;
		if (c == p || c >= le || *c != ':')
			return HTTP_BAD;
		struct http_header *h = &m->h[m->nh++];
		h->name = p;
		h->name_len = c - p;
		const char *v = c + 1, *ve = le;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		for (const char *q = v; q < ve; q++)
			if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
				return HTTP_BAD;
		h->value = v;
		h->value_len = ve - v;
		if (ieq(h->name, h->name_len, "content-length")) {
			if (!h->value_len || h->value_len > 15)
				return HTTP_BAD;
			long long cl = 0;
			for (size_t i = 0; i < h->value_len; i++) {
				if (v[i] < '0' || v[i] > '9')
					return HTTP_BAD;
				cl = cl * 10 + (v[i] - '0');
			}
			if (m->content_length >= 0 && m->content_length != cl)
				return HTTP_BAD;
			m->content_length = cl;
		} else if (ieq(h->name, h->name_len, "transfer-encoding")) {
			if (h->value_len >= 7 && !strncasecmp(ve - 7, "chunked", 7))
				m->chunked = true;
			else
				return HTTP_BAD;
		} else if (ieq(h->name, h->name_len, "connection")) {
			if (ieq(v, h->value_len, "close"))
				m->keep_alive = false;
			else if (ieq(v, h->value_len, "keep-alive"))
				m->keep_alive = true;
		}
		p = nl + 1;
	}
}

static int parse_version(const char *p, const char *e, int *minor)
{
	if (e - p != 8 || memcmp(p, "HTTP/1.", 7) || (p[7] != '0' && p[7] != '1'))
		return HTTP_BAD;
	*minor = p[7] - '0';
	return 0;
}

static int finish(const char *buf, size_t len, const char *hstart, struct http_msg *m)
{
	int r = parse_headers(hstart, buf + len, m);
	if (r == HTTP_PARTIAL)
		return len > HTTP_MAX_HEAD ? HTTP_TOO_LARGE : HTTP_PARTIAL;
	if (r < 0)
		return r;
	m->head_len = (hstart - buf) + r;
	if (m->head_len > HTTP_MAX_HEAD)
		return HTTP_TOO_LARGE;
	if (m->chunked && m->content_length >= 0)
		return HTTP_BAD;   /* request smuggling guard (RFC 9112 6.3) */
	return (int)m->head_len;
}

int http_parse_request(const char *buf, size_t len, struct http_msg *m)
{
	memset(m, 0, sizeof *m);
	const char *end = buf + (len > HTTP_MAX_HEAD + 1 ? HTTP_MAX_HEAD + 1 : len);
	const char *nl = line_end(buf, end);
	if (!nl)
		return len > HTTP_MAX_HEAD ? HTTP_TOO_LARGE : HTTP_PARTIAL;
	const char *le = nl > buf && nl[-1] == '\r' ? nl - 1 : nl;
	const char *sp1 = memchr(buf, ' ', le - buf);
	if (!sp1 || sp1 == buf)
		return HTTP_BAD;
	for (const char *q = buf; q < sp1; q++)
		if (!is_tchar(*q))
			return HTTP_BAD;
	const char *t = sp1 + 1;
	const char *sp2 = memchr(t, ' ', le - t);
	if (!sp2 || sp2 == t)
		return HTTP_BAD;
	for (const char *q = t; q < sp2; q++)
		if ((unsigned char)*q <= 0x20 || *q == 0x7f)
			return HTTP_BAD;
	if (parse_version(sp2 + 1, le, &m->minor))
		return HTTP_BAD;
	m->method = buf;
	m->method_len = sp1 - buf;
	m->target = t;
	m->target_len = sp2 - t;
	m->keep_alive = m->minor == 1;
	return finish(buf, end - buf, nl + 1, m);
}

int http_parse_response(const char *buf, size_t len, struct http_msg *m)
{
	memset(m, 0, sizeof *m);
	const char *end = buf + (len > HTTP_MAX_HEAD + 1 ? HTTP_MAX_HEAD + 1 : len);
	const char *nl = line_end(buf, end);
	if (!nl)
		return len > HTTP_MAX_HEAD ? HTTP_TOO_LARGE : HTTP_PARTIAL;
	const char *le = nl > buf && nl[-1] == '\r' ? nl - 1 : nl;
	if (le - buf < 12 || parse_version(buf, buf + 8, &m->minor) || buf[8] != ' ')
		return HTTP_BAD;
	int st = 0;
	for (int i = 9; i < 12; i++) {
		if (buf[i] < '0' || buf[i] > '9')
			return HTTP_BAD;
		st = st * 10 + (buf[i] - '0');
	}
	if (st < 100 || (le - buf > 12 && buf[12] != ' '))
		return HTTP_BAD;
	m->status = st;
	m->keep_alive = m->minor == 1;
	return finish(buf, end - buf, nl + 1, m);
}

const struct http_header *http_header(const struct http_msg *m, const char *name)
{
	for (size_t i = 0; i < m->nh; i++)
		if (ieq(m->h[i].name, m->h[i].name_len, name))
			return &m->h[i];
	return NULL;
}

long http_dechunk(const char *buf, size_t len, struct buf *out, size_t max)
{
	size_t p = 0;
	out->len = 0;
	for (;;) {
		const char *nl = memchr(buf + p, '\n', len - p);
		if (!nl)
			return HTTP_PARTIAL;
		size_t sz = 0;
		const char *q = buf + p;
		int digits = 0;
		for (; q < nl && *q != ';' && *q != '\r'; q++, digits++) {
			int d = (*q >= '0' && *q <= '9') ? *q - '0' : (*q | 0x20) >= 'a' && (*q | 0x20) <= 'f' ? (*q | 0x20) - 'a' + 10 : -1;
			if (d < 0 || digits >= 8)
				return HTTP_BAD;
			sz = sz * 16 + d;
		}
		if (!digits)
			return HTTP_BAD;
		p = nl + 1 - buf;
		if (sz == 0) {   /* trailers until an empty line */
			for (;;) {
				nl = memchr(buf + p, '\n', len - p);
				if (!nl)
					return HTTP_PARTIAL;
				size_t ll = nl - (buf + p);
				p = nl + 1 - buf;
				if (ll == 0 || (ll == 1 && buf[p - 2] == '\r'))
					return (long)p;
			}
		}
		if (out->len + sz > max)
			return HTTP_TOO_LARGE;
		if (len - p < sz + 1)
			return HTTP_PARTIAL;
		buf_append(out, buf + p, sz);
		p += sz;
		if (buf[p] == '\r') {
			if (len - p < 2)
				return HTTP_PARTIAL;
			p++;
		}
		if (buf[p] != '\n')
			return HTTP_BAD;
		p++;
	}
}

const char *http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Payload Too Large";
	case 422: return "Unprocessable Entity";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	default: return "Unknown";
	}
}

/* ---- server ---------------------------------------------------------------------------- */
#define HTTP_IDLE_MS 60000
#define HTTP_MAX_CONNS 1024

struct http_conn {
	struct http_server *srv;
	int fd;
	struct buf in, out;
	bool replied, close_after, closing;
	bool eof;                     /* the client half-closed: answer what is buffered, then close */
	bool dispatching;
	struct http_defer *waiting;   /* a deferred reply not sent yet: later requests wait */
	int64_t last;
	int uid;
	struct http_conn *next;
};

struct http_defer {
	struct http_conn *c;   /* NULL once the connection is gone */
};

struct http_server {
	struct loop *l;
	int lfd;
	http_handler h;
	void *ctx;
	struct http_conn *conns;
	int nconns;
	uint64_t sweep;
};

static void conn_close(struct http_conn *c)
{
	struct http_server *s = c->srv;
	loop_del(s->l, c->fd);
	close(c->fd);
	for (struct http_conn **pp = &s->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	s->nconns--;
	if (c->waiting)
		c->waiting->c = NULL;   /* its reply, when it comes, is dropped */
	buf_wipe(&c->in);   /* bodies may hold secrets */
	buf_free(&c->out);
	free(c);
}

void http_reply(struct http_conn *c, int status, const char *body, size_t len)
{
	if (c->replied)
		return;
	c->replied = true;
	buf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
		   "Content-Length: %zu\r\n%s\r\n", status, http_reason(status), len,
		   c->close_after ? "Connection: close\r\n" : "");
	buf_append(&c->out, body, len);
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

static void conn_flush(struct http_conn *c)
{
	while (c->out.len) {
		ssize_t n = send(c->fd, c->out.p, c->out.len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			conn_close(c);
			return;
		}
		buf_consume(&c->out, n);
	}
	if (!c->out.len && (c->close_after || c->eof) && !c->waiting) {
		conn_close(c);
		return;
	}
	bool reading = !c->waiting && !c->close_after && !c->eof &&
		       c->in.len <= HTTP_MAX_HEAD + HTTP_MAX_BODY + 1;
	loop_mod(c->srv->l, c->fd, (reading ? EPOLLIN | EPOLLRDHUP : 0) | (c->out.len ? EPOLLOUT : 0));
}

struct http_defer *http_defer(struct http_conn *c)
{
	struct http_defer *d = calloc(1, sizeof *d);
	if (!d)
		return NULL;
	d->c = c;
	c->waiting = d;
	c->replied = true;
	return d;
}

static void conn_process(struct http_conn *c);

void http_defer_reply(struct http_defer *d, int status, const char *body, size_t len)
{
	struct http_conn *c = d->c;
	free(d);
	if (!c)
		return;
	c->waiting = NULL;
	c->replied = false;
	http_reply(c, status, body, len);
	if (c->dispatching)
		return;
	conn_process(c);
	conn_flush(c);
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

/* Serve the first complete request in the buffer: false when there is none (or no more
 * may be served on this connection). */
static bool serve_one(struct http_conn *c)
{
	struct http_msg m;
	int r = http_parse_request(c->in.p, c->in.len, &m);
	if (r == HTTP_PARTIAL)
		return false;
	c->replied = false;
	if (r == HTTP_BAD || r == HTTP_TOO_LARGE) {
		c->close_after = true;
		http_reply_error(c, r == HTTP_BAD ? 400 : 431,
				 r == HTTP_BAD ? "malformed HTTP request" : "request head too large");
		return false;
	}
	if (m.chunked) {
		c->close_after = true;
		http_reply_error(c, 411, "chunked request bodies are not supported; send Content-Length");
		return false;
	}
	size_t cl = m.content_length < 0 ? 0 : (size_t)m.content_length;
	if (m.content_length > HTTP_MAX_BODY) {
		c->close_after = true;
		http_reply_error(c, 413, "request body too large (max 1048576 bytes)");
		return false;
	}
	if (c->in.len < (size_t)r + cl)
		return false;
	if (!m.keep_alive)
		c->close_after = true;
	c->srv->h(c, &m, c->in.p + r, cl, c->srv->ctx);
	if (!c->replied)
		http_reply_error(c, 500, "no reply");
	explicit_bzero(c->in.p, r + cl);
	buf_consume(&c->in, r + cl);
	return true;
}

/* Serve every complete request in the buffer, in order, until one is deferred. Requests that
 * arrived with the client's half-close are still served: EOF only ends the connection once
 * they are answered. */
static void conn_process(struct http_conn *c)
{
	c->dispatching = true;
	while (c->in.len && !c->close_after && !c->waiting && serve_one(c))
		;
	c->dispatching = false;
}

static void on_conn(struct loop *l, int fd, uint32_t ev, void *ctx)
{
	struct http_conn *c = ctx;
	c->last = now_ms();
	if ((ev & EPOLLIN) && !c->eof && !c->close_after && !c->waiting) {
		for (;;) {
			if (c->in.len > HTTP_MAX_HEAD + HTTP_MAX_BODY + 1)
				break;   /* the parser will answer 413/431 from what we have */
			if (buf_reserve(&c->in, 16384)) {
				conn_close(c);
				return;
			}
			ssize_t n = recv(fd, c->in.p + c->in.len, 16384, 0);
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR)
					break;
				conn_close(c);
				return;
			}
			if (n == 0) {
				c->eof = true;
				break;
			}
			c->in.len += n;
			c->in.p[c->in.len] = 0;
		}
		conn_process(c);
	} else if ((ev & (EPOLLHUP | EPOLLERR)) && !(ev & EPOLLIN)) {
		conn_close(c);
		return;
	}
	conn_flush(c);
}

static void on_accept(struct loop *l, int fd, uint32_t ev, void *ctx)
{
	struct http_server *s = ctx;
	for (;;) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0)
			return;
		if (s->nconns >= HTTP_MAX_CONNS) {
			close(cfd);
			continue;
		}
		struct http_conn *c = calloc(1, sizeof *c);
		if (!c) {
			close(cfd);
			continue;
		}
		c->srv = s;
		c->fd = cfd;
		c->last = now_ms();
		c->uid = -1;
		struct ucred cr;
		socklen_t cl = sizeof cr;
		if (!getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cr, &cl))
			c->uid = cr.uid;
		if (loop_add(l, cfd, EPOLLIN | EPOLLRDHUP, on_conn, c)) {
			close(cfd);
			free(c);
			continue;
		}
		c->next = s->conns;
		s->conns = c;
		s->nconns++;
	}
}

static void sweep(struct loop *l, void *ctx)
{
	struct http_server *s = ctx;
	int64_t now = now_ms();
	for (struct http_conn *c = s->conns, *n; c; c = n) {
		n = c->next;
		if (now - c->last > HTTP_IDLE_MS)
			conn_close(c);
	}
	s->sweep = loop_timer(l, 5000, sweep, s);
}

struct http_server *http_server_new(struct loop *l, int lfd, http_handler h, void *ctx)
{
	struct http_server *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	*s = (struct http_server){.l = l, .lfd = lfd, .h = h, .ctx = ctx};
	if (loop_add(l, lfd, EPOLLIN, on_accept, s)) {
		free(s);
		return NULL;
	}
	s->sweep = loop_timer(l, 5000, sweep, s);
	return s;
}

void http_server_free(struct http_server *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_close(s->conns);
	loop_timer_cancel(s->l, s->sweep);
	loop_del(s->l, s->lfd);
	free(s);
}

/* ---- client ---------------------------------------------------------------------------- */
static void build_request(struct buf *b, const char *method, const char *path,
			  const char *body, size_t blen)
{
	buf_printf(b, "%s %s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: stereo/" STEREO_VERSION
		   "\r\nAccept: application/json\r\nConnection: close\r\n", method, path);
	if (body || strcmp(method, "GET"))
		buf_printf(b, "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
	buf_puts(b, "\r\n");
	if (body)
		buf_append(b, body, blen);
}

/* 1 = complete response in b (status, body), 0 = need more, <0 = HTTPC_PROTO */
static int try_response(struct buf *b, bool eof, int *status, struct buf *body)
{
	struct http_msg m;
	int r = http_parse_response(b->p ? b->p : "", b->len, &m);
	if (r == HTTP_PARTIAL)
		return eof ? HTTPC_PROTO : 0;
	if (r < 0)
		return HTTPC_PROTO;
	*status = m.status;
	if (m.chunked) {
		long k = http_dechunk(b->p + r, b->len - r, body, HTTP_MAX_BODY);
		if (k == HTTP_PARTIAL)
			return eof ? HTTPC_PROTO : 0;
		return k < 0 ? HTTPC_PROTO : 1;
	}
	size_t have = b->len - r;
	if (m.content_length >= 0) {
		if (m.content_length > HTTP_MAX_BODY)
			return HTTPC_PROTO;
		if (have < (size_t)m.content_length)
			return eof ? HTTPC_PROTO : 0;
		body->len = 0;
		buf_append(body, b->p + r, m.content_length);
		return 1;
	}
	if (!eof)
		return have > HTTP_MAX_BODY ? HTTPC_PROTO : 0;
	body->len = 0;
	buf_append(body, b->p + r, have);
	return 1;
}

int http_call(const char *sock_path, const char *method, const char *path,
	      const char *body, size_t body_len, int timeout_ms,
	      int *status, struct buf *resp, char *err)
{
	int64_t deadline = now_ms() + timeout_ms;
	bool to;
	int fd = sock_connect_unix(sock_path, timeout_ms, &to, err);
	if (fd < 0)
		return to ? HTTPC_TIMEOUT : HTTPC_CONNECT;
	struct buf req = {0}, in = {0};
	build_request(&req, method, path, body, body_len);
	int rc = write_all(fd, req.p, req.len) ? HTTPC_CONNECT : 0;
	buf_wipe(&req);
	if (rc) {
		errf(err, "sending request to %s: %s", sock_path, strerror(errno));
		goto out;
	}
	for (;;) {
		int left = (int)(deadline - now_ms());
		if (left <= 0 || fd_wait(fd, POLLIN, left) <= 0) {
			rc = HTTPC_TIMEOUT;
			errf(err, "waiting for %s: timed out", sock_path);
			break;
		}
		buf_reserve(&in, 16384);
		ssize_t n = read(fd, in.p + in.len, 16384);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = HTTPC_CONNECT;
			errf(err, "reading from %s: %s", sock_path, strerror(errno));
			break;
		}
		in.len += n;
		int r = try_response(&in, n == 0, status, resp);
		if (r == 1)
			break;
		if (r < 0) {
			rc = HTTPC_PROTO;
			errf(err, "malformed HTTP response from %s", sock_path);
			break;
		}
	}
out:
	buf_wipe(&in);
	close(fd);
	return rc;
}

struct async {
	struct loop *l;
	int fd;
	struct buf out, in, body;
	http_done cb;
	void *ctx;
	uint64_t timer;
	bool connected;
};

static void async_end(struct async *a, int status, const char *err)
{
	loop_del(a->l, a->fd);
	close(a->fd);
	if (a->timer)
		loop_timer_cancel(a->l, a->timer);
	a->cb(a->ctx, status, a->body.p ? a->body.p : "", a->body.len, err);
	buf_free(&a->out);
	buf_free(&a->in);
	buf_free(&a->body);
	free(a);
}

static void async_timeout(struct loop *l, void *ctx)
{
	struct async *a = ctx;
	a->timer = 0;
	async_end(a, 0, "timed out");
}

static void async_io(struct loop *l, int fd, uint32_t ev, void *ctx)
{
	struct async *a = ctx;
	if (!a->connected && (ev & EPOLLOUT)) {
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr) {
			async_end(a, 0, strerror(soerr));
			return;
		}
		a->connected = true;
	}
	if (a->out.len && (ev & EPOLLOUT)) {
		ssize_t n = send(fd, a->out.p, a->out.len, MSG_NOSIGNAL);
		if (n < 0 && errno != EAGAIN) {
			async_end(a, 0, strerror(errno));
			return;
		}
		if (n > 0)
			buf_consume(&a->out, n);
		if (!a->out.len)
			loop_mod(l, fd, EPOLLIN);
	}
	if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		for (;;) {
			buf_reserve(&a->in, 16384);
			ssize_t n = recv(fd, a->in.p + a->in.len, 16384, 0);
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				return;
			if (n < 0) {
				async_end(a, 0, strerror(errno));
				return;
			}
			a->in.len += n;
			int st = 0;
			int r = try_response(&a->in, n == 0, &st, &a->body);
			if (r == 1) {
				async_end(a, st, NULL);
				return;
			}
			if (r < 0 || n == 0) {
				async_end(a, 0, "malformed HTTP response");
				return;
			}
		}
	}
}

int http_async(struct loop *l, const char *sock_path, const char *method, const char *path,
	       int timeout_ms, http_done cb, void *ctx)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(sock_path) >= sizeof sun.sun_path)
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, sock_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		return -e;
	}
	struct async *a = calloc(1, sizeof *a);
	if (!a) {
		close(fd);
		return -ENOMEM;
	}
	a->l = l;
	a->fd = fd;
	a->cb = cb;
	a->ctx = ctx;
	build_request(&a->out, method, path, NULL, 0);
	int rc = loop_add(l, fd, EPOLLOUT | EPOLLIN, async_io, a);
	if (rc) {
		close(fd);
		buf_free(&a->out);
		free(a);
		return rc;
	}
	a->timer = loop_timer(l, timeout_ms, async_timeout, a);
	return 0;
}
