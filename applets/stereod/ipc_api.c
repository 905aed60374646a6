/* ipc_api.c - the IPC HTTP API on the unix socket (stereo-secret, stereo-mount,
 * stereo-health and agents inside the guest use it). Routing table, status codes and JSON
 * bodies; the work is done by the same subsystem functions as the NDJSON messages.
 * Errors are {"error": "..."}: 400 malformed JSON or wrong field types, 422 refused,
 * 404 unknown path, 405 wrong method, 413 body over 1 MiB (common/http.c).
 * Spec: docs/ipc-api.md
 */
#include "stereod.h"

struct ipc_req {
	struct stereod *d;
	struct http_conn *c;
	const char *body;
	size_t body_len;
	const char *arg;        /* the {name} of a /v1/secrets/{name} route, decoded */
	size_t arg_len;
};

static void reply(struct ipc_req *q, int status, struct buf *b)
{
	buf_putc(b, '\n');
	http_reply_json(q->c, status, b);
	buf_free(b);
}

static void reply_status(struct ipc_req *q, int status, const char *k2, const char *v2,
			 const char *k3, const char *v3)
{
	struct buf b = {0};
	struct jw w;
	jw_init(&w, &b);
	jw_obj(&w);
	jw_kstr(&w, "status", status == 202 ? "shutting_down" : "ok");
	if (k2)
		jw_kstr(&w, k2, v2);
	if (k3)
		jw_kstr(&w, k3, v3);
	jw_obj_end(&w);
	reply(q, status, &b);
}

/* Parse the body as a JSON object: 0, or -1 after answering 400. */
static int parse_body(struct ipc_req *q, struct json *j)
{
	char err[ERRBUF], msg[ERRBUF + 32];
	if (json_parse(j, q->body, q->body_len, true, err)) {
		snprintf(msg, sizeof msg, "invalid JSON: %s", err);
		http_reply_error(q->c, 400, msg);
		return -1;
	}
	return 0;
}

static void get_ping(struct ipc_req *q) { reply_status(q, 200, NULL, NULL, NULL, NULL); }

static void get_health(struct ipc_req *q)
{
	struct buf b = {0};
	struct jw w;
	jw_init(&w, &b);
	lc_health_payload(q->d, &w, false);
	reply(q, 200, &b);
}

static void get_agents(struct ipc_req *q)
{
	struct buf b = {0};
	const char *agents;
	size_t len;
	agentd_agents(q->d->agentd, &agents, &len);
	buf_puts(&b, "{\"agents\":");
	buf_append(&b, agents, len);
	buf_putc(&b, '}');
	reply(q, 200, &b);
}

static void get_secrets(struct ipc_req *q)
{
	char err[ERRBUF];
	struct buf b = {0};
	struct jw w;
	jw_init(&w, &b);
	jw_obj(&w);
	jw_key(&w, "secrets");
	if (secrets_list(q->d, &w, err)) {
		buf_free(&b);
		http_reply_error(q->c, 500, err);
		return;
	}
	jw_obj_end(&w);
	reply(q, 200, &b);
}

static void post_secret(struct ipc_req *q)
{
	char err[ERRBUF];
	struct json j;
	struct secret_req s = {0};
	if (parse_body(q, &j))
		return;
	if (secret_decode(&j, 0, &s, err))
		http_reply_error(q->c, 400, err);
	else if (secrets_inject(q->d, &s, err))
		http_reply_error(q->c, 422, err);
	else
		reply_status(q, 201, "name", buf_cstr(&s.name), NULL, NULL);
	secret_req_free(&s);
	json_free(&j);
}

static void delete_secret(struct ipc_req *q)
{
	char err[ERRBUF];
	if (!q->arg_len) {
		http_reply_error(q->c, 400, "secret name is missing");
		return;
	}
	if (secrets_remove(q->d, q->arg, q->arg_len, err))
		http_reply_error(q->c, 422, err);
	else
		reply_status(q, 200, "name", q->arg, NULL, NULL);
}

static void get_mounts(struct ipc_req *q)
{
	struct buf b = {0};
	struct jw w;
	jw_init(&w, &b);
	jw_obj(&w);
	jw_key(&w, "mounts");
	mounts_list(q->d->mounts, &w);
	jw_obj_end(&w);
	reply(q, 200, &b);
}

/* A mount under way on the jobs worker: the 201 names what the request asked for. */
struct ipc_mount {
	struct http_defer *hd;
	char *tag, *guest_path;
};

static void ipc_mount_replied(void *ctx, int rc, const char *err)
{
	struct ipc_mount *x = ctx;
	if (rc) {
		http_defer_error(x->hd, 422, err);
	} else {
		struct buf b = {0};
		struct jw w;
		jw_init(&w, &b);
		jw_obj(&w);
		jw_kstr(&w, "status", "ok");
		jw_kstr(&w, "tag", x->tag);
		jw_kstr(&w, "guest_path", x->guest_path);
		jw_obj_end(&w);
		buf_putc(&b, '\n');
		http_defer_json(x->hd, 201, &b);
		buf_free(&b);
	}
	free(x->tag);
	free(x->guest_path);
	free(x);
}

static void post_mount(struct ipc_req *q)
{
	char err[ERRBUF];
	struct json j;
	struct mount_req m = {0};
	struct http_defer *hd;
	if (parse_body(q, &j))
		return;
	if (mount_decode(&j, 0, &m, err)) {
		http_reply_error(q->c, 400, err);
	} else if ((hd = http_defer(q->c))) {
		struct ipc_mount *x = malloc(sizeof *x);
		char *tag = strdup(buf_cstr(&m.tag)), *path = strdup(buf_cstr(&m.guest_path));
		if (!x || !tag || !path) {
			/* fail this request, never the daemon */
			free(x);
			free(tag);
			free(path);
			http_defer_error(hd, 503, "out of memory");
		} else {
			*x = (struct ipc_mount){.hd = hd, .tag = tag, .guest_path = path};
			mounts_request(q->d->mounts, &m, ipc_mount_replied, x);
		}
	} else if (mounts_add(q->d->mounts, &m, err)) {
		http_reply_error(q->c, 422, err);
	} else {
		reply_status(q, 201, "tag", buf_cstr(&m.tag), "guest_path", buf_cstr(&m.guest_path));
	}
	mount_req_free(&m);
	json_free(&j);
}

static void post_shutdown(struct ipc_req *q)
{
	char err[ERRBUF];
	struct buf reason = {0};
	if (q->body_len) {
		struct json j;
		if (parse_body(q, &j))
			return;
		int r = json_get_fold(&j, 0, "reason");
		if (r >= 0 && json_kind(&j, r) != JSON_NULL && json_str(&j, r, &reason, JSON_STR_NO_NUL, err)) {
			json_free(&j);
			buf_free(&reason);
			http_reply_error(q->c, 400, "reason: expected a string");
			return;
		}
		json_free(&j);
	}
	reply_status(q, 202, NULL, NULL, NULL, NULL);   /* answered before the shutdown runs */
	shutdown_request(q->d, reason.len ? reason.p : "requested over the IPC API");
	buf_free(&reason);
}

static void post_snapshot_prepare(struct ipc_req *q) { ipc_snapshot_prepare(q->d, q->c, q->body, q->body_len); }
static void post_snapshot_abort(struct ipc_req *q) { ipc_snapshot_abort(q->d, q->c, q->body, q->body_len); }
static void post_restored(struct ipc_req *q) { ipc_restored(q->d, q->c, q->body, q->body_len); }
static void get_metrics(struct ipc_req *q) { ipc_metrics(q->d, q->c, q->body, q->body_len); }

/* A path ending in "/" takes one more segment, the {name}. */
static const struct route {
	const char *method, *path;
	void (*fn)(struct ipc_req *q);
} routes[] = {
	{"GET", "/v1/ping", get_ping},
	{"GET", "/v1/health", get_health},
	{"GET", "/v1/agents", get_agents},
	{"GET", "/v1/secrets", get_secrets},
	{"POST", "/v1/secrets", post_secret},
	{"DELETE", "/v1/secrets/", delete_secret},
	{"GET", "/v1/mounts", get_mounts},
	{"POST", "/v1/mounts", post_mount},
	{"POST", "/v1/shutdown", post_shutdown},
	{"POST", "/v1/snapshot/prepare", post_snapshot_prepare},
	{"POST", "/v1/snapshot/abort", post_snapshot_abort},
	{"POST", "/v1/restored", post_restored},
	{"GET", "/v1/metrics", get_metrics},
};

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;
}

/* Percent-decode s[0..n) into out (NUL-terminated); -1 on a bad escape. */
static int pct_decode(const char *s, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '%') {
			buf_putc(out, s[i]);
			continue;
		}
		int h = i + 2 < n ? hexval(s[i + 1]) : -1, l = i + 2 < n ? hexval(s[i + 2]) : -1;
		if (h < 0 || l < 0)
			return -1;
		buf_putc(out, (char)(h * 16 + l));
		i += 2;
	}
	buf_cstr(out);
	return 0;
}

static void handle(struct http_conn *c, const struct http_msg *m, const char *body, size_t body_len,
		   void *ctx)
{
	struct ipc_req q = {.d = ctx, .c = c, .body = body, .body_len = body_len};
	const char *q_mark = memchr(m->target, '?', m->target_len);
	size_t plen = q_mark ? (size_t)(q_mark - m->target) : m->target_len;
	bool path_known = false;
	for (size_t i = 0; i < ARRAY_SIZE(routes); i++) {
		const struct route *r = &routes[i];
		size_t rl = strlen(r->path);
		bool prefix = r->path[rl - 1] == '/';
		if (prefix ? plen < rl || memcmp(m->target, r->path, rl) || memchr(m->target + rl, '/', plen - rl)
			   : plen != rl || memcmp(m->target, r->path, rl))
			continue;
		path_known = true;
		if (strlen(r->method) != m->method_len || memcmp(m->method, r->method, m->method_len))
			continue;
		struct buf arg = {0};
		if (prefix) {
			if (pct_decode(m->target + rl, plen - rl, &arg)) {
				buf_free(&arg);
				http_reply_error(c, 400, "bad percent-encoding in the path");
				return;
			}
			q.arg = buf_cstr(&arg);
			q.arg_len = arg.len;
		}
		r->fn(&q);
		buf_free(&arg);
		return;
	}
	if (path_known)
		http_reply_error(c, 405, "method not allowed");
	else
		http_reply_error(c, 404, "not found");
}

struct http_server *ipc_server_new(struct stereod *d, int listen_fd)
{
	struct conn_limits lim = {
		.max_conns = IPC_MAX_CONNS, .out_high = NDJSON_OUT_HIGH,
		.line_timeout_ms = d->line_timeout_ms, .idle_ms = IPC_IDLE_MS,
		.stall_ms = CONN_STALL_MS, .drain_ms = CONN_DRAIN_MS,
	};
	return http_server_new(d->pool, listen_fd, &lim, handle, d);
}
