/* vsock_mux.c - a stand-in for the host side of a Firecracker vsock device ("hybrid vsock"),
 * written from Firecracker's published design (docs/vsock.md in its repository): the VMM
 * listens on a Unix socket; a host program connects, writes "CONNECT <port>\n", and once the
 * guest accepted that port the VMM answers "OK <host_port>\n" and the socket carries the byte
 * stream from then on; when nothing in the guest listens on the port, the VMM closes the
 * socket. Here "the guest" is a TCP address per port (a local stereod, or QEMU's forwarded
 * port): a refused TCP connect is a guest that does not listen.
 *
 *   vsock_mux --uds PATH --ready FILE --forward PORT=HOST:TCPPORT [--forward ...]
 *             [--record FILE] [--bad N] [--eof | --garbage | --delay-ok MS | --no-listen]
 *
 * --ready gets PATH once listening. --record appends every request line received (escaped).
 * Misbehaving, for the first N connections (--bad N; default: every one): --eof reads the
 * CONNECT line and hangs up; --garbage answers a line that is not OK (with control bytes);
 * --delay-ok MS waits MS before a correct OK. --no-listen binds PATH and never listens
 * (connecting is refused). One child process per connection; children die with the parent.
 */
#include "common/stereo.h"
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_FORWARDS 8
#define LINE_MAX_BYTES 64

static struct {
	struct {
		unsigned port;
		char target[300];
	} fw[MAX_FORWARDS];
	int nfw;
	const char *record;
	enum { GOOD, EOF_AFTER_CONNECT, GARBAGE, DELAY_OK } bad;
	long bad_count;    /* -1: every connection */
	long delay_ms;
	unsigned next_host_port;
} cfg = {.bad_count = -1, .next_host_port = 1u << 30};

static void record(const char *s, size_t n)
{
	if (!cfg.record)
		return;
	FILE *f = fopen(cfg.record, "ae");
	if (!f)
		return;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			fputc(c, f);
		else
			fprintf(f, "\\x%02x", c);
	}
	fputc('\n', f);
	fclose(f);
}

/* Copy both ways until both directions ended; a half-close is passed on. */
static void pump(int a, int b)
{
	struct pollfd p[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
	int other[2] = {b, a};
	char buf[65536];
	int open_dirs = 2;
	while (open_dirs > 0) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		for (int i = 0; i < 2; i++) {
			if (p[i].fd < 0 || !p[i].revents)
				continue;
			ssize_t n = read(p[i].fd, buf, sizeof buf);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0 || write_all(other[i], buf, (size_t)n)) {
				shutdown(other[i], SHUT_WR);
				p[i].fd = -1;
				open_dirs--;
			}
		}
	}
}

/* One host connection, in its own process. */
static _Noreturn void serve(int c, int mode)
{
	char line[LINE_MAX_BYTES];
	size_t n = 0;
	/* the request line, a byte at a time: what follows it is the stream */
	while (n < sizeof line) {
		if (fd_wait(c, POLLIN, 10000) <= 0)
			_exit(1);
		ssize_t r = read(c, line + n, 1);
		if (r <= 0)
			_exit(1);
		if (line[n++] == '\n')
			break;
	}
	record(line, n && line[n - 1] == '\n' ? n - 1 : n);
	unsigned port = 0;
	char tail;
	if (n < 2 || line[n - 1] != '\n' || sscanf(line, "CONNECT %u%c", &port, &tail) != 2 ||
	    tail != '\n')
		_exit(1);   /* Firecracker drops a connection whose request it cannot parse */
	if (mode == EOF_AFTER_CONNECT)
		_exit(0);
	if (mode == GARBAGE) {
		static const char junk[] = "NOPE \x01\x1b[31m\"not ok\"\n";
		write_all(c, junk, sizeof junk - 1);
		_exit(0);
	}
	const char *target = NULL;
	for (int i = 0; i < cfg.nfw; i++)
		if (cfg.fw[i].port == port)
			target = cfg.fw[i].target;
	if (!target)
		_exit(0);   /* no such port in the guest: hang up, as the VMM does */
	char err[ERRBUF];
	bool to;
	int g = sock_connect_tcp(target, 5000, &to, err);
	if (g < 0)
		_exit(0);   /* the guest does not listen (yet) */
	if (mode == DELAY_OK) {
		struct timespec ts = {.tv_sec = cfg.delay_ms / 1000,
				      .tv_nsec = (cfg.delay_ms % 1000) * 1000000};
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
	}
	char ok[32];
	int len = snprintf(ok, sizeof ok, "OK %u\n", cfg.next_host_port);
	if (write_all(c, ok, (size_t)len))
		_exit(1);
	pump(c, g);
	_exit(0);
}

static void usage(void)
{
	fprintf(stderr, "usage: vsock_mux --uds PATH --ready FILE --forward PORT=HOST:PORT... [--record FILE]\n"
			"                 [--bad N] [--eof | --garbage | --delay-ok MS | --no-listen]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	prog = "vsock_mux";
	const char *path = NULL, *ready = NULL;
	bool no_listen = false;
	static const struct option opts[] = {
		{"uds", 1, 0, 'u'}, {"ready", 1, 0, 'r'}, {"forward", 1, 0, 'f'}, {"record", 1, 0, 'R'},
		{"bad", 1, 0, 'b'}, {"eof", 0, 0, 'e'}, {"garbage", 0, 0, 'g'}, {"delay-ok", 1, 0, 'd'},
		{"no-listen", 0, 0, 'n'}, {0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'u': path = optarg; break;
		case 'r': ready = optarg; break;
		case 'R': cfg.record = optarg; break;
		case 'f': {
			char *eq = strchr(optarg, '=');
			if (!eq || cfg.nfw == MAX_FORWARDS || strlen(eq + 1) >= sizeof cfg.fw[0].target)
				usage();
			cfg.fw[cfg.nfw].port = (unsigned)strtoul(optarg, NULL, 10);
			strcpy(cfg.fw[cfg.nfw++].target, eq + 1);
			break;
		}
		case 'b': cfg.bad_count = atol(optarg); break;
		case 'e': cfg.bad = EOF_AFTER_CONNECT; break;
		case 'g': cfg.bad = GARBAGE; break;
		case 'd': cfg.bad = DELAY_OK; cfg.delay_ms = atol(optarg); break;
		case 'n': no_listen = true; break;
		default: usage();
		}
	}
	if (!path || !ready || optind != argc)
		usage();
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_IGN);   /* children are not waited for */
	char err[ERRBUF];
	int l;
	if (no_listen) {
		/* a socket file nobody listens on: connect(2) gets ECONNREFUSED */
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
		l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		unlink(path);
		if (l < 0 || bind(l, (struct sockaddr *)&sun, sizeof sun))
			die_sys(1, "binding %s", path);
	} else {
		l = sock_listen_unix(path, 0600, (gid_t)-1, err);
		if (l < 0)
			die(1, "%s", err);
		fd_set_nonblock(l, 0);
	}
	FILE *f = fopen(ready, "we");
	if (!f)
		die_sys(1, "%s", ready);
	fprintf(f, "%s\n", path);
	fclose(f);
	for (;;) {
		if (no_listen) {
			pause();
			continue;
		}
		int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die_sys(1, "accept");
		}
		int mode = cfg.bad_count != 0 ? (int)cfg.bad : GOOD;
		if (cfg.bad_count > 0)
			cfg.bad_count--;
		cfg.next_host_port++;
		pid_t pid = fork();
		if (pid == 0) {
			close(l);
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			serve(c, mode);
		}
		close(c);
	}
}
