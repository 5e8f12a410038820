/* runlog.c — see runlog.h. */
#define _POSIX_C_SOURCE 200809L
#include "runlog.h"
#include "fsutil.h"
#include "util.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct RunLog {
  char dir[4096];
  char metrics[4200];
  FILE *f;
};

/* ---------------- a growable string ---------------- */

typedef struct { char *s; size_t n, cap; } Buf;

static void put(Buf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    b->cap = (b->n + n + 1) * 2;
    b->s = xrealloc(b->s, b->cap);
  }
  memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = 0;
}
static void puts_(Buf *b, const char *s) { put(b, s, strlen(s)); }
static void putf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(Buf *b, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}
/* s as a JSON string literal (NULL as null) */
static void putq(Buf *b, const char *s) {
  if (!s) { puts_(b, "null"); return; }
  puts_(b, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') { char e[2] = {'\\', (char)c}; put(b, e, 2); }
    else if (c < 0x20) putf(b, "\\u%04x", c);
    else put(b, (const char *)&c, 1);
  }
  puts_(b, "\"");
}

/* ---------------- reading two values out of gen's config.json ---------------- */

static const char *ws(const char *s) {
  while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
  return s;
}

/* End of the JSON string starting at s (on its opening quote), or NULL. */
static const char *skip_string(const char *s) {
  for (s++; *s && *s != '"'; s++)
    if (*s == '\\' && !*++s) return NULL;
  return *s ? s + 1 : NULL;
}

/* End of the JSON value starting at s, or NULL when malformed. Nested values are matched by
 * bracket depth (strings skipped), which is all a raw copy needs. */
static const char *skip_value(const char *s) {
  if (*s == '"') return skip_string(s);
  if (*s == '{' || *s == '[') {
    int depth = 0;
    for (; *s; s++) {
      if (*s == '"') { if (!(s = skip_string(s))) return NULL; s--; continue; }
      if (*s == '{' || *s == '[') depth++;
      else if ((*s == '}' || *s == ']') && --depth == 0) return s + 1;
    }
    return NULL;
  }
  const char *b = s;
  while (*s && *s != ',' && *s != '}' && *s != ']' && *s != ' ' && *s != '\n' && *s != '\r' && *s != '\t') s++;
  return s > b ? s : NULL;
}

/* The raw text of the top-level member `key` of the JSON object js; NULL when absent. */
static const char *json_member(const char *js, const char *key, size_t *len) {
  const char *s = ws(js);
  if (*s++ != '{') return NULL;
  size_t kl = strlen(key);
  for (;;) {
    s = ws(s);
    if (*s != '"') return NULL;
    const char *k = s + 1, *ke = skip_string(s);
    if (!ke) return NULL;
    s = ws(ke);
    if (*s++ != ':') return NULL;
    s = ws(s);
    const char *v = s, *ve = skip_value(s);
    if (!ve) return NULL;
    if ((size_t)(ke - 1 - k) == kl && !strncmp(k, key, kl)) { *len = (size_t)(ve - v); return v; }
    s = ws(ve);
    if (*s++ != ',') return NULL;
  }
}

/* ---------------- meta.json ---------------- */

static void git_commit(char *out, size_t n) {
  snprintf(out, n, "unknown");
  FILE *p = popen("git rev-parse HEAD 2>/dev/null", "r");
  if (!p) return;
  char line[128] = "";
  if (fgets(line, sizeof line, p)) {
    size_t l = strcspn(line, "\r\n");
    line[l] = 0;
    int hex = l == 40;
    for (size_t i = 0; hex && i < l; i++) hex = strchr("0123456789abcdef", line[i]) != NULL;
    if (hex) snprintf(out, n, "%s", line);
  }
  pclose(p);
}

/* The command line as one shell-pastable string: arguments with special characters single-quoted. */
static void command_line(Buf *b, int argc, char **argv) {
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (i) puts_(b, " ");
    int plain = *a != 0;
    for (const char *c = a; plain && *c; c++) plain = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%", *c) != NULL;
    if (plain) { puts_(b, a); continue; }
    puts_(b, "'");
    for (const char *c = a; *c; c++) {
      if (*c == '\'') puts_(b, "'\\''");
      else put(b, c, 1);
    }
    puts_(b, "'");
  }
}

static int write_meta(const char *dir, const Plan *p, const RunInfo *in, const char *config, char *err, size_t errlen) {
  Buf b = {0};
  char commit[64], when[64], host[256] = "";
  git_commit(commit, sizeof commit);
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (gethostname(host, sizeof host - 1)) host[0] = 0;
  puts_(&b, "{\n  \"plan\": ");
  putq(&b, p->name);
  puts_(&b, ",\n  \"source_hash\": ");
  putq(&b, p->hash);
  puts_(&b, ",\n  \"plan_path\": ");
  putq(&b, p->path);
  size_t len;
  const char *v;
  puts_(&b, ",\n  \"spec\": ");
  if (config && (v = json_member(config, "spec", &len))) put(&b, v, len); else puts_(&b, "null");
  puts_(&b, ",\n  \"overrides\": ");
  if (config && (v = json_member(config, "overrides", &len))) put(&b, v, len); else puts_(&b, "[]");
  puts_(&b, ",\n  \"git_commit\": ");
  putq(&b, commit);
  puts_(&b, ",\n  \"backend\": ");
  putq(&b, in->backend);
  puts_(&b, ",\n  \"host\": ");
  putq(&b, host);
  Buf cmd = {0};
  command_line(&cmd, in->argc, in->argv);
  puts_(&b, ",\n  \"command\": ");
  putq(&b, cmd.s ? cmd.s : "");
  free(cmd.s);
  puts_(&b, ",\n  \"argv\": [");
  for (int i = 0; i < in->argc; i++) {
    if (i) puts_(&b, ", ");
    putq(&b, in->argv[i]);
  }
  puts_(&b, "],\n  \"start_time\": ");
  putq(&b, when);
  putf(&b, ",\n  \"start_unix\": %lld", (long long)now);
  putf(&b, ",\n  \"seed\": %llu,\n  \"steps\": %ld", (unsigned long long)in->seed, in->steps);
  puts_(&b, ",\n  \"data\": ");
  putq(&b, in->data);
  puts_(&b, ",\n  \"val_data\": ");
  putq(&b, in->val_data);
  puts_(&b, ",\n  \"init_from\": ");
  putq(&b, in->init_from);
  if (in->resumed_from >= 0) putf(&b, ",\n  \"resumed_from_step\": %ld", in->resumed_from);
  else puts_(&b, ",\n  \"resumed_from_step\": null");
  puts_(&b, "\n}\n");
  char path[4200];
  snprintf(path, sizeof path, "%s/meta.json", dir);
  int rc = fs_write_atomic(path, b.s, b.n, err, errlen);
  free(b.s);
  return rc;
}

/* ---------------- metrics.jsonl ---------------- */

/* Keep the lines whose "step" is at most `upto` (a resumed run drops what the killed one logged
 * after its checkpoint). */
static int cut_metrics(const char *path, long upto, char *err, size_t errlen) {
  size_t n;
  char *text = read_file(path, &n);
  if (!text) {
    if (errno == ENOENT) return 0;
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  Buf keep = {0};
  puts_(&keep, "");
  for (char *line = text; *line;) {
    char *nl = strchr(line, '\n');
    size_t l = nl ? (size_t)(nl - line) : strlen(line);
    char *st = strstr(line, "\"step\":");
    long step = st && st < line + l ? strtol(st + 7, NULL, 10) : -1;
    if (l && step >= 0 && step <= upto) { put(&keep, line, l); puts_(&keep, "\n"); }
    line += l + (nl ? 1 : 0);
  }
  int rc = fs_write_atomic(path, keep.s, keep.n, err, errlen);
  free(keep.s);
  free(text);
  return rc;
}

RunLog *runlog_open(const char *dir, const Plan *p, const RunInfo *info, char *err, size_t errlen) {
  if (fs_mkdirs(dir, err, errlen)) return NULL;
  RunLog *r = xcalloc(1, sizeof *r);
  snprintf(r->dir, sizeof r->dir, "%s", dir);
  char cfg_src[2100], cfg_dst[4200];
  snprintf(cfg_src, sizeof cfg_src, "%s/config.json", p->dir[0] ? p->dir : ".");
  size_t n = 0;
  char *config = read_file(cfg_src, &n);
  if (config) {
    snprintf(cfg_dst, sizeof cfg_dst, "%s/config.json", dir);
    if (fs_write_atomic(cfg_dst, config, n, err, errlen)) { free(config); free(r); return NULL; }
  } else {
    fprintf(stderr, "runtime: note: %s: %s (meta.json will have no spec/overrides)\n", cfg_src, strerror(errno));
  }
  int rc = write_meta(dir, p, info, config, err, errlen);
  free(config);
  if (rc) { free(r); return NULL; }
  snprintf(r->metrics, sizeof r->metrics, "%s/metrics.jsonl", dir);
  if (info->resumed_from >= 0 && cut_metrics(r->metrics, info->resumed_from, err, errlen)) { free(r); return NULL; }
  r->f = fopen(r->metrics, info->resumed_from >= 0 ? "a" : "w");
  if (!r->f) { snprintf(err, errlen, "%s: cannot open: %s", r->metrics, strerror(errno)); free(r); return NULL; }
  return r;
}

/* JSON has no NaN or infinity: such a value is written as null. */
static void num(Buf *b, const char *key, double v) {
  if (isfinite(v)) putf(b, ", \"%s\": %.9g", key, v);
  else putf(b, ", \"%s\": null", key);
}

void runlog_step(RunLog *r, const StepMetrics *m) {
  Buf b = {0};
  putf(&b, "{\"step\": %ld", m->step);
  num(&b, "train_loss", m->train_loss);
  if (!isnan(m->val_loss)) num(&b, "val_loss", m->val_loss);
  num(&b, "lr", m->lr);
  num(&b, "grad_norm", m->grad_norm);
  num(&b, "ms", m->ms);
  num(&b, "tok_per_s", m->tok_per_s);
  if (m->mfu >= 0) num(&b, "mfu", m->mfu);
  num(&b, "tokens", m->tokens);
  num(&b, "elapsed_s", m->elapsed_s);
  puts_(&b, "}\n");
  if (fwrite(b.s, 1, b.n, r->f) != b.n || fflush(r->f)) fatal("%s: write failed: %s", r->metrics, strerror(errno));
  free(b.s);
}

const char *runlog_dir(const RunLog *r) { return r->dir; }

void runlog_close(RunLog *r) {
  if (!r) return;
  if (r->f) fclose(r->f);
  free(r);
}
