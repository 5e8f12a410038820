/* test_shards.c — token shards (round trips, the llm.c byte layout, every corruption message) and
 * the loader (coverage across ranks, determinism, resume, per-epoch shuffles).
 * Prints "ok - ..." / "not ok - ..." and ends with "N passed, M failed"; exits 1 on a failure.
 * Build: gcc -std=c11 -O2 -Wall -Wextra -Iruntime tests/unit/test_shards.c runtime/shards.c
 *        runtime/util.c -o bin/test_shards -lm */
#define _POSIX_C_SOURCE 200809L
#include "shards.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int npass, nfail;
static char dir[512];

static void check(int cond, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf(cond ? "ok - " : "not ok - ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  if (cond) npass++; else nfail++;
}

/* The call failed and its message holds every given fragment (NULL-terminated list). */
static void check_err(const char *name, int failed, const char *err, ...) {
  va_list ap;
  va_start(ap, err);
  int good = failed;
  const char *missing = NULL;
  for (const char *s; (s = va_arg(ap, const char *));)
    if (good && !strstr(err, s)) { good = 0; missing = s; }
  va_end(ap);
  check(good, "%s", name);
  if (!good) printf("    %s; message was: %s%s%s\n", failed ? "wrong message" : "did not fail", err,
                    missing ? " — missing: " : "", missing ? missing : "");
}

static char *path_of(const char *name) {
  static char buf[8][700];
  static int k;
  char *p = buf[k++ % 8];
  snprintf(p, sizeof buf[0], "%s/%s", dir, name);
  return p;
}

/* Raw bytes, written the way llm.c's / modded-nanogpt's Python writes a shard: a 256 x int32
 * little-endian header, then the tokens as little-endian uint16 or uint32. */
static void write_raw(const char *path, int32_t magic, int32_t version, int32_t count, const uint32_t *tok,
                      size_t n, int tsize) {
  FILE *f = fopen(path, "wb");
  if (!f) { perror(path); exit(2); }
  unsigned char h[1024] = {0};
  int32_t hv[3] = {magic, version, count};
  for (int i = 0; i < 3; i++)
    for (int b = 0; b < 4; b++) h[4 * i + b] = (unsigned char)((uint32_t)hv[i] >> (8 * b));
  fwrite(h, 1, sizeof h, f);
  for (size_t i = 0; i < n; i++)
    for (int b = 0; b < tsize; b++) fputc((int)((tok[i] >> (8 * b)) & 0xff), f);
  fclose(f);
}

static long file_size(const char *p) {
  struct stat st;
  return stat(p, &st) ? -1 : (long)st.st_size;
}

static uint64_t rs = 88172645463325252ull;
static uint32_t rnd(uint32_t n) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (uint32_t)(rs % n); }

/* ---------------- shards ---------------- */

static void test_roundtrip(void) {
  char err[1024];
  size_t n = 100003, got = 0;
  int32_t *t = malloc(n * sizeof *t);
  for (size_t i = 0; i < n; i++) t[i] = (int32_t)rnd(50257);
  t[0] = 50256;
  const char *p = path_of("rt16.bin");
  int rc = shard_write(p, t, n, 0, err, sizeof err);
  check(rc == 0 && file_size(p) == 1024 + 2 * (long)n, "u16 shard written with 1024 + 2n bytes");
  int32_t *r = shard_read(p, 50257, &got, err, sizeof err);
  check(r && got == n && !memcmp(r, t, n * sizeof *t), "u16 round trip (%zu tokens)", n);
  FILE *f = fopen(p, "rb");
  unsigned char h[12];
  check(f && fread(h, 1, 12, f) == 12 && h[0] == (20240520 & 0xff) && h[4] == 1 && h[8] == (n & 0xff),
        "u16 header: magic 20240520, version 1, count");
  if (f) fclose(f);
  free(r);

  for (size_t i = 0; i < n; i += 7) t[i] = 100000 + (int32_t)rnd(28000); /* ids above uint16 */
  p = path_of("rt32.bin");
  rc = shard_write(p, t, n, 0, err, sizeof err);
  check(rc == 0 && file_size(p) == 1024 + 4 * (long)n, "ids >= 65536 choose uint32 (1024 + 4n bytes)");
  r = shard_read(p, 128256, &got, err, sizeof err);
  check(r && got == n && !memcmp(r, t, n * sizeof *t), "u32 round trip");
  free(r);

  int32_t small[5] = {1, 2, 3, 4, 50256};
  p = path_of("force32.bin");
  rc = shard_write(p, small, 5, 1, err, sizeof err);
  r = shard_read(p, 0, &got, err, sizeof err);
  check(rc == 0 && file_size(p) == 1024 + 20 && r && got == 5 && !memcmp(r, small, sizeof small),
        "force_u32 writes magic 20240801 / uint32 and reads back");
  free(r);

  p = path_of("empty.bin");
  rc = shard_write(p, small, 0, 0, err, sizeof err);
  r = shard_read(p, 0, &got, err, sizeof err);
  check(rc == 0 && r && got == 0 && file_size(p) == 1024, "a 0-token shard round-trips (header only)");
  free(r);

  int32_t neg[3] = {5, -1, 7};
  rc = shard_write(path_of("neg.bin"), neg, 3, 0, err, sizeof err);
  check_err("negative id refused by shard_write", rc != 0, err, "neg.bin", "-1", "offset 1", NULL);
  check(access(path_of("neg.bin"), F_OK) != 0, "a refused write leaves no file");

  /* atomicity: no .tmp files are left behind after the writes */
  char cmd[800];
  snprintf(cmd, sizeof cmd, "ls '%s' | grep -q tmp", dir);
  check(system(cmd) != 0, "no temporary files left after writes");
  free(t);
}

static void test_llmc_layout(void) {
  char err[1024];
  size_t got;
  uint32_t tok[6] = {50256, 15496, 995, 0, 50256, 65535};
  const char *p = path_of("llmc16.bin");
  write_raw(p, 20240520, 1, 6, tok, 6, 2);
  int32_t *r = shard_read(p, 0, &got, err, sizeof err);
  int same = r && got == 6;
  for (int i = 0; same && i < 6; i++) same = r[i] == (int32_t)tok[i];
  check(same, "reads a shard laid out byte by byte as llm.c writes it (uint16)");
  free(r);
  uint32_t big[3] = {128000, 9906, 128001};
  p = path_of("llmc32.bin");
  write_raw(p, 20240801, 7, 3, big, 3, 4);
  r = shard_read(p, 128256, &got, err, sizeof err);
  check(r && got == 3 && r[0] == 128000 && r[1] == 9906 && r[2] == 128001,
        "reads a Llama-3 style shard (magic 20240801, version 7, uint32)");
  free(r);
}

static void test_corruption(void) {
  char err[1024];
  size_t got;
  uint32_t tok[40];
  for (int i = 0; i < 40; i++) tok[i] = (uint32_t)i;
  int32_t *r;

  r = shard_read(path_of("nope.bin"), 0, &got, err, sizeof err);
  check_err("missing file: names it", !r, err, path_of("nope.bin"), "No such file", NULL);

  const char *p = path_of("short.bin");
  FILE *f = fopen(p, "wb");
  fwrite(tok, 1, 100, f);
  fclose(f);
  r = shard_read(p, 0, &got, err, sizeof err);
  check_err("short header", !r, err, p, "short header", "100 bytes", "1024-byte header", NULL);

  p = path_of("magic.bin");
  write_raw(p, 12345678, 1, 40, tok, 40, 2);
  r = shard_read(p, 0, &got, err, sizeof err);
  check_err("wrong magic: prints the value found", !r, err, p, "wrong magic 12345678", "20240520", NULL);

  p = path_of("version.bin");
  write_raw(p, 20240520, 7, 40, tok, 40, 2);
  r = shard_read(p, 0, &got, err, sizeof err);
  check_err("wrong version (u16 magic)", !r, err, p, "wrong version 7", "expected 1", NULL);
  p = path_of("version32.bin");
  write_raw(p, 20240801, 1, 40, tok, 40, 4);
  r = shard_read(p, 0, &got, err, sizeof err);
  check_err("wrong version (u32 magic)", !r, err, p, "wrong version 1", "expected 7", NULL);

  p = path_of("trunc.bin");
  write_raw(p, 20240520, 1, 40, tok, 35, 2);
  r = shard_read(p, 0, &got, err, sizeof err);
  check_err("truncated shard: expected vs actual size", !r, err, p, "should be 1104 bytes", "it is 1094 bytes",
            "truncated", NULL);

  p = path_of("long.bin");
  write_raw(p, 20240801, 7, 30, tok, 40, 4);
  r = shard_read(p, 0, &got, err, sizeof err);
  check_err("trailing bytes: expected vs actual size", !r, err, p, "should be 1144 bytes", "it is 1184 bytes",
            "trailing", NULL);

  p = path_of("negcount.bin");
  write_raw(p, 20240520, 1, -3, tok, 0, 2);
  r = shard_read(p, 0, &got, err, sizeof err);
  check_err("negative count", !r, err, p, "negative token count -3", NULL);

  p = path_of("vocab.bin");
  tok[17] = 60000;
  write_raw(p, 20240520, 1, 40, tok, 40, 2);
  r = shard_read(p, 50257, &got, err, sizeof err);
  check_err("token id >= vocab: gives the offset", !r, err, p, "token id 60000", "token offset 17", "byte 1058",
            "vocab 50257", NULL);
  r = shard_read(p, 0, &got, err, sizeof err);
  check(r && r[17] == 60000, "the same shard reads with vocab = 0 (no id check)");
  free(r);
  tok[17] = 17;

  p = path_of("huge32.bin");
  tok[3] = 0x80000000u;
  write_raw(p, 20240801, 7, 40, tok, 40, 4);
  r = shard_read(p, 0, &got, err, sizeof err);
  check_err("uint32 id that does not fit int32", !r, err, p, "token id 2147483648", "token offset 3", NULL);
  tok[3] = 3;

  p = path_of("adir");
  mkdir(p, 0755);
  r = shard_read(p, 0, &got, err, sizeof err);
  check_err("a directory is refused", !r, err, p, NULL);
}

/* ---------------- loader ---------------- */

enum { B = 2, T = 8, BT = B * T };
/* Three shards whose token id is a global position (shard base + index), so a batch's first token
 * identifies its window. Windows: (n−1)/BT of each. */
static const int SIZES[3] = {1000, 777, 1301}, BASE[3] = {0, 10000, 20000};
static int total_windows(void) {
  int n = 0;
  for (int s = 0; s < 3; s++) n += (SIZES[s] - 1) / BT;
  return n;
}

static void make_loader_data(void) {
  char err[1024];
  mkdir(path_of("ld"), 0755);
  for (int s = 0; s < 3; s++) {
    int32_t *t = malloc(SIZES[s] * sizeof *t);
    for (int i = 0; i < SIZES[s]; i++) t[i] = BASE[s] + i;
    char name[64];
    snprintf(name, sizeof name, "ld/train_%06d.bin", s);
    if (shard_write(path_of(name), t, SIZES[s], 0, err, sizeof err)) { printf("setup: %s\n", err); exit(2); }
    free(t);
  }
}

/* Read one batch; check that it is a real window (tokens consecutive ids of one shard, starting at
 * a multiple of BT, targets = tokens shifted by one) and return its first token, or -1. */
static int next_window(Loader *l, char *err, size_t errlen) {
  int32_t tok[BT], tgt[BT];
  if (loader_next(l, tok, tgt, err, errlen)) return -1;
  int s = tok[0] / 10000, at = tok[0] % 10000;
  if (at % BT || at + BT >= SIZES[s]) return -1;
  for (int k = 0; k < BT; k++)
    if (tok[k] != tok[0] + k || tgt[k] != tok[0] + k + 1) return -1;
  return tok[0];
}

static Loader *open_l(int rank, int world, uint64_t seed) {
  char err[1024];
  Loader *l = loader_open(path_of("ld/train_*.bin"), B, T, 65536, rank, world, seed, err, sizeof err);
  if (!l) { printf("not ok - loader_open: %s\n", err); nfail++; }
  return l;
}

static void test_loader_errors(void) {
  char err[1024];
  Loader *l = loader_open(path_of("ld/nothing_*.bin"), B, T, 0, 0, 1, 1, err, sizeof err);
  char want[800];
  snprintf(want, sizeof want, "no files match '%s'", path_of("ld/nothing_*.bin"));
  check_err("glob matching nothing", !l, err, want, NULL);

  char e[1024];
  mkdir(path_of("ld_empty"), 0755);
  int32_t one = 1;
  shard_write(path_of("ld_empty/a.bin"), &one, 1, 0, e, sizeof e);
  shard_write(path_of("ld_empty/b.bin"), &one, 0, 0, e, sizeof e);
  l = loader_open(path_of("ld_empty/*.bin"), B, T, 0, 0, 1, 1, err, sizeof err);
  check_err("empty shard is an error naming the file", !l, err, path_of("ld_empty/b.bin"), "empty shard", NULL);
  unlink(path_of("ld_empty/b.bin"));
  l = loader_open(path_of("ld_empty/*.bin"), B, T, 0, 0, 1, 1, err, sizeof err);
  check_err("too few tokens for one batch", !l, err, "B*T+1 = 17", NULL);

  mkdir(path_of("ld_bad"), 0755);
  uint32_t tok[40];
  for (int i = 0; i < 40; i++) tok[i] = 7;
  write_raw(path_of("ld_bad/a.bin"), 20240520, 1, 40, tok, 39, 2);
  l = loader_open(path_of("ld_bad/*.bin"), B, T, 0, 0, 1, 1, err, sizeof err);
  check_err("loader refuses a truncated shard", !l, err, path_of("ld_bad/a.bin"), "truncated", NULL);

  tok[21] = 50300;
  write_raw(path_of("ld_bad/a.bin"), 20240520, 1, 40, tok, 40, 2);
  l = loader_open(path_of("ld_bad/*.bin"), B, T, 50257, 0, 1, 1, err, sizeof err);
  int32_t a[BT], b[BT];
  int bad = 0;
  for (int i = 0; l && i < 2 && !bad; i++) bad = loader_next(l, a, b, err, sizeof err) != 0;
  check_err("loader reports an id >= vocab with file and offset", bad, err, path_of("ld_bad/a.bin"),
            "token id 50300", "token offset 21", NULL);
  loader_close(l);

  l = loader_open(path_of("ld/train_*.bin"), B, T, 0, 3, 3, 1, err, sizeof err);
  check_err("rank outside the world", !l, err, "rank 3", NULL);

  /* uint32 shards: one shard of 3 windows of ids 100000 + position */
  mkdir(path_of("ld32"), 0755);
  int32_t t32[3 * BT + 1];
  for (int i = 0; i <= 3 * BT; i++) t32[i] = 100000 + i;
  shard_write(path_of("ld32/a.bin"), t32, 3 * BT + 1, 0, e, sizeof e);
  l = loader_open(path_of("ld32/*.bin"), B, T, 128256, 0, 1, 3, err, sizeof err);
  int good = l != NULL, starts = 0;
  for (int i = 0; good && i < 3; i++) {
    good = loader_next(l, a, b, err, sizeof err) == 0 && (a[0] - 100000) % BT == 0;
    for (int k = 0; good && k < BT; k++) good = a[k] == a[0] + k && b[k] == a[0] + k + 1;
    if (good) starts |= 1 << ((a[0] - 100000) / BT);
  }
  check(good && starts == 7, "the loader reads uint32 shards (ids >= 65536), all 3 windows");
  loader_close(l);
}

static void test_coverage(void) {
  const int W = 3, N = total_windows();
  char err[1024];
  Loader *l = open_l(0, W, 7);
  if (!l) return;
  check(loader_total_tokens(l) == 1000 + 777 + 1301, "loader_total_tokens counts every shard");
  loader_close(l);

  /* window counts: every window start of every shard, once */
  int seen[3][2000] = {{0}};
  int ok = 1, reads = 0;
  for (int r = 0; r < W; r++) {
    l = open_l(r, W, 7);
    if (!l) return;
    int mine = (N - r + W - 1) / W; /* stream windows r, r+W, ... below N: rank r's share of epoch 0 */
    for (int i = 0; i < mine; i++) {
      int w = next_window(l, err, sizeof err);
      if (w < 0) { ok = 0; break; }
      seen[w / 10000][w % 10000]++;
      reads++;
    }
    loader_close(l);
  }
  for (int s = 0; s < 3; s++)
    for (int i = 0; i < SIZES[s]; i++) {
      int want = (i % BT == 0 && i + BT < SIZES[s]) ? 1 : 0;
      if (seen[s][i] != want) ok = 0;
    }
  check(ok && reads == N, "3 ranks cover each of the %d windows exactly once in epoch 0", N);

  /* the same holds for epoch 1 (which, with N % W != 0, starts inside a group) */
  memset(seen, 0, sizeof seen);
  ok = 1;
  reads = 0;
  for (int r = 0; r < W; r++) {
    l = open_l(r, W, 7);
    int32_t tok[BT], tgt[BT];
    int64_t g;
    for (g = r; g < N; g += W) loader_next(l, tok, tgt, err, sizeof err);
    for (; g < 2 * N; g += W) {
      int w = next_window(l, err, sizeof err);
      if (w < 0) { ok = 0; break; }
      seen[w / 10000][w % 10000]++;
      reads++;
    }
    loader_close(l);
  }
  for (int s = 0; s < 3; s++)
    for (int i = 0; i < SIZES[s]; i++)
      if (seen[s][i] != ((i % BT == 0 && i + BT < SIZES[s]) ? 1 : 0)) ok = 0;
  check(ok && reads == N, "3 ranks cover each window exactly once in epoch 1 too");

  /* rank r's stream equals every W-th window of the single-rank stream */
  Loader *one = open_l(0, 1, 7);
  int seq[600];
  for (int i = 0; i < 2 * N; i++) seq[i] = next_window(one, err, sizeof err);
  loader_close(one);
  ok = 1;
  for (int r = 0; r < W; r++) {
    l = open_l(r, W, 7);
    for (int g = r; g < 2 * N; g += W)
      if (next_window(l, err, sizeof err) != seq[g]) ok = 0;
    loader_close(l);
  }
  check(ok, "rank r of 3 reads windows r, r+3, ... of the global order");
}

static void test_determinism(void) {
  const int N = total_windows();
  char err[1024];
  Loader *a = open_l(1, 2, 42), *b = open_l(1, 2, 42), *c = open_l(1, 2, 43);
  if (!a || !b || !c) return;
  int same = 1, diff = 0;
  for (int i = 0; i < N; i++) {
    int wa = next_window(a, err, sizeof err), wb = next_window(b, err, sizeof err), wc = next_window(c, err, sizeof err);
    if (wa < 0 || wa != wb) same = 0;
    if (wa != wc) diff++;
  }
  check(same, "two loaders with the same seed give the same batches");
  check(diff > N / 2, "a different seed gives a different order (%d of %d batches differ)", diff, N);
  loader_close(a);
  loader_close(b);
  loader_close(c);

  /* epochs: with one rank, epoch 0 and epoch 1 visit the same windows in different orders */
  Loader *l = open_l(0, 1, 42);
  int e0[300], e1[300], moved = 0;
  for (int i = 0; i < N; i++) e0[i] = next_window(l, err, sizeof err);
  LoaderState s = loader_state(l);
  check(s.epoch == 1 && s.shard == 0 && s.offset == 0, "after one epoch of batches the state is epoch 1, shard 0, offset 0");
  for (int i = 0; i < N; i++) e1[i] = next_window(l, err, sizeof err);
  for (int i = 0; i < N; i++) moved += e0[i] != e1[i];
  int s0 = 0, s1 = 0;
  for (int i = 0; i < N; i++) { s0 += e0[i]; s1 += e1[i]; }
  check(moved > N / 2 && s0 == s1, "different epochs shuffle differently (%d of %d positions differ)", moved, N);
  /* the shard order changes too: the first shard visited across several epochs is not always the same */
  int firsts[3] = {0}, nd = 0;
  for (int e = 2; e < 12; e++) {
    for (int i = 0; i < N; i++) {
      int w = next_window(l, err, sizeof err);
      if (i == 0) firsts[w / 10000] = 1;
    }
  }
  nd = firsts[0] + firsts[1] + firsts[2];
  check(nd >= 2, "shard order is reshuffled per epoch (%d different first shards in 10 epochs)", nd);
  loader_close(l);
}

static void test_restore(void) {
  const int W = 3, N = total_windows();
  char err[1024];
  int steps[] = {0, 5, N / W, N / W + 1, N - 1, 2 * N / W + 3};
  int ok = 1, okx = 1;
  for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
    /* uninterrupted run of rank 0 and rank 2; state saved by rank 0 after steps[k] steps */
    Loader *a = open_l(0, W, 9), *c = open_l(2, W, 9);
    int ref0[80], ref2[80];
    for (int i = 0; i < steps[k]; i++) { next_window(a, err, sizeof err); next_window(c, err, sizeof err); }
    LoaderState s = loader_state(a), s2 = loader_state(c);
    if (s.epoch != s2.epoch || s.shard != s2.shard || s.offset != s2.offset) okx = 0;
    for (int i = 0; i < 80; i++) { ref0[i] = next_window(a, err, sizeof err); ref2[i] = next_window(c, err, sizeof err); }
    loader_close(a);
    loader_close(c);
    /* fresh loaders (rank 0 and rank 2, a wrong seed even: the state carries it) restored */
    Loader *b = open_l(0, W, 1234), *d = open_l(2, W, 5678);
    if (loader_restore(b, &s, err, sizeof err) || loader_restore(d, &s, err, sizeof err)) { ok = 0; printf("    %s\n", err); }
    for (int i = 0; i < 80; i++) {
      if (next_window(b, err, sizeof err) != ref0[i]) ok = 0;
      if (next_window(d, err, sizeof err) != ref2[i]) ok = 0;
    }
    loader_close(b);
    loader_close(d);
  }
  check(okx, "every rank reports the same state after the same number of steps");
  check(ok, "restore from a saved state continues identically (rank 0 and rank 2, inside and across epochs)");

  Loader *l = open_l(0, W, 9);
  LoaderState bad = {9, 0, 5, 0};
  int rc = loader_restore(l, &bad, err, sizeof err);
  check_err("restore refuses a shard position out of range", rc != 0, err, "shard 5", "3 shard(s)", NULL);
  bad.shard = 0;
  bad.offset = 500;
  rc = loader_restore(l, &bad, err, sizeof err);
  check_err("restore refuses an offset past the shard's windows", rc != 0, err, "offset 500", "windows of", NULL);
  LoaderState s0 = loader_state(l);
  check(s0.seed == 9 && s0.epoch == 0 && s0.shard == 0 && s0.offset == 0, "a refused restore leaves the loader as it was");
  loader_close(l);
}

int main(void) {
  const char *base = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/test_shards.XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(dir)) { perror(dir); return 2; }
  test_roundtrip();
  test_llmc_layout();
  test_corruption();
  make_loader_data();
  test_loader_errors();
  test_coverage();
  test_determinism();
  test_restore();
  char cmd[800];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd)) printf("# could not remove %s\n", dir);
  printf("\n%d passed, %d failed\n", npass, nfail);
  return nfail ? 1 : 0;
}
