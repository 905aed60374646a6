/* ndjson_pipeline.c - the pipelining client that found replies going missing: it writes N
 * requests ({"type":"ping","id":K}, every 100th a get_health) on a non-blocking socket as
 * fast as the socket takes them, and reads the replies as they arrive, in one poll loop.
 *   ndjson_pipeline [--count N] [--timeout MS] HOST:PORT
 * Prints "replies=R of N" and exits 0 when every request got its reply, in order (ids
 * 0..N-1); 1 when a reply is missing or out of order; 3 when no progress was made for MS
 * (default 10000) milliseconds: the hang guard, not a timing assertion. */
#include "common/stereo.h"
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	prog = "ndjson_pipeline";
	long count = 10000;
	int timeout_ms = 10000, i = 1;
	for (; i < argc - 1; i++) {
		if (!strcmp(argv[i], "--count") && i + 1 < argc - 1)
			count = atol(argv[++i]);
		else if (!strcmp(argv[i], "--timeout") && i + 1 < argc - 1)
			timeout_ms = atoi(argv[++i]);
		else
			break;
	}
	if (i != argc - 1 || count <= 0)
		die(EXIT_USAGE, "usage: ndjson_pipeline [--count N] [--timeout MS] HOST:PORT");
	char err[ERRBUF];
	bool to;
	int fd = sock_connect_tcp(argv[i], timeout_ms, &to, err);
	if (fd < 0)
		die(EXIT_CONN, "%s", err);
	fd_set_nonblock(fd, 1);
	struct buf req = {0}, in = {0};
	for (long k = 0; k < count; k++)
		buf_printf(&req, k % 100 == 99 ? "{\"type\":\"get_health\",\"id\":%ld}\n"
			   : "{\"type\":\"ping\",\"id\":%ld}\n", k);
	size_t sent = 0, scan = 0;
	long replies = 0;
	int rc = 0;
	while (replies < count) {
		struct pollfd p = {.fd = fd, .events = POLLIN | (sent < req.len ? POLLOUT : 0)};
		int n = poll(&p, 1, timeout_ms);
		if (n == 0) {
			rc = EXIT_CONN;
			fprintf(stderr, "ndjson_pipeline: no progress for %d ms (sent %zu of %zu bytes)\n",
				timeout_ms, sent, req.len);
			break;
		}
		if (n < 0)
			continue;
		if ((p.revents & POLLOUT) && sent < req.len) {
			ssize_t w = send(fd, req.p + sent, req.len - sent, MSG_NOSIGNAL);
			if (w > 0)
				sent += w;
			else if (w < 0 && errno != EAGAIN && errno != EINTR)
				die_sys(EXIT_CONN, "sending");
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			buf_reserve(&in, 65536);
			ssize_t r = recv(fd, in.p + in.len, 65536, 0);
			if (r == 0) {
				fprintf(stderr, "ndjson_pipeline: connection closed\n");
				rc = EXIT_FAIL;
				break;
			}
			if (r < 0) {
				if (errno == EAGAIN || errno == EINTR)
					continue;
				die_sys(EXIT_CONN, "receiving");
			}
			in.len += r;
			char *nl;
			while ((nl = memchr(in.p + scan, '\n', in.len - scan))) {
				char want[64];
				snprintf(want, sizeof want, "\"id\":%ld", replies);
				*nl = 0;
				if (!strstr(in.p + scan, want)) {
					fprintf(stderr, "ndjson_pipeline: reply %ld out of order: %s\n", replies,
						in.p + scan);
					rc = EXIT_FAIL;
					goto out;
				}
				replies++;
				scan = nl + 1 - in.p;
			}
			if (scan == in.len) {
				in.len = scan = 0;
			}
		}
	}
out:
	printf("replies=%ld of %ld\n", replies, count);
	close(fd);
	buf_free(&req);
	buf_free(&in);
	return rc ? rc : replies == count ? 0 : EXIT_FAIL;
}
