/* ndjson_api.c - NDJSON servers: connections, framing, budgets and deferred replies for any
 * line protocol (struct ndjson_proto), and the control-plane protocol itself: its message
 * dispatch table, replies and lifecycle pushes to subscribers.
 *
 * Each connection answers its complete lines in order as they are parsed, appends every reply
 * to one output buffer and flushes it once per readable event; EPOLLOUT is armed only while
 * output is pending. A connection whose unread replies pass OUT_HIGH is not read from until
 * its client catches up, so a client that never reads costs at most that much memory and
 * never delays the others. Adding a message type is one line in `messages` below.
 * Spec: shared/spec/protocol.md §1-§3
 */
#include "stereod.h"
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#define NDJSON_MAX_CONNS 1024
#define OUT_HIGH (256 * 1024)          /* stop reading above this much unsent output */
#define OUT_HARD (4 * 1024 * 1024)     /* drop a subscriber whose pushes pile up past this */
#define INPUT_BUDGET (32 * 1024 * 1024) /* unfinished lines buffered across all connections */
#define BIG_LINE (64 * 1024)            /* lines above this count against the budget */
#define READS_PER_EVENT 16
#define DRAIN_MS 2000
#define ID_MAX 128

struct nconn {
	struct ndjson_server *s;
	int fd;
	uint32_t events;            /* what epoll watches now */
	struct ndjson in;
	struct buf out;
	bool subscribed;
	bool hello;                 /* said hello: sees our states (degraded) in health */
	bool eof;                   /* the peer closed its side: flush, then close */
	bool closing;               /* a fatal framing error: flush, then drain and close */
	bool draining;
	bool dispatching;           /* inside process(): a deferred reply must not re-enter it */
	struct defer *waiting;      /* a deferred reply not sent yet: no line is answered until it is */
	size_t counted;             /* our share of the server's buffered input */
	uint64_t drain_timer;
	struct nconn *prev, *next;
};

struct ndjson_server {
	struct stereod *d;
	const struct ndjson_proto *proto;
	void *ctx;
	struct loop *l;
	int lfd;
	struct nconn *conns;
	int nconns;
	size_t buffered;            /* unfinished input held by all connections */
	uint64_t accept_timer;
};

/* ---- replies --------------------------------------------------------------------------- */

void reply_begin(struct req *r, struct jw *w, const char *type)
{
	jw_init(w, r->out);
	jw_obj(w);
	jw_kstr(w, "type", type);
	if (r->id) {
		jw_key(w, "id");
		jw_raw(w, r->id, r->id_len);
	}
}

void reply_end(struct req *r, struct jw *w)
{
	jw_obj_end(w);
	buf_putc(r->out, '\n');
}

struct ack_ctx {
	const char *reply_to;
	size_t reply_to_len;
	bool ok;
	const char *error;          /* error_len bytes, NULs allowed (upstream's texts hold some) */
	size_t error_len;
};

static void ack_payload(struct jw *w, void *ctx)
{
	struct ack_ctx *a = ctx;
	jw_obj(w);
	jw_key(w, "reply_to");
	jw_strn(w, a->reply_to, a->reply_to_len);
	jw_kbool(w, "ok", a->ok);
	if (!a->ok) {
		jw_key(w, "error");
		jw_strn(w, a->error_len ? a->error : "failed", a->error_len ? a->error_len : 6);
	}
	jw_obj_end(w);
}

void reply_ack(struct req *r, bool ok, const char *error)
{
	reply_ack_n(r, ok, error, error ? strlen(error) : 0);
}

void reply_ack_n(struct req *r, bool ok, const char *error, size_t len)
{
	struct ack_ctx a = {r->type, r->type_len, ok, error, len};
	struct jw w;
	reply_begin(r, &w, "ack");
	jw_key(&w, "payload");
	ack_payload(&w, &a);
	reply_end(r, &w);
}

/* ---- deferred replies -------------------------------------------------------------------- */

struct defer {
	struct nconn *c;            /* NULL once the connection is gone */
	struct stereod *d;
	struct buf id, type;        /* copied from the request: its line is gone by then */
};

struct defer *ndjson_defer(struct nconn *c)
{
	struct defer *d = calloc(1, sizeof *d);
	if (!d)
		return NULL;
	d->c = c;
	d->d = c->s->d;
	c->waiting = d;
	return d;
}

static void pump(struct nconn *c);

/* Free d; when its connection is still there, resume it (its reply was just written). */
static void defer_done(struct defer *d)
{
	struct nconn *c = d->c;
	buf_free(&d->id);
	buf_free(&d->type);
	free(d);
	if (!c)
		return;
	c->waiting = NULL;
	if (!c->dispatching)
		pump(c);   /* answer the lines that waited, then read again */
}

void defer_line(struct defer *d, const char *line, size_t len)
{
	if (d->c) {
		buf_append(&d->c->out, line, len);
		buf_putc(&d->c->out, '\n');
	}
	defer_done(d);
}

struct defer *reply_defer(struct req *r)
{
	struct defer *d = ndjson_defer(r->conn);
	if (!d)
		return NULL;
	if ((r->id && buf_append(&d->id, r->id, r->id_len)) ||
	    buf_append(&d->type, r->type, r->type_len)) {
		r->conn->waiting = NULL;
		buf_free(&d->id);
		buf_free(&d->type);
		free(d);
		return NULL;
	}
	return d;
}

void defer_reply(struct defer *d, const char *type, void (*payload)(struct jw *w, void *ctx), void *ctx)
{
	struct nconn *c = d->c;
	if (c) {
		struct req r = {.d = d->d, .conn = c, .payload = -1, .type = buf_cstr(&d->type),
				.type_len = d->type.len, .id = d->id.len ? d->id.p : NULL,
				.id_len = d->id.len, .out = &c->out};
		struct jw w;
		reply_begin(&r, &w, type);
		if (payload) {
			jw_key(&w, "payload");
			payload(&w, ctx);
		}
		reply_end(&r, &w);
	}
	defer_done(d);
}

void defer_ack(struct defer *d, bool ok, const char *error)
{
	struct ack_ctx a = {buf_cstr(&d->type), d->type.len, ok, error, error ? strlen(error) : 0};
	defer_reply(d, "ack", ack_payload, &a);
}

/* ---- messages -------------------------------------------------------------------------- */

static void msg_ping(struct req *r)
{
	struct jw w;
	reply_begin(r, &w, "pong");
	reply_end(r, &w);
}

static void msg_get_health(struct req *r)
{
	struct jw w;
	reply_begin(r, &w, "health");
	jw_key(&w, "payload");
	lc_health_payload(r->d, &w, !r->conn->hello && !r->conn->subscribed);
	reply_end(r, &w);
}

/* Upstream's envelope check before it decodes a payload: absent is an error, null decodes to
 * an empty struct. 0, or -1 with upstream's text in err ("decode WHAT payload: ..."). */
static int need_payload(struct req *r, const char *what, char *err)
{
	if (r->payload_tok < 0)
		return errf(err, "decode %s payload: envelope %.*s has no payload", what,
			    (int)r->type_len, r->type);
	return 0;
}

/* The decoders' message with upstream's prefix. */
static void decode_failed(const char *what, char *err)
{
	char e[ERRBUF];
	snprintf(e, sizeof e, "decode %s payload: %s", what, err);
	memcpy(err, e, ERRBUF);
}

static void msg_set_config(struct req *r)
{
	char err[ERRBUF] = "";
	struct buf content = {0};
	int rc = need_payload(r, "config", err);
	if (!rc && (json_go_object(r->j, r->payload_tok, "stereosd.ConfigPayload", err) ||
		    json_go_str(r->j, r->payload_tok, "ConfigPayload", "content", &content, err))) {
		decode_failed("config", err);
		rc = -1;
	}
	if (!rc)
		rc = config_set(r->d, content.p ? content.p : "", content.len, err);
	buf_free(&content);
	reply_ack(r, rc == 0, err);
}

static void msg_inject_secret(struct req *r)
{
	char err[ERRBUF] = "";
	struct secret_req s = {0};
	int rc = need_payload(r, "secret", err);
	if (!rc && secret_decode(r->j, r->payload_tok, &s, err)) {
		decode_failed("secret", err);
		rc = -1;
	}
	if (!rc) {
		struct buf why = {0};
		if (secret_name_check(r->d, buf_cstr(&s.name), s.name.len, &why)) {
			reply_ack_n(r, false, why.p, why.len);
			buf_free(&why);
			secret_req_free(&s);
			return;
		}
	}
	if (!rc)
		rc = secrets_inject(r->d, &s, err);
	secret_req_free(&s);
	reply_ack(r, rc == 0, err);
}

static void msg_inject_ssh_key(struct req *r)
{
	char err[ERRBUF] = "";
	struct sshkey_req k = {0};
	int rc = need_payload(r, "ssh key", err);
	if (!rc && sshkey_decode(r->j, r->payload_tok, &k, err)) {
		decode_failed("ssh key", err);
		rc = -1;
	}
	if (!rc)
		rc = sshkey_inject(r->d, &k, err);
	sshkey_req_free(&k);
	reply_ack(r, rc == 0, err);
}

static void msg_mount(struct req *r)
{
	char err[ERRBUF] = "";
	struct mount_req m = {0};
	int rc = need_payload(r, "mount", err);
	if (!rc && mount_decode(r->j, r->payload_tok, &m, err)) {
		decode_failed("mount", err);
		rc = -1;
	}
	if (!rc)
		rc = mounts_add(r->d, &m, err);
	mount_req_free(&m);
	reply_ack(r, rc == 0, err);
}

static void msg_shutdown(struct req *r)
{
	char err[ERRBUF] = "";
	struct buf reason = {0};
	if (json_go_object(r->j, r->payload_tok, "stereosd.ShutdownPayload", err) ||
	    json_go_str(r->j, r->payload_tok, "ShutdownPayload", "reason", &reason, err)) {
		buf_free(&reason);
		decode_failed("shutdown", err);
		reply_ack(r, false, err);
		return;
	}
	reply_ack(r, true, NULL);   /* the ack goes out before the shutdown runs */
	shutdown_request(r->d, reason.len && !memchr(reason.p, 0, reason.len) ? reason.p
				   : "requested by the host");
	buf_free(&reason);
}

static void msg_subscribe(struct req *r);
static void msg_hello(struct req *r);

/* The dispatch table. Upstream's messages decode their payload themselves, as upstream does
 * (any JSON value may stand there until a handler looks at it). Ours (ours = true) get a
 * payload that is an object or absent; needs_payload refuses an absent one first. */
static const struct msg_type {
	const char *type;
	void (*fn)(struct req *r);
	bool ours, needs_payload;
} messages[] = {
	{"ping", msg_ping, false, false},
	{"get_health", msg_get_health, false, false},
	{"set_config", msg_set_config, false, false},
	{"inject_secret", msg_inject_secret, false, false},
	{"inject_ssh_key", msg_inject_ssh_key, false, false},
	{"mount", msg_mount, false, false},
	{"shutdown", msg_shutdown, false, false},
	/* ours: never sent by old clients */
	{"hello", msg_hello, true, false},
	{"subscribe", msg_subscribe, true, false},
	{"snapshot_prepare", msg_snapshot_prepare, true, false},
	{"snapshot_abort", msg_snapshot_abort, true, false},
	{"restored", msg_restored, true, true},
	{"get_metrics", msg_get_metrics, true, false},
};

static void msg_subscribe(struct req *r)
{
	r->conn->subscribed = true;
	reply_ack(r, true, NULL);
}

static void msg_hello(struct req *r)
{
	struct jw w;
	r->conn->hello = true;
	reply_begin(r, &w, "hello");
	jw_key(&w, "payload");
	jw_obj(&w);
	jw_kint(&w, "proto", 1);
	jw_kstr(&w, "version", STEREO_VERSION);
	jw_key(&w, "capabilities");
	jw_arr(&w);
	jw_str(&w, "id");
	jw_str(&w, "lifecycle");
	jw_str(&w, "ssh_key_append");
	for (size_t i = 0; i < ARRAY_SIZE(messages); i++)
		jw_str(&w, messages[i].type);
	jw_arr_end(&w);
	jw_obj_end(&w);
	reply_end(r, &w);
}

/* The request's id (ours): a string or a number of at most ID_MAX bytes is echoed; null is
 * the same as no id (a Go client with an optional id field sends it); anything else is
 * refused. 0, or -1 for a bad id. */
static int take_id(struct req *r, const struct json *j, const char *line)
{
	int id = json_get_fold(j, 0, "id");
	enum json_kind k = json_kind(j, id);
	if (id < 0 || k == JSON_NULL)
		return 0;
	size_t n = j->tok[id].end - j->tok[id].start;
	if ((k != JSON_STRING && k != JSON_NUMBER) || n > ID_MAX)
		return -1;
	/* jsmn's string token excludes the quotes */
	r->id = line + j->tok[id].start - (k == JSON_STRING);
	r->id_len = n + (k == JSON_STRING ? 2 : 0);
	return 0;
}

/* Answer one line: exactly one reply, whatever the line holds. The envelope is decoded as
 * upstream's Go decoder does it, with its error texts (docs/stereod.md, "Drop-in"). */
static void handle_line(struct nconn *c, char *line, size_t len, void *ctx)
{
	char err[ERRBUF], msg[ERRBUF + 32];
	struct req r = {.d = c->s->d, .conn = c, .payload = -1, .payload_tok = -1, .type = "",
			.out = &c->out};
	struct json j;
	struct buf type = {0};
	if (json_parse(&j, line, len, true, err)) {
		const char *p = line;
		while (*p == ' ' || *p == '\t' || *p == '\r')
			p++;
		if (!json_validate(line, len, err) && *p == 'n') {
			/* null decodes to an empty envelope in Go: type "" */
			reply_ack(&r, false, "unknown message type: ");
			return;
		}
		if (!json_validate(line, len, err))   /* valid JSON, not an object */
			snprintf(err, ERRBUF, "json: cannot unmarshal %s into Go value of type "
				 "stereosd.Envelope", *p == '[' ? "array" : *p == '"' ? "string" :
				 *p == 't' || *p == 'f' ? "bool" : "number");
		else   /* Go's scanner text where Go refuses the line too; ours where only we do */
			json_go_syntax(line, len, err);
		snprintf(msg, sizeof msg, "malformed JSON: %s", err);
		reply_ack(&r, false, msg);
		return;
	}
	r.j = &j;
	int t = json_get_fold(&j, 0, "type");
	if (t >= 0 && json_kind(&j, t) != JSON_STRING && json_kind(&j, t) != JSON_NULL) {
		snprintf(msg, sizeof msg, "malformed JSON: json: cannot unmarshal %s into Go struct "
			 "field Envelope.type of type stereosd.MessageType", json_go_kind(&j, t));
		reply_ack(&r, false, msg);
		goto out;
	}
	json_go_str(&j, 0, "Envelope", "type", &type, err);
	r.type = type.p ? type.p : "";
	r.type_len = type.len;
	if (take_id(&r, &j, line)) {
		reply_ack(&r, false, "id must be a string or a number of at most 128 bytes");
		goto out;
	}
	const struct msg_type *m = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(messages); i++)
		if (strlen(messages[i].type) == r.type_len && !memcmp(messages[i].type, r.type, r.type_len)) {
			m = &messages[i];
			break;
		}
	if (!m) {
		struct buf e = {0};
		buf_puts(&e, "unknown message type: ");
		buf_append(&e, r.type, r.type_len);
		reply_ack(&r, false, buf_cstr(&e));
		buf_free(&e);
		goto out;
	}
	r.payload_tok = json_get_fold(&j, 0, "payload");
	if (json_kind(&j, r.payload_tok) == JSON_OBJECT)
		r.payload = r.payload_tok;
	if (m->ours && r.payload_tok >= 0 && json_kind(&j, r.payload_tok) != JSON_NULL && r.payload < 0) {
		reply_ack(&r, false, "payload must be a JSON object");
		goto out;
	}
	if (m->needs_payload && r.payload < 0) {
		snprintf(msg, sizeof msg, "%s needs a payload", m->type);
		reply_ack(&r, false, msg);
		goto out;
	}
	m->fn(&r);
out:
	buf_free(&type);
	json_free(&j);
}

/* ---- connections ----------------------------------------------------------------------- */

static void conn_close(struct nconn *c)
{
	struct ndjson_server *s = c->s;
	loop_del(s->l, c->fd);
	close(c->fd);
	if (c->drain_timer)
		loop_timer_cancel(s->l, c->drain_timer);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	s->buffered -= c->counted;
	if (c->waiting)
		c->waiting->c = NULL;   /* its reply, when it comes, is dropped */
	ndjson_free(&c->in);   /* wipes: lines may have held secrets */
	buf_free(&c->out);
	free(c);
}

static void drain_timeout(struct loop *l, void *ctx)
{
	struct nconn *c = ctx;
	c->drain_timer = 0;
	conn_close(c);
}

/* After an oversized line: the reply is out; discard what the peer still sends until it
 * closes (or DRAIN_MS pass), so closing does not reset the connection before the client
 * has read our reply. */
static void start_drain(struct nconn *c)
{
	shutdown(c->fd, SHUT_WR);
	c->draining = true;
	c->s->buffered -= c->counted;
	c->counted = 0;
	ndjson_free(&c->in);
	ndjson_init(&c->in, NDJSON_MAX_LINE);
	c->drain_timer = loop_timer(c->s->l, DRAIN_MS, drain_timeout, c);
	if (c->events != (EPOLLIN | EPOLLRDHUP)) {
		c->events = EPOLLIN | EPOLLRDHUP;
		loop_mod(c->s->l, c->fd, c->events);
	}
}

static void drain(struct nconn *c)
{
	char junk[65536];
	for (;;) {
		ssize_t n = recv(c->fd, junk, sizeof junk, 0);
		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		conn_close(c);
		return;
	}
}

/* Send what is pending without changing the events. Returns -1 when c was closed. */
static int send_out(struct nconn *c)
{
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
	return 0;
}

/* Send what is pending, then choose the events to wait for. Returns -1 when c was closed.
 * Input is not read while output is over OUT_HIGH, while a deferred reply is outstanding,
 * or once the connection is ending. */
static int conn_flush(struct nconn *c)
{
	if (send_out(c))
		return -1;
	if (!c->out.len && c->eof && !c->waiting) {
		conn_close(c);
		return -1;
	}
	if (!c->out.len && c->closing) {
		start_drain(c);
		return 0;
	}
	uint32_t ev = (c->closing || c->eof || c->waiting || c->out.len >= OUT_HIGH ? 0 : EPOLLIN | EPOLLRDHUP) |
		      (c->out.len ? EPOLLOUT : 0);
	if (ev != c->events) {
		c->events = ev;
		loop_mod(c->s->l, c->fd, ev);
	}
	return 0;
}

static void too_long(struct nconn *c)
{
	c->s->proto->error(c, "message too long (max 1048576 bytes)", c->s->ctx);
	c->closing = true;
}

/* Answer the complete lines already buffered while output is under the high-water mark and
 * no deferred reply is outstanding. True when it stopped for want of a complete line. */
static bool process(struct nconn *c)
{
	c->dispatching = true;
	bool need_input = false;
	while (!c->closing && !c->waiting && c->out.len < OUT_HIGH) {
		char *line;
		size_t len;
		int r = ndjson_line(&c->in, &line, &len);
		if (r == 0) {
			need_input = true;
			break;
		}
		if (r < 0) {
			too_long(c);
			break;
		}
		/* only a truly empty line is skipped (Go's bufio.Scanner drops the \r of a
		 * CRLF); a line of blanks goes to the protocol (stereosd answers it) */
		if (len && !(len == 1 && line[0] == '\r'))
			c->s->proto->line(c, line, len, c->s->ctx);
		explicit_bzero(line, len);
	}
	c->dispatching = false;
	return need_input;
}

/* Give back the buffer of a big finished line, and count unfinished input against the
 * server-wide budget, so that 1024 clients cannot pin 1 GiB with lines that never end: past
 * the budget, a connection holding a big unfinished line is refused like an oversized one. */
static void account(struct nconn *c)
{
	struct ndjson_server *s = c->s;
	size_t pend = ndjson_pending(&c->in);
	if (!pend && c->in.in.cap > BIG_LINE) {
		ndjson_free(&c->in);
		ndjson_init(&c->in, NDJSON_MAX_LINE);
	}
	s->buffered = s->buffered - c->counted + pend;
	c->counted = pend;
	if (s->buffered > INPUT_BUDGET && pend > BIG_LINE && !c->closing) {
		log_warn("refusing a big unfinished line: input budget exceeded", "pending=%zu total=%zu",
			 pend, s->buffered);
		s->proto->error(c, "too much unfinished input across connections (max 33554432 "
				"bytes): line refused", s->ctx);
		c->closing = true;
	}
}

/* Answer what is buffered, send, and read more, until the connection has to wait: for its
 * client to read (output over OUT_HIGH), for a deferred reply, for more input (EAGAIN) or
 * for the next event (READS_PER_EVENT reads). Lines left buffered when output drains are
 * answered here, not on a readable event that may never come. */
static void pump(struct nconn *c)
{
	for (int reads = 0;;) {
		bool need_input = process(c);
		if (send_out(c))
			return;
		if (c->closing || c->waiting || c->out.len >= OUT_HIGH)
			break;
		if (!need_input)
			continue;   /* output drained below the mark: answer the next lines */
		if (c->eof || reads++ == READS_PER_EVENT)
			break;
		ssize_t n = ndjson_fill(&c->in, c->fd);
		if (n == -EAGAIN || n == -EINTR)
			break;
		if (n == 0 && ndjson_pending(&c->in) && !ndjson_feed(&c->in, "\n", 1)) {
			/* A last line without its newline is still a request, as with Go's
			 * bufio.Scanner upstream; a client that left mid-line gets an error ack
			 * that nobody reads. */
			log_debug("client closed after an unterminated line", "bytes=%zu",
				  ndjson_pending(&c->in));
		}
		if (n == 0 || (n < 0 && n != -EMSGSIZE))
			c->eof = true;
	}
	account(c);
	conn_flush(c);
}

static void on_conn(struct loop *l, int fd, uint32_t events, void *ctx)
{
	struct nconn *c = ctx;
	if (c->draining) {
		drain(c);
		return;
	}
	if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN)) {
		conn_close(c);
		return;
	}
	pump(c);
}

static void resume_accept(struct loop *l, void *ctx)
{
	struct ndjson_server *s = ctx;
	s->accept_timer = 0;
	loop_mod(l, s->lfd, EPOLLIN);
}

static void on_accept(struct loop *l, int fd, uint32_t events, void *ctx)
{
	struct ndjson_server *s = ctx;
	for (;;) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* Out of descriptors: stop accepting for a moment instead of spinning. */
				log_warn("cannot accept connections", "err=\"%s\"", strerror(errno));
				loop_mod(l, fd, 0);
				s->accept_timer = loop_timer(l, 100, resume_accept, s);
			}
			return;
		}
		struct nconn *c = s->nconns < NDJSON_MAX_CONNS ? calloc(1, sizeof *c) : NULL;
		if (!c) {
			close(cfd);
			continue;
		}
		int one = 1;
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);   /* fails harmlessly on vsock */
		c->s = s;
		c->fd = cfd;
		c->events = EPOLLIN | EPOLLRDHUP;
		ndjson_init(&c->in, NDJSON_MAX_LINE);
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
	}
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
	for (struct nconn *c = s->conns, *next; c; c = next) {
		next = c->next;
		if (!c->subscribed || c->closing || c->draining || c->eof)
			continue;
		if (c->out.len > OUT_HARD) {
			log_warn("dropping a subscriber that does not read", "pending=%zu", c->out.len);
			conn_close(c);
			continue;
		}
		buf_append(&c->out, line.p, line.len);
		conn_flush(c);
	}
	buf_free(&line);
}

int ndjson_close_stale(struct ndjson_server *s, struct nconn *keep)
{
	int n = 0;
	for (struct nconn *c = s->conns, *next; c; c = next) {
		next = c->next;
		if (c == keep || (c->subscribed && !c->closing && !c->draining))
			continue;
		conn_close(c);
		n++;
	}
	return n;
}

struct buf *ndjson_out(struct nconn *c) { return &c->out; }

/* The stereosd protocol's framing errors: an ack with an empty reply_to. */
static void control_error(struct nconn *c, const char *msg, void *ctx)
{
	struct req r = {.d = c->s->d, .conn = c, .payload = -1, .type = "", .out = &c->out};
	reply_ack(&r, false, msg);
}

const struct ndjson_proto control_proto = {"control", handle_line, control_error};

struct ndjson_server *ndjson_server_new(struct stereod *d, int lfd, const struct ndjson_proto *proto,
					void *ctx)
{
	struct ndjson_server *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	*s = (struct ndjson_server){.d = d, .proto = proto, .ctx = ctx, .l = d->loop, .lfd = lfd};
	if (loop_add(d->loop, lfd, EPOLLIN, on_accept, s)) {
		free(s);
		return NULL;
	}
	return s;
}

void ndjson_server_free(struct ndjson_server *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_close(s->conns);
	if (s->accept_timer)
		loop_timer_cancel(s->l, s->accept_timer);
	loop_del(s->l, s->lfd);
	close(s->lfd);
	free(s);
}
