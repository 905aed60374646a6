/* users.c - user and group lookups in the configured passwd and group files.
 * fgetpwent/fgetgrent read the file we name; NSS is never consulted, so --root tests and a
 * static binary see exactly the files they are given. They take the file's path, not the
 * daemon, so every subsystem can use them with its own configuration.
 */
#include "stereod.h"
#include <grp.h>
#include <pwd.h>

int user_lookup(const char *passwd, const char *name, uid_t *uid, gid_t *gid, struct buf *home)
{
	FILE *f = fopen(passwd, "re");
	if (!f)
		return -errno;
	struct passwd *pw;
	int rc = -ENOENT;
	while ((pw = fgetpwent(f))) {
		if (strcmp(pw->pw_name, name))
			continue;
		*uid = pw->pw_uid;
		*gid = pw->pw_gid;
		if (home) {
			home->len = 0;
			buf_puts(home, pw->pw_dir);
		}
		rc = 0;
		break;
	}
	fclose(f);
	return rc;
}

int group_lookup(const char *group, const char *name, gid_t *gid)
{
	FILE *f = fopen(group, "re");
	if (!f)
		return -errno;
	struct group *gr;
	int rc = -ENOENT;
	while ((gr = fgetgrent(f))) {
		if (!strcmp(gr->gr_name, name)) {
			*gid = gr->gr_gid;
			rc = 0;
			break;
		}
	}
	fclose(f);
	return rc;
}
