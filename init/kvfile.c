/* kvfile.c - key=value line reader for init's configuration files (see kvfile.h). */
#include "common/stereo.h"
#include "init/kvfile.h"
#include <ctype.h>

void kv_init(struct kv_iter *it, const char *text, size_t len, const char *path)
{
	it->p = text;
	it->end = text + len;
	it->path = path;
	it->lineno = 0;
}

int kv_next(struct kv_iter *it, char **key, char **value, char *err)
{
	while (it->p < it->end) {
		const char *nl = memchr(it->p, '\n', it->end - it->p);
		size_t ll = nl ? (size_t)(nl - it->p) : (size_t)(it->end - it->p);
		it->lineno++;
		if (ll >= sizeof it->line)
			return errf(err, "%s:%d: line longer than %d bytes", it->path, it->lineno,
				    KV_LINE_MAX - 1);
		memcpy(it->line, it->p, ll);
		it->line[ll] = 0;
		it->p += ll + 1;
		if (memchr(it->line, 0, ll))
			return errf(err, "%s:%d: NUL byte", it->path, it->lineno);
		char *s = it->line;
		while (isspace((unsigned char)*s))
			s++;
		char *e = s + strlen(s);
		while (e > s && isspace((unsigned char)e[-1]))
			*--e = 0;
		if (!*s || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (!eq)
			return errf(err, "%s:%d: expected key=value", it->path, it->lineno);
		char *ke = eq;
		while (ke > s && isspace((unsigned char)ke[-1]))
			ke--;
		*ke = 0;
		char *v = eq + 1;
		while (isspace((unsigned char)*v))
			v++;
		*key = s;
		*value = v;
		return 1;
	}
	return 0;
}
