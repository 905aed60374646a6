/* echo_floor.c - the benchmark floor for stereod (docs/performance.md): the smallest NDJSON-ish
 * server, one epoll loop over TCP with TCP_NODELAY that writes back every byte it reads.
 *   echo_floor [--listen HOST:PORT] [--ready-fd N]
 * The ready fd gets "HOST:PORT\n" like stereod's.
 */
#include "common/stereo.h"
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	prog = "echo_floor";
	const char *addr = "127.0.0.1:0";
	int ready = -1;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--listen"))
			addr = argv[i + 1];
		else if (!strcmp(argv[i], "--ready-fd"))
			ready = atoi(argv[i + 1]);
	}
	char err[ERRBUF];
	int lfd = sock_listen_tcp(addr, 1024, err);
	if (lfd < 0)
		die(EXIT_FAIL, "%s", err);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	if (ready >= 0) {
		dprintf(ready, "127.0.0.1:%d\n", sock_local_port(lfd));
		close(ready);
	}
	static char buf[65536];
	struct epoll_event evs[64];
	for (;;) {
		int n = epoll_wait(ep, evs, 64, -1);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == lfd) {
				int c;
				while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					int one = 1;
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
					struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
				}
				continue;
			}
			ssize_t r = read(fd, buf, sizeof buf);
			if (r <= 0) {
				if (r < 0 && errno == EAGAIN)
					continue;
				close(fd);
				continue;
			}
			fd_set_nonblock(fd, 0);    /* the floor may block on write: it serves loads that read */
			write_all(fd, buf, r);
			fd_set_nonblock(fd, 1);
		}
	}
}
