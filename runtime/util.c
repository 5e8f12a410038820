/* util.c — see util.h. */
#define _POSIX_C_SOURCE 200809L
#include "util.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

void fatal(const char *fmt, ...) {
  va_list ap;
  fflush(stdout);
  fputs("runtime: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) fatal("out of memory allocating %zu bytes", n);
  return p;
}

void *xcalloc(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (!p) fatal("out of memory allocating %zu x %zu bytes", count, size);
  return p;
}

void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) fatal("out of memory reallocating %zu bytes", n);
  return q;
}

char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    int e = S_ISDIR(st.st_mode) ? EISDIR : errno;
    fclose(f);
    errno = e ? e : EINVAL;
    return NULL;
  }
  size_t n = (size_t)st.st_size;
  char *buf = malloc(n + 1);
  if (!buf) { fclose(f); errno = ENOMEM; return NULL; }
  size_t got = n ? fread(buf, 1, n, f) : 0;
  int e = ferror(f) ? errno : 0;
  fclose(f);
  if (got != n) { free(buf); errno = e ? e : EIO; return NULL; }
  buf[n] = 0;
  if (len) *len = n;
  return buf;
}

char *read_file_or_die(const char *path, size_t *len) {
  char *b = read_file(path, len);
  if (!b) fatal("%s: %s", path, strerror(errno));
  return b;
}

int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) /* NaN: keep sign, force quiet */
    return (uint16_t)((u >> 16) | 0x0040u);
  /* round to nearest even: add 0x7fff plus the lowest kept bit, then truncate */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* (token, position) pairs sorted by token then position: a stable sort by token. */
typedef struct { int32_t tok, pos; } TokPos;
static int cmp_tokpos(const void *a, const void *b) {
  const TokPos *x = a, *y = b;
  if (x->tok != y->tok) return x->tok < y->tok ? -1 : 1;
  return (x->pos > y->pos) - (x->pos < y->pos);
}

void tokidx_build(const int32_t *tokens, long n, int32_t *out) {
  TokPos *tp = xmalloc((size_t)n * sizeof *tp);
  for (long i = 0; i < n; i++) { tp[i].tok = tokens[i]; tp[i].pos = (int32_t)i; }
  qsort(tp, (size_t)n, sizeof *tp, cmp_tokpos);
  memset(out, 0, (size_t)(2 * n + 2) * sizeof *out);
  long u = 0;
  int32_t *start = out + 1;
  for (long i = 0; i < n; i++)
    if (i == 0 || tp[i].tok != tp[i - 1].tok) start[u++] = (int32_t)i;
  start[u] = (int32_t)n;
  out[0] = (int32_t)u;
  int32_t *pos = start + u + 1;
  for (long i = 0; i < n; i++) pos[i] = tp[i].pos;
  free(tp);
}
