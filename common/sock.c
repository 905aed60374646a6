/* sock.c - socket set-up for the three transports (see sock.h). */
#include "common/stereo.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int parse_hostport(const char *addr, struct sockaddr_storage *ss, socklen_t *sl, char *err)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	if (!colon)
		return errf(err, "address '%s' is not HOST:PORT", addr);
	size_t hl = colon - addr;
	if (hl >= sizeof host)
		return errf(err, "address '%s' is too long", addr);
	memcpy(host, addr, hl);
	host[hl] = 0;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (!colon[1] || *end || port < 0 || port > 65535)
		return errf(err, "bad port in '%s'", addr);
	memset(ss, 0, sizeof *ss);
	char *h = host;
	if (h[0] == '[' && hl > 1 && h[hl - 1] == ']') {
		h[hl - 1] = 0;
		h++;
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (!*h || !strcmp(h, "0.0.0.0")) {
		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(INADDR_ANY);
	} else if (!strcmp(h, "localhost")) {
		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else if (inet_pton(AF_INET, h, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
	} else if (inet_pton(AF_INET6, h, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
	} else {
		return errf(err, "bad host in '%s' (numeric addresses only)", addr);
	}
	if (ss->ss_family == AF_INET) {
		s4->sin_port = htons(port);
		*sl = sizeof *s4;
	} else {
		s6->sin6_port = htons(port);
		*sl = sizeof *s6;
	}
	return 0;
}

int sock_listen_tcp(const char *addr, int backlog, char *err)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	if (parse_hostport(addr, &ss, &sl, err))
		return -1;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return errf(err, "socket: %s", strerror(errno));
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, backlog)) {
		errf(err, "listening on %s: %s", addr, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int sock_listen_unix(const char *path, mode_t mode, gid_t gid, char *err)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sun.sun_path)
		return errf(err, "socket path '%s' is too long", path);
	strcpy(sun.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return errf(err, "socket: %s", strerror(errno));
	struct stat st;
	if (!lstat(path, &st) && S_ISSOCK(st.st_mode))
		unlink(path);   /* a stale socket from an earlier run */
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun)) {
		errf(err, "binding %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (chmod(path, mode) || (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid)) || listen(fd, 128)) {
		errf(err, "setting up %s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

int sock_listen_vsock(unsigned cid, unsigned port, char *err)
{
	struct sockaddr_vm svm = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return errf(err, "vsock socket: %s", strerror(errno));
	if (bind(fd, (struct sockaddr *)&svm, sizeof svm) || listen(fd, 128)) {
		errf(err, "listening on vsock port %u: %s", port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int fd_wait(int fd, short events, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = events};
	int64_t deadline = now_ms() + timeout_ms;
	for (;;) {
		int t = timeout_ms < 0 ? -1 : (int)(deadline - now_ms());
		if (timeout_ms >= 0 && t < 0)
			t = 0;
		int r = poll(&p, 1, t);
		if (r < 0 && errno == EINTR)
			continue;
		return r < 0 ? -errno : r;
	}
}

static int connect_to(int family, const struct sockaddr *sa, socklen_t sl, const char *what,
		      int timeout_ms, bool *timed_out, char *err)
{
	if (timed_out)
		*timed_out = false;
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return errf(err, "socket: %s", strerror(errno));
	if (connect(fd, sa, sl) && errno != EINPROGRESS) {
		int e = errno;
		errf(err, "connecting to %s: %s", what, strerror(e));
		close(fd);
		errno = e;   /* callers tell "not there yet" (ENOENT, ECONNREFUSED) from the rest */
		return -1;
	}
	int r = fd_wait(fd, POLLOUT, timeout_ms);
	int soerr = 0;
	socklen_t el = sizeof soerr;
	if (r == 0) {
		if (timed_out)
			*timed_out = true;
		errf(err, "connecting to %s: timed out", what);
		close(fd);
		return -1;
	}
	if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) || soerr) {
		int e = soerr ? soerr : r < 0 ? -r : errno;
		errf(err, "connecting to %s: %s", what, strerror(e));
		close(fd);
		errno = e;
		return -1;
	}
	fd_set_nonblock(fd, 0);
	if (family != AF_UNIX && family != AF_VSOCK) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	return fd;
}

int sock_connect_tcp(const char *addr, int timeout_ms, bool *timed_out, char *err)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	if (parse_hostport(addr, &ss, &sl, err))
		return -1;
	return connect_to(ss.ss_family, (struct sockaddr *)&ss, sl, addr, timeout_ms, timed_out, err);
}

int sock_connect_unix(const char *path, int timeout_ms, bool *timed_out, char *err)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sun.sun_path)
		return errf(err, "socket path '%s' is too long", path);
	strcpy(sun.sun_path, path);
	return connect_to(AF_UNIX, (struct sockaddr *)&sun, sizeof sun, path, timeout_ms, timed_out, err);
}

int sock_connect_vsock(unsigned cid, unsigned port, int timeout_ms, bool *timed_out, char *err)
{
	struct sockaddr_vm svm = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
	char what[64];
	snprintf(what, sizeof what, "vsock %u:%u", cid, port);
	return connect_to(AF_VSOCK, (struct sockaddr *)&svm, sizeof svm, what, timeout_ms, timed_out, err);
}

int sock_local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl))
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	if (ss.ss_family == AF_VSOCK)
		return ((struct sockaddr_vm *)&ss)->svm_port;
	return -1;
}

bool vsock_available(void)
{
	/* /dev/vsock alone is not enough: the loopback transport provides it on any kernel with
	 * vsock_loopback. A guest transport answers IOCTL_VM_SOCKETS_GET_LOCAL_CID with a CID > 2. */
	int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	unsigned cid = 0;
	int r = ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid);
	close(fd);
	return r == 0 && cid > 2 && cid != VMADDR_CID_ANY;
}
