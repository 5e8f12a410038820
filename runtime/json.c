/* json.c — see json.h. A recursive-descent parser over the grammar of RFC 8259. */
#include "json.h"
#include "util.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *s;
  size_t n, i;
  const char *name;
  char *err;
  size_t errlen;
  int failed;
} P;

static int fail(P *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(P *p, const char *fmt, ...) {
  if (p->failed) return -1;
  p->failed = 1;
  long line = 1, col = 1;
  for (size_t k = 0; k < p->i && k < p->n; k++) {
    if (p->s[k] == '\n') line++, col = 1;
    else col++;
  }
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(p->err, p->errlen, "%s:%ld:%ld: bad JSON: %s", p->name, line, col, msg);
  return -1;
}

static void ws(P *p) {
  while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r')) p->i++;
}

static void put_utf8(char *o, size_t *k, unsigned cp) {
  if (cp < 0x80) o[(*k)++] = (char)cp;
  else if (cp < 0x800) { o[(*k)++] = (char)(0xC0 | cp >> 6); o[(*k)++] = (char)(0x80 | (cp & 63)); }
  else if (cp < 0x10000) {
    o[(*k)++] = (char)(0xE0 | cp >> 12); o[(*k)++] = (char)(0x80 | ((cp >> 6) & 63)); o[(*k)++] = (char)(0x80 | (cp & 63));
  } else {
    o[(*k)++] = (char)(0xF0 | cp >> 18); o[(*k)++] = (char)(0x80 | ((cp >> 12) & 63));
    o[(*k)++] = (char)(0x80 | ((cp >> 6) & 63)); o[(*k)++] = (char)(0x80 | (cp & 63));
  }
}

static int hex4(P *p, size_t at, unsigned *v) {
  if (at + 4 > p->n) return -1;
  unsigned x = 0;
  for (int k = 0; k < 4; k++) {
    char c = p->s[at + (size_t)k];
    x <<= 4;
    if (c >= '0' && c <= '9') x |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') x |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') x |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *v = x;
  return 0;
}

/* p->i at the opening quote; the decoded string (UTF-8 never grows: \uXXXX is 6 bytes, ≤ 4 out). */
static char *string(P *p) {
  size_t start = ++p->i, k = 0;
  size_t end = start;
  while (end < p->n && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
  char *o = xmalloc(end - start + 1);
  while (1) {
    if (p->i >= p->n) { fail(p, "unterminated string"); break; }
    unsigned char c = (unsigned char)p->s[p->i];
    if (c == '"') { p->i++; o[k] = 0; return o; }
    if (c < 0x20) { fail(p, "control character in a string"); break; }
    if (c != '\\') { o[k++] = (char)c; p->i++; continue; }
    char e = p->i + 1 < p->n ? p->s[p->i + 1] : 0;
    const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
    const char *hit = e ? strchr(from, e) : NULL;
    if (hit) { o[k++] = to[hit - from]; p->i += 2; continue; }
    if (e != 'u') { fail(p, "bad escape \\%c", e ? e : '?'); break; }
    unsigned cp, lo;
    if (hex4(p, p->i + 2, &cp)) { fail(p, "bad \\u escape"); break; }
    p->i += 6;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (p->i + 1 >= p->n || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u' || hex4(p, p->i + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
        fail(p, "unpaired surrogate in a \\u escape");
        break;
      }
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      p->i += 6;
    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
      fail(p, "unpaired surrogate in a \\u escape");
      break;
    }
    put_utf8(o, &k, cp);
  }
  free(o);
  return NULL;
}

static int digits(P *p) {
  size_t s = p->i;
  while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
  return p->i > s;
}

static int number(P *p, double *out) {
  size_t s = p->i;
  if (p->s[p->i] == '-') p->i++;
  if (p->i < p->n && p->s[p->i] == '0') p->i++;
  else if (!digits(p)) return fail(p, "bad number");
  if (p->i < p->n && p->s[p->i] == '.') { p->i++; if (!digits(p)) return fail(p, "bad number"); }
  if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
    p->i++;
    if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
    if (!digits(p)) return fail(p, "bad number");
  }
  char buf[64];
  size_t len = p->i - s;
  if (len >= sizeof buf) return fail(p, "number too long");
  memcpy(buf, p->s + s, len);
  buf[len] = 0;
  *out = strtod(buf, NULL);
  return 0;
}

static int lit(P *p, const char *w) {
  size_t n = strlen(w);
  if (p->i + n <= p->n && !memcmp(p->s + p->i, w, n)) { p->i += n; return 1; }
  return 0;
}

static void push(JVal *v, int *cap, const JVal *item, char *key) {
  if (v->n == *cap) {
    *cap = *cap ? 2 * *cap : 8;
    v->items = xrealloc(v->items, (size_t)*cap * sizeof *v->items);
    if (v->type == J_OBJ) v->keys = xrealloc(v->keys, (size_t)*cap * sizeof *v->keys);
  }
  v->items[v->n] = *item;
  if (v->type == J_OBJ) v->keys[v->n] = key;
  v->n++;
}

static void free_inner(JVal *v);

static int value(P *p, JVal *v, int depth) {
  memset(v, 0, sizeof *v);
  if (depth > 200) return fail(p, "nested too deeply");
  ws(p);
  if (p->i >= p->n) return fail(p, "unexpected end of input");
  char c = p->s[p->i];
  if (c == '{' || c == '[') {
    int obj = c == '{', cap = 0;
    v->type = obj ? J_OBJ : J_ARR;
    p->i++;
    ws(p);
    if (p->i < p->n && p->s[p->i] == (obj ? '}' : ']')) { p->i++; return 0; }
    while (1) {
      char *key = NULL;
      ws(p);
      if (obj) {
        if (p->i >= p->n || p->s[p->i] != '"') return fail(p, "expected a string key");
        if (!(key = string(p))) return -1;
        for (int k = 0; k < v->n; k++)
          if (!strcmp(v->keys[k], key)) { fail(p, "duplicate key \"%s\"", key); free(key); return -1; }
        ws(p);
        if (p->i >= p->n || p->s[p->i] != ':') { fail(p, "expected ':' after key \"%s\"", key); free(key); return -1; }
        p->i++;
      }
      JVal item;
      if (value(p, &item, depth + 1)) { free_inner(&item); free(key); return -1; }
      push(v, &cap, &item, key);
      ws(p);
      if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
      if (p->i < p->n && p->s[p->i] == (obj ? '}' : ']')) { p->i++; return 0; }
      return fail(p, obj ? "expected ',' or '}' in an object" : "expected ',' or ']' in an array");
    }
  }
  if (c == '"') {
    v->type = J_STR;
    return (v->str = string(p)) ? 0 : -1;
  }
  if (c == '-' || (c >= '0' && c <= '9')) { v->type = J_NUM; return number(p, &v->num); }
  if (lit(p, "true")) { v->type = J_BOOL; v->b = 1; return 0; }
  if (lit(p, "false")) { v->type = J_BOOL; return 0; }
  if (lit(p, "null")) { v->type = J_NULL; return 0; }
  return fail(p, "unexpected character '%c'", c);
}

static void free_inner(JVal *v) {
  if (v->type == J_STR) free(v->str);
  for (int k = 0; k < v->n; k++) {
    free_inner(&v->items[k]);
    if (v->type == J_OBJ) free(v->keys[k]);
  }
  free(v->items);
  free(v->keys);
  memset(v, 0, sizeof *v);
}

JVal *json_parse(const char *text, size_t n, const char *name, char *err, size_t errlen) {
  P p = {.s = text, .n = n, .name = name, .err = err, .errlen = errlen};
  JVal *v = xmalloc(sizeof *v);
  if (value(&p, v, 0) == 0) {
    ws(&p);
    if (p.i == p.n) return v;
    fail(&p, "trailing characters after the value");
  }
  free_inner(v);
  free(v);
  return NULL;
}

JVal *json_read_file(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) { snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno)); return NULL; }
  size_t cap = 1 << 16, n = 0, r;
  char *buf = xmalloc(cap);
  while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) buf = xrealloc(buf, cap *= 2);
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) { snprintf(err, errlen, "%s: read error", path); free(buf); return NULL; }
  JVal *v = json_parse(buf, n, path, err, errlen);
  free(buf);
  return v;
}

void json_free(JVal *v) {
  if (!v) return;
  free_inner(v);
  free(v);
}

const JVal *json_get(const JVal *v, const char *key) {
  if (!v || v->type != J_OBJ) return NULL;
  for (int k = 0; k < v->n; k++)
    if (!strcmp(v->keys[k], key)) return &v->items[k];
  return NULL;
}
