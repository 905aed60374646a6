/* err.c - CLI error messages ("APPLET: what failed: why"), x* allocation helpers that exit,
 * the die hooks every exit through die() runs, and small argument parsers (durations, sizes)
 * shared by the applets. */
#include "common/stereo.h"
#include <ctype.h>

const char *prog = "stereo";   /* set by main() to the running applet */

/* What must happen on any exit through die() (toybox's xexit): stereo-uffd kills the VMMs it
 * serves, so no failing path can leave a vCPU waiting. A fixed table: registering never fails. */
#define DIE_HOOKS 8
static struct { void (*fn)(void *); void *ctx; } die_hooks[DIE_HOOKS];
static int ndie_hooks;

int die_hook_add(void (*fn)(void *ctx), void *ctx)
{
	if (ndie_hooks == DIE_HOOKS)
		return -ENOSPC;
	die_hooks[ndie_hooks].fn = fn;
	die_hooks[ndie_hooks].ctx = ctx;
	ndie_hooks++;
	return 0;
}

void die_hook_del(void (*fn)(void *ctx), void *ctx)
{
	for (int i = 0; i < ndie_hooks; i++)
		if (die_hooks[i].fn == fn && die_hooks[i].ctx == ctx) {
			memmove(&die_hooks[i], &die_hooks[i + 1], (size_t)(ndie_hooks - i - 1) * sizeof(die_hooks[0]));
			ndie_hooks--;
			return;
		}
}

/* Run the hooks, newest first, each once (a hook that dies itself does not loop). */
static void run_die_hooks(void)
{
	while (ndie_hooks > 0) {
		ndie_hooks--;
		die_hooks[ndie_hooks].fn(die_hooks[ndie_hooks].ctx);
	}
}

/* Print "APPLET: message" plus a hint to --help, return EXIT_USAGE. */
int usage_error(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help' for more information.\n", prog);
	return EXIT_USAGE;
}

static void vmsg(int errnum, const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: ", prog);
	vfprintf(stderr, fmt, ap);
	if (errnum)
		fprintf(stderr, ": %s", strerror(errnum));
	fputc('\n', stderr);
}

void warnx(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg(0, fmt, ap);
	va_end(ap);
}

void warn_sys(const char *fmt, ...)
{
	int e = errno;
	va_list ap;
	va_start(ap, fmt);
	vmsg(e, fmt, ap);
	va_end(ap);
}

void die(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg(0, fmt, ap);
	va_end(ap);
	run_die_hooks();
	exit(code);
}

void die_sys(int code, const char *fmt, ...)
{
	int e = errno;
	va_list ap;
	va_start(ap, fmt);
	vmsg(e, fmt, ap);
	va_end(ap);
	run_die_hooks();
	exit(code);
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		die(EXIT_FAIL, "out of memory");
	return p;
}

void *xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);
	if (!p)
		die(EXIT_FAIL, "out of memory");
	return p;
}

void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		die(EXIT_FAIL, "out of memory");
	return p;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (!p)
		die(EXIT_FAIL, "out of memory");
	return p;
}

/* Fill a caller's ERRBUF-sized error buffer; returns -1 so callers can "return errf(...)". */
int errf(char *err, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, ERRBUF, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* "500ms", "10s", "2m", "1h", or a bare number of seconds. */
int parse_duration_ms(const char *s, long long *ms)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -EINVAL;
	double mul = 1000;
	if (!strcmp(end, "ms"))
		mul = 1;
	else if (!strcmp(end, "s") || !*end)
		mul = 1000;
	else if (!strcmp(end, "m"))
		mul = 60000;
	else if (!strcmp(end, "h"))
		mul = 3600000;
	else
		return -EINVAL;
	if (v * mul > 1e15)
		return -ERANGE;
	*ms = (long long)(v * mul);
	return 0;
}

/* "4096", "64K", "2M", "1G" (binary multiples). */
int parse_size(const char *s, unsigned long long *out)
{
	char *end;
	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	int shift = 0;
	switch (toupper((unsigned char)*end)) {
	case 0: break;
	case 'K': shift = 10; break;
	case 'M': shift = 20; break;
	case 'G': shift = 30; break;
	default: return -EINVAL;
	}
	if (*end && end[1] && !(toupper((unsigned char)end[1]) == 'B' || toupper((unsigned char)end[1]) == 'I'))
		return -EINVAL;
	if (shift && v > (~0ULL >> shift))
		return -ERANGE;
	*out = v << shift;
	return 0;
}
