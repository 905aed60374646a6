/* kvfile.h - the line reader shared by init's two key=value formats (service files and
 * /etc/stereos/network): blank lines and '#' comments skipped, spaces around key and value
 * trimmed, errors as "PATH:LINE: why". Parsing only. */
#ifndef INIT_KVFILE_H
#define INIT_KVFILE_H
#include <stddef.h>

#define KV_LINE_MAX 4096

struct kv_iter {
	const char *p, *end, *path;
	int lineno;
	char line[KV_LINE_MAX];
};

void kv_init(struct kv_iter *it, const char *text, size_t len, const char *path);
/* 1 = the next key and value (pointing into it->line, valid until the next call),
 * 0 = no more lines, -1 = a malformed line (err says where and why). */
int kv_next(struct kv_iter *it, char **key, char **value, char *err);
#endif
