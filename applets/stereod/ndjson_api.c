/* ndjson_api.c - the control-plane protocol (stereosd's): the message dispatch table, the
 * decoding of a request line and the replies, immediate or deferred. The connections under it
 * (framing, order, back-pressure, budgets) are ndjson_server.c and common/conn.c.
 * Adding a message type is one line in `messages` below.
 * Spec: shared/spec/protocol.md §1-§3
 */
#include "stereod.h"

#define ID_MAX 128

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
	const char *error;
};

static void ack_payload(struct jw *w, void *ctx)
{
	struct ack_ctx *a = ctx;
	jw_obj(w);
	jw_key(w, "reply_to");
	jw_strn(w, a->reply_to, a->reply_to_len);
	jw_kbool(w, "ok", a->ok);
	if (!a->ok) {
		const char *e = a->error && *a->error ? a->error : "failed";
		jw_key(w, "error");
		jw_strn(w, e, strlen(e));
	}
	jw_obj_end(w);
}

void reply_ack(struct req *r, bool ok, const char *error)
{
	struct ack_ctx a = {r->type, r->type_len, ok, error};
	struct jw w;
	reply_begin(r, &w, "ack");
	jw_key(&w, "payload");
	ack_payload(&w, &a);
	reply_end(r, &w);
}

/* ---- deferred replies -------------------------------------------------------------------- */

struct defer *reply_defer(struct req *r)
{
	struct defer *d = ndjson_defer(r->conn);
	if (!d)
		return NULL;
	if ((r->id && buf_append(&d->id, r->id, r->id_len)) ||
	    buf_append(&d->type, r->type, r->type_len)) {
		defer_end(d);
		return NULL;
	}
	return d;
}

void defer_reply(struct defer *d, const char *type, void (*payload)(struct jw *w, void *ctx), void *ctx)
{
	struct buf *out = defer_out(d);
	if (out) {
		struct req r = {.d = d->d, .payload = -1, .type = buf_cstr(&d->type),
				.type_len = d->type.len, .id = d->id.len ? d->id.p : NULL,
				.id_len = d->id.len, .out = out};
		struct jw w;
		reply_begin(&r, &w, type);
		if (payload) {
			jw_key(&w, "payload");
			payload(&w, ctx);
		}
		reply_end(&r, &w);
	}
	defer_end(d);
}

void defer_ack(struct defer *d, bool ok, const char *error)
{
	struct ack_ctx a = {buf_cstr(&d->type), d->type.len, ok, error};
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
	lc_health_payload(r->d, &w);
	reply_end(r, &w);
}

static void msg_set_config(struct req *r)
{
	char err[ERRBUF] = "";
	struct buf content = {0};
	int i = json_get(r->j, r->payload, "content");
	int rc = i < 0 ? errf(err, "payload.content is missing")
		 : json_str(r->j, i, &content, JSON_STR_ANY, err) ? errf(err, "payload.content: expected a string")
		 : config_set(r->d, content.p ? content.p : "", content.len, err);
	buf_free(&content);
	reply_ack(r, rc == 0, err);
}

static void msg_inject_secret(struct req *r)
{
	char err[ERRBUF] = "";
	struct secret_req s = {0};
	int rc = secret_decode(r->j, r->payload, &s, err) ? -1 : secrets_inject(r->d, &s, err);
	secret_req_free(&s);
	reply_ack(r, rc == 0, err);
}

static void msg_inject_ssh_key(struct req *r)
{
	char err[ERRBUF] = "";
	struct sshkey_req k = {0};
	int rc = sshkey_decode(r->j, r->payload, &k, err) ? -1 : sshkey_inject(r->d, &k, err);
	sshkey_req_free(&k);
	reply_ack(r, rc == 0, err);
}

static void mount_replied(void *ctx, int rc, const char *err) { defer_ack(ctx, rc == 0, err); }

/* mount(2) and the mount helper run on the jobs worker: the ack is deferred. */
static void msg_mount(struct req *r)
{
	char err[ERRBUF] = "";
	struct mount_req m = {0};
	struct defer *df;
	if (mount_decode(r->j, r->payload, &m, err))
		reply_ack(r, false, err);
	else if ((df = reply_defer(r)))
		mounts_request(r->d->mounts, &m, mount_replied, df);
	else
		reply_ack(r, mounts_add(r->d->mounts, &m, err) == 0, err);
	mount_req_free(&m);
}

static void msg_shutdown(struct req *r)
{
	char err[ERRBUF] = "";
	struct buf reason = {0};
	int i = r->payload >= 0 ? json_get(r->j, r->payload, "reason") : -1;
	if (i >= 0 && json_kind(r->j, i) != JSON_NULL &&
	    json_str(r->j, i, &reason, JSON_STR_NO_NUL, err)) {
		buf_free(&reason);
		reply_ack(r, false, "payload.reason: expected a string");
		return;
	}
	reply_ack(r, true, NULL);   /* the ack goes out before the shutdown runs */
	shutdown_request(r->d, reason.len ? reason.p : "requested by the host");
	buf_free(&reason);
}

static void msg_subscribe(struct req *r);
static void msg_hello(struct req *r);

/* The dispatch table. needs_payload: an absent payload is refused before the handler runs. */
static const struct msg_type {
	const char *type;
	void (*fn)(struct req *r);
	bool needs_payload;
} messages[] = {
	{"ping", msg_ping, false},
	{"get_health", msg_get_health, false},
	{"set_config", msg_set_config, true},
	{"inject_secret", msg_inject_secret, true},
	{"inject_ssh_key", msg_inject_ssh_key, true},
	{"mount", msg_mount, true},
	{"shutdown", msg_shutdown, false},
	/* ours: never sent by old clients */
	{"hello", msg_hello, false},
	{"subscribe", msg_subscribe, false},
	{"snapshot_prepare", msg_snapshot_prepare, false},
	{"snapshot_abort", msg_snapshot_abort, false},
	{"restored", msg_restored, true},
	{"get_metrics", msg_get_metrics, false},
};

static void msg_subscribe(struct req *r)
{
	ndjson_subscribe(r->conn);
	reply_ack(r, true, NULL);
}

static void msg_hello(struct req *r)
{
	struct jw w;
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

static bool blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return false;
	return true;
}

/* Answer one line: exactly one reply, whatever the line holds (whitespace-only lines: none). */
static void handle_line(struct nconn *c, char *line, size_t len, void *ctx)
{
	if (blank(line, len))
		return;
	char err[ERRBUF], msg[ERRBUF + 32];
	struct req r = {.d = ndjson_daemon(c), .conn = c, .payload = -1, .type = "", .out = ndjson_out(c)};
	struct json j;
	struct buf type = {0};
	if (json_parse(&j, line, len, true, err)) {
		snprintf(msg, sizeof msg, "malformed JSON: %s", err);
		reply_ack(&r, false, msg);
		return;
	}
	r.j = &j;
	int t = json_get(&j, 0, "type");
	int id = json_get(&j, 0, "id");
	int p = json_get(&j, 0, "payload");
	if (id >= 0) {
		enum json_kind k = json_kind(&j, id);
		size_t n = j.tok[id].end - j.tok[id].start;
		if (k == JSON_STRING) {   /* jsmn's string token excludes the quotes */
			r.id = line + j.tok[id].start - 1;
			r.id_len = n + 2;
		} else if (k == JSON_NUMBER) {
			r.id = line + j.tok[id].start;
			r.id_len = n;
		}
		if (!r.id || n > ID_MAX) {
			r.id = NULL;
			reply_ack(&r, false, "id must be a string or a number of at most 128 bytes");
			goto out;
		}
	}
	if (t < 0) {
		reply_ack(&r, false, "type is missing");
		goto out;
	}
	if (json_kind(&j, t) != JSON_STRING) {
		reply_ack(&r, false, "type: expected a string");
		goto out;
	}
	if (memchr(line + j.tok[t].start, '\\', j.tok[t].end - j.tok[t].start)) {
		if (json_str(&j, t, &type, JSON_STR_NO_NUL, err)) {
			reply_ack(&r, false, "type: expected a string without NUL");
			goto out;
		}
		r.type = type.p;
		r.type_len = type.len;
	} else {
		r.type = line + j.tok[t].start;
		r.type_len = j.tok[t].end - j.tok[t].start;
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
	if (p >= 0 && json_kind(&j, p) != JSON_NULL) {
		if (json_kind(&j, p) != JSON_OBJECT) {
			reply_ack(&r, false, "payload must be a JSON object");
			goto out;
		}
		r.payload = p;
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

/* ---- the protocol's entry points ------------------------------------------------------ */

/* The stereosd protocol's framing errors: an ack with an empty reply_to. */
static void control_error(struct nconn *c, const char *msg, void *ctx)
{
	struct req r = {.d = ndjson_daemon(c), .conn = c, .payload = -1, .type = "", .out = ndjson_out(c)};
	reply_ack(&r, false, msg);
}

const struct ndjson_proto control_proto = {"control", handle_line, control_error};
