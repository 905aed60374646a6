/* metadata.c - microvm-runtime's guest metadata protocol, served beside the control plane: a
 * host pushes per-VM environment variables and secrets after boot or restore.
 *
 * Its own NDJSON listener (vsock port 5555 by default, or TCP) on the shared server code of
 * ndjson_api.c (same framing, limits, in-order replies and peer rules), with its own line
 * handler and a three-op table:
 *   {"op":"set_env","id":ID,"env":{"K":"V",...}}            "" as a value deletes K
 *   {"op":"set_secret","id":ID,"name":N,"value_b64":B64}
 *   {"op":"ping","id":ID}
 * Each line gets {"id":ID,"ok":true} or {"id":ID,"ok":false,"error":"..."}; ID is "" when the
 * line is not a request at all ("invalid request json: ..."), as the reference daemon answers.
 *
 * set_env merges (the host client's documented contract; the reference daemon rewrites the
 * file with only the keys sent): every key and value is checked first, then the env file is
 * read, merged, sorted and replaced atomically (KEY=VALUE lines, 0600 in a 0700 directory), so
 * a bad key anywhere changes nothing. set_secret decodes strict base64 and writes the bytes
 * verbatim with the control plane's atomic writer; decoded values are wiped, never logged.
 * docs/stereod.md, "Guest metadata listener".
 */
#include "stereod.h"
#ifdef CONFIG_STEREOD_METADATA
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define ENV_FILE_MAX (1024 * 1024)
#define ENV_MAX 4096               /* variables in the merged file */
#define SECRET_NAME_MAX 255

struct metadata {
	struct stereod *d;
	char *env_file, *secrets_dir;
	int env_dirfd, secrets_fd;
	const char *env_name;          /* the env file's name inside env_dirfd */
	struct ndjson_server *server;
};

/* ---- replies --------------------------------------------------------------------------- */

/* A JSON string as serde_json writes it: only '"', '\\' and control characters escaped. */
static void serde_quote(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	buf_putc(b, '"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" :
				c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
		if (e)
			buf_puts(b, e);
		else if (c < 0x20) {
			char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			buf_append(b, u, 6);
		} else
			buf_putc(b, c);
	}
	buf_putc(b, '"');
}

static void reply(struct buf *out, const struct buf *id, const char *error)
{
	buf_puts(out, "{\"id\":");
	serde_quote(out, id->p ? id->p : "", id->len);
	if (error) {
		buf_puts(out, ",\"ok\":false,\"error\":");
		serde_quote(out, error, strlen(error));
		buf_puts(out, "}\n");
	} else {
		buf_puts(out, ",\"ok\":true}\n");
	}
}

/* ---- set_env --------------------------------------------------------------------------- */

static bool env_key_ok(const char *k, size_t n)
{
	if (!n || !(k[0] == '_' || (k[0] >= 'A' && k[0] <= 'Z') || (k[0] >= 'a' && k[0] <= 'z')))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!(k[i] == '_' || (k[i] >= 'A' && k[i] <= 'Z') || (k[i] >= 'a' && k[i] <= 'z') ||
		      (k[i] >= '0' && k[i] <= '9')))
			return false;
	return true;
}

struct kv {
	char *line;                    /* "KEY=VALUE", wiped when freed */
	size_t klen, len;
};

static int kv_cmp(const void *a, const void *b)
{
	const struct kv *x = a, *y = b;
	size_t n = x->klen < y->klen ? x->klen : y->klen;
	int r = memcmp(x->line, y->line, n);
	return r ? r : (x->klen > y->klen) - (x->klen < y->klen);
}

static void kv_free(struct kv *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		explicit_bzero(v[i].line, v[i].len);
		free(v[i].line);
	}
	free(v);
}

/* Set (or with an empty value, delete) key in the table. */
static int kv_set(struct kv **v, size_t *n, const char *k, size_t kl, const char *val, size_t vl)
{
	size_t i = 0;
	while (i < *n && !((*v)[i].klen == kl && !memcmp((*v)[i].line, k, kl)))
		i++;
	if (i < *n) {
		explicit_bzero((*v)[i].line, (*v)[i].len);
		free((*v)[i].line);
		(*v)[i] = (*v)[--*n];
	}
	if (!vl)
		return 0;
	if (*n >= ENV_MAX)
		return -1;
	/* once ready the daemon never exits on a failed allocation: the request fails instead */
	char *line = malloc(kl + 1 + vl + 1);
	struct kv *nv = line ? realloc(*v, (*n + 1) * sizeof **v) : NULL;
	if (!nv) {
		free(line);
		return -2;
	}
	*v = nv;
	memcpy(line, k, kl);
	line[kl] = '=';
	memcpy(line + kl + 1, val, vl);
	line[kl + 1 + vl] = 0;
	(*v)[(*n)++] = (struct kv){line, kl, kl + 1 + vl};
	return 0;
}

/* Read the current env file into v (a missing file is empty; lines that are not KEY=VALUE
 * with a valid key are dropped: the file is ours). */
static int env_load(struct metadata *md, struct kv **v, size_t *n, char *err)
{
	int fd = openat(md->env_dirfd, md->env_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : errf(err, "reading %s: %s", md->env_file, strerror(errno));
	struct buf b = {0};
	char chunk[4096];
	ssize_t r;
	while ((r = read(fd, chunk, sizeof chunk)) > 0 && b.len + r <= ENV_FILE_MAX)
		buf_append(&b, chunk, r);
	explicit_bzero(chunk, sizeof chunk);
	close(fd);
	if (r < 0 || b.len > ENV_FILE_MAX) {
		buf_wipe(&b);
		return errf(err, "reading %s: %s", md->env_file, r < 0 ? strerror(errno) : "too big");
	}
	for (size_t i = 0; i < b.len;) {
		char *nl = memchr(b.p + i, '\n', b.len - i);
		size_t l = nl ? (size_t)(nl - (b.p + i)) : b.len - i;
		char *eq = memchr(b.p + i, '=', l);
		if (eq && env_key_ok(b.p + i, eq - (b.p + i)))
			kv_set(v, n, b.p + i, eq - (b.p + i), eq + 1, l - (eq - (b.p + i)) - 1);
		i += l + 1;
	}
	buf_wipe(&b);
	return 0;
}

static int op_set_env(struct metadata *md, const struct json *j, char *err)
{
	int env = json_get(j, 0, "env");
	if (env < 0)
		return errf(err, "invalid request json: missing field `env`");
	if (json_kind(j, env) != JSON_OBJECT)
		return errf(err, "invalid request json: env must be an object of strings");
	/* validate the whole batch before touching anything */
	int n = j->tok[env].size, i = env + 1;
	struct buf k = {0}, val = {0};
	int rc = 0;
	for (int e = 0; e < n && !rc; e++, i = json_next(j, i + 1)) {
		if (json_str(j, i, &k, JSON_STR_ANY, err) || json_kind(j, i + 1) != JSON_STRING ||
		    json_str(j, i + 1, &val, JSON_STR_ANY, err)) {
			rc = errf(err, "invalid request json: env values must be strings");
			break;
		}
		struct buf q = {0};
		go_quote(&q, k.p ? k.p : "", k.len);
		if (!env_key_ok(buf_cstr(&k), k.len))
			rc = errf(err, "invalid env key %.200s: must match [A-Za-z_][A-Za-z0-9_]*", buf_cstr(&q));
		else if (memchr(buf_cstr(&val), '\n', val.len))
			rc = errf(err, "env value for %.200s contains newline", buf_cstr(&q));
		else if (memchr(buf_cstr(&val), 0, val.len))
			rc = errf(err, "env value for %.200s contains a NUL byte", buf_cstr(&q));
		buf_free(&q);
	}
	struct kv *v = NULL;
	size_t nv = 0;
	if (!rc)
		rc = env_load(md, &v, &nv, err);
	i = env + 1;
	for (int e = 0; e < n && !rc; e++, i = json_next(j, i + 1)) {
		json_str(j, i, &k, JSON_STR_ANY, err);
		json_str(j, i + 1, &val, JSON_STR_ANY, err);
		int r = kv_set(&v, &nv, buf_cstr(&k), k.len, buf_cstr(&val), val.len);
		if (r)
			rc = r == -2 ? errf(err, "out of memory")
				     : errf(err, "too many variables (max %d)", ENV_MAX);
	}
	buf_free(&k);
	buf_wipe(&val);
	if (!rc) {
		if (nv)
			qsort(v, nv, sizeof *v, kv_cmp);
		struct buf file = {0};
		for (size_t x = 0; x < nv; x++) {
			buf_append(&file, v[x].line, v[x].len);
			buf_putc(&file, '\n');
		}
		int w = atomic_write_at(md->env_dirfd, md->env_name, file.p ? file.p : "", file.len, 0600,
					(uid_t)-1, (gid_t)-1);
		if (w)
			rc = errf(err, "writing %s: %s", md->env_file, strerror(-w));
		else
			log_info("guest metadata env written", "vars=%zu sent=%d", nv, n);
		buf_wipe(&file);
	}
	kv_free(v, nv);
	return rc;
}

/* ---- set_secret ------------------------------------------------------------------------ */

static int op_set_secret(struct metadata *md, const struct json *j, char *err)
{
	int ni = json_get(j, 0, "name"), vi = json_get(j, 0, "value_b64");
	if (ni < 0 || vi < 0)
		return errf(err, "invalid request json: missing field `%s`", ni < 0 ? "name" : "value_b64");
	if (json_kind(j, ni) != JSON_STRING || json_kind(j, vi) != JSON_STRING)
		return errf(err, "invalid request json: `%s` must be a string",
			    json_kind(j, ni) != JSON_STRING ? "name" : "value_b64");
	struct buf name = {0}, q = {0}, bytes = {0};
	int rc = json_str(j, ni, &name, JSON_STR_ANY, err);
	bool ok = !rc && name.len && name.len <= SECRET_NAME_MAX;
	for (size_t i = 0; ok && i < name.len; i++) {
		char c = name.p[i];
		ok = c == '_' || c == '-' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		     (c >= '0' && c <= '9');
	}
	if (!rc && !ok) {
		go_quote(&q, name.p ? name.p : "", name.len > 64 ? 64 : name.len);
		rc = errf(err, "invalid secret name %s%s: must match [A-Za-z0-9_-]+ and be at most %d bytes",
			  buf_cstr(&q), name.len > 64 ? "..." : "", SECRET_NAME_MAX);
	}
	struct buf b64 = {0};
	if (!rc)
		rc = json_str(j, vi, &b64, JSON_STR_ANY, err);
	if (!rc)
		rc = base64_decode(buf_cstr(&b64), b64.len, &bytes, err);
	buf_wipe(&b64);
	if (!rc) {
		int w = atomic_write_at(md->secrets_fd, name.p, bytes.p ? bytes.p : "", bytes.len, 0600,
					(uid_t)-1, (gid_t)-1);
		if (w)
			rc = errf(err, "writing secret %s: %s", name.p, strerror(-w));
		else
			log_info("guest metadata secret written", "name=%s bytes=%zu", name.p, bytes.len);
	}
	buf_wipe(&bytes);
	buf_free(&name);
	buf_free(&q);
	return rc;
}

/* ---- the line handler ------------------------------------------------------------------ */

static const char *const ops[] = {"set_env", "set_secret", "ping"};

/* Decode, run and answer one request line: exactly one reply line appended to out. */
static void answer(struct metadata *md, struct buf *out, const char *line, size_t len)
{
	char err[ERRBUF] = "", msg[ERRBUF + 32];
	struct buf id = {0}, op = {0};
	struct json j;
	if (json_parse(&j, line, len, true, err)) {
		snprintf(msg, sizeof msg, "invalid request json: %s", err);
		reply(out, &id, msg);
		return;
	}
	int ii = json_get(&j, 0, "id"), oi = json_get(&j, 0, "op");
	int rc = 0;
	if (ii < 0 || json_kind(&j, ii) != JSON_STRING || json_str(&j, ii, &id, JSON_STR_ANY, err)) {
		id.len = 0;
		rc = errf(msg, ii < 0 ? "invalid request json: missing field `id`"
				      : "invalid request json: `id` must be a string");
	} else if (oi < 0 || json_kind(&j, oi) != JSON_STRING || json_str(&j, oi, &op, JSON_STR_ANY, err)) {
		rc = errf(msg, oi < 0 ? "invalid request json: missing field `op`"
				      : "invalid request json: `op` must be a string");
	} else if (!strcmp(buf_cstr(&op), "set_env") && op.len == 7) {
		rc = op_set_env(md, &j, msg);
	} else if (!strcmp(buf_cstr(&op), "set_secret") && op.len == 10) {
		rc = op_set_secret(md, &j, msg);
	} else if (!strcmp(buf_cstr(&op), "ping") && op.len == 4) {
		rc = 0;
	} else {
		struct buf q = {0};
		go_quote(&q, op.p ? op.p : "", op.len > 64 ? 64 : op.len);
		rc = errf(msg, "unknown op %s, expected one of `%s`, `%s`, `%s`", buf_cstr(&q), ops[0],
			  ops[1], ops[2]);
		buf_free(&q);
	}
	reply(out, &id, rc ? msg : NULL);
	json_free(&j);
	buf_free(&id);
	buf_free(&op);
}

static void md_line(struct nconn *c, char *line, size_t len, void *ctx)
{
	answer(ctx, ndjson_out(c), line, len);
}

static void md_error(struct nconn *c, const char *msg, void *ctx)
{
	struct buf id = {0};
	reply(ndjson_out(c), &id, msg);
}

static const struct ndjson_proto metadata_proto = {"metadata", md_line, md_error};

/* ---- start and stop -------------------------------------------------------------------- */

static int make_private_dir(const char *path, char *err)
{
	int r = mkdir_p(path, 0700);
	if (r)
		return errf(err, "creating %s: %s", path, strerror(-r));
	if (chmod(path, 0700))
		return errf(err, "setting mode of %s: %s", path, strerror(errno));
	return 0;
}

int metadata_start(struct stereod *d, char *err)
{
	/* auto: this listener follows the control plane's transport, and opens no TCP port
	 * nobody asked for: vsock when the control plane is on vsock, else off */
	const char *mode = d->md_mode;
	if (!strcmp(mode, "auto"))
		mode = !strcmp(d->listen_mode, "vsock") ||
		       (!strcmp(d->listen_mode, "auto") && vsock_available()) ? "vsock" : "off";
	if (!strcmp(mode, "off")) {
		log_info("guest metadata listener off", "metadata_listen_mode=%s", d->md_mode);
		return 0;
	}
	struct metadata *md = xcalloc(1, sizeof *md);
	md->d = d;
	md->env_dirfd = md->secrets_fd = -1;
	md->env_file = d->md_env_file ? xstrdup(d->md_env_file)
				      : path_under_root(d, "/var/run/microvm-guest/env");
	md->secrets_dir = d->md_secrets_dir ? xstrdup(d->md_secrets_dir)
					    : path_under_root(d, "/var/run/microvm-guest/secrets");
	d->metadata = md;
	char *slash = strrchr(md->env_file, '/');
	if (!slash || !slash[1])
		return errf(err, "--metadata-env-file %s is not a file path", md->env_file);
	md->env_name = slash + 1;
	*slash = 0;
	int rc = make_private_dir(*md->env_file ? md->env_file : "/", err);
	if (!rc && (md->env_dirfd = open(*md->env_file ? md->env_file : "/",
					 O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		rc = errf(err, "opening %s: %s", md->env_file, strerror(errno));
	*slash = '/';
	if (rc || make_private_dir(md->secrets_dir, err))
		return -1;
	md->secrets_fd = open(md->secrets_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (md->secrets_fd < 0)
		return errf(err, "opening %s: %s", md->secrets_dir, strerror(errno));
	atomic_tmp_sweep(md->env_dirfd);   /* temp files a killed writer left */
	atomic_tmp_sweep(md->secrets_fd);
	/* stereod_listen chooses vsock or TCP by d->listen_mode: give it ours for this call */
	char where[128];
	const char *cp_mode = d->listen_mode;
	d->listen_mode = mode;
	int fd = stereod_listen(d, d->md_vsock_port, d->md_addr, where, sizeof where, err);
	d->listen_mode = cp_mode;
	if (fd < 0)
		return -1;
	md->server = ndjson_server_new(d, fd, &metadata_proto, md);
	if (!md->server) {
		close(fd);
		return errf(err, "starting the metadata server: out of memory");
	}
	log_info("guest metadata listening", "addr=%s env=%s secrets=%s", where, md->env_file,
		 md->secrets_dir);
	return 0;
}

void metadata_stop(struct stereod *d)
{
	struct metadata *md = d->metadata;
	if (!md)
		return;
	ndjson_server_free(md->server);
	if (md->env_dirfd >= 0)
		close(md->env_dirfd);
	if (md->secrets_fd >= 0)
		close(md->secrets_fd);
	free(md->env_file);
	free(md->secrets_dir);
	free(md);
	d->metadata = NULL;
}
#endif
