/* modules.c - load the kernel modules listed in /etc/stereos/modules before the network is set
 * up (the rootfs puts virtio_net, 9p, vsock... there when they are not built in). One absolute
 * path to a .ko per line, '#' comments. finit_module(2); EEXIST means built in or loaded
 * already. A module that fails is logged and boot goes on.
 */
#include "init/init.h"
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MODULES_FILE_MAX 65536

/* Returns the number of modules that failed to load (0 when the file is absent). */
int modules_load(const char *file, const char *root)
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
		if (syscall(SYS_finit_module, fd, "", 0) && errno != EEXIST) {
			log_error("loading module", "path=%s error=\"%s\"", path, strerror(errno));
			failed++;
		} else {
			log_info("module loaded", "path=%s", path);
		}
		close(fd);
	}
	buf_free(&b);
	return failed;
}
