/* test_runtime_cpu.c — unit tests of the runtime core and the CPU reference backend: plan parsing
 * and its error messages, safetensors round trips and corruption errors, bf16 rounding, tokidx,
 * init determinism, the lr schedule, every CPU op kind against hand computations or finite
 * differences, and the CPU backend on a small hand-written plan (step, accumulation, AdamW).
 * Prints "ok - ..." / "not ok - ..." and ends with "N passed, M failed"; exits 1 on a failure.
 * Build: see the Makefile (bin/test_runtime_cpu): every runtime C file except main.c, -lopenblas -lm. */
#define _POSIX_C_SOURCE 200809L
#include "backend.h"
#include "check.h"
#include "cpu_ops.h"
#include "init.h"
#include "plan.h"
#include "safetensors.h"
#include "train.h"
#include "util.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int npass, nfail;
static char dir[256];

static void check(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
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
  static char buf[8][600];
  static int k;
  char *p = buf[k++ % 8];
  snprintf(p, sizeof buf[0], "%s/%s", dir, name);
  return p;
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  if (!f) { perror(path); exit(2); }
  fputs(text, f);
  fclose(f);
}

/* deterministic test data in [-1, 1) */
static uint64_t rs = 12345;
static float frand(void) { return (float)(2.0 * rng_uniform(77, rs++) - 1.0); }
static void fill(float *x, long n, float scale) { for (long i = 0; i < n; i++) x[i] = scale * frand(); }
static float *falloc(long n) { return xcalloc((size_t)n, sizeof(float)); }

static double maxabs_diff(const float *a, const float *b, long n) {
  double m = 0;
  for (long i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
  return m;
}

/* ================= plan parsing ================= */

/* A small but complete plan: a "model" with an embedding, a layernorm and a tied head.
 * Buffer 7 (dx) shares CPU memory with buffer 4 (logits/dlogits), which is dead by then. */
static const char *MINI_PLAN =
  "moonforge-plan 1\n"
  "# a comment line\n"
  "name mini\n"
  "source_hash 00ff\n"
  "dim B 2\ndim T 4\ndim D 8\ndim V 10\ndim Vp 16\ndim N 8\ndim accum %d\ndim flops_per_token 1000\n"
  "train lr 0.01\ntrain min_lr 0.001\ntrain warmup_steps 2\ntrain steps 10\ntrain beta1 0.9\ntrain beta2 0.95\n"
  "param 0 wte.weight 128 0 1 normal 0.5 2 16 8\n"
  "param 1 wpe.weight 32 128 0 normal 0.5 2 4 8\n"
  "param 2 ln_f.weight 8 256 0 ones 0 1 8\n"
  "param 3 ln_f.bias 8 384 0 zeros 0 1 8\n"
  "arena params 512\n"
  "buffer 0 x f32 64 0 0\n"
  "buffer 1 y bf16 64 256 64\n"
  "buffer 2 mean f32 8 384 128\n"
  "buffer 3 rstd f32 8 416 136\n"
  "buffer 4 logits bf16 128 448 144\n"
  "buffer 5 losses f32 8 704 272\n"
  "buffer 6 dy bf16 64 736 280\n"
  "buffer 7 dx bf16 64 448 144\n"
  "arena acts 864 344\n"
  "input tokens i32 8\ninput targets i32 8\ninput tokidx i32 18\n"
  "op 0 fwd embed embed_k 1 1 1 32 1 1 0 4 tokens=tokens wte=param:0 wpe=param:1 >out=act:0 3 N=8 T=4 D=8 # embed\n"
  "op 1 fwd layernorm ln_k 1 1 1 32 1 1 0 6 x=act:0 w=param:2 b=param:3 >out=act:1 >mean=act:2 >rstd=act:3 3 N=8 C=8 eps=1e-5 # ln_f\n"
  "op 2 fwd matmul - 0 0 0 0 0 0 0 3 a=act:1 b=param:0 >c=act:4 7 M=8 N=16 K=8 ta=0 tb=1 beta=0 epi=0 # lm_head\n"
  "op 3 fwd xent xent_k 1 1 1 32 1 1 0 3 >logits=act:4 targets=targets >losses=act:5 5 N=8 V=10 Vp=16 scale=%.17g grad=1 # loss\n"
  "op 4 fwd loss_sum ls_k 1 1 1 32 1 1 0 2 losses=act:5 >loss=loss 2 N=8 scale=%.17g # loss.sum\n"
  "op 5 bwd matmul - 0 0 0 0 0 0 0 3 a=act:4 b=param:0 >c=act:6 7 M=8 N=8 K=16 ta=0 tb=0 beta=0 epi=0 # lm_head.dx\n"
  "op 6 bwd matmul - 0 0 0 0 0 0 0 3 a=act:4 b=act:1 >c=grad:0 7 M=16 N=8 K=8 ta=1 tb=0 beta=1 epi=0 # lm_head.dw\n"
  "op 7 bwd layernorm_bwd_params lbp_k 1 1 1 32 1 1 0 6 dout=act:6 x=act:0 mean=act:2 rstd=act:3 >dw=grad:2 >db=grad:3 2 N=8 C=8 # ln_f.dparams\n"
  "op 8 bwd layernorm_bwd lb_k 1 1 1 32 1 1 0 6 dout=act:6 x=act:0 w=param:2 mean=act:2 rstd=act:3 >dx=act:7 3 N=8 C=8 acc=0 # ln_f.dx\n"
  "op 9 bwd embed_bwd_tok ebt_k 1 1 1 32 1 1 0 4 tokens=tokens tokidx=tokidx dout=act:7 >dwte=grad:0 2 N=8 D=8 # embed.dwte\n"
  "op 10 bwd embed_bwd_pos ebp_k 1 1 1 32 1 1 0 2 dout=act:7 >dwpe=grad:1 3 N=8 T=4 D=8 # embed.dwpe\n"
  "op 11 opt sumsq ss_k 1 1 1 32 1 1 0 2 grads=grads >partials=partials 2 n=512 G=4 # grad_norm\n"
  "op 12 opt adamw aw_k 1 1 1 32 1 1 0 7 >master=master >params=params grads=grads >m=adam_m >v=adam_v scal=scal partials=partials 8 n=512 n_decay=128 G=4 wd=0.1 beta1=0.9 beta2=0.95 eps=1e-8 clip=1 # adamw\n"
  "end\n";

static char *mini_plan_text(int accum) {
  static char buf[8192];
  double scale = 1.0 / (8.0 * accum);
  snprintf(buf, sizeof buf, MINI_PLAN, accum, scale, scale);
  return buf;
}

/* Replace the first occurrence of `from` in MINI_PLAN's text by `to`; returns the plan path. */
static const char *plan_variant(const char *name, const char *from, const char *to) {
  const char *t = mini_plan_text(1);
  char out[8192];
  const char *at = strstr(t, from);
  if (!at) { fprintf(stderr, "test bug: '%s' not in the plan\n", from); exit(2); }
  snprintf(out, sizeof out, "%.*s%s%s", (int)(at - t), t, to, at + strlen(from));
  const char *p = path_of(name);
  write_text(p, out);
  return p;
}

static void expect_plan_error(const char *what, const char *path, const char *frag) {
  Plan p;
  char err[1024] = "";
  int rc = plan_load(path, &p, err, sizeof err);
  int good = rc != 0 && strstr(err, path) && strstr(err, frag);
  check(good, "plan error: %s", what);
  if (!good) printf("    rc %d, message: %s (want '%s')\n", rc, err, frag);
}

static void test_plan(void) {
  const char *pp = path_of("mini.plan");
  write_text(pp, mini_plan_text(1));
  Plan p;
  char err[1024] = "";
  int rc = plan_load(pp, &p, err, sizeof err);
  check(rc == 0, "plan: a valid plan loads%s%s", rc ? ": " : "", rc ? err : "");
  if (rc) return;
  check(!strcmp(p.name, "mini") && p.nparam == 4 && p.nbuf == 8 && p.nop == 13 && p.ninput == 3,
        "plan: counts (params, buffers, ops, inputs)");
  check(p.n_decay == 128, "plan: n_decay is the end of the decayed params (%ld)", p.n_decay);
  check(p.n_partials == 4, "plan: partials sized by the largest G (%ld)", p.n_partials);
  check(plan_dim(&p, "Vp") == 16 && plan_dim_opt(&p, "nope", 7) == 7 && plan_train(&p, "lr", 0) == 0.01,
        "plan: dim/train lookups");
  const Op *op = &p.ops[12];
  const Ref *r = op_ref(op, "master");
  check(r && r->kind == REF_MASTER && r->out && op_ref(op, "grads")->kind == REF_GRADS && !op_ref(op, "grads")->out,
        "plan: whole-arena refs and the '>' written flag");
  const Ref *t = op_ref(&p.ops[0], "tokens");
  check(t && t->kind == REF_INPUT && t->idx == plan_input(&p, "tokens") && ref_numel(&p, t) == 8,
        "plan: input refs resolve to the input index");
  check(op_ref(&p.ops[2], "b")->kind == REF_PARAM && op_ref(&p.ops[2], "b")->idx == 0 &&
        op_ref(&p.ops[6], "c")->kind == REF_GRAD && op_ref(&p.ops[1], "x")->kind == REF_ACT,
        "plan: act/param/grad refs");
  check(!strcmp(p.ops[1].comment, "ln_f") && p.ops[1].line == 37 && op_attr(&p, &p.ops[1], "eps") == 1e-5 &&
        p.ops[1].phase == PH_FWD && p.ops[11].phase == PH_OPT && !strcmp(p.ops[2].kernel, "-"),
        "plan: comment, line number, attrs, phases, kernel");
  check(p.bufs[7].cpu_off == 144 && p.bufs[1].dt == DT_BF16 && p.act_cpu_elems == 344, "plan: buffers");
  plan_free(&p);

  expect_plan_error("missing file", path_of("nope.plan"), "No such file");
  write_text(path_of("magic.plan"), "hello 1\nend\n");
  expect_plan_error("wrong magic", path_of("magic.plan"), ":1: not a moonforge plan");
  expect_plan_error("wrong version", plan_variant("v2.plan", "moonforge-plan 1", "moonforge-plan 2"),
                    ":1: unsupported plan version 2");
  write_text(path_of("empty.plan"), "");
  expect_plan_error("empty file", path_of("empty.plan"), "empty plan");
  expect_plan_error("truncated (no end)", plan_variant("trunc.plan", "end\n", ""), "missing 'end'");
  expect_plan_error("record after end", plan_variant("after.plan", "end\n", "end\ndim X 1\n"), "after 'end'");
  expect_plan_error("bad ref index", plan_variant("ref.plan", "x=act:0 w", "x=act:99 w"), ":37: bad ref act:99");
  expect_plan_error("bad ref kind", plan_variant("ref2.plan", "x=act:0 w", "x=blob:0 w"), ":37: bad ref 'blob:0'");
  expect_plan_error("undeclared input", plan_variant("in.plan", "input tokidx i32 18\n", ""), "not declared");
  expect_plan_error("unknown phase", plan_variant("ph.plan", "op 1 fwd", "op 1 sideways"), ":37: unknown phase 'sideways'");
  expect_plan_error("too many refs", plan_variant("many.plan", "0 6 x=act:0", "0 13 x=act:0"), ":37: too many refs");
  expect_plan_error("too few refs", plan_variant("few.plan", "0 6 x=act:0", "0 7 x=act:0"), ":37:");
  expect_plan_error("bad attribute", plan_variant("attr.plan", "eps=1e-5", "eps=abc"), ":37: attribute eps");
  expect_plan_error("op out of sequence", plan_variant("seq.plan", "op 1 fwd", "op 5 fwd"), ":37: op index 5");
  expect_plan_error("unknown dtype", plan_variant("dt.plan", "buffer 0 x f32", "buffer 0 x f64"), "unknown dtype 'f64'");
  expect_plan_error("param dims vs numel", plan_variant("dims.plan", "32 128 0 normal 0.5 2 4 8", "32 128 0 normal 0.5 2 4 9"),
                    "dims multiply to 36");
  expect_plan_error("param outside the arena", plan_variant("arena.plan", "arena params 512", "arena params 300"),
                    "exceeds the params arena");
  expect_plan_error("decayed params not first", plan_variant("decay.plan", "param 2 ln_f.weight 8 256 0", "param 2 ln_f.weight 8 256 1"),
                    "decayed params must come first");
  expect_plan_error("buffer outside the acts arena", plan_variant("acts.plan", "arena acts 864 344", "arena acts 864 300"),
                    "exceeds the CPU acts arena");
  expect_plan_error("unknown record", plan_variant("rec.plan", "name mini", "nom mini"), ":3: unknown record 'nom'");
  expect_plan_error("unknown init", plan_variant("init.plan", "ones 0 1 8", "twos 0 1 8"), "unknown init 'twos'");
}

/* ================= safetensors ================= */

static void test_safetensors(void) {
  float f[6] = {1.5f, -2.25f, 3e-8f, 1e30f, 0.0f, -0.0f};
  uint16_t h[4] = {f32_to_bf16(1.0f), f32_to_bf16(-3.5f), f32_to_bf16(0.15625f), f32_to_bf16(1e-3f)};
  int32_t i32[3] = {7, -8, 2147483647};
  int64_t i64[2] = {-5, 1234567890123LL};
  long sf[2] = {2, 3}, sh[1] = {4}, si[1] = {3}, sl[2] = {1, 2};
  StWriter w;
  st_writer_init(&w);
  st_add(&w, "a.f32", "F32", 2, sf, f);
  st_add(&w, "b \"quoted\"\\name", "BF16", 1, sh, h);
  st_add(&w, "c", "I32", 1, si, i32);
  st_add(&w, "d", "I64", 2, sl, i64);
  st_add_meta(&w, "format", "pt");
  st_add_meta(&w, "note", "line\nbreak \u00e9");
  char err[1024] = "";
  const char *path = path_of("t.safetensors");
  int rc = st_write(&w, path, err, sizeof err);
  st_writer_free(&w);
  check(rc == 0, "safetensors: write%s%s", rc ? ": " : "", rc ? err : "");
  char tmp[700];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  check(access(tmp, F_OK) != 0, "safetensors: no temporary file left behind");
  StFile s;
  rc = st_open(path, &s, err, sizeof err);
  check(rc == 0, "safetensors: read back%s%s", rc ? ": " : "", rc ? err : "");
  if (rc) return;
  float fo[6], ho[4], io[3], lo[2];
  int32_t ii[3];
  int good = !st_read_f32(&s, "a.f32", 2, sf, fo, err, sizeof err) && !memcmp(fo, f, sizeof f);
  check(good, "safetensors: F32 round trip is bit exact");
  good = !st_read_f32(&s, "b \"quoted\"\\name", 1, sh, ho, err, sizeof err) && ho[0] == 1.0f && ho[1] == -3.5f &&
         ho[2] == 0.15625f && fabsf(ho[3] - 1e-3f) < 1e-5f;
  check(good, "safetensors: BF16 with an escaped name");
  good = !st_read_i32(&s, "c", 1, si, ii, err, sizeof err) && !memcmp(ii, i32, sizeof i32) &&
         !st_read_f32(&s, "c", 1, si, io, err, sizeof err) && io[1] == -8.0f;
  check(good, "safetensors: I32 as int32 and as f32");
  good = !st_read_f32(&s, "d", 2, sl, lo, err, sizeof err) && lo[0] == -5.0f && fabs(lo[1] - 1234567890123.0) < 1e6;
  check(good, "safetensors: I64 to f32");
  check(st_meta(&s, "format") && !strcmp(st_meta(&s, "format"), "pt") && st_meta(&s, "note") &&
        !strcmp(st_meta(&s, "note"), "line\nbreak \u00e9") && !st_meta(&s, "x"), "safetensors: metadata round trip");
  check(s.data_off % 8 == 0, "safetensors: data section 8-byte aligned");
  long wrong[2] = {3, 2};
  rc = st_read_f32(&s, "a.f32", 2, wrong, fo, err, sizeof err);
  check(rc && strstr(err, path) && strstr(err, "a.f32") && strstr(err, "[2,3]") && strstr(err, "[3,2]"),
        "safetensors: wrong shape names file, tensor, both shapes");
  rc = st_read_f32(&s, "zzz", 1, sh, fo, err, sizeof err);
  check(rc && strstr(err, "zzz") && strstr(err, "missing"), "safetensors: missing tensor is named");
  rc = st_read_i32(&s, "a.f32", 2, sf, ii, err, sizeof err);
  check(rc && strstr(err, "dtype F32"), "safetensors: float tensor read as int is refused");
  size_t size = s.size;
  unsigned char *orig = xmalloc(size);
  memcpy(orig, s.buf, size);
  st_close(&s);

  /* corruptions, each must give a clear error naming the file */
  struct { const char *name; const char *frag; } cases[] = {
    {"truncated", "outside the data section"}, {"short", "too short"}, {"hlen", "exceeds the file size"},
    {"json", "JSON"}, {"dtype", "unknown dtype"}, {"size", "data bytes"},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    unsigned char *b = xmalloc(size);
    memcpy(b, orig, size);
    size_t n = size;
    const char *nm = cases[c].name;
    if (!strcmp(nm, "truncated")) n = size - 3;
    else if (!strcmp(nm, "short")) n = 5;
    else if (!strcmp(nm, "hlen")) b[5] = 0x7f;
    else {
      char *hd = (char *)b + 8;
      char *at = !strcmp(nm, "json") ? strstr(hd, "{") : !strcmp(nm, "dtype") ? strstr(hd, "\"I32\"") : strstr(hd, "[1,2]");
      if (!strcmp(nm, "json")) at[0] = '[';
      else if (!strcmp(nm, "dtype")) memcpy(at, "\"Q32\"", 5);
      else memcpy(at, "[2,2]", 5);
    }
    const char *cp = path_of("corrupt.safetensors");
    FILE *fp = fopen(cp, "wb");
    fwrite(b, 1, n, fp);
    fclose(fp);
    err[0] = 0;
    rc = st_open(cp, &s, err, sizeof err);
    int ok = rc != 0 && strstr(err, cp) && strstr(err, cases[c].frag);
    check(ok, "safetensors: corrupt (%s) is reported", nm);
    if (!ok) printf("    message: %s\n", err);
    if (!rc) st_close(&s);
    free(b);
  }
  free(orig);
  rc = st_open(path_of("nothing.safetensors"), &s, err, sizeof err);
  check(rc && strstr(err, "nothing.safetensors") && strstr(err, "No such file"), "safetensors: missing file");
}

/* ================= small helpers: bf16, tokidx, init, schedule ================= */

static void test_bf16(void) {
  /* 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties go to even (1); 1 + 3·2^-8 goes up */
  check(bf16_to_f32(f32_to_bf16(1.0f + 0x1p-8f)) == 1.0f && bf16_to_f32(f32_to_bf16(1.0f + 3 * 0x1p-8f)) == 1.0f + 0x1p-6f &&
        bf16_to_f32(f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f)) == 1.0f + 0x1p-7f,
        "bf16: round to nearest, ties to even");
  check(isinf(bf16_to_f32(f32_to_bf16(INFINITY))) && isnan(bf16_to_f32(f32_to_bf16(NAN))) &&
        bf16_to_f32(f32_to_bf16(-2.0f)) == -2.0f, "bf16: inf, nan, exact values");
  check(isinf(bf16_to_f32(f32_to_bf16(3.4e38f))), "bf16: overflow rounds to inf");
}

static void test_tokidx(void) {
  int32_t tok[7] = {5, 3, 5, 9, 3, 5, 0}, out[16];
  tokidx_build(tok, 7, out);
  /* tokens sorted: 0:{6} 3:{1,4} 5:{0,2,5} 9:{3} */
  int32_t want[] = {4, 0, 1, 3, 6, 7, 6, 1, 4, 0, 2, 5, 3, 0, 0, 0};
  check(!memcmp(out, want, sizeof want), "tokidx: groups sorted by token, positions stable");
}

static void test_init(void) {
  Plan p;
  char err[1024];
  write_text(path_of("init.plan"), mini_plan_text(1));
  if (plan_load(path_of("init.plan"), &p, err, sizeof err)) { check(0, "init: plan %s", err); return; }
  float *a = falloc(p.param_elems), *b = falloc(p.param_elems), *c = falloc(p.param_elems);
  fill(a, p.param_elems, 9); /* garbage that init must overwrite (gaps included) */
  init_params(&p, 42, a);
  init_params(&p, 42, b);
  init_params(&p, 43, c);
  check(!memcmp(a, b, (size_t)p.param_elems * 4), "init: same seed, same weights");
  check(memcmp(a, c, (size_t)p.param_elems * 4) != 0, "init: another seed, other weights");
  int zr = 1, ones = 1, gaps = 1, nz = 1;
  for (long i = 10 * 8; i < 16 * 8; i++) zr &= a[i] == 0.0f;       /* wte rows >= V = 10 */
  for (long i = 0; i < 10 * 8; i++) nz &= a[i] != 0.0f;
  for (long i = 256; i < 264; i++) ones &= a[i] == 1.0f;
  for (long i = 384; i < 392; i++) ones &= a[i] == 0.0f;
  for (long i = 160; i < 256; i++) gaps &= a[i] == 0.0f;            /* after wpe */
  check(zr && nz, "init: wte rows >= V are zero, the others drawn");
  check(ones && gaps, "init: ones / zeros / gaps");
  /* distribution: a large normal parameter */
  long n = 1 << 18;
  double s = 0, ss = 0;
  for (long i = 0; i < n; i++) { double z = rng_normal(99, (uint64_t)i); s += z; ss += z * z; }
  double mean = s / n, var = ss / n - mean * mean;
  check(fabs(mean) < 0.01 && fabs(var - 1) < 0.01, "init: the generator is standard normal (mean %.4f var %.4f)", mean, var);
  free(a); free(b); free(c);
  plan_free(&p);
}

static void test_schedule(void) {
  Plan p;
  char err[1024];
  if (plan_load(path_of("init.plan"), &p, err, sizeof err)) { check(0, "schedule: plan %s", err); return; }
  /* lr 0.01, min 0.001, warmup 2, steps 10 */
  int good = fabs(lr_at(&p, 0, 10) - 0.005) < 1e-12 && fabs(lr_at(&p, 1, 10) - 0.01) < 1e-12 &&
             fabs(lr_at(&p, 2, 10) - 0.01) < 1e-12 && fabs(lr_at(&p, 6, 10) - 0.0055) < 1e-12 &&
             fabs(lr_at(&p, 10, 10) - 0.001) < 1e-12;
  check(good, "schedule: warmup then cosine to min_lr");
  float sc[8];
  step_scalars(&p, 0, 10, sc);
  check(fabsf(sc[0] - 0.005f) < 1e-9f && fabsf(sc[1] - 0.1f) < 1e-7f && fabsf(sc[2] - 0.05f) < 1e-7f && sc[3] == 0,
        "schedule: scal = lr, 1-beta1^t, 1-beta2^t (t = 1)");
  step_scalars(&p, 2, 10, sc);
  check(fabsf(sc[1] - (float)(1 - pow(0.9, 3))) < 1e-7f, "schedule: bias correction at t = 3");
  DataGen g1, g2;
  int32_t t1[64], y1[64], t2[64], y2[64];
  data_init(&g1, 5, 500);
  data_init(&g2, 5, 500);
  data_next(&g1, 2, 32, t1, y1);
  data_next(&g2, 2, 32, t2, y2);
  int inr = 1;
  for (int i = 0; i < 64; i++) inr &= t1[i] >= 0 && t1[i] < 500 && y1[i] >= 0 && y1[i] < 500;
  for (int i = 0; i < 31; i++) inr &= y1[i] == t1[i + 1];
  check(!memcmp(t1, t2, sizeof t1) && !memcmp(y1, y2, sizeof y1) && inr, "data: deterministic, in range, targets = next token");
  data_free(&g1);
  data_free(&g2);
  plan_free(&p);
}

/* ================= ops ================= */

/* f(x) scalar function of a float vector, for finite differences */
typedef double (*Fn)(void *ctx, const float *x);

/* Central differences of f at x, in double; returns rel L2 error against g. */
static double fd_check(Fn f, void *ctx, float *x, long n, const float *g, double h) {
  double dd = 0, gg = 0;
  for (long i = 0; i < n; i++) {
    float x0 = x[i];
    x[i] = x0 + (float)h;
    double fp = f(ctx, x);
    x[i] = x0 - (float)h;
    double fm = f(ctx, x);
    x[i] = x0;
    double num = (fp - fm) / (2 * h), e = num - g[i];
    dd += e * e;
    gg += num * num;
  }
  return sqrt(dd / fmax(gg, 1e-300));
}

static void naive_matmul(int M, int N, int K, int ta, int tb, const float *A, const float *B, double *C) {
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double s = 0;
      for (int k = 0; k < K; k++) s += (double)(ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
      C[i * N + j] = s;
    }
}

static void test_matmul(void) {
  int M = 5, N = 7, K = 3;
  float *A = falloc(M * K), *B = falloc(K * N), *C = falloc(M * N), *C0 = falloc(M * N), *bias = falloc(N), *aux = falloc(M * N);
  double *R = xcalloc((size_t)(M * N), sizeof *R);
  fill(A, M * K, 1); fill(B, K * N, 1); fill(C0, M * N, 1); fill(bias, N, 1);
  int good = 1;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (int bi = 0; bi < 2; bi++) {
        float beta = bi ? 0.5f : 0.0f;
        memcpy(C, C0, (size_t)(M * N) * 4);
        cpu_matmul(M, N, K, ta, tb, beta, 0, A, B, C, NULL, NULL);
        naive_matmul(M, N, K, ta, tb, A, B, R);
        for (int i = 0; i < M * N; i++) good &= fabs(C[i] - (R[i] + beta * C0[i])) < 1e-5;
      }
  check(good, "matmul: ta/tb/beta against a naive product");
  naive_matmul(M, N, K, 0, 1, A, B, R);
  memcpy(C, C0, (size_t)(M * N) * 4);
  cpu_matmul(M, N, K, 0, 1, 0, 1, A, B, C, bias, NULL);
  good = 1;
  for (int i = 0; i < M * N; i++) good &= fabs(C[i] - (R[i] + bias[i % N])) < 1e-5;
  check(good, "matmul: epilogue 1 (bias)");
  cpu_matmul(M, N, K, 0, 1, 0, 2, A, B, C, bias, aux);
  good = 1;
  for (int i = 0; i < M * N; i++) good &= fabs(aux[i] - (R[i] + bias[i % N])) < 1e-5 && fabs(C[i] - gelu_f(aux[i])) < 1e-6;
  check(good, "matmul: epilogue 2 (gelu_bias writes aux and gelu(aux))");
  cpu_matmul(M, N, K, 0, 1, 0, 3, A, B, C, NULL, aux);
  good = 1;
  for (int i = 0; i < M * N; i++) good &= fabs(C[i] - R[i] * gelu_grad_f(aux[i])) < 1e-5;
  check(good, "matmul: epilogue 3 (dgelu)");
  free(A); free(B); free(C); free(C0); free(bias); free(aux); free(R);
}

static double gelu_ref(double x) { return 0.5 * x * (1 + tanh(sqrt(2 / 3.141592653589793) * (x + 0.044715 * x * x * x))); }

static void test_gelu(void) {
  int good = 1;
  for (double x = -6; x <= 6; x += 0.37) {
    good &= fabs(gelu_f((float)x) - gelu_ref(x)) < 1e-6;
    double num = (gelu_ref(x + 1e-5) - gelu_ref(x - 1e-5)) / 2e-5;
    good &= fabs(gelu_grad_f((float)x) - num) < 1e-5;
  }
  check(good, "gelu / gelu': tanh approximation and its derivative");
  float x[5] = {-1, 0.5f, 2, -3, 0}, d[5] = {1, 2, 3, 4, 5}, dx[5] = {1, 1, 1, 1, 1}, y[5];
  cpu_gelu(x, y, 5);
  cpu_gelu_bwd(x, d, dx, 5, 1);
  good = 1;
  for (int i = 0; i < 5; i++) good &= y[i] == gelu_f(x[i]) && fabs(dx[i] - (1 + d[i] * gelu_grad_f(x[i]))) < 1e-6;
  cpu_gelu_bwd(x, d, dx, 5, 0);
  for (int i = 0; i < 5; i++) good &= fabs(dx[i] - d[i] * gelu_grad_f(x[i])) < 1e-6;
  check(good, "gelu_bwd: acc=1 accumulates, acc=0 writes");
}

/* layernorm: f(x) = Σ r ⊙ layernorm(x; w, b) */
typedef struct { long N, C; const float *w, *b, *r; float *out, *mean, *rstd; int wrt; float *x; } LnCtx;
static double ln_f(void *vc, const float *v) {
  LnCtx *c = vc;
  const float *x = c->wrt == 0 ? v : c->x, *w = c->wrt == 1 ? v : c->w, *b = c->wrt == 2 ? v : c->b;
  cpu_layernorm(x, w, b, c->out, c->mean, c->rstd, c->N, c->C, 1e-5f);
  double s = 0;
  for (long i = 0; i < c->N * c->C; i++) s += (double)c->r[i] * c->out[i];
  return s;
}

static void test_layernorm(void) {
  long N = 3, C = 16;
  float *x = falloc(N * C), *w = falloc(C), *b = falloc(C), *r = falloc(N * C), *out = falloc(N * C);
  float *mean = falloc(N), *rstd = falloc(N), *dx = falloc(N * C), *dw = falloc(C), *db = falloc(C);
  fill(x, N * C, 2); fill(w, C, 1); fill(b, C, 1); fill(r, N * C, 1);
  for (long i = 0; i < C; i++) x[i] += 3; /* a row with a large mean */
  cpu_layernorm(x, w, b, out, mean, rstd, N, C, 1e-5f);
  int good = 1;
  for (long n = 0; n < N; n++) {
    double mu = 0, var = 0;
    for (long c = 0; c < C; c++) mu += x[n * C + c];
    mu /= C;
    for (long c = 0; c < C; c++) var += (x[n * C + c] - mu) * (x[n * C + c] - mu);
    var /= C;
    good &= fabs(mean[n] - mu) < 1e-6 && fabs(rstd[n] - 1 / sqrt(var + 1e-5)) < 1e-5;
    for (long c = 0; c < C; c++) good &= fabs(out[n * C + c] - ((x[n * C + c] - mu) / sqrt(var + 1e-5) * w[c] + b[c])) < 1e-5;
  }
  check(good, "layernorm: mean, rstd, output");
  LnCtx ctx = {N, C, w, b, r, out, mean, rstd, 0, x};
  cpu_layernorm(x, w, b, out, mean, rstd, N, C, 1e-5f);
  for (long i = 0; i < N * C; i++) dx[i] = 0.25f;
  cpu_layernorm_bwd(r, x, w, mean, rstd, dx, N, C, 1);
  for (long i = 0; i < N * C; i++) dx[i] -= 0.25f;
  double e = fd_check(ln_f, &ctx, x, N * C, dx, 1e-2);
  check(e < 1e-3, "layernorm_bwd (acc=1) matches finite differences (rel %.1e)", e);
  cpu_layernorm(x, w, b, out, mean, rstd, N, C, 1e-5f); /* fd_check left other statistics behind */
  cpu_layernorm_bwd(r, x, w, mean, rstd, dx, N, C, 0);
  e = fd_check(ln_f, &ctx, x, N * C, dx, 1e-2);
  check(e < 1e-3, "layernorm_bwd (acc=0) matches finite differences (rel %.1e)", e);
  for (long i = 0; i < C; i++) { dw[i] = 1; db[i] = 2; }
  cpu_layernorm(x, w, b, out, mean, rstd, N, C, 1e-5f);
  cpu_layernorm_bwd_params(r, x, mean, rstd, dw, db, N, C);
  for (long i = 0; i < C; i++) { dw[i] -= 1; db[i] -= 2; }
  ctx.wrt = 1;
  double ew = fd_check(ln_f, &ctx, w, C, dw, 1e-2);
  ctx.wrt = 2;
  double eb = fd_check(ln_f, &ctx, b, C, db, 1e-2);
  check(ew < 1e-3 && eb < 1e-3, "layernorm_bwd_params accumulates dw, db (rel %.1e, %.1e)", ew, eb);
  /* add_layernorm = add then layernorm */
  float *a2 = falloc(N * C), *sum = falloc(N * C), *out2 = falloc(N * C), *m2 = falloc(N), *r2 = falloc(N);
  fill(a2, N * C, 1);
  cpu_add_layernorm(a2, x, w, b, sum, out2, m2, r2, N, C, 1e-5f);
  float *s_ref = falloc(N * C);
  cpu_add(a2, x, s_ref, N * C);
  cpu_layernorm(s_ref, w, b, out, mean, rstd, N, C, 1e-5f);
  check(!memcmp(sum, s_ref, (size_t)(N * C) * 4) && !memcmp(out, out2, (size_t)(N * C) * 4) && !memcmp(m2, mean, (size_t)N * 4),
        "add_layernorm: sum = a + b, then layernorm of the sum");
  /* bias_grad */
  float dbb[16];
  for (int i = 0; i < 16; i++) dbb[i] = 1;
  cpu_bias_grad(r, dbb, N, C);
  good = 1;
  for (long c = 0; c < C; c++) good &= fabs(dbb[c] - (1 + r[c] + r[C + c] + r[2 * C + c])) < 1e-6;
  check(good, "bias_grad: db += column sums");
  free(x); free(w); free(b); free(r); free(out); free(mean); free(rstd); free(dx); free(dw); free(db);
  free(a2); free(sum); free(out2); free(m2); free(r2); free(s_ref);
}

/* attention: f(qkv) = Σ r ⊙ attention(qkv) */
typedef struct { long B, T, H, d; const float *r; float *out, *lse; } AtCtx;
static double at_f(void *vc, const float *qkv) {
  AtCtx *c = vc;
  cpu_attention(qkv, c->out, c->lse, c->B, c->T, c->H, c->d);
  double s = 0;
  for (long i = 0; i < c->B * c->T * c->H * c->d; i++) s += (double)c->r[i] * c->out[i];
  return s;
}

static void test_attention(void) {
  long B = 2, T = 5, H = 2, d = 3, D = H * d, N = B * T;
  float *qkv = falloc(N * 3 * D), *out = falloc(N * D), *lse = falloc(B * H * T), *r = falloc(N * D);
  float *delta = falloc(B * H * T), *dqkv = falloc(N * 3 * D);
  fill(qkv, N * 3 * D, 1.5f); fill(r, N * D, 1);
  cpu_attention(qkv, out, lse, B, T, H, d);
  /* naive reference */
  int good = 1;
  for (long b = 0; b < B; b++)
    for (long h = 0; h < H; h++)
      for (long i = 0; i < T; i++) {
        double s[8], z = 0;
        for (long j = 0; j <= i; j++) {
          double dot = 0;
          for (long e = 0; e < d; e++) dot += qkv[(b * T + i) * 3 * D + h * d + e] * qkv[(b * T + j) * 3 * D + D + h * d + e];
          s[j] = dot / sqrt((double)d);
          z += exp(s[j]);
        }
        good &= fabs(lse[(b * H + h) * T + i] - log(z)) < 1e-5;
        for (long e = 0; e < d; e++) {
          double o = 0;
          for (long j = 0; j <= i; j++) o += exp(s[j]) / z * qkv[(b * T + j) * 3 * D + 2 * D + h * d + e];
          good &= fabs(out[(b * T + i) * D + h * d + e] - o) < 1e-5;
        }
      }
  check(good, "attention: causal softmax(q·k/√d)·v and lse against a naive loop");
  cpu_attention_bwd_pre(out, r, delta, B, T, H, d);
  good = 1;
  for (long b = 0; b < B; b++)
    for (long h = 0; h < H; h++)
      for (long t = 0; t < T; t++) {
        double s = 0;
        for (long e = 0; e < d; e++) s += out[(b * T + t) * D + h * d + e] * r[(b * T + t) * D + h * d + e];
        good &= fabs(delta[(b * H + h) * T + t] - s) < 1e-6;
      }
  check(good, "attention_bwd_pre: delta = rowwise out·dout per head");
  for (long i = 0; i < N * 3 * D; i++) dqkv[i] = 99; /* every column must be written */
  cpu_attention_bwd_dkdv(qkv, r, lse, delta, dqkv, B, T, H, d);
  cpu_attention_bwd_dq(qkv, r, lse, delta, dqkv, B, T, H, d);
  AtCtx ctx = {B, T, H, d, r, out, lse};
  double e = fd_check(at_f, &ctx, qkv, N * 3 * D, dqkv, 1e-2);
  check(e < 1e-3, "attention_bwd_dkdv + attention_bwd_dq match finite differences (rel %.1e)", e);
  /* each writes only its own columns */
  float *only = falloc(N * 3 * D);
  for (long i = 0; i < N * 3 * D; i++) only[i] = 7;
  cpu_attention(qkv, out, lse, B, T, H, d);
  cpu_attention_bwd_dq(qkv, r, lse, delta, only, B, T, H, d);
  good = 1;
  for (long n = 0; n < N; n++)
    for (long c = D; c < 3 * D; c++) good &= only[n * 3 * D + c] == 7;
  check(good, "attention_bwd_dq leaves the k and v columns alone");
  free(qkv); free(out); free(lse); free(r); free(delta); free(dqkv); free(only);
}

/* xent: f(logits) = scale · Σ losses */
typedef struct { long N, V, Vp; const int32_t *t; float *losses; float scale; } XeCtx;
static double xe_f(void *vc, const float *lg) {
  XeCtx *c = vc;
  float *tmp = falloc(c->N * c->Vp);
  memcpy(tmp, lg, (size_t)(c->N * c->Vp) * 4);
  cpu_xent(tmp, c->t, c->losses, c->N, c->V, c->Vp, c->scale, 0);
  double s = 0;
  for (long i = 0; i < c->N; i++) s += c->losses[i];
  free(tmp);
  return c->scale * s;
}

static void test_xent(void) {
  long N = 4, V = 6, Vp = 8;
  int32_t t[4] = {2, 5, -1, 0};
  float *lg = falloc(N * Vp), *g = falloc(N * Vp), *dl = falloc(N * Vp), *losses = falloc(N), *l2 = falloc(N);
  fill(lg, N * Vp, 3);
  for (long i = 0; i < N; i++) lg[i * Vp + 6] = lg[i * Vp + 7] = 1000; /* padding must never count */
  float scale = 0.25f;
  memcpy(g, lg, (size_t)(N * Vp) * 4);
  cpu_xent(g, t, losses, N, V, Vp, scale, 1);
  int good = 1;
  for (long i = 0; i < N; i++) {
    if (t[i] < 0) { good &= losses[i] == 0; continue; }
    double z = 0;
    for (long j = 0; j < V; j++) z += exp(lg[i * Vp + j]);
    good &= fabs(losses[i] - (log(z) - lg[i * Vp + t[i]])) < 1e-5;
  }
  check(good, "xent: loss = logsumexp(logits[0:V]) - logits[t]; t < 0 gives 0");
  good = 1;
  for (long i = 0; i < N; i++)
    for (long j = V; j < Vp; j++) good &= g[i * Vp + j] == 0;
  for (long j = 0; j < Vp; j++) good &= g[2 * Vp + j] == 0;
  check(good, "xent: gradient 0 in the padding and for ignored rows");
  XeCtx ctx = {N, V, Vp, t, l2, scale};
  for (long i = 0; i < N; i++) lg[i * Vp + 6] = lg[i * Vp + 7] = 0;
  memcpy(g, lg, (size_t)(N * Vp) * 4);
  cpu_xent(g, t, losses, N, V, Vp, scale, 1);
  double e = fd_check(xe_f, &ctx, lg, N * Vp, g, 1e-2);
  check(e < 1e-3, "xent (grad=1, in place) matches finite differences (rel %.1e)", e);
  cpu_xent_bwd(lg, t, dl, N, V, Vp, scale);
  check(!memcmp(dl, g, (size_t)(N * Vp) * 4), "xent_bwd writes the same gradient to a separate buffer");
  float loss = 1.0f;
  cpu_loss_sum(losses, &loss, N, 0.5f);
  check(fabs(loss - (1 + 0.5 * (losses[0] + losses[1] + losses[2] + losses[3]))) < 1e-6, "loss_sum: loss += scale·Σ losses");
  free(lg); free(g); free(dl); free(losses); free(l2);
}

static void test_embed(void) {
  long N = 6, T = 3, D = 4, Vp = 5;
  int32_t tok[6] = {1, 4, 1, 0, 2, 1};
  float *wte = falloc(Vp * D), *wpe = falloc(T * D), *out = falloc(N * D), *r = falloc(N * D);
  float *dwte = falloc(Vp * D), *dwpe = falloc(T * D);
  fill(wte, Vp * D, 1); fill(wpe, T * D, 1); fill(r, N * D, 1);
  cpu_embed(tok, wte, wpe, out, N, T, D);
  int good = 1;
  for (long i = 0; i < N; i++)
    for (long c = 0; c < D; c++) good &= out[i * D + c] == wte[tok[i] * D + c] + wpe[(i % T) * D + c];
  check(good, "embed: wte[token] + wpe[position mod T]");
  /* the backward ops are the adjoints of the (linear) forward: <r, E(wte)> = <E*(r), wte> */
  for (long i = 0; i < Vp * D; i++) dwte[i] = 0.5f;
  for (long i = 0; i < T * D; i++) dwpe[i] = 0.5f;
  cpu_embed_bwd_tok(tok, r, dwte, N, D);
  cpu_embed_bwd_pos(r, dwpe, N, T, D);
  double lhs = 0, rhs = 0;
  for (long i = 0; i < N * D; i++) lhs += (double)r[i] * out[i];
  for (long i = 0; i < Vp * D; i++) rhs += (double)(dwte[i] - 0.5f) * wte[i];
  for (long i = 0; i < T * D; i++) rhs += (double)(dwpe[i] - 0.5f) * wpe[i];
  check(fabs(lhs - rhs) < 1e-5, "embed_bwd_tok + embed_bwd_pos are the adjoint of embed (and accumulate)");
  check(dwte[3 * D] == 0.5f, "embed_bwd_tok leaves rows of absent tokens alone");
  free(wte); free(wpe); free(out); free(r); free(dwte); free(dwpe);
}

static void test_optimizer(void) {
  long n = 10, G = 3;
  float g[10], part[3];
  for (int i = 0; i < 10; i++) g[i] = (float)(i - 4);
  cpu_sumsq(g, part, n, G);
  check(part[0] + part[1] + part[2] == 16 + 9 + 4 + 1 + 0 + 1 + 4 + 9 + 16 + 25 && part[0] == 16 + 9 + 4 + 1,
        "sumsq: partials over chunks of ceil(n/G)");
  float w[10], m[10], v[10], scal[8] = {0.1f, 0.1f, 0.05f};
  for (int i = 0; i < 10; i++) { w[i] = 1; m[i] = 0.5f; v[i] = 0.25f; }
  float w0 = w[7], m0 = m[7], v0 = v[7], w2 = w[2];
  cpu_adamw(w, g, m, v, scal, part, n, 5, G, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f);
  double norm = sqrt(85.0), c = 1.0 / (norm + 1e-6), gi = c * g[7];
  double mi = 0.9 * m0 + 0.1 * gi, vi = 0.95 * v0 + 0.05 * gi * gi;
  double wi = w0 - 0.1 * ((mi / 0.1) / (sqrt(vi / 0.05) + 1e-8)); /* index 7 >= n_decay: no decay */
  double g2 = c * g[2], m2 = 0.9 * 0.5 + 0.1 * g2, v2 = 0.95 * 0.25 + 0.05 * g2 * g2;
  double w2n = w2 - 0.1 * (0.1 * w2 + (m2 / 0.1) / (sqrt(v2 / 0.05) + 1e-8));
  check(fabs(m[7] - mi) < 1e-7 && fabs(v[7] - vi) < 1e-7 && fabs(w[7] - wi) < 1e-6 && fabs(w[2] - w2n) < 1e-6,
        "adamw: clipped gradient, moments, bias correction, decay only below n_decay");
  for (int i = 0; i < 10; i++) { w[i] = 1; m[i] = v[i] = 0; }
  cpu_adamw(w, g, m, v, scal, part, n, 0, G, 0, 0.9f, 0.95f, 1e-8f, 0);
  check(fabs(m[9] - 0.1 * 5) < 1e-6, "adamw: clip = 0 disables clipping");
}

/* ================= the CPU backend on the mini plan ================= */

static double be_loss(Backend *b) {
  const Plan *p = b->plan;
  b->zero_grads(b);
  for (int i = 0; i < p->nop; i++) if (p->ops[i].phase == PH_FWD) b->run_op(b, &p->ops[i], 0);
  return b->read_loss(b);
}

static void test_backend(void) {
  Plan p, p2;
  char err[1024];
  write_text(path_of("be.plan"), mini_plan_text(1));
  write_text(path_of("be2.plan"), mini_plan_text(2));
  if (plan_load(path_of("be.plan"), &p, err, sizeof err) || plan_load(path_of("be2.plan"), &p2, err, sizeof err)) {
    check(0, "backend: plan %s", err);
    return;
  }
  Backend *b = cpu_backend_new(&p);
  long pe = p.param_elems;
  float *w = falloc(pe), *g = falloc(pe), *z = falloc(pe), *m = falloc(pe), *v = falloc(pe);
  init_params(&p, 3, w);
  int32_t tok[16] = {1, 2, 3, 4, 9, 8, 7, 0, 5, 5, 1, 2, 3, 3, 6, 0}, tgt[16] = {2, 3, 4, 5, 8, 7, -1, 1, 5, 1, 2, 3, 3, 6, 0, 9};
  b->set_master(b, w);
  b->set_opt_state(b, z, z);
  b->set_batch(b, 0, tok, tgt);
  float scal[8];
  step_scalars(&p, 0, 10, scal);
  b->set_scalars(b, scal);

  /* refs: sharing memory per the plan, inputs as floats */
  float in4[4] = {1, 2, 3, 4}, out4[4];
  b->write_ref(b, op_ref(&p.ops[8], "dx"), 0, in4, 4);           /* act:7 shares memory with act:4 */
  b->read_ref(b, op_ref(&p.ops[2], "c"), 0, out4, 4);
  check(!memcmp(in4, out4, sizeof in4), "backend: buffers share memory as the plan's cpu offsets say");
  b->read_ref(b, op_ref(&p.ops[0], "tokens"), 0, out4, 4);
  check(out4[0] == 1 && out4[3] == 4, "backend: input refs read as floats");
  Ref tix = {.kind = REF_INPUT, .idx = plan_input(&p, "tokidx")};
  float tx[18];
  b->read_ref(b, &tix, 0, tx, 18);
  check(tx[0] == 8 && tx[1] == 0, "backend: tokidx built from the tokens (%g groups)", (double)tx[0]);

  /* finite differences of the whole mini model through run_op */
  double L = be_loss(b);
  b->zero_grads(b);
  for (int i = 0; i < p.nop; i++) if (p.ops[i].phase != PH_OPT) b->run_op(b, &p.ops[i], 0);
  b->get_grads(b, g);
  check(fabs(b->read_loss(b) - L) < 1e-7, "backend: loss is the same with and without the backward ops");
  double dd = 0, gg = 0;
  float *wk = falloc(pe);
  for (long i = 0; i < pe; i++) {
    if (i >= 10 * 8 && i < 128) continue; /* padded wte rows: no loss dependence, gradient 0 */
    if ((i >= 160 && i < 256) || (i >= 264 && i < 384) || i >= 392) continue; /* gaps */
    memcpy(wk, w, (size_t)pe * 4);
    wk[i] = w[i] + 1e-2f;
    b->set_master(b, wk);
    double lp = be_loss(b);
    wk[i] = w[i] - 1e-2f;
    b->set_master(b, wk);
    double lm = be_loss(b);
    double num = (lp - lm) / 2e-2, e = num - g[i];
    dd += e * e;
    gg += num * num;
  }
  double rel = sqrt(dd / gg);
  check(rel < 1e-2, "backend: gradients of the mini model match finite differences (rel %.1e)", rel);
  int padz = 1;
  for (long i = 10 * 8; i < 128; i++) padz &= g[i] == 0;
  check(padz, "backend: padded vocabulary rows get zero gradient");

  /* a full step: grads zeroed first, AdamW applied to master, moments stored */
  b->set_master(b, w);
  b->step(b);
  float loss1 = b->read_loss(b);
  b->get_master(b, wk);
  b->get_opt_state(b, m, v);
  float *g2 = falloc(pe);
  b->get_grads(b, g2);
  check(fabs(loss1 - L) < 1e-6 && !memcmp(g, g2, (size_t)pe * 4), "backend: step() zeroes grads, same loss and grads");
  double ss = 0;
  for (long i = 0; i < pe; i++) ss += (double)g[i] * g[i];
  check(fabs(b->read_grad_norm(b) - sqrt(ss)) < 1e-5 * sqrt(ss), "backend: grad norm = sqrt(sum of partials)");
  float *wr = falloc(pe), *mr = falloc(pe), *vr = falloc(pe), part[4];
  memcpy(wr, w, (size_t)pe * 4);
  cpu_sumsq(g, part, pe, 4);
  cpu_adamw(wr, g, mr, vr, scal, part, pe, 128, 4, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f);
  check(maxabs_diff(wr, wk, pe) == 0 && maxabs_diff(mr, m, pe) == 0 && maxabs_diff(vr, v, pe) == 0,
        "backend: the step's update is cpu_adamw's");

  /* gradient accumulation: 2 micro-steps of half the batch, scale 1/(N·accum) == one batch of both */
  Backend *b2 = cpu_backend_new(&p2);
  b2->set_master(b2, w);
  b2->set_opt_state(b2, z, z);
  b2->set_scalars(b2, scal);
  b2->set_batch(b2, 0, tok, tgt);
  b2->set_batch(b2, 1, tok + 8, tgt + 8);
  b2->step(b2);
  float la = b2->read_loss(b2);
  b->set_master(b, w);
  b->set_opt_state(b, z, z);
  b->set_batch(b, 0, tok + 8, tgt + 8);
  double L2 = be_loss(b);
  check(fabs(la - 0.5 * (L + L2)) < 1e-6, "backend: accumulated loss is the mean over micro-steps (%g vs %g)", (double)la,
        0.5 * (L + L2));
  b2->destroy(b2);
  b->destroy(b);
  free(w); free(g); free(z); free(m); free(v); free(wk); free(g2); free(wr); free(mr); free(vr);
  plan_free(&p);
  plan_free(&p2);
}

/* Exits of the child must be 1 with the message on stderr. */
static void expect_exit(const char *what, void (*fn)(void), const char *frag) {
  int pipefd[2];
  if (pipe(pipefd)) { perror("pipe"); exit(2); }
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], 2);
    close(pipefd[0]);
    fn();
    _exit(0);
  }
  close(pipefd[1]);
  char buf[2048] = "";
  size_t got = 0;
  ssize_t k;
  while (got < sizeof buf - 1 && (k = read(pipefd[0], buf + got, sizeof buf - 1 - got)) > 0) got += (size_t)k;
  buf[got] = 0;
  close(pipefd[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  int good = WIFEXITED(st) && WEXITSTATUS(st) == 1 && strstr(buf, "runtime: ") && strstr(buf, frag);
  check(good, "%s", what);
  if (!good) printf("    exit %d, stderr: %s\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1, buf);
}

static void run_unknown_kind(void) {
  Plan p;
  char err[1024];
  const char *pp = plan_variant("kind.plan", "op 1 fwd layernorm", "op 1 fwd rmsnorm");
  if (plan_load(pp, &p, err, sizeof err)) { fprintf(stderr, "%s\n", err); exit(3); }
  Backend *b = cpu_backend_new(&p);
  b->run_op(b, &p.ops[1], 0);
}

static void run_bad_token(void) {
  Plan p;
  char err[1024];
  if (plan_load(path_of("be.plan"), &p, err, sizeof err)) exit(3);
  Backend *b = cpu_backend_new(&p);
  int32_t tok[8] = {1, 2, 3, 99, 0, 0, 0, 0}, tgt[8] = {0};
  b->set_batch(b, 0, tok, tgt);
  b->run_op(b, &p.ops[0], 0);
}

static void run_small_ref(void) {
  Plan p;
  char err[1024];
  const char *pp = plan_variant("small.plan", "b=param:0 >c=act:4", "b=param:0 >c=act:5");
  if (plan_load(pp, &p, err, sizeof err)) exit(3);
  Backend *b = cpu_backend_new(&p);
  b->run_op(b, &p.ops[2], 0);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/test_runtime_cpu.%ld", (long)getpid());
  char cmd[400];
  snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
  if (system(cmd)) return 2;
  test_plan();
  test_safetensors();
  test_bf16();
  test_tokidx();
  test_init();
  test_schedule();
  test_matmul();
  test_gelu();
  test_layernorm();
  test_attention();
  test_xent();
  test_embed();
  test_optimizer();
  test_backend();
  expect_exit("backend: unknown op kind names the op and plan line", run_unknown_kind, "kind.plan:37: op 1 (rmsnorm, ln_f)");
  expect_exit("backend: out-of-range token is reported", run_bad_token, "token 99");
  expect_exit("backend: a ref smaller than the op needs is reported", run_small_ref, "ref c=act:5 has 8 elements, the op needs 128");
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
  printf("%d passed, %d failed\n", npass, nfail);
  return nfail ? 1 : 0;
}
