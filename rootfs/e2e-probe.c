/* e2e-probe.c - a test-only guest service, present only in the image `build.sh --test` makes
 * (tests/e2e.bats). It lets the host see guest state that the control protocol on purpose
 * never sends back: when a 9p file system is mounted at DIR (by stereod's `mount` message), it
 * copies the injected secrets, the authorized_keys files and jcard.toml into DIR, writes a
 * manifest of their modes and owners, and writes DIR/hello last as the "done" marker. A
 * production image has no such service, so nothing leaves the guest that way there.
 *
 * usage: e2e-probe DIR
 * It waits on /proc/self/mountinfo (POLLPRI fires on every mount table change), so it holds
 * no file open inside DIR and never delays the unmount at shutdown.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define COPY_MAX (1 << 20)

static const char *dir;

static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("e2e-probe: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* Is dir a 9p mount point right now? Field 5 of a mountinfo line is the mount point, and the
 * file system type follows the " - " separator. */
static bool mounted_9p(int fd)
{
	static char buf[65536];
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	if (n <= 0)
		return false;
	buf[n] = 0;
	for (char *line = buf, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		char mnt[4096], type[64];
		const char *sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 ||
		    sscanf(sep + 3, "%63s", type) != 1)
			continue;
		if (!strcmp(mnt, dir) && !strcmp(type, "9p"))
			return true;
	}
	return false;
}

/* Write data to dir/name through a temporary name and rename, so the host never reads a
 * half-written file. */
static int put(const char *name, const void *data, size_t len, mode_t mode)
{
	char path[4096], tmp[4200];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	const char *p = data;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int e = errno;
			close(fd);
			unlink(tmp);
			return -e;
		}
		p += w;
		len -= w;
	}
	fchmod(fd, mode);
	if (close(fd) || rename(tmp, path))
		return -errno;
	return 0;
}

static char *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return NULL;
	char *b = malloc(COPY_MAX);
	ssize_t n = b ? read(fd, b, COPY_MAX) : -1;
	close(fd);
	if (n < 0) {
		free(b);
		return NULL;
	}
	*len = n;
	return b;
}

/* Copy one guest file as dir/name and add "name mode uid gid" of the original to the manifest. */
static void copy_one(const char *src, const char *name, FILE *manifest)
{
	struct stat st;
	size_t len;
	if (lstat(src, &st))
		return;
	fprintf(manifest, "%s %04o %u %u\n", src, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
		(unsigned)st.st_gid);
	if (!S_ISREG(st.st_mode) || !name)
		return;
	char *b = slurp(src, &len);
	if (!b)
		return;
	int rc = put(name, b, len, st.st_mode & 0777);
	memset(b, 0, len);
	free(b);
	if (rc)
		say("writing %s/%s: %s", dir, name, strerror(-rc));
}

static void report(void)
{
	char *text = NULL;
	size_t tlen = 0;
	FILE *m = open_memstream(&text, &tlen);
	if (!m)
		return;
	char sdir[4200];
	snprintf(sdir, sizeof sdir, "%s/secrets", dir);
	mkdir(sdir, 0700);
	DIR *d = opendir("/run/stereos/secrets");
	for (struct dirent *e; d && (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		char src[512], name[512];
		snprintf(src, sizeof src, "/run/stereos/secrets/%.255s", e->d_name);
		snprintf(name, sizeof name, "secrets/%.255s", e->d_name);
		copy_one(src, name, m);
	}
	if (d)
		closedir(d);
	static const char *const users[][2] = {{"root", "/root"}, {"admin", "/home/admin"},
					      {"agent", "/home/agent"}};
	for (size_t i = 0; i < sizeof users / sizeof users[0]; i++) {
		char ssh[512], keys[512], name[512];
		snprintf(ssh, sizeof ssh, "%s/.ssh", users[i][1]);
		snprintf(keys, sizeof keys, "%s/.ssh/authorized_keys", users[i][1]);
		snprintf(name, sizeof name, "%s.authorized_keys", users[i][0]);
		copy_one(ssh, NULL, m);
		copy_one(keys, name, m);
	}
	copy_one("/etc/stereos/jcard.toml", "jcard.toml", m);
	fclose(m);
	int rc = put("manifest", text, tlen, 0644);
	free(text);
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	char hello[128];
	int n = snprintf(hello, sizeof hello, "hello from the guest, up %lld.%03ld s\n",
			 (long long)ts.tv_sec, ts.tv_nsec / 1000000);
	if (!rc)
		rc = put("hello", hello, n, 0644);
	if (rc)
		say("writing the report into %s: %s", dir, strerror(-rc));
	else
		say("report written to %s", dir);
}

int main(int argc, char **argv)
{
	if (argc != 2 || argv[1][0] != '/') {
		fprintf(stderr, "usage: e2e-probe DIR\n");
		return 2;
	}
	dir = argv[1];
	int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		say("opening /proc/self/mountinfo: %s", strerror(errno));
		return 1;
	}
	bool was = false;
	for (;;) {
		bool now = mounted_9p(fd);
		if (now && !was)
			report();
		was = now;
		struct pollfd p = {.fd = fd, .events = POLLPRI};
		if (poll(&p, 1, -1) < 0 && errno != EINTR) {
			say("poll: %s", strerror(errno));
			return 1;
		}
	}
}
