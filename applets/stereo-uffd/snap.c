/* snap.c - open a snapshot for reading: the header, every layer file it references (found by
 * explicit UUID=FILE, DIR/memfile.<uuid>, or DIR/memfile for a one-layer snapshot), each
 * checked long enough for its mappings and mapped read-only.
 */
#include "uffd.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

char *snap_header_path(const char *dir)
{
	struct buf b = {0};
	buf_printf(&b, "%s/memfile.header", dir);
	return b.p;
}

static int find_layer(struct snap *s, const uint8_t id[16])
{
	for (size_t i = 0; i < s->nl; i++)
		if (!memcmp(s->l[i].id, id, 16))
			return (int)i;
	return -1;
}

static char *layer_path(const uint8_t id[16], const char *dir, char **specs, int nspecs,
			size_t nbuilds, char *err)
{
	char u[37];
	uuid_format(id, u);
	for (int i = 0; i < nspecs; i++) {
		const char *eq = strchr(specs[i], '=');
		uint8_t sid[16];
		char tmp[40];
		if (!eq || eq - specs[i] != 36)
			continue;
		memcpy(tmp, specs[i], 36);
		tmp[36] = 0;
		if (!uuid_parse(tmp, sid) && !memcmp(sid, id, 16))
			return xstrdup(eq + 1);
	}
	if (dir) {
		struct buf b = {0};
		buf_printf(&b, "%s/memfile.%s", dir, u);
		if (!access(b.p, F_OK))
			return b.p;
		buf_free(&b);
		/* a single-layer snapshot may name its one diff file plainly */
		if (nbuilds == 1) {
			buf_printf(&b, "%s/memfile", dir);
			if (!access(b.p, F_OK))
				return b.p;
			buf_free(&b);
		}
		errf(err, "missing layer %s: neither %s/memfile.%s nor a --layer for it", u, dir, u);
		return NULL;
	}
	errf(err, "missing layer %s: no --layer %s=FILE given", u, u);
	return NULL;
}

int snap_open(struct snap *s, const char *hdr_path, const char *dir, char **specs, int nspecs,
	      char *err)
{
	memset(s, 0, sizeof *s);
	for (int i = 0; i < nspecs; i++) {
		const char *eq = strchr(specs[i], '=');
		uint8_t id[16];
		char tmp[40];
		if (!eq || eq - specs[i] != 36 || !eq[1])
			return errf(err, "--layer %s: expected UUID=FILE", specs[i]);
		memcpy(tmp, specs[i], 36);
		tmp[36] = 0;
		if (uuid_parse(tmp, id))
			return errf(err, "--layer %s: '%s' is not a UUID", specs[i], tmp);
	}
	s->hdr_path = xstrdup(hdr_path);
	if (hdr_read(hdr_path, &s->h, err)) {
		free(s->hdr_path);
		s->hdr_path = NULL;
		return -1;
	}
	s->src = xcalloc(s->h.n, sizeof *s->src);
	s->l = xcalloc(s->h.n, sizeof *s->l);
	size_t nbuilds = 0;
	for (size_t i = 0; i < s->h.n; i++) {
		const struct mapping *m = &s->h.m[i];
		if (uuid_is_nil(m->build)) {
			s->src[i] = -1;
			continue;
		}
		int k = find_layer(s, m->build);
		if (k < 0) {
			k = (int)s->nl++;
			memcpy(s->l[k].id, m->build, 16);
			s->l[k].fd = -1;
			nbuilds++;
		}
		s->src[i] = k;
	}
	for (size_t k = 0; k < s->nl; k++) {
		struct layer *L = &s->l[k];
		L->path = layer_path(L->id, dir, specs, nspecs, nbuilds, err);
		if (!L->path)
			goto fail;
		L->fd = open(L->path, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (L->fd < 0 || fstat(L->fd, &st)) {
			errf(err, "opening layer %s: %s", L->path, strerror(errno));
			goto fail;
		}
		if (!S_ISREG(st.st_mode)) {
			errf(err, "layer %s is not a regular file", L->path);
			goto fail;
		}
		L->size = (uint64_t)st.st_size;
		if (L->size) {
			void *p = mmap(NULL, L->size, PROT_READ, MAP_SHARED, L->fd, 0);
			if (p == MAP_FAILED) {
				errf(err, "mapping layer %s: %s", L->path, strerror(errno));
				goto fail;
			}
			L->map = p;
		}
	}
	for (size_t i = 0; i < s->h.n; i++) {
		const struct mapping *m = &s->h.m[i];
		if (s->src[i] < 0)
			continue;
		struct layer *L = &s->l[s->src[i]];
		L->served += m->len;
		if (m->store + m->len > L->size) {
			errf(err, "layer %s is truncated: %llu bytes, mapping %zu (offset %llu) needs %llu",
			     L->path, (unsigned long long)L->size, i, (unsigned long long)m->off,
			     (unsigned long long)(m->store + m->len));
			goto fail;
		}
	}
	return 0;
fail:
	snap_close(s);
	return -1;
}

void snap_close(struct snap *s)
{
	for (size_t k = 0; k < s->nl; k++) {
		if (s->l[k].map)
			munmap((void *)s->l[k].map, s->l[k].size);
		if (s->l[k].fd >= 0)
			close(s->l[k].fd);
		free(s->l[k].path);
	}
	free(s->l);
	free(s->src);
	free(s->hdr_path);
	hdr_free(&s->h);
	memset(s, 0, sizeof *s);
}
