/* ndjson_load.c - load generator and start-up timer for the stereod benchmark.
 *   ndjson_load load ADDR CONNS DEPTH MS REQUEST EXPECT [COUNT]
 *       keep DEPTH requests in flight on each of CONNS connections for MS milliseconds, or
 *       until COUNT replies came (one epoll loop); every reply line must equal EXPECT (or, when
 *       EXPECT is "=", the request); prints "replies/s N replies N"
 *   ndjson_load startup CMD ARGS...
 *       run CMD with a pipe as fd 3 (--ready-fd 3), time exec-to-readiness-line, wait 200 ms,
 *       print "ready_us N rss_kb N anon_kb N" (VmRSS; anonymous = its own memory), SIGTERM it
 *   ndjson_load atomic DIR MS
 *       the floor of inject_secret: atomic_write_at of a small file in DIR, prints "writes/s N"
 */
#include "common/stereo.h"
#include <fcntl.h>
#include <poll.h>
#include <time.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

struct lconn {
	int fd;
	struct buf in;
	long inflight;
};

static int do_load(char **a)
{
	const char *addr = a[0];
	int conns = atoi(a[1]);
	long depth = atol(a[2]), ms = atol(a[3]);
	const char *req = a[4];
	const char *expect = strcmp(a[5], "=") ? a[5] : req;
	long count = a[6] ? atol(a[6]) : 0;
	size_t rl = strlen(req), el = strlen(expect);
	char line[4096];
	snprintf(line, sizeof line, "%s\n", req);
	struct buf batch = {0};
	int ep = epoll_create1(0);
	struct lconn *cs = xcalloc(conns, sizeof *cs);
	for (int i = 0; i < conns; i++) {
		char err[ERRBUF];
		bool to;
		cs[i].fd = sock_connect_tcp(addr, 5000, &to, err);
		if (cs[i].fd < 0)
			die(EXIT_CONN, "%s", err);
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
		epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
	}
	for (long k = 0; k < depth; k++)
		buf_append(&batch, line, rl + 1);
	for (int i = 0; i < conns; i++) {
		write_all(cs[i].fd, batch.p, batch.len);
		cs[i].inflight = depth;
	}
	long replies = 0;
	int64_t start = now_ms(), end = start + ms;
	struct epoll_event evs[64];
	while (now_ms() < end && (!count || replies < count)) {
		int n = epoll_wait(ep, evs, 64, 100);
		for (int e = 0; e < n; e++) {
			struct lconn *c = &cs[evs[e].data.u32];
			buf_reserve(&c->in, 65536);
			ssize_t r = read(c->fd, c->in.p + c->in.len, 65536);
			if (r <= 0)
				die(EXIT_CONN, "connection closed by the server");
			c->in.len += r;
			size_t off = 0, got = 0;
			char *nl;
			while ((nl = memchr(c->in.p + off, '\n', c->in.len - off))) {
				size_t l = nl - (c->in.p + off);
				if (l != el || memcmp(c->in.p + off, expect, el))
					die(EXIT_FAIL, "unexpected reply: %.*s", (int)l, c->in.p + off);
				off += l + 1;
				got++;
			}
			buf_consume(&c->in, off);
			replies += got;
			c->inflight -= got;
			batch.len = 0;
			for (size_t k = 0; k < got; k++)
				buf_append(&batch, line, rl + 1);
			if (got) {
				write_all(c->fd, batch.p, batch.len);
				c->inflight += got;
			}
		}
	}
	double secs = (now_ms() - start) / 1000.0;
	printf("replies/s %.0f replies %ld\n", replies / secs, replies);
	for (int i = 0; i < conns; i++) {
		close(cs[i].fd);
		buf_free(&cs[i].in);
	}
	free(cs);
	buf_free(&batch);
	close(ep);
	return 0;
}

/* A "Key:   N kB" field of a /proc/PID file, -1 when absent. */
static long proc_kb(pid_t pid, const char *file, const char *key)
{
	char path[64];
	struct buf b = {0};
	snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
	long kb = -1;
	if (!read_file(path, &b, 1 << 16)) {
		char *p = strstr(b.p, key);
		if (p)
			kb = atol(p + strlen(key));
	}
	buf_free(&b);
	return kb;
}

static int do_startup(char **argv)
{
	int p[2];
	if (pipe(p))
		die_sys(EXIT_FAIL, "pipe");
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		dup2(p[1], 3);
		int nul = open("/dev/null", O_WRONLY);
		dup2(nul, 2);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	char c;
	if (fd_wait(p[0], POLLIN, 5000) <= 0 || read(p[0], &c, 1) != 1)
		die(EXIT_FAIL, "%s never became ready", argv[0]);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	usleep(200000);
	long rss = proc_kb(pid, "status", "VmRSS:");
	long anon = proc_kb(pid, "smaps_rollup", "Anonymous:");
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	printf("ready_us %ld rss_kb %ld anon_kb %ld\n",
	       (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000, rss, anon);
	return 0;
}

static int do_atomic(char **a)
{
	int dfd = open(a[0], O_RDONLY | O_DIRECTORY);
	if (dfd < 0)
		die_sys(EXIT_FAIL, "opening %s", a[0]);
	long ms = atol(a[1]), n = 0;
	int64_t start = now_ms();
	while (now_ms() - start < ms) {
		if (atomic_write_at(dfd, "bench", "x", 1, 0600, (uid_t)-1, (gid_t)-1))
			die(EXIT_FAIL, "atomic write failed");
		n++;
	}
	printf("writes/s %.0f\n", n / ((now_ms() - start) / 1000.0));
	close(dfd);
	return 0;
}

int main(int argc, char **argv)
{
	prog = "ndjson_load";
	signal(SIGPIPE, SIG_IGN);
	if ((argc == 8 || argc == 9) && !strcmp(argv[1], "load"))
		return do_load(argv + 2);
	if (argc >= 3 && !strcmp(argv[1], "startup"))
		return do_startup(argv + 2);
	if (argc == 4 && !strcmp(argv[1], "atomic"))
		return do_atomic(argv + 2);
	die(EXIT_USAGE, "usage: ndjson_load load ADDR CONNS DEPTH MS REQUEST EXPECT [COUNT] | startup CMD... | atomic DIR MS");
}
