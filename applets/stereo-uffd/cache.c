/* cache.c - the on-disk chunk cache every stereo-uffd on a host shares (--cache DIR): one
 * directory per object (named by a hash of URL without query, size, ETag and chunk size),
 * holding a sparse data file, a one-byte-per-chunk presence map, the key and a lock file.
 *
 * Coordination, all with file locks the kernel drops when a process dies:
 * - DIR/.lock (flock, exclusive): opening or creating an entry, and eviction;
 * - ENTRY/lock byte c (OFD write lock): chunk c is being written; whoever holds it
 *   downloads, everybody else waits for the presence byte;
 * - ENTRY/lock byte CACHE_HOLD_BYTE (OFD read lock): a server uses the entry; eviction
 *   takes a write lock there and skips entries it cannot get.
 * Crash consistency: a chunk's presence byte is written (and fdatasync'd) only after its
 * bytes are durable, so a crash leaves missing chunks missing, never present and wrong.
 */
#include "uffd.h"
#ifdef CONFIG_STEREO_UFFD_REMOTE
#include "remote.h"
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define CACHE_HOLD_BYTE (1LL << 40)

static uint64_t fnv1a(const char *s, uint64_t h)
{
	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static int ofd_lock(int fd, short type, off_t at, bool wait)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = at, .l_len = 1};
	if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0)
		return 0;
	return errno == EAGAIN || errno == EACCES ? 1 : -errno;
}

static void remove_entry(int cfd, const char *name)
{
	int dfd = openat(cfd, name, O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd >= 0) {
		static const char *const files[] = {"key", "chunks", "data", "lock"};
		for (size_t i = 0; i < ARRAY_SIZE(files); i++)
			unlinkat(dfd, files[i], 0);
		close(dfd);
	}
	unlinkat(cfd, name, AT_REMOVEDIR);
}

struct victim {
	char name[40];
	uint64_t bytes;
	struct timespec used;
};

static int by_use(const void *a, const void *b)
{
	const struct victim *x = a, *y = b;
	if (x->used.tv_sec != y->used.tv_sec)
		return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
	return x->used.tv_nsec < y->used.tv_nsec ? -1 : x->used.tv_nsec > y->used.tv_nsec;
}

/* Under DIR/.lock: drop least recently used entries nobody holds until the cache fits. */
static void evict(int cfd, const char *keep, uint64_t max)
{
	int fd = dup(cfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct victim *v = NULL;
	size_t n = 0, cap = 0;
	uint64_t total = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || strlen(de->d_name) >= sizeof v->name)
			continue;
		char path[300];
		struct stat st, kst;
		snprintf(path, sizeof path, "%s/data", de->d_name);
		if (fstatat(cfd, path, &st, AT_SYMLINK_NOFOLLOW))
			continue;
		total += (uint64_t)st.st_blocks * 512;
		if (!strcmp(de->d_name, keep))
			continue;
		snprintf(path, sizeof path, "%s/key", de->d_name);
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			v = xrealloc(v, cap * sizeof *v);
		}
		snprintf(v[n].name, sizeof v[n].name, "%.39s", de->d_name);
		v[n].bytes = (uint64_t)st.st_blocks * 512;
		v[n].used = fstatat(cfd, path, &kst, AT_SYMLINK_NOFOLLOW) ? (struct timespec){0} : kst.st_mtim;
		n++;
	}
	closedir(d);
	qsort(v, n, sizeof *v, by_use);
	for (size_t i = 0; i < n && total > max; i++) {
		char path[96];
		snprintf(path, sizeof path, "%s/lock", v[i].name);
		int lfd = openat(cfd, path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
		if (lfd < 0)
			continue;
		if (ofd_lock(lfd, F_WRLCK, CACHE_HOLD_BYTE, false) == 0) {
			remove_entry(cfd, v[i].name);
			total -= v[i].bytes;
			log_info("cache evicted", "entry=%s bytes=%llu", v[i].name,
				 (unsigned long long)v[i].bytes);
		}
		close(lfd);
	}
	free(v);
}

static int open_file(int dfd, const char *name, int flags, uint64_t want, bool fresh, char *err,
		     const char *dir)
{
	int fd = openat(dfd, name, flags | O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	struct stat st;
	if (fd < 0 || fstat(fd, &st)) {
		errf(err, "cache %s/%s: %s", dir, name, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (fresh && (ftruncate(fd, 0) || ftruncate(fd, (off_t)want) || fsync(fd))) {
		errf(err, "cache %s/%s: %s", dir, name, strerror(errno));
		close(fd);
		return -1;
	}
	if (!fresh && (uint64_t)st.st_size != want) {
		errf(err, "cache %s/%s: %llu bytes, expected %llu (damaged entry: remove it)", dir, name,
		     (unsigned long long)st.st_size, (unsigned long long)want);
		close(fd);
		return -1;
	}
	return fd;
}

int cache_open(const char *cachedir, const char *key, uint64_t size, uint64_t chunk,
	       uint64_t cache_max, struct centry *e, char *err)
{
	memset(e, 0, sizeof *e);
	e->datafd = e->mapfd = e->lockfd = -1;
	int r = mkdir_p(cachedir, 0700);
	if (r)
		return errf(err, "cache directory %s: %s", cachedir, strerror(-r));
	int cfd = open(cachedir, O_DIRECTORY | O_CLOEXEC);
	if (cfd < 0)
		return errf(err, "cache directory %s: %s", cachedir, strerror(errno));
	int gl = openat(cfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (gl < 0 || flock(gl, LOCK_EX)) {
		errf(err, "cache %s/.lock: %s", cachedir, strerror(errno));
		goto fail_early;
	}
	char name[40];
	snprintf(name, sizeof name, "%016llx%016llx", (unsigned long long)fnv1a(key, 0xcbf29ce484222325ULL),
		 (unsigned long long)fnv1a(key, 0x84222325cbf29ce4ULL));
	struct buf b = {0};
	buf_printf(&b, "%s/%s", cachedir, name);
	e->dir = b.p;
	e->size = size;
	e->chunk = chunk;
	e->nchunks = (size + chunk - 1) / chunk;
	if (mkdirat(cfd, name, 0700) && errno != EEXIST) {
		errf(err, "cache %s: %s", e->dir, strerror(errno));
		goto fail;
	}
	int dfd = openat(cfd, name, O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0) {
		errf(err, "cache %s: %s", e->dir, strerror(errno));
		goto fail;
	}
	/* the key is written last: an entry without it was never finished, and starts over */
	char kpath[96];
	snprintf(kpath, sizeof kpath, "%s/key", e->dir);
	struct buf kb = {0};
	bool fresh = read_file(kpath, &kb, 8192) != 0;
	if (!fresh && strcmp(buf_cstr(&kb), key)) {
		errf(err, "cache %s holds another object (hash collision): remove it", e->dir);
		buf_free(&kb);
		close(dfd);
		goto fail;
	}
	buf_free(&kb);
	if ((e->lockfd = open_file(dfd, "lock", 0, 0, false, err, e->dir)) < 0 ||
	    (e->datafd = open_file(dfd, "data", 0, size, fresh, err, e->dir)) < 0 ||
	    (e->mapfd = open_file(dfd, "chunks", 0, e->nchunks, fresh, err, e->dir)) < 0) {
		close(dfd);
		goto fail;
	}
	if (fresh && (r = atomic_write_at(dfd, "key", key, strlen(key), 0600, (uid_t)-1, (gid_t)-1))) {
		errf(err, "cache %s/key: %s", e->dir, strerror(-r));
		close(dfd);
		goto fail;
	}
	/* least recently used = oldest key mtime */
	int kfd = openat(dfd, "key", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (kfd >= 0) {
		futimens(kfd, NULL);
		close(kfd);
	}
	close(dfd);
	if (ofd_lock(e->lockfd, F_RDLCK, CACHE_HOLD_BYTE, true)) {
		errf(err, "cache %s/lock: %s", e->dir, strerror(errno));
		goto fail;
	}
	if (cache_max)
		evict(cfd, name, cache_max);
	void *p = mmap(NULL, e->nchunks, PROT_READ, MAP_SHARED, e->mapfd, 0);
	if (p == MAP_FAILED) {
		errf(err, "cache %s/chunks: %s", e->dir, strerror(errno));
		goto fail;
	}
	e->present = p;
	close(gl);
	close(cfd);
	return 0;
fail:
	cache_close(e);
fail_early:
	if (gl >= 0)
		close(gl);
	close(cfd);
	return -1;
}

void cache_close(struct centry *e)
{
	if (e->present)
		munmap((void *)e->present, e->nchunks);
	if (e->datafd >= 0)
		close(e->datafd);
	if (e->mapfd >= 0)
		close(e->mapfd);
	if (e->lockfd >= 0)
		close(e->lockfd);   /* drops every lock this server held on the entry */
	free(e->dir);
	memset(e, 0, sizeof *e);
	e->datafd = e->mapfd = e->lockfd = -1;
}

int cache_lock_chunk(struct centry *e, uint64_t c)
{
	return ofd_lock(e->lockfd, F_WRLCK, (off_t)c, false);
}

void cache_unlock_chunk(struct centry *e, uint64_t c)
{
	ofd_lock(e->lockfd, F_UNLCK, (off_t)c, false);
}

int cache_commit_chunk(struct centry *e, uint64_t c, char *err)
{
	static const uint8_t one = 1;
	if (fdatasync(e->datafd))
		return errf(err, "cache %s/data: fdatasync: %s", e->dir, strerror(errno));
	if (pwrite(e->mapfd, &one, 1, (off_t)c) != 1 || fdatasync(e->mapfd))
		return errf(err, "cache %s/chunks: %s", e->dir, strerror(errno));
	return 0;
}
#endif
