/* stereo.h - the one header every applet includes: the shared core's interfaces.
 *
 * Conventions (README.md "Conventions"): exit codes 0 ok, 1 failed/refused, 2 usage, 3 cannot connect or
 * timed out; messages "APPLET: what failed: why" on stderr; functions that can fail return
 * -errno (or -1 with a message in a caller's error buffer) and never exit, except the x*
 * helpers, which are for CLIs and start-up code only.
 */
#ifndef STEREO_H
#define STEREO_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "autoconf.h"

#define STEREO_VERSION "0.1.0"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_CONN = 3 };

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ERRBUF 256

/* main.c */
extern const char *prog;           /* the running applet's name, for messages */
const char *applet_help(const char *name);
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The usage of subcommand cmd ("pack", "secret set") taken from the running applet's help
 * text, its one source: the help line whose words start with cmd, up to the first gap of two
 * spaces, plus following deeper-indented lines that start with '[' or '-' (wrapped options).
 * Printed as "APPLET: usage: APPLET CMD ARGS" like usage_error; returns EXIT_USAGE. */
int usage_cmd(const char *cmd);

/* err.c: CLI messages and "cannot continue" helpers */
void warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void warn_sys(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Register fn(ctx) to run on every exit through die()/die_sys()/x* failures, newest first.
 * At most 8; returns 0 or -ENOSPC. */
int die_hook_add(void (*fn)(void *ctx), void *ctx);
void die_hook_del(void (*fn)(void *ctx), void *ctx);
_Noreturn void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
_Noreturn void die_sys(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
int errf(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int parse_duration_ms(const char *s, long long *ms);
int parse_size(const char *s, unsigned long long *out);

/* log.c: structured one-line logs "level=info msg=\"...\" k=v" */
enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
void log_set_kmsg(bool on);
void log_set_level(enum log_level l);
void slog(enum log_level l, const char *msg, const char *kvfmt, ...)
	__attribute__((format(printf, 3, 4)));
#define log_info(m, ...) slog(LOG_INFO, m, __VA_ARGS__)
#define log_warn(m, ...) slog(LOG_WARN, m, __VA_ARGS__)
#define log_error(m, ...) slog(LOG_ERROR, m, __VA_ARGS__)
#define log_debug(m, ...) slog(LOG_DEBUG, m, __VA_ARGS__)

#include "common/buf.h"
#include "common/json.h"
#include "common/ndjson.h"
#include "common/loop.h"
#include "common/fsutil.h"
#include "common/valid.h"
#include "common/base64.h"
#include "common/sock.h"
#include "common/http.h"
#include "common/proc.h"

#endif
