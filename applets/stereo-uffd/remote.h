/* remote.h - snapshot layers read from object storage: the shared on-disk chunk cache
 * (cache.c) and the HTTP(S) fetcher (remote.c). Built with CONFIG_STEREO_UFFD_REMOTE only.
 * See docs/stereo-uffd.md "Snapshots in object storage".
 */
#ifndef STEREO_UFFD_REMOTE_H
#define STEREO_UFFD_REMOTE_H
#include "uffd.h"

/* ---- cache.c: one cached object ------------------------------------------------------------
 * CACHE/<hash>/ holds `key` (the text the hash is of: URL without its query string, object
 * size, ETag, chunk size), `data` (sparse, the object's size), `chunks` (one byte per chunk,
 * 1 = present and durable) and `lock` (byte c: OFD write lock while chunk c is being
 * written; byte CACHE_HOLD_BYTE: a read lock per server holding the entry). */
struct centry {
	char *dir;
	int datafd, mapfd, lockfd;
	const volatile uint8_t *present;   /* the `chunks` file, mapped shared read-only */
	uint64_t size, chunk, nchunks;
};

int cache_open(const char *cachedir, const char *key, uint64_t size, uint64_t chunk,
	       uint64_t cache_max, struct centry *e, char *err);
void cache_close(struct centry *e);
static inline bool cache_present(const struct centry *e, uint64_t c)
{
	return e->present[c] == 1;
}
/* 0: we hold chunk c's write lock; 1: another server holds it; -errno */
int cache_lock_chunk(struct centry *e, uint64_t c);
void cache_unlock_chunk(struct centry *e, uint64_t c);
/* The chunk's bytes are written: make them durable, then mark the chunk present. */
int cache_commit_chunk(struct centry *e, uint64_t c, char *err);

/* ---- remote.c: layers by URL ----------------------------------------------------------------- */
struct remote_opts {
	const char *cache_dir, *cacert;
	uint64_t chunk, cache_max;
	int concurrency;
	long long timeout_ms;
};

struct rlayer;

bool is_url(const char *s);
/* URL with NAME appended to its path (before any query string), caller frees */
char *url_join(const char *base, const char *name);
/* URL without its query string (which may hold a signature), for messages and cache keys */
char *url_public(const char *url);

int remote_init(const struct remote_opts *o, char *err);
void remote_shutdown(void);
/* GET a small object whole (a header): -ENOENT on 404. */
int remote_get(const char *url, size_t max, struct buf *out, char *err);
/* Probe the object's size and ETag, open its cache entry, map the cache file read-only.
 * -ENOENT on 404. */
int remote_open(const char *url, struct rlayer **out, char *err);
uint64_t remote_size(const struct rlayer *R);
const uint8_t *remote_map(const struct rlayer *R);
int remote_fd(const struct rlayer *R);
const char *remote_url(const struct rlayer *R);   /* without the query string */
void remote_close(struct rlayer *R);
/* Are the bytes [off, off+len) of the object in the cache? 0: yes; 1: not yet, their missing
 * chunks are queued (urgent ones at the front, before every background chunk); -1: one of
 * them failed for good (err names the URL, the chunk and why). */
int remote_avail(struct rlayer *R, uint64_t off, uint64_t len, bool urgent, char *err);
/* Are they all in the cache (nothing queued)? */
bool remote_present(const struct rlayer *R, uint64_t off, uint64_t len);
/* Queue every chunk of [off, off+len) in the background (prefetch). */
void remote_prefetch(struct rlayer *R, uint64_t off, uint64_t len);
/* Fetch [off, off+len) and wait for it (cat, verify). */
int remote_wait(struct rlayer *R, uint64_t off, uint64_t len, char *err);
/* Readable when a chunk arrived or failed; read it with remote_poll. */
int remote_eventfd(void);
/* Clears the eventfd; -1 with the message when some chunk failed for good. */
int remote_poll(char *err);
uint64_t remote_chunk_size(void);
#endif
