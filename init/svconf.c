/* svconf.c - the service file format (docs/init.md): one `key=value` per line in
 * /etc/stereos/services/NAME.conf, '#' comments, keys name, exec, user, env, env-file, after,
 * restart, notify-fd, ready-timeout, stop-timeout, dir. Parsing only: no process is touched here.
 */
#include "init/init.h"
#include "init/kvfile.h"
#include <ctype.h>
#include <dirent.h>

#define SVC_FILE_MAX 65536
#define LINE_MAX_LEN 4096

const char *restart_name(enum restart_policy p)
{
	return p == RESTART_ALWAYS ? "always" : p == RESTART_ON_FAILURE ? "on-failure" : "never";
}

static char *store(struct svc_def *d, const char *s, size_t n)
{
	if (d->strlen + n + 1 > sizeof d->str)
		return NULL;
	char *p = d->str + d->strlen;
	memcpy(p, s, n);
	p[n] = 0;
	d->strlen += n + 1;
	return p;
}

static bool valid_svc_name(const char *s, size_t n)
{
	if (!n || n >= SVC_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("-_.@", s[i]))
			return false;
	return s[0] != '.';
}

/* Split v into argv words: blanks separate, '...' is literal, "..." allows \" and \\. */
static int split_argv(struct svc_def *d, const char *v, char *err)
{
	char word[LINE_MAX_LEN];
	const char *p = v;
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		size_t n = 0;
		while (*p && *p != ' ' && *p != '\t') {
			if (*p == '\'' || *p == '"') {
				char q = *p++;
				while (*p && *p != q) {
					if (q == '"' && *p == '\\' && (p[1] == '"' || p[1] == '\\'))
						p++;
					word[n++] = *p++;
				}
				if (!*p)
					return errf(err, "unterminated quote in exec");
				p++;
			} else {
				word[n++] = *p++;
			}
		}
		if (d->nargv == SVC_ARGV_MAX)
			return errf(err, "exec has more than %d words", SVC_ARGV_MAX);
		if (!(d->argv[d->nargv++] = store(d, word, n)))
			return errf(err, "service definition too long");
	}
	d->argv[d->nargv] = NULL;
	return 0;
}

/* user=NAME or user=UID[:GID]; names come from passwd_file (no NSS in a static binary). */
static int parse_user(struct svc_def *d, const char *v, const char *passwd_file, char *err)
{
	char *end;
	if (isdigit((unsigned char)*v)) {
		unsigned long uid = strtoul(v, &end, 10), gid = uid;
		if (*end == ':')
			gid = strtoul(end + 1, &end, 10);
		if (*end || uid > 65534 * 65536UL || gid > 65534 * 65536UL)
			return errf(err, "bad user '%s' (NAME or UID[:GID])", v);
		d->uid = uid;
		d->gid = gid;
		d->has_user = true;
		d->user = store(d, v, strlen(v));
		return d->user ? 0 : errf(err, "service definition too long");
	}
	struct buf b = {0};
	int rc = read_file(passwd_file, &b, 1 << 20);
	if (rc) {
		buf_free(&b);
		return errf(err, "user '%s': reading %s: %s", v, passwd_file, strerror(-rc));
	}
	size_t vl = strlen(v);
	const char *line = buf_cstr(&b);
	rc = errf(err, "user '%s' not found in %s", v, passwd_file);
	while (*line) {
		const char *nl = strchr(line, '\n');
		size_t ll = nl ? (size_t)(nl - line) : strlen(line);
		/* name:pw:uid:gid:gecos:home:shell */
		if (ll > vl && !memcmp(line, v, vl) && line[vl] == ':') {
			char tmp[1024];
			snprintf(tmp, sizeof tmp, "%.*s", (int)ll, line);
			char *f[7] = {0}, *s = tmp;
			for (int i = 0; i < 7 && s; i++) {
				f[i] = s;
				s = strchr(s, ':');
				if (s)
					*s++ = 0;
			}
			if (f[3] && f[5]) {
				d->uid = strtoul(f[2], NULL, 10);
				d->gid = strtoul(f[3], NULL, 10);
				d->has_user = true;
				d->user = store(d, v, vl);
				d->home = store(d, f[5], strlen(f[5]));
				rc = d->user && d->home ? 0 : errf(err, "service definition too long");
			}
			break;
		}
		line += ll + (nl ? 1 : 0);
	}
	buf_free(&b);
	return rc;
}

static int add_deps(struct svc_def *d, const char *v, char *err)
{
	const char *p = v;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			return 0;
		size_t n = strcspn(p, " \t,");
		if (!valid_svc_name(p, n))
			return errf(err, "bad service name '%.*s' in after", (int)n, p);
		if (d->ndeps == SVC_DEPS_MAX)
			return errf(err, "more than %d dependencies", SVC_DEPS_MAX);
		snprintf(d->deps[d->ndeps++], SVC_NAME_MAX, "%.*s", (int)n, p);
		p += n;
	}
}

static int parse_kv(struct svc_def *d, const char *k, const char *v, unsigned *seen,
		    const char *passwd_file, char *err)
{
	static const char *const once[] = {"name", "exec", "user", "restart", "notify-fd",
					   "ready-timeout", "stop-timeout", "dir", "env-file"};
	for (size_t i = 0; i < ARRAY_SIZE(once); i++)
		if (!strcmp(k, once[i])) {
			if (*seen & (1u << i))
				return errf(err, "duplicate key '%s'", k);
			*seen |= 1u << i;
		}
	if (!strcmp(k, "name")) {
		if (!valid_svc_name(v, strlen(v)))
			return errf(err, "bad name '%s' (letters, digits, - _ . @; at most %d)", v,
				    SVC_NAME_MAX - 1);
		snprintf(d->name, sizeof d->name, "%s", v);
	} else if (!strcmp(k, "exec")) {
		if (split_argv(d, v, err))
			return -1;
		if (!d->nargv)
			return errf(err, "exec is empty");
	} else if (!strcmp(k, "user")) {
		return parse_user(d, v, passwd_file, err);
	} else if (!strcmp(k, "env")) {
		const char *eq = strchr(v, '=');
		if (!eq || eq == v)
			return errf(err, "env needs KEY=VALUE, got '%s'", v);
		if (d->nenv == SVC_ENV_MAX)
			return errf(err, "more than %d env entries", SVC_ENV_MAX);
		if (!(d->env[d->nenv++] = store(d, v, strlen(v))))
			return errf(err, "service definition too long");
		d->env[d->nenv] = NULL;
	} else if (!strcmp(k, "after")) {
		return add_deps(d, v, err);
	} else if (!strcmp(k, "restart")) {
		if (!strcmp(v, "always"))
			d->restart = RESTART_ALWAYS;
		else if (!strcmp(v, "on-failure"))
			d->restart = RESTART_ON_FAILURE;
		else if (!strcmp(v, "never"))
			d->restart = RESTART_NEVER;
		else
			return errf(err, "bad restart '%s' (always, on-failure or never)", v);
	} else if (!strcmp(k, "notify-fd")) {
		char *end;
		long fd = strtol(v, &end, 10);
		if (!strcmp(v, "none"))
			d->notify_fd = -1;
		else if (*end || end == v || fd < 3 || fd > 1023)
			return errf(err, "bad notify-fd '%s' (3..1023 or none)", v);
		else
			d->notify_fd = fd;
	} else if (!strcmp(k, "ready-timeout")) {
		if (parse_duration_ms(v, &d->ready_timeout_ms))
			return errf(err, "bad ready-timeout '%s'", v);
	} else if (!strcmp(k, "stop-timeout")) {
		if (parse_duration_ms(v, &d->stop_timeout_ms) || d->stop_timeout_ms < 1)
			return errf(err, "bad stop-timeout '%s'", v);
	} else if (!strcmp(k, "env-file")) {
		if (*v != '/')
			return errf(err, "env-file must be absolute, got '%s'", v);
		if (!(d->env_file = store(d, v, strlen(v))))
			return errf(err, "service definition too long");
	} else if (!strcmp(k, "dir")) {
		if (*v != '/')
			return errf(err, "dir must be absolute, got '%s'", v);
		if (!(d->dir = store(d, v, strlen(v))))
			return errf(err, "service definition too long");
	} else {
		return errf(err, "unknown key '%s'", k);
	}
	return 0;
}

int svconf_parse(struct svc_def *d, const char *name, const char *text, size_t len,
		 const char *path, const char *passwd_file, char *err)
{
	char msg[ERRBUF];
	memset(d, 0, sizeof *d);
	d->notify_fd = -1;
	d->ready_timeout_ms = -1;
	d->stop_timeout_ms = -1;
	d->restart = RESTART_ALWAYS;
	snprintf(d->name, sizeof d->name, "%s", name);
	unsigned seen = 0;
	struct kv_iter it;
	char *k, *v;
	int r;
	kv_init(&it, text, len, path);
	while ((r = kv_next(&it, &k, &v, err)) == 1) {
		int lineno = it.lineno;
		if (parse_kv(d, k, v, &seen, passwd_file, msg))
			return errf(err, "%s:%d: %s", path, lineno, msg);
	}
	if (r < 0)
		return -1;
	if (!d->nargv)
		return errf(err, "%s: no exec line", path);
	for (int i = 0; i < d->ndeps; i++)
		if (!strcmp(d->deps[i], d->name))
			return errf(err, "%s: service '%s' depends on itself", path, d->name);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(a, b);
}

int svconf_load_dir(const char *dir, const char *passwd_file, struct svc_def *defs, int max,
		    void (*report)(const char *msg, void *ctx), void *ctx)
{
	DIR *dp = opendir(dir);
	if (!dp)
		return -errno;
	char names[SVC_MAX * 2][NAME_MAX + 1];   /* fixed: a reload needs no malloc */
	int nn = 0, n = 0;
	struct dirent *de;
	char msg[PATH_MAX + 1024];
	while ((de = readdir(dp))) {
		size_t l = strlen(de->d_name);
		if (l < 6 || strcmp(de->d_name + l - 5, ".conf") || de->d_name[0] == '.')
			continue;
		if (nn == (int)ARRAY_SIZE(names)) {
			snprintf(msg, sizeof msg, "%s: more than %d service files; the rest are ignored",
				 dir, (int)ARRAY_SIZE(names));
			report(msg, ctx);
			break;
		}
		snprintf(names[nn++], sizeof names[0], "%s", de->d_name);
	}
	closedir(dp);
	qsort(names, nn, sizeof *names, cmp_str);
	for (int i = 0; i < nn; i++) {
		char path[PATH_MAX + 256], err[ERRBUF], base[256];
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		snprintf(base, sizeof base, "%.*s", (int)(strlen(names[i]) - 5), names[i]);
		struct buf b = {0};
		int rc = read_file(path, &b, SVC_FILE_MAX);
		if (rc) {
			snprintf(msg, sizeof msg, "%s: %s", path,
				 rc == -EFBIG ? "larger than 64 KiB" : strerror(-rc));
			report(msg, ctx);
		} else if (!valid_svc_name(base, strlen(base))) {
			snprintf(msg, sizeof msg, "%s: bad service file name", path);
			report(msg, ctx);
		} else if (n == max) {
			snprintf(msg, sizeof msg, "%s: more than %d services; ignored", path, max);
			report(msg, ctx);
		} else if (svconf_parse(&defs[n], base, b.p ? b.p : "", b.len, path, passwd_file, err)) {
			report(err, ctx);
		} else {
			bool dup = false;
			for (int j = 0; j < n; j++)
				dup = dup || !strcmp(defs[j].name, defs[n].name);
			if (dup) {
				snprintf(msg, sizeof msg, "%s: duplicate service name '%s'", path, defs[n].name);
				report(msg, ctx);
			} else {
				n++;
			}
		}
		buf_free(&b);
	}
	return n;
}

/* struct svc_def points into its own str: a copy must move those pointers along. */
static char *rebase(char *p, const struct svc_def *src, struct svc_def *dst)
{
	return p ? dst->str + (p - src->str) : NULL;
}

void svconf_copy(struct svc_def *dst, const struct svc_def *src)
{
	memcpy(dst, src, sizeof *dst);
	for (int i = 0; i < src->nargv; i++)
		dst->argv[i] = rebase(src->argv[i], src, dst);
	for (int i = 0; i < src->nenv; i++)
		dst->env[i] = rebase(src->env[i], src, dst);
	dst->user = rebase(src->user, src, dst);
	dst->home = rebase(src->home, src, dst);
	dst->dir = rebase(src->dir, src, dst);
	dst->env_file = rebase(src->env_file, src, dst);
}
