/* fuzz_metadata.c - libFuzzer target: the guest-metadata request decoder of stereod
 * (applets/stereod/metadata.c: JSON, ops, env keys and values, secret names, strict base64)
 * on any line, with its writes going to a private temp directory. Checks: exactly one reply
 * line of valid JSON with "id" and "ok"; and
 * base64 is canonical: a successful decode re-encodes to the same text, and every encoding
 * decodes back to its bytes. */
#include "applets/stereod/metadata.c"
#include <dirent.h>
#include <sys/stat.h>

/* metadata_start / metadata_stop are not reached from here */
char *path_under_root(const struct stereod *d, const char *path) { abort(); }
int stereod_listen(struct stereod *d, unsigned vsock_port, const char *tcp_addr, char *where,
		   size_t wsz, char *err) { abort(); }
struct ndjson_server *ndjson_server_new(struct stereod *d, int listen_fd,
					const struct ndjson_proto *proto, void *ctx) { abort(); }
void ndjson_server_free(struct ndjson_server *s) { abort(); }
struct buf *ndjson_out(struct nconn *c) { abort(); }

static struct metadata md = {.env_dirfd = -1, .secrets_fd = -1};

static char tmpdir[64];

static void empty_dir(int dfd)
{
	DIR *d = fdopendir(dup(dfd));
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(dfd, e->d_name, 0);
	if (d)
		closedir(d);
}

static void cleanup(void)
{
	empty_dir(md.secrets_fd);
	unlinkat(md.env_dirfd, "secrets", AT_REMOVEDIR);
	empty_dir(md.env_dirfd);
	rmdir(tmpdir);
}

static void setup(void)
{
	char dir[] = "/dev/shm/fuzz-metadata.XXXXXX";   /* tmpfs: the writes fsync */
	if (!mkdtemp(dir))
		abort();
	static char envpath[64];
	snprintf(envpath, sizeof envpath, "%s/env", dir);
	md.env_file = envpath;
	md.env_name = "env";
	md.env_dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	mkdirat(md.env_dirfd, "secrets", 0700);
	md.secrets_fd = openat(md.env_dirfd, "secrets", O_RDONLY | O_DIRECTORY);
	md.secrets_dir = "secrets";
	if (md.env_dirfd < 0 || md.secrets_fd < 0)
		abort();
	snprintf(tmpdir, sizeof tmpdir, "%s", dir);
	atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (md.env_dirfd < 0)
		setup();
	log_set_level(LOG_ERROR);
	struct buf out = {0};
	answer(&md, &out, (const char *)data, size);
	if (!out.len || out.p[out.len - 1] != '\n' || memchr(out.p, '\n', out.len - 1))
		__builtin_trap();
	struct json j;
	char err[ERRBUF];
	if (json_parse(&j, out.p, out.len - 1, true, err) || json_kind(&j, json_get(&j, 0, "id")) != JSON_STRING ||
	    json_kind(&j, json_get(&j, 0, "ok")) != JSON_BOOL)
		__builtin_trap();
	json_free(&j);
	buf_free(&out);
	/* base64: canonical both ways */
	struct buf dec = {0}, enc = {0}, back = {0};
	if (!base64_decode((const char *)data, size, &dec, err)) {
		base64_encode(dec.p ? dec.p : "", dec.len, &enc);
		if (enc.len != size || memcmp(enc.p, data, size))
			__builtin_trap();
	}
	buf_free(&enc);
	base64_encode(data, size, &enc);
	if (base64_decode(enc.p, enc.len, &back, err) || back.len != size || memcmp(back.p ? back.p : "", data, size))
		__builtin_trap();
	buf_free(&dec);
	buf_free(&enc);
	buf_free(&back);
	return 0;
}
