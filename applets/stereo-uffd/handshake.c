/* handshake.c - Firecracker's side of the Uffd memory backend: the listening socket (refusing
 * one that is in use, removing at exit only the inode it bound), accepting a connection and
 * identifying the peer (SO_PEERPIDFD, else SO_PEERCRED + pidfd_open with a start-time check),
 * receiving the one message (JSON region array + exactly one fd in SCM_RIGHTS) without
 * blocking, and validating the regions. Also the fail-closed kill.
 *
 * Region fields by Firecracker version (docs/stereo-uffd.md, "serve"): base_host_virt_addr, size, offset
 * (1.1+); page_size_kib, in bytes despite the name (1.7+); page_size (1.12+). Unknown fields
 * are ignored.
 */
#include "uffd.h"
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77   /* Linux 6.5; Debian 12's headers lack it */
#endif
#define HS_MAX_FDS 8

/* The socket's mode and group let a jailed Firecracker (its own uid/gid) connect. */
int hs_listen(struct hs_listener *l, const char *path, mode_t mode, gid_t gid, char *err)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	l->fd = -1;
	l->path = path;
	if (strlen(path) >= sizeof sun.sun_path)
		return errf(err, "socket path '%s' is too long", path);
	strcpy(sun.sun_path, path);
	struct stat st;
	if (!lstat(path, &st) && S_ISSOCK(st.st_mode)) {
		/* another server's live socket must not be taken over; a stale one is replaced */
		int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (c < 0)
			return errf(err, "socket: %s", strerror(errno));
		int r = connect(c, (struct sockaddr *)&sun, sizeof sun), e = errno;
		close(c);
		if (!r || e == EAGAIN || e == EINPROGRESS)
			return errf(err, "socket %s is in use: another server accepts connections on it", path);
		if (e == ECONNREFUSED)
			unlink(path);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return errf(err, "socket: %s", strerror(errno));
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun)) {
		errf(err, "binding %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (lstat(path, &st)) {
		errf(err, "binding %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	l->dev = st.st_dev;
	l->ino = st.st_ino;
	l->fd = fd;
	if (chmod(path, mode) || (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid)) || listen(fd, 128)) {
		errf(err, "setting up %s: %s", path, strerror(errno));
		hs_unlisten(l);
		return -1;
	}
	return fd;
}

void hs_unlisten(struct hs_listener *l)
{
	if (l->fd < 0)
		return;
	struct stat st;
	if (!lstat(l->path, &st) && st.st_dev == l->dev && st.st_ino == l->ino)
		unlink(l->path);
	close(l->fd);
	l->fd = -1;
}

/* Start time of pid in clock ticks since boot (field 22 of /proc/PID/stat), 0 if unknown. */
static unsigned long long proc_start_ticks(pid_t pid)
{
	char path[64];
	struct buf b = {0};
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	if (read_file(path, &b, 4096) < 0) {
		buf_free(&b);
		return 0;
	}
	const char *s = buf_cstr(&b), *p = strrchr(s, ')');
	unsigned long long v = 0;
	/* after "pid (comm)": fields 3.. ; starttime is field 22 */
	for (int field = 2; p && *p; p++) {
		if (*p == ' ' && ++field == 22) {
			v = strtoull(p + 1, NULL, 10);
			break;
		}
	}
	buf_free(&b);
	return v;
}

static int peer_identify(int fd, struct peer *p, unsigned long long accepted_ticks, char *err)
{
	struct ucred cr;
	socklen_t len = sizeof cr;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) || cr.pid <= 0)
		return errf(err, "handshake: SO_PEERCRED: %s", strerror(errno ? errno : ESRCH));
	p->pid = cr.pid;
	int pidfd = -1;
	len = sizeof pidfd;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) || pidfd < 0) {
		/* pidfd_open races with pid reuse: a process that started after we accepted
		 * the connection cannot be the peer. */
		pidfd = (int)syscall(SYS_pidfd_open, cr.pid, 0);
		if (pidfd >= 0) {
			unsigned long long st = proc_start_ticks(cr.pid);
			if (accepted_ticks && st > accepted_ticks) {
				close(pidfd);
				return errf(err, "handshake: peer pid %d exited before it could be identified",
					    (int)cr.pid);
			}
		}
	}
	if (pidfd >= 0)
		fcntl(pidfd, F_SETFD, FD_CLOEXEC);
	p->pidfd = pidfd;
	return 0;
}

static unsigned long long boot_ticks(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	long hz = sysconf(_SC_CLK_TCK);
	return (unsigned long long)ts.tv_sec * (unsigned long long)hz +
	       (unsigned long long)ts.tv_nsec / (1000000000ULL / (unsigned long long)hz) + 1;
}

int hs_accept(int lfd, struct peer *p, char *err)
{
	p->pid = 0;
	p->pidfd = p->sock = -1;
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return errf(err, "accept: %s", strerror(errno));
		}
		p->sock = fd;
		if (peer_identify(fd, p, boot_ticks(), err)) {
			if (!p->pid) {   /* nobody to kill: just drop the connection */
				close(fd);
				p->sock = -1;
			}
			return -1;
		}
		return 1;
	}
}

static int get_u64(const struct json *j, int obj, const char *key, size_t idx, bool need,
		   uint64_t *out, bool *found, char *err)
{
	int t = json_get(j, obj, key);
	*found = t >= 0;
	if (t < 0)
		return need ? errf(err, "region %zu: missing \"%s\"", idx, key) : 0;
	if (json_u64(j, t, out))
		return errf(err, "region %zu: \"%s\" is not an unsigned integer", idx, key);
	return 0;
}

int hs_parse_regions(const char *s, size_t len, struct handshake *h, char *err)
{
	struct json j;
	char jerr[ERRBUF];
	h->n = 0;
	h->page = 0;
	h->has_page_size = false;
	if (json_parse(&j, s, len, false, jerr))
		return errf(err, "region list is not JSON: %s", jerr);
	int rc = -1;
	if (json_kind(&j, 0) != JSON_ARRAY) {
		errf(err, "region list is not a JSON array");
		goto out;
	}
	for (size_t i = 0;; i++) {
		int o = json_array_item(&j, 0, (int)i);
		if (o < 0)
			break;
		if (i >= ARRAY_SIZE(h->r)) {
			errf(err, "more than %zu regions", ARRAY_SIZE(h->r));
			goto out;
		}
		if (json_kind(&j, o) != JSON_OBJECT) {
			errf(err, "region %zu is not an object", i);
			goto out;
		}
		struct fc_region *r = &h->r[i];
		uint64_t ps = 0, psk = 0;
		bool f, has_ps, has_psk;
		if (get_u64(&j, o, "base_host_virt_addr", i, true, &r->base, &f, err) ||
		    get_u64(&j, o, "size", i, true, &r->size, &f, err) ||
		    get_u64(&j, o, "offset", i, true, &r->offset, &f, err) ||
		    get_u64(&j, o, "page_size", i, false, &ps, &has_ps, err) ||
		    get_u64(&j, o, "page_size_kib", i, false, &psk, &has_psk, err))
			goto out;
		/* page_size_kib carries bytes despite its name (Firecracker 1.7 - 1.11) */
		uint64_t page = has_ps ? ps : has_psk ? psk : PAGE_4K;
		if (page != PAGE_4K && page != PAGE_2M) {
			errf(err, "region %zu: page size %llu is neither 4096 nor 2097152", i,
			     (unsigned long long)page);
			goto out;
		}
		if (i && page != h->page) {
			errf(err, "region %zu: page size %llu differs from region 0's %llu", i,
			     (unsigned long long)page, (unsigned long long)h->page);
			goto out;
		}
		h->page = page;
		h->has_page_size = has_ps;
		if (!r->size || r->size % page || r->base % page || r->offset % page) {
			errf(err, "region %zu: base 0x%llx, size %llu or offset %llu is not a multiple of the page size %llu",
			     i, (unsigned long long)r->base, (unsigned long long)r->size,
			     (unsigned long long)r->offset, (unsigned long long)page);
			goto out;
		}
		if (r->base + r->size < r->base || r->offset + r->size < r->offset) {
			errf(err, "region %zu: address or offset range overflows", i);
			goto out;
		}
		for (size_t k = 0; k < i; k++) {
			const struct fc_region *q = &h->r[k];
			if (r->base < q->base + q->size && q->base < r->base + r->size) {
				errf(err, "region %zu overlaps region %zu in host memory", i, k);
				goto out;
			}
		}
		h->n = i + 1;
	}
	if (!h->n) {
		errf(err, "region list is empty");
		goto out;
	}
	rc = 0;
out:
	json_free(&j);
	return rc;
}

int hs_recv(struct peer *p, char *msg, struct handshake *h, char *err)
{
	h->uffd = -1;
	size_t len = 0;
	int nfds = 0, fds[HS_MAX_FDS * 2], rc = -1;
	bool eof = false;
	/* Firecracker makes one sendmsg: once anything is there, take it and whatever follows */
	while (len < HS_MAX_MSG) {
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(int) * HS_MAX_FDS)];
		} cbuf;
		struct iovec iov = {msg + len, HS_MAX_MSG - len};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.b,
				    .msg_controllen = sizeof cbuf.b};
		ssize_t n = recvmsg(p->sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (!len && !nfds)
				return 1;   /* nothing yet */
			break;
		}
		if (n < 0) {
			errf(err, "handshake: recvmsg: %s", strerror(errno));
			goto out;
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
				if (nfds < (int)ARRAY_SIZE(fds))
					fds[nfds++] = fd;
				else
					close(fd);
			}
		}
		if (mh.msg_flags & MSG_CTRUNC) {
			errf(err, "handshake: more file descriptors than the one uffd");
			goto out;
		}
		if (!n) {
			eof = true;
			break;
		}
		len += (size_t)n;
	}
	if (!len && !nfds && eof)
		return 2;   /* a connection that ends without a byte: nobody waits on us */
	if (!len) {
		errf(err, "handshake: Firecracker closed the socket without sending its regions");
		goto out;
	}
	if (nfds != 1) {
		errf(err, "handshake: expected exactly one uffd in SCM_RIGHTS, got %d", nfds);
		goto out;
	}
	char link[64], perr[ERRBUF];
	snprintf(perr, sizeof perr, "/proc/self/fd/%d", fds[0]);
	ssize_t ln = readlink(perr, link, sizeof link - 1);
	if (ln < 0 || (link[ln] = 0, strcmp(link, "anon_inode:[userfaultfd]"))) {
		errf(err, "handshake: the fd received is not a userfaultfd (%s)", ln < 0 ? "?" : link);
		goto out;
	}
	if (hs_parse_regions(msg, len, h, perr)) {
		errf(err, "handshake: %s", perr);
		goto out;
	}
	h->uffd = fds[0];
	nfds = 0;
	fd_set_nonblock(h->uffd, 1);
	rc = 0;
out:
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	return rc;
}

int peer_kill(struct peer *p)
{
	if (peer_gone(p))
		return 0;   /* it exited by itself (a zombie still takes signals: ask its pidfd) */
	if (p->pidfd >= 0)
		return syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, NULL, 0) ? 0 : 1;
	if (p->pid > 0)
		return kill(p->pid, SIGKILL) ? 0 : 1;
	return 0;
}

bool peer_gone(const struct peer *p)
{
	return p->pidfd >= 0 && fd_wait(p->pidfd, POLLIN, 0) > 0;
}
