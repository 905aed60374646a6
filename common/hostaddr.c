/* hostaddr.c - guest addresses for host programs and the three ways to connect (see
 * hostaddr.h). Hybrid vsock, as Firecracker documents it (docs/vsock.md in its repository,
 * "host-initiated connections"): connect to the VMM's Unix socket, send "CONNECT <port>\n",
 * and the VMM answers "OK <host_port>\n" once the guest accepted; from then on the socket
 * carries the guest's byte stream. When nothing listens on that port in the guest, the VMM
 * closes the socket instead. Cloud Hypervisor speaks the same exchange.
 */
#include "common/stereo.h"
#include "common/hostaddr.h"
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define OK_LINE_MAX 64   /* "OK 4294967295\n" is 14 bytes; anything longer is not an OK */

static int parse_u32(const char *s, size_t n, unsigned *out)
{
	if (!n || n > 10)
		return -1;
	unsigned long long v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v > 0xffffffffULL)
		return -1;
	*out = (unsigned)v;
	return 0;
}

int hostaddr_parse_vsock(struct hostaddr *a, const char *s, unsigned def_port, char *err)
{
	const char *colon = strchr(s, ':');
	size_t cl = colon ? (size_t)(colon - s) : strlen(s);
	unsigned cid, port = def_port;
	if (parse_u32(s, cl, &cid) || (colon && parse_u32(colon + 1, strlen(colon + 1), &port)))
		return errf(err, "bad vsock address '%s' (want CID or CID:PORT)", s);
	*a = (struct hostaddr){.kind = HOSTADDR_VSOCK, .cid = cid, .port = port, .port_given = colon != NULL};
	return 0;
}

int hostaddr_parse_tcp(struct hostaddr *a, const char *s, char *err)
{
	const char *colon = strrchr(s, ':');
	unsigned port;
	if (!colon || colon == s || parse_u32(colon + 1, strlen(colon + 1), &port) || port > 65535 ||
	    !port)
		return errf(err, "bad TCP address '%s' (want HOST:PORT)", s);
	if (strlen(s) >= sizeof a->tcp)
		return errf(err, "TCP address '%s' is too long", s);
	*a = (struct hostaddr){.kind = HOSTADDR_TCP};
	strcpy(a->tcp, s);
	return 0;
}

/* PATH[:PORT]: a trailing ":digits" is the port, so a path may hold colons elsewhere. */
int hostaddr_parse_uds(struct hostaddr *a, const char *s, unsigned def_port, char *err)
{
	const char *colon = strrchr(s, ':');
	unsigned port = def_port;
	size_t pl = strlen(s);
	bool given = false;
	if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1)) {
		if (parse_u32(colon + 1, strlen(colon + 1), &port))
			return errf(err, "bad port in hybrid vsock address '%s'", s);
		pl = (size_t)(colon - s);
		given = true;
	}
	if (!pl)
		return errf(err, "bad hybrid vsock address '%s' (want PATH or PATH:PORT)", s);
	if (pl >= sizeof a->path)
		return errf(err, "socket path in '%s' is too long (at most %zu bytes)", s,
			    sizeof a->path - 1);
	*a = (struct hostaddr){.kind = HOSTADDR_UDS, .port = port, .port_given = given};
	memcpy(a->path, s, pl);
	a->path[pl] = 0;
	return 0;
}

int hostaddr_parse_url(struct hostaddr *a, const char *s, unsigned def_port, char *err)
{
	if (!strncmp(s, "vsock://", 8))
		return hostaddr_parse_vsock(a, s + 8, def_port, err);
	if (!strncmp(s, "tcp://", 6))
		return hostaddr_parse_tcp(a, s + 6, err);
	if (!strncmp(s, "unix://", 7))
		return hostaddr_parse_uds(a, s + 7, def_port, err);
	return errf(err, "bad address '%s' (want vsock://CID:PORT, tcp://HOST:PORT or unix://PATH:PORT)",
		    s);
}

void hostaddr_str(const struct hostaddr *a, char *out, size_t n)
{
	switch (a->kind) {
	case HOSTADDR_VSOCK: snprintf(out, n, "vsock://%u:%u", a->cid, a->port); break;
	case HOSTADDR_TCP: snprintf(out, n, "tcp://%s", a->tcp); break;
	case HOSTADDR_UDS: snprintf(out, n, "unix://%s:%u", a->path, a->port); break;
	}
}

/* What the VMM sent, quoted for a message: printable ASCII as is, the rest as \xNN. */
static void quote_line(char *out, size_t cap, const char *s, size_t n)
{
	size_t k = 0;
	out[k++] = '"';
	for (size_t i = 0; i < n && k + 6 < cap; i++) {
		unsigned char c = s[i];
		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
			out[k++] = c;
		else
			k += snprintf(out + k, cap - k, "\\x%02x", c);
	}
	out[k++] = '"';
	out[k] = 0;
}

static bool is_ok_line(const char *s, size_t n)
{
	unsigned port;
	return n > 4 && !memcmp(s, "OK ", 3) && s[n - 1] == '\n' && !parse_u32(s + 3, n - 4, &port);
}

/* The exchange on a connected socket. The answer is read a byte at a time: whatever follows
 * its newline already belongs to the guest's stream. */
static int hvsock_handshake(int fd, const struct hostaddr *a, int timeout_ms,
			    enum hostaddr_fail *why, char *err)
{
	char req[32], line[OK_LINE_MAX], q[OK_LINE_MAX * 4 + 3];
	int len = snprintf(req, sizeof req, "CONNECT %u\n", a->port);
	int64_t deadline = now_ms() + timeout_ms;
	if (send(fd, req, (size_t)len, MSG_NOSIGNAL) != len) {
		*why = errno == EPIPE || errno == ECONNRESET ? HOSTADDR_NOT_YET : HOSTADDR_ERROR;
		return errf(err, "hybrid vsock %s: sending CONNECT: %s", a->path, strerror(errno));
	}
	size_t n = 0;
	while (n < sizeof line) {
		int left = (int)(deadline - now_ms());
		int w = fd_wait(fd, POLLIN, left > 0 ? left : 0);
		if (w == 0) {
			*why = HOSTADDR_TIMEOUT;
			if (!n)
				return errf(err, "hybrid vsock %s: no answer to CONNECT %u within %d ms",
					    a->path, a->port, timeout_ms);
			quote_line(q, sizeof q, line, n);
			return errf(err, "hybrid vsock %s: incomplete answer to CONNECT %u within %d ms: %s",
				    a->path, a->port, timeout_ms, q);
		}
		ssize_t r = w < 0 ? w : read(fd, line + n, 1);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0) {
			*why = errno == ECONNRESET ? HOSTADDR_NOT_YET : HOSTADDR_ERROR;
			return errf(err, "hybrid vsock %s: reading the answer: %s", a->path, strerror(errno));
		}
		if (r == 0) {
			/* Firecracker closes the socket when the guest does not accept the port */
			*why = HOSTADDR_NOT_YET;
			quote_line(q, sizeof q, line, n);
			return errf(err, "hybrid vsock %s: closed before OK (is the guest listening on port %u?)%s%s",
				    a->path, a->port, n ? "; got " : "", n ? q : "");
		}
		if (line[n++] == '\n')
			break;
	}
	if (is_ok_line(line, n))
		return 0;
	*why = HOSTADDR_NOT_YET;
	quote_line(q, sizeof q, line, n);
	return errf(err, "hybrid vsock %s: CONNECT %u answered %s, not \"OK <port>\"", a->path,
		    a->port, q);
}

int hostaddr_connect(const struct hostaddr *a, int timeout_ms, enum hostaddr_fail *why, char *err)
{
	bool to = false;
	int fd = -1;
	int64_t t0 = now_ms();
	errno = 0;
	switch (a->kind) {
	case HOSTADDR_VSOCK: fd = sock_connect_vsock(a->cid, a->port, timeout_ms, &to, err); break;
	case HOSTADDR_TCP: fd = sock_connect_tcp(a->tcp, timeout_ms, &to, err); break;
	case HOSTADDR_UDS: fd = sock_connect_unix(a->path, timeout_ms, &to, err); break;
	}
	if (fd < 0) {
		int e = errno;
		bool not_yet = e == ENOENT || e == ECONNREFUSED || e == ECONNRESET || e == ENETUNREACH ||
			       e == EHOSTUNREACH || e == ETIMEDOUT;
		*why = to ? HOSTADDR_TIMEOUT : not_yet ? HOSTADDR_NOT_YET : HOSTADDR_ERROR;
		return -1;
	}
	if (a->kind != HOSTADDR_UDS)
		return fd;
	int left = timeout_ms - (int)(now_ms() - t0);
	if (left > HOSTADDR_OK_TIMEOUT_MS)
		left = HOSTADDR_OK_TIMEOUT_MS;
	if (hvsock_handshake(fd, a, left > 0 ? left : 1, why, err)) {
		close(fd);
		return -1;
	}
	return fd;
}
