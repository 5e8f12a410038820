/* test_prepare.c — prepare_corpus end to end with the real GPT-2 tokenizer: text files → shards,
 * read back; end-of-text before every document, decode(tokens) gives the documents back, shard
 * sizes, prepare.json, the directory walk, and the failures (which must leave nothing behind).
 * Needs data/gpt2 (encoder.json, vocab.bpe; `make deps` fetches it) or the directory in argv[1].
 * Build: gcc -std=c11 -O2 -Wall -Wextra -Iruntime tests/unit/test_prepare.c runtime/prepare.c
 *        runtime/shards.c runtime/tokenizer.c runtime/util.c -o bin/test_prepare -lm */
#define _POSIX_C_SOURCE 200809L
#include "prepare.h"
#include "shards.h"
#include "tokenizer.h"
#include "util.h"
#include <glob.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int npass, nfail;
static char dir[512];
static const char *tokdir = "data/gpt2";
static Tokenizer *tok;

static void check(int cond, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf(cond ? "ok - " : "not ok - ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  if (cond) npass++; else nfail++;
}

static char *path_of(const char *name) {
  static char buf[8][700];
  static int k;
  char *p = buf[k++ % 8];
  snprintf(p, sizeof buf[0], "%s/%s", dir, name);
  return p;
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  if (!f || fputs(text, f) < 0 || fclose(f)) { perror(path); exit(2); }
}

static int exists(const char *p) { struct stat st; return stat(p, &st) == 0; }

/* ---------------- the corpus ---------------- */

/* Documents of the fortune-style files (joined by "%" lines); edge cases included: a "%%" line and
 * a " %" line are not separators, UTF-8 outside ASCII, a document without a final newline. */
static const char *DOCS_A[] = {
  "The early bird gets the worm,\nbut the second mouse gets the cheese.\n",
  "A day without sunshine is like, you know, night.\n",
  "Caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9\x65 \xe2\x80\x94 na\xc3\xafve fa\xc3\xa7\x61\x64\x65.\n",
  "100%% sure:\n%%\nis not a separator, nor is\n %\n",
  "Emoji \xf0\x9f\x98\x80 and CJK \xe6\xbc\xa2\xe5\xad\x97.\n",
  "    Indented text\n\twith tabs\n\n\nand blank lines.\n",
  "if (x < 0) { return -x; } /* code, too */\n",
  "Windows line endings\r\nare kept inside documents.\r\n",
  "Short.\n",
  "It was a dark and stormy night; the rain fell in torrents.\n",
  "All generalizations are false, including this one.\n",
  "Numbers: 3.14159 2.71828 1.41421 6.02e23\n",
  "<html><body>markup</body></html>\n",
  "He who laughs last thinks slowest.\n",
  "Quotes \"double\" and 'single' and `back`.\n",
};
static const char *DOCS_B[] = {
  "To be or not to be, that is the question.\n",
  "Whether 'tis nobler in the mind to suffer\nthe slings and arrows of outrageous fortune,\n",
  "Or to take arms against a sea of troubles\n",
  "And by opposing end them.\n",
  "Brevity is the soul of wit.\n",
  "The rest is silence.\n",
  "Something is rotten in the state of Denmark.\n",
  "Neither a borrower nor a lender be.\n",
  "There are more things in heaven and earth, Horatio,\n",
  "than are dreamt of in your philosophy.\n",
  "Frailty, thy name is woman!\n",
  "Last document, no newline at the end",
};
static const char *DOC_C = "A whole file without separators is one document.\n%\tnot a separator either\nEnd.\n";

#define N_A (sizeof DOCS_A / sizeof *DOCS_A)
#define N_B (sizeof DOCS_B / sizeof *DOCS_B)

static void make_corpus(void) {
  mkdir(path_of("in"), 0755);
  /* a.txt: "%\n" between documents and a final one; one separator with CRLF */
  size_t cap = 1 << 16, n = 0;
  char *s = calloc(cap, 1);
  for (size_t i = 0; i < N_A; i++) n += (size_t)snprintf(s + n, cap - n, "%s%s", DOCS_A[i], i == 3 ? "%\r\n" : "%\n");
  write_text(path_of("in/a.txt"), s);
  /* b.txt: starts with a separator, has an empty document ("%\n%\n"), no final separator */
  n = (size_t)snprintf(s, cap, "%%\n");
  for (size_t i = 0; i < N_B; i++) n += (size_t)snprintf(s + n, cap - n, "%s%s", DOCS_B[i], i == 4 ? "%\n%\n" : i + 1 < N_B ? "%\n" : "");
  write_text(path_of("in/b.txt"), s);
  write_text(path_of("in/c.txt"), DOC_C);
  free(s);
}

/* ---------------- reading the output back ---------------- */

typedef struct { int32_t *t; size_t n; int nshards, sizes_ok; } Stream;

/* Concatenate PREFIX_*.bin in order; sizes_ok = every shard but the last holds exactly `per` tokens. */
static Stream read_split(const char *out, const char *prefix, size_t per) {
  Stream s = {0};
  s.sizes_ok = 1;
  char pat[800], err[1024];
  snprintf(pat, sizeof pat, "%s/%s_*.bin", out, prefix);
  glob_t g;
  if (glob(pat, 0, NULL, &g)) return s;
  for (size_t i = 0; i < g.gl_pathc; i++) {
    char want[800];
    snprintf(want, sizeof want, "%s/%s_%06zu.bin", out, prefix, i);
    size_t n;
    int32_t *t = shard_read(g.gl_pathv[i], 50257, &n, err, sizeof err);
    if (!t || strcmp(want, g.gl_pathv[i])) { printf("    %s\n", t ? "shards not numbered from 0" : err); s.sizes_ok = 0; free(t); continue; }
    if (i + 1 < g.gl_pathc && n != per) s.sizes_ok = 0;
    if (n == 0 || n > per) s.sizes_ok = 0;
    s.t = xrealloc(s.t, (s.n + n) * sizeof *s.t);
    memcpy(s.t + s.n, t, n * sizeof *t);
    s.n += n;
    s.nshards++;
    free(t);
  }
  globfree(&g);
  return s;
}

/* Split a stream at its EOT tokens into decoded documents. Returns the count, or -1 when the stream
 * does not start with EOT or a piece fails to decode. */
static int split_docs(const Stream *s, char ***docs) {
  if (!s->n || s->t[0] != GPT2_EOT) return -1;
  int nd = 0;
  *docs = NULL;
  for (size_t i = 0; i < s->n;) {
    size_t j = i + 1;
    while (j < s->n && s->t[j] != GPT2_EOT) j++;
    size_t len;
    char *d = tok_decode(tok, s->t + i + 1, j - i - 1, &len);
    if (!d) return -1;
    *docs = xrealloc(*docs, (size_t)(nd + 1) * sizeof **docs);
    (*docs)[nd++] = d;
    i = j;
  }
  return nd;
}

/* Every expected document appears, in input order, in exactly one of the two splits. */
static int merge_ok(const char **want, int nwant, char **tr, int ntr, char **va, int nva) {
  int i = 0, j = 0;
  for (int k = 0; k < nwant; k++) {
    if (i < ntr && !strcmp(tr[i], want[k])) i++;
    else if (j < nva && !strcmp(va[j], want[k])) j++;
    else { printf("    document %d not found in order: \"%.40s\"\n", k, want[k]); return 0; }
  }
  return i == ntr && j == nva;
}

static int leftovers(const char *out) {
  char pat[800];
  snprintf(pat, sizeof pat, "%s.tmp.*", out);
  glob_t g;
  int n = glob(pat, 0, NULL, &g) == 0 ? (int)g.gl_pathc : 0;
  if (n) globfree(&g);
  return n;
}

static char *slurp(const char *p) {
  size_t n;
  char *s = read_file(p, &n);
  return s ? s : calloc(1, 1);
}

static void free_docs(char **d, int n) {
  for (int i = 0; i < n; i++) free(d[i]);
  free(d);
}

/* ---------------- tests ---------------- */

static void test_fortune_style(void) {
  char err[1024];
  const char *in[3] = {path_of("in/a.txt"), path_of("in/b.txt"), path_of("in/c.txt")};
  char out[700];
  snprintf(out, sizeof out, "%s", path_of("out/fortunes"));
  const size_t per = 50;
  int rc = prepare_corpus(tokdir, in, 3, "%", out, 0.2, per, err, sizeof err);
  check(rc == 0, "prepare 3 files with doc_sep \"%%\"%s%s", rc ? ": " : "", rc ? err : "");
  if (rc) return;
  check(leftovers(out) == 0, "no temporary directory left behind");

  Stream tr = read_split(out, "train", per), va = read_split(out, "val", per);
  check(tr.n && va.n && tr.sizes_ok && va.sizes_ok,
        "train (%zu tokens, %d shard(s)) and val (%zu tokens, %d shard(s)): %zu tokens a shard, the last holds the rest",
        tr.n, tr.nshards, va.n, va.nshards, per);
  check(tr.nshards > 1, "the corpus spans several train shards");

  const char *want[64];
  int nw = 0;
  for (size_t i = 0; i < N_A; i++) want[nw++] = DOCS_A[i];
  for (size_t i = 0; i < N_B; i++) want[nw++] = DOCS_B[i];
  want[nw++] = DOC_C;
  char **dt = NULL, **dv = NULL;
  int ntr = split_docs(&tr, &dt), nva = split_docs(&va, &dv);
  check(ntr > 0 && nva > 0, "each split starts with end-of-text, one EOT before each document (%d train, %d val)", ntr, nva);
  check(ntr + nva == nw, "document count: %d + %d = %d (empty documents skipped)", ntr, nva, nw);
  check(ntr > 0 && nva > 0 && merge_ok(want, nw, dt, ntr, dv, nva),
        "decode(tokens) between EOTs reproduces every document, in input order within each split");

  /* the EOT count equals the document count: no stray EOT inside a document */
  size_t eots = 0;
  for (size_t i = 0; i < tr.n; i++) eots += tr.t[i] == GPT2_EOT;
  for (size_t i = 0; i < va.n; i++) eots += va.t[i] == GPT2_EOT;
  check(eots == (size_t)nw, "exactly one EOT a document (%zu)", eots);

  /* tokens are the tokenizer's own encoding of the document */
  int32_t *ids = NULL;
  size_t n = 0, cap = 0;
  tok_encode(tok, DOCS_A[0], strlen(DOCS_A[0]), &ids, &n, &cap);
  int found = 0;
  const Stream *both[2] = {&tr, &va};
  for (int k = 0; k < 2 && !found; k++)
    for (size_t i = 0; i + n + 1 <= both[k]->n && !found; i++)
      found = both[k]->t[i] == GPT2_EOT && !memcmp(both[k]->t + i + 1, ids, n * sizeof *ids);
  free(ids);
  check(found, "a document's tokens are EOT followed by tok_encode(document)");

  char *js = slurp(path_of("out/fortunes/prepare.json"));
  char frag[200];
  snprintf(frag, sizeof frag, "\"documents\": {\"train\": %d, \"val\": %d}", ntr, nva);
  int jok = strstr(js, frag) != NULL;
  snprintf(frag, sizeof frag, "\"tokens\": {\"train\": %zu, \"val\": %zu}", tr.n, va.n);
  jok = jok && strstr(js, frag) && strstr(js, "\"seed\": ") && strstr(js, "\"doc_sep\": \"%\"") &&
        strstr(js, "a.txt") && strstr(js, "\"tokenizer\": ") && strstr(js, "\"files\": 3");
  check(jok, "prepare.json records inputs, counts, tokenizer, doc_sep and seed");
  free(js);

  /* the loader reads the result */
  char pat[800];
  snprintf(pat, sizeof pat, "%s/train_*.bin", out);
  Loader *l = loader_open(pat, 1, 8, 50257, 0, 1, 1, err, sizeof err);
  int32_t a[8], b[8];
  check(l && loader_next(l, a, b, err, sizeof err) == 0 && a[1] == b[0], "the loader opens the train shards");
  loader_close(l);

  /* the same inputs give the same output (the split is deterministic) */
  char out2[700];
  snprintf(out2, sizeof out2, "%s", path_of("out/again"));
  rc = prepare_corpus(tokdir, in, 3, "%", out2, 0.2, per, err, sizeof err);
  Stream tr2 = read_split(out2, "train", per), va2 = read_split(out2, "val", per);
  check(rc == 0 && tr2.n == tr.n && va2.n == va.n && !memcmp(tr2.t, tr.t, tr.n * 4) && !memcmp(va2.t, va.t, va.n * 4),
        "preparing again gives identical shards");
  free(tr2.t);
  free(va2.t);

  free_docs(dt, ntr > 0 ? ntr : 0);
  free_docs(dv, nva > 0 ? nva : 0);
  free(tr.t);
  free(va.t);
}

static void test_directory_input(void) {
  char err[1024];
  mkdir(path_of("tree"), 0755);
  mkdir(path_of("tree/sub"), 0755);
  mkdir(path_of("tree/.git"), 0755);
  write_text(path_of("tree/.git/config"), "hidden: must be skipped\n");
  write_text(path_of("tree/.hidden.txt"), "hidden too\n");
  static char texts[12][200];
  const char *want[12];
  /* names sort as the walk visits them: f00..f05, then sub/ (sub/g06..g11) */
  for (int i = 0; i < 12; i++) {
    snprintf(texts[i], sizeof texts[i], "/* file %d */\nint f%d(void) { return %d * %d; }\n%%\n", i, i, i, i + 1);
    char name[64];
    snprintf(name, sizeof name, i < 6 ? "tree/f%02d.c" : "tree/sub/g%02d.c", i);
    write_text(path_of(name), texts[i]);
    want[i] = texts[i];
  }
  if (symlink(path_of("tree/f00.c"), path_of("tree/link.c"))) perror("symlink");
  FILE *f = fopen(path_of("tree/sub/blob.bin"), "wb");
  fwrite("\x7f" "ELF\0\0\1\0binary", 1, 14, f);
  fclose(f);
  const char *in[1] = {path_of("tree")};
  char out[700];
  snprintf(out, sizeof out, "%s", path_of("out/tree"));
  int rc = prepare_corpus(tokdir, in, 1, NULL, out, 0.3, 0, err, sizeof err);
  check(rc == 0, "prepare a directory, whole files as documents%s%s", rc ? ": " : "", rc ? err : "");
  if (rc) return;
  Stream tr = read_split(out, "train", PREPARE_SHARD_TOKENS), va = read_split(out, "val", PREPARE_SHARD_TOKENS);
  char **dt = NULL, **dv = NULL;
  int ntr = split_docs(&tr, &dt), nva = split_docs(&va, &dv);
  check(tr.nshards == 1 && va.nshards == 1 && ntr + nva == 12 && merge_ok(want, 12, dt, ntr, dv, nva),
        "12 files (sorted walk; hidden entries, symlinks, binary files skipped) give 12 whole documents (%d train, %d val)", ntr, nva);
  char *js = slurp(path_of("out/tree/prepare.json"));
  check(strstr(js, "\"doc_sep\": null") && strstr(js, "\"files\": 13") && strstr(js, "\"binary_files_skipped\": 1"),
        "prepare.json: doc_sep null, 13 files of which 1 binary skipped");
  free(js);
  free_docs(dt, ntr > 0 ? ntr : 0);
  free_docs(dv, nva > 0 ? nva : 0);
  free(tr.t);
  free(va.t);
}

static void test_failures(void) {
  char err[1024];
  const char *in[3] = {path_of("in/a.txt"), path_of("in/b.txt"), path_of("in/c.txt")};
  int rc = prepare_corpus(tokdir, in, 3, "%", path_of("out/fortunes"), 0.2, 50, err, sizeof err);
  check(rc != 0 && strstr(err, "out/fortunes") && strstr(err, "already exists"), "an existing output directory is refused: %s", err);

  const char *missing[2] = {path_of("in/a.txt"), path_of("in/nope.txt")};
  char out[700];
  snprintf(out, sizeof out, "%s", path_of("out/failed"));
  rc = prepare_corpus(tokdir, missing, 2, "%", out, 0.2, 50, err, sizeof err);
  check(rc != 0 && strstr(err, "nope.txt") && strstr(err, "No such file"), "a missing input is named: %s", err);
  check(!exists(out) && leftovers(out) == 0, "a failed prepare leaves no output directory");

  /* one document: shards get written, then the empty split is detected; the tmp dir goes away */
  const char *one[1] = {path_of("in/c.txt")};
  rc = prepare_corpus(tokdir, one, 1, NULL, out, 0.05, 4, err, sizeof err);
  check(rc != 0 && strstr(err, "split empty"), "a split left empty is an error: %s", err);
  check(!exists(out) && leftovers(out) == 0, "a failure after writing shards leaves nothing behind");

  rc = prepare_corpus(path_of("no_tokenizer"), in, 3, "%", out, 0.2, 50, err, sizeof err);
  check(rc != 0 && strstr(err, "no_tokenizer"), "a missing tokenizer directory is named: %s", err);
  rc = prepare_corpus(tokdir, in, 3, "%", out, 0, 50, err, sizeof err);
  check(rc != 0 && strstr(err, "val_fraction"), "val_fraction 0 is refused: %s", err);
  check(!exists(out) && leftovers(out) == 0, "still nothing left behind");
}

int main(int argc, char **argv) {
  if (argc > 1) tokdir = argv[1];
  char enc[600], bpe[600];
  snprintf(enc, sizeof enc, "%s/encoder.json", tokdir);
  snprintf(bpe, sizeof bpe, "%s/vocab.bpe", tokdir);
  if (!exists(enc) || !exists(bpe)) {
    printf("not ok - the GPT-2 tokenizer is missing (%s, %s): run `make deps`\n\n0 passed, 1 failed\n", enc, bpe);
    return 1;
  }
  char err[1024];
  if (!(tok = tok_load(tokdir, err, sizeof err))) {
    printf("not ok - tok_load: %s\n\n0 passed, 1 failed\n", err);
    return 1;
  }
  const char *base = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/test_prepare.XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(dir)) { perror(dir); return 2; }
  make_corpus();
  test_fortune_style();
  test_directory_input();
  test_failures();
  tok_free(tok);
  char cmd[800];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd)) printf("# could not remove %s\n", dir);
  printf("\n%d passed, %d failed\n", npass, nfail);
  return nfail ? 1 : 0;
}
