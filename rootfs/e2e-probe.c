/* e2e-probe.c - a test-only guest service, present only in the image `build.sh --test` makes
 * (tests/e2e.bats). It lets the host see guest state that the control protocol on purpose
 * never sends back: when a 9p file system is mounted at DIR (by stereod's `mount` message), it
 * copies the injected secrets, the authorized_keys files, jcard.toml and what the guest-metadata
 * listener wrote (env file as md.env, secrets under md-secrets/) into DIR, writes a
 * manifest of their modes and owners, and writes DIR/hello last as the "done" marker. A
 * production image has no such service, so nothing leaves the guest that way there.
 *
 * It also writes DIR/identity (tests/e2e-clone.bats): the hostname, machine-id, eth0's MAC and
 * IPv4 addresses, 32 bytes read from /dev/urandom at that moment, the clocks, the TCP
 * connections of the control port and the kernel's random/vmgenid log lines, so a clone's
 * identity, entropy and time can be checked from the host.
 *
 * Linked as a freeze hook (/etc/stereos/hooks/freeze.d/50-e2e), it appends "hook_freeze" or
 * "hook_thaw" with CLOCK_REALTIME and 16 urandom bytes to /run/e2e-hooks, which the identity
 * report copies: what a hook run by a restore sees of the time and the RNG.
 *
 * usage: e2e-probe DIR | e2e-probe freeze|thaw
 * It waits on /proc/self/mountinfo (POLLPRI fires on every mount table change), so it holds
 * no file open inside DIR and never delays the unmount at shutdown.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
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

/* Append FILE's first line (without the newline) to m after label, or "-" when unreadable. */
static void line_of(FILE *m, const char *label, const char *file)
{
	char b[256] = "-";
	FILE *f = fopen(file, "re");
	if (f) {
		if (!fgets(b, sizeof b, f))
			snprintf(b, sizeof b, "-");
		fclose(f);
	}
	b[strcspn(b, "\n")] = 0;
	fprintf(m, "%s %s\n", label, b);
}

static long long clock_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* DIR/identity: one "key value" per line. */
static void identity(void)
{
	char *text = NULL;
	size_t tlen = 0;
	FILE *m = open_memstream(&text, &tlen);
	if (!m)
		return;
	/* first, so that they are as close as possible to the moment the mount appeared */
	fprintf(m, "realtime_ns %lld\n", clock_ns(CLOCK_REALTIME));
	fprintf(m, "monotonic_ns %lld\n", clock_ns(CLOCK_MONOTONIC));
	fprintf(m, "boottime_ns %lld\n", clock_ns(CLOCK_BOOTTIME));
	unsigned char rnd[32];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && read(fd, rnd, sizeof rnd) == (ssize_t)sizeof rnd) {
		fputs("urandom ", m);
		for (size_t i = 0; i < sizeof rnd; i++)
			fprintf(m, "%02x", rnd[i]);
		fputc('\n', m);
	}
	if (fd >= 0)
		close(fd);
	struct utsname u;
	if (!uname(&u))
		fprintf(m, "hostname %s\n", u.nodename);
	line_of(m, "machine_id", "/etc/machine-id");
	line_of(m, "mac", "/sys/class/net/eth0/address");
	struct ifaddrs *ifa = NULL;
	if (!getifaddrs(&ifa)) {
		for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
			if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || strcmp(i->ifa_name, "eth0"))
				continue;
			char a[INET_ADDRSTRLEN];
			struct in_addr mask = ((struct sockaddr_in *)i->ifa_netmask)->sin_addr;
			inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, a, sizeof a);
			fprintf(m, "addr %s/%d\n", a, __builtin_popcount(mask.s_addr));
		}
		freeifaddrs(ifa);
	}
	/* ACPI interrupts: a vmgenid change arrives as an ACPI notification (a GPE) */
	line_of(m, "acpi_sci", "/sys/firmware/acpi/interrupts/sci");
	DIR *gd = opendir("/sys/firmware/acpi/interrupts");
	for (struct dirent *e; gd && (e = readdir(gd));) {
		char path[300], b[128] = "";
		if (strncmp(e->d_name, "gpe", 3) || strlen(e->d_name) != 5)
			continue;
		snprintf(path, sizeof path, "/sys/firmware/acpi/interrupts/%s", e->d_name);
		FILE *g = fopen(path, "re");
		if (g && fgets(b, sizeof b, g) && atol(b) > 0)
			fprintf(m, "acpi_%s %s", e->d_name, b);
		if (g)
			fclose(g);
	}
	if (gd)
		closedir(gd);
	/* "tcp STATE REMOTE_IP:PORT" for each connection of the control port (1024 = 0x0400);
	 * states are the kernel's numbers in hex (01 established) */
	FILE *t = fopen("/proc/net/tcp", "re");
	char l[512];
	while (t && fgets(l, sizeof l, t)) {
		unsigned lport, raddr, rport, st;
		if (sscanf(l, " %*d: %*x:%x %x:%x %x", &lport, &raddr, &rport, &st) != 4 ||
		    lport != 1024 || st == 0x0a)
			continue;
		struct in_addr ra = {.s_addr = raddr};
		fprintf(m, "tcp %02x %s:%u\n", st, inet_ntoa(ra), rport);
	}
	if (t)
		fclose(t);
	/* the kernel's own account of a restore: the RNG and vmgenid lines of its log */
	fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	for (ssize_t n; fd >= 0 && (n = read(fd, l, sizeof l - 1)) != 0;) {
		if (n < 0) {
			if (errno == EPIPE || errno == EINTR)
				continue;
			break;
		}
		l[n] = 0;
		char *msg = strchr(l, ';');
		if (msg && (strstr(msg, "random") || strstr(msg, "vmgenid") || strstr(msg, "crng")))
			fprintf(m, "kmsg %s", msg + 1);
	}
	if (fd >= 0)
		close(fd);
	FILE *h = fopen("/run/e2e-hooks", "re");
	while (h && fgets(l, sizeof l, h))
		fputs(l, m);
	if (h)
		fclose(h);
	fclose(m);
	int rc = put("identity", text, tlen, 0644);
	free(text);
	if (rc)
		say("writing %s/identity: %s", dir, strerror(-rc));
}

static void report(void)
{
	identity();

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
	/* what stereod's guest-metadata listener wrote (set_env, set_secret) */
	copy_one("/var/run/microvm-guest/env", "md.env", m);
	copy_one("/var/run/microvm-guest/secrets", NULL, m);
	snprintf(sdir, sizeof sdir, "%s/md-secrets", dir);
	mkdir(sdir, 0700);
	d = opendir("/var/run/microvm-guest/secrets");
	for (struct dirent *e; d && (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		char src[512], name[512];
		snprintf(src, sizeof src, "/var/run/microvm-guest/secrets/%.255s", e->d_name);
		snprintf(name, sizeof name, "md-secrets/%.255s", e->d_name);
		copy_one(src, name, m);
	}
	if (d)
		closedir(d);
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

/* As a freeze hook: one line into /run/e2e-hooks. */
static int hook(const char *phase)
{
	unsigned char rnd[16];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	long long now = clock_ns(CLOCK_REALTIME);
	if (fd < 0 || read(fd, rnd, sizeof rnd) != (ssize_t)sizeof rnd)
		return 1;
	close(fd);
	FILE *f = fopen("/run/e2e-hooks", "ae");
	if (!f)
		return 1;
	fprintf(f, "hook_%s %lld ", phase, now);
	for (size_t i = 0; i < sizeof rnd; i++)
		fprintf(f, "%02x", rnd[i]);
	fputc('\n', f);
	return fclose(f) ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && (!strcmp(argv[1], "freeze") || !strcmp(argv[1], "thaw")))
		return hook(argv[1]);
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
