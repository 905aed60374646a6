/* ndjson_client.c - a tiny NDJSON test client for stereod: send stdin's lines to HOST:PORT and print
 * the reply lines.
 *   ndjson_client ADDR            send everything, half-close, print all replies until EOF
 *   ndjson_client --seq ADDR      one request at a time, each reply read before the next request
 *                        (what the real Go host client does)
 *   ndjson_client --lines N ADDR  send everything, print exactly N reply lines, keep the socket open
 *                        meanwhile (for lifecycle pushes)
 * --timeout MS (default 5000) bounds every wait; exit 3 when it passes or the peer closes early.
 */
#include "common/stereo.h"
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

static int timeout_ms = 5000;

/* Read until the line starting at *start is complete: its length with the newline, 0 at EOF,
 * -1 on timeout. *start moves past it. */
static ssize_t read_line(int fd, struct buf *b, size_t *start)
{
	size_t scanned = *start;
	for (;;) {
		char *nl = b->len > scanned ? memchr(b->p + scanned, '\n', b->len - scanned) : NULL;
		if (nl) {
			size_t n = nl - (b->p + *start) + 1;
			*start += n;
			return n;
		}
		scanned = b->len;
		if (fd_wait(fd, POLLIN, timeout_ms) <= 0)
			return -1;
		buf_reserve(b, 65536);
		ssize_t r = read(fd, b->p + b->len, 65536);
		if (r <= 0)
			return 0;
		b->len += r;
	}
}

int main(int argc, char **argv)
{
	prog = "ndjson_client";
	bool seq = false;
	long lines = -1;
	int i = 1;
	for (; i < argc - 1; i++) {
		if (!strcmp(argv[i], "--seq"))
			seq = true;
		else if (!strcmp(argv[i], "--lines") && i + 1 < argc - 1)
			lines = atol(argv[++i]);
		else if (!strcmp(argv[i], "--timeout") && i + 1 < argc - 1)
			timeout_ms = atoi(argv[++i]);
		else
			break;
	}
	if (i != argc - 1)
		die(EXIT_USAGE, "usage: ndjson_client [--seq] [--lines N] [--timeout MS] HOST:PORT < requests");
	char err[ERRBUF];
	bool to;
	int fd = sock_connect_tcp(argv[i], timeout_ms, &to, err);
	if (fd < 0)
		die(EXIT_CONN, "%s", err);
	struct buf in = {0}, out = {0};
	if (read_file("/dev/stdin", &in, 64 << 20))
		die(EXIT_FAIL, "reading stdin");
	size_t scan = 0;
	if (seq) {
		for (size_t off = 0; off < in.len;) {
			char *nl = memchr(in.p + off, '\n', in.len - off);
			size_t n = (nl ? (size_t)(nl - in.p) + 1 : in.len) - off;
			if (write_all(fd, in.p + off, n))
				die_sys(EXIT_CONN, "sending");
			off += n;
			size_t start = scan;
			ssize_t r = read_line(fd, &out, &scan);
			if (r <= 0)
				die(EXIT_CONN, r ? "timed out waiting for a reply" : "connection closed");
			fwrite(out.p + start, 1, r, stdout);
		}
	} else {
		if (write_all(fd, in.p, in.len) && errno != EPIPE && errno != ECONNRESET)
			die_sys(EXIT_CONN, "sending");
		if (lines < 0) {
			shutdown(fd, SHUT_WR);
			for (;;) {
				size_t start = scan;
				ssize_t r = read_line(fd, &out, &scan);
				if (r < 0)
					die(EXIT_CONN, "timed out waiting for replies");
				if (r == 0) {
					fwrite(out.p + start, 1, out.len - start, stdout);
					break;
				}
				fwrite(out.p + start, 1, r, stdout);
			}
		} else {
			for (long k = 0; k < lines; k++) {
				size_t start = scan;
				ssize_t r = read_line(fd, &out, &scan);
				if (r <= 0)
					die(EXIT_CONN, r ? "timed out after %ld lines" : "closed after %ld lines", k);
				fwrite(out.p + start, 1, r, stdout);
				fflush(stdout);
			}
		}
	}
	close(fd);
	buf_free(&in);
	buf_free(&out);
	return 0;
}
