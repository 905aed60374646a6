/* snapshot_api.c - stereod's front ends for the snapshot subsystem: the NDJSON messages
 * snapshot_prepare, snapshot_abort, restored and get_metrics (rows of the dispatch table in
 * ndjson_api.c), the IPC routes POST /v1/snapshot/prepare, /v1/snapshot/abort, /v1/restored
 * and GET /v1/metrics (rows of the route table in ipc_api.c), and what a restore does to
 * the daemon: close stale connections and push lifecycle {state, message:"restored"}.
 * The work itself is in snapshot.c, restore.c and metrics.c.
 * Spec: issue 7; shared/spec/protocol.md §3, §4, §6
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

int snapshot_setup(struct stereod *d, char *err)
{
	struct snap_opts o = {.root = d->root, .restored = on_restored, .ctx = d};
	d->snap = snapshot_new(d->loop, &o, err);
	return d->snap ? 0 : -1;
}

void snapshot_teardown(struct stereod *d)
{
	snapshot_free(d->snap);
	d->snap = NULL;
}

/* ---- NDJSON ------------------------------------------------------------------------------ */
enum op { OP_PREPARE, OP_ABORT, OP_RESTORED };

static enum snap_rc run_op(struct stereod *d, enum op op, const struct json *j, int payload,
			   void *keep, struct jw *w, char *err)
{
	switch (op) {
	case OP_PREPARE:
		return snapshot_prepare(d->snap, j, payload, w, err);
	case OP_ABORT:
		return snapshot_abort(d->snap, w, err);
	default:
		return snapshot_restored(d->snap, j, payload, keep, w, err);
	}
}

/* An ack whose payload also carries the steps: {reply_to, ok, error?, steps, ...}. */
static void msg_op(struct req *r, enum op op)
{
	char err[ERRBUF] = "";
	struct jw w;
	reply_begin(r, &w, "ack");
	jw_key(&w, "payload");
	jw_obj(&w);
	jw_key(&w, "reply_to");
	jw_strn(&w, r->type, r->type_len);
	enum snap_rc rc = run_op(r->d, op, r->j, r->payload, r->conn, &w, err);
	jw_kbool(&w, "ok", rc == SNAP_OK);
	if (rc != SNAP_OK)
		jw_kstr(&w, "error", err);
	jw_obj_end(&w);
	reply_end(r, &w);
}

void msg_snapshot_prepare(struct req *r) { msg_op(r, OP_PREPARE); }
void msg_snapshot_abort(struct req *r) { msg_op(r, OP_ABORT); }
void msg_restored(struct req *r) { msg_op(r, OP_RESTORED); }

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
/* 200 {"status":"ok", steps...}; 400 {"error"} for a rejected body; 500 {"error", steps...}
 * when a step failed. */
static void ipc_op(struct stereod *d, struct http_conn *c, enum op op, const char *body,
		   size_t len)
{
	char err[ERRBUF] = "";
	struct json j = {0};
	int payload = -1;
	if (len && json_parse(&j, body, len, true, err)) {
		char msg[ERRBUF + 16];
		snprintf(msg, sizeof msg, "invalid JSON: %s", err);
		http_reply_error(c, 400, msg);
		return;
	}
	if (len)
		payload = 0;
	struct buf b = {0};
	struct jw w;
	jw_init(&w, &b);
	jw_obj(&w);
	enum snap_rc rc = run_op(d, op, &j, payload, NULL, &w, err);
	if (rc == SNAP_INVALID) {
		http_reply_error(c, 400, err);
	} else {
		if (rc == SNAP_OK)
			jw_kstr(&w, "status", "ok");
		else
			jw_kstr(&w, "error", err);
		jw_obj_end(&w);
		buf_putc(&b, '\n');
		http_reply_json(c, rc == SNAP_OK ? 200 : 500, &b);
	}
	buf_free(&b);
	json_free(&j);
}

void ipc_snapshot_prepare(struct stereod *d, struct http_conn *c, const char *body, size_t len)
{
	ipc_op(d, c, OP_PREPARE, body, len);
}

void ipc_snapshot_abort(struct stereod *d, struct http_conn *c, const char *body, size_t len)
{
	ipc_op(d, c, OP_ABORT, NULL, 0);
}

void ipc_restored(struct stereod *d, struct http_conn *c, const char *body, size_t len)
{
	ipc_op(d, c, OP_RESTORED, body, len);
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
