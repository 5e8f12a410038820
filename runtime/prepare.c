/* prepare.c — see prepare.h. Text files → documents → GPT-2 tokens (EOT before each document) →
 * train/val token shards in a temporary directory, renamed into place when everything is written. */
#define _POSIX_C_SOURCE 200809L
#include "prepare.h"
#include "shards.h"
#include "tokenizer.h"
#include "util.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------- the input file list ---------------- */

typedef struct {
  char **path;
  size_t n, cap;
  uint64_t bytes;
} FileList;

static void list_add(FileList *fl, const char *p, uint64_t size) {
  if (fl->n == fl->cap) {
    fl->cap = fl->cap ? 2 * fl->cap : 64;
    fl->path = xrealloc(fl->path, fl->cap * sizeof *fl->path);
  }
  size_t len = strlen(p);
  fl->path[fl->n] = memcpy(xmalloc(len + 1), p, len + 1);
  fl->n++;
  fl->bytes += size;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static char *join(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  char *s = xmalloc(la + lb + 2);
  memcpy(s, a, la);
  s[la] = '/';
  memcpy(s + la + 1, b, lb + 1);
  return s;
}

/* Regular files under dir, recursively, in sorted order so that the output is reproducible.
 * Hidden entries and symbolic links are skipped (no .git, no link cycles). */
static int walk(FileList *fl, const char *dir, char *err, size_t errlen) {
  DIR *d = opendir(dir);
  if (!d) { snprintf(err, errlen, "%s: cannot open directory: %s", dir, strerror(errno)); return -1; }
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    if (n == cap) { cap = cap ? 2 * cap : 32; names = xrealloc(names, cap * sizeof *names); }
    size_t len = strlen(e->d_name);
    names[n++] = memcpy(xmalloc(len + 1), e->d_name, len + 1);
  }
  closedir(d);
  qsort(names, n, sizeof *names, cmp_str);
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    char *p = join(dir, names[i]);
    struct stat st;
    if (!rc && lstat(p, &st)) { snprintf(err, errlen, "%s: %s", p, strerror(errno)); rc = -1; }
    if (!rc && S_ISDIR(st.st_mode)) rc = walk(fl, p, err, errlen);
    else if (!rc && S_ISREG(st.st_mode)) list_add(fl, p, (uint64_t)st.st_size);
    free(p);
    free(names[i]);
  }
  free(names);
  return rc;
}

static int collect(FileList *fl, const char **inputs, int ninputs, char *err, size_t errlen) {
  for (int i = 0; i < ninputs; i++) {
    struct stat st;
    if (stat(inputs[i], &st)) { snprintf(err, errlen, "%s: %s", inputs[i], strerror(errno)); return -1; }
    if (S_ISDIR(st.st_mode)) {
      if (walk(fl, inputs[i], err, errlen)) return -1;
    } else if (S_ISREG(st.st_mode)) {
      list_add(fl, inputs[i], (uint64_t)st.st_size);
    } else {
      snprintf(err, errlen, "%s: not a regular file or a directory", inputs[i]);
      return -1;
    }
  }
  if (fl->n == 0) { snprintf(err, errlen, "prepare: the inputs hold no files"); return -1; }
  return 0;
}

/* ---------------- output shards ---------------- */

/* Tokens of one split, buffered until a shard is full. The buffer grows as needed up to
 * shard_tokens, so a small corpus does not allocate a whole 10^8-token shard. */
typedef struct {
  const char *dir, *name; /* tmp directory; "train" or "val" */
  int32_t *buf;
  size_t n, cap, limit;
  int nshards;
  uint64_t tokens, docs;
} Sink;

static int sink_flush(Sink *s, char *err, size_t errlen) {
  if (!s->n) return 0;
  char path[4200];
  snprintf(path, sizeof path, "%s/%s_%06d.bin", s->dir, s->name, s->nshards);
  if (shard_write(path, s->buf, s->n, 0, err, errlen)) return -1;
  s->nshards++;
  s->tokens += s->n;
  s->n = 0;
  return 0;
}

static int sink_put(Sink *s, const int32_t *ids, size_t n, char *err, size_t errlen) {
  while (n) {
    if (s->n == s->limit && sink_flush(s, err, errlen)) return -1;
    size_t k = s->limit - s->n < n ? s->limit - s->n : n;
    if (s->n + k > s->cap) {
      size_t c = s->cap ? 2 * s->cap : 1 << 20;
      if (c < s->n + k) c = s->n + k;
      if (c > s->limit) c = s->limit;
      s->buf = xrealloc(s->buf, c * sizeof *s->buf);
      s->cap = c;
    }
    memcpy(s->buf + s->n, ids, k * sizeof *ids);
    s->n += k;
    ids += k;
    n -= k;
  }
  return 0;
}

/* ---------------- documents ---------------- */

static uint64_t fnv1a(const char *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
  return h;
}

/* splitmix64's finaliser: spreads FNV's bits so the top 53 give a uniform fraction. */
static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

typedef struct {
  Tokenizer *tok;
  Sink train, val;
  double val_fraction;
  int32_t *ids; /* one document's tokens: EOT, then the encoding */
  size_t nids, capids;
  uint64_t malformed; /* documents that are not valid UTF-8 (encoded byte by byte all the same) */
  uint64_t binary;    /* files skipped as binary */
} Prep;

static int emit_doc(Prep *p, const char *text, size_t len, int *bad_utf8, char *err, size_t errlen) {
  if (!len) return 0;
  double u = (double)(mix64(fnv1a(text, len) ^ (uint64_t)PREPARE_SEED) >> 11) * 0x1p-53;
  Sink *s = u < p->val_fraction ? &p->val : &p->train;
  if (p->capids < 1) { p->capids = 4096; p->ids = xrealloc(p->ids, p->capids * sizeof *p->ids); }
  p->ids[0] = tok_eot(p->tok);
  p->nids = 1;
  if (tok_encode(p->tok, text, len, &p->ids, &p->nids, &p->capids)) { p->malformed++; *bad_utf8 = 1; }
  s->docs++;
  return sink_put(s, p->ids, p->nids, err, errlen);
}

/* Is line [a, b) (without its '\n') equal to sep, a trailing '\r' ignored? */
static int is_sep(const char *a, const char *b, const char *sep, size_t seplen) {
  if (b > a && b[-1] == '\r') b--;
  return (size_t)(b - a) == seplen && !memcmp(a, sep, seplen);
}

static int do_file(Prep *p, const char *path, const char *text, size_t len, const char *sep, char *err,
                   size_t errlen) {
  int bad_utf8 = 0;
  if (!sep) {
    if (emit_doc(p, text, len, &bad_utf8, err, errlen)) return -1;
  } else {
    size_t seplen = strlen(sep);
    const char *end = text + len, *doc = text, *line = text;
    while (line < end) {
      const char *nl = memchr(line, '\n', (size_t)(end - line));
      const char *next = nl ? nl + 1 : end;
      if (is_sep(line, nl ? nl : end, sep, seplen)) {
        if (emit_doc(p, doc, (size_t)(line - doc), &bad_utf8, err, errlen)) return -1;
        doc = next;
      }
      line = next;
    }
    if (emit_doc(p, doc, (size_t)(end - doc), &bad_utf8, err, errlen)) return -1;
  }
  if (bad_utf8) printf("prepare: warning: %s is not valid UTF-8 (its bytes are encoded as they are)\n", path);
  return 0;
}

/* ---------------- prepare.json ---------------- */

static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

static void json_shards(FILE *f, const Sink *s) {
  fputc('[', f);
  for (int i = 0; i < s->nshards; i++) fprintf(f, "%s\"%s_%06d.bin\"", i ? ", " : "", s->name, i);
  fputc(']', f);
}

static int write_json(const char *dir, const char *tokenizer_dir, const char **inputs, int ninputs, const char *sep,
                      double val_fraction, size_t shard_tokens, const FileList *fl, const Prep *p, int vocab,
                      char *err, size_t errlen) {
  char *path = join(dir, "prepare.json");
  FILE *f = fopen(path, "w");
  if (!f) { snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno)); free(path); return -1; }
  fprintf(f, "{\n  \"format\": \"llm.c token shards: 1024-byte header (magic, version, count), then tokens\",\n");
  fprintf(f, "  \"tokenizer\": ");
  json_str(f, tokenizer_dir);
  fprintf(f, ",\n  \"vocab\": %d,\n  \"eot\": %d,\n  \"inputs\": [", vocab, tok_eot(p->tok));
  for (int i = 0; i < ninputs; i++) {
    if (i) fputs(", ", f);
    json_str(f, inputs[i]);
  }
  fprintf(f, "],\n  \"files\": %zu,\n  \"bytes\": %llu,\n  \"doc_sep\": ", fl->n, (unsigned long long)fl->bytes);
  if (sep) json_str(f, sep); else fputs("null", f);
  fprintf(f, ",\n  \"documents\": {\"train\": %llu, \"val\": %llu},\n", (unsigned long long)p->train.docs,
          (unsigned long long)p->val.docs);
  fprintf(f, "  \"tokens\": {\"train\": %llu, \"val\": %llu},\n", (unsigned long long)p->train.tokens,
          (unsigned long long)p->val.tokens);
  fprintf(f, "  \"invalid_utf8_documents\": %llu,\n  \"binary_files_skipped\": %llu,\n",
          (unsigned long long)p->malformed, (unsigned long long)p->binary);
  fprintf(f, "  \"shard_tokens\": %zu,\n  \"shards\": {\"train\": ", shard_tokens);
  json_shards(f, &p->train);
  fputs(", \"val\": ", f);
  json_shards(f, &p->val);
  fprintf(f, "},\n  \"val_fraction\": %.17g,\n  \"seed\": %d,\n", val_fraction, PREPARE_SEED);
  fprintf(f, "  \"split\": \"a document goes to val when splitmix64(fnv1a64(document bytes) ^ seed) / 2^64 < val_fraction\"\n}\n");
  int bad = fflush(f) || ferror(f) || fsync(fileno(f));
  int e = errno;
  if (fclose(f) && !bad) { bad = 1; e = errno; }
  if (bad) snprintf(err, errlen, "%s: write failed: %s", path, strerror(e));
  free(path);
  return bad ? -1 : 0;
}

/* ---------------- directories ---------------- */

/* mkdir -p of the directory that will hold `path`. */
static int make_parent(const char *path, char *err, size_t errlen) {
  size_t len = strlen(path);
  char *d = memcpy(xmalloc(len + 1), path, len + 1);
  char *slash = strrchr(d, '/');
  int rc = 0;
  if (slash && slash != d) {
    *slash = 0;
    for (char *c = d + 1; !rc; c++) {
      int last = *c == 0;
      if (*c == '/' || last) {
        *c = 0;
        if (mkdir(d, 0755) && errno != EEXIST) { snprintf(err, errlen, "%s: cannot create: %s", d, strerror(errno)); rc = -1; }
        if (last) break;
        *c = '/';
      }
    }
  }
  free(d);
  return rc;
}

/* Remove the temporary directory and the files we put in it. */
static void remove_tmp(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char *p = join(dir, e->d_name);
    unlink(p);
    free(p);
  }
  closedir(d);
  rmdir(dir);
}

static int dir_is_empty(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  struct dirent *e;
  int empty = 1;
  while (empty && (e = readdir(d))) empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
  closedir(d);
  return empty;
}

/* ---------------- the driver ---------------- */

int prepare_corpus(const char *tokenizer_dir, const char **inputs, int ninputs, const char *doc_sep,
                   const char *outdir_arg, double val_fraction, size_t shard_tokens, char *err, size_t errlen) {
  if (ninputs <= 0) { snprintf(err, errlen, "prepare: no input files given"); return -1; }
  if (!(val_fraction > 0 && val_fraction < 1)) {
    snprintf(err, errlen, "prepare: val_fraction %g must be in (0, 1), e.g. 0.01", val_fraction);
    return -1;
  }
  if (shard_tokens == 0) shard_tokens = PREPARE_SHARD_TOKENS;
  if (shard_tokens > (size_t)INT32_MAX) {
    snprintf(err, errlen, "prepare: shard_tokens %zu exceeds the shard format's limit of %d", shard_tokens, INT32_MAX);
    return -1;
  }
  if (doc_sep && !*doc_sep) { snprintf(err, errlen, "prepare: the document separator is empty"); return -1; }
  if (doc_sep && strchr(doc_sep, '\n')) { snprintf(err, errlen, "prepare: the document separator must be one line"); return -1; }

  /* the output directory, without trailing slashes; it must not hold anything yet */
  size_t olen = strlen(outdir_arg);
  while (olen > 1 && outdir_arg[olen - 1] == '/') olen--;
  if (!olen) { snprintf(err, errlen, "prepare: empty output directory name"); return -1; }
  char outdir[4096], tmp[4200];
  if (olen >= sizeof outdir) { snprintf(err, errlen, "prepare: output directory name too long"); return -1; }
  memcpy(outdir, outdir_arg, olen);
  outdir[olen] = 0;
  struct stat st;
  if (!stat(outdir, &st) && (!S_ISDIR(st.st_mode) || !dir_is_empty(outdir))) {
    snprintf(err, errlen, "%s: already exists%s; remove it or choose another output directory", outdir,
             S_ISDIR(st.st_mode) ? " and is not empty" : " and is not a directory");
    return -1;
  }
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", outdir, (long)getpid());

  FileList fl = {0};
  Prep p = {0};
  int rc = -1, made_tmp = 0, vocab = 0;
  if (collect(&fl, inputs, ninputs, err, errlen)) goto done;
  if (!(p.tok = tok_load(tokenizer_dir, err, errlen))) goto done;
  vocab = tok_vocab_size(p.tok);
  if (tok_eot(p.tok) < 0) { /* documents are separated by end-of-text: a vocabulary without one cannot */
    snprintf(err, errlen, "%s: the tokenizer has no end-of-text token (<|endoftext|> in tokenizer_config.json's "
             "added_tokens_decoder) to separate documents", tokenizer_dir);
    goto done;
  }
  if (make_parent(outdir, err, errlen)) goto done;
  if (mkdir(tmp, 0755)) { snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno)); goto done; }
  made_tmp = 1;
  p.val_fraction = val_fraction;
  p.train = (Sink){.dir = tmp, .name = "train", .limit = shard_tokens};
  p.val = (Sink){.dir = tmp, .name = "val", .limit = shard_tokens};

  printf("prepare: %zu file(s), %.1f MB -> %s (val_fraction %g, %zu tokens a shard)\n", fl.n, fl.bytes / 1e6,
         outdir, val_fraction, shard_tokens);
  fflush(stdout);
  double t0 = now_sec(), last = t0;
  uint64_t done_bytes = 0;
  size_t first_binary = 0;
  for (size_t i = 0; i < fl.n; i++) {
    size_t len;
    char *text = read_file(fl.path[i], &len);
    if (!text) { snprintf(err, errlen, "%s: cannot read: %s", fl.path[i], strerror(errno)); goto done; }
    /* git's heuristic: a NUL byte in the first 8000 bytes marks a binary file (an index, an
     * image, a blob in a source tree), which is no text to train on */
    if (memchr(text, 0, len < 8000 ? len : 8000)) {
      if (!p.binary++) first_binary = i;
      free(text);
      done_bytes += len;
      continue;
    }
    int bad = do_file(&p, fl.path[i], text, len, doc_sep, err, errlen);
    free(text);
    if (bad) goto done;
    done_bytes += len;
    double now = now_sec();
    if (now - last >= 2.0 || i + 1 == fl.n) {
      last = now;
      printf("prepare: %.1f/%.1f MB (%.0f%%), %.2fM tokens, %.2f MB/s\n", done_bytes / 1e6, fl.bytes / 1e6,
             fl.bytes ? 100.0 * (double)done_bytes / (double)fl.bytes : 100.0,
             (p.train.tokens + p.train.n + p.val.tokens + p.val.n) / 1e6, done_bytes / 1e6 / (now - t0 + 1e-9));
      fflush(stdout);
    }
  }
  if (p.binary)
    printf("prepare: skipped %llu binary file(s) (NUL bytes), e.g. %s\n", (unsigned long long)p.binary,
           fl.path[first_binary]);
  if (sink_flush(&p.train, err, errlen) || sink_flush(&p.val, err, errlen)) goto done;
  uint64_t ndocs = p.train.docs + p.val.docs;
  if (!p.val.docs || !p.train.docs) {
    snprintf(err, errlen,
             "prepare: %llu document(s) and val_fraction %g leave the %s split empty; give more documents "
             "(more files, or a doc_sep that splits them) or %s val_fraction",
             (unsigned long long)ndocs, val_fraction, p.val.docs ? "train" : "val", p.val.docs ? "a smaller" : "a larger");
    goto done;
  }
  if (write_json(tmp, tokenizer_dir, inputs, ninputs, doc_sep, val_fraction, shard_tokens, &fl, &p, vocab, err, errlen))
    goto done;
  int dfd = open(tmp, O_RDONLY);
  if (dfd >= 0) { fsync(dfd); close(dfd); }
  if (rename(tmp, outdir)) {
    snprintf(err, errlen, "%s: cannot rename %s into place: %s", outdir, tmp, strerror(errno));
    goto done;
  }
  made_tmp = 0;
  /* make the rename durable: fsync the parent directory */
  char parent[4096];
  snprintf(parent, sizeof parent, "%s", outdir);
  char *slash = strrchr(parent, '/');
  if (slash) *(slash == parent ? slash + 1 : slash) = 0; else strcpy(parent, ".");
  if ((dfd = open(parent, O_RDONLY)) >= 0) { fsync(dfd); close(dfd); }
  double dt = now_sec() - t0;
  printf("prepare: %llu documents -> %s: train %llu tokens in %d shard(s), val %llu tokens in %d shard(s); "
         "%.1f s, %.2f MB/s\n",
         (unsigned long long)ndocs, outdir, (unsigned long long)p.train.tokens, p.train.nshards,
         (unsigned long long)p.val.tokens, p.val.nshards, dt, fl.bytes / 1e6 / (dt + 1e-9));
  fflush(stdout);
  rc = 0;
done:
  if (made_tmp) remove_tmp(tmp);
  if (p.tok) tok_free(p.tok);
  free(p.ids);
  free(p.train.buf);
  free(p.val.buf);
  for (size_t i = 0; i < fl.n; i++) free(fl.path[i]);
  free(fl.path);
  return rc;
}
