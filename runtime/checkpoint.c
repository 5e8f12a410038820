/* checkpoint.c — see checkpoint.h. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoint.h"
#include "fsutil.h"
#include "safetensors.h"
#include "util.h"
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_FORMAT "moonforge-state"
#define STATE_VERSION "1"

/* ---------------- Hugging Face GPT-2 names ---------------- */

/* Parameters of a transformer block, after "h.<l>.". The four Linear weights are stored [out, in]
 * here and as Conv1D [in, out] by Hugging Face. */
static const struct { const char *suffix; int transposed; } BLOCK[] = {
  {"ln_1.weight", 0}, {"ln_1.bias", 0}, {"attn.c_attn.weight", 1}, {"attn.c_attn.bias", 0},
  {"attn.c_proj.weight", 1}, {"attn.c_proj.bias", 0}, {"ln_2.weight", 0}, {"ln_2.bias", 0},
  {"mlp.c_fc.weight", 1}, {"mlp.c_fc.bias", 0}, {"mlp.c_proj.weight", 1}, {"mlp.c_proj.bias", 0},
};
static const char *TOP[] = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"};

/* 1 when `name` (our name = the HF name without "transformer.") is a GPT-2 parameter; *transposed
 * says whether its HF layout is the transpose of ours. */
static int gpt2_name(const char *name, int *transposed) {
  *transposed = 0;
  for (size_t i = 0; i < sizeof TOP / sizeof TOP[0]; i++)
    if (!strcmp(name, TOP[i])) return 1;
  if (strncmp(name, "h.", 2)) return 0;
  const char *s = name + 2;
  if (*s < '0' || *s > '9') return 0;
  while (*s >= '0' && *s <= '9') s++;
  if (*s++ != '.') return 0;
  for (size_t i = 0; i < sizeof BLOCK / sizeof BLOCK[0]; i++)
    if (!strcmp(s, BLOCK[i].suffix)) { *transposed = BLOCK[i].transposed; return 1; }
  return 0;
}

/* The forward op kinds of GPT-2 (docs/ir.md); a plan with any other (RMSNorm, RoPE, GLU, ReLU,
 * grouped or windowed attention, ...) computes something a GPT2LMHeadModel does not. */
static const char *GPT2_FWD_KINDS[] = {"embed", "layernorm", "add_layernorm", "matmul", "attention", "gelu", "add", "xent", "loss_sum"};

int hf_mappable(const Plan *p, char *why, size_t wn) {
  /* the math: only GPT-2's ops, plain causal attention, at most the bias and GELU epilogues */
  for (int i = 0; i < p->nop; i++) {
    const Op *op = &p->ops[i];
    if (op->phase != PH_FWD) continue;
    int known = 0;
    for (size_t k = 0; k < sizeof GPT2_FWD_KINDS / sizeof GPT2_FWD_KINDS[0]; k++) known |= !strcmp(op->kind, GPT2_FWD_KINDS[k]);
    if (!known) { snprintf(why, wn, "op %d (%s, %s) is not part of GPT-2", op->idx, op->kind, op->comment); return 0; }
    if (!strcmp(op->kind, "matmul") && op_has_attr(op, "epi") && op_attr(p, op, "epi") > 2) {
      snprintf(why, wn, "op %d (%s): a matmul epilogue GPT-2 does not have", op->idx, op->comment);
      return 0;
    }
    if (!strcmp(op->kind, "attention"))
      for (int a = 0; a < op->nattr; a++)
        if (strcmp(op->attr[a].key, "B") && strcmp(op->attr[a].key, "T") && strcmp(op->attr[a].key, "H") && strcmp(op->attr[a].key, "d")) {
          snprintf(why, wn, "op %d (%s): attention with %s, not GPT-2's plain causal attention", op->idx, op->comment, op->attr[a].key);
          return 0;
        }
  }
  /* the parameters: exactly GPT-2's, every one of them, Linear weights as matrices */
  int tr;
  for (int i = 0; i < p->nparam; i++) {
    const Param *pa = &p->params[i];
    if (!gpt2_name(pa->name, &tr)) { snprintf(why, wn, "parameter %s has no Hugging Face GPT-2 name", pa->name); return 0; }
    if ((tr || !strcmp(pa->name, "wte.weight") || !strcmp(pa->name, "wpe.weight")) && pa->ndim != 2) {
      snprintf(why, wn, "parameter %s is not a matrix", pa->name);
      return 0;
    }
  }
  long L = plan_dim_opt(p, "L", -1);
  int want = 4 + 12 * (int)(L > 0 ? L : 0);
  char name[160];
  for (size_t k = 0; k < sizeof TOP / sizeof TOP[0]; k++)
    if (plan_param(p, TOP[k]) < 0) { snprintf(why, wn, "the plan has no %s", TOP[k]); return 0; }
  for (long l = 0; l < L; l++)
    for (size_t k = 0; k < sizeof BLOCK / sizeof BLOCK[0]; k++) {
      snprintf(name, sizeof name, "h.%ld.%s", l, BLOCK[k].suffix);
      if (plan_param(p, name) < 0) { snprintf(why, wn, "the plan has no %s", name); return 0; }
    }
  if (L < 1 || p->nparam != want) { snprintf(why, wn, "%d parameters, GPT-2 with L=%ld has %d", p->nparam, L, want); return 0; }
  return 1;
}

static void transpose(const float *in, long rows, long cols, float *out) {
  for (long r = 0; r < rows; r++)
    for (long c = 0; c < cols; c++) out[c * rows + r] = in[r * cols + c];
}

static double layernorm_eps(const Plan *p) {
  for (int i = 0; i < p->nop; i++)
    if ((!strcmp(p->ops[i].kind, "layernorm") || !strcmp(p->ops[i].kind, "add_layernorm")) && op_has_attr(&p->ops[i], "eps"))
      return op_attr(p, &p->ops[i], "eps");
  return 1e-5;
}

static int write_hf_config(const char *dir, const Plan *p, char *err, size_t errlen) {
  long V = plan_dim(p, "V"), T = plan_dim(p, "T"), D = plan_dim(p, "D"), L = plan_dim(p, "L"), H = plan_dim(p, "H");
  int fc = plan_param(p, "h.0.mlp.c_fc.weight");
  char inner[32] = "null";
  if (fc >= 0 && p->params[fc].ndim == 2 && p->params[fc].dims[0] != 4 * D) snprintf(inner, sizeof inner, "%ld", p->params[fc].dims[0]);
  long eot = V > 50256 ? 50256 : V - 1; /* GPT-2's end-of-text, or the last id of a smaller vocabulary */
  char js[2048], path[4200];
  int n = snprintf(js, sizeof js,
                   "{\n  \"architectures\": [\"GPT2LMHeadModel\"],\n  \"model_type\": \"gpt2\",\n"
                   "  \"vocab_size\": %ld,\n  \"n_positions\": %ld,\n  \"n_ctx\": %ld,\n  \"n_embd\": %ld,\n"
                   "  \"n_layer\": %ld,\n  \"n_head\": %ld,\n  \"n_inner\": %s,\n"
                   "  \"activation_function\": \"gelu_new\",\n  \"layer_norm_epsilon\": %.9g,\n"
                   "  \"resid_pdrop\": 0.0,\n  \"embd_pdrop\": 0.0,\n  \"attn_pdrop\": 0.0,\n"
                   "  \"initializer_range\": 0.02,\n  \"scale_attn_weights\": true,\n  \"tie_word_embeddings\": true,\n"
                   "  \"use_cache\": true,\n  \"bos_token_id\": %ld,\n  \"eos_token_id\": %ld,\n"
                   "  \"torch_dtype\": \"float32\",\n  \"moonforge_plan\": \"%s\"\n}\n",
                   V, T, T, D, L, H, inner, layernorm_eps(p), eot, eot, p->name);
  snprintf(path, sizeof path, "%s/config.json", dir);
  return fs_write_atomic(path, js, (size_t)n, err, errlen);
}

int hf_save(const char *dir, const Plan *p, const float *master, char *err, size_t errlen) {
  char why[256];
  if (!hf_mappable(p, why, sizeof why)) { snprintf(err, errlen, "%s: cannot write Hugging Face weights: %s", dir, why); return -1; }
  long V = plan_dim(p, "V");
  StWriter w;
  st_writer_init(&w);
  st_add_meta(&w, "format", "pt"); /* transformers refuses safetensors files without it */
  st_add_meta(&w, "moonforge_plan", p->name);
  st_add_meta(&w, "moonforge_source_hash", p->hash);
  float **owned = xcalloc((size_t)p->nparam, sizeof *owned);
  char name[300];
  for (int i = 0; i < p->nparam; i++) {
    const Param *pa = &p->params[i];
    const float *src = master + pa->offset;
    int tr;
    gpt2_name(pa->name, &tr);
    snprintf(name, sizeof name, "transformer.%s", pa->name);
    long shape[4];
    int nd = pa->ndim;
    for (int k = 0; k < nd; k++) shape[k] = pa->dims[k];
    if (!strcmp(pa->name, "wte.weight")) {
      if (V > pa->dims[0]) { snprintf(err, errlen, "%s: V=%ld exceeds the rows of wte.weight", p->path, V); goto fail; }
      shape[0] = V; /* the padded rows stay behind: rows 0..V-1 are contiguous */
    } else if (tr) {
      owned[i] = xmalloc((size_t)pa->numel * sizeof(float));
      transpose(src, pa->dims[0], pa->dims[1], owned[i]);
      src = owned[i];
      shape[0] = pa->dims[1];
      shape[1] = pa->dims[0];
    }
    st_add(&w, name, "F32", nd, shape, src);
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  int rc = st_write(&w, path, err, errlen);
  if (!rc) rc = write_hf_config(dir, p, err, errlen);
  for (int i = 0; i < p->nparam; i++) free(owned[i]);
  free(owned);
  st_writer_free(&w);
  return rc;
fail:
  for (int i = 0; i < p->nparam; i++) free(owned[i]);
  free(owned);
  st_writer_free(&w);
  return -1;
}

static void shape_str(int nd, const long *s, char *b, size_t n) {
  size_t k = (size_t)snprintf(b, n, "[");
  for (int i = 0; i < nd && k < n; i++) k += (size_t)snprintf(b + k, n - k, i ? ",%ld" : "%ld", s[i]);
  if (k < n) snprintf(b + k, n - k, "]");
}

/* Buffers that Hugging Face GPT-2 files may hold besides the parameters. */
static int hf_ignorable(const char *name) {
  size_t n = strlen(name);
  return !strcmp(name, "lm_head.weight") || (n > 10 && !strcmp(name + n - 10, ".attn.bias")) ||
         (n > 17 && !strcmp(name + n - 17, ".attn.masked_bias"));
}

int hf_load(const char *dir, const Plan *p, float *master, char *err, size_t errlen) {
  char why[256], path[4200];
  if (!hf_mappable(p, why, sizeof why)) { snprintf(err, errlen, "%s: cannot load Hugging Face weights: %s", p->path, why); return -1; }
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  if (!file_exists(path)) {
    snprintf(err, errlen, "%s: no such file (--init-from wants a Hugging Face GPT-2 directory with model.safetensors)", path);
    return -1;
  }
  StFile f;
  if (st_open(path, &f, err, errlen)) return -1;
  long V = plan_dim(p, "V"), T = plan_dim(p, "T");
  float *out = xcalloc((size_t)p->param_elems, sizeof *out);
  char *used = xcalloc((size_t)(f.n ? f.n : 1), 1);
  int rc = -1;
  for (int i = 0; i < p->nparam; i++) {
    const Param *pa = &p->params[i];
    int tr;
    gpt2_name(pa->name, &tr);
    char name[300];
    snprintf(name, sizeof name, "transformer.%s", pa->name);
    const StTensor *t = st_find(&f, name);
    if (!t) t = st_find(&f, pa->name);
    if (!t) { snprintf(err, errlen, "%s: tensor transformer.%s is missing", path, pa->name); goto done; }
    used[t - f.t] = 1;
    /* the shape this parameter has in Hugging Face's layout */
    long want[4];
    for (int k = 0; k < pa->ndim; k++) want[k] = pa->dims[k];
    int is_wte = !strcmp(pa->name, "wte.weight"), is_wpe = !strcmp(pa->name, "wpe.weight");
    if (is_wte) want[0] = V;
    if (tr) { want[0] = pa->dims[1]; want[1] = pa->dims[0]; }
    int ok = t->ndim == pa->ndim;
    for (int k = 0; ok && k < pa->ndim; k++) ok = t->shape[k] == want[k] || (is_wpe && k == 0 && t->shape[0] >= T);
    if (!ok) {
      char have[96], w[96];
      shape_str(t->ndim, t->shape, have, sizeof have);
      shape_str(pa->ndim, want, w, sizeof w);
      snprintf(err, errlen, "%s: tensor %s has shape %s, this plan needs %s%s", path, t->name, have, w,
               is_wte ? " (the vocabulary differs)" : is_wpe ? " (at least T positions)" : "");
      goto done;
    }
    float *tmp = xmalloc((size_t)t->numel * sizeof *tmp);
    if (st_read_f32(&f, t->name, t->ndim, t->shape, tmp, err, errlen)) { free(tmp); goto done; }
    float *dst = out + pa->offset;
    if (tr) transpose(tmp, pa->dims[1], pa->dims[0], dst);
    else if (is_wte) memcpy(dst, tmp, (size_t)(V * pa->dims[1]) * sizeof *dst); /* rows V..Vp-1 stay 0 */
    else memcpy(dst, tmp, (size_t)pa->numel * sizeof *dst); /* wpe: the first T rows */
    free(tmp);
  }
  for (int k = 0; k < f.n; k++) {
    const char *n = f.t[k].name;
    const char *bare = strncmp(n, "transformer.", 12) ? n : n + 12;
    if (!used[k] && !hf_ignorable(bare)) {
      snprintf(err, errlen, "%s: tensor %s has no place in this plan (%s): a checkpoint of a different model", path, n, p->name);
      goto done;
    }
  }
  memcpy(master, out, (size_t)p->param_elems * sizeof *out);
  rc = 0;
done:
  free(out);
  free(used);
  st_close(&f);
  return rc;
}

/* ---------------- resume state ---------------- */

/* A 64-bit hash of a sequence of 4-byte words (every tensor here is f32), streamed across
 * tensors: catches a corrupted data section that still has the right size. */
typedef struct { uint64_t h; } Hash;
static void hash_init(Hash *s) { s->h = 0x6a09e667f3bcc908ull; }
static void hash_words(Hash *s, const void *data, size_t bytes) {
  const unsigned char *p = data;
  uint64_t h = s->h;
  for (size_t i = 0; i + 4 <= bytes; i += 4) {
    uint32_t w;
    memcpy(&w, p + i, 4);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  s->h = h;
}
static uint64_t hash_final(const Hash *s, uint64_t bytes) {
  uint64_t x = s->h ^ bytes;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static const char *ARENAS[3] = {"master", "adam_m", "adam_v"};

static void meta_num(StWriter *w, const char *key, long long v) {
  char b[32];
  snprintf(b, sizeof b, "%lld", v);
  st_add_meta(w, key, b);
}
static void meta_u64(StWriter *w, const char *key, uint64_t v) {
  char b[32];
  snprintf(b, sizeof b, "%" PRIu64, v);
  st_add_meta(w, key, b);
}

static int write_state(const char *path, const Plan *p, const float *arena[3], const TrainState *s, char *err, size_t errlen) {
  StWriter w;
  st_writer_init(&w);
  Hash h;
  hash_init(&h);
  uint64_t bytes = 0;
  char name[300];
  for (int a = 0; a < 3; a++)
    for (int i = 0; i < p->nparam; i++) {
      const Param *pa = &p->params[i];
      snprintf(name, sizeof name, "%s.%s", ARENAS[a], pa->name);
      st_add(&w, name, "F32", pa->ndim, pa->dims, arena[a] + pa->offset);
      hash_words(&h, arena[a] + pa->offset, (size_t)pa->numel * 4);
      bytes += (uint64_t)pa->numel * 4;
    }
  st_add_meta(&w, "format", STATE_FORMAT);
  st_add_meta(&w, "version", STATE_VERSION);
  st_add_meta(&w, "plan", p->name);
  st_add_meta(&w, "plan_hash", p->hash);
  meta_num(&w, "step", s->step);
  meta_num(&w, "total_steps", s->total_steps);
  meta_u64(&w, "seed", s->seed);
  st_add_meta(&w, "data", s->synthetic ? "synthetic" : "shards");
  meta_u64(&w, "synth_counter", s->synth_counter);
  meta_num(&w, "synth_cur", s->synth_cur);
  meta_u64(&w, "loader_seed", s->loader.seed);
  meta_num(&w, "loader_epoch", s->loader.epoch);
  meta_num(&w, "loader_shard", s->loader.shard);
  meta_num(&w, "loader_offset", s->loader.offset);
  char hx[32];
  snprintf(hx, sizeof hx, "%016" PRIx64, hash_final(&h, bytes));
  st_add_meta(&w, "data_hash", hx);
  int rc = st_write(&w, path, err, errlen);
  st_writer_free(&w);
  return rc;
}

/* Remove directories left by saves that were killed before their rename. */
static void remove_stale_tmp(const char *ckdir) {
  DIR *d = opendir(ckdir);
  if (!d) return;
  struct dirent *e;
  char p[4600], err[512];
  while ((e = readdir(d)))
    if (!strncmp(e->d_name, ".tmp-", 5)) {
      snprintf(p, sizeof p, "%s/%s", ckdir, e->d_name);
      if (fs_remove_tree(p, err, sizeof err)) fprintf(stderr, "runtime: note: %s\n", err);
    }
  closedir(d);
}

int ckpt_save(const char *run_dir, Backend *b, const TrainState *s, char *dir_out, size_t dn, char *err, size_t errlen) {
  const Plan *p = b->plan;
  char ckdir[4200], tmp[4400], final[4400], path[4600], latest[4400], why[256];
  snprintf(ckdir, sizeof ckdir, "%s/ckpt", run_dir);
  if (fs_mkdirs(ckdir, err, errlen)) return -1;
  remove_stale_tmp(ckdir);
  snprintf(tmp, sizeof tmp, "%s/.tmp-step_%06ld.%ld", ckdir, s->step, (long)getpid());
  snprintf(final, sizeof final, "%s/step_%06ld", ckdir, s->step);
  if (mkdir(tmp, 0755)) { snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno)); return -1; }

  size_t pe = (size_t)p->param_elems;
  float *master = xmalloc(pe * sizeof(float)), *m = xmalloc(pe * sizeof(float)), *v = xmalloc(pe * sizeof(float));
  b->get_master(b, master);
  b->get_opt_state(b, m, v);
  const float *arena[3] = {master, m, v};
  int rc = 0;
  if (hf_mappable(p, why, sizeof why)) rc = hf_save(tmp, p, master, err, errlen);
  else {
    static int noted;
    if (!noted++) fprintf(stderr, "runtime: note: %s: checkpoints hold only state.safetensors\n", why);
  }
  snprintf(path, sizeof path, "%s/state.safetensors", tmp);
  if (!rc) rc = write_state(path, p, arena, s, err, errlen);
  free(master);
  free(m);
  free(v);
  if (!rc) rc = fs_sync_dir(tmp, err, errlen);
  /* an older directory of the same step (a run resumed from before it) is replaced */
  if (!rc && fs_is_dir(final)) rc = fs_remove_tree(final, err, errlen);
  if (!rc && rename(tmp, final)) {
    snprintf(err, errlen, "%s: cannot rename %s into place: %s", final, tmp, strerror(errno));
    rc = -1;
  }
  if (rc) {
    char e2[256];
    fs_remove_tree(tmp, e2, sizeof e2);
    return -1;
  }
  if (fs_sync_dir(ckdir, err, errlen)) return -1;
  char line[64];
  int n = snprintf(line, sizeof line, "step_%06ld\n", s->step);
  snprintf(latest, sizeof latest, "%s/latest", ckdir);
  if (fs_write_atomic(latest, line, (size_t)n, err, errlen)) return -1;
  snprintf(dir_out, dn, "%s", final);
  return 0;
}

int ckpt_find_latest(const char *run_dir, char *dir, size_t dn, char *err, size_t errlen) {
  char ckdir[4200], p[4600];
  snprintf(ckdir, sizeof ckdir, "%s/ckpt", run_dir);
  DIR *d = opendir(ckdir);
  if (!d) {
    if (errno == ENOENT) return 0;
    snprintf(err, errlen, "%s: cannot open: %s", ckdir, strerror(errno));
    return -1;
  }
  long best = -1;
  struct dirent *e;
  while ((e = readdir(d))) {
    const char *n = e->d_name;
    if (strncmp(n, "step_", 5) || !n[5]) continue;
    char *end;
    errno = 0;
    long step = strtol(n + 5, &end, 10);
    if (*end || errno || step < 0) continue;
    snprintf(p, sizeof p, "%s/%s/state.safetensors", ckdir, n);
    struct stat st;
    if (stat(p, &st) || !S_ISREG(st.st_mode)) {
      fprintf(stderr, "runtime: note: ignoring %s/%s: no state.safetensors (an incomplete checkpoint)\n", ckdir, n);
      continue;
    }
    if (step > best) {
      best = step;
      snprintf(dir, dn, "%s/%s", ckdir, n);
    }
  }
  closedir(d);
  return best >= 0;
}

static int meta_int(const StFile *f, const char *key, int64_t lo, long long *v, char *err, size_t errlen) {
  const char *s = st_meta(f, key);
  char *end;
  errno = 0;
  long long x = s ? strtoll(s, &end, 10) : 0;
  if (!s || !*s || errno || *end || x < lo) {
    snprintf(err, errlen, "%s: metadata %s is %s%s%s (a corrupt resume state)", f->path, key, s ? "'" : "missing", s ? s : "", s ? "'" : "");
    return -1;
  }
  *v = x;
  return 0;
}

static int meta_uint(const StFile *f, const char *key, uint64_t *v, char *err, size_t errlen) {
  const char *s = st_meta(f, key);
  char *end;
  errno = 0;
  unsigned long long x = s ? strtoull(s, &end, 10) : 0;
  if (!s || !*s || *s == '-' || errno || *end) {
    snprintf(err, errlen, "%s: metadata %s is %s%s%s (a corrupt resume state)", f->path, key, s ? "'" : "missing", s ? s : "", s ? "'" : "");
    return -1;
  }
  *v = x;
  return 0;
}

/* Open and verify CKPT/state.safetensors against the plan; read the arenas wanted (NULL: skip). */
static int read_state(const char *ckpt_dir, const Plan *p, float *arena[3], TrainState *s, char *err, size_t errlen) {
  char path[4200];
  snprintf(path, sizeof path, "%s/state.safetensors", ckpt_dir);
  StFile f;
  if (st_open(path, &f, err, errlen)) return -1;
  int rc = -1;
  const char *fmt = st_meta(&f, "format"), *ver = st_meta(&f, "version");
  const char *cplan = st_meta(&f, "plan"), *chash = st_meta(&f, "plan_hash"), *data = st_meta(&f, "data");
  if (!fmt || strcmp(fmt, STATE_FORMAT)) { snprintf(err, errlen, "%s: not a moonforge resume state (metadata format is '%s')", path, fmt ? fmt : "missing"); goto done; }
  if (!ver || strcmp(ver, STATE_VERSION)) { snprintf(err, errlen, "%s: resume state version '%s', this runtime reads version %s", path, ver ? ver : "missing", STATE_VERSION); goto done; }
  /* the data section must hash to what was written */
  const char *hx = st_meta(&f, "data_hash");
  Hash h;
  hash_init(&h);
  size_t bytes = f.size - f.data_off;
  hash_words(&h, f.buf + f.data_off, bytes);
  char got[32];
  snprintf(got, sizeof got, "%016" PRIx64, hash_final(&h, bytes));
  if (!hx || strcmp(hx, got)) { snprintf(err, errlen, "%s: data hash %s does not match the recorded %s: the file is corrupt", path, got, hx ? hx : "(none)"); goto done; }
  /* the parameter table: every plan parameter with its shape, and nothing else */
  char name[300], have[96], want[96];
  for (int a = 0; a < 3; a++)
    for (int i = 0; i < p->nparam; i++) {
      const Param *pa = &p->params[i];
      snprintf(name, sizeof name, "%s.%s", ARENAS[a], pa->name);
      const StTensor *t = st_find(&f, name);
      if (!t) {
        snprintf(err, errlen, "%s: tensor %s is missing: the checkpoint is from a different spec (plan %s, this is %s)", path, name,
                 cplan ? cplan : "?", p->name);
        goto done;
      }
      int same = t->ndim == pa->ndim && !strcmp(t->dtype, "F32");
      for (int k = 0; same && k < pa->ndim; k++) same = t->shape[k] == pa->dims[k];
      if (!same) {
        shape_str(t->ndim, t->shape, have, sizeof have);
        shape_str(pa->ndim, pa->dims, want, sizeof want);
        snprintf(err, errlen, "%s: tensor %s is %s %s, this plan's %s is F32 %s: the checkpoint is from a different spec (plan %s, this is %s)",
                 path, name, t->dtype, have, pa->name, want, cplan ? cplan : "?", p->name);
        goto done;
      }
      if (arena[a]) memcpy(arena[a] + pa->offset, f.buf + f.data_off + t->begin, (size_t)pa->numel * 4);
    }
  for (int k = 0; k < f.n; k++) {
    const char *n = f.t[k].name, *dot = strchr(n, '.');
    int known = 0;
    if (dot)
      for (int a = 0; a < 3 && !known; a++)
        known = (size_t)(dot - n) == strlen(ARENAS[a]) && !strncmp(n, ARENAS[a], (size_t)(dot - n)) && plan_param(p, dot + 1) >= 0;
    if (!known) {
      snprintf(err, errlen, "%s: tensor %s is not a parameter of this plan (%s): the checkpoint is from a different spec (plan %s)", path, n,
               p->name, cplan ? cplan : "?");
      goto done;
    }
  }
  long long step, total, cur, ep, sh, off;
  uint64_t seed, ctr, lseed;
  if (meta_int(&f, "step", 0, &step, err, errlen) || meta_int(&f, "total_steps", 0, &total, err, errlen) ||
      meta_uint(&f, "seed", &seed, err, errlen) || meta_uint(&f, "synth_counter", &ctr, err, errlen) ||
      meta_int(&f, "synth_cur", 0, &cur, err, errlen) || meta_uint(&f, "loader_seed", &lseed, err, errlen) ||
      meta_int(&f, "loader_epoch", 0, &ep, err, errlen) || meta_int(&f, "loader_shard", 0, &sh, err, errlen) ||
      meta_int(&f, "loader_offset", 0, &off, err, errlen))
    goto done;
  if (!data || (strcmp(data, "synthetic") && strcmp(data, "shards"))) {
    snprintf(err, errlen, "%s: metadata data is '%s', expected synthetic or shards", path, data ? data : "missing");
    goto done;
  }
  if (chash && strcmp(chash, p->hash))
    fprintf(stderr, "runtime: note: %s was written by plan %s (source hash %s); this plan is %s (%s): the parameters match\n",
            path, cplan ? cplan : "?", chash, p->name, p->hash);
  memset(s, 0, sizeof *s);
  s->step = (long)step;
  s->total_steps = (long)total;
  s->seed = seed;
  s->synthetic = !strcmp(data, "synthetic");
  s->synth_counter = ctr;
  s->synth_cur = (long)cur;
  s->loader.seed = lseed;
  s->loader.epoch = ep;
  s->loader.shard = sh;
  s->loader.offset = off;
  rc = 0;
done:
  st_close(&f);
  return rc;
}

int ckpt_load(const char *ckpt_dir, Backend *b, TrainState *s, char *err, size_t errlen) {
  const Plan *p = b->plan;
  size_t pe = (size_t)p->param_elems;
  float *arena[3];
  for (int a = 0; a < 3; a++) arena[a] = xcalloc(pe, sizeof(float));
  TrainState t;
  int rc = read_state(ckpt_dir, p, arena, &t, err, errlen);
  if (!rc) {
    b->set_master(b, arena[0]);
    b->set_opt_state(b, arena[1], arena[2]);
    *s = t;
  }
  for (int a = 0; a < 3; a++) free(arena[a]);
  return rc;
}

int ckpt_load_weights(const char *ckpt_dir, const Plan *p, float *master, char *err, size_t errlen) {
  float *w = xcalloc((size_t)p->param_elems, sizeof(float));
  float *arena[3] = {w, NULL, NULL};
  TrainState t;
  int rc = read_state(ckpt_dir, p, arena, &t, err, errlen);
  if (!rc) memcpy(master, w, (size_t)p->param_elems * sizeof(float));
  free(w);
  return rc;
}
