/* snap.c - open a snapshot for reading: the header, every layer file it references, each
 * checked to be a regular file long enough for its mappings and mapped read-only; and the
 * one place the page server reads layer bytes through (layer_get, layer_read).
 *
 * Which files a snapshot may reference: the snapshot directory's own `memfile.header`,
 * `memfile.<uuid>` and (one layer) `memfile`, resolved inside that directory only (openat2
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS; without openat2, O_NOFOLLOW on a plain name): a
 * crafted directory whose memfile.<uuid> is a symlink to a host file is refused, not served
 * into a guest. Files named by the operator (--header FILE, --layer UUID=FILE) are opened as
 * given. Every file is opened non-blocking and must be a regular file before it is read, so
 * a FIFO in a snapshot directory is an error, not a hang.
 *
 * The header, the directory and any layer may be an http(s) URL instead (remote.c, with
 * CONFIG_STEREO_UFFD_REMOTE): a remote layer is mapped from its cache file, whose chunks
 * arrive on demand; layer_get/layer_read say LAYER_WAIT until they are there.
 */
#include "uffd.h"
#ifdef CONFIG_STEREO_UFFD_REMOTE
#include "remote.h"
#endif
#include <fcntl.h>
#include <libgen.h>
#include <linux/openat2.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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

static __thread bool urgent;   /* per serving thread: a demand fault is being served */

void snap_set_urgent(bool on)
{
	urgent = on;
}

char *snap_shown(const char *path)
{
	size_t q = strcspn(path, "?");
	if (!snap_is_url(path) || !path[q])
		return xstrdup(path);
	struct buf b = {0};
	buf_printf(&b, "%.*s?...", (int)q, path);
	return b.p;
}

bool snap_cached(const struct layer *L, uint64_t off, uint64_t len)
{
#ifdef CONFIG_STEREO_UFFD_REMOTE
	if (L->remote)
		return remote_present(L->remote, off, len);
#else
	(void)L, (void)off, (void)len;
#endif
	return true;
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


#ifdef CONFIG_STEREO_UFFD_REMOTE
int snap_eventfd(void) { return remote_on ? remote_eventfd() : -1; }
uint64_t snap_chunk(const struct snap *s)
{
	for (size_t k = 0; k < s->nl; k++)
		if (s->l[k].remote)
			return ropts.chunk;
	return 0;
}
int snap_poll(char *err) { return remote_on ? remote_poll(err) : 0; }
#else
int snap_eventfd(void) { return -1; }
uint64_t snap_chunk(const struct snap *s) { (void)s; return 0; }
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

/* name inside dirfd, never leaving it and following no symlink; -1 + errno */
static int open_beneath_nofollow(int dirfd, const char *name)
{
	struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY,
			       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
	int fd = (int)syscall(SYS_openat2, dirfd, name, &how, sizeof how);
	if (fd >= 0 || (errno != ENOSYS && errno != EPERM))
		return fd;
	if (strchr(name, '/')) {   /* our names are plain: a slash would leave the directory */
		errno = EXDEV;
		return -1;
	}
	return openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_NOFOLLOW);
}

/* Open path (dirfd < 0: as given; else name beneath dirfd), non-blocking, and check it is a
 * regular file. Returns the fd, or -1 with err. */
static int open_regular(int dirfd, const char *name, const char *shown, const char *what,
			struct stat *st, char *err)
{
	int fd = dirfd < 0 ? open(name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
			   : open_beneath_nofollow(dirfd, name);
	if (fd < 0) {
		if (dirfd >= 0 && (errno == ELOOP || errno == EXDEV))
			return errf(err, "opening %s %s: it is a symlink or leaves the snapshot directory "
				    "(refused: name the file with --layer/--header instead)", what, shown);
		return errf(err, "opening %s %s: %s", what, shown, strerror(errno));
	}
	if (fstat(fd, st)) {
		errf(err, "opening %s %s: %s", what, shown, strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(st->st_mode)) {
		errf(err, "%s %s is not a regular file", what, shown);
		close(fd);
		return -1;
	}
	return fd;
}

#ifdef CONFIG_STEREO_UFFD_REMOTE
/* A layer of a snapshot directory given by URL: URL/memfile.<uuid>, else URL/memfile. */
static int open_remote_dir(struct layer *L, const char *dir, const char *u, size_t nbuilds, char *err)
{
	struct buf b = {0};
	buf_printf(&b, "memfile.%s", u);
	char *url = url_join(dir, b.p);
	buf_free(&b);
	int r = open_remote(L, url, err);
	free(url);
	/* a single-layer snapshot may name its one diff file plainly */
	if (r == -ENOENT && nbuilds == 1) {
		url = url_join(dir, "memfile");
		r = open_remote(L, url, err);
		free(url);
	}
	return r ? -1 : 0;
}
#endif

static int find_layer(struct snap *s, const uint8_t id[16])
{
	for (size_t i = 0; i < s->nl; i++)
		if (!memcmp(s->l[i].id, id, 16))
			return (int)i;
	return -1;
}

/* Opens layer L: an explicit spec, else DIR/memfile.<uuid>, else DIR/memfile. */
static int layer_open(struct layer *L, int dirfd, const char *dir, char **specs, int nspecs,
		      size_t nbuilds, struct stat *st, char *err)
{
	char u[37];
	uuid_format(L->id, u);
	for (int i = 0; i < nspecs; i++) {
		const char *eq = strchr(specs[i], '=');
		uint8_t sid[16];
		char tmp[40];
		if (!eq || eq - specs[i] != 36)
			continue;
		memcpy(tmp, specs[i], 36);
		tmp[36] = 0;
		if (!uuid_parse(tmp, sid) && !memcmp(sid, L->id, 16)) {
			if (snap_is_url(eq + 1)) {
#ifdef CONFIG_STEREO_UFFD_REMOTE
				return open_remote(L, eq + 1, err) ? -1 : 0;
#else
				return no_remote(eq + 1, err);
#endif
			}
			L->path = xstrdup(eq + 1);
			L->fd = open_regular(-1, L->path, L->path, "layer", st, err);
			return L->fd < 0 ? -1 : 0;
		}
	}
	if (dir && snap_is_url(dir)) {
#ifdef CONFIG_STEREO_UFFD_REMOTE
		return open_remote_dir(L, dir, u, nbuilds, err);
#else
		return no_remote(dir, err);
#endif
	}
	if (dirfd < 0)
		return errf(err, "missing layer %s: no --layer %s=FILE given", u, u);
	char name[64];
	const char *names[2] = {name, "memfile"};
	snprintf(name, sizeof name, "memfile.%s", u);
	/* a single-layer snapshot may name its one diff file plainly */
	for (int k = 0; k < (nbuilds == 1 ? 2 : 1); k++) {
		struct stat lst;
		if (fstatat(dirfd, names[k], &lst, AT_SYMLINK_NOFOLLOW) && errno == ENOENT)
			continue;
		struct buf b = {0};
		buf_printf(&b, "%s/%s", dir, names[k]);
		L->path = b.p;
		L->fd = open_regular(dirfd, names[k], L->path, "layer", st, err);
		return L->fd < 0 ? -1 : 0;
	}
	return errf(err, "missing layer %s: neither %s/memfile.%s nor a --layer for it", u, dir, u);
}

int snap_open(struct snap *s, const char *hdr_path, const char *dir, char **specs, int nspecs,
	      char *err)
{
	memset(s, 0, sizeof *s);
	int dirfd = -1, hfd = -1;
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
	/* the layer directory: --dir, else the header's own directory */
	char *hdir = NULL;
	if (!dir && hdr_path) {
		char *d = xstrdup(hdr_path);
		if (snap_is_url(hdr_path))
			d[strcspn(d, "?")] = 0;   /* the query string (a signature) is not a directory */
		hdir = xstrdup(dirname(d));
		free(d);
		dir = hdir;
	}
	struct stat st;
	if (snap_is_url(dir) || (hdr_path && snap_is_url(hdr_path))) {
		/* anything by URL: no directory to open here; a URL header is fetched whole */
		if (!snap_is_url(dir) && (dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 && !hdir) {
			errf(err, "opening snapshot directory %s: %s", dir, strerror(errno));
			goto fail;
		}
		char *hurl = hdr_path && snap_is_url(hdr_path) ? xstrdup(hdr_path) : NULL;
		if (!hurl && !hdr_path)
			hurl = snap_header_path(dir);
		if (hurl) {
#ifdef CONFIG_STEREO_UFFD_REMOTE
			struct buf hb = {0};
			s->hdr_path = url_public(hurl);
			int hr = remote_start(err) || remote_get(hurl, HDR_MAX_BYTES, &hb, err) ||
				 hdr_parse((const uint8_t *)hb.p, hb.len, s->hdr_path, &s->h, err);
			buf_free(&hb);
			free(hurl);
			if (hr)
				goto fail;
#else
			no_remote(hurl, err);
			free(hurl);
			goto fail;
#endif
		} else {
			s->hdr_path = xstrdup(hdr_path);
			hfd = open_regular(-1, hdr_path, hdr_path, "header", &st, err);
			if (hfd < 0 || hdr_read_fd(hfd, s->hdr_path, &s->h, err))
				goto fail;
			close(hfd);
			hfd = -1;
		}
	} else {
		dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dirfd < 0 && !hdir) {
			errf(err, "opening snapshot directory %s: %s", dir, strerror(errno));
			goto fail;
		}
		s->hdr_path = hdr_path ? xstrdup(hdr_path) : snap_header_path(dir);
		hfd = hdr_path ? open_regular(-1, hdr_path, hdr_path, "header", &st, err)
			       : open_regular(dirfd, "memfile.header", s->hdr_path, "header", &st, err);
		if (hfd < 0 || hdr_read_fd(hfd, s->hdr_path, &s->h, err))
			goto fail;
		close(hfd);
		hfd = -1;
	}
#ifdef CONFIG_STEREO_UFFD_REMOTE
	if (s->h.block > ropts.chunk) {
		errf(err, "--chunk %llu is smaller than the snapshot's block size %llu",
		     (unsigned long long)ropts.chunk, (unsigned long long)s->h.block);
		goto fail;
	}
#endif
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
		if (layer_open(L, dirfd, dir, specs, nspecs, nbuilds, &st, err))
			goto fail;
		if (L->remote)
			continue;   /* size and mapping: its object and cache file */
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
	if (dirfd >= 0)
		close(dirfd);
	free(hdir);
	return 0;
fail:
	if (hfd >= 0)
		close(hfd);
	if (dirfd >= 0)
		close(dirfd);
	free(hdir);
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

/* ---- layer access for the page server ---------------------------------------------------- */
/* A remote layer's bytes are readable once their chunks are in the cache: LAYER_WAIT (the
 * fetch is queued) until then, LAYER_ERROR when a chunk failed. A local layer is always ready. */
static enum layer_avail remote_ready(const struct layer *L, uint64_t off, uint64_t len, char *err)
{
#ifdef CONFIG_STEREO_UFFD_REMOTE
	if (L->remote) {
		int r = remote_avail(L->remote, off, len, urgent, err);
		if (r)
			return r > 0 ? LAYER_WAIT : LAYER_ERROR;
	}
#else
	(void)L, (void)off, (void)len, (void)err;
#endif
	return LAYER_READY;
}

enum layer_avail layer_get(struct snap *s, size_t k, uint64_t off, uint64_t len, const uint8_t **p,
			   char *err)
{
	const struct layer *L = &s->l[k];
	enum layer_avail a = remote_ready(L, off, len, err);
	if (a != LAYER_READY)
		return a;
	if (off > L->size || len > L->size - off) {
		errf(err, "layer %s: bytes %llu..%llu lie beyond its %llu bytes", L->path,
		     (unsigned long long)off, (unsigned long long)(off + len), (unsigned long long)L->size);
		return LAYER_ERROR;
	}
	*p = L->map + off;   /* a local file: always there (a truncation shows as EFAULT in the COPY) */
	return LAYER_READY;
}

enum layer_avail layer_read(struct snap *s, size_t k, void *buf, uint64_t off, uint64_t len, char *err)
{
	const struct layer *L = &s->l[k];
	enum layer_avail a = remote_ready(L, off, len, err);
	if (a != LAYER_READY)
		return a;
	/* pread, not the mapping: a layer truncated under us must be an error, not SIGBUS */
	errno = 0;
	if (pread(L->fd, buf, len, (off_t)off) != (ssize_t)len) {
		errf(err, "reading layer %s at %llu: %s", L->path, (unsigned long long)off,
		     errno ? strerror(errno) : "is truncated");
		return LAYER_ERROR;
	}
	return LAYER_READY;
}
