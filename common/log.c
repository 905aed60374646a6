/* log.c - one line per event, "level=info msg=\"...\" k=v", to stderr or /dev/kmsg (PID 1).
 * Callers never pass secret values here: the format is for names, paths and counts. Values
 * are escaped and quoted as needed (format_kv), so peer-supplied text cannot forge fields. */
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

/* Append s[0..n) escaped for a quoted log value: \" \\ \n \r \t, other control bytes \xHH. */
static void put_escaped(struct buf *b, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		if (c == '"' || c == '\\') {
			buf_putc(b, '\\');
			buf_putc(b, c);
		} else if (c == '\n') {
			buf_puts(b, "\\n");
		} else if (c == '\r') {
			buf_puts(b, "\\r");
		} else if (c == '\t') {
			buf_puts(b, "\\t");
		} else if (c < 0x20 || c == 0x7f) {
			buf_printf(b, "\\x%02x", c);
		} else {
			buf_putc(b, c);
		}
	}
}

static bool needs_quotes(const char *s, size_t n)
{
	if (!n)
		return true;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		if (c <= 0x20 || c == '"' || c == '\\' || c == '=' || c == 0x7f)
			return true;
	}
	return false;
}

/* Format one conversion spec (spec[0..len), starting at '%') with its argument. */
static void format_one(struct buf *v, const char *spec, size_t len, va_list *ap)
{
	char f[32];
	if (len >= sizeof f) {
		buf_puts(v, "?");
		return;
	}
	memcpy(f, spec, len);
	f[len] = 0;
	char conv = spec[len - 1];
	int stars = 0;
	int star[2] = {0, 0};
	for (size_t i = 1; i < len - 1; i++)
		if (spec[i] == '*' && stars < 2)
			star[stars++] = va_arg(*ap, int);
	const char *lm = spec + 1;
	while (strchr("-+ #0123456789.*", *lm))
		lm++;
	/* the length modifier decides the argument's type */
	enum { T_INT, T_LONG, T_LLONG, T_SIZE, T_INTMAX, T_PTRDIFF } t = T_INT;
	if (lm[0] == 'l' && lm[1] == 'l')
		t = T_LLONG;
	else if (lm[0] == 'l')
		t = T_LONG;
	else if (lm[0] == 'z')
		t = T_SIZE;
	else if (lm[0] == 'j')
		t = T_INTMAX;
	else if (lm[0] == 't')
		t = T_PTRDIFF;
#define ONE(arg)                                                                                   \
	(stars == 2 ? buf_printf(v, f, star[0], star[1], arg)                                      \
	 : stars == 1 ? buf_printf(v, f, star[0], arg)                                              \
		      : buf_printf(v, f, arg))
	switch (conv) {
	case 's':
		ONE(va_arg(*ap, const char *));
		break;
	case 'p':
		ONE(va_arg(*ap, void *));
		break;
	case 'f': case 'g': case 'e': case 'F': case 'G': case 'E':
		ONE(va_arg(*ap, double));
		break;
	case 'c':
		ONE(va_arg(*ap, int));
		break;
	case 'd': case 'i':
		switch (t) {
		case T_LONG: ONE(va_arg(*ap, long)); break;
		case T_LLONG: ONE(va_arg(*ap, long long)); break;
		case T_SIZE: ONE(va_arg(*ap, ssize_t)); break;
		case T_INTMAX: ONE(va_arg(*ap, intmax_t)); break;
		case T_PTRDIFF: ONE(va_arg(*ap, ptrdiff_t)); break;
		default: ONE(va_arg(*ap, int)); break;
		}
		break;
	default:   /* u x X o */
		switch (t) {
		case T_LONG: ONE(va_arg(*ap, unsigned long)); break;
		case T_LLONG: ONE(va_arg(*ap, unsigned long long)); break;
		case T_SIZE: ONE(va_arg(*ap, size_t)); break;
		case T_INTMAX: ONE(va_arg(*ap, uintmax_t)); break;
		case T_PTRDIFF: ONE(va_arg(*ap, ptrdiff_t)); break;
		default: ONE(va_arg(*ap, unsigned)); break;
		}
		break;
	}
#undef ONE
}

/* The key=value part: every value a conversion produced is escaped, and quoted when it
 * holds a space, a quote, a backslash, '=' or a control byte (or is empty), so a value from a
 * peer (a secret's name, a path) can never forge another field or another line. A value the
 * format already quotes (a conversion inside "...") is escaped only. */
static void format_kv(struct buf *b, const char *fmt, va_list ap)
{
	va_list aq;
	va_copy(aq, ap);
	struct buf v = {0};
	bool in_quotes = false;   /* inside a "..." of the format itself */
	for (const char *p = fmt; *p;) {
		if (*p != '%') {
			if (*p == '"')
				in_quotes = !in_quotes;
			buf_putc(b, *p++);
			continue;
		}
		if (p[1] == '%') {
			buf_putc(b, '%');
			p += 2;
			continue;
		}
		size_t len = 1 + strspn(p + 1, "-+ #0123456789.*hlzjtL");
		if (!p[len]) {
			buf_puts(b, p);
			break;
		}
		len++;   /* the conversion letter */
		v.len = 0;
		format_one(&v, p, len, &aq);
		if (in_quotes || !needs_quotes(v.p ? v.p : "", v.len)) {
			put_escaped(b, v.p ? v.p : "", v.len);
		} else {
			buf_putc(b, '"');
			put_escaped(b, v.p, v.len);
			buf_putc(b, '"');
		}
		p += len;
	}
	buf_free(&v);
	va_end(aq);
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
		struct buf kv = {0};
		va_list ap;
		va_start(ap, kvfmt);
		format_kv(&kv, kvfmt, ap);
		va_end(ap);
		size_t k = kv.len < sizeof line - 2 - n - 1 ? kv.len : sizeof line - 2 - n - 1;
		line[n++] = ' ';
		memcpy(line + n, kv.p ? kv.p : "", k);
		n += k;
		buf_free(&kv);
	}
	line[n++] = '\n';
	if (kmsg_fd >= 0 && write(kmsg_fd, line, n) == n)
		return;
	fwrite(line, 1, n, stderr);
	fflush(stderr);
}
