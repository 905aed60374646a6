/* mounts.c - shared-directory mounts (virtiofs, 9p): validation, mount(2), the ordered table,
 * and LIFO unmount at shutdown.
 *
 * guest_path is cleaned and must be absolute and outside the protected system directories;
 * it is mounted at --root + guest_path (the same path when --root is /) and must not traverse
 * a symlink, so a user cannot redirect a mount onto /etc through a planted link.
 * Test hooks: --mount-helper runs a command instead of mount(2)/umount2(2);
 * --mount-stand-in calls the real mount(2) with another fs type (tmpfs) where no virtio
 * device exists.
 * Spec: shared/spec/protocol.md §5 (Mounts)
 */
#include "stereod.h"
#include <limits.h>
#include <sys/mount.h>
#include <unistd.h>

static const char *const protected_dirs[] = {
	"/nix", "/etc", "/bin", "/boot", "/dev", "/proc", "/sys", "/run",
};

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

/* The mount point must resolve to exactly root + clean: no symlink anywhere on the way. */
static int check_no_symlink(struct stereod *d, const char *target, const char *clean, char *err)
{
	char rr[PATH_MAX], rt[PATH_MAX];
	if (!realpath(d->root, rr) || !realpath(target, rt))
		return errf(err, "resolving %s: %s", target, strerror(errno));
	size_t rl = strcmp(rr, "/") ? strlen(rr) : 0;
	if (strncmp(rt, rr, rl) || strcmp(rt + rl, clean))
		return errf(err, "guest_path %s goes through a symlink", clean);
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
static int mount_check(const struct stereod *d, const struct mount_req *r, char *clean, char *err)
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
	if (check_tag(&r->tag, err))
		return -1;
	for (size_t i = 0; i < d->nmounts; i++)
		if (!strcmp(d->mounts[i].guest_path, clean))
			return errf(err, "%s is already mounted", clean);
	if (d->nmounts == MOUNTS_MAX)
		return errf(err, "too many mounts (max %d)", MOUNTS_MAX);
	return 0;
}

/* --mount-helper CMD runs as sh -c 'CMD "$@"' with args as $1... */
static int run_helper(struct stereod *d, const char *const *args, char *err)
{
	struct buf cmd = {0};
	buf_printf(&cmd, "%s \"$@\"", d->mount_helper);
	int rc = run_sh(buf_cstr(&cmd), args, 10000, err);
	buf_free(&cmd);
	return rc;
}

int mounts_add(struct stereod *d, const struct mount_req *r, char *err)
{
	char clean[PATH_MAX];
	if (mount_check(d, r, clean, err))
		return -1;
	const char *fs = buf_cstr((struct buf *)&r->fs_type);
	bool ninep = !strcmp(fs, "9p");
	char *target = path_under_root(d, clean);
	const char *tag = buf_cstr((struct buf *)&r->tag);
	int e = mkdir_p(target, 0755);
	if (e) {
		errf(err, "creating mount point %s: %s", clean, strerror(-e));
		goto fail;
	}
	if (check_no_symlink(d, target, clean, err))
		goto fail;
	uid_t uid;
	gid_t gid, ggid;
	if (geteuid() == 0 && !user_lookup(d, "agent", &uid, &gid, NULL)) {
		if (!group_lookup(d, "agent", &ggid))
			gid = ggid;
		if (lchown(target, uid, gid))
			log_warn("cannot chown the mount point to agent", "path=%s err=\"%s\"", target,
				 strerror(errno));
	}
	if (d->mount_helper) {
		/* the helper gets TYPE TAG PATH ro|rw as $1..$4 */
		const char *args[] = {fs, tag, target, r->read_only ? "ro" : "rw", NULL};
		char herr[ERRBUF];
		int st = run_helper(d, args, herr);
		if (st) {
			errf(err, "mounting %s on %s: %s", tag, clean,
			     st < 0 ? herr : "the mount helper failed");
			goto fail;
		}
	} else {
		const char *type = d->mount_stand_in ? d->mount_stand_in : fs;
		const char *data = d->mount_stand_in || !ninep ? NULL : "trans=virtio,version=9p2000.L";
		if (mount(tag, target, type, r->read_only ? MS_RDONLY : 0, data)) {
			errf(err, "mounting %s (%s) on %s: %s", tag, fs, clean, strerror(errno));
			goto fail;
		}
	}
	struct mount_entry *m = &d->mounts[d->nmounts++];
	*m = (struct mount_entry){.tag = xstrdup(tag), .guest_path = xstrdup(clean),
				  .fs_type = xstrdup(fs), .target = target, .read_only = r->read_only};
	log_info("mounted", "tag=%s path=%s fs=%s ro=%d", tag, clean, fs, r->read_only);
	return 0;
fail:
	free(target);
	return -1;
}

void mounts_list(struct stereod *d, struct jw *w)
{
	jw_arr(w);
	for (size_t i = 0; i < d->nmounts; i++) {
		struct mount_entry *m = &d->mounts[i];
		jw_obj(w);
		jw_kstr(w, "tag", m->tag);
		jw_kstr(w, "guest_path", m->guest_path);
		jw_kstr(w, "fs_type", m->fs_type);
		if (m->read_only)
			jw_kbool(w, "read_only", true);
		jw_obj_end(w);
	}
	jw_arr_end(w);
}

void mounts_unmount_all(struct stereod *d)
{
	while (d->nmounts) {
		struct mount_entry *m = &d->mounts[--d->nmounts];
		char err[ERRBUF] = "";
		int rc = 0;
		if (d->mount_helper) {
			const char *args[] = {"umount", m->target, NULL};
			rc = run_helper(d, args, err);
			if (rc > 0)
				errf(err, "the mount helper exited %d", rc);
		} else if (umount2(m->target, 0)) {
			/* busy (an agent still has files open): detach so shutdown can go on */
			rc = umount2(m->target, MNT_DETACH) ? errf(err, "%s", strerror(errno)) : 0;
		}
		if (rc)
			log_warn("unmount failed", "path=%s err=\"%s\"", m->guest_path, err);
		else
			log_info("unmounted", "tag=%s path=%s", m->tag, m->guest_path);
		free(m->tag);
		free(m->guest_path);
		free(m->fs_type);
		free(m->target);
	}
}
