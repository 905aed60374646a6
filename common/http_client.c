/* http_client.c - HTTP/1.1 clients over unix sockets (see http.h): a blocking one for the
 * CLIs and an asynchronous one on the event loop for daemons (stereod's agentd poller). */
#include "common/stereo.h"
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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
