/* secrets.c - the secret store: /run/stereos/secrets/<name> on a tmpfs.
 *
 * Names are plain file names (valid_file_name), files are written atomically (unique temp
 * name, fchmod, fsync, rename) from a directory fd, values are wiped from memory after use
 * and never logged. The store must be a tmpfs: as root we mount one when the directory is not,
 * otherwise writes are refused unless --allow-disk-secrets.
 * Spec: docs/protocol.md (inject_secret), docs/ipc-api.md
 */
#include "stereod.h"
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

/* Decoded as upstream's Go struct: case-insensitive keys, a missing field is empty. */
int secret_decode(const struct json *j, int obj, struct secret_req *r, char *err)
{
	r->mode = 0;
	if (json_go_object(j, obj, "stereosd.SecretPayload", err) ||
	    json_go_str(j, obj, "SecretPayload", "name", &r->name, err) ||
	    json_go_str(j, obj, "SecretPayload", "value", &r->value, err) ||
	    json_go_uint(j, obj, "SecretPayload", "mode", 32, &r->mode, err))
		return -1;
	return 0;
}

void secret_req_free(struct secret_req *r)
{
	buf_free(&r->name);
	buf_wipe(&r->value);
}

static bool on_tmpfs(int fd)
{
	struct statfs sf;
	return !fstatfs(fd, &sf) && (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC);
}

int secrets_setup(struct stereod *d, char *err)
{
	int fd = open(d->secrets_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errf(err, "opening %s: %s", d->secrets_dir, strerror(errno));
	if (!on_tmpfs(fd) && !d->allow_disk_secrets && geteuid() == 0) {
		if (mount("tmpfs", d->secrets_dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  "mode=0700,uid=0,gid=0,size=16m")) {
			log_warn("cannot mount a tmpfs on the secrets dir", "path=%s err=\"%s\"",
				 d->secrets_dir, strerror(errno));
		} else {
			log_info("mounted a tmpfs on the secrets dir", "path=%s", d->secrets_dir);
			d->secrets_mounted = true;
			close(fd);
			fd = open(d->secrets_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0)
				return errf(err, "opening %s: %s", d->secrets_dir, strerror(errno));
		}
	}
	d->umask = umask(022);
	umask(d->umask);
	d->secrets_fd = fd;
	d->secrets_on_tmpfs = on_tmpfs(fd);
	int swept = atomic_tmp_sweep(fd);   /* left by a writer killed mid-write */
	if (swept > 0)
		log_info("removed stale temp files from the secrets dir", "count=%d", swept);
	if (d->secrets_on_tmpfs)
		log_info("secrets store ready", "path=%s fs=tmpfs", d->secrets_dir);
	else if (d->allow_disk_secrets)
		log_warn("secrets go to persistent storage (--allow-disk-secrets)", "path=%s", d->secrets_dir);
	else
		log_warn("secrets dir is not a tmpfs: secrets will be refused", "path=%s", d->secrets_dir);
	return 0;
}

void secrets_teardown(struct stereod *d)
{
	if (d->secrets_fd >= 0)
		close(d->secrets_fd);
	d->secrets_fd = -1;
	/* Under a scratch --root (make run, tests) the tmpfs we mounted goes with us, so the tree
	 * can be removed; under / it stays, and a restarted stereod finds its secrets again. */
	if (d->secrets_mounted && strcmp(d->root, "/") && umount2(d->secrets_dir, MNT_DETACH))
		log_warn("cannot unmount the secrets tmpfs", "path=%s err=\"%s\"", d->secrets_dir,
			 strerror(errno));
}

/* Upstream's refusals with upstream's words (its Go %q of the name, and for the names its open
 * or rename fails on, the text of that failure: longer than ERRBUF, with the raw name, NUL
 * included), then ours. 0, or -1 with the reason in why. */
int secret_name_check(const struct stereod *d, const char *name, size_t len, struct buf *why)
{
	struct buf q = {0};
	const char *upstream = NULL;
	char err[ERRBUF] = "";
	int rc = 0;
	why->len = 0;
	go_quote(&q, name, len);
	if (!len)
		rc = errf(err, "secret name cannot be empty");
	else if (memchr(name, '/', len) || memmem(name, len, "..", 2))
		buf_printf(why, "invalid secret name: %s (must be a simple filename)", buf_cstr(&q));
	else if (memchr(name, 0, len))
		upstream = "invalid argument";
	else if (len > 255)
		upstream = "file name too long";
	else if (!strcmp(name, "."))
		buf_printf(why, "rename secret \".\": rename %s.tmp %s: file exists", d->secrets_dir,
			   d->secrets_dir);
	else
		rc = valid_file_name(name, len, err);   /* ours: leading '.', control characters */
	if (upstream) {
		buf_printf(why, "write secret %s: open %s/", buf_cstr(&q), d->secrets_dir);
		buf_append(why, name, len);
		buf_printf(why, ".tmp: %s", upstream);
	}
	if (*err)
		buf_puts(why, err);
	buf_free(&q);
	return why->len ? -1 : rc;
}

int secrets_inject(struct stereod *d, const struct secret_req *r, char *err)
{
	const char *name = buf_cstr((struct buf *)&r->name);
	struct buf why = {0};
	if (secret_name_check(d, name, r->name.len, &why)) {
		errf(err, "%s", buf_cstr(&why));
		buf_free(&why);
		return -1;
	}
	if (r->mode > 0777)
		return errf(err, "mode 0%llo is not a plain permission mode (0..0777)",
			    (unsigned long long)r->mode);
	if (!d->secrets_on_tmpfs && !d->allow_disk_secrets)
		return errf(err, "refusing to write a secret to persistent storage: %s is not a tmpfs "
			    "(--allow-disk-secrets allows it)", d->secrets_dir);
	/* The process umask applies, as it does to upstream's os.WriteFile (0666 -> 0644); read
	 * once at start-up (umask(2) is process-wide: no umask(0) window while others create). */
	mode_t mode = (r->mode ? (mode_t)r->mode : 0600) & ~d->umask;
	int rc = atomic_write_at(d->secrets_fd, name, r->value.p ? r->value.p : "", r->value.len,
				 mode, (uid_t)-1, (gid_t)-1);
	if (rc)
		return errf(err, "writing secret %s: %s", name, strerror(-rc));
	log_info("secret written", "name=%s mode=%04o", name, (unsigned)mode);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int secrets_list(struct stereod *d, struct jw *w, char *err)
{
	int fd = openat(d->secrets_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		if (fd >= 0)
			close(fd);
		return errf(err, "listing %s: %s", d->secrets_dir, strerror(errno));
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(dir))) {
		if (e->d_name[0] == '.')   /* ".", "..", and our temp files */
			continue;
		struct stat st;
		if (fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) || !S_ISREG(st.st_mode))
			continue;
		char **more = names, *name = NULL;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			more = realloc(names, cap * sizeof *names);
		}
		if (more)
			names = more;
		if (!more || !(name = strdup(e->d_name))) {
			/* fail this listing, not the daemon */
			closedir(dir);
			for (size_t i = 0; i < n; i++)
				free(names[i]);
			free(names);
			return errf(err, "listing %s: out of memory", d->secrets_dir);
		}
		names[n++] = name;
	}
	closedir(dir);
	if (n)
		qsort(names, n, sizeof *names, cmp_str);
	jw_arr(w);
	for (size_t i = 0; i < n; i++) {
		jw_str(w, names[i]);
		free(names[i]);
	}
	jw_arr_end(w);
	free(names);
	return 0;
}

int secrets_remove(struct stereod *d, const char *name, size_t len, char *err)
{
	if (valid_file_name(name, len, err))
		return -1;
	if (unlinkat(d->secrets_fd, name, 0) && errno != ENOENT)
		return errf(err, "removing secret %s: %s", name, strerror(errno));
	log_info("secret removed", "name=%s", name);
	return 0;
}
