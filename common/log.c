/* log.c - one line per event, "level=info msg=\"...\" k=v", to stderr or /dev/kmsg (PID 1).
 * Callers never pass secret values here: the format is for names, paths and counts. */
#include "common/stereo.h"
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

static int kmsg_fd = -1;
static enum log_level min_level = LOG_INFO;

void log_set_level(enum log_level l) { min_level = l; }

void log_set_kmsg(bool on)
{
	if (on && kmsg_fd < 0)
		kmsg_fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC | O_NOCTTY);
	else if (!on && kmsg_fd >= 0) {
		close(kmsg_fd);
		kmsg_fd = -1;
	}
}

void slog(enum log_level l, const char *msg, const char *kvfmt, ...)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	static const int kprio[] = {7, 6, 4, 3};
	if (l < min_level)
		return;
	char line[1024];
	int n = 0;
	if (kmsg_fd >= 0)
		n = snprintf(line, sizeof line, "<%d>%s: ", kprio[l], prog);
	n += snprintf(line + n, sizeof line - n, "level=%s msg=\"", names[l]);
	for (const char *m = msg; *m && n < (int)sizeof line - 8; m++) {
		if (*m == '"' || *m == '\\')
			line[n++] = '\\';
		line[n++] = (unsigned char)*m < 0x20 ? '?' : *m;
	}
	line[n++] = '"';
	if (kvfmt && *kvfmt && n < (int)sizeof line - 2) {
		line[n++] = ' ';
		va_list ap;
		va_start(ap, kvfmt);
		int k = vsnprintf(line + n, sizeof line - n, kvfmt, ap);
		va_end(ap);
		n = k < 0 ? n : (n + k >= (int)sizeof line - 1 ? (int)sizeof line - 2 : n + k);
	}
	line[n++] = '\n';
	if (kmsg_fd >= 0 && write(kmsg_fd, line, n) == n)
		return;
	fwrite(line, 1, n, stderr);
	fflush(stderr);
}
