/* fsutil.h - file helpers that are safe as root: atomic replace (temp file in the same
 * directory, fchmod/fchown before publish, fsync file, rename, fsync directory) and
 * openat-based walks that refuse symlinks. All return 0 / fd or -errno. */
#ifndef STEREO_FSUTIL_H
#define STEREO_FSUTIL_H
#include <stddef.h>
#include <sys/types.h>
#include "common/buf.h"

/* Replace dirfd/name with data atomically. uid/gid (uid_t)-1 keep the caller's. The temp file
 * is ATOMIC_TMP_PREFIX + 12 hex digits in the same directory, whatever the name's length. */
#define ATOMIC_TMP_PREFIX ".stereo-tmp-"
int atomic_write_at(int dirfd, const char *name, const void *data, size_t len,
		    mode_t mode, uid_t uid, gid_t gid);
/* Remove the temp files a killed writer left in dirfd (a kill -9 between create and rename):
 * how many were removed, or -errno. Call at start-up, before any writer runs. */
int atomic_tmp_sweep(int dirfd);
int atomic_write(const char *path, const void *data, size_t len, mode_t mode, uid_t uid, gid_t gid);
/* openat(dirfd, name) of a directory, refusing a symlink at name. */
int open_dir_nofollow(int dirfd, const char *name);
/* Open rel (a relative path, "a/b/c") beneath dirfd, refusing a symlink in any component. */
int open_beneath(int dirfd, const char *rel, int flags, mode_t mode);
/* openat2(2) with RESOLVE_* flags (e.g. RESOLVE_IN_ROOT to confine a path to dirfd, or
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS); O_CLOEXEC added. fd or -errno. */
int open_resolve(int dirfd, const char *path, int flags, unsigned long long resolve);
int mkdir_p(const char *path, mode_t mode);
/* ROOT + PATH (an absolute path) with ROOT's trailing slashes dropped, malloc'd; NULL when out
 * of memory. "/" + "/etc" is "/etc". */
char *path_join_root(const char *root, const char *path);
int write_all(int fd, const void *data, size_t len);
/* Read a whole file up to max bytes (-EFBIG beyond). */
int read_file(const char *path, struct buf *out, size_t max);
int fd_set_nonblock(int fd, int on);
#endif
