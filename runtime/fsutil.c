/* fsutil.c — see fsutil.h. */
#define _POSIX_C_SOURCE 200809L
#include "fsutil.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fs_is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int fs_mkdirs(const char *dir, char *err, size_t errlen) {
  char p[4096];
  if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) { snprintf(err, errlen, "%s: path too long", dir); return -1; }
  /* create each prefix ending at a '/', then the whole path */
  for (char *s = p + 1;; s++) {
    int end = *s == 0;
    if (*s == '/' || end) {
      *s = 0;
      if (mkdir(p, 0755) && errno != EEXIST) { snprintf(err, errlen, "%s: cannot create: %s", p, strerror(errno)); return -1; }
      if (!fs_is_dir(p)) { snprintf(err, errlen, "%s: exists and is not a directory", p); return -1; }
      if (end) break;
      *s = '/';
    }
  }
  return 0;
}

int fs_sync_dir(const char *dir, char *err, size_t errlen) {
  int fd = open(dir, O_RDONLY);
  if (fd < 0) { snprintf(err, errlen, "%s: cannot open: %s", dir, strerror(errno)); return -1; }
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  /* some filesystems refuse fsync on directories (EINVAL): nothing more can be done there */
  if (rc && e != EINVAL) { snprintf(err, errlen, "%s: fsync failed: %s", dir, strerror(e)); return -1; }
  return 0;
}

static void parent_of(const char *path, char *out, size_t n) {
  snprintf(out, n, "%s", path);
  char *slash = strrchr(out, '/');
  if (!slash) snprintf(out, n, ".");
  else if (slash == out) out[1] = 0;
  else *slash = 0;
}

int fs_write_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen) {
  char tmp[4200], dir[4200];
  if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
    snprintf(err, errlen, "%s: path too long", path);
    return -1;
  }
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) { snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno)); return -1; }
  const char *c = data;
  size_t left = n;
  int bad = 0, e = 0;
  while (left && !bad) {
    ssize_t k = write(fd, c, left);
    if (k < 0) { if (errno == EINTR) continue; bad = 1; e = errno; break; }
    c += k;
    left -= (size_t)k;
  }
  if (!bad && fsync(fd)) { bad = 1; e = errno; }
  if (close(fd) && !bad) { bad = 1; e = errno; }
  if (bad) { unlink(tmp); snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(e)); return -1; }
  if (rename(tmp, path)) {
    e = errno;
    unlink(tmp);
    snprintf(err, errlen, "%s: cannot rename %s into place: %s", path, tmp, strerror(e));
    return -1;
  }
  parent_of(path, dir, sizeof dir);
  return fs_sync_dir(dir, err, errlen);
}

int fs_remove_tree(const char *path, char *err, size_t errlen) {
  struct stat st;
  if (lstat(path, &st)) {
    if (errno == ENOENT) return 0;
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  if (!S_ISDIR(st.st_mode)) {
    if (unlink(path)) { snprintf(err, errlen, "%s: cannot remove: %s", path, strerror(errno)); return -1; }
    return 0;
  }
  DIR *d = opendir(path);
  if (!d) { snprintf(err, errlen, "%s: cannot open directory: %s", path, strerror(errno)); return -1; }
  struct dirent *e;
  int rc = 0;
  while (!rc && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    size_t len = strlen(path) + strlen(e->d_name) + 2;
    char *p = malloc(len);
    if (!p) { snprintf(err, errlen, "%s: out of memory", path); rc = -1; break; }
    snprintf(p, len, "%s/%s", path, e->d_name);
    rc = fs_remove_tree(p, err, errlen);
    free(p);
  }
  closedir(d);
  if (!rc && rmdir(path)) { snprintf(err, errlen, "%s: cannot remove: %s", path, strerror(errno)); rc = -1; }
  return rc;
}
