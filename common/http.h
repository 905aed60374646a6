/* http.h - HTTP/1.1 over unix sockets: an allocation-free parser (http_parse.c,
 * picohttpparser's contract: bytes used / -1 bad / -2 need more), a keep-alive server on the
 * connection layer (http_server.c over common/conn.c) and clients (http_client.c: blocking for
 * CLIs, asynchronous on the loop for daemons). Content-Length bodies; the client also reads
 * chunked responses (Go's net/http sends them for large bodies). */
#ifndef STEREO_HTTP_H
#define STEREO_HTTP_H
#include <stdbool.h>
#include <stddef.h>
#include "common/buf.h"

#define HTTP_MAX_HEADERS 32
#define HTTP_MAX_HEAD 16384
#define HTTP_MAX_BODY (1024 * 1024)

enum { HTTP_BAD = -1, HTTP_PARTIAL = -2, HTTP_TOO_LARGE = -3 };

struct http_header {
	const char *name, *value;
	size_t name_len, value_len;
};

struct http_msg {
	const char *method, *target;        /* requests */
	size_t method_len, target_len;
	int status;                         /* responses */
	int minor;                          /* HTTP/1.minor */
	struct http_header h[HTTP_MAX_HEADERS];
	size_t nh;
	size_t head_len;                    /* request/status line + headers + blank line */
	long long content_length;           /* -1 when absent */
	bool chunked, keep_alive;
};

/* The resume offset: the head's length once its blank line is in buf[0..len), HTTP_PARTIAL
 * before, HTTP_TOO_LARGE past HTTP_MAX_HEAD. *scanned (start at 0, keep while the same bytes
 * stay at buf) lets a head that arrives in pieces be scanned once. */
long http_head_end(const char *buf, size_t len, size_t *scanned);
int http_parse_request(const char *buf, size_t len, struct http_msg *m);
int http_parse_response(const char *buf, size_t len, struct http_msg *m);
const struct http_header *http_header(const struct http_msg *m, const char *name);
const char *http_reason(int status);
/* Decode a chunked body starting at buf: bytes consumed, HTTP_PARTIAL or HTTP_BAD. */
long http_dechunk(const char *buf, size_t len, struct buf *out, size_t max);

/* ---- server ---- */
struct loop;
struct conn_pool;
struct conn_limits;
struct http_server;
struct http_conn;
typedef void (*http_handler)(struct http_conn *c, const struct http_msg *req,
			     const char *body, size_t body_len, void *ctx);
/* Connections live in pool (budgets) under lim (common/conn.h; NULL: http_default_limits);
 * owns listen_fd. */
struct http_server *http_server_new(struct conn_pool *pool, int listen_fd,
				    const struct conn_limits *lim, http_handler h, void *ctx);
void http_server_free(struct http_server *s);
extern const struct conn_limits http_default_limits;   /* 1024 conns, 60 s idle, 10 s requests */
/* Exactly one reply per request, from inside the handler. */
void http_reply(struct http_conn *c, int status, const char *body, size_t len);
void http_reply_json(struct http_conn *c, int status, const struct buf *json);
void http_reply_error(struct http_conn *c, int status, const char *msg);
/* Deferred replies: a handler that cannot answer at once calls http_defer(c) instead of
 * replying and returns; the request's head and body are gone after that (copy what the work
 * needs). The connection serves no further request (and reads no more) until the reply is
 * given, on the loop thread, with exactly one http_defer_reply/_json/_error call, which
 * frees d. If the connection was closed meanwhile, the call only frees d.
 * http_defer returns NULL when out of memory: then reply at once. */
struct http_defer;
struct http_defer *http_defer(struct http_conn *c);
void http_defer_reply(struct http_defer *d, int status, const char *body, size_t len);
void http_defer_json(struct http_defer *d, int status, const struct buf *json);
void http_defer_error(struct http_defer *d, int status, const char *msg);
/* The peer's credentials (unix sockets), -1 when unknown. */
int http_conn_peer_uid(struct http_conn *c);

/* ---- client ---- */
enum { HTTPC_CONNECT = -1, HTTPC_TIMEOUT = -2, HTTPC_PROTO = -3 };
/* Blocking request over a unix socket. 0 with *status and body, else HTTPC_* with err. */
int http_call(const char *sock_path, const char *method, const char *path,
	      const char *body, size_t body_len, int timeout_ms,
	      int *status, struct buf *resp, char *err);
typedef void (*http_done)(void *ctx, int status, const char *body, size_t len, const char *err);
/* Asynchronous GET/POST on the loop; cb runs exactly once (status 0 and err on failure). */
int http_async(struct loop *l, const char *sock_path, const char *method, const char *path,
	       int timeout_ms, http_done cb, void *ctx);
#endif
