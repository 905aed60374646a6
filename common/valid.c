/* valid.c - name and path validation (see valid.h). */
#include "common/stereo.h"

int valid_file_name(const char *s, size_t len, char *err)
{
	if (!len)
		return errf(err, "name is empty");
	if (len > 255)
		return errf(err, "name is longer than 255 bytes");
	if (memchr(s, 0, len) || strlen(s) != len)
		return errf(err, "name contains a NUL byte");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = s[i];
		if (c == '/')
			return errf(err, "name must not contain '/'");
		if (c < 0x20 || c == 0x7f)
			return errf(err, "name contains a control character");
	}
	if (!strcmp(s, ".") || !strcmp(s, ".."))
		return errf(err, "name must not be '.' or '..'");
	if (strstr(s, ".."))
		return errf(err, "name must not contain '..'");
	if (s[0] == '.')
		return errf(err, "name must not start with '.'");
	return 0;
}

int path_clean(const char *in, size_t len, char *out, size_t outsz, char *err)
{
	if (!len)
		return errf(err, "path is empty");
	if (in[0] != '/')
		return errf(err, "path must be absolute");
	if (len >= outsz || len >= 4096)
		return errf(err, "path is too long");
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)in[i] < 0x20 || in[i] == 0x7f)
			return errf(err, "path contains a control character or NUL");
	size_t o = 0;
	size_t i = 0;
	out[o++] = '/';
	while (i < len) {
		while (i < len && in[i] == '/')
			i++;
		size_t s = i;
		while (i < len && in[i] != '/')
			i++;
		size_t n = i - s;
		if (!n || (n == 1 && in[s] == '.'))
			continue;
		if (n == 2 && in[s] == '.' && in[s + 1] == '.') {
			while (o > 1 && out[o - 1] != '/')
				o--;
			if (o > 1)
				o--;   /* drop the slash before the removed component */
			continue;
		}
		if (o > 1)
			out[o++] = '/';
		memcpy(out + o, in + s, n);
		o += n;
	}
	out[o] = 0;
	return 0;
}

bool path_within(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	if (n == 1 && dir[0] == '/')
		return true;
	return !strncmp(path, dir, n) && (path[n] == 0 || path[n] == '/');
}
