/* early.c - what only the real PID 1 does, once, before anything else: the API filesystems,
 * /dev/console on fds 0-2, logging to /dev/kmsg, oom_score_adj -1000 and the hostname from
 * /etc/hostname. Each step logs its failure and boot goes on (a kernel with a feature missing
 * must still run its services).
 */
#include "init/init.h"
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

struct early_mount {
	const char *src, *target, *type;
	unsigned long flags;
	const char *data;
	bool optional;   /* only when the target directory exists */
};

static const struct early_mount mounts[] = {
	{"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, false},
	{"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, false},
	{"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", false},
	{"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666", false},
	{"shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", false},
	{"run", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", false},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, true},
};

static bool mounted(const char *target)
{
	struct stat a, b;
	char parent[PATH_MAX];
	snprintf(parent, sizeof parent, "%s/..", target);
	return !stat(target, &a) && !stat(parent, &b) && a.st_dev != b.st_dev;
}

static void mount_api_fs(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(mounts); i++) {
		const struct early_mount *m = &mounts[i];
		struct stat st;
		if (m->optional && stat(m->target, &st))
			continue;
		if (mounted(m->target))
			continue;   /* the kernel (devtmpfs.mount=1) or an initramfs did it already */
		mkdir(m->target, 0755);
		if (mount(m->src, m->target, m->type, m->flags, m->data))
			log_error("mount", "target=%s type=%s error=\"%s\"", m->target, m->type,
				  strerror(errno));
	}
}

/* fds 0, 1 and 2 on /dev/console, so services' output reaches the serial console. */
static void console(void)
{
	int fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return;
	for (int i = 0; i < 3; i++)
		dup2(fd, i);
	if (fd > 2)
		close(fd);
}

void set_hostname_from_file(const struct init_opts *o)
{
	struct buf b = {0};
	if (!read_file(o->hostname_file, &b, 4096)) {
		const char *h = buf_cstr(&b);
		size_t n = strcspn(h, " \t\r\n#");
		if (n && n <= 64 && sethostname(h, n))
			log_error("sethostname", "error=\"%s\"", strerror(errno));
	}
	buf_free(&b);
}

/* /dev/kmsg rate-limits user space writes (printk.devkmsg=ratelimit, the default) to a burst
 * of 10 per 5 s, which loses most of a boot's log; "on" unless the command line locked it. */
static void kmsg_unlimited(void)
{
	int fd = open("/proc/sys/kernel/printk_devkmsg", O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "on\n", 3) != 3)
			log_debug("printk_devkmsg stays as it is", "error=\"%s\"", strerror(errno));
		close(fd);
	}
}

void early_boot(const struct init_opts *o)
{
	mount_api_fs();
	console();
	kmsg_unlimited();
	log_set_kmsg(true);
	umask(022);
	setsid();
	/* ctrl-alt-del becomes SIGINT to init instead of an immediate reboot */
	reboot(RB_DISABLE_CAD);
	int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "-1000", 5) != 5)
		log_warn("setting oom_score_adj", "error=\"%s\"", strerror(errno));
	if (fd >= 0)
		close(fd);
	if (!getenv("PATH"))
		setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
	set_hostname_from_file(o);
	mkdir_p("/run/stereos", 0755);
}
