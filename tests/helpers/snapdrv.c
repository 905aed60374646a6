/* snapdrv.c - drives stereod's snapshot subsystem (applets/stereod/snapshot.c, restore.c,
 * metrics.c) without the rest of the daemon: NDJSON requests on stdin, replies and lifecycle
 * pushes on stdout, on the same event loop stereod uses. Not part of the stereo binary.
 *
 * usage: snapdrv --root DIR
 */
#include "applets/stereod/snapshot.c"
#include "applets/stereod/restore.c"
#include "applets/stereod/metrics.c"

static struct ndjson in;
static struct snapshot *snap;

static void emit(struct buf *b)
{
	buf_putc(b, '\n');
	write_all(1, b->p, b->len);
	buf_free(b);
}

static int on_restored(void *ctx, const char *source, uint64_t generation, void *keep)
{
	struct buf b = {0};
	struct jw w;
	jw_init(&w, &b);
	jw_obj(&w);
	jw_kstr(&w, "type", "lifecycle");
	jw_key(&w, "payload");
	jw_obj(&w);
	jw_kstr(&w, "state", "ready");
	jw_kstr(&w, "message", "restored");
	jw_kstr(&w, "source", source);
	jw_key(&w, "generation");
	jw_uint(&w, generation);
	jw_obj_end(&w);
	jw_obj_end(&w);
	emit(&b);
	return 0;
}

static void handle(const char *line, size_t len)
{
	struct json j;
	struct buf b = {0}, type = {0};
	struct jw w;
	char err[ERRBUF] = "";
	jw_init(&w, &b);
	jw_obj(&w);
	if (json_parse(&j, line, len, true, err)) {
		jw_kstr(&w, "type", "ack");
		jw_key(&w, "payload");
		jw_obj(&w);
		jw_kstr(&w, "reply_to", "");
		jw_kbool(&w, "ok", false);
		jw_kstr(&w, "error", err);
		jw_obj_end(&w);
		jw_obj_end(&w);
		emit(&b);
		return;
	}
	int t = json_get(&j, 0, "type"), payload = json_get(&j, 0, "payload");
	int id = json_get(&j, 0, "id");
	if (id >= 0) {
		jw_key(&w, "id");
		jw_raw(&w, j.s + j.tok[id].start - (json_kind(&j, id) == JSON_STRING),
		       j.tok[id].end - j.tok[id].start + 2 * (json_kind(&j, id) == JSON_STRING));
	}
	if (t < 0 || json_str(&j, t, &type, JSON_STR_NO_NUL, err))
		buf_puts(&type, "");
	const char *ty = buf_cstr(&type);
	enum snap_rc rc = SNAP_OK;
	if (!strcmp(ty, "get_metrics")) {
		jw_kstr(&w, "type", "metrics");
		jw_key(&w, "payload");
		jw_obj(&w);
		snapshot_metrics(snap, &w);
	} else {
		jw_kstr(&w, "type", "ack");
		jw_key(&w, "payload");
		jw_obj(&w);
		jw_kstr(&w, "reply_to", ty);
		if (!strcmp(ty, "snapshot_prepare"))
			rc = snapshot_prepare(snap, &j, payload, &w, err);
		else if (!strcmp(ty, "snapshot_abort"))
			rc = snapshot_abort(snap, &w, err);
		else if (!strcmp(ty, "restored"))
			rc = snapshot_restored(snap, &j, payload, NULL, &w, err);
		else
			rc = errf(err, "unknown message type: %s", ty);
		jw_kbool(&w, "ok", rc == SNAP_OK);
		if (rc != SNAP_OK)
			jw_kstr(&w, "error", err);
	}
	jw_obj_end(&w);
	jw_obj_end(&w);
	emit(&b);
	buf_free(&type);
	json_free(&j);
}

static void on_stdin(struct loop *l, int fd, uint32_t events, void *ctx)
{
	ssize_t n = ndjson_fill(&in, fd);
	char *line;
	size_t len;
	while (ndjson_line(&in, &line, &len) == 1)
		if (len)
			handle(line, len);
	if (n == 0 || (n < 0 && n != -EAGAIN))
		loop_stop(l);
}

int main(int argc, char **argv)
{
	prog = "snapdrv";
	char err[ERRBUF];
	if (argc != 3 || strcmp(argv[1], "--root"))
		return usage_error("usage: snapdrv --root DIR");
	struct loop *l = loop_new();
	struct snap_opts o = {.root = argv[2], .restored = on_restored};
	snap = snapshot_new(l, &o, err);
	if (!snap)
		die(1, "%s", err);
	ndjson_init(&in, NDJSON_MAX_LINE);
	fd_set_nonblock(0, 1);
	loop_add(l, 0, EPOLLIN, on_stdin, NULL);
	loop_run(l);
	snapshot_free(snap);
	loop_free(l);
	ndjson_free(&in);
	return 0;
}
