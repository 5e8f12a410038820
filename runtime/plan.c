/* plan.c — reads out/model.plan (format: docs/ir.md) into a Plan, validating every record.
 * Any problem is reported as "FILE:LINE: what is wrong"; nothing is guessed or skipped. */
#define _POSIX_C_SOURCE 200809L
#include "plan.h"
#include "backend.h"
#include "util.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOK 64 /* fields on one line: 12 + 2 + 12 refs + 16 attrs + slack */

typedef struct {
  Plan *p;
  char *err; size_t errlen;
  int line;
  int cap_param, cap_buf, cap_op;
  int *param_line, *buf_line;     /* line of each param / buffer record, for later checks */
  int have_params_arena, have_acts_arena, have_end;
  /* input refs are resolved after the whole file is read (inputs may be declared late) */
  int nin_ref, cap_in_ref;
  struct { int op, ref; char name[16]; } *in_ref;
} Parser;

static int perr(Parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int perr(Parser *ps, const char *fmt, ...) {
  int n = snprintf(ps->err, ps->errlen, "%s:%d: ", ps->p->path, ps->line);
  if (n < 0) n = 0;
  if ((size_t)n < ps->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
    va_end(ap);
  }
  return -1;
}

static int parse_long(const char *s, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end) return -1;
  *out = v;
  return 0;
}

static int parse_num(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno == ERANGE && fabs(v) > 1) return -1;
  if (end == s || *end || !isfinite(v)) return -1;
  *out = v;
  return 0;
}

static int copy_name(Parser *ps, char *dst, size_t cap, const char *src, const char *what) {
  if (strlen(src) >= cap) return perr(ps, "%s '%s' is too long (max %zu characters)", what, src, cap - 1);
  strcpy(dst, src);
  return 0;
}

static int want_long(Parser *ps, const char *tok, const char *what, long lo, long hi, long *out) {
  if (parse_long(tok, out)) return perr(ps, "%s: '%s' is not an integer", what, tok);
  if (*out < lo || *out > hi) return perr(ps, "%s: %ld is out of range [%ld, %ld]", what, *out, lo, hi);
  return 0;
}

static int parse_dtype(Parser *ps, const char *s, DType *dt) {
  if (!strcmp(s, "bf16")) *dt = DT_BF16;
  else if (!strcmp(s, "f32")) *dt = DT_F32;
  else if (!strcmp(s, "i32")) *dt = DT_I32;
  else return perr(ps, "unknown dtype '%s' (expected bf16, f32 or i32)", s);
  return 0;
}

/* A ref string ("act:3", "grads", "tokens", ...) into kind/idx. Input names are queued. */
static int parse_ref(Parser *ps, Op *op, int ri, const char *s) {
  static const struct { const char *name; RefKind kind; } whole[] = {
    {"params", REF_PARAMS}, {"master", REF_MASTER}, {"grads", REF_GRADS}, {"adam_m", REF_ADAM_M},
    {"adam_v", REF_ADAM_V}, {"scal", REF_SCAL}, {"loss", REF_LOSS}, {"partials", REF_PARTIALS},
  };
  Ref *r = &op->ref[ri];
  const char *colon = strchr(s, ':');
  if (colon) {
    size_t k = (size_t)(colon - s);
    long idx;
    if (parse_long(colon + 1, &idx) || idx < 0 || idx > INT_MAX)
      return perr(ps, "bad ref '%s' for role '%s': index is not a non-negative integer", s, r->role);
    if (k == 3 && !strncmp(s, "act", 3)) r->kind = REF_ACT;
    else if (k == 5 && !strncmp(s, "param", 5)) r->kind = REF_PARAM;
    else if (k == 4 && !strncmp(s, "grad", 4)) r->kind = REF_GRAD;
    else return perr(ps, "bad ref '%s' for role '%s' (expected act:N, param:N or grad:N)", s, r->role);
    r->idx = (int)idx; /* range checked once all records are read */
    return 0;
  }
  for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++)
    if (!strcmp(s, whole[i].name)) { r->kind = whole[i].kind; r->idx = 0; return 0; }
  /* any other name is an input (tokens, targets, tokidx, dtokens, dpos, optrange, dropctr), declared by an
   * `input` line somewhere in the file and resolved once all of it is read */
  if (strlen(s) < sizeof ps->in_ref[0].name && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(s)) {
    if (ps->nin_ref == ps->cap_in_ref) {
      ps->cap_in_ref = ps->cap_in_ref ? 2 * ps->cap_in_ref : 64;
      ps->in_ref = xrealloc(ps->in_ref, (size_t)ps->cap_in_ref * sizeof *ps->in_ref);
    }
    ps->in_ref[ps->nin_ref].op = ps->p->nop;
    ps->in_ref[ps->nin_ref].ref = ri;
    strcpy(ps->in_ref[ps->nin_ref].name, s);
    ps->nin_ref++;
    r->kind = REF_INPUT;
    r->idx = -1;
    return 0;
  }
  return perr(ps, "bad ref '%s' for role '%s'", s, r->role);
}

/* op <idx> <phase> <kind> <kernel> <gx> <gy> <gz> <bx> <by> <bz> <smem> <nrefs> <role>=<ref>...
 *    <nattrs> <key>=<value>...   (the "# comment" was split off by the caller) */
static int parse_op(Parser *ps, char **t, int nt, const char *comment) {
  Plan *p = ps->p;
  if (nt < 13) return perr(ps, "op record has %d fields, expected at least 13", nt);
  if (p->nop == ps->cap_op) {
    ps->cap_op = ps->cap_op ? 2 * ps->cap_op : 256;
    p->ops = xrealloc(p->ops, (size_t)ps->cap_op * sizeof *p->ops);
  }
  Op *op = &p->ops[p->nop];
  memset(op, 0, sizeof *op);
  op->line = ps->line;
  long v;
  if (want_long(ps, t[1], "op index", 0, INT_MAX, &v)) return -1;
  if (v != p->nop) return perr(ps, "op index %ld out of sequence (expected %d)", v, p->nop);
  op->idx = (int)v;
  if (!strcmp(t[2], "fwd")) op->phase = PH_FWD;
  else if (!strcmp(t[2], "bwd")) op->phase = PH_BWD;
  else if (!strcmp(t[2], "opt")) op->phase = PH_OPT;
  else if (!strcmp(t[2], "dec")) op->phase = PH_DEC;
  else return perr(ps, "unknown phase '%s' (expected fwd, bwd, opt or dec)", t[2]);
  if (copy_name(ps, op->kind, sizeof op->kind, t[3], "op kind")) return -1;
  if (copy_name(ps, op->kernel, sizeof op->kernel, t[4], "kernel name")) return -1;
  static const char *geo[] = {"grid x", "grid y", "grid z", "block x", "block y", "block z", "smem"};
  for (int i = 0; i < 7; i++) {
    if (want_long(ps, t[5 + i], geo[i], 0, INT_MAX, &v)) return -1;
    if (i < 3) op->grid[i] = (int)v; else if (i < 6) op->block[i - 3] = (int)v; else op->smem = (int)v;
  }
  if (want_long(ps, t[12], "nrefs", 0, INT_MAX, &v)) return -1;
  if (v > MF_MAX_REFS) return perr(ps, "too many refs (%ld > %d)", v, MF_MAX_REFS);
  op->nref = (int)v;
  int k = 13;
  if (nt < k + op->nref + 1)
    return perr(ps, "op record ends early: expected %d refs and an attribute count", op->nref);
  for (int i = 0; i < op->nref; i++, k++) {
    /* ">role=ref" marks a ref the op writes */
    char *f = t[k];
    if (*f == '>') { op->ref[i].out = 1; f++; }
    char *eq = strchr(f, '=');
    if (!eq || eq == f || !eq[1]) return perr(ps, "bad ref field '%s' (expected role=ref or >role=ref)", t[k]);
    *eq = 0;
    if (copy_name(ps, op->ref[i].role, sizeof op->ref[i].role, f, "ref role")) return -1;
    for (int j = 0; j < i; j++)
      if (!strcmp(op->ref[j].role, op->ref[i].role)) return perr(ps, "duplicate ref role '%s'", f);
    if (parse_ref(ps, op, i, eq + 1)) return -1;
  }
  if (want_long(ps, t[k], "nattrs", 0, INT_MAX, &v)) return -1;
  if (v > MF_MAX_ATTRS) return perr(ps, "too many attributes (%ld > %d)", v, MF_MAX_ATTRS);
  op->nattr = (int)v;
  k++;
  if (nt < k + op->nattr) return perr(ps, "op record ends early: expected %d attributes", op->nattr);
  for (int i = 0; i < op->nattr; i++, k++) {
    char *eq = strchr(t[k], '=');
    if (!eq || eq == t[k] || !eq[1]) return perr(ps, "bad attribute field '%s' (expected key=value)", t[k]);
    *eq = 0;
    if (copy_name(ps, op->attr[i].key, sizeof op->attr[i].key, t[k], "attribute name")) return -1;
    for (int j = 0; j < i; j++)
      if (!strcmp(op->attr[j].key, op->attr[i].key)) return perr(ps, "duplicate attribute '%s'", t[k]);
    if (parse_num(eq + 1, &op->attr[i].val))
      return perr(ps, "attribute %s: '%s' is not a finite number", t[k], eq + 1);
  }
  if (k != nt) return perr(ps, "unexpected field '%s' after the attributes", t[k]);
  if (copy_name(ps, op->comment, sizeof op->comment, comment, "op comment")) return -1;
  p->nop++;
  return 0;
}

static int parse_kv(Parser *ps, char **t, int nt, KV *kv, int *n, int integer) {
  if (nt != 3) return perr(ps, "%s record needs 2 fields: %s <key> <value>", t[0], t[0]);
  if (*n == 48) return perr(ps, "too many %s records (max 48)", t[0]);
  for (int i = 0; i < *n; i++)
    if (!strcmp(kv[i].key, t[1])) return perr(ps, "duplicate %s '%s'", t[0], t[1]);
  if (copy_name(ps, kv[*n].key, sizeof kv[*n].key, t[1], t[0])) return -1;
  if (integer) {
    long v;
    if (parse_long(t[2], &v)) return perr(ps, "dim %s: '%s' is not an integer", t[1], t[2]);
    kv[*n].val = (double)v;
  } else if (parse_num(t[2], &kv[*n].val)) {
    return perr(ps, "train %s: '%s' is not a finite number", t[1], t[2]);
  }
  (*n)++;
  return 0;
}

/* param <idx> <name> <numel> <offset> <decay 0|1> <init> <std> <ndim> <dims...> [frozen] */
static int parse_param(Parser *ps, char **t, int nt) {
  Plan *p = ps->p;
  if (nt < 9) return perr(ps, "param record has %d fields, expected at least 9", nt);
  if (p->nparam == ps->cap_param) {
    ps->cap_param = ps->cap_param ? 2 * ps->cap_param : 64;
    p->params = xrealloc(p->params, (size_t)ps->cap_param * sizeof *p->params);
    ps->param_line = xrealloc(ps->param_line, (size_t)ps->cap_param * sizeof(int));
  }
  Param *pa = &p->params[p->nparam];
  memset(pa, 0, sizeof *pa);
  long v;
  if (want_long(ps, t[1], "param index", 0, INT_MAX, &v)) return -1;
  if (v != p->nparam) return perr(ps, "param index %ld out of sequence (expected %d)", v, p->nparam);
  if (copy_name(ps, pa->name, sizeof pa->name, t[2], "param name")) return -1;
  for (int i = 0; i < p->nparam; i++)
    if (!strcmp(p->params[i].name, pa->name)) return perr(ps, "duplicate param '%s'", pa->name);
  if (want_long(ps, t[3], "param numel", 1, LONG_MAX, &pa->numel)) return -1;
  if (want_long(ps, t[4], "param offset", 0, LONG_MAX, &pa->offset)) return -1;
  if (pa->offset % 128) return perr(ps, "param %s: offset %ld is not a multiple of 128", pa->name, pa->offset);
  if (want_long(ps, t[5], "param decay", 0, 1, &v)) return -1;
  pa->decay = (int)v;
  if (strcmp(t[6], "normal") && strcmp(t[6], "zeros") && strcmp(t[6], "ones") && strcmp(t[6], "fill") &&
      strcmp(t[6], "sinusoidal"))
    return perr(ps, "param %s: unknown init '%s' (expected normal, zeros, ones, fill or sinusoidal)", pa->name, t[6]);
  strcpy(pa->init, t[6]);
  if (parse_num(t[7], &pa->std) || pa->std < 0)
    return perr(ps, "param %s: bad std '%s'", pa->name, t[7]);
  if (want_long(ps, t[8], "param ndim", 1, 4, &v)) return -1;
  pa->ndim = (int)v;
  /* an optional trailing word: `frozen` (docs/ir_decoder.md) */
  if (nt == 10 + pa->ndim) {
    if (strcmp(t[nt - 1], "frozen"))
      return perr(ps, "param %s: unexpected trailing field '%s' (expected 'frozen' or nothing)", pa->name, t[nt - 1]);
    if (pa->decay) return perr(ps, "param %s: a frozen param must have decay 0", pa->name);
    pa->frozen = 1;
    nt--;
  }
  if (nt != 9 + pa->ndim) return perr(ps, "param %s: ndim %d but %d dims given", pa->name, pa->ndim, nt - 9);
  long prod = 1;
  for (int i = 0; i < pa->ndim; i++) {
    if (want_long(ps, t[9 + i], "param dim", 1, LONG_MAX, &pa->dims[i])) return -1;
    prod *= pa->dims[i];
  }
  if (prod != pa->numel) return perr(ps, "param %s: dims multiply to %ld, numel is %ld", pa->name, prod, pa->numel);
  ps->param_line[p->nparam] = ps->line;
  p->nparam++;
  return 0;
}

/* buffer <idx> <name> <dtype> <numel> <gpu_offset_bytes> <cpu_offset_elements> */
static int parse_buffer(Parser *ps, char **t, int nt) {
  Plan *p = ps->p;
  if (nt != 7) return perr(ps, "buffer record has %d fields, expected 7", nt);
  if (p->nbuf == ps->cap_buf) {
    ps->cap_buf = ps->cap_buf ? 2 * ps->cap_buf : 256;
    p->bufs = xrealloc(p->bufs, (size_t)ps->cap_buf * sizeof *p->bufs);
    ps->buf_line = xrealloc(ps->buf_line, (size_t)ps->cap_buf * sizeof(int));
  }
  Buffer *b = &p->bufs[p->nbuf];
  memset(b, 0, sizeof *b);
  long v;
  if (want_long(ps, t[1], "buffer index", 0, INT_MAX, &v)) return -1;
  if (v != p->nbuf) return perr(ps, "buffer index %ld out of sequence (expected %d)", v, p->nbuf);
  if (copy_name(ps, b->name, sizeof b->name, t[2], "buffer name")) return -1;
  if (parse_dtype(ps, t[3], &b->dt)) return -1;
  if (want_long(ps, t[4], "buffer numel", 1, LONG_MAX, &b->numel)) return -1;
  if (want_long(ps, t[5], "buffer gpu offset", 0, LONG_MAX, &b->gpu_off)) return -1;
  if (want_long(ps, t[6], "buffer cpu offset", 0, LONG_MAX, &b->cpu_off)) return -1;
  ps->buf_line[p->nbuf] = ps->line;
  p->nbuf++;
  return 0;
}

static int parse_line(Parser *ps, char *s) {
  Plan *p = ps->p;
  /* split off "# comment" (a '#' at the start of a field) */
  const char *comment = "";
  for (char *c = s; *c; c++)
    if (*c == '#' && (c == s || c[-1] == ' ' || c[-1] == '\t')) {
      *c = 0;
      comment = c + 1;
      while (*comment == ' ' || *comment == '\t') comment++;
      break;
    }
  char *t[MAX_TOK];
  int nt = 0;
  for (char *c = strtok(s, " \t"); c; c = strtok(NULL, " \t")) {
    if (nt == MAX_TOK) return perr(ps, "too many fields (max %d)", MAX_TOK);
    t[nt++] = c;
  }
  if (nt == 0) return 0; /* blank or comment-only line */
  if (ps->have_end) return perr(ps, "unexpected record '%s' after 'end'", t[0]);
  const char *k = t[0];
  if (!strcmp(k, "moonforge-plan")) {
    return perr(ps, "'moonforge-plan' header repeated");
  } else if (!strcmp(k, "name")) {
    if (nt != 2) return perr(ps, "name record needs 1 field");
    return copy_name(ps, p->name, sizeof p->name, t[1], "model name");
  } else if (!strcmp(k, "source_hash")) {
    if (nt != 2) return perr(ps, "source_hash record needs 1 field");
    return copy_name(ps, p->hash, sizeof p->hash, t[1], "source hash");
  } else if (!strcmp(k, "dim")) {
    return parse_kv(ps, t, nt, p->dim, &p->ndim, 1);
  } else if (!strcmp(k, "train")) {
    return parse_kv(ps, t, nt, p->train, &p->ntrain, 0);
  } else if (!strcmp(k, "param")) {
    return parse_param(ps, t, nt);
  } else if (!strcmp(k, "buffer")) {
    return parse_buffer(ps, t, nt);
  } else if (!strcmp(k, "arena")) {
    if (nt >= 2 && !strcmp(t[1], "params")) {
      if (nt != 3) return perr(ps, "arena params record needs 1 field: arena params <elements>");
      if (ps->have_params_arena) return perr(ps, "duplicate 'arena params'");
      if (want_long(ps, t[2], "params arena elements", 0, LONG_MAX, &p->param_elems)) return -1;
      ps->have_params_arena = ps->line;
      return 0;
    }
    if (nt >= 2 && !strcmp(t[1], "acts")) {
      if (nt != 4) return perr(ps, "arena acts record needs 2 fields: arena acts <gpu_bytes> <cpu_elements>");
      if (ps->have_acts_arena) return perr(ps, "duplicate 'arena acts'");
      if (want_long(ps, t[2], "acts arena bytes", 0, LONG_MAX, &p->act_bytes)) return -1;
      if (want_long(ps, t[3], "acts arena cpu elements", 0, LONG_MAX, &p->act_cpu_elems)) return -1;
      ps->have_acts_arena = ps->line;
      return 0;
    }
    return perr(ps, "unknown arena '%s' (expected params or acts)", nt >= 2 ? t[1] : "");
  } else if (!strcmp(k, "input")) {
    if (nt != 4) return perr(ps, "input record has %d fields, expected 4: input <name> <dtype> <numel>", nt);
    static const char *known[] = {"tokens", "targets", "tokidx", "dtokens", "dpos", "optrange", "dropctr"};
    int ok = 0;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) ok |= !strcmp(t[1], known[i]);
    if (!ok) return perr(ps, "unknown input '%s' (expected tokens, targets, tokidx, dtokens, dpos, optrange or dropctr)", t[1]);
    if (plan_input(p, t[1]) >= 0) return perr(ps, "duplicate input '%s'", t[1]);
    if (p->ninput == MF_MAX_INPUTS) return perr(ps, "too many inputs");
    Input *in = &p->inputs[p->ninput];
    strcpy(in->name, t[1]);
    if (parse_dtype(ps, t[2], &in->dt)) return -1;
    if (in->dt != DT_I32) return perr(ps, "input %s must be i32", t[1]);
    if (want_long(ps, t[3], "input numel", 1, LONG_MAX, &in->numel)) return -1;
    p->ninput++;
    return 0;
  } else if (!strcmp(k, "op")) {
    return parse_op(ps, t, nt, comment);
  } else if (!strcmp(k, "end")) {
    if (nt != 1) return perr(ps, "'end' takes no fields");
    ps->have_end = 1;
    return 0;
  }
  return perr(ps, "unknown record '%s'", k);
}

/* Cross-record checks, run once the whole file is read. */
static int validate(Parser *ps) {
  Plan *p = ps->p;
  if (!ps->have_params_arena) return perr(ps, "missing 'arena params' record");
  if (!ps->have_acts_arena) return perr(ps, "missing 'arena acts' record");
  /* params: inside the arena, not overlapping, decayed ones first */
  long decay_end = 0;
  for (int i = 0; i < p->nparam; i++) {
    const Param *a = &p->params[i];
    ps->line = ps->param_line[i];
    if (a->offset + a->numel > p->param_elems)
      return perr(ps, "param %s [%ld, %ld) exceeds the params arena (%ld elements)", a->name, a->offset,
                  a->offset + a->numel, p->param_elems);
    for (int j = 0; j < i; j++) {
      const Param *b = &p->params[j];
      if (a->offset < b->offset + b->numel && b->offset < a->offset + a->numel)
        return perr(ps, "param %s overlaps param %s in the arena", a->name, b->name);
    }
    if (a->decay && a->offset + a->numel > decay_end) decay_end = a->offset + a->numel;
  }
  for (int i = 0; i < p->nparam; i++) {
    const Param *a = &p->params[i];
    if (!a->decay && a->offset < decay_end) {
      ps->line = ps->param_line[i];
      return perr(ps, "param %s (no weight decay) lies before the end of the decayed params (%ld): "
                  "decayed params must come first in the arena", a->name, decay_end);
    }
  }
  p->n_decay = decay_end;
  for (int i = 0; i < p->nbuf; i++) {
    const Buffer *b = &p->bufs[i];
    ps->line = ps->buf_line[i];
    if (b->cpu_off + b->numel > p->act_cpu_elems)
      return perr(ps, "buffer %s exceeds the CPU acts arena (%ld + %ld > %ld elements)", b->name, b->cpu_off,
                  b->numel, p->act_cpu_elems);
    if (b->gpu_off + b->numel * (long)dtype_size(b->dt) > p->act_bytes)
      return perr(ps, "buffer %s exceeds the GPU acts arena (%ld + %ld > %ld bytes)", b->name, b->gpu_off,
                  b->numel * (long)dtype_size(b->dt), p->act_bytes);
  }
  for (int i = 0; i < ps->nin_ref; i++) {
    Op *op = &p->ops[ps->in_ref[i].op];
    int idx = plan_input(p, ps->in_ref[i].name);
    ps->line = op->line;
    if (idx < 0) return perr(ps, "ref '%s' names an input that is not declared", ps->in_ref[i].name);
    op->ref[ps->in_ref[i].ref].idx = idx;
  }
  p->n_partials = 1;
  for (int i = 0; i < p->nop; i++) {
    const Op *op = &p->ops[i];
    ps->line = op->line;
    for (int j = 0; j < op->nref; j++) {
      const Ref *r = &op->ref[j];
      if (r->kind == REF_ACT && r->idx >= p->nbuf)
        return perr(ps, "bad ref act:%d for role '%s' (%d buffers)", r->idx, r->role, p->nbuf);
      if ((r->kind == REF_PARAM || r->kind == REF_GRAD) && r->idx >= p->nparam)
        return perr(ps, "bad ref %s:%d for role '%s' (%d params)", r->kind == REF_PARAM ? "param" : "grad",
                    r->idx, r->role, p->nparam);
    }
    if (op_has_attr(op, "G")) {
      double g = 0;
      for (int j = 0; j < op->nattr; j++) if (!strcmp(op->attr[j].key, "G")) g = op->attr[j].val;
      if (g < 1 || g > 1e9 || g != floor(g)) return perr(ps, "attribute G=%g is not a positive integer", g);
      if ((long)g > p->n_partials) p->n_partials = (long)g;
    }
  }
  return 0;
}

int plan_load(const char *path, Plan *p, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  snprintf(p->path, sizeof p->path, "%s", path);
  snprintf(p->dir, sizeof p->dir, "%s", path);
  char *slash = strrchr(p->dir, '/');
  if (slash) *(slash == p->dir ? slash + 1 : slash) = 0; else strcpy(p->dir, ".");
  Parser ps = {.p = p, .err = err, .errlen = errlen};
  size_t len;
  char *text = read_file(path, &len);
  if (!text) {
    snprintf(err, errlen, "%s: cannot read plan: %s", path, strerror(errno));
    return -1;
  }
  int rc = 0, magic = 0;
  char *nul = memchr(text, 0, len);
  if (nul) {
    for (char *c = text; c <= nul; c++) if (c == text || c[-1] == '\n') ps.line++;
    rc = perr(&ps, "NUL byte in the plan (not a text file?)");
  }
  char *s = text;
  while (rc == 0 && s < text + len) {
    char *nl = memchr(s, '\n', (size_t)(text + len - s));
    char *e = nl ? nl : text + len;
    *e = 0;
    if (e > s && e[-1] == '\r') e[-1] = 0;
    ps.line++;
    char *q = s;
    while (*q == ' ' || *q == '\t') q++;
    if (*q && *q != '#') {
      if (!magic) {
        int ver = 0;
        char extra;
        if (strncmp(q, "moonforge-plan", 14) != 0 || (q[14] != ' ' && q[14] != '\t'))
          rc = perr(&ps, "not a moonforge plan (the first record must be 'moonforge-plan 1')");
        else if (sscanf(q + 14, "%d %c", &ver, &extra) != 1)
          rc = perr(&ps, "bad header '%s' (expected 'moonforge-plan 1')", q);
        else if (ver != 1)
          rc = perr(&ps, "unsupported plan version %d (this runtime reads version 1)", ver);
        magic = 1;
      } else {
        rc = parse_line(&ps, q);
      }
    }
    s = e + 1;
  }
  if (rc == 0 && !magic) { ps.line = ps.line ? ps.line : 1; rc = perr(&ps, "empty plan (no 'moonforge-plan 1' header)"); }
  if (rc == 0 && !ps.have_end) {
    ps.line++;
    rc = perr(&ps, "missing 'end' record (truncated plan?)");
  }
  if (rc == 0) rc = validate(&ps);
  free(text);
  free(ps.param_line);
  free(ps.buf_line);
  free(ps.in_ref);
  if (rc) plan_free(p);
  return rc;
}

void plan_free(Plan *p) {
  free(p->params);
  free(p->bufs);
  free(p->ops);
  p->params = NULL; p->bufs = NULL; p->ops = NULL;
  p->nparam = p->nbuf = p->nop = 0;
}

const Ref *op_ref(const Op *op, const char *role) {
  for (int i = 0; i < op->nref; i++)
    if (!strcmp(op->ref[i].role, role)) return &op->ref[i];
  return NULL;
}

const Ref *op_ref_req(const Plan *p, const Op *op, const char *role) {
  const Ref *r = op_ref(op, role);
  if (!r) fatal("%s:%d: op %d (%s, %s) has no ref '%s'", p->path, op->line, op->idx, op->kind, op->comment, role);
  return r;
}

int op_has_attr(const Op *op, const char *key) {
  for (int i = 0; i < op->nattr; i++)
    if (!strcmp(op->attr[i].key, key)) return 1;
  return 0;
}

double op_attr(const Plan *p, const Op *op, const char *key) {
  for (int i = 0; i < op->nattr; i++)
    if (!strcmp(op->attr[i].key, key)) return op->attr[i].val;
  fatal("%s:%d: op %d (%s, %s) has no attribute '%s'", p->path, op->line, op->idx, op->kind, op->comment, key);
}

long plan_dim(const Plan *p, const char *key) {
  for (int i = 0; i < p->ndim; i++)
    if (!strcmp(p->dim[i].key, key)) return (long)p->dim[i].val;
  fatal("%s: no 'dim %s' record", p->path, key);
}

long plan_dim_opt(const Plan *p, const char *key, long dflt) {
  for (int i = 0; i < p->ndim; i++)
    if (!strcmp(p->dim[i].key, key)) return (long)p->dim[i].val;
  return dflt;
}

double plan_train(const Plan *p, const char *key, double dflt) {
  for (int i = 0; i < p->ntrain; i++)
    if (!strcmp(p->train[i].key, key)) return p->train[i].val;
  return dflt;
}

int plan_input(const Plan *p, const char *name) {
  for (int i = 0; i < p->ninput; i++)
    if (!strcmp(p->inputs[i].name, name)) return i;
  return -1;
}

int plan_param(const Plan *p, const char *name) {
  for (int i = 0; i < p->nparam; i++)
    if (!strcmp(p->params[i].name, name)) return i;
  return -1;
}

size_t dtype_size(DType dt) { return dt == DT_BF16 ? 2 : 4; }

const char *dtype_name(DType dt) { return dt == DT_BF16 ? "bf16" : dt == DT_F32 ? "f32" : "i32"; }

void ref_str(const Plan *p, const Ref *r, char *buf, size_t n) {
  static const char *names[] = {"act", "param", "grad", "params", "master", "grads", "adam_m",
                                "adam_v", "scal", "loss", "partials", "input"};
  switch (r->kind) {
  case REF_ACT: case REF_PARAM: case REF_GRAD: snprintf(buf, n, "%s:%d", names[r->kind], r->idx); break;
  case REF_INPUT: snprintf(buf, n, "%s", r->idx >= 0 && r->idx < p->ninput ? p->inputs[r->idx].name : "input?"); break;
  default: snprintf(buf, n, "%s", names[r->kind]); break;
  }
}

long ref_numel(const Plan *p, const Ref *r) {
  switch (r->kind) {
  case REF_ACT: return p->bufs[r->idx].numel;
  case REF_PARAM: case REF_GRAD: return p->params[r->idx].numel;
  case REF_PARAMS: case REF_MASTER: case REF_GRADS: case REF_ADAM_M: case REF_ADAM_V: return p->param_elems;
  case REF_SCAL: return 8;
  case REF_LOSS: return 1;
  case REF_PARTIALS: return p->n_partials;
  case REF_INPUT: return p->inputs[r->idx].numel;
  }
  return 0;
}
