/* uffd.h - stereo-uffd's internal interfaces: the snapshot header (e2b/Wrenn V3), an opened
 * snapshot (header + mapped layer files), the packer shared by pack/layer/merge, the
 * Firecracker handshake and the page server.
 *
 * Described in docs/stereo-uffd.md. Nothing here is used outside applets/stereo-uffd/.
 */
#ifndef STEREO_UFFD_H
#define STEREO_UFFD_H
#include "common/stereo.h"
#include <getopt.h>

#define PAGE_4K 4096ULL
#define PAGE_2M 2097152ULL
#define HDR_META_SIZE 64
#define HDR_MAP_SIZE 40
#define HDR_VERSION 3
#define HDR_MAX_BYTES (64ULL << 20)   /* 1.6M mappings: far above any real header */

/* ---- header.c: the on-disk header ------------------------------------------------------ */
struct mapping {
	uint64_t off;            /* byte offset in guest memory */
	uint64_t len;            /* bytes, multiple of the block size */
	uint8_t build[16];       /* layer UUID; all-zero = zero-fill */
	uint64_t store;          /* byte offset inside that layer's diff file */
};

struct snap_hdr {
	uint64_t version, block, size, gen;
	uint8_t build[16], base[16];
	struct mapping *m;
	size_t n, cap;
};

/* Parse and validate (sorted, contiguous, covering [0, size), aligned). name is for errors. */
int hdr_parse(const uint8_t *p, size_t len, const char *name, struct snap_hdr *h, char *err);
int hdr_read_fd(int fd, const char *path, struct snap_hdr *h, char *err);
int hdr_encode(const struct snap_hdr *h, struct buf *out);
/* Index of the mapping holding guest offset off (off < size). */
size_t hdr_find(const struct snap_hdr *h, uint64_t off);
/* Append a mapping, merging it into the previous one when contiguous and same source. */
void hdr_push(struct snap_hdr *h, uint64_t off, uint64_t len, const uint8_t build[16], uint64_t store);
void hdr_free(struct snap_hdr *h);

bool uuid_is_nil(const uint8_t u[16]);
void uuid_format(const uint8_t u[16], char out[37]);
int uuid_parse(const char *s, uint8_t u[16]);
void uuid_random(uint8_t u[16]);

/* ---- snap.c: a snapshot opened for reading -------------------------------------------- */
struct rlayer;
struct remote_opts;

struct layer {
	uint8_t id[16];
	char *path;               /* a file, or a URL (query string elided) when remote */
	struct rlayer *remote;    /* an object-storage layer (remote.c); map is its cache file */
	int fd;
	uint64_t size;            /* file size when opened */
	const uint8_t *map;       /* read-only mapping of the whole file (NULL when empty) */
	uint64_t served;          /* guest bytes this layer serves (inspect) */
};

struct snap {
	char *hdr_path;
	struct snap_hdr h;
	struct layer *l;
	size_t nl;
	int *src;                 /* per mapping: index into l, or -1 for zero-fill */
};

/* Layer files: "UUID=FILE" specs first, then memfile.<uuid>, then memfile when the header
 * references one layer, both inside the layer directory (dir, else the header's directory)
 * and never through a symlink. hdr_path NULL = DIR/memfile.header (inside DIR). Every file
 * must be a regular file (opened non-blocking); every referenced layer long enough. */
int snap_open(struct snap *s, const char *hdr_path, const char *dir, char **specs, int nspecs,
	      char *err);
void snap_close(struct snap *s);
char *snap_header_path(const char *dir);   /* DIR/memfile.header, caller frees */
static inline bool snap_is_url(const char *s)
{
	return !strncmp(s, "http://", 7) || !strncmp(s, "https://", 8);
}
/* Options for layers given by URL, shared by every subcommand that reads a snapshot. */
#define SNAP_REMOTE_OPTIONS                                       \
	{"cache", required_argument, NULL, 1001},                 \
	{"chunk", required_argument, NULL, 1002},                 \
	{"cache-max", required_argument, NULL, 1003},             \
	{"fetch-concurrency", required_argument, NULL, 1004},     \
	{"fetch-timeout", required_argument, NULL, 1005},         \
	{"cacert", required_argument, NULL, 1006}
/* 0: handled; -1: not one of them; else a usage error's exit code (already printed) */
int snap_remote_opt(int code, const char *arg);
/* Fetch the bytes [off, off+len) of layer L and wait for them (cat): 0 or -1 + err;
 * nothing to do for a local layer. */
int snap_fetch(struct layer *L, uint64_t off, uint64_t len, char *err);
/* Queue them in the background (prefetch); nothing for a local layer. */
void snap_prefetch(struct layer *L, uint64_t off, uint64_t len);
/* This thread's layer_get/layer_read calls are for a demand fault (a remote chunk they
 * need jumps the fetch queue) until it says false again. */
void snap_set_urgent(bool on);
/* path as it may be printed: a URL without its query string (which may hold a signature) */
char *snap_shown(const char *path);
/* Are they readable now (a local layer: always; a remote one: its chunks are cached)? */
bool snap_cached(const struct layer *L, uint64_t off, uint64_t len);
/* The unit a remote layer arrives in (0: every layer is local) */
uint64_t snap_chunk(const struct snap *s);
/* -1 without remote layers; else readable when a chunk arrived or failed */
int snap_eventfd(void);
/* clears the eventfd: -1 + err when some chunk failed for good */
int snap_poll(char *err);

/* The page server reads layer bytes only through these two (one place, so a layer that is
 * not local can join): LAYER_WAIT = "not available yet": the caller defers the fault and
 * retries it when the server is woken (serve_wake in serve.h); LAYER_ERROR = err says why
 * (fatal for the clone that needed the bytes). */
enum layer_avail { LAYER_READY, LAYER_WAIT, LAYER_ERROR };
/* A pointer to [off, off+len) of layer k, valid until snap_close (the COPY source). */
enum layer_avail layer_get(struct snap *s, size_t k, uint64_t off, uint64_t len, const uint8_t **p,
			   char *err);
/* [off, off+len) of layer k copied into buf. */
enum layer_avail layer_read(struct snap *s, size_t k, void *buf, uint64_t off, uint64_t len, char *err);

/* ---- pack.c: writing layers ------------------------------------------------------------ */
bool block_is_zero(const uint8_t *p, size_t n);

/* Appends blocks to a new diff file and builds its mappings. With keep_holes, zero blocks
 * produce no mapping (layer: "unchanged"); otherwise they map to the zero build. */
struct packer {
	int dirfd;
	char tmpname[96], name[64];
	int fd;                   /* -1 until the first data block */
	uint8_t build[16];
	uint64_t block, store;
	bool keep_holes;
	struct snap_hdr *out;
	uint64_t zero_bytes, data_bytes;
};
int packer_init(struct packer *p, int dirfd, uint64_t block, bool keep_holes, struct snap_hdr *out,
		char *err);
int packer_feed(struct packer *p, uint64_t off, const uint8_t *data, size_t len, char *err);
/* fsync + rename the diff file into place (no file when nothing was written). */
int packer_commit(struct packer *p, char *err);
void packer_abort(struct packer *p);
/* commit, then the header; the new layer is removed again when the header cannot be written */
int packer_publish(struct packer *p, const struct snap_hdr *h, char *err);
int pack_stream(struct packer *p, int fd, const char *name, uint64_t size, char *err);
int pack_range(struct packer *p, int fd, const char *name, uint64_t from, uint64_t to, char *err);
int parse_block_size(const char *s, uint64_t *out);
/* fsync'd atomic header write to dirfd/memfile.header. */
int write_header_at(int dirfd, const struct snap_hdr *h, char *err);
int open_outdir(const char *dir, char *err);

int cmd_pack(int argc, char **argv);
int cmd_layer(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_cat(int argc, char **argv);
int cmd_serve(int argc, char **argv);

/* ---- handshake.c: Firecracker's one message --------------------------------------------- */
struct fc_region {
	uint64_t base, size, offset;
};

struct peer {
	pid_t pid;
	int pidfd;                /* -1 when the kernel gave none */
	int sock;
};

struct handshake {
	struct fc_region r[64];
	size_t n;
	uint64_t page;
	bool has_page_size;       /* Firecracker >= 1.12: keeps the socket open until it exits */
	int uffd;
};

/* The listening socket and the inode it created, so exit removes only our own socket. */
struct hs_listener {
	int fd;
	const char *path;
	dev_t dev;
	ino_t ino;
};
/* Refuses a socket at path that accepts connections ("in use"), replaces a stale one. */
int hs_listen(struct hs_listener *l, const char *path, mode_t mode, gid_t gid, char *err);
/* Closes the socket; unlinks path only if it is still the inode we bound. */
void hs_unlisten(struct hs_listener *l);
/* One pending connection, identified: 1 = got one (p filled), 0 = none pending, -1 = error
 * (p->sock >= 0 when the peer is known: it must be killed). */
int hs_accept(int lfd, struct peer *p, char *err);
/* The one message, non-blocking: 0 = received and valid (h filled, h->uffd ours), 1 = not
 * yet, 2 = closed without sending anything (a probe: no uffd, nobody waits on us), -1 = a
 * violation (err). buf: HS_MAX_MSG bytes of scratch. */
#define HS_MAX_MSG (256 * 1024)
int hs_recv(struct peer *p, char *buf, struct handshake *h, char *err);
/* The region JSON alone (also the fuzz target). */
int hs_parse_regions(const char *s, size_t len, struct handshake *h, char *err);
/* SIGKILL the peer: 1 = killed, 0 = it had already gone. */
int peer_kill(struct peer *p);
/* Has the peer exited (its pidfd readable)? false when unknown. */
bool peer_gone(const struct peer *p);

#endif
