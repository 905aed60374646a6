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
 */
#include "uffd.h"
#include <fcntl.h>
#include <libgen.h>
#include <linux/openat2.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

char *snap_header_path(const char *dir)
{
	struct buf b = {0};
	buf_printf(&b, "%s/memfile.header", dir);
	return b.p;
}

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
			L->path = xstrdup(eq + 1);
			L->fd = open_regular(-1, L->path, L->path, "layer", st, err);
			return L->fd < 0 ? -1 : 0;
		}
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
		hdir = xstrdup(dirname(d));
		free(d);
		dir = hdir;
	}
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0 && !hdir) {
		errf(err, "opening snapshot directory %s: %s", dir, strerror(errno));
		goto fail;
	}
	s->hdr_path = hdr_path ? xstrdup(hdr_path) : snap_header_path(dir);
	struct stat st;
	hfd = hdr_path ? open_regular(-1, hdr_path, hdr_path, "header", &st, err)
		       : open_regular(dirfd, "memfile.header", s->hdr_path, "header", &st, err);
	if (hfd < 0 || hdr_read_fd(hfd, s->hdr_path, &s->h, err))
		goto fail;
	close(hfd);
	hfd = -1;
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
enum layer_avail layer_get(struct snap *s, size_t k, uint64_t off, uint64_t len, const uint8_t **p,
			   char *err)
{
	const struct layer *L = &s->l[k];
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
	/* pread, not the mapping: a layer truncated under us must be an error, not SIGBUS */
	errno = 0;
	if (pread(L->fd, buf, len, (off_t)off) != (ssize_t)len) {
		errf(err, "reading layer %s at %llu: %s", L->path, (unsigned long long)off,
		     errno ? strerror(errno) : "is truncated");
		return LAYER_ERROR;
	}
	return LAYER_READY;
}
