/* test_tokenizer.c — checks runtime/tokenizer.c: exact ids on every golden case of
 * tests/golden/tokenizer_cases.json (made by the npm package gpt-3-encoder's own encoder), the round
 * trip decode(encode(s)) == s, malformed UTF-8, and clear errors for missing or malformed files.
 * Run from the repository root after scripts/fetch_tokenizer.sh:
 *   gcc -std=c11 -O2 -Wall -Wextra -Iruntime tests/unit/test_tokenizer.c runtime/tokenizer.c runtime/util.c \
 *       -o bin/test_tokenizer -Wl,-Bstatic -lpcre2-8 -Wl,-Bdynamic -lm && bin/test_tokenizer
 * Optional argument: the tokenizer directory (default data/gpt2). Prints "ok - ..." / "not ok - ..."
 * and ends with "N passed, M failed"; exits 1 when anything failed. */
#define _POSIX_C_SOURCE 200809L
#include "tokenizer.h"
#include "util.h"
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int n_pass, n_fail;

static void check(int ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf(ok ? "ok - " : "not ok - ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  if (ok) n_pass++; else n_fail++;
}

/* ---------------------------------------------------------------- a small JSON reader
 * Enough for the golden file: objects, arrays, strings (all escapes, surrogate pairs -> UTF-8),
 * integers, true/false/null. */
typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } JType;
typedef struct JVal JVal;
struct JVal {
  JType type;
  long long num;
  char *str; size_t len;          /* J_STR (UTF-8, may hold NUL bytes) */
  JVal **items; char **keys; size_t n; /* J_ARR, J_OBJ */
};
typedef struct { const char *p, *end; const char *err; } JIn;

static void jws(JIn *j) { while (j->p < j->end && strchr(" \t\r\n", *j->p) && *j->p) j->p++; }

static int jhex4(JIn *j, unsigned *v) {
  if (j->end - j->p < 4) return -1;
  *v = 0;
  for (int i = 0; i < 4; i++) {
    char c = j->p[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    *v = *v * 16 + (unsigned)d;
  }
  j->p += 4;
  return 0;
}

static void put_utf8(char **s, size_t *n, size_t *cap, unsigned cp) {
  if (*n + 4 >= *cap) { *cap = *cap * 2 + 16; *s = xrealloc(*s, *cap); }
  unsigned char *o = (unsigned char *)*s + *n;
  if (cp < 0x80) { o[0] = (unsigned char)cp; *n += 1; }
  else if (cp < 0x800) { o[0] = (unsigned char)(0xC0 | cp >> 6); o[1] = (unsigned char)(0x80 | (cp & 63)); *n += 2; }
  else if (cp < 0x10000) {
    o[0] = (unsigned char)(0xE0 | cp >> 12); o[1] = (unsigned char)(0x80 | (cp >> 6 & 63));
    o[2] = (unsigned char)(0x80 | (cp & 63)); *n += 3;
  } else {
    o[0] = (unsigned char)(0xF0 | cp >> 18); o[1] = (unsigned char)(0x80 | (cp >> 12 & 63));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 63)); o[3] = (unsigned char)(0x80 | (cp & 63)); *n += 4;
  }
}

static JVal *jparse(JIn *j);

static int jstring(JIn *j, char **out, size_t *outlen) {
  size_t n = 0, cap = 16;
  char *s = xmalloc(cap);
  if (j->p >= j->end || *j->p != '"') { j->err = "expected a string"; free(s); return -1; }
  j->p++;
  for (;;) {
    if (j->p >= j->end) { j->err = "unterminated string"; free(s); return -1; }
    char c = *j->p++;
    if (c == '"') break;
    if (c != '\\') {
      if (n + 1 >= cap) { cap *= 2; s = xrealloc(s, cap); }
      s[n++] = c;
      continue;
    }
    if (j->p >= j->end) { j->err = "unterminated escape"; free(s); return -1; }
    char e = *j->p++;
    unsigned cp;
    switch (e) {
    case '"': cp = '"'; break;
    case '\\': cp = '\\'; break;
    case '/': cp = '/'; break;
    case 'b': cp = 8; break;
    case 'f': cp = 12; break;
    case 'n': cp = 10; break;
    case 'r': cp = 13; break;
    case 't': cp = 9; break;
    case 'u':
      if (jhex4(j, &cp)) { j->err = "bad \\u escape"; free(s); return -1; }
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        unsigned lo;
        if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u') { j->err = "lone high surrogate"; free(s); return -1; }
        j->p += 2;
        if (jhex4(j, &lo) || lo < 0xDC00 || lo > 0xDFFF) { j->err = "bad low surrogate"; free(s); return -1; }
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) { j->err = "lone low surrogate"; free(s); return -1; }
      break;
    default: j->err = "bad escape"; free(s); return -1;
    }
    put_utf8(&s, &n, &cap, cp);
  }
  s[n] = 0;
  *out = s;
  *outlen = n;
  return 0;
}

static JVal *jnew(JType t) { JVal *v = xcalloc(1, sizeof *v); v->type = t; return v; }

static void jfree(JVal *v) {
  if (!v) return;
  for (size_t i = 0; i < v->n; i++) { jfree(v->items[i]); if (v->keys) free(v->keys[i]); }
  free(v->items); free(v->keys); free(v->str); free(v);
}

static JVal *jparse(JIn *j) {
  jws(j);
  if (j->p >= j->end) { j->err = "unexpected end"; return NULL; }
  char c = *j->p;
  if (c == '{' || c == '[') {
    JVal *v = jnew(c == '{' ? J_OBJ : J_ARR);
    char close = c == '{' ? '}' : ']';
    j->p++;
    jws(j);
    if (j->p < j->end && *j->p == close) { j->p++; return v; }
    for (;;) {
      char *key = NULL;
      size_t klen;
      if (v->type == J_OBJ) {
        jws(j);
        if (jstring(j, &key, &klen)) { jfree(v); return NULL; }
        jws(j);
        if (j->p >= j->end || *j->p != ':') { j->err = "expected ':'"; free(key); jfree(v); return NULL; }
        j->p++;
      }
      JVal *item = jparse(j);
      if (!item) { free(key); jfree(v); return NULL; }
      v->items = xrealloc(v->items, (v->n + 1) * sizeof *v->items);
      if (v->type == J_OBJ) v->keys = xrealloc(v->keys, (v->n + 1) * sizeof *v->keys), v->keys[v->n] = key;
      v->items[v->n++] = item;
      jws(j);
      if (j->p < j->end && *j->p == ',') { j->p++; continue; }
      if (j->p < j->end && *j->p == close) { j->p++; return v; }
      j->err = "expected ',' or a closing bracket";
      jfree(v);
      return NULL;
    }
  }
  if (c == '"') {
    JVal *v = jnew(J_STR);
    if (jstring(j, &v->str, &v->len)) { jfree(v); return NULL; }
    return v;
  }
  if (c == '-' || (c >= '0' && c <= '9')) {
    char *e;
    JVal *v = jnew(J_NUM);
    v->num = strtoll(j->p, &e, 10);
    if (e == j->p || (e < j->end && (*e == '.' || *e == 'e' || *e == 'E'))) { j->err = "expected an integer"; jfree(v); return NULL; }
    j->p = e;
    return v;
  }
  if (j->end - j->p >= 4 && !strncmp(j->p, "true", 4)) { j->p += 4; JVal *v = jnew(J_BOOL); v->num = 1; return v; }
  if (j->end - j->p >= 5 && !strncmp(j->p, "false", 5)) { j->p += 5; return jnew(J_BOOL); }
  if (j->end - j->p >= 4 && !strncmp(j->p, "null", 4)) { j->p += 4; return jnew(J_NULL); }
  j->err = "unexpected character";
  return NULL;
}

static const JVal *jget(const JVal *o, const char *key) {
  if (!o || o->type != J_OBJ) return NULL;
  for (size_t i = 0; i < o->n; i++)
    if (!strcmp(o->keys[i], key)) return o->items[i];
  return NULL;
}

/* ---------------------------------------------------------------- helpers */

typedef struct { int32_t *ids; size_t n, cap; } Ids;

static int encode(Tokenizer *t, const char *s, size_t len, Ids *out) {
  out->n = 0;
  return tok_encode(t, s, len, &out->ids, &out->n, &out->cap);
}

static int same_ids(const Ids *a, const int32_t *b, size_t n) {
  return a->n == n && (n == 0 || memcmp(a->ids, b, n * sizeof *b) == 0);
}

/* 1 when decode(ids) is exactly s[0..len). */
static int round_trips(const Tokenizer *t, const Ids *ids, const char *s, size_t len) {
  size_t dl;
  char *d = tok_decode(t, ids->ids, ids->n, &dl);
  int ok = d && dl == len && memcmp(d, s, len) == 0;
  free(d);
  return ok;
}

static void print_first_difference(const Ids *got, const int32_t *want, size_t n) {
  size_t i = 0;
  while (i < got->n && i < n && got->ids[i] == want[i]) i++;
  printf("#   first difference at index %zu: got %s%d, want %s%d (got %zu ids, want %zu)\n", i,
         i < got->n ? "" : "end ", i < got->n ? got->ids[i] : -1, i < n ? "" : "end ", i < n ? want[i] : -1,
         got->n, n);
}

static void write_file(const char *path, const char *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, len, f) != len || fclose(f)) fatal("%s: cannot write", path);
}

/* tok_load on dir must fail with a message containing `needle`. */
static void expect_load_error(const char *dir, const char *needle, const char *what) {
  char err[512] = "";
  Tokenizer *t = tok_load(dir, err, sizeof err);
  check(!t && strstr(err, needle) != NULL, "%s: error names '%s' (%s)", what, needle, err);
  tok_free(t);
}

/* ---------------------------------------------------------------- tests */

static void test_goldens(Tokenizer *t, const char *path) {
  size_t len;
  char *text = read_file(path, &len);
  if (!text) { check(0, "%s: cannot read", path); return; }
  JIn j = {text, text + len, NULL};
  JVal *root = jparse(&j);
  const JVal *cases = jget(root, "cases");
  if (!root || !cases || cases->type != J_ARR || cases->n == 0) {
    check(0, "%s: parse (%s)", path, j.err ? j.err : "no \"cases\" array");
    jfree(root); free(text);
    return;
  }
  Ids got = {0};
  int all_ids = 1, all_rt = 1;
  for (size_t i = 0; i < cases->n; i++) {
    const JVal *c = cases->items[i], *name = jget(c, "name"), *s = jget(c, "text"), *ids = jget(c, "ids");
    if (!name || name->type != J_STR || !s || s->type != J_STR || !ids || ids->type != J_ARR) {
      check(0, "%s: case %zu lacks name/text/ids", path, i);
      all_ids = 0;
      continue;
    }
    int32_t *want = xmalloc((ids->n + 1) * sizeof *want);
    for (size_t k = 0; k < ids->n; k++) want[k] = (int32_t)ids->items[k]->num;
    int rc = encode(t, s->str, s->len, &got);
    int ok = rc == 0 && same_ids(&got, want, ids->n);
    check(ok, "golden '%s': %zu ids as gpt-3-encoder", name->str, ids->n);
    if (!ok) { all_ids = 0; print_first_difference(&got, want, ids->n); }
    int rt = round_trips(t, &got, s->str, s->len);
    check(rt, "golden '%s': decode(encode(text)) == text", name->str);
    all_rt &= rt;
    /* Once more: the second encoding is served from the piece cache and must agree. */
    rc = encode(t, s->str, s->len, &got);
    check(rc == 0 && same_ids(&got, want, ids->n), "golden '%s': same ids from the cache", name->str);
    free(want);
  }
  check(all_ids && all_rt, "all %zu golden cases", cases->n);
  free(got.ids);
  jfree(root);
  free(text);
}

/* Texts on which gpt-3-encoder's comma-keyed merge table could differ from the canonical encoder
 * (see make_tokenizer_goldens.js); ids from tiktoken 1.0.22, encoding "gpt2", encode_ordinary. */
static void test_canonical(Tokenizer *t) {
  static const struct { const char *text; int n; int32_t ids[16]; } cases[] = {
      {"\",\"", 1, {2430}},
      {"[\"a\",\"b\"]", 5, {14692, 64, 2430, 65, 8973}},
      {"','", 1, {41707}},
      {"],[", 1, {38430}},
      {"f(\"a\"),\"b\"", 7, {69, 7203, 64, 4943, 553, 65, 1}},
      {"x = {\"a\": 1,\"b\": 2}", 11, {87, 796, 19779, 64, 1298, 352, 553, 65, 1298, 362, 92}},
  };
  Ids got = {0};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int rc = encode(t, cases[i].text, strlen(cases[i].text), &got);
    int ok = rc == 0 && same_ids(&got, cases[i].ids, (size_t)cases[i].n);
    check(ok, "canonical ids (tiktoken) for %s", cases[i].text);
    if (!ok) print_first_difference(&got, cases[i].ids, (size_t)cases[i].n);
  }
  free(got.ids);
}

static void test_decode(Tokenizer *t) {
  check(tok_vocab_size(t) == 50257, "vocabulary has 50257 tokens (got %d)", tok_vocab_size(t));
  int32_t eot = GPT2_EOT;
  size_t len;
  char *s = tok_decode(t, &eot, 1, &len);
  check(s && len == 13 && !strcmp(s, "<|endoftext|>"), "id 50256 decodes to <|endoftext|>");
  free(s);
  int32_t bad[2] = {464, 50257};
  check(tok_decode(t, bad, 2, &len) == NULL, "decode of id 50257 (outside the vocabulary) gives NULL");
  bad[1] = -1;
  check(tok_decode(t, bad, 2, &len) == NULL, "decode of id -1 gives NULL");
  s = tok_decode(t, NULL, 0, &len);
  check(s && len == 0 && s[0] == 0, "decode of no ids gives the empty string");
  free(s);
}

static void test_malformed_utf8(Tokenizer *t) {
  static const struct { const char *what, *s; size_t len; } cases[] = {
      {"invalid bytes 0xFF 0xFE", "ab\xff\xfe" "cd", 6},
      {"lone continuation byte", "x\x80y", 3},
      {"truncated sequence at the end", "\xe6\x97\xa5\xe6\x97", 5},
      {"overlong encoding", "a\xc0\xaf" "b", 4},
      {"UTF-8-encoded surrogate", " \xed\xa0\x80 z", 6},
      {"invalid byte after spaces", "x   \xff   y", 9},
  };
  Ids got = {0};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int rc = encode(t, cases[i].s, cases[i].len, &got);
    check(rc == -1 && got.n > 0 && round_trips(t, &got, cases[i].s, cases[i].len),
          "malformed UTF-8 (%s): returns -1 and the bytes round-trip", cases[i].what);
  }
  /* The malformed byte is a piece of its own; the text around it encodes as it would alone. */
  Ids a = {0}, b = {0};
  encode(t, "hello", 5, &a);
  encode(t, "world", 5, &b);
  int rc = encode(t, "hello\xffworld", 11, &got);
  int ok = rc == -1 && got.n == a.n + 1 + b.n && !memcmp(got.ids, a.ids, a.n * sizeof(int32_t)) &&
           !memcmp(got.ids + a.n + 1, b.ids, b.n * sizeof(int32_t));
  if (ok) {
    size_t len;
    char *d = tok_decode(t, got.ids + a.n, 1, &len);
    ok = d && len == 1 && (unsigned char)d[0] == 0xFF;
    free(d);
  }
  check(ok, "malformed UTF-8: 'hello\\xffworld' = ids(hello) + byte 0xFF + ids(world)");
  free(a.ids); free(b.ids); free(got.ids);
}

/* Round trip over real text: every fortune file, when the package is installed. */
static void test_fortunes(Tokenizer *t) {
  const char *dir = "/usr/share/games/fortunes";
  DIR *d = opendir(dir);
  if (!d) { printf("# %s not present: fortune round trip skipped\n", dir); return; }
  struct dirent *e;
  Ids got = {0};
  size_t files = 0, bytes = 0, tokens = 0;
  int ok = 1;
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name);
    if (e->d_name[0] == '.' || (n > 4 && !strcmp(e->d_name + n - 4, ".dat"))) continue;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    size_t len;
    char *s = read_file(path, &len);
    if (!s) continue;
    encode(t, s, len, &got);
    if (!round_trips(t, &got, s, len)) { ok = 0; printf("#   round trip differs for %s\n", path); }
    files++; bytes += len; tokens += got.n;
    free(s);
  }
  closedir(d);
  check(ok && files > 0, "round trip of %zu fortune files (%zu bytes, %zu tokens)", files, bytes, tokens);
  free(got.ids);
}

static void test_bad_files(const char *src) {
  expect_load_error("/nonexistent/gpt2", "/nonexistent/gpt2/encoder.json", "missing directory");

  char tmpl[] = "/tmp/test_tokenizer.XXXXXX";
  char *dir = mkdtemp(tmpl);
  if (!dir) { check(0, "mkdtemp"); return; }
  char enc_path[512], bpe_path[512], p[600];
  snprintf(enc_path, sizeof enc_path, "%s/encoder.json", src);
  snprintf(bpe_path, sizeof bpe_path, "%s/vocab.bpe", src);
  size_t elen, blen;
  char *enc = read_file(enc_path, &elen), *bpe = read_file(bpe_path, &blen);
  if (!enc || !bpe) { check(0, "read %s and %s", enc_path, bpe_path); free(enc); free(bpe); return; }
  char dst_enc[600], dst_bpe[600];
  snprintf(dst_enc, sizeof dst_enc, "%s/encoder.json", dir);
  snprintf(dst_bpe, sizeof dst_bpe, "%s/vocab.bpe", dir);

  expect_load_error(dir, dst_enc, "empty directory (no encoder.json)");
  write_file(dst_enc, enc, elen);
  expect_load_error(dir, dst_bpe, "no vocab.bpe");

  /* Truncated encoder.json at several points: an error naming the file, never a crash. */
  size_t cuts[] = {0, 1, 2, 7, 100, elen / 3, elen / 2, elen - 2, elen - 1};
  write_file(dst_bpe, bpe, blen);
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    write_file(dst_enc, enc, cuts[i]);
    snprintf(p, sizeof p, "encoder.json truncated to %zu of %zu bytes", cuts[i], elen);
    expect_load_error(dir, "encoder.json", p);
  }
  static const struct { const char *json, *needle, *what; } bad_json[] = {
      {"{\"a\": 0, \"b\" 1}", "expected ':'", "encoder.json missing ':'"},
      {"{\"a\": 0, \"b\": 0}", "used twice", "encoder.json duplicate id"},
      {"{\"a\": 0, \"b\": 5}", "out of range", "encoder.json id gap"},
      {"{\"a\": 0, \"a\": 1}", "same token as a lower id", "encoder.json duplicate token"},
      {"{\"a\": 0, \"\\ud800\": 1}", "surrogate", "encoder.json lone surrogate"},
      {"{\"a\": 0, \"\\ud83d\\ude00\": 1}", "U+1F600", "encoder.json character outside the byte alphabet"},
      {"{\"a\": 0, \"b\": -1}", "non-negative", "encoder.json negative id"},
      {"[1, 2]", "'{'", "encoder.json not an object"},
      {"{\"a\": 0, \"b\": 1}", "0x00", "encoder.json without the 256 byte tokens"},
  };
  for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
    write_file(dst_enc, bad_json[i].json, strlen(bad_json[i].json));
    expect_load_error(dir, bad_json[i].needle, bad_json[i].what);
  }

  /* Bad vocab.bpe with the real encoder.json. */
  write_file(dst_enc, enc, elen);
  static const struct { const char *bpe, *needle, *what; } bad_bpe[] = {
      {"\xc4\xa0 t\n", "'#version", "vocab.bpe without its header"},
      {"#version: 0.2\n\xc4\xa0 t\n\xc4\xa0t\n", "line 3: expected two tokens", "vocab.bpe line with one token"},
      {"#version: 0.2\n\xc4\xa0 t\nqqqqzz x\n", "'qqqqzz' is not in encoder.json", "vocab.bpe unknown token"},
      {"#version: 0.2\n\xc4\xa0the \xc4\xa0the\n", "line 2: merged token", "vocab.bpe merge result not in the vocabulary"},
      {"#version: 0.2\n\xc4\xa0 t\n\xc4\xa0 t\n", "appears twice", "vocab.bpe duplicate merge"},
  };
  for (size_t i = 0; i < sizeof bad_bpe / sizeof bad_bpe[0]; i++) {
    write_file(dst_bpe, bad_bpe[i].bpe, strlen(bad_bpe[i].bpe));
    expect_load_error(dir, bad_bpe[i].needle, bad_bpe[i].what);
  }
  /* A vocab.bpe cut inside its last line: either an error or a load, never a crash; here the cut
   * leaves a token that does not exist. */
  write_file(dst_bpe, bpe, blen - 3);
  expect_load_error(dir, "vocab.bpe: line 50001", "vocab.bpe cut in its last line");

  unlink(dst_enc);
  unlink(dst_bpe);
  rmdir(dir);
  free(enc);
  free(bpe);
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "data/gpt2";
  char err[512] = "";
  Tokenizer *t = tok_load(dir, err, sizeof err);
  check(t != NULL, "load %s%s%s", dir, t ? "" : ": ", t ? "" : err);
  if (t) {
    test_decode(t);
    test_goldens(t, "tests/golden/tokenizer_cases.json");
    test_canonical(t);
    test_malformed_utf8(t);
    test_fortunes(t);
    test_bad_files(dir);
    tok_free(t);
  } else {
    printf("# run scripts/fetch_tokenizer.sh first\n");
  }
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
