/* fsutil.c - atomic writes and symlink-refusing opens (see fsutil.h). */
#include "common/stereo.h"
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= n;
	}
	return 0;
}

int fd_set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -errno;
	fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	return fcntl(fd, F_SETFL, fl) ? -errno : 0;
}

int atomic_write_at(int dirfd, const char *name, const void *data, size_t len,
		    mode_t mode, uid_t uid, gid_t gid)
{
	/* The temp name does not grow with the name: any name up to NAME_MAX can be written. */
	char tmp[sizeof ATOMIC_TMP_PREFIX + 16];
	unsigned long long rnd = 0;
	int fd = -1, rc;
	if (strlen(name) > 255)
		return -ENAMETOOLONG;
	for (int tries = 0; tries < 16; tries++) {
		if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != sizeof rnd)
			rnd ^= (unsigned long long)now_ms() * 2654435761ULL + getpid() + tries;
		snprintf(tmp, sizeof tmp, ATOMIC_TMP_PREFIX "%012llx", rnd & 0xffffffffffffULL);
		fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0 || errno != EEXIST)
			break;
	}
	if (fd < 0)
		return -errno;
	if (fchmod(fd, mode & 07777) || ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid))) {
		rc = -errno;
		goto fail;
	}
	if ((rc = write_all(fd, data, len)))
		goto fail;
	if (fsync(fd)) {
		rc = -errno;
		goto fail;
	}
	if (close(fd)) {
		fd = -1;
		rc = -errno;
		goto fail;
	}
	fd = -1;
	if (renameat(dirfd, tmp, dirfd, name)) {
		rc = -errno;
		goto fail;
	}
	fsync(dirfd);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlinkat(dirfd, tmp, 0);
	return rc;
}

int atomic_tmp_sweep(int dirfd)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	int n = 0;
	struct dirent *e;
	while ((e = readdir(dir)))
		if (!strncmp(e->d_name, ATOMIC_TMP_PREFIX, strlen(ATOMIC_TMP_PREFIX)) &&
		    !unlinkat(dirfd, e->d_name, 0))
			n++;
	closedir(dir);
	return n;
}

int atomic_write(const char *path, const void *data, size_t len, mode_t mode, uid_t uid, gid_t gid)
{
	const char *slash = strrchr(path, '/');
	char dir[4096];
	const char *name = path;
	if (slash) {
		size_t n = slash - path;
		if (n >= sizeof dir)
			return -ENAMETOOLONG;
		memcpy(dir, path, n);
		dir[n ? n : 1] = 0;
		if (!n)
			dir[0] = '/';
		name = slash + 1;
	} else {
		strcpy(dir, ".");
	}
	if (!*name)
		return -EISDIR;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	int rc = atomic_write_at(dfd, name, data, len, mode, uid, gid);
	close(dfd);
	return rc;
}

int open_dir_nofollow(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int open_beneath(int dirfd, const char *rel, int flags, mode_t mode)
{
	char part[256];
	int cur = dup(dirfd);
	if (cur < 0)
		return -errno;
	const char *p = rel;
	for (;;) {
		while (*p == '/')
			p++;
		const char *e = strchr(p, '/');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (!n || n >= sizeof part || (n == 2 && !memcmp(p, "..", 2))) {
			close(cur);
			return -EINVAL;
		}
		memcpy(part, p, n);
		part[n] = 0;
		while (e && *e == '/')
			e++;
		bool last = !e || !*e;
		int fd = last ? openat(cur, part, flags | O_NOFOLLOW | O_CLOEXEC, mode)
			      : openat(cur, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int err = errno;
		close(cur);
		if (fd < 0)
			return -err;
		if (last)
			return fd;
		cur = fd;
		p = e;
	}
}

int mkdir_p(const char *path, mode_t mode)
{
	char tmp[4096];
	size_t n = strlen(path);
	if (n >= sizeof tmp)
		return -ENAMETOOLONG;
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, 0755) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

int read_file(const char *path, struct buf *out, size_t max)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	out->len = 0;
	for (;;) {
		if (buf_reserve(out, 65536)) {
			close(fd);
			return -ENOMEM;
		}
		ssize_t r = read(fd, out->p + out->len, 65536);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			close(fd);
			return -e;
		}
		if (!r)
			break;
		out->len += r;
		if (out->len > max) {
			close(fd);
			return -EFBIG;
		}
	}
	out->p[out->len] = 0;
	close(fd);
	return 0;
}

int open_resolve(int dirfd, const char *path, int flags, unsigned long long resolve)
{
	struct open_how how = {.flags = (unsigned long long)(flags | O_CLOEXEC), .resolve = resolve};
	int fd, tries = 0;
	do   /* EAGAIN: a rename raced a ".." lookup; the kernel asks for a retry */
		fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
	while (fd < 0 && errno == EAGAIN && ++tries < 16);
	return fd < 0 ? -errno : fd;
}

char *path_join_root(const char *root, const char *path)
{
	size_t rl = strlen(root);
	while (rl > 0 && root[rl - 1] == '/')
		rl--;
	char *p = malloc(rl + strlen(path) + 1);
	if (p) {
		memcpy(p, root, rl);
		strcpy(p + rl, path);
	}
	return p;
}
