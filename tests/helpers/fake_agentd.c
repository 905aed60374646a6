/* fake_agentd.c - a scriptable stand-in for agentd, for stereod's poller tests.
 *   fake_agentd SOCKET DIR
 * Serves HTTP on the unix socket SOCKET: GET /v1/health -> {"state":"running",...} and
 * GET /v1/agents -> the content of DIR/agents ("[]" when absent). When DIR/mode holds
 * "error", every request gets a 500. Each request appends "METHOD PATH" to DIR/requests, so
 * tests wait for polls instead of sleeping. Kill it to make agentd "gone".
 */
#include "common/stereo.h"
#include "common/conn.h"
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *dir;

static void handle(struct http_conn *c, const struct http_msg *m, const char *body, size_t len, void *ctx)
{
	char path[4096];
	struct buf mode = {0}, agents = {0}, line = {0};
	buf_printf(&line, "%.*s %.*s\n", (int)m->method_len, m->method, (int)m->target_len, m->target);
	snprintf(path, sizeof path, "%s/requests", dir);
	FILE *f = fopen(path, "a");
	if (f) {
		fwrite(line.p, 1, line.len, f);
		fclose(f);
	}
	snprintf(path, sizeof path, "%s/mode", dir);
	read_file(path, &mode, 4096);
	snprintf(path, sizeof path, "%s/agents", dir);
	if (read_file(path, &agents, 1 << 20) || !agents.len) {
		agents.len = 0;
		buf_puts(&agents, "[]");
	}
	if (mode.len >= 5 && !memcmp(mode.p, "error", 5))
		http_reply_error(c, 500, "agentd is broken (test)");
	else if (m->target_len == 10 && !memcmp(m->target, "/v1/health", 10))
		http_reply(c, 200, "{\"state\":\"running\",\"uptime_seconds\":1}\n", 39);
	else if (m->target_len == 10 && !memcmp(m->target, "/v1/agents", 10))
		http_reply(c, 200, agents.p, agents.len);
	else
		http_reply_error(c, 404, "not found");
	buf_free(&mode);
	buf_free(&agents);
	buf_free(&line);
}

static void on_signal(struct loop *l, const struct signalfd_siginfo *si, void *ctx) { loop_stop(l); }

int main(int argc, char **argv)
{
	prog = "fake_agentd";
	if (argc != 3)
		die(EXIT_USAGE, "usage: fake_agentd SOCKET DIR");
	dir = argv[2];
	char err[ERRBUF];
	int fd = sock_listen_unix(argv[1], 0660, (gid_t)-1, err);
	if (fd < 0)
		die(EXIT_FAIL, "%s", err);
	struct loop *l = loop_new();
	static const int sigs[] = {SIGTERM, SIGINT};
	loop_signals(l, sigs, 2, on_signal, NULL);
	struct conn_pool *pool = conn_pool_new(l, 64 << 20, 64 << 20);
	struct http_server *s = http_server_new(pool, fd, NULL, handle, NULL);
	loop_run(l);
	http_server_free(s);   /* closes fd */
	conn_pool_free(pool);
	unlink(argv[1]);
	loop_free(l);
	return 0;
}
