/* valid.h - validation of names and paths that come from peers. */
#ifndef STEREO_VALID_H
#define STEREO_VALID_H
#include <stdbool.h>
#include <stddef.h>

/* A plain file name: 1..255 bytes, no '/', no NUL or control characters, not "." or "..",
 * no ".." inside, no leading '.' (upstream rules plus ours). 0 or -1 with err. */
int valid_file_name(const char *s, size_t len, char *err);
/* Lexically clean an absolute path like Go's filepath.Clean ("//a/./b/../c/" -> "/a/c").
 * -1 with err when relative, empty, too long, or holding NUL/control characters. */
int path_clean(const char *in, size_t len, char *out, size_t outsz, char *err);
/* True when path equals dir or lies under it (both clean and absolute). */
bool path_within(const char *path, const char *dir);
#endif
