/* mounts.c - shared-directory mounts (virtiofs, 9p): validation, the mount point walk,
 * mounting, the ordered table, and LIFO unmount at shutdown. The table is this file's own
 * state (struct mounts), created by mounts_new and released by mounts_free.
 *
 * A request is in three parts so that the slow middle can run off the event loop:
 * mounts_begin (loop thread: every check that needs no file system access, the agent's ids,
 * and a reservation of the path), mount_op_run (any thread: the walk, mount, chown; may block
 * for up to 10 s in the mount helper) and mounts_end (loop thread: record or release).
 *
 * The mount point ROOT + guest_path is reached one component at a time from an O_PATH fd of
 * ROOT with O_NOFOLLOW: a symlink anywhere on the way refuses the request before anything is
 * created past it, and missing components are created with mkdirat from the fd that was
 * checked. The filesystem is created with the new mount API (fsopen/fsmount) and attached with
 * move_mount onto that same fd, so swapping a directory for a symlink after the check cannot
 * redirect the mount. Only the root of the new filesystem is chowned agent:agent, after it is
 * attached; a directory that existed before the request is never chowned. On any failure the
 * directories this request created are removed, deepest first, and nothing else.
 * Test hooks: --mount-helper runs a command instead (it gets the path name: not race-proof);
 * --mount-stand-in mounts another fs type (tmpfs) where no virtio device exists.
 * See docs/stereod.md (Mounts).
 */
#include "stereod.h"
#include <fcntl.h>
#include <limits.h>
#include <linux/mount.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MOUNTS_MAX 256
#define HELPER_TIMEOUT_MS 10000
#define DEPTH_MAX 64

/* Whole trees the image keeps system-owned: neither these nor anything under them. */
static const char *const protected_dirs[] = {
	"/nix", "/etc", "/bin", "/boot", "/dev", "/proc", "/sys", "/run",
	"/usr", "/lib", "/lib32", "/lib64", "/libx32", "/sbin", "/var", "/root",
};
/* System-owned directories whose subdirectories may be mount points, but not themselves. */
static const char *const protected_exact[] = {
	"/home", "/mnt", "/tmp", "/srv", "/opt", "/media",
};

struct mount_entry {
	char *tag, *guest_path, *fs_type, *target;   /* target: guest_path under --root */
	bool read_only;
};

/* The table handed to the unmount at shutdown (mounts_detach): preallocated, so that the
 * shutdown needs no memory. */
struct mount_list {
	const char *helper;
	struct mount_entry e[MOUNTS_MAX];
	size_t n;
};

/* Once stereod is ready nothing here exits on a failed allocation: a request that cannot get
 * its memory is refused ("out of memory"), everything it needs is allocated before it mounts. */
struct mounts {
	struct mounts_conf conf;
	struct mount_entry table[MOUNTS_MAX];
	size_t n;
	char *pending[MOUNTS_MAX];     /* guest paths of requests under way (reserved) */
	size_t npending;
	struct mount_list detached;
};

/* One request under way: filled by mounts_begin, worked by mount_op_run. */
struct mount_op {
	char clean[PATH_MAX];
	char *target, *tag, *fs, *guest_path;
	const char *root, *helper, *stand_in;
	bool read_only, chown;
	uid_t uid;
	gid_t gid;
	int rc;                        /* 0, or -1 with err */
	char err[ERRBUF];
	char warn[ERRBUF];             /* a best-effort step that failed (logged by mounts_end) */
};

struct mounts *mounts_new(const struct mounts_conf *c)
{
	struct mounts *m = calloc(1, sizeof *m);
	if (m)
		m->conf = *c;
	return m;
}

static void entry_free(struct mount_entry *e)
{
	free(e->tag);
	free(e->guest_path);
	free(e->fs_type);
	free(e->target);
}

void mounts_free(struct mounts *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++)
		entry_free(&m->table[i]);
	for (size_t i = 0; i < m->npending; i++)
		free(m->pending[i]);
	free(m);
}

/* Decoded as upstream's Go struct: case-insensitive keys, a missing field is empty. */
int mount_decode(const struct json *j, int obj, struct mount_req *r, char *err)
{
	r->read_only = false;
	if (json_go_object(j, obj, "stereosd.MountPayload", err) ||
	    json_go_str(j, obj, "MountPayload", "tag", &r->tag, err) ||
	    json_go_str(j, obj, "MountPayload", "guest_path", &r->guest_path, err) ||
	    json_go_str(j, obj, "MountPayload", "fs_type", &r->fs_type, err) ||
	    json_go_bool(j, obj, "MountPayload", "read_only", &r->read_only, err))
		return -1;
	return 0;
}

void mount_req_free(struct mount_req *r)
{
	buf_free(&r->tag);
	buf_free(&r->guest_path);
	buf_free(&r->fs_type);
}

static int check_tag(const struct buf *tag, char *err)
{
	if (!tag->len)
		return errf(err, "tag is empty");
	if (tag->len > 255)
		return errf(err, "tag is longer than 255 bytes");
	for (size_t i = 0; i < tag->len; i++)
		if ((unsigned char)tag->p[i] <= 0x20 || tag->p[i] == 0x7f || tag->p[i] == ',')
			return errf(err, "tag contains a space, comma, control character or NUL");
	return 0;
}

/* err = fmt with s as Go's %q */
static int goerrf(char *err, const char *fmt, const char *s, size_t len)
{
	struct buf q = {0};
	go_quote(&q, s, len);
	errf(err, fmt, buf_cstr(&q));
	buf_free(&q);
	return -1;
}

/* Every check that needs no system call (the fuzzer runs these): 0, or -1 with err.
 * clean (PATH_MAX bytes) receives the cleaned guest_path. */
static int mount_check(const struct mounts *m, const struct mount_req *r, char *clean, char *err)
{
	/* upstream's refusals first, in its words (Go %q), then ours */
	const char *fs = buf_cstr((struct buf *)&r->fs_type);
	const char *gp = r->guest_path.p ? r->guest_path.p : "";
	if (!r->tag.len)
		return errf(err, "mount tag cannot be empty");
	if (!r->guest_path.len)
		return errf(err, "mount guest_path cannot be empty");
	if (!r->fs_type.len)
		return errf(err, "mount fs_type cannot be empty");
	if (strlen(fs) != r->fs_type.len || (strcmp(fs, "9p") && strcmp(fs, "virtiofs")))
		return goerrf(err, "unsupported filesystem type: %s (must be virtiofs or 9p)", fs,
			      r->fs_type.len);
	if (gp[0] != '/')
		return goerrf(err, "guest_path must be absolute: %s", gp, r->guest_path.len);
	char perr[ERRBUF];
	if (path_clean(gp, r->guest_path.len, clean, PATH_MAX, perr))
		return errf(err, "invalid guest_path: %s", perr);
	for (size_t i = 0; i < ARRAY_SIZE(protected_dirs); i++)
		if (!strcmp(clean, "/") || path_within(clean, protected_dirs[i]))
			return goerrf(err, "cannot mount over system directory: %s", clean, strlen(clean));
	for (size_t i = 0; i < ARRAY_SIZE(protected_exact); i++)
		if (!strcmp(clean, protected_exact[i]))
			return goerrf(err, "cannot mount over system directory: %s", clean, strlen(clean));
	if (check_tag(&r->tag, err))
		return -1;
	for (size_t i = 0; i < m->n; i++)
		if (!strcmp(m->table[i].guest_path, clean))
			return errf(err, "%s is already mounted", clean);
	for (size_t i = 0; i < m->npending; i++)
		if (!strcmp(m->pending[i], clean))
			return errf(err, "%s is being mounted by another request", clean);
	if (m->n + m->npending >= MOUNTS_MAX)
		return errf(err, "too many mounts (max %d)", MOUNTS_MAX);
	return 0;
}

static void op_free(struct mount_op *op)
{
	free(op->tag);
	free(op->fs);
	free(op->target);
	free(op->guest_path);
	free(op);
}

/* --mount-helper CMD runs as sh -c 'CMD "$@"' with args as $1... */
static int run_helper(const char *helper, const char *const *args, char *err)
{
	struct buf cmd = {0};
	if (buf_printf(&cmd, "%s \"$@\"", helper)) {
		buf_free(&cmd);
		return errf(err, "out of memory");
	}
	int rc = run_sh(buf_cstr(&cmd), args, HELPER_TIMEOUT_MS, err);
	buf_free(&cmd);
	return rc;
}

struct mount_op *mounts_begin(struct mounts *m, const struct mount_req *r, char *err)
{
	char clean[PATH_MAX];
	if (mount_check(m, r, clean, err))
		return NULL;
	struct mount_op *op = calloc(1, sizeof *op);
	char *reserved = strdup(clean);
	if (op) {
		snprintf(op->clean, sizeof op->clean, "%s", clean);
		op->target = path_join_root(m->conf.root, clean);
		op->tag = strdup(buf_cstr((struct buf *)&r->tag));
		op->fs = strdup(buf_cstr((struct buf *)&r->fs_type));
		op->guest_path = strdup(clean);
	}
	if (!op || !reserved || !op->target || !op->tag || !op->fs || !op->guest_path) {
		if (op)
			op_free(op);
		free(reserved);
		errf(err, "out of memory");
		return NULL;
	}
	op->root = m->conf.root;
	op->helper = m->conf.helper;
	op->stand_in = m->conf.stand_in;
	op->read_only = r->read_only;
	gid_t ggid;
	if (geteuid() == 0 && !user_lookup(m->conf.passwd, "agent", &op->uid, &op->gid, NULL)) {
		op->chown = true;
		if (!group_lookup(m->conf.group, "agent", &ggid))
			op->gid = ggid;
	}
	m->pending[m->npending++] = reserved;
	return op;
}

/* ---- the blocking part ------------------------------------------------------------------ */

/* The directories this request created: parent fd + name, to be removed on failure. */
struct created {
	int parent[DEPTH_MAX];
	char name[DEPTH_MAX][NAME_MAX + 1];
	int n;
};

static void created_undo(struct created *c, bool remove)
{
	for (int i = c->n - 1; i >= 0; i--) {
		if (remove && unlinkat(c->parent[i], c->name[i], AT_REMOVEDIR))
			log_warn("cannot remove a mount point directory this request created",
				 "name=%s err=\"%s\"", c->name[i], strerror(errno));
		close(c->parent[i]);
	}
	c->n = 0;
}

/* Walk op->clean from ROOT one component at a time, never following a symlink, creating
 * what is missing (0755). Returns an O_PATH fd of the mount point, or -1 with op->err. */
static int walk(struct mount_op *op, struct created *c)
{
	int cur = open(op->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cur < 0)
		return errf(op->err, "opening the root %s: %s", op->root, strerror(errno));
	const char *p = op->clean;
	while (*p) {
		while (*p == '/')
			p++;
		const char *e = strchrnul(p, '/');
		char name[NAME_MAX + 1];
		if (e - p > NAME_MAX) {
			close(cur);
			return errf(op->err, "guest_path %s has a component longer than %d bytes",
				    op->clean, NAME_MAX);
		}
		memcpy(name, p, e - p);
		name[e - p] = 0;
		p = e;
		int fd = openat(cur, name, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT) {
			if (c->n == DEPTH_MAX) {
				close(cur);
				return errf(op->err, "guest_path %s is too deep", op->clean);
			}
			if (!mkdirat(cur, name, 0755)) {
				c->parent[c->n] = dup(cur);
				memcpy(c->name[c->n++], name, sizeof name);
			} else if (errno != EEXIST) {
				int e2 = errno;
				close(cur);
				return errf(op->err, "creating mount point %s: %s", op->clean, strerror(e2));
			}
			fd = openat(cur, name, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
		}
		struct stat st;
		int e2 = errno;
		bool link = fd < 0 && !fstatat(cur, name, &st, AT_SYMLINK_NOFOLLOW) && S_ISLNK(st.st_mode);
		if (fd >= 0 && (fstat(fd, &st) || !S_ISDIR(st.st_mode))) {
			link = S_ISLNK(st.st_mode);
			close(fd);
			fd = -1;
			e2 = ENOTDIR;
		}
		close(cur);
		if (fd < 0) {
			if (link || e2 == ELOOP)
				return errf(op->err, "guest_path %s goes through a symlink", op->clean);
			return errf(op->err, "opening mount point %s: %s", op->clean, strerror(e2));
		}
		cur = fd;
	}
	return cur;
}

/* The new mount API (Linux 5.2): a filesystem context, then a detached mount. */
static int fs_open(const char *type) { return (int)syscall(SYS_fsopen, type, FSOPEN_CLOEXEC); }
static int fs_config(int fd, unsigned cmd, const char *key, const char *val)
{
	return (int)syscall(SYS_fsconfig, fd, cmd, key, val, 0);
}

/* Mount the filesystem onto dirfd itself; returns an O_PATH fd of its root, or -1 with err. */
static int mount_on(struct mount_op *op, int dirfd)
{
	bool ninep = !strcmp(op->fs, "9p");
	const char *type = op->stand_in ? op->stand_in : op->fs;
	const char *step = "fsopen";
	int mfd = -1, fsfd = fs_open(type);
	if (fsfd < 0)
		goto fail;
	step = "fsconfig";
	if (fs_config(fsfd, FSCONFIG_SET_STRING, "source", op->tag) ||
	    (ninep && !op->stand_in &&
	     (fs_config(fsfd, FSCONFIG_SET_STRING, "trans", "virtio") ||
	      fs_config(fsfd, FSCONFIG_SET_STRING, "version", "9p2000.L"))) ||
	    (op->read_only && fs_config(fsfd, FSCONFIG_SET_FLAG, "ro", NULL)))
		goto fail;
	step = "creating the filesystem";
	if (fs_config(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL))
		goto fail;
	step = "fsmount";
	mfd = (int)syscall(SYS_fsmount, fsfd, FSMOUNT_CLOEXEC, op->read_only ? MOUNT_ATTR_RDONLY : 0);
	if (mfd < 0)
		goto fail;
	step = "move_mount";
	if (syscall(SYS_move_mount, mfd, "", dirfd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))
		goto fail;
	close(fsfd);
	return mfd;
fail:;
	int e = errno;
	if (mfd >= 0)
		close(mfd);
	if (fsfd >= 0)
		close(fsfd);
	return errf(op->err, "mounting %s (%s) on %s: %s: %s", op->tag, op->fs, op->clean, step,
		    strerror(e));
}

/* The helper mounts by path name; afterwards the root of what is mounted there is reopened
 * without following a symlink. -1 with err when the helper failed. */
static int mount_helper(struct mount_op *op, int dirfd, bool created)
{
	const char *args[] = {op->fs, op->tag, op->target, op->read_only ? "ro" : "rw", NULL};
	char herr[ERRBUF];
	int st = run_helper(op->helper, args, herr);
	if (st)
		return errf(op->err, "mounting %s on %s: %s", op->tag, op->clean,
			    st < 0 ? herr : "the mount helper failed");
	struct stat before, after;
	int root = open(op->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	int fd = root < 0 ? -1 : open_beneath(root, op->clean + 1, O_PATH | O_DIRECTORY, 0);
	if (root >= 0)
		close(root);
	/* chown only a new filesystem's root or a directory this request made */
	if (fd >= 0 && !fstat(dirfd, &before) && !fstat(fd, &after) && !created &&
	    before.st_dev == after.st_dev && before.st_ino == after.st_ino) {
		close(fd);
		fd = -2;
	}
	return fd < 0 ? -2 : fd;
}

void mount_op_run(struct mount_op *op)
{
	struct created c = {0};
	op->rc = -1;
	int dirfd = walk(op, &c);
	if (dirfd < 0) {
		created_undo(&c, true);
		return;
	}
	int rootfd = op->helper ? mount_helper(op, dirfd, c.n > 0) : mount_on(op, dirfd);
	close(dirfd);
	if (rootfd == -1) {
		created_undo(&c, true);
		return;
	}
	created_undo(&c, false);
	op->rc = 0;
	if (rootfd < 0 || !op->chown) {
		if (rootfd >= 0)
			close(rootfd);
		return;
	}
	if (fchownat(rootfd, "", op->uid, op->gid, AT_EMPTY_PATH))
		snprintf(op->warn, sizeof op->warn, "%s", strerror(errno));
	close(rootfd);
}

static void unreserve(struct mounts *m, const char *clean)
{
	for (size_t i = 0; i < m->npending; i++) {
		if (!strcmp(m->pending[i], clean)) {
			free(m->pending[i]);
			m->pending[i] = m->pending[--m->npending];
			return;
		}
	}
}

int mounts_end(struct mounts *m, struct mount_op *op, char *err)
{
	int rc = op->rc;
	unreserve(m, op->clean);
	if (op->warn[0])
		log_warn("cannot chown the mount point to agent", "path=%s err=\"%s\"", op->clean, op->warn);
	if (rc) {
		errf(err, "%s", op->err);
	} else {
		struct mount_entry *e = &m->table[m->n++];
		*e = (struct mount_entry){.tag = op->tag, .guest_path = op->guest_path,
					  .fs_type = op->fs, .target = op->target, .read_only = op->read_only};
		op->tag = op->fs = op->target = op->guest_path = NULL;
		log_info("mounted", "tag=%s path=%s fs=%s ro=%d", e->tag, e->guest_path, e->fs_type,
			 e->read_only);
	}
	op_free(op);
	return rc;
}

int mounts_add(struct mounts *m, const struct mount_req *r, char *err)
{
	struct mount_op *op = mounts_begin(m, r, err);
	if (!op)
		return -1;
	mount_op_run(op);
	return mounts_end(m, op, err);
}

struct mount_job {
	struct mounts *m;
	struct mount_op *op;
	mounts_reply_fn replied;
	void *ctx;
};

static void job_work(void *ctx)
{
	struct mount_job *j = ctx;
	mount_op_run(j->op);
}

static void job_done(void *ctx)
{
	struct mount_job *j = ctx;
	char err[ERRBUF] = "";
	int rc = mounts_end(j->m, j->op, err);
	j->replied(j->ctx, rc, err);
	free(j);
}

void mounts_request(struct mounts *m, const struct mount_req *r, mounts_reply_fn replied, void *ctx)
{
	char err[ERRBUF] = "";
	struct mount_op *op = mounts_begin(m, r, err);
	if (!op) {
		replied(ctx, -1, err);
		return;
	}
	struct mount_job *j = malloc(sizeof *j);
	if (!j) {
		/* no memory for the job: the mount runs here, on the loop, rather than not at all */
		mount_op_run(op);
		int rc = mounts_end(m, op, err);
		replied(ctx, rc, err);
		return;
	}
	*j = (struct mount_job){.m = m, .op = op, .replied = replied, .ctx = ctx};
	int e = jobs_run(m->conf.jobs, job_work, job_done, j);
	if (e) {
		log_warn("mounting on the loop thread: no worker", "err=\"%s\"", strerror(-e));
		job_work(j);
		job_done(j);
	}
}

void mounts_list(const struct mounts *m, struct jw *w)
{
	jw_arr(w);
	for (size_t i = 0; i < m->n; i++) {
		const struct mount_entry *e = &m->table[i];
		jw_obj(w);
		jw_kstr(w, "tag", e->tag);
		jw_kstr(w, "guest_path", e->guest_path);
		jw_kstr(w, "fs_type", e->fs_type);
		if (e->read_only)
			jw_kbool(w, "read_only", true);
		jw_obj_end(w);
	}
	jw_arr_end(w);
}

struct mount_list *mounts_detach(struct mounts *m)
{
	struct mount_list *l = &m->detached;
	l->helper = m->conf.helper;
	l->n = m->n;
	memcpy(l->e, m->table, m->n * sizeof *l->e);
	m->n = 0;
	return l;
}

void mount_list_unmount(struct mount_list *l)
{
	while (l->n) {
		struct mount_entry *e = &l->e[--l->n];
		char err[ERRBUF] = "";
		int rc = 0;
		if (l->helper) {
			const char *args[] = {"umount", e->target, NULL};
			rc = run_helper(l->helper, args, err);
			if (rc > 0)
				errf(err, "the mount helper exited %d", rc);
		} else if (umount2(e->target, UMOUNT_NOFOLLOW)) {
			/* busy (an agent still has files open): detach so shutdown can go on */
			rc = umount2(e->target, MNT_DETACH | UMOUNT_NOFOLLOW) ? errf(err, "%s", strerror(errno)) : 0;
		}
		if (rc)
			log_warn("unmount failed", "path=%s err=\"%s\"", e->guest_path, err);
		else
			log_info("unmounted", "tag=%s path=%s", e->tag, e->guest_path);
		entry_free(e);
	}
}

void mounts_unmount_all(struct mounts *m)
{
	mount_list_unmount(mounts_detach(m));
}
