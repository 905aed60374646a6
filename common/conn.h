/* conn.h - the one connection layer under every stream server on the event loop (the NDJSON
 * servers and the HTTP server): accept with a peer check, a connection table with eviction,
 * input and output buffers with back-pressure, input and output budgets shared by all
 * connections of a pool, deadlines (unfinished request, idle, output that does not drain,
 * draining after an error), half-close, and pausing a connection while a reply is deferred.
 *
 * The protocol on top supplies struct conn_ops: dispatch() takes ONE complete request from
 * the front of the input (or says it needs more bytes) and writes its reply to conn_out();
 * fail() writes the reply to a request that will never be dispatched (over the budget,
 * unfinished for too long, evicted). The layer never parses.
 *
 * A connection is in one state (enum conn_state); the peer's half-close is remembered apart,
 * because requests that came with it are still answered. See docs/stereod.md "Timeouts and
 * budgets" for the numbers stereod uses. */
#ifndef STEREO_CONN_H
#define STEREO_CONN_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "common/buf.h"

struct loop;
struct conn;
struct conn_pool;
struct conn_server;

enum conn_state {
	CONN_OPEN,       /* reading and dispatching */
	CONN_WAITING,    /* a deferred reply is outstanding: no dispatch, no reading */
	CONN_ENDING,     /* a last reply is queued: send it, then shut our side and drain */
	CONN_DRAINING,   /* our side is shut: discard input until EOF or the drain deadline */
};

enum conn_fail {
	CONN_FAIL_BUDGET,    /* its unfinished request would take the pool over its input budget */
	CONN_FAIL_TIMEOUT,   /* its request stayed unfinished longer than the line timeout */
	CONN_FAIL_EVICTED,   /* the table was full and it had waited longest */
};

struct conn_ops {
	const char *name;          /* for logs: "control", "ipc", ... */
	size_t priv_size;          /* per-connection protocol state, zeroed: conn_priv() */
	size_t max_request;        /* input held for one unfinished request, at most (+1 byte) */
	/* Take one complete request from in[0..len) (writable; a NUL may be written at in[len]),
	 * reply (conn_out), and return the bytes it used; 0 when the request is not complete
	 * yet. eof: the peer has half-closed and no more bytes will come. */
	size_t (*dispatch)(struct conn *c, char *in, size_t len, bool eof);
	void (*fail)(struct conn *c, enum conn_fail why);
	void (*opened)(struct conn *c);   /* optional */
	void (*closed)(struct conn *c);   /* optional: free what priv owns */
};

struct conn_limits {
	int max_conns;              /* per server; a newcomer evicts when full */
	size_t out_high;            /* per connection: stop dispatching above this much output */
	int64_t line_timeout_ms;    /* an unfinished request older than this fails; 0 = never */
	int64_t idle_ms;            /* close a connection idle this long; 0 = never */
	int64_t stall_ms;           /* close one whose pending output made no progress this long */
	int64_t drain_ms;           /* after the last reply: wait this long for the peer's EOF */
};

/* Budgets across every connection of every server sharing the pool. */
struct conn_pool *conn_pool_new(struct loop *l, size_t in_budget, size_t out_budget);
void conn_pool_free(struct conn_pool *p);
size_t conn_pool_in(const struct conn_pool *p);    /* bytes of unfinished input held now */
size_t conn_pool_out(const struct conn_pool *p);   /* bytes of output not sent yet */

/* allow: the peer check at accept time (NULL = everyone); false = logged by it, closed,
 * never dispatched. The server keeps a copy of ctx[0..ctx_size) (the protocol's server
 * state): conn_ctx(c) and conn_server_ctx(s) point to it, conn_server_of(ctx) goes back.
 * Owns listen_fd. */
typedef bool (*conn_allow_fn)(const struct sockaddr *sa, socklen_t len, void *ctx);
struct conn_server *conn_server_new(struct conn_pool *p, int listen_fd, const struct conn_ops *ops,
				    const struct conn_limits *lim, conn_allow_fn allow,
				    const void *ctx, size_t ctx_size);
void conn_server_free(struct conn_server *s);
void *conn_server_ctx(struct conn_server *s);
struct conn_server *conn_server_of(void *ctx);
int conn_server_count(const struct conn_server *s);
/* Visit every connection (fn may close the one it is given). */
void conn_server_each(struct conn_server *s, void (*fn)(struct conn *c, void *arg), void *arg);

void *conn_priv(struct conn *c);
struct conn *conn_of_priv(void *priv);
struct conn_server *conn_server(struct conn *c);
void *conn_ctx(struct conn *c);                    /* the server's ctx */
enum conn_state conn_state(const struct conn *c);
int conn_fd(const struct conn *c);
struct buf *conn_out(struct conn *c);
/* Send what conn_out holds now (outside dispatch: pushes, deferred replies). */
void conn_flush(struct conn *c);
/* Queue nothing more: send what is queued, shut our side, drain, close. */
void conn_end(struct conn *c);
void conn_close(struct conn *c);

/* Deferred replies: conn_defer(c, size) (inside dispatch) pauses c and returns a zeroed area
 * of size bytes for the protocol's own fields (NULL when out of memory); conn_defer_conn(d)
 * is c, or NULL when it was closed meanwhile; conn_defer_done(d) frees d and resumes c, which
 * answers the requests that waited. */
void *conn_defer(struct conn *c, size_t size);
struct conn *conn_defer_conn(void *d);
void conn_defer_done(void *d);
#endif
