/* ndjson_peer.c - a scriptable stereod stand-in for the cases the real daemon never produces:
 * a listener that never answers, a peer that hangs up, upstream stereosd behaviour (no hello,
 * no ids), lifecycle pushes and stale replies interleaved before every reply, a daemon that
 * reports "booting" for a while. Serves one connection at a time until killed.
 *
 *   ndjson_peer [--unix PATH] --ready FILE [--record FILE] [--ids] [--push]
 *               [--states booting,booting,ready] [--ack-error MSG] [--pushes-after-subscribe N]
 *               [--ack-payload JSON]
 *               [--silent | --close | --mute | --garbage] [--http]
 *
 * --ready gets "127.0.0.1:PORT\n" (or the unix path) once listening. --record appends every
 * received line. --ids: answer hello and echo "id" (like stereod); without it hello gets the
 * upstream "unknown message type" ack. --push: before every reply, write a lifecycle push and
 * (with --ids) a reply carrying another id. --silent: never accept (connects succeed through
 * the backlog, nothing is ever answered). --close: accept and hang up at once. --mute: accept
 * and record, never answer. --garbage: answer every line with a line that is not JSON.
 * --http (with --unix): speak stereod's IPC HTTP API instead: GET /v1/health answers the
 * --states sequence, GET /v1/agents {"agents":[]}, anything else 404. --ack-payload: the
 * payload (raw JSON) of every ack to a request the peer has no other answer for. */
#include "common/stereo.h"
#include "common/conn.h"
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

static struct {
	const char *record;
	bool ids, push, silent, close_at_once, http, mute, garbage;
	char *states[64];
	int nstates, health_calls;
	const char *ack_error, *ack_payload;
	long pushes_after_subscribe;
} cfg;

static const char *next_state(void)
{
	int k = cfg.health_calls < cfg.nstates ? cfg.health_calls : cfg.nstates - 1;
	cfg.health_calls++;
	return cfg.nstates ? cfg.states[k] : "ready";
}

static void say(int fd, const char *line)
{
	struct buf b = {0};
	buf_printf(&b, "%s\n", line);
	if (write_all(fd, b.p, b.len))
		log_warn("write failed", "err=%s", strerror(errno));
	buf_free(&b);
}

/* A reply envelope of type `type` with a raw payload, echoing id (raw JSON) when given. */
static void reply(int fd, const char *type, const char *payload, const char *id)
{
	struct buf b = {0};
	buf_printf(&b, "{\"type\":\"%s\"", type);
	if (payload)
		buf_printf(&b, ",\"payload\":%s", payload);
	if (id)
		buf_printf(&b, ",\"id\":%s", id);
	buf_putc(&b, '}');
	say(fd, buf_cstr(&b));
	buf_free(&b);
}

static void ack(int fd, const char *type, bool ok, const char *error, const char *id)
{
	struct buf p = {0};
	struct jw w;
	jw_init(&w, &p);
	jw_obj(&w);
	jw_kstr(&w, "reply_to", type);
	jw_kbool(&w, "ok", ok);
	if (error)
		jw_kstr(&w, "error", error);
	jw_obj_end(&w);
	reply(fd, "ack", buf_cstr(&p), id);
	buf_free(&p);
}

static void lifecycle(int fd, const char *state, const char *msg)
{
	char p[256];
	snprintf(p, sizeof p, "{\"state\":\"%s\",\"message\":\"%s\"}", state, msg);
	reply(fd, "lifecycle", p, NULL);
}

static void handle(int fd, const char *line, size_t len)
{
	if (cfg.record) {
		FILE *f = fopen(cfg.record, "a");
		if (f) {
			fwrite(line, 1, len, f);
			fputc('\n', f);
			fclose(f);
		}
	}
	if (cfg.mute)
		return;
	if (cfg.garbage) {
		say(fd, "this is not JSON");
		return;
	}
	struct json j;
	char err[ERRBUF];
	if (json_parse(&j, line, len, true, err)) {
		ack(fd, "", false, "malformed JSON", NULL);
		return;
	}
	struct buf type = {0};
	json_str(&j, json_get(&j, 0, "type"), &type, JSON_STR_NO_NUL, err);
	const char *t = buf_cstr(&type);
	char id[160] = "";
	int it = json_get(&j, 0, "id");
	if (cfg.ids && it >= 0) {   /* echo the raw token, quotes included for a string */
		int q = j.tok[it].type == JSMN_STRING;
		snprintf(id, sizeof id, "%.*s", j.tok[it].end - j.tok[it].start + 2 * q,
			 line + j.tok[it].start - q);
	}
	const char *idp = *id ? id : NULL;
	if (cfg.push) {
		lifecycle(fd, "healthy", "interleaved push");
		if (idp)
			say(fd, "{\"type\":\"ack\",\"payload\":{\"reply_to\":\"ping\",\"ok\":false,\"error\":\"stale\"},\"id\":999999}");
	}
	if (!strcmp(t, "hello") && cfg.ids) {
		reply(fd, "hello", "{\"proto\":1,\"version\":\"peer\",\"capabilities\":[\"id\",\"subscribe\"]}", idp);
	} else if (!cfg.ids && (!strcmp(t, "hello") || !strcmp(t, "subscribe"))) {
		char e[128];
		snprintf(e, sizeof e, "unknown message type: %s", t);
		ack(fd, t, false, e, NULL);
	} else if (!strcmp(t, "ping")) {
		reply(fd, "pong", NULL, idp);
	} else if (!strcmp(t, "get_health")) {
		char p[128];
		const char *st = next_state();
		snprintf(p, sizeof p, "{\"state\":\"%s\",\"uptime_seconds\":%d}", st, cfg.health_calls);
		reply(fd, "health", p, idp);
	} else if (!strcmp(t, "subscribe")) {
		ack(fd, t, true, NULL, idp);
		for (long i = 0; i < cfg.pushes_after_subscribe; i++)
			lifecycle(fd, i % 2 ? "degraded" : "healthy", "from the test peer");
	} else if (cfg.ack_payload) {
		reply(fd, "ack", cfg.ack_payload, idp);
	} else {
		ack(fd, t, !cfg.ack_error, cfg.ack_error, idp);
	}
	buf_free(&type);
	json_free(&j);
}

static void http_handle(struct http_conn *c, const struct http_msg *m, const char *body,
			size_t len, void *ctx)
{
	char p[160];
	if (cfg.record) {
		FILE *f = fopen(cfg.record, "a");
		if (f) {
			fprintf(f, "%.*s %.*s\n", (int)m->method_len, m->method, (int)m->target_len, m->target);
			fclose(f);
		}
	}
	bool get = m->method_len == 3 && !memcmp(m->method, "GET", 3);
	if (get && m->target_len == 10 && !memcmp(m->target, "/v1/health", 10)) {
		snprintf(p, sizeof p, "{\"state\":\"%s\",\"uptime_seconds\":%d}", next_state(),
			 cfg.health_calls);
		http_reply(c, 200, p, strlen(p));
	} else if (get && m->target_len == 10 && !memcmp(m->target, "/v1/agents", 10)) {
		http_reply(c, 200, "{\"agents\":[]}", 13);
	} else {
		http_reply_error(c, 404, "not found");
	}
}

static void serve(int fd)
{
	struct ndjson in;
	ndjson_init(&in, NDJSON_MAX_LINE);
	for (;;) {
		char *line;
		size_t len;
		int r = ndjson_line(&in, &line, &len);
		if (r < 0)
			break;
		if (r == 1) {
			if (len)
				handle(fd, line, len);
			continue;
		}
		ssize_t n = ndjson_fill(&in, fd);
		if (n == -EINTR)
			continue;
		if (n <= 0)
			break;
	}
	ndjson_free(&in);
	close(fd);
}

int main(int argc, char **argv)
{
	prog = "ndjson_peer";
	signal(SIGPIPE, SIG_IGN);
	const char *unix_path = NULL, *ready = NULL;
	static const struct option opts[] = {
		{"unix", required_argument, NULL, 'u'}, {"ready", required_argument, NULL, 'r'},
		{"record", required_argument, NULL, 'R'}, {"ids", no_argument, NULL, 'i'},
		{"push", no_argument, NULL, 'p'}, {"states", required_argument, NULL, 's'},
		{"ack-error", required_argument, NULL, 'e'}, {"silent", no_argument, NULL, 'S'},
		{"close", no_argument, NULL, 'c'}, {"http", no_argument, NULL, 'h'},
		{"mute", no_argument, NULL, 'M'}, {"garbage", no_argument, NULL, 'G'},
		{"pushes-after-subscribe", required_argument, NULL, 'n'},
		{"ack-payload", required_argument, NULL, 'P'}, {0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'u': unix_path = optarg; break;
		case 'r': ready = optarg; break;
		case 'R': cfg.record = optarg; break;
		case 'i': cfg.ids = true; break;
		case 'p': cfg.push = true; break;
		case 's':
			for (char *s = strtok(optarg, ","); s && cfg.nstates < 64; s = strtok(NULL, ","))
				cfg.states[cfg.nstates++] = s;
			break;
		case 'e': cfg.ack_error = optarg; break;
		case 'S': cfg.silent = true; break;
		case 'c': cfg.close_at_once = true; break;
		case 'h': cfg.http = true; break;
		case 'M': cfg.mute = true; break;
		case 'G': cfg.garbage = true; break;
		case 'n': cfg.pushes_after_subscribe = atol(optarg); break;
		case 'P': cfg.ack_payload = optarg; break;
		default: return 2;
		}
	}
	if (!ready)
		die(EXIT_USAGE, "--ready FILE is required");
	char err[ERRBUF];
	int lfd = unix_path ? sock_listen_unix(unix_path, 0666, (gid_t)-1, err)
			    : sock_listen_tcp("127.0.0.1:0", 16, err);
	if (lfd < 0)
		die(EXIT_FAIL, "%s", err);
	char addr[300];
	if (unix_path)
		snprintf(addr, sizeof addr, "%s\n", unix_path);
	else
		snprintf(addr, sizeof addr, "127.0.0.1:%d\n", sock_local_port(lfd));
	if (atomic_write(ready, addr, strlen(addr), 0644, (uid_t)-1, (gid_t)-1))
		die_sys(EXIT_FAIL, "writing %s", ready);
	if (cfg.silent)
		for (;;)
			pause();
	if (cfg.http) {
		struct loop *l = loop_new();
		if (!l || !http_server_new(conn_pool_new(l, 64 << 20, 64 << 20), lfd, NULL, http_handle, NULL))
			die(EXIT_FAIL, "cannot start the HTTP server");
		return loop_run(l) ? EXIT_FAIL : EXIT_OK;
	}
	fd_set_nonblock(lfd, 0);
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die_sys(EXIT_FAIL, "accept");
		}
		if (cfg.close_at_once) {
			close(fd);
			continue;
		}
		serve(fd);
	}
}
