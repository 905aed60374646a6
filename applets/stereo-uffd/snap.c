/* snap.c - open a snapshot for reading: the header, every layer file it references (found by
 * explicit UUID=FILE, DIR/memfile.<uuid>, or DIR/memfile for a one-layer snapshot), each
 * checked long enough for its mappings and mapped read-only. The header, the directory and
 * any layer may be an http(s) URL instead (remote.c, with CONFIG_STEREO_UFFD_REMOTE): a
 * remote layer is mapped from its cache file, whose chunks arrive on demand.
 */
#include "uffd.h"
#ifdef CONFIG_STEREO_UFFD_REMOTE
#include "remote.h"
#endif
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- remote options ------------------------------------------------------------------------ */
#ifdef CONFIG_STEREO_UFFD_REMOTE
static struct remote_opts ropts = {.cache_dir = "/var/cache/stereo-uffd", .chunk = 4ULL << 20,
				   .concurrency = 8, .timeout_ms = 30000};
static bool remote_on;

static int remote_start(char *err)
{
	if (remote_on)
		return 0;
	if (remote_init(&ropts, err))
		return -1;
	remote_on = true;
	return 0;
}
#endif

int snap_remote_opt(int code, const char *arg)
{
	if (code < 1001 || code > 1006)
		return -1;
#ifdef CONFIG_STEREO_UFFD_REMOTE
	unsigned long long v;
	long long ms;
	char *end;
	switch (code) {
	case 1001:
		ropts.cache_dir = arg;
		break;
	case 1002:
		if (parse_size(arg, &v) || v < 65536 || v > (1ULL << 30) || (v & (v - 1)))
			return usage_error("--chunk: '%s' is not a power of two from 64K to 1G", arg);
		ropts.chunk = v;
		break;
	case 1003:
		if (parse_size(arg, &v))
			return usage_error("--cache-max: bad size '%s'", arg);
		ropts.cache_max = v;
		break;
	case 1004:
		v = strtoull(arg, &end, 10);
		if (*end || !*arg || v < 1 || v > 256)
			return usage_error("--fetch-concurrency: '%s' is not a number from 1 to 256", arg);
		ropts.concurrency = (int)v;
		break;
	case 1005:
		if (parse_duration_ms(arg, &ms) || ms <= 0)
			return usage_error("--fetch-timeout: bad duration '%s'", arg);
		ropts.timeout_ms = ms;
		break;
	case 1006:
		ropts.cacert = arg;
		break;
	}
	return 0;
#else
	(void)arg;
	return usage_error("remote layers (--cache, --chunk, ...) are not compiled into this binary "
			   "(CONFIG_STEREO_UFFD_REMOTE: make host)");
#endif
}

int snap_fetch(struct layer *L, uint64_t off, uint64_t len, char *err)
{
#ifdef CONFIG_STEREO_UFFD_REMOTE
	if (L->remote)
		return remote_wait(L->remote, off, len, err);
#else
	(void)L, (void)off, (void)len, (void)err;
#endif
	return 0;
}

void snap_prefetch(struct layer *L, uint64_t off, uint64_t len)
{
#ifdef CONFIG_STEREO_UFFD_REMOTE
	if (L->remote)
		remote_prefetch(L->remote, off, len);
#else
	(void)L, (void)off, (void)len;
#endif
}

bool snap_ready(struct layer *L, uint64_t off, uint64_t len, bool urgent)
{
#ifdef CONFIG_STEREO_UFFD_REMOTE
	if (L->remote)
		return remote_ready(L->remote, off, len, urgent);
#else
	(void)L, (void)off, (void)len, (void)urgent;
#endif
	return true;
}

#ifdef CONFIG_STEREO_UFFD_REMOTE
uint64_t snap_chunk_size(void) { return ropts.chunk; }
long long snap_fetch_timeout_ms(void) { return ropts.timeout_ms; }
int snap_eventfd(void) { return remote_on ? remote_eventfd() : -1; }
int snap_poll(char *err) { return remote_on ? remote_poll(err) : 0; }
#else
uint64_t snap_chunk_size(void) { return 1ULL << 62; }
long long snap_fetch_timeout_ms(void) { return 0; }
int snap_eventfd(void) { return -1; }
int snap_poll(char *err) { (void)err; return 0; }
#endif

char *snap_header_path(const char *dir)
{
#ifdef CONFIG_STEREO_UFFD_REMOTE
	if (snap_is_url(dir))
		return url_join(dir, "memfile.header");
#endif
	struct buf b = {0};
	buf_printf(&b, "%s/memfile.header", dir);
	return b.p;
}

static __attribute__((unused)) int no_remote(const char *what, char *err)
{
	return errf(err, "%s: http(s) URLs need a build with remote layers (CONFIG_STEREO_UFFD_REMOTE: make host)",
		    what);
}

#ifdef CONFIG_STEREO_UFFD_REMOTE
/* A layer by URL: opened (probed, cache entry, mapped), or -ENOENT when not found. */
static int open_remote(struct layer *L, const char *url, char *err)
{
	if (remote_start(err))
		return -1;
	int r = remote_open(url, &L->remote, err);
	if (r)
		return r;
	L->path = xstrdup(remote_url(L->remote));
	L->fd = remote_fd(L->remote);
	L->size = remote_size(L->remote);
	L->map = remote_map(L->remote);
	return 0;
}
#endif

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
	if (dir && snap_is_url(dir)) {
#ifdef CONFIG_STEREO_UFFD_REMOTE
		struct buf b = {0};
		buf_printf(&b, "memfile.%s", u);
		char *url = url_join(dir, b.p);
		buf_free(&b);
		return url;
#else
		no_remote(dir, err);
		return NULL;
#endif
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
	int hr;
	if (snap_is_url(hdr_path)) {
#ifdef CONFIG_STEREO_UFFD_REMOTE
		struct buf hb = {0};
		s->hdr_path = url_public(hdr_path);
		hr = remote_start(err) || remote_get(hdr_path, HDR_MAX_BYTES, &hb, err) ||
		     hdr_parse((const uint8_t *)hb.p, hb.len, s->hdr_path, &s->h, err);
		buf_free(&hb);
#else
		s->hdr_path = xstrdup(hdr_path);
		hr = no_remote(hdr_path, err);
#endif
	} else {
		s->hdr_path = xstrdup(hdr_path);
		hr = hdr_read(hdr_path, &s->h, err);
	}
	if (hr) {
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
		if (snap_is_url(L->path)) {
#ifdef CONFIG_STEREO_UFFD_REMOTE
			if (s->h.block > ropts.chunk) {
				errf(err, "--chunk %llu is smaller than the snapshot's block size %llu",
				     (unsigned long long)ropts.chunk, (unsigned long long)s->h.block);
				goto fail;
			}
			char *url = L->path;
			L->path = NULL;
			int r = open_remote(L, url, err);
			/* a single-layer snapshot may name its one diff file plainly */
			if (r == -ENOENT && dir && snap_is_url(dir) && nbuilds == 1) {
				char *plain = url_join(dir, "memfile");
				r = open_remote(L, plain, err);
				free(plain);
			}
			free(url);
			if (r)
				goto fail;
			continue;
#else
			no_remote(L->path, err);
			goto fail;
#endif
		}
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
#ifdef CONFIG_STEREO_UFFD_REMOTE
	/* the fetcher thread stops before any layer it may be filling goes away */
	if (remote_on) {
		remote_shutdown();
		remote_on = false;
	}
	for (size_t k = 0; k < s->nl; k++) {
		if (s->l[k].remote) {
			remote_close(s->l[k].remote);
			s->l[k].remote = NULL;
			s->l[k].map = NULL;
			s->l[k].fd = -1;
		}
	}
#endif
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
