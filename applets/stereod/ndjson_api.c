/* ndjson_api.c - the control-plane protocol (stereosd's): the message dispatch table, the
 * decoding of a request line and the replies, immediate or deferred. The connections under it
 * (framing, order, back-pressure, budgets) are ndjson_server.c and common/conn.c.
 * Adding a message type is one line in `messages` below.
 * Spec: docs/protocol.md
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
	lc_health_payload(r->d, &w, ndjson_old_client(r->conn));
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

static void mount_replied(void *ctx, int rc, const char *err) { defer_ack(ctx, rc == 0, err); }

/* mount(2) and the mount helper run on the jobs worker: the ack is deferred. */
static void msg_mount(struct req *r)
{
	char err[ERRBUF] = "";
	struct mount_req m = {0};
	struct defer *df;
	int rc = need_payload(r, "mount", err);
	if (!rc && mount_decode(r->j, r->payload_tok, &m, err)) {
		decode_failed("mount", err);
		rc = -1;
	}
	if (rc)
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
	ndjson_subscribe(r->conn);
	reply_ack(r, true, NULL);
}

static void msg_hello(struct req *r)
{
	struct jw w;
	ndjson_said_hello(r->conn);
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
 * upstream's Go decoder does it, with its error texts (docs/stereod.md, "Drop-in"). Only a
 * line that is empty once Go's bufio.Scanner has dropped a CRLF's \r gets none; a line of
 * blanks gets upstream's malformed-JSON ack. */
static void handle_line(struct nconn *c, char *line, size_t len, void *ctx)
{
	if (len == 1 && line[0] == '\r')
		return;
	char err[ERRBUF], msg[ERRBUF + 32];
	struct req r = {.d = ndjson_daemon(c), .conn = c, .payload = -1, .payload_tok = -1, .type = "",
			.out = ndjson_out(c)};
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

/* ---- the protocol's entry points ------------------------------------------------------ */

/* The stereosd protocol's framing errors: an ack with an empty reply_to. */
static void control_error(struct nconn *c, const char *msg, void *ctx)
{
	struct req r = {.d = ndjson_daemon(c), .conn = c, .payload = -1, .type = "", .out = ndjson_out(c)};
	reply_ack(&r, false, msg);
}

const struct ndjson_proto control_proto = {"control", handle_line, control_error};
