/* snapshot_api.c - stereod's front ends for the snapshot subsystem: the NDJSON messages
 * snapshot_prepare, snapshot_abort, restored and get_metrics (rows of the dispatch table in
 * ndjson_api.c), the IPC routes POST /v1/snapshot/prepare, /v1/snapshot/abort, /v1/restored
 * and GET /v1/metrics (rows of the route table in ipc_api.c), and what a restore does to
 * the daemon: close stale connections and push lifecycle {state, message:"restored"}.
 * The work itself is in snapshot.c, restore.c and metrics.c; it runs on the jobs worker and
 * the replies are deferred until it is done.
 * Spec: docs/protocol.md (snapshot messages), docs/ipc-api.md, docs/snapshot.md
 */
#include "stereod.h"
#include "snapshot.h"

static void push_restored(struct loop *l, void *ctx)
{
	struct stereod *d = ctx;
	if (d->ndjson)
		ndjson_push_lifecycle(d->ndjson, lc_state_name(d->state), "restored");
}

/* The push waits for the next loop pass: the requester's reply is being written into the same
 * output buffer right now and goes first. */
static int on_restored(void *ctx, const char *source, uint64_t generation, void *keep)
{
	struct stereod *d = ctx;
	if (!d->ndjson)
		return 0;
	int closed = ndjson_close_stale(d->ndjson, keep);
	loop_timer(d->loop, 0, push_restored, d);
	return closed;
}

/* Freeze, thaw, hooks and restores run on stereod's jobs worker. */
static int offload(void *ctx, void (*work)(void *), void (*done)(void *), void *arg)
{
	struct stereod *d = ctx;
	return jobs_run(d->jobs, work, done, arg);
}

int snapshot_setup(struct stereod *d, char *err)
{
	struct snap_opts o = {.root = d->root, .restored = on_restored, .offload = offload, .ctx = d};
	d->snap = snapshot_new(d->loop, &o, err);
	return d->snap ? 0 : -1;
}

void snapshot_teardown(struct stereod *d)
{
	snapshot_free(d->snap);
	d->snap = NULL;
}

/* ---- NDJSON ------------------------------------------------------------------------------ */
/* The work runs off the loop thread (snapshot_request): the ack is deferred. */
struct nd_op {
	struct defer *df;
	struct buf type;               /* reply_to */
	enum snap_rc rc;
	const char *fields, *err;
	size_t flen;
};

/* An ack whose payload also carries the steps: {reply_to, steps, ..., ok, error?}. */
static void nd_payload(struct jw *w, void *arg)
{
	struct nd_op *x = arg;
	jw_obj(w);
	jw_key(w, "reply_to");
	jw_strn(w, x->type.p ? x->type.p : "", x->type.len);
	if (x->flen) {
		buf_putc(w->b, ',');
		buf_append(w->b, x->fields, x->flen);
	}
	jw_kbool(w, "ok", x->rc == SNAP_OK);
	if (x->rc != SNAP_OK)
		jw_kstr(w, "error", x->err);
	jw_obj_end(w);
}

static void nd_replied(void *ctx, enum snap_rc rc, const char *fields, size_t len, const char *err)
{
	struct nd_op *x = ctx;
	x->rc = rc;
	x->fields = fields;
	x->flen = len;
	x->err = err;
	defer_reply(x->df, "ack", nd_payload, x);
	buf_free(&x->type);
	free(x);
}

static void msg_op(struct req *r, enum snap_kind kind)
{
	struct defer *df = reply_defer(r);
	if (!df) {
		reply_ack(r, false, "out of memory");
		return;
	}
	struct nd_op *x = calloc(1, sizeof *x);
	if (!x) {
		defer_ack(df, false, "out of memory");
		return;
	}
	x->df = df;
	buf_append(&x->type, r->type, r->type_len);
	snapshot_request(r->d->snap, kind, r->j, kind == SNAP_ABORT ? -1 : r->payload, r->conn,
			 nd_replied, x);
}

void msg_snapshot_prepare(struct req *r) { msg_op(r, SNAP_PREPARE); }
void msg_snapshot_abort(struct req *r) { msg_op(r, SNAP_ABORT); }
void msg_restored(struct req *r) { msg_op(r, SNAP_RESTORED); }

void msg_get_metrics(struct req *r)
{
	struct jw w;
	reply_begin(r, &w, "metrics");
	jw_key(&w, "payload");
	jw_obj(&w);
	snapshot_metrics(r->d->snap, &w);
	jw_obj_end(&w);
	reply_end(r, &w);
}

/* ---- IPC ----------------------------------------------------------------------------------- */
/* 200 {steps..., "status":"ok"}; 400 {"error"} for a rejected body; 500 {steps..., "error"}
 * when a step failed. */
static void ipc_replied(void *ctx, enum snap_rc rc, const char *fields, size_t len, const char *err)
{
	struct http_defer *hd = ctx;
	if (rc == SNAP_INVALID) {
		http_defer_error(hd, 400, err);
		return;
	}
	struct buf b = {0};
	struct jw w;
	jw_init(&w, &b);
	jw_obj(&w);
	if (len) {
		buf_append(&b, fields, len);
		w.first[w.depth] = false;   /* the members above are written: a comma comes next */
	}
	if (rc == SNAP_OK)
		jw_kstr(&w, "status", "ok");
	else
		jw_kstr(&w, "error", err);
	jw_obj_end(&w);
	buf_putc(&b, '\n');
	http_defer_json(hd, rc == SNAP_OK ? 200 : 500, &b);
	buf_free(&b);
}

static void ipc_op(struct stereod *d, struct http_conn *c, enum snap_kind kind, const char *body,
		   size_t len)
{
	char err[ERRBUF] = "";
	struct json j = {0};
	if (len && json_parse(&j, body, len, true, err)) {
		char msg[ERRBUF + 16];
		snprintf(msg, sizeof msg, "invalid JSON: %s", err);
		http_reply_error(c, 400, msg);
		return;
	}
	struct http_defer *hd = http_defer(c);
	if (!hd)
		http_reply_error(c, 500, "out of memory");
	else
		snapshot_request(d->snap, kind, &j, len ? 0 : -1, NULL, ipc_replied, hd);
	json_free(&j);
}

void ipc_snapshot_prepare(struct stereod *d, struct http_conn *c, const char *body, size_t len)
{
	ipc_op(d, c, SNAP_PREPARE, body, len);
}

void ipc_snapshot_abort(struct stereod *d, struct http_conn *c, const char *body, size_t len)
{
	ipc_op(d, c, SNAP_ABORT, NULL, 0);
}

void ipc_restored(struct stereod *d, struct http_conn *c, const char *body, size_t len)
{
	ipc_op(d, c, SNAP_RESTORED, body, len);
}

void ipc_metrics(struct stereod *d, struct http_conn *c, const char *body, size_t len)
{
	struct buf b = {0};
	struct jw w;
	jw_init(&w, &b);
	jw_obj(&w);
	snapshot_metrics(d->snap, &w);
	jw_obj_end(&w);
	buf_putc(&b, '\n');
	http_reply_json(c, 200, &b);
	buf_free(&b);
}
