/* hf_qwen2.c — see hf_qwen2.h. */
#define _POSIX_C_SOURCE 200809L
#include "hf_qwen2.h"
#include "fsutil.h"
#include "json.h"
#include "safetensors.h"
#include "util.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------- the plan's shape ---------------- */

typedef struct {
  long D, L, H, Hkv, d, F, V, Vp, T;
  double eps, rope_base;
  int tied;
} Shape;

/* One Hugging Face tensor = `rows` rows (of `cols` elements; cols 0: a vector) of our parameter
 * `param`, starting at row `row0`. */
typedef struct {
  char hf[160];
  int param;
  long row0, rows, cols;
} Piece;

/* "h.<l>.<rest>": the layer index, or -1. */
static long layer_of(const char *name, const char **rest) {
  if (strncmp(name, "h.", 2) || name[2] < '0' || name[2] > '9') return -1;
  char *end;
  long l = strtol(name + 2, &end, 10);
  if (*end != '.') return -1;
  *rest = end + 1;
  return l;
}

/* ParScale's parameters (docs/ir_parscale.md): the per-layer prefixes and cross-replica attention, and
 * the aggregation head. They have no Qwen2 counterpart and keep their initialisation on import. */
static int parscale_param(const char *name) {
  const char *rest;
  if (!strncmp(name, "parscale.", 9)) return 1;
  if (layer_of(name, &rest) < 0) return 0;
  return !strcmp(rest, "attn.prefix_k") || !strcmp(rest, "attn.prefix_v") || !strncmp(rest, "cra.", 4);
}

static int op_int(const Plan *p, const Op *op, const char *key, long want, char *why, size_t wn) {
  if (!op_has_attr(op, key)) { snprintf(why, wn, "op %d (%s) has no attribute %s", op->idx, op->comment, key); return 0; }
  double v = op_attr(p, op, key);
  if (v != (double)want) {
    snprintf(why, wn, "op %d (%s): %s = %g, Qwen2 needs %ld", op->idx, op->comment, key, v, want);
    return 0;
  }
  return 1;
}

/* Read the shape from the parameters and the forward ops; 0 with why when the plan is no Qwen2. */
static int plan_shape(const Plan *p, Shape *s, int *extra, char *why, size_t wn) {
  memset(s, 0, sizeof *s);
  s->D = plan_dim_opt(p, "D", -1), s->L = plan_dim_opt(p, "L", -1), s->H = plan_dim_opt(p, "H", -1);
  s->V = plan_dim_opt(p, "V", -1), s->Vp = plan_dim_opt(p, "Vp", -1), s->T = plan_dim_opt(p, "T", -1);
  if (s->D < 1 || s->L < 1 || s->H < 1 || s->V < 1 || s->Vp < s->V) { snprintf(why, wn, "the plan lacks the dims D, L, H, V, Vp"); return 0; }
  s->d = s->D / s->H;
  int have_attn = 0, have_norm = 0;
  for (int i = 0; i < p->nop; i++) {
    const Op *op = &p->ops[i];
    if (op->phase != PH_FWD) continue;
    if (!strcmp(op->kind, "attn")) {
      /* full causal attention, RoPE half-split over the whole head, no ALiBi, window or sinks */
      if (!op_int(p, op, "ROPE", 1, why, wn) || !op_int(p, op, "ALIBI", 0, why, wn) || !op_int(p, op, "WINDOW", 0, why, wn) ||
          !op_int(p, op, "SINK", 0, why, wn) || !op_int(p, op, "DQK", s->d, why, wn) || !op_int(p, op, "DV", s->d, why, wn) ||
          !op_int(p, op, "ROPE_DIM", s->d, why, wn))
        return 0;
      long hkv = (long)op_attr(p, op, "HKV");
      double base = op_attr(p, op, "rope_base");
      if (have_attn && (hkv != s->Hkv || base != s->rope_base)) {
        snprintf(why, wn, "op %d (%s): HKV %ld, rope_base %g differ from the first attention layer's", op->idx, op->comment, hkv, base);
        return 0;
      }
      s->Hkv = hkv, s->rope_base = base, have_attn = 1;
    } else if (!strcmp(op->kind, "glu")) {
      if (!op_int(p, op, "act", 1, why, wn)) return 0; /* SwiGLU, not GEGLU */
    } else if (!strcmp(op->kind, "rmsnorm") || !strcmp(op->kind, "add_rmsnorm")) {
      if (!have_norm) s->eps = op_attr(p, op, "eps");
      have_norm = 1;
    }
  }
  if (!have_attn) { snprintf(why, wn, "the plan has no attn op (Qwen2 attention: RoPE half-split, full causal)"); return 0; }
  if (!have_norm) { snprintf(why, wn, "the plan has no rmsnorm op"); return 0; }
  int fc = plan_param(p, "h.0.mlp.c_fc.weight");
  if (fc < 0 || p->params[fc].ndim != 2 || p->params[fc].dims[0] % 2) {
    snprintf(why, wn, "h.0.mlp.c_fc.weight is missing or not a gated [2F, D] matrix");
    return 0;
  }
  s->F = p->params[fc].dims[0] / 2;
  s->tied = plan_param(p, "lm_head.weight") < 0;
  /* every parameter: a Qwen2 backbone parameter with its shape, or one of ParScale's */
  long D = s->D, qkv = (s->H + 2 * s->Hkv) * s->d;
  int n_backbone = 0;
  *extra = 0;
  for (int i = 0; i < p->nparam; i++) {
    const Param *pa = &p->params[i];
    const char *rest = NULL;
    long l = layer_of(pa->name, &rest);
    long want[2] = {0, 0};
    int nd = 0;
    if (!strcmp(pa->name, "wte.weight") || !strcmp(pa->name, "lm_head.weight")) nd = 2, want[0] = s->Vp, want[1] = D;
    else if (!strcmp(pa->name, "ln_f.weight")) nd = 1, want[0] = D;
    else if (l >= 0 && l < s->L) {
      if (!strcmp(rest, "ln_1.weight") || !strcmp(rest, "ln_2.weight")) nd = 1, want[0] = D;
      else if (!strcmp(rest, "attn.c_attn.weight")) nd = 2, want[0] = qkv, want[1] = D;
      else if (!strcmp(rest, "attn.c_attn.bias")) nd = 1, want[0] = qkv;
      else if (!strcmp(rest, "attn.c_proj.weight")) nd = 2, want[0] = D, want[1] = s->H * s->d;
      else if (!strcmp(rest, "mlp.c_fc.weight")) nd = 2, want[0] = 2 * s->F, want[1] = D;
      else if (!strcmp(rest, "mlp.c_proj.weight")) nd = 2, want[0] = D, want[1] = s->F;
    }
    if (nd == 0) {
      if (parscale_param(pa->name)) { (*extra)++; continue; }
      snprintf(why, wn, "parameter %s has no Qwen2 counterpart", pa->name);
      return 0;
    }
    if (pa->ndim != nd || pa->dims[0] != want[0] || (nd == 2 && pa->dims[1] != want[1])) {
      snprintf(why, wn, "parameter %s does not have Qwen2's shape", pa->name);
      return 0;
    }
    n_backbone++;
  }
  int want_n = 2 + (s->tied ? 0 : 1) + 7 * (int)s->L;
  if (n_backbone != want_n) {
    snprintf(why, wn, "%d backbone parameters, a Qwen2 with %ld layers has %d (q/k/v bias, no other bias)", n_backbone, s->L, want_n);
    return 0;
  }
  return 1;
}

int qwen2_mappable(const Plan *p, int *extra, char *why, size_t wn) {
  Shape s;
  return plan_shape(p, &s, extra, why, wn);
}

/* The Hugging Face tensors of the backbone, in the order transformers lists them. */
static int pieces(const Plan *p, const Shape *s, Piece **out) {
  int cap = 4 + 12 * (int)s->L, n = 0;
  Piece *v = xcalloc((size_t)cap, sizeof *v);
#define ADD(HF, PARAM, R0, ROWS, COLS)                          \
  do {                                                          \
    snprintf(v[n].hf, sizeof v[n].hf, "%s", HF);                \
    v[n].param = plan_param(p, PARAM);                          \
    v[n].row0 = (R0), v[n].rows = (ROWS), v[n].cols = (COLS);   \
    n++;                                                        \
  } while (0)
  long D = s->D, q = s->H * s->d, kv = s->Hkv * s->d, F = s->F;
  char hf[160], our[160], our_b[160];
  ADD("model.embed_tokens.weight", "wte.weight", 0, s->V, D);
  for (long l = 0; l < s->L; l++) {
    static const char *QKV[3] = {"q", "k", "v"};
    long r0[3] = {0, q, q + kv}, rows[3] = {q, kv, kv};
    snprintf(our, sizeof our, "h.%ld.attn.c_attn.weight", l);
    snprintf(our_b, sizeof our_b, "h.%ld.attn.c_attn.bias", l);
    for (int k = 0; k < 3; k++) {
      snprintf(hf, sizeof hf, "model.layers.%ld.self_attn.%s_proj.weight", l, QKV[k]);
      ADD(hf, our, r0[k], rows[k], D);
      snprintf(hf, sizeof hf, "model.layers.%ld.self_attn.%s_proj.bias", l, QKV[k]);
      ADD(hf, our_b, r0[k], rows[k], 0);
    }
    snprintf(hf, sizeof hf, "model.layers.%ld.self_attn.o_proj.weight", l);
    snprintf(our, sizeof our, "h.%ld.attn.c_proj.weight", l);
    ADD(hf, our, 0, D, q);
    snprintf(hf, sizeof hf, "model.layers.%ld.mlp.gate_proj.weight", l);
    snprintf(our, sizeof our, "h.%ld.mlp.c_fc.weight", l);
    ADD(hf, our, 0, F, D);
    snprintf(hf, sizeof hf, "model.layers.%ld.mlp.up_proj.weight", l);
    ADD(hf, our, F, F, D);
    snprintf(hf, sizeof hf, "model.layers.%ld.mlp.down_proj.weight", l);
    snprintf(our, sizeof our, "h.%ld.mlp.c_proj.weight", l);
    ADD(hf, our, 0, D, F);
    snprintf(hf, sizeof hf, "model.layers.%ld.input_layernorm.weight", l);
    snprintf(our, sizeof our, "h.%ld.ln_1.weight", l);
    ADD(hf, our, 0, D, 0);
    snprintf(hf, sizeof hf, "model.layers.%ld.post_attention_layernorm.weight", l);
    snprintf(our, sizeof our, "h.%ld.ln_2.weight", l);
    ADD(hf, our, 0, D, 0);
  }
  ADD("model.norm.weight", "ln_f.weight", 0, D, 0);
  if (!s->tied) ADD("lm_head.weight", "lm_head.weight", 0, s->V, D);
#undef ADD
  *out = v;
  return n;
}

/* Where a piece starts in the parameter arena (elements). */
static long piece_off(const Plan *p, const Piece *pc) {
  return p->params[pc->param].offset + pc->row0 * (pc->cols ? pc->cols : 1);
}

/* ---------------- config.json ---------------- */

int hf_model_type(const char *dir, char *type, size_t tn, char *err, size_t errlen) {
  char path[4200];
  snprintf(path, sizeof path, "%s/config.json", dir);
  if (!file_exists(path)) return 0;
  JVal *c = json_read_file(path, err, errlen);
  if (!c) return -1;
  const JVal *mt = json_get(c, "model_type");
  snprintf(type, tn, "%s", mt && mt->type == J_STR ? mt->str : "");
  json_free(c);
  return 1;
}

/* config.json must describe the plan: each field the plan fixes, compared with what the plan has. */
static int check_config(const char *dir, const char *plan_name, const Shape *s, char *err, size_t errlen) {
  char path[4200];
  snprintf(path, sizeof path, "%s/config.json", dir);
  JVal *c = json_read_file(path, err, errlen);
  if (!c) return -1;
  int rc = -1;
  const JVal *mt = json_get(c, "model_type");
  if (!mt || mt->type != J_STR || strcmp(mt->str, "qwen2")) {
    snprintf(err, errlen, "%s: model_type is %s%s%s, expected \"qwen2\" (Qwen2ForCausalLM)", path, mt && mt->type == J_STR ? "\"" : "",
             mt && mt->type == J_STR ? mt->str : "missing", mt && mt->type == J_STR ? "\"" : "");
    goto done;
  }
  struct { const char *key; double want; int required; double dflt; const char *ours; } F[] = {
    {"hidden_size", (double)s->D, 1, 0, "d_model"},
    {"num_hidden_layers", (double)s->L, 1, 0, "n_layer"},
    {"num_attention_heads", (double)s->H, 1, 0, "n_head"},
    {"num_key_value_heads", (double)s->Hkv, 0, (double)s->H, "kv heads"},
    {"intermediate_size", (double)s->F, 1, 0, "mlp_hidden"},
    {"vocab_size", (double)s->V, 1, 0, "vocab_size"},
    {"rms_norm_eps", s->eps, 0, 1e-6, "ln_eps"},
    {"rope_theta", s->rope_base, 0, 10000.0, "rope_base"},
  };
  for (size_t k = 0; k < sizeof F / sizeof F[0]; k++) {
    const JVal *v = json_get(c, F[k].key);
    if (!strcmp(F[k].key, "rope_theta") && (!v || v->type == J_NULL)) /* transformers 5.x: rope_parameters.rope_theta */
      v = json_get(json_get(c, "rope_parameters"), "rope_theta");
    double x = F[k].dflt;
    if (v && v->type == J_NUM) x = v->num;
    else if ((v && v->type != J_NULL) || F[k].required) {
      snprintf(err, errlen, "%s: %s is %s, expected a number", path, F[k].key, v ? "not a number" : "missing");
      goto done;
    }
    if (fabs(x - F[k].want) > 1e-9 * fabs(F[k].want)) {
      snprintf(err, errlen, "%s: %s is %.9g, the plan %s has %s %.9g: the spec does not describe this checkpoint "
               "(write one with gen --import-hf)", path, F[k].key, x, plan_name, F[k].ours, F[k].want);
      goto done;
    }
  }
  const JVal *tie = json_get(c, "tie_word_embeddings");
  int tied = tie && tie->type == J_BOOL ? tie->b : 0; /* Qwen2Config's default: untied */
  if (tied != s->tied) {
    snprintf(err, errlen, "%s: tie_word_embeddings is %s, the plan %s has %s: the spec does not describe this checkpoint", path,
             tied ? "true" : "false", plan_name, s->tied ? "a tied head (no lm_head.weight)" : "an untied lm_head.weight");
    goto done;
  }
  rc = 0;
done:
  json_free(c);
  return rc;
}

/* ---------------- reading ---------------- */

/* The files of a checkpoint: model.safetensors, or the shards of model.safetensors.index.json. */
typedef struct {
  int n;
  StFile *f;
} Files;

static void files_close(Files *fs) {
  for (int i = 0; i < fs->n; i++) st_close(&fs->f[i]);
  free(fs->f);
  memset(fs, 0, sizeof *fs);
}

static int files_open(const char *dir, Files *fs, char *err, size_t errlen) {
  char path[4200], idx[4200];
  memset(fs, 0, sizeof *fs);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
  if (file_exists(path)) {
    fs->f = xcalloc(1, sizeof *fs->f);
    if (st_open(path, &fs->f[0], err, errlen)) { free(fs->f); fs->f = NULL; return -1; }
    fs->n = 1;
    return 0;
  }
  if (!file_exists(idx)) {
    snprintf(err, errlen, "%s: no model.safetensors and no model.safetensors.index.json (a Hugging Face model directory)", dir);
    return -1;
  }
  JVal *ix = json_read_file(idx, err, errlen);
  if (!ix) return -1;
  const JVal *wm = json_get(ix, "weight_map");
  if (!wm || wm->type != J_OBJ) {
    snprintf(err, errlen, "%s: no weight_map object", idx);
    json_free(ix);
    return -1;
  }
  /* each distinct shard once; every tensor the index names must be in the shard it names */
  char **names = xcalloc((size_t)wm->n + 1, sizeof *names);
  int rc = 0;
  for (int k = 0; k < wm->n && !rc; k++) {
    const JVal *v = &wm->items[k];
    if (v->type != J_STR || !v->str[0] || strchr(v->str, '/')) {
      snprintf(err, errlen, "%s: weight_map entry %s is not a file name in the directory", idx, wm->keys[k]);
      rc = -1;
      break;
    }
    int have = -1;
    for (int j = 0; j < fs->n; j++)
      if (!strcmp(names[j], v->str)) have = j;
    if (have < 0) {
      snprintf(path, sizeof path, "%s/%s", dir, v->str);
      fs->f = xrealloc(fs->f, (size_t)(fs->n + 1) * sizeof *fs->f);
      if (st_open(path, &fs->f[fs->n], err, errlen)) { rc = -1; break; }
      names[fs->n] = v->str;
      have = fs->n++;
    }
    if (!st_find(&fs->f[have], wm->keys[k])) {
      snprintf(err, errlen, "%s: tensor %s is missing (%s names that file for it)", fs->f[have].path, wm->keys[k], idx);
      rc = -1;
    }
  }
  free(names);
  json_free(ix);
  if (rc) files_close(fs);
  return rc;
}

static const StTensor *files_find(const Files *fs, const char *name, int *which) {
  for (int i = 0; i < fs->n; i++) {
    const StTensor *t = st_find(&fs->f[i], name);
    if (t) { *which = i; return t; }
  }
  return NULL;
}

/* Tensors a Qwen2 directory may hold besides the parameters: old checkpoints' rotary tables. */
static int ignorable(const char *name) {
  static const char tail[] = ".self_attn.rotary_emb.inv_freq";
  size_t n = strlen(name), k = sizeof tail - 1;
  return n > k && !strcmp(name + n - k, tail);
}

int qwen2_load(const char *dir, const Plan *p, float *master, char *dtype, size_t dn, char *err, size_t errlen) {
  Shape s;
  int extra;
  char why[256];
  if (!plan_shape(p, &s, &extra, why, sizeof why)) {
    snprintf(err, errlen, "%s: cannot load Hugging Face Qwen2 weights: %s", p->path, why);
    return -1;
  }
  if (check_config(dir, p->name, &s, err, errlen)) return -1;
  Files fs;
  if (files_open(dir, &fs, err, errlen)) return -1;
  Piece *pc;
  int np = pieces(p, &s, &pc), rc = -1;
  float *out = xmalloc((size_t)p->param_elems * sizeof *out);
  memcpy(out, master, (size_t)p->param_elems * sizeof *out);
  char **used = xcalloc((size_t)fs.n, sizeof *used);
  for (int i = 0; i < fs.n; i++) used[i] = xcalloc((size_t)(fs.f[i].n ? fs.f[i].n : 1), 1);
  dtype[0] = 0;
  /* rows ≥ V of wte / lm_head are zero: the padded vocabulary never appears in a softmax */
  for (int i = 0; i < p->nparam; i++)
    if (!strcmp(p->params[i].name, "wte.weight") || !strcmp(p->params[i].name, "lm_head.weight"))
      memset(out + p->params[i].offset, 0, (size_t)p->params[i].numel * sizeof *out);
  for (int k = 0; k < np; k++) {
    int w;
    const StTensor *t = files_find(&fs, pc[k].hf, &w);
    if (!t) {
      snprintf(err, errlen, "%s: tensor %s is missing%s", fs.n == 1 ? fs.f[0].path : dir, pc[k].hf,
               fs.n == 1 ? "" : " (in every shard of model.safetensors.index.json)");
      goto done;
    }
    used[w][t - fs.f[w].t] = 1;
    int nd = pc[k].cols ? 2 : 1;
    long want[2] = {pc[k].rows, pc[k].cols};
    if (t->ndim != nd || t->shape[0] != want[0] || (nd == 2 && t->shape[1] != want[1])) {
      char have[96] = "[", wt[64];
      for (int j = 0; j < t->ndim; j++) snprintf(have + strlen(have), sizeof have - strlen(have), j ? ",%ld" : "%ld", t->shape[j]);
      strcat(have, "]");
      if (nd == 2) snprintf(wt, sizeof wt, "[%ld,%ld]", want[0], want[1]);
      else snprintf(wt, sizeof wt, "[%ld]", want[0]);
      snprintf(err, errlen, "%s: tensor %s has shape %s, config.json (and the plan %s) make it %s", fs.f[w].path, t->name, have, p->name, wt);
      goto done;
    }
    if (strcmp(t->dtype, "F32") && strcmp(t->dtype, "BF16") && strcmp(t->dtype, "F16")) {
      snprintf(err, errlen, "%s: tensor %s has dtype %s; F32, BF16 and F16 are supported", fs.f[w].path, t->name, t->dtype);
      goto done;
    }
    if (!dtype[0]) snprintf(dtype, dn, "%s", t->dtype);
    if (st_read_f32(&fs.f[w], t->name, nd, want, out + piece_off(p, &pc[k]), err, errlen)) goto done;
  }
  for (int i = 0; i < fs.n; i++)
    for (int k = 0; k < fs.f[i].n; k++) {
      const char *n = fs.f[i].t[k].name;
      if (used[i][k] || ignorable(n) || (s.tied && !strcmp(n, "lm_head.weight"))) continue;
      snprintf(err, errlen, "%s: tensor %s has no place in the plan %s (a Qwen2 with %ld layers%s)", fs.f[i].path, n, p->name, s.L,
               s.tied ? ", tied head" : "");
      goto done;
    }
  memcpy(master, out, (size_t)p->param_elems * sizeof *out);
  rc = 0;
done:
  for (int i = 0; i < fs.n; i++) free(used[i]);
  free(used);
  free(out);
  free(pc);
  files_close(&fs);
  return rc;
}

/* ---------------- writing ---------------- */

/* IEEE half precision, round to nearest even; overflow to ±inf, NaN stays NaN. */
static uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00 : 0x7c00);
  if (ax >= 0x477ff000u) return sign | 0x7c00; /* ≥ 65520 rounds to inf */
  if (ax < 0x38800000u) {                      /* below 2^-14: a subnormal half (or zero) */
    /* value = ax as float; half subnormal unit 2^-24: q = round_even(value · 2^24) */
    float v;
    memcpy(&v, &ax, 4);
    double q = (double)v * 16777216.0;
    double r = nearbyint(q); /* default rounding mode: to nearest, ties to even */
    return sign | (uint16_t)r;
  }
  uint32_t e = (ax >> 23) - 127 + 15, m = ax & 0x7fffff;
  uint32_t h = (e << 10) | (m >> 13), rest = m & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++; /* may carry into the exponent: still right */
  return sign | (uint16_t)h;
}

/* A JSON float with the fewest digits that read back to x, always with a '.' or an exponent (transformers
 * keeps rope_theta a float). */
static void jfloat(double x, char *b, size_t n) {
  for (int digits = 1; digits <= 17; digits++) {
    snprintf(b, n, "%.*g", digits, x);
    if (strtod(b, NULL) == x) break;
  }
  if (!strpbrk(b, ".en")) snprintf(b + strlen(b), n - strlen(b), ".0");
}

/* The source checkpoint's config.json members that the plan does not know (the context the model was
 * made for, its special tokens), as text to splice into ours; defaults when there is none. */
static void carried(const char *src_dir, const Shape *s, char *b, size_t n) {
  long mpe = s->T;
  char ids[256] = "";
  JVal *c = NULL;
  char path[4200], e[512];
  if (src_dir) {
    snprintf(path, sizeof path, "%s/config.json", src_dir);
    c = json_read_file(path, e, sizeof e);
  }
  const JVal *v = json_get(c, "max_position_embeddings");
  if (v && v->type == J_NUM && v->num >= 1) mpe = (long)v->num;
  static const char *TOK[] = {"bos_token_id", "eos_token_id", "pad_token_id"};
  for (size_t k = 0; k < sizeof TOK / sizeof TOK[0]; k++) {
    v = json_get(c, TOK[k]);
    if (v && v->type == J_NUM)
      snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "  \"%s\": %ld,\n", TOK[k], (long)v->num);
  }
  snprintf(b, n, "  \"max_position_embeddings\": %ld,\n%s", mpe, ids);
  json_free(c);
}

static int write_config(const char *dir, const Shape *s, const char *dtype, const Plan *p, const char *src_dir, char *err,
                        size_t errlen) {
  const char *torch = !strcmp(dtype, "BF16") ? "bfloat16" : !strcmp(dtype, "F16") ? "float16" : "float32";
  char js[4096], path[4400], eps[40], theta[40], carry[512];
  jfloat(s->eps, eps, sizeof eps);
  jfloat(s->rope_base, theta, sizeof theta);
  carried(src_dir, s, carry, sizeof carry);
  /* rope_theta for transformers 4.x, rope_parameters for 5.x; sliding windows off */
  int n = snprintf(js, sizeof js,
                   "{\n  \"architectures\": [\"Qwen2ForCausalLM\"],\n  \"model_type\": \"qwen2\",\n"
                   "  \"vocab_size\": %ld,\n  \"hidden_size\": %ld,\n  \"intermediate_size\": %ld,\n"
                   "  \"num_hidden_layers\": %ld,\n  \"num_attention_heads\": %ld,\n  \"num_key_value_heads\": %ld,\n"
                   "  \"head_dim\": %ld,\n  \"hidden_act\": \"silu\",\n%s"
                   "  \"rms_norm_eps\": %s,\n  \"rope_theta\": %s,\n"
                   "  \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": %s},\n"
                   "  \"tie_word_embeddings\": %s,\n  \"use_sliding_window\": false,\n  \"sliding_window\": null,\n"
                   "  \"max_window_layers\": %ld,\n  \"attention_dropout\": 0.0,\n  \"initializer_range\": 0.02,\n"
                   "  \"use_cache\": true,\n  \"torch_dtype\": \"%s\",\n  \"dtype\": \"%s\",\n"
                   "  \"moonforge_plan\": \"%s\"\n}\n",
                   s->V, s->D, s->F, s->L, s->H, s->Hkv, s->d, carry, eps, theta, theta, s->tied ? "true" : "false",
                   s->L, torch, torch, p->name);
  snprintf(path, sizeof path, "%s/config.json", dir);
  return fs_write_atomic(path, js, (size_t)n, err, errlen);
}

int qwen2_export(const char *outdir, const Plan *p, const float *master, const char *dtype, const char *src_dir, char *err,
                 size_t errlen) {
  Shape s;
  int extra;
  char why[256];
  if (!plan_shape(p, &s, &extra, why, sizeof why)) {
    snprintf(err, errlen, "%s: cannot write Hugging Face Qwen2 weights: %s", p->path, why);
    return -1;
  }
  if (extra) {
    /* P = the rows of the aggregation's second layer (docs/ir_parscale.md: parscale.agg.fc2.weight [P, D]) */
    int fc2 = plan_param(p, "parscale.agg.fc2.weight");
    char pn[32] = "";
    if (fc2 >= 0) snprintf(pn, sizeof pn, " = %ld", p->params[fc2].dims[0]);
    snprintf(err, errlen, "%s: the plan %s has parscale.n%s (%d ParScale parameters: prefixes, aggregation); Qwen2ForCausalLM "
             "has none of them: only a plan with parscale.n = 1 exports to Hugging Face", outdir, p->name, pn, extra);
    return -1;
  }
  int bf16 = !strcmp(dtype, "BF16"), f16 = !strcmp(dtype, "F16");
  if (!bf16 && !f16 && strcmp(dtype, "F32")) {
    snprintf(err, errlen, "--export-dtype %s: expected f32, bf16 or f16", dtype);
    return -1;
  }
  struct stat st;
  if (stat(outdir, &st) == 0) {
    snprintf(err, errlen, "%s: already exists; --export-hf writes a new directory", outdir);
    return -1;
  }
  char tmp[4200], e2[256];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", outdir, (long)getpid());
  fs_remove_tree(tmp, e2, sizeof e2);
  if (fs_mkdirs(tmp, err, errlen)) return -1;
  Piece *pc;
  int np = pieces(p, &s, &pc), rc = -1;
  void **bufs = xcalloc((size_t)np, sizeof *bufs);
  StWriter w;
  st_writer_init(&w);
  st_add_meta(&w, "format", "pt"); /* transformers refuses safetensors files without it */
  st_add_meta(&w, "moonforge_plan", p->name);
  for (int k = 0; k < np; k++) {
    long n = pc[k].rows * (pc[k].cols ? pc[k].cols : 1);
    const float *src = master + piece_off(p, &pc[k]);
    long shape[2] = {pc[k].rows, pc[k].cols};
    int nd = pc[k].cols ? 2 : 1;
    if (bf16 || f16) {
      uint16_t *h = xmalloc((size_t)n * sizeof *h);
      for (long i = 0; i < n; i++) h[i] = bf16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
      bufs[k] = h;
      st_add(&w, pc[k].hf, dtype, nd, shape, h);
    } else {
      st_add(&w, pc[k].hf, "F32", nd, shape, src);
    }
  }
  char path[4400], parent[4200];
  snprintf(path, sizeof path, "%s/model.safetensors", tmp);
  if (st_write(&w, path, err, errlen) || write_config(tmp, &s, dtype, p, src_dir, err, errlen) || fs_sync_dir(tmp, err, errlen)) goto done;
  if (rename(tmp, outdir)) {
    snprintf(err, errlen, "%s: cannot rename %s into place: %s", outdir, tmp, strerror(errno));
    goto done;
  }
  snprintf(parent, sizeof parent, "%s", outdir);
  char *slash = strrchr(parent, '/');
  if (slash && slash != parent) *slash = 0;
  else snprintf(parent, sizeof parent, slash ? "/" : ".");
  if (fs_sync_dir(parent, err, errlen)) goto done;
  rc = 0;
done:
  if (rc) fs_remove_tree(tmp, e2, sizeof e2);
  for (int k = 0; k < np; k++) free(bufs[k]);
  free(bufs);
  free(pc);
  st_writer_free(&w);
  return rc;
}
