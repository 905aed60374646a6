/* sshkeys.c - inject_ssh_key: ~USER/.ssh/authorized_keys.
 *
 * The home directory belongs to a user who may be hostile: every step works from directory
 * fds opened with O_NOFOLLOW, ownership is set with fchown on those fds, and the file is
 * replaced by renameat from a fresh O_EXCL temp file, so a symlinked ~/.ssh is refused and a
 * symlinked authorized_keys is replaced, never followed. Nothing outside the home is written
 * or chowned. The home comes from the passwd file and is resolved inside --root (as if ROOT
 * were /, openat2 RESOLVE_IN_ROOT), so under a scratch root every write stays in it.
 * Upstream replaces the file with the injected key; "append": true adds the key once instead,
 * and reads the old file only when it is a regular file owned by the user with one link (a
 * hard link to a root-only file would otherwise be copied into a file the user can read).
 * Spec: docs/protocol.md (inject_ssh_key), docs/stereod.md
 */
#include "stereod.h"
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_MAX (16 * 1024)
#define AUTH_KEYS_MAX (1024 * 1024)

static const char *const key_prefixes[] = {
	"ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-nistp256 ", "ecdsa-sha2-nistp384 ",
	"ecdsa-sha2-nistp521 ", "sk-ssh-ed25519@openssh.com ", "sk-ecdsa-sha2-nistp256@openssh.com ",
};

/* Decoded as upstream's Go struct: case-insensitive keys, a missing field is empty. */
int sshkey_decode(const struct json *j, int obj, struct sshkey_req *r, char *err)
{
	r->append = false;
	if (json_go_object(j, obj, "stereosd.SSHKeyPayload", err) ||
	    json_go_str(j, obj, "SSHKeyPayload", "user", &r->user, err) ||
	    json_go_str(j, obj, "SSHKeyPayload", "public_key", &r->key, err) ||
	    json_go_bool(j, obj, "SSHKeyPayload", "append", &r->append, err))
		return -1;
	return 0;
}

void sshkey_req_free(struct sshkey_req *r)
{
	buf_free(&r->user);
	buf_free(&r->key);
}

/* The key checked: upstream's refusals in upstream's words (empty, no known type + space at
 * the start), then ours (one line, printable, key data after the type). len: the key without
 * trailing whitespace. */
static int check_key(const struct buf *key, size_t *len, char *err)
{
	size_t n = key->len, pl = 0;
	if (!n)
		return errf(err, "public_key cannot be empty");
	for (size_t i = 0; i < ARRAY_SIZE(key_prefixes) && !pl; i++)
		if (n >= strlen(key_prefixes[i]) && !memcmp(key->p, key_prefixes[i], strlen(key_prefixes[i])))
			pl = strlen(key_prefixes[i]);
	if (!pl)
		return errf(err, "invalid SSH public key format: must start with a recognized key type "
			    "(e.g., ssh-ed25519)");
	while (n && (key->p[n - 1] == '\n' || key->p[n - 1] == '\r' || key->p[n - 1] == ' ' ||
		     key->p[n - 1] == '\t'))
		n--;
	if (n <= pl)
		return errf(err, "public_key has no key data after its type");
	if (n > KEY_MAX)
		return errf(err, "public_key is longer than %d bytes", KEY_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = key->p[i];
		if (c == '\n' || c == '\r')
			return errf(err, "public_key must be a single line");
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return errf(err, "public_key contains a control character");
	}
	*len = n;
	return 0;
}

/* Length of "TYPE BLOB" at the start of a key line (what makes two keys the same key). */
static size_t key_identity(const char *s, size_t n)
{
	size_t i = 0;
	while (i < n && s[i] != ' ' && s[i] != '\t')
		i++;
	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	while (i < n && s[i] != ' ' && s[i] != '\t')
		i++;
	return i;
}

/* Read the existing authorized_keys through sshfd: only a regular file of at most 1 MiB,
 * owned by the user (or by us when we are not root), with exactly one link. */
static int read_existing(int sshfd, uid_t uid, struct buf *out, char *err)
{
	int fd = openat(sshfd, "authorized_keys", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		return errf(err, "opening authorized_keys: %s", errno == ELOOP ? "it is a symlink" : strerror(errno));
	}
	struct stat st;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > AUTH_KEYS_MAX) {
		close(fd);
		return errf(err, "authorized_keys is not a regular file of at most 1 MiB");
	}
	if (st.st_nlink != 1) {
		close(fd);
		return errf(err, "authorized_keys has %lu links (a hard link?): not appending",
			    (unsigned long)st.st_nlink);
	}
	if (st.st_uid != uid && (geteuid() == 0 || st.st_uid != geteuid())) {
		close(fd);
		return errf(err, "authorized_keys is not owned by the user: not appending");
	}
	buf_reserve(out, st.st_size + 1);
	for (;;) {
		ssize_t n = read(fd, out->p + out->len, out->cap - out->len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || out->len + n >= (size_t)AUTH_KEYS_MAX)
			break;
		out->len += n;
		if (out->len + 1 >= out->cap)
			buf_reserve(out, 65536);
	}
	close(fd);
	return 0;
}

int sshkey_inject(struct stereod *d, const struct sshkey_req *r, char *err)
{
	const char *user = buf_cstr((struct buf *)&r->user);
	size_t klen = 0;
	if (!r->user.len)
		return errf(err, "user cannot be empty");
	if (check_key(&r->key, &klen, err))
		return -1;
	uid_t uid;
	gid_t gid;
	struct buf home = {0}, data = {0}, q = {0};
	int homefd = -1, sshfd = -1, rc = -1;
	/* a name that cannot be in passwd is an unknown user, as with upstream's user.Lookup */
	bool bad = strlen(user) != r->user.len || strchr(user, '/') || strchr(user, ':');
	int e = bad ? -ENOENT : user_lookup(d->passwd_path, user, &uid, &gid, &home);
	if (e) {
		go_quote(&q, r->user.p, r->user.len);
		if (e == -ENOENT)
			errf(err, "lookup user %s: user: unknown user %s", buf_cstr(&q), user);
		else
			errf(err, "lookup user %s: %s", buf_cstr(&q), strerror(-e));
		buf_free(&q);
		goto out;
	}
	if (home.len == 0 || home.p[0] != '/') {
		errf(err, "user %s has no absolute home directory", user);
		goto out;
	}
	int rootfd = open(d->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0) {
		errf(err, "opening the root %s: %s", d->root, strerror(errno));
		goto out;
	}
	homefd = open_resolve(rootfd, home.p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW,
			      RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
	close(rootfd);
	if (homefd < 0) {
		errf(err, "opening home %s: %s", home.p, homefd == -ELOOP ? "it is a symlink" : strerror(-homefd));
		homefd = -1;
		goto out;
	}
	struct stat st;
	if (fstat(homefd, &st) || (st.st_uid != uid && st.st_uid != 0)) {
		errf(err, "home %s belongs to neither %s nor root", home.p, user);
		goto out;
	}
	if (mkdirat(homefd, ".ssh", 0700) && errno != EEXIST) {
		errf(err, "creating %s/.ssh: %s", home.p, strerror(errno));
		goto out;
	}
	sshfd = openat(homefd, ".ssh", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sshfd < 0) {
		errf(err, "opening %s/.ssh: %s", home.p,
		     errno == ELOOP || errno == ENOTDIR ? "it is a symlink or not a directory" : strerror(errno));
		goto out;
	}
	if (fstat(sshfd, &st) || (st.st_uid != uid && st.st_uid != 0 && st.st_uid != geteuid())) {
		errf(err, "%s/.ssh belongs to another user", home.p);
		goto out;
	}
	if ((geteuid() == 0 && fchown(sshfd, uid, gid)) || fchmod(sshfd, 0700)) {
		errf(err, "setting owner and mode of %s/.ssh: %s", home.p, strerror(errno));
		goto out;
	}
	if (r->append) {
		if (read_existing(sshfd, uid, &data, err))
			goto out;
		size_t id = key_identity(r->key.p, klen);
		for (size_t off = 0; off < data.len;) {
			char *nl = memchr(data.p + off, '\n', data.len - off);
			size_t ll = (nl ? (size_t)(nl - data.p) : data.len) - off;
			if (key_identity(data.p + off, ll) == id && !memcmp(data.p + off, r->key.p, id)) {
				log_info("ssh key already present", "user=%s", user);
				rc = 0;
				goto out;
			}
			off += ll + 1;
		}
		if (data.len && data.p[data.len - 1] != '\n')
			buf_putc(&data, '\n');
	}
	buf_append(&data, r->key.p, klen);
	buf_putc(&data, '\n');
	e = atomic_write_at(sshfd, "authorized_keys", data.p, data.len, 0600,
			    geteuid() == 0 ? uid : (uid_t)-1, geteuid() == 0 ? gid : (gid_t)-1);
	if (e) {
		errf(err, "writing %s/.ssh/authorized_keys: %s", home.p, strerror(-e));
		goto out;
	}
	log_info("ssh key installed", "user=%s append=%s", user, r->append ? "true" : "false");
	rc = 0;
out:
	if (sshfd >= 0)
		close(sshfd);
	if (homefd >= 0)
		close(homefd);
	buf_free(&home);
	buf_free(&data);
	return rc;
}
