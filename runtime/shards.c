/* shards.c — see shards.h. Token shards in the llm.c / modded-nanogpt format (read, validate,
 * write atomically) and the training data loader over a glob of them.
 *
 * Loader order. One batch is one window of B·T+1 consecutive tokens of a shard; window k of a shard
 * starts at token k·B·T, so consecutive windows overlap by one token and a shard of n tokens holds
 * (n−1) / (B·T) windows (the tail after the last one is not read). Documents are already separated
 * by end-of-text tokens in the stream, so a window simply packs across document boundaries.
 * For epoch e the shard order is a permutation of the (sorted) glob list seeded by (seed, e), and
 * each shard's windows are visited in a permutation seeded by (seed, e, shard): the epoch's
 * "global order" is the concatenation. The epochs follow one another into one endless stream, and
 * at step s rank r reads stream window s·W + r. So the W ranks together read every window exactly
 * once per epoch, and all ranks share one position — the start of the step's group of W windows —
 * which is what LoaderState holds: one saved state resumes every rank. When the number of windows
 * is not a multiple of W, a group straddles two epochs (some ranks already read the next one).
 *
 * Memory stays bounded: only the shard being read is mapped (mmap), plus its window permutation
 * (4 bytes a window) and the shard order (4 bytes a shard). */
#define _POSIX_C_SOURCE 200809L
#include "shards.h"
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER_INTS 256
#define HEADER_BYTES (HEADER_INTS * 4)

/* ---------------- shard header ---------------- */

typedef struct {
  int64_t ntok;  /* token count from the header */
  int tsize;     /* bytes per token: 2 (magic 20240520, version 1) or 4 (20240801, version 7) */
} ShardInfo;

static int32_t le32(const unsigned char *p) {
  return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static void put_le32(unsigned char *p, int32_t v) {
  uint32_t u = (uint32_t)v;
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(u >> (8 * i));
}

/* Read and check the header of an open shard against the file's size. Every message starts with
 * the path and says what is wrong, with the values found. */
static int probe_fd(const char *path, int fd, ShardInfo *si, char *err, size_t errlen) {
  struct stat st;
  if (fstat(fd, &st)) { snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(errno)); return -1; }
  if (!S_ISREG(st.st_mode)) { snprintf(err, errlen, "%s: not a regular file", path); return -1; }
  unsigned char h[HEADER_BYTES];
  size_t got = 0;
  while (got < sizeof h) {
    ssize_t k = pread(fd, h + got, sizeof h - got, (off_t)got);
    if (k < 0) {
      if (errno == EINTR) continue;
      snprintf(err, errlen, "%s: read failed: %s", path, strerror(errno));
      return -1;
    }
    if (k == 0) break;
    got += (size_t)k;
  }
  if (got < sizeof h) {
    snprintf(err, errlen, "%s: short header: the file has %zu bytes, a token shard starts with a %d-byte header",
             path, got, HEADER_BYTES);
    return -1;
  }
  int32_t magic = le32(h), version = le32(h + 4), count = le32(h + 8);
  if (magic == SHARD_MAGIC_U16) {
    if (version != 1) {
      snprintf(err, errlen, "%s: wrong version %d for magic %d (expected 1: uint16 tokens)", path, version, magic);
      return -1;
    }
    si->tsize = 2;
  } else if (magic == SHARD_MAGIC_U32) {
    if (version != 7) {
      snprintf(err, errlen, "%s: wrong version %d for magic %d (expected 7: uint32 tokens)", path, version, magic);
      return -1;
    }
    si->tsize = 4;
  } else {
    snprintf(err, errlen, "%s: wrong magic %d (expected %d for uint16 tokens or %d for uint32 tokens): not a token shard",
             path, magic, SHARD_MAGIC_U16, SHARD_MAGIC_U32);
    return -1;
  }
  if (count < 0) { snprintf(err, errlen, "%s: negative token count %d in the header", path, count); return -1; }
  si->ntok = count;
  int64_t want = HEADER_BYTES + (int64_t)count * si->tsize, have = (int64_t)st.st_size;
  if (have != want) {
    snprintf(err, errlen,
             "%s: size mismatch: the header says %d tokens of %d bytes, so the file should be %lld bytes "
             "(1024 + %d x %d), but it is %lld bytes (%s)",
             path, count, si->tsize, (long long)want, count, si->tsize, (long long)have,
             have < want ? "a truncated shard" : "trailing bytes after the tokens");
    return -1;
  }
  return 0;
}

/* Token i of a shard's token bytes, little-endian. */
static uint32_t tok_at(const unsigned char *p, int tsize, int64_t i) {
  const unsigned char *q = p + i * tsize;
  if (tsize == 2) return (uint32_t)q[0] | (uint32_t)q[1] << 8;
  return (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
}

/* An id must fit int32 and, when vocab > 0, be < vocab. `index` is the token's position in the
 * shard; the message gives it and its byte offset in the file. */
static int check_id(const char *path, uint32_t id, int64_t index, int tsize, int vocab, char *err, size_t errlen) {
  if (id > (uint32_t)INT32_MAX || (vocab > 0 && id >= (uint32_t)vocab)) {
    char why[64];
    if (vocab > 0) snprintf(why, sizeof why, "is >= vocab %d", vocab);
    else snprintf(why, sizeof why, "does not fit an int32");
    snprintf(err, errlen, "%s: token id %lu at token offset %lld (byte %lld) %s", path, (unsigned long)id,
             (long long)index, (long long)(HEADER_BYTES + index * tsize), why);
    return -1;
  }
  return 0;
}

/* ---------------- shard_read / shard_write ---------------- */

int32_t *shard_read(const char *path, int vocab, size_t *ntok, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) { snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno)); return NULL; }
  ShardInfo si;
  if (probe_fd(path, fd, &si, err, errlen)) { close(fd); return NULL; }
  int32_t *out = malloc((size_t)(si.ntok ? si.ntok : 1) * sizeof *out);
  if (!out) {
    snprintf(err, errlen, "%s: out of memory for %lld tokens", path, (long long)si.ntok);
    close(fd);
    return NULL;
  }
  /* read in chunks and widen to int32, checking every id */
  enum { CHUNK = 1 << 16 };
  unsigned char *buf = malloc((size_t)CHUNK * 4);
  if (!buf) { snprintf(err, errlen, "%s: out of memory", path); free(out); close(fd); return NULL; }
  int64_t done = 0;
  while (done < si.ntok) {
    int64_t n = si.ntok - done < CHUNK ? si.ntok - done : CHUNK;
    size_t want = (size_t)n * (size_t)si.tsize, got = 0;
    off_t at = (off_t)(HEADER_BYTES + done * si.tsize);
    while (got < want) {
      ssize_t k = pread(fd, buf + got, want - got, at + (off_t)got);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) {
        snprintf(err, errlen, "%s: read failed at byte %lld: %s", path, (long long)(at + (off_t)got),
                 k < 0 ? strerror(errno) : "unexpected end of file (the file shrank while being read)");
        free(buf); free(out); close(fd);
        return NULL;
      }
      got += (size_t)k;
    }
    for (int64_t i = 0; i < n; i++) {
      uint32_t id = tok_at(buf, si.tsize, i);
      if (check_id(path, id, done + i, si.tsize, vocab, err, errlen)) { free(buf); free(out); close(fd); return NULL; }
      out[done + i] = (int32_t)id;
    }
    done += n;
  }
  free(buf);
  close(fd);
  *ntok = (size_t)si.ntok;
  return out;
}

static int write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n) {
    ssize_t k = write(fd, c, n);
    if (k < 0) { if (errno == EINTR) continue; return -1; }
    c += k;
    n -= (size_t)k;
  }
  return 0;
}

int shard_write(const char *path, const int32_t *tokens, size_t ntok, int force_u32, char *err, size_t errlen) {
  if (ntok > (size_t)INT32_MAX) {
    snprintf(err, errlen, "%s: %zu tokens exceed the format's limit of %d tokens a shard", path, ntok, INT32_MAX);
    return -1;
  }
  int u32 = force_u32;
  for (size_t i = 0; i < ntok; i++) {
    if (tokens[i] < 0) {
      snprintf(err, errlen, "%s: token id %d at offset %zu is negative", path, tokens[i], i);
      return -1;
    }
    if (tokens[i] > 65535) u32 = 1;
  }
  int tsize = u32 ? 4 : 2;
  unsigned char h[HEADER_BYTES] = {0};
  put_le32(h, u32 ? SHARD_MAGIC_U32 : SHARD_MAGIC_U16);
  put_le32(h + 4, u32 ? 7 : 1);
  put_le32(h + 8, (int32_t)ntok);

  char tmp[4200];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
    snprintf(err, errlen, "%s: path too long", path);
    return -1;
  }
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) { snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno)); return -1; }
  enum { CHUNK = 1 << 16 };
  unsigned char *buf = malloc((size_t)CHUNK * 4);
  int bad = !buf || write_all(fd, h, sizeof h);
  int e = buf ? errno : ENOMEM;
  for (size_t done = 0; !bad && done < ntok;) {
    size_t n = ntok - done < CHUNK ? ntok - done : CHUNK;
    for (size_t i = 0; i < n; i++) {
      uint32_t v = (uint32_t)tokens[done + i];
      for (int b = 0; b < tsize; b++) buf[i * tsize + (size_t)b] = (unsigned char)(v >> (8 * b));
    }
    bad = write_all(fd, buf, n * (size_t)tsize);
    e = errno;
    done += n;
  }
  free(buf);
  if (!bad) { bad = fsync(fd); e = errno; }
  if (close(fd) && !bad) { bad = 1; e = errno; }
  if (bad) { unlink(tmp); snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(e)); return -1; }
  if (rename(tmp, path)) {
    e = errno;
    unlink(tmp);
    snprintf(err, errlen, "%s: cannot rename %s into place: %s", path, tmp, strerror(e));
    return -1;
  }
  /* make the rename itself durable: fsync the directory that holds the entry */
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash) *(slash == dir ? slash + 1 : slash) = 0; else strcpy(dir, ".");
  int dfd = open(dir, O_RDONLY);
  if (dfd >= 0) { fsync(dfd); close(dfd); }
  return 0;
}

/* ---------------- seeded shuffles ---------------- */

/* splitmix64 (Steele, Lea, Flood 2014): a bijective 64-bit mixer, and as a counter-based stream a
 * generator good enough for shuffling. */
static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

typedef struct { uint64_t s; } Rng;

static uint64_t rng_next(Rng *r) { r->s += 0x9e3779b97f4a7c15ull; return mix64(r->s); }

/* Uniform in [0, n) without modulo bias: reject the lowest (2^64 mod n) values. */
static uint64_t rng_below(Rng *r, uint64_t n) {
  uint64_t lim = (0 - n) % n, x;
  do x = rng_next(r); while (x < lim);
  return x % n;
}

/* A stream for (seed, epoch, which): which = 0 for the shard order, 1 + f for shard f's windows. */
static Rng rng_for(uint64_t seed, int64_t epoch, uint64_t which) {
  Rng r = {mix64(mix64(mix64(seed) ^ (uint64_t)epoch) ^ which)};
  return r;
}

/* Fisher–Yates: a uniform permutation of 0..n-1. */
static void shuffle(uint32_t *a, uint32_t n, Rng *r) {
  for (uint32_t i = 0; i < n; i++) a[i] = i;
  for (uint32_t i = n; i > 1; i--) {
    uint32_t j = (uint32_t)rng_below(r, i), t = a[i - 1];
    a[i - 1] = a[j];
    a[j] = t;
  }
}

/* ---------------- the loader ---------------- */

typedef struct {
  char *path;
  int64_t ntok, nwin; /* tokens, and windows of B·T+1 tokens */
  int tsize;
} ShardFile;

/* A place in the endless stream: window `off` of the shard at position `pos` of epoch `epoch`'s
 * shard order. Normalised: off < nwin of that shard. */
typedef struct { int64_t epoch, pos, off; } Cursor;

struct Loader {
  ShardFile *f;
  int nf;
  int64_t BT;           /* B·T: a window is BT+1 tokens */
  int vocab, rank, world;
  uint64_t seed;
  size_t total_tokens;
  Cursor cur;           /* start of the next group of `world` windows (shared by every rank) */
  uint32_t *order;      /* shard order of epoch order_epoch (-1: none yet) */
  int64_t order_epoch;
  int map_file;         /* file mapped now (-1: none) */
  unsigned char *map;
  size_t map_len;
  uint32_t *perm;       /* window order of file perm_file in epoch perm_epoch */
  int perm_file;
  int64_t perm_epoch;
};

static const uint32_t *order_for(Loader *l, int64_t epoch) {
  if (l->order_epoch != epoch) {
    Rng r = rng_for(l->seed, epoch, 0);
    shuffle(l->order, (uint32_t)l->nf, &r);
    l->order_epoch = epoch;
  }
  return l->order;
}

static int64_t nwin_at(Loader *l, const Cursor *c) { return l->f[order_for(l, c->epoch)[c->pos]].nwin; }

/* Move k windows forward in the stream (k = 0 just normalises), crossing shards and epochs and
 * skipping shards too short to hold a window. Ends because the data holds at least one window. */
static void advance(Loader *l, Cursor *c, int64_t k) {
  for (;;) {
    int64_t n = nwin_at(l, c);
    if (c->off + k < n) { c->off += k; return; }
    k -= n - c->off;
    c->off = 0;
    if (++c->pos == l->nf) { c->pos = 0; c->epoch++; }
  }
}

static void unmap(Loader *l) {
  if (l->map) munmap(l->map, l->map_len);
  l->map = NULL;
  l->map_file = -1;
}

/* Map file i whole, checking that it is still the shard that loader_open measured. */
static int map_file(Loader *l, int i, char *err, size_t errlen) {
  if (l->map_file == i) return 0;
  unmap(l);
  const ShardFile *sf = &l->f[i];
  int fd = open(sf->path, O_RDONLY);
  if (fd < 0) { snprintf(err, errlen, "%s: cannot open: %s", sf->path, strerror(errno)); return -1; }
  ShardInfo si;
  if (probe_fd(sf->path, fd, &si, err, errlen)) { close(fd); return -1; }
  if (si.ntok != sf->ntok || si.tsize != sf->tsize) {
    snprintf(err, errlen, "%s: changed since the loader opened it (had %lld tokens of %d bytes, now %lld of %d)",
             sf->path, (long long)sf->ntok, sf->tsize, (long long)si.ntok, si.tsize);
    close(fd);
    return -1;
  }
  size_t len = (size_t)(HEADER_BYTES + sf->ntok * sf->tsize);
  void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  close(fd);
  if (m == MAP_FAILED) { snprintf(err, errlen, "%s: cannot mmap: %s", sf->path, strerror(e)); return -1; }
  l->map = m;
  l->map_len = len;
  l->map_file = i;
  return 0;
}

static void window_order(Loader *l, int64_t epoch, int i) {
  if (l->perm_file == i && l->perm_epoch == epoch) return;
  Rng r = rng_for(l->seed, epoch, 1 + (uint64_t)i);
  shuffle(l->perm, (uint32_t)l->f[i].nwin, &r);
  l->perm_file = i;
  l->perm_epoch = epoch;
}

static void loader_free(Loader *l) {
  if (!l) return;
  unmap(l);
  for (int i = 0; i < l->nf; i++) free(l->f[i].path);
  free(l->f);
  free(l->order);
  free(l->perm);
  free(l);
}

Loader *loader_open(const char *pattern, int B, int T, int vocab, int rank, int world, uint64_t seed,
                    char *err, size_t errlen) {
  if (B <= 0 || T <= 0 || (int64_t)B * T > INT32_MAX - 1) {
    snprintf(err, errlen, "loader: bad batch shape B=%d T=%d", B, T);
    return NULL;
  }
  if (world <= 0 || rank < 0 || rank >= world) {
    snprintf(err, errlen, "loader: bad rank %d of world size %d", rank, world);
    return NULL;
  }
  glob_t g;
  int rc = glob(pattern, 0, NULL, &g);
  if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
    if (rc == 0) globfree(&g);
    snprintf(err, errlen, "no files match '%s'", pattern);
    return NULL;
  }
  if (rc != 0) {
    snprintf(err, errlen, "'%s': %s", pattern, rc == GLOB_NOSPACE ? "out of memory expanding the pattern"
                                                                  : "read error expanding the pattern");
    return NULL;
  }
  if (g.gl_pathc > (size_t)INT32_MAX) { snprintf(err, errlen, "'%s': too many files", pattern); globfree(&g); return NULL; }

  Loader *l = calloc(1, sizeof *l);
  if (!l) { snprintf(err, errlen, "loader: out of memory"); globfree(&g); return NULL; }
  l->map_file = l->perm_file = -1;
  l->order_epoch = l->perm_epoch = -1;
  l->BT = (int64_t)B * T;
  l->vocab = vocab;
  l->rank = rank;
  l->world = world;
  l->seed = seed;
  l->f = calloc(g.gl_pathc, sizeof *l->f);
  l->order = malloc(g.gl_pathc * sizeof *l->order);
  if (!l->f || !l->order) { snprintf(err, errlen, "loader: out of memory"); globfree(&g); loader_free(l); return NULL; }

  /* glob returns the names sorted, so file index i is the same on every rank and every run */
  int64_t maxwin = 0, totwin = 0;
  for (size_t i = 0; i < g.gl_pathc; i++) {
    const char *p = g.gl_pathv[i];
    int fd = open(p, O_RDONLY);
    if (fd < 0) { snprintf(err, errlen, "%s: cannot open: %s", p, strerror(errno)); globfree(&g); loader_free(l); return NULL; }
    ShardInfo si;
    int bad = probe_fd(p, fd, &si, err, errlen);
    close(fd);
    if (!bad && si.ntok == 0) { snprintf(err, errlen, "%s: empty shard (0 tokens)", p); bad = 1; }
    if (!bad && !(l->f[i].path = strdup(p))) { snprintf(err, errlen, "loader: out of memory"); bad = 1; }
    if (bad) { globfree(&g); loader_free(l); return NULL; }
    l->nf = (int)i + 1;
    l->f[i].ntok = si.ntok;
    l->f[i].tsize = si.tsize;
    l->f[i].nwin = (si.ntok - 1) / l->BT;
    l->total_tokens += (size_t)si.ntok;
    if (l->f[i].nwin > maxwin) maxwin = l->f[i].nwin;
    totwin += l->f[i].nwin;
  }
  globfree(&g);
  if (totwin == 0) {
    snprintf(err, errlen, "'%s': %zu tokens in %d shard(s), but no shard holds one batch of B*T+1 = %lld tokens",
             pattern, l->total_tokens, l->nf, (long long)(l->BT + 1));
    loader_free(l);
    return NULL;
  }
  l->perm = malloc((size_t)maxwin * sizeof *l->perm);
  if (!l->perm) { snprintf(err, errlen, "loader: out of memory for %lld window indices", (long long)maxwin); loader_free(l); return NULL; }
  advance(l, &l->cur, 0);
  return l;
}

int loader_next(Loader *l, int32_t *tokens, int32_t *targets, char *err, size_t errlen) {
  Cursor c = l->cur;
  advance(l, &c, l->rank);
  int i = (int)order_for(l, c.epoch)[c.pos];
  if (map_file(l, i, err, errlen)) return -1;
  window_order(l, c.epoch, i);
  const ShardFile *sf = &l->f[i];
  int64_t start = (int64_t)l->perm[c.off] * l->BT;
  const unsigned char *p = l->map + HEADER_BYTES;
  for (int64_t k = 0; k <= l->BT; k++) {
    uint32_t id = tok_at(p, sf->tsize, start + k);
    if (check_id(sf->path, id, start + k, sf->tsize, l->vocab, err, errlen)) return -1;
    if (k < l->BT) tokens[k] = (int32_t)id;
    if (k > 0) targets[k - 1] = (int32_t)id;
  }
  /* the state moves only once the batch is read, so a failed call can be retried */
  advance(l, &l->cur, l->world);
  return 0;
}

LoaderState loader_state(const Loader *l) {
  LoaderState s = {l->seed, l->cur.epoch, l->cur.pos, l->cur.off};
  return s;
}

int loader_restore(Loader *l, const LoaderState *s, char *err, size_t errlen) {
  if (s->epoch < 0 || s->shard < 0 || s->shard >= l->nf || s->offset < 0) {
    snprintf(err, errlen, "loader state (epoch %lld, shard %lld, offset %lld) is out of range for %d shard(s)",
             (long long)s->epoch, (long long)s->shard, (long long)s->offset, l->nf);
    return -1;
  }
  /* the shard order depends on the seed, so check the offset under the state's seed */
  uint64_t old = l->seed;
  l->seed = s->seed;
  l->order_epoch = l->perm_epoch = -1;
  l->perm_file = -1;
  const ShardFile *sf = &l->f[order_for(l, s->epoch)[s->shard]];
  if (s->offset > sf->nwin) {
    snprintf(err, errlen,
             "loader state: offset %lld is past the %lld windows of %s (did the data or B*T change since the checkpoint?)",
             (long long)s->offset, (long long)sf->nwin, sf->path);
    l->seed = old;
    l->order_epoch = -1;
    return -1;
  }
  Cursor c = {s->epoch, s->shard, s->offset};
  advance(l, &c, 0);
  l->cur = c;
  return 0;
}

size_t loader_total_tokens(const Loader *l) { return l->total_tokens; }

void loader_close(Loader *l) { loader_free(l); }
