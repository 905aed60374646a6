/* secrets.c - the secret store: /run/stereos/secrets/<name> on a tmpfs.
 *
 * Names are plain file names (valid_file_name), files are written atomically (unique temp
 * name, fchmod, fsync, rename) from a directory fd, values are wiped from memory after use
 * and never logged. The store must be a tmpfs: as root we mount one when the directory is not,
 * otherwise writes are refused unless --allow-disk-secrets.
 * Spec: shared/spec/protocol.md §5 (Secrets)
 */
#include "stereod.h"
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

int secret_decode(const struct json *j, int obj, struct secret_req *r, char *err)
{
	int n = json_get(j, obj, "name"), v = json_get(j, obj, "value"), m = json_get(j, obj, "mode");
	if (n < 0)
		return errf(err, "payload.name is missing");
	if (json_str(j, n, &r->name, JSON_STR_ANY, err))
		return errf(err, "payload.name: expected a string");
	if (v < 0)
		return errf(err, "payload.value is missing");
	if (json_str(j, v, &r->value, JSON_STR_ANY, err))
		return errf(err, "payload.value: expected a string");
	r->mode = 0;
	if (m >= 0 && json_kind(j, m) != JSON_NULL && json_u64(j, m, &r->mode))
		return errf(err, "payload.mode: expected an unsigned integer");
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
	d->secrets_fd = fd;
	d->secrets_on_tmpfs = on_tmpfs(fd);
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

int secrets_inject(struct stereod *d, const struct secret_req *r, char *err)
{
	const char *name = buf_cstr((struct buf *)&r->name);
	if (valid_file_name(name, r->name.len, err))
		return -1;
	if (r->mode > 0777)
		return errf(err, "mode 0%llo is not a plain permission mode (0..0777)",
			    (unsigned long long)r->mode);
	if (!d->secrets_on_tmpfs && !d->allow_disk_secrets)
		return errf(err, "refusing to write a secret to persistent storage: %s is not a tmpfs "
			    "(--allow-disk-secrets allows it)", d->secrets_dir);
	mode_t mode = r->mode ? (mode_t)r->mode : 0600;
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
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			names = xrealloc(names, cap * sizeof *names);
		}
		names[n++] = xstrdup(e->d_name);
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
