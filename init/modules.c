/* modules.c - load the kernel modules listed in /etc/stereos/modules before the network is set
 * up (the rootfs puts virtio_net, 9p, vsock, virtio_mmio... there when they are not built in).
 * One absolute path to a .ko per line, '#' comments. finit_module(2); EEXIST means built in or
 * loaded already. A module that fails is logged and boot goes on.
 *
 * Module parameters: the kernel applies "NAME.param=value" words of its command line to
 * built-in drivers only; for a module, whoever loads it must pass them (modprobe reads
 * /proc/cmdline for that). init does the same, so that e.g. a Firecracker-style
 * "virtio_mmio.device=4K@0xd0000000:5" reaches a virtio_mmio built as a module.
 */
#include "init/init.h"
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MODULES_FILE_MAX 65536
#define MODULE_PARAMS_MAX 2048   /* the x86 kernel command line is at most 2048 bytes */

/* Module names treat '-' and '_' alike (the kernel and kmod do). */
static bool modname_eq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char x = a[i] == '-' ? '_' : a[i], y = b[i] == '-' ? '_' : b[i];
		if (x != y || !x)
			return false;
	}
	return true;
}

/* The "param=value" words of CMDLINE addressed to module NAME ("NAME.param=value"), space
 * separated, into OUT. Words split on blanks outside double quotes, as the kernel splits them;
 * the quotes stay (finit_module's parser strips them). Words after "--" are init's arguments,
 * not the kernel's. Returns 0, or -1 when they do not fit in CAP. */
static int module_params(const char *cmdline, const char *name, char *out, size_t cap)
{
	size_t nlen = strlen(name), used = 0;
	*out = 0;
	for (const char *p = cmdline; p && *p;) {
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		const char *w = p;
		bool quoted = false;
		while (*p && (quoted || !(*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))) {
			if (*p == '"')
				quoted = !quoted;
			p++;
		}
		size_t wn = (size_t)(p - w);
		if (wn == 2 && !memcmp(w, "--", 2))
			break;
		if (wn <= nlen + 1 || w[nlen] != '.' || !modname_eq(w, name, nlen))
			continue;
		size_t pn = wn - nlen - 1;
		if (used + !!used + pn >= cap)
			return -1;
		if (used)
			out[used++] = ' ';
		memcpy(out + used, w + nlen + 1, pn);
		used += pn;
		out[used] = 0;
	}
	return 0;
}

/* Returns the number of modules that failed to load (0 when the file is absent). CMDLINE (the
 * kernel command line, or NULL) supplies module parameters. */
int modules_load(const char *file, const char *root, const char *cmdline)
{
	struct buf b = {0};
	int rc = read_file(file, &b, MODULES_FILE_MAX);
	if (rc) {
		if (rc != -ENOENT)
			log_error("reading module list", "path=%s error=\"%s\"", file, strerror(-rc));
		buf_free(&b);
		return rc == -ENOENT ? 0 : 1;
	}
	int failed = 0, lineno = 0;
	char *rest = (char *)buf_cstr(&b), *line;
	while ((line = strsep(&rest, "\n"))) {
		lineno++;
		while (*line == ' ' || *line == '\t')
			line++;
		char *e = line + strlen(line);
		while (e > line && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
			*--e = 0;
		if (!*line || *line == '#')
			continue;
		if (*line != '/') {
			log_error("module path is not absolute", "path=%s line=%d", line, lineno);
			failed++;
			continue;
		}
		char path[PATH_MAX];
		snprintf(path, sizeof path, "%s%s", root, line);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			log_error("opening module", "path=%s error=\"%s\"", path, strerror(errno));
			failed++;
			continue;
		}
		/* the module's name is its file name without ".ko" (Debian's files are named so) */
		char name[256], params[MODULE_PARAMS_MAX];
		const char *base = strrchr(line, '/') + 1;
		snprintf(name, sizeof name, "%.*s", (int)strcspn(base, "."), base);
		if (module_params(cmdline, name, params, sizeof params)) {
			log_error("module parameters too long, loading without them", "path=%s", path);
			*params = 0;
		}
		if (syscall(SYS_finit_module, fd, params, 0) && errno != EEXIST) {
			log_error("loading module", "path=%s params=\"%s\" error=\"%s\"", path, params,
				  strerror(errno));
			failed++;
		} else if (*params) {
			log_info("module loaded", "path=%s params=\"%s\"", path, params);
		} else {
			log_info("module loaded", "path=%s", path);
		}
		close(fd);
	}
	buf_free(&b);
	return failed;
}
