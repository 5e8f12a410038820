/* fsutil.h — the filesystem steps that crash-safe outputs need: create a directory tree, write a
 * small file atomically (temporary name, fsync, rename, fsync of the directory), make a rename
 * durable, and remove a directory tree. Every function returns 0, or -1 with "PATH: reason" in err. */
#ifndef MF_FSUTIL_H
#define MF_FSUTIL_H
#include <stddef.h>

/* mkdir -p dir (mode 0755); existing directories are fine. */
int fs_mkdirs(const char *dir, char *err, size_t errlen);
/* Write n bytes to PATH.tmp.<pid>, fsync it, rename it to path and fsync path's directory: a reader
 * (or a crash) sees the old file or the new one, never a mix. */
int fs_write_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen);
/* fsync a directory, so that renames and creations inside it survive a crash. */
int fs_sync_dir(const char *dir, char *err, size_t errlen);
/* rm -rf path (a file or a directory; symbolic links are removed, never followed). Missing is fine. */
int fs_remove_tree(const char *path, char *err, size_t errlen);
int fs_is_dir(const char *path);
#endif
