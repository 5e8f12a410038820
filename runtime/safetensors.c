/* safetensors.c — see safetensors.h. The header is parsed by a small recursive-descent JSON
 * reader that understands exactly what the format needs (objects, arrays, strings, integers) and
 * skips any other value it does not need. Data is little-endian; so is every host we run on. */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct { const char *name; size_t size; } DTYPES[] = {
  {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},
  {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1}, {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
};

size_t st_dtype_size(const char *dtype) {
  for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
    if (!strcmp(dtype, DTYPES[i].name)) return DTYPES[i].size;
  return 0;
}

/* ---------------- JSON header reader ---------------- */

typedef struct {
  const char *b, *s, *e;       /* start, cursor and end of the header text */
  const char *path;
  char *err; size_t errlen;
  int failed;
} J;

static int jerr(J *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int jerr(J *j, const char *fmt, ...) {
  if (j->failed) return -1;
  j->failed = 1;
  int n = snprintf(j->err, j->errlen, "%s: ", j->path);
  if (n < 0) n = 0;
  if ((size_t)n < j->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->err + n, j->errlen - (size_t)n, fmt, ap);
    va_end(ap);
  }
  return -1;
}

static void jws(J *j) {
  while (j->s < j->e && (*j->s == ' ' || *j->s == '\t' || *j->s == '\n' || *j->s == '\r')) j->s++;
}

static int jexpect(J *j, char c) {
  jws(j);
  if (j->s >= j->e || *j->s != c) return jerr(j, "bad JSON header: expected '%c' at header byte %ld", c, (long)(j->s - j->b));
  j->s++;
  return 0;
}

static void put_utf8(char **o, unsigned cp) {
  if (cp < 0x80) *(*o)++ = (char)cp;
  else if (cp < 0x800) { *(*o)++ = (char)(0xc0 | (cp >> 6)); *(*o)++ = (char)(0x80 | (cp & 0x3f)); }
  else if (cp < 0x10000) {
    *(*o)++ = (char)(0xe0 | (cp >> 12)); *(*o)++ = (char)(0x80 | ((cp >> 6) & 0x3f)); *(*o)++ = (char)(0x80 | (cp & 0x3f));
  } else {
    *(*o)++ = (char)(0xf0 | (cp >> 18)); *(*o)++ = (char)(0x80 | ((cp >> 12) & 0x3f));
    *(*o)++ = (char)(0x80 | ((cp >> 6) & 0x3f)); *(*o)++ = (char)(0x80 | (cp & 0x3f));
  }
}

static int hex4(const char *s, unsigned *v) {
  *v = 0;
  for (int i = 0; i < 4; i++) {
    char c = s[i];
    unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0') : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
               : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16u;
    if (d == 16) return -1;
    *v = *v * 16 + d;
  }
  return 0;
}

/* A JSON string, unescaped into a new malloc'd C string (NULL on error). */
static char *jstring(J *j) {
  jws(j);
  if (j->s >= j->e || *j->s != '"') { jerr(j, "bad JSON header: expected a string"); return NULL; }
  j->s++;
  char *out = xmalloc((size_t)(j->e - j->s) * 2 + 1), *o = out;
  while (j->s < j->e && *j->s != '"') {
    unsigned char c = (unsigned char)*j->s++;
    if (c < 0x20) { free(out); jerr(j, "bad JSON header: control character in a string"); return NULL; }
    if (c != '\\') { *o++ = (char)c; continue; }
    if (j->s >= j->e) break;
    char esc = *j->s++;
    switch (esc) {
    case '"': *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '/': *o++ = '/'; break;
    case 'b': *o++ = '\b'; break;
    case 'f': *o++ = '\f'; break;
    case 'n': *o++ = '\n'; break;
    case 'r': *o++ = '\r'; break;
    case 't': *o++ = '\t'; break;
    case 'u': {
      unsigned cp, lo;
      if (j->e - j->s < 4 || hex4(j->s, &cp)) { free(out); jerr(j, "bad JSON header: bad \\u escape"); return NULL; }
      j->s += 4;
      if (cp >= 0xd800 && cp < 0xdc00 && j->e - j->s >= 6 && j->s[0] == '\\' && j->s[1] == 'u' &&
          !hex4(j->s + 2, &lo) && lo >= 0xdc00 && lo < 0xe000) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        j->s += 6;
      }
      put_utf8(&o, cp);
      break;
    }
    default: free(out); jerr(j, "bad JSON header: unknown escape '\\%c'", esc); return NULL;
    }
  }
  if (j->s >= j->e) { free(out); jerr(j, "bad JSON header: unterminated string"); return NULL; }
  j->s++;
  *o = 0;
  return out;
}

/* A non-negative JSON integer (the only numbers the format has). */
static int juint(J *j, unsigned long long *v) {
  jws(j);
  if (j->s >= j->e || *j->s < '0' || *j->s > '9') return jerr(j, "bad JSON header: expected a non-negative integer");
  unsigned long long x = 0;
  while (j->s < j->e && *j->s >= '0' && *j->s <= '9') {
    if (x > (~0ull - 9) / 10) return jerr(j, "bad JSON header: integer too large");
    x = x * 10 + (unsigned)(*j->s++ - '0');
  }
  if (j->s < j->e && (*j->s == '.' || *j->s == 'e' || *j->s == 'E')) return jerr(j, "bad JSON header: expected an integer");
  *v = x;
  return 0;
}

/* Skip any JSON value (for keys we do not use). */
static int jskip(J *j, int depth) {
  if (depth > 64) return jerr(j, "bad JSON header: nested too deeply");
  jws(j);
  if (j->s >= j->e) return jerr(j, "bad JSON header: unexpected end");
  char c = *j->s;
  if (c == '"') { char *s = jstring(j); if (!s) return -1; free(s); return 0; }
  if (c == '{' || c == '[') {
    char close = c == '{' ? '}' : ']';
    j->s++;
    jws(j);
    if (j->s < j->e && *j->s == close) { j->s++; return 0; }
    for (;;) {
      if (c == '{') {
        char *k = jstring(j);
        if (!k) return -1;
        free(k);
        if (jexpect(j, ':')) return -1;
      }
      if (jskip(j, depth + 1)) return -1;
      jws(j);
      if (j->s < j->e && *j->s == ',') { j->s++; continue; }
      return jexpect(j, close);
    }
  }
  /* number, true, false, null */
  const char *st = j->s;
  while (j->s < j->e && (strchr("+-.eE", *j->s) || (*j->s >= '0' && *j->s <= '9') || (*j->s >= 'a' && *j->s <= 'z'))) j->s++;
  if (j->s == st) return jerr(j, "bad JSON header: unexpected character '%c'", c);
  return 0;
}

/* Iterate over an object's members: calls fn(key) with the cursor on the value. */
typedef int (*MemberFn)(J *j, const char *key, void *ctx);
static int jobject(J *j, MemberFn fn, void *ctx) {
  if (jexpect(j, '{')) return -1;
  jws(j);
  if (j->s < j->e && *j->s == '}') { j->s++; return 0; }
  for (;;) {
    char *k = jstring(j);
    if (!k) return -1;
    int rc = jexpect(j, ':') ? -1 : fn(j, k, ctx);
    free(k);
    if (rc) return -1;
    jws(j);
    if (j->s < j->e && *j->s == ',') { j->s++; continue; }
    return jexpect(j, '}');
  }
}

typedef struct { StTensor *t; int have_dtype, have_shape, have_off; } TensorCtx;

static int tensor_member(J *j, const char *key, void *vctx) {
  TensorCtx *c = vctx;
  StTensor *t = c->t;
  if (!strcmp(key, "dtype")) {
    char *s = jstring(j);
    if (!s) return -1;
    if (!st_dtype_size(s)) { jerr(j, "tensor %s: unknown dtype '%s'", t->name, s); free(s); return -1; }
    snprintf(t->dtype, sizeof t->dtype, "%s", s);
    free(s);
    c->have_dtype = 1;
    return 0;
  }
  if (!strcmp(key, "shape") || !strcmp(key, "data_offsets")) {
    int is_shape = key[0] == 's';
    unsigned long long v[ST_MAX_DIMS + 1];
    int n = 0;
    if (jexpect(j, '[')) return -1;
    jws(j);
    if (j->s < j->e && *j->s == ']') j->s++;
    else
      for (;;) {
        if (n == ST_MAX_DIMS + 1) return jerr(j, "tensor %s: too many entries in %s", t->name, key);
        if (juint(j, &v[n])) return -1;
        n++;
        jws(j);
        if (j->s < j->e && *j->s == ',') { j->s++; continue; }
        if (jexpect(j, ']')) return -1;
        break;
      }
    if (is_shape) {
      if (n > ST_MAX_DIMS) return jerr(j, "tensor %s: more than %d dims", t->name, ST_MAX_DIMS);
      t->ndim = n;
      t->numel = 1;
      for (int i = 0; i < n; i++) {
        if (v[i] > (1ull << 40) || (t->numel && (unsigned long long)t->numel * v[i] > (1ull << 50)))
          return jerr(j, "tensor %s: shape too large", t->name);
        t->shape[i] = (long)v[i];
        t->numel *= (long)v[i];
      }
      c->have_shape = 1;
    } else {
      if (n != 2) return jerr(j, "tensor %s: data_offsets must have 2 entries", t->name);
      t->begin = (size_t)v[0];
      t->end = (size_t)v[1];
      c->have_off = 1;
    }
    return 0;
  }
  return jskip(j, 1);
}

typedef struct { StFile *f; int cap, capmeta; } FileCtx;

static int meta_member(J *j, const char *key, void *vctx) {
  FileCtx *c = vctx;
  StFile *f = c->f;
  jws(j);
  if (j->s >= j->e || *j->s != '"') return jerr(j, "__metadata__ value of '%s' is not a string", key);
  char *v = jstring(j);
  if (!v) return -1;
  if (f->nmeta == c->capmeta) {
    c->capmeta = c->capmeta ? 2 * c->capmeta : 8;
    f->meta_key = xrealloc(f->meta_key, (size_t)c->capmeta * sizeof(char *));
    f->meta_val = xrealloc(f->meta_val, (size_t)c->capmeta * sizeof(char *));
  }
  f->meta_key[f->nmeta] = strdup(key);
  f->meta_val[f->nmeta] = v;
  if (!f->meta_key[f->nmeta]) fatal("out of memory");
  f->nmeta++;
  return 0;
}

static int top_member(J *j, const char *key, void *vctx) {
  FileCtx *c = vctx;
  StFile *f = c->f;
  if (!strcmp(key, "__metadata__")) return jobject(j, meta_member, c);
  for (int i = 0; i < f->n; i++)
    if (!strcmp(f->t[i].name, key)) return jerr(j, "tensor %s appears twice", key);
  if (f->n == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 64;
    f->t = xrealloc(f->t, (size_t)c->cap * sizeof *f->t);
  }
  StTensor *t = &f->t[f->n];
  memset(t, 0, sizeof *t);
  t->name = strdup(key);
  if (!t->name) fatal("out of memory");
  f->n++;
  TensorCtx tc = {.t = t};
  if (jobject(j, tensor_member, &tc)) return -1;
  if (!tc.have_dtype || !tc.have_shape || !tc.have_off)
    return jerr(j, "tensor %s: missing %s", key, !tc.have_dtype ? "dtype" : !tc.have_shape ? "shape" : "data_offsets");
  return 0;
}

static int cmp_begin(const void *a, const void *b) {
  const StTensor *x = *(StTensor *const *)a, *y = *(StTensor *const *)b;
  return (x->begin > y->begin) - (x->begin < y->begin);
}

int st_open(const char *path, StFile *f, char *err, size_t errlen) {
  memset(f, 0, sizeof *f);
  snprintf(f->path, sizeof f->path, "%s", path);
  size_t size;
  char *buf = read_file(path, &size);
  if (!buf) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); return -1; }
  f->buf = (unsigned char *)buf;
  f->size = size;
  J j = {.path = path, .err = err, .errlen = errlen};
  if (size < 8) { jerr(&j, "file too short for a safetensors header (%zu bytes)", size); goto fail; }
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f->buf[i];
  if (hlen > size - 8) { jerr(&j, "header length %llu exceeds the file size (%zu bytes)", (unsigned long long)hlen, size); goto fail; }
  f->data_off = 8 + (size_t)hlen;
  j.b = j.s = buf + 8;
  j.e = buf + 8 + hlen;
  FileCtx fc = {.f = f};
  jws(&j);
  if (j.s >= j.e || *j.s != '{') { jerr(&j, "header is not a JSON object (not a safetensors file?)"); goto fail; }
  if (jobject(&j, top_member, &fc)) goto fail;
  jws(&j);
  if (j.s != j.e) { jerr(&j, "trailing bytes after the JSON header"); goto fail; }
  size_t dsize = size - f->data_off;
  for (int i = 0; i < f->n; i++) {
    StTensor *t = &f->t[i];
    size_t want = (size_t)t->numel * st_dtype_size(t->dtype);
    if (t->begin > t->end || t->end > dsize) {
      jerr(&j, "tensor %s: data_offsets [%zu, %zu] outside the data section (%zu bytes; truncated file?)", t->name,
           t->begin, t->end, dsize);
      goto fail;
    }
    if (t->end - t->begin != want) {
      jerr(&j, "tensor %s: %zu data bytes, but dtype %s and shape give %zu", t->name, t->end - t->begin, t->dtype, want);
      goto fail;
    }
  }
  if (f->n > 1) { /* tensors must not overlap */
    StTensor **s = xmalloc((size_t)f->n * sizeof *s);
    for (int i = 0; i < f->n; i++) s[i] = &f->t[i];
    qsort(s, (size_t)f->n, sizeof *s, cmp_begin);
    for (int i = 1; i < f->n; i++)
      if (s[i]->begin < s[i - 1]->end) {
        jerr(&j, "tensors %s and %s overlap in the data section", s[i - 1]->name, s[i]->name);
        free(s);
        goto fail;
      }
    free(s);
  }
  return 0;
fail:
  st_close(f);
  return -1;
}

void st_close(StFile *f) {
  for (int i = 0; i < f->n; i++) free(f->t[i].name);
  for (int i = 0; i < f->nmeta; i++) { free(f->meta_key[i]); free(f->meta_val[i]); }
  free(f->t); free(f->meta_key); free(f->meta_val); free(f->buf);
  f->t = NULL; f->meta_key = f->meta_val = NULL; f->buf = NULL;
  f->n = f->nmeta = 0;
}

const StTensor *st_find(const StFile *f, const char *name) {
  for (int i = 0; i < f->n; i++)
    if (!strcmp(f->t[i].name, name)) return &f->t[i];
  return NULL;
}

const char *st_meta(const StFile *f, const char *key) {
  for (int i = 0; i < f->nmeta; i++)
    if (!strcmp(f->meta_key[i], key)) return f->meta_val[i];
  return NULL;
}

static void shape_str(int ndim, const long *shape, char *b, size_t n) {
  size_t k = (size_t)snprintf(b, n, "[");
  for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(b + k, n - k, i ? ",%ld" : "%ld", shape[i]);
  if (k < n) snprintf(b + k, n - k, "]");
}

static const StTensor *checked(const StFile *f, const char *name, int ndim, const long *shape, char *err, size_t errlen) {
  const StTensor *t = st_find(f, name);
  if (!t) { snprintf(err, errlen, "%s: tensor %s is missing", f->path, name); return NULL; }
  char have[128], want[128];
  shape_str(t->ndim, t->shape, have, sizeof have);
  if (ndim < 0) {
    if (t->numel != shape[0]) {
      snprintf(err, errlen, "%s: tensor %s has %ld elements (shape %s), expected %ld", f->path, name, t->numel, have, shape[0]);
      return NULL;
    }
    return t;
  }
  int same = t->ndim == ndim;
  for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
  if (!same) {
    shape_str(ndim, shape, want, sizeof want);
    snprintf(err, errlen, "%s: tensor %s has shape %s, expected %s", f->path, name, have, want);
    return NULL;
  }
  return t;
}

/* Element i of tensor t as double (all dtypes we convert from). */
static int elem(const StFile *f, const StTensor *t, long i, double *out) {
  const unsigned char *p = f->buf + f->data_off + t->begin;
  if (!strcmp(t->dtype, "F32")) { float v; memcpy(&v, p + 4 * i, 4); *out = v; }
  else if (!strcmp(t->dtype, "BF16")) { uint16_t h; memcpy(&h, p + 2 * i, 2); *out = bf16_to_f32(h); }
  else if (!strcmp(t->dtype, "F16")) {
    uint16_t h; memcpy(&h, p + 2 * i, 2);
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? m * 0x1p-24 : e == 31 ? (m ? NAN : INFINITY) : (1024 + m) * ldexp(1.0, e - 25);
    *out = (h & 0x8000) ? -v : v;
  }
  else if (!strcmp(t->dtype, "F64")) { memcpy(out, p + 8 * i, 8); }
  else if (!strcmp(t->dtype, "I64")) { int64_t v; memcpy(&v, p + 8 * i, 8); *out = (double)v; }
  else if (!strcmp(t->dtype, "I32")) { int32_t v; memcpy(&v, p + 4 * i, 4); *out = v; }
  else if (!strcmp(t->dtype, "I16")) { int16_t v; memcpy(&v, p + 2 * i, 2); *out = v; }
  else if (!strcmp(t->dtype, "I8")) { *out = (int8_t)p[i]; }
  else if (!strcmp(t->dtype, "U8") || !strcmp(t->dtype, "BOOL")) { *out = p[i]; }
  else return -1;
  return 0;
}

int st_read_f32(const StFile *f, const char *name, int ndim, const long *shape, float *out, char *err, size_t errlen) {
  const StTensor *t = checked(f, name, ndim, shape, err, errlen);
  if (!t) return -1;
  if (!strcmp(t->dtype, "F32")) { memcpy(out, f->buf + f->data_off + t->begin, (size_t)t->numel * 4); return 0; }
  for (long i = 0; i < t->numel; i++) {
    double v;
    if (elem(f, t, i, &v)) { snprintf(err, errlen, "%s: tensor %s: cannot convert dtype %s to f32", f->path, name, t->dtype); return -1; }
    out[i] = (float)v;
  }
  return 0;
}

int st_read_i32(const StFile *f, const char *name, int ndim, const long *shape, int32_t *out, char *err, size_t errlen) {
  const StTensor *t = checked(f, name, ndim, shape, err, errlen);
  if (!t) return -1;
  if (strcmp(t->dtype, "I32") && strcmp(t->dtype, "I64") && strcmp(t->dtype, "I16") && strcmp(t->dtype, "I8") &&
      strcmp(t->dtype, "U8")) {
    snprintf(err, errlen, "%s: tensor %s has dtype %s, expected an integer dtype", f->path, name, t->dtype);
    return -1;
  }
  for (long i = 0; i < t->numel; i++) {
    double v;
    elem(f, t, i, &v);
    if (v < -2147483648.0 || v > 2147483647.0) {
      snprintf(err, errlen, "%s: tensor %s: element %ld (%.0f) does not fit in int32", f->path, name, i, v);
      return -1;
    }
    out[i] = (int32_t)v;
  }
  return 0;
}

/* ---------------- writer ---------------- */

void st_writer_init(StWriter *w) { memset(w, 0, sizeof *w); }

static char *xstrdup(const char *s) {
  char *d = strdup(s);
  if (!d) fatal("out of memory");
  return d;
}

void st_add(StWriter *w, const char *name, const char *dtype, int ndim, const long *shape, const void *data) {
  size_t es = st_dtype_size(dtype);
  if (!es) fatal("safetensors writer: unknown dtype '%s' for tensor %s", dtype, name);
  if (ndim < 0 || ndim > ST_MAX_DIMS) fatal("safetensors writer: tensor %s has %d dims", name, ndim);
  if (w->n == w->cap) {
    w->cap = w->cap ? 2 * w->cap : 64;
    w->t = xrealloc(w->t, (size_t)w->cap * sizeof *w->t);
  }
  struct StW *t = &w->t[w->n++];
  memset(t, 0, sizeof *t);
  t->name = xstrdup(name);
  snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
  t->ndim = ndim;
  size_t numel = 1;
  for (int i = 0; i < ndim; i++) { t->shape[i] = shape[i]; numel *= (size_t)shape[i]; }
  t->data = data;
  t->bytes = numel * es;
}

void st_add_meta(StWriter *w, const char *key, const char *value) {
  if (w->nmeta == w->capmeta) {
    w->capmeta = w->capmeta ? 2 * w->capmeta : 8;
    w->meta_key = xrealloc(w->meta_key, (size_t)w->capmeta * sizeof(char *));
    w->meta_val = xrealloc(w->meta_val, (size_t)w->capmeta * sizeof(char *));
  }
  w->meta_key[w->nmeta] = xstrdup(key);
  w->meta_val[w->nmeta] = xstrdup(value);
  w->nmeta++;
}

void st_writer_free(StWriter *w) {
  for (int i = 0; i < w->n; i++) free(w->t[i].name);
  for (int i = 0; i < w->nmeta; i++) { free(w->meta_key[i]); free(w->meta_val[i]); }
  free(w->t); free(w->meta_key); free(w->meta_val);
  memset(w, 0, sizeof *w);
}

typedef struct { char *s; size_t n, cap; } Str;
static void sput(Str *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    b->cap = (b->n + n + 1) * 2;
    b->s = xrealloc(b->s, b->cap);
  }
  memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = 0;
}
static void sputs(Str *b, const char *s) { sput(b, s, strlen(s)); }
static void sputq(Str *b, const char *s) { /* JSON string literal */
  sputs(b, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char tmp[8];
    if (c == '"' || c == '\\') { tmp[0] = '\\'; tmp[1] = (char)c; sput(b, tmp, 2); }
    else if (c < 0x20) { snprintf(tmp, sizeof tmp, "\\u%04x", c); sputs(b, tmp); }
    else sput(b, (const char *)&c, 1);
  }
  sputs(b, "\"");
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

int st_write(const StWriter *w, const char *path, char *err, size_t errlen) {
  Str h = {0};
  char num[64];
  sputs(&h, "{");
  if (w->nmeta) {
    sputs(&h, "\"__metadata__\":{");
    for (int i = 0; i < w->nmeta; i++) {
      if (i) sputs(&h, ",");
      sputq(&h, w->meta_key[i]);
      sputs(&h, ":");
      sputq(&h, w->meta_val[i]);
    }
    sputs(&h, "}");
  }
  size_t off = 0;
  for (int i = 0; i < w->n; i++) {
    const struct StW *t = &w->t[i];
    if (i || w->nmeta) sputs(&h, ",");
    sputq(&h, t->name);
    sputs(&h, ":{\"dtype\":");
    sputq(&h, t->dtype);
    sputs(&h, ",\"shape\":[");
    for (int k = 0; k < t->ndim; k++) { snprintf(num, sizeof num, k ? ",%ld" : "%ld", t->shape[k]); sputs(&h, num); }
    snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", off, off + t->bytes);
    sputs(&h, num);
    off += t->bytes;
  }
  sputs(&h, "}");
  while (h.n % 8) sputs(&h, " "); /* pad so the data section starts 8-byte aligned */
  unsigned char len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));

  char tmp[1200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) { snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno)); free(h.s); return -1; }
  int bad = write_all(fd, len8, 8) || write_all(fd, h.s, h.n);
  for (int i = 0; !bad && i < w->n; i++) bad = write_all(fd, w->t[i].data, w->t[i].bytes);
  if (!bad) bad = fsync(fd);
  int e = errno;
  if (close(fd) && !bad) { bad = 1; e = errno; }
  free(h.s);
  if (bad) { unlink(tmp); snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(e)); return -1; }
  if (rename(tmp, path)) {
    e = errno;
    unlink(tmp);
    snprintf(err, errlen, "%s: cannot rename %s into place: %s", path, tmp, strerror(e));
    return -1;
  }
  /* make the rename itself durable */
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash) *(slash == dir ? slash + 1 : slash) = 0; else strcpy(dir, ".");
  int dfd = open(dir, O_RDONLY);
  if (dfd >= 0) { fsync(dfd); close(dfd); }
  return 0;
}
