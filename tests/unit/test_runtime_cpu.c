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
  expect_plan_error("too many refs", plan_variant("many.plan", "0 6 x=act:0", "0 17 x=act:0"), ":37: too many refs");
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
  cpu_sumsq(g, part, 0, n, G);
  check(part[0] + part[1] + part[2] == 16 + 9 + 4 + 1 + 0 + 1 + 4 + 9 + 16 + 25 && part[0] == 16 + 9 + 4 + 1,
        "sumsq: partials over chunks of ceil(n/G)");
  float w[10], m[10], v[10], scal[8] = {0.1f, 0.1f, 0.05f};
  for (int i = 0; i < 10; i++) { w[i] = 1; m[i] = 0.5f; v[i] = 0.25f; }
  float w0 = w[7], m0 = m[7], v0 = v[7], w2 = w[2];
  cpu_adamw(w, g, m, v, scal, part, 0, n, 5, G, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f);
  double norm = sqrt(85.0), c = 1.0 / (norm + 1e-6), gi = c * g[7];
  double mi = 0.9 * m0 + 0.1 * gi, vi = 0.95 * v0 + 0.05 * gi * gi;
  double wi = w0 - 0.1 * ((mi / 0.1) / (sqrt(vi / 0.05) + 1e-8)); /* index 7 >= n_decay: no decay */
  double g2 = c * g[2], m2 = 0.9 * 0.5 + 0.1 * g2, v2 = 0.95 * 0.25 + 0.05 * g2 * g2;
  double w2n = w2 - 0.1 * (0.1 * w2 + (m2 / 0.1) / (sqrt(v2 / 0.05) + 1e-8));
  check(fabs(m[7] - mi) < 1e-7 && fabs(v[7] - vi) < 1e-7 && fabs(w[7] - wi) < 1e-6 && fabs(w[2] - w2n) < 1e-6,
        "adamw: clipped gradient, moments, bias correction, decay only below n_decay");
  for (int i = 0; i < 10; i++) { w[i] = 1; m[i] = v[i] = 0; }
  cpu_adamw(w, g, m, v, scal, part, 0, n, 0, G, 0, 0.9f, 0.95f, 1e-8f, 0);
  check(fabs(m[9] - 0.1 * 5) < 1e-6, "adamw: clip = 0 disables clipping");
  /* a sub-range (a ZeRO-1 shard, docs/ir.md "optrange"): partials over [lo, hi) only, and only those
   * elements updated — the two halves' partials sum to the whole's, and two half updates = one whole */
  float pa[3], pb[3], w1[10], m1[10], v1[10];
  cpu_sumsq(g, pa, 0, 4, G);
  cpu_sumsq(g, pb, 4, n, G);
  check(pa[0] + pa[1] + pa[2] == 16 + 9 + 4 + 1 && pb[0] + pb[1] + pb[2] == 0 + 1 + 4 + 9 + 16 + 25 && pb[0] == 0 + 1,
        "sumsq: over a sub-range, chunks of ceil((hi-lo)/G) from lo");
  for (int i = 0; i < 10; i++) { w[i] = w1[i] = 1; m[i] = v[i] = m1[i] = v1[i] = 0; }
  cpu_adamw(w, g, m, v, scal, part, 0, n, 5, G, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f);
  cpu_adamw(w1, g, m1, v1, scal, part, 4, n, 5, G, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f);
  check(w1[3] == 1 && m1[3] == 0 && v1[3] == 0 && w1[4] == w[4] && w1[9] == w[9],
        "adamw: a sub-range updates only its elements");
  cpu_adamw(w1, g, m1, v1, scal, part, 0, 4, 5, G, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f);
  check(!memcmp(w, w1, sizeof w) && !memcmp(m, m1, sizeof m) && !memcmp(v, v1, sizeof v),
        "adamw: two sub-ranges == the whole range");
}

/* ================= the model vocabulary (docs/ir_decoder.md) ================= */

/* rmsnorm: f = Σ r ⊙ rmsnorm(x; w) */
typedef struct { long N, C; const float *r; float *x, *w, *out, *rstd; } RmsCtx;
static double rms_fx(void *vc, const float *v) {
  RmsCtx *c = vc;
  cpu_rmsnorm(v, c->w, c->out, c->rstd, c->N, c->C, 1e-5f);
  double s = 0;
  for (long i = 0; i < c->N * c->C; i++) s += (double)c->r[i] * c->out[i];
  return s;
}
static double rms_fw(void *vc, const float *v) {
  RmsCtx *c = vc;
  cpu_rmsnorm(c->x, v, c->out, c->rstd, c->N, c->C, 1e-5f);
  double s = 0;
  for (long i = 0; i < c->N * c->C; i++) s += (double)c->r[i] * c->out[i];
  return s;
}

static void test_rmsnorm(void) {
  long N = 3, C = 16;
  float *x = falloc(N * C), *w = falloc(C), *r = falloc(N * C), *out = falloc(N * C), *rstd = falloc(N);
  float *dx = falloc(N * C), *dw = falloc(C);
  fill(x, N * C, 2); fill(w, C, 1); fill(r, N * C, 1);
  for (long i = 0; i < C; i++) x[i] += 3;
  cpu_rmsnorm(x, w, out, rstd, N, C, 1e-5f);
  int good = 1;
  for (long n = 0; n < N; n++) {
    double ss = 0;
    for (long c = 0; c < C; c++) ss += (double)x[n * C + c] * x[n * C + c];
    double rs = 1 / sqrt(ss / C + 1e-5);
    good &= fabs(rstd[n] - rs) < 1e-6 * rs;
    for (long c = 0; c < C; c++) good &= fabs(out[n * C + c] - x[n * C + c] * rs * w[c]) < 1e-5;
  }
  check(good, "rmsnorm: rstd = 1/sqrt(mean x^2 + eps), out = x*rstd*w");
  RmsCtx ctx = {N, C, r, x, w, out, rstd};
  cpu_rmsnorm(x, w, out, rstd, N, C, 1e-5f);
  for (long i = 0; i < N * C; i++) dx[i] = 0.25f;
  cpu_rmsnorm_bwd(r, x, w, rstd, dx, N, C, 1);
  for (long i = 0; i < N * C; i++) dx[i] -= 0.25f;
  double e1 = fd_check(rms_fx, &ctx, x, N * C, dx, 1e-2);
  cpu_rmsnorm(x, w, out, rstd, N, C, 1e-5f);
  cpu_rmsnorm_bwd(r, x, w, rstd, dx, N, C, 0);
  double e0 = fd_check(rms_fx, &ctx, x, N * C, dx, 1e-2);
  check(e1 < 1e-3 && e0 < 1e-3, "rmsnorm_bwd (acc=1, acc=0) matches finite differences (rel %.1e, %.1e)", e1, e0);
  for (long i = 0; i < C; i++) dw[i] = 1;
  cpu_rmsnorm(x, w, out, rstd, N, C, 1e-5f);
  cpu_rmsnorm_bwd_params(r, x, rstd, dw, N, C);
  for (long i = 0; i < C; i++) dw[i] -= 1;
  double ew = fd_check(rms_fw, &ctx, w, C, dw, 1e-2);
  check(ew < 1e-3, "rmsnorm_bwd_params accumulates dw (rel %.1e)", ew);
  float *a = falloc(N * C), *sum = falloc(N * C), *out2 = falloc(N * C), *rs2 = falloc(N), *sref = falloc(N * C);
  fill(a, N * C, 1);
  cpu_add_rmsnorm(a, x, w, sum, out2, rs2, N, C, 1e-5f);
  cpu_add(a, x, sref, N * C);
  cpu_rmsnorm(sref, w, out, rstd, N, C, 1e-5f);
  check(!memcmp(sum, sref, (size_t)(N * C) * 4) && !memcmp(out, out2, (size_t)(N * C) * 4) && !memcmp(rs2, rstd, (size_t)N * 4),
        "add_rmsnorm: sum = a + b, then rmsnorm of the sum");
  free(x); free(w); free(r); free(out); free(rstd); free(dx); free(dw); free(a); free(sum); free(out2); free(rs2); free(sref);
}

/* dyt: f = Σ r ⊙ (w·tanh(α·x) + b), differentiated w.r.t. one of x, alpha, w, b */
typedef struct { long N, C; const float *r; float *x, *al, *w, *b, *out; int wrt; } DytCtx;
static double dyt_f(void *vc, const float *v) {
  DytCtx *c = vc;
  cpu_dyt(c->wrt == 0 ? v : c->x, c->wrt == 1 ? v : c->al, c->wrt == 2 ? v : c->w, c->wrt == 3 ? v : c->b, c->out, c->N, c->C);
  double s = 0;
  for (long i = 0; i < c->N * c->C; i++) s += (double)c->r[i] * c->out[i];
  return s;
}

static void test_dyt(void) {
  long N = 3, C = 8;
  float *x = falloc(N * C), *w = falloc(C), *b = falloc(C), *r = falloc(N * C), *out = falloc(N * C), al[1] = {0.7f};
  float *dx = falloc(N * C), *dw = falloc(C), *db = falloc(C), dal[1] = {0.5f};
  fill(x, N * C, 2); fill(w, C, 1); fill(b, C, 1); fill(r, N * C, 1);
  cpu_dyt(x, al, w, b, out, N, C);
  int good = 1;
  for (long i = 0; i < N * C; i++) good &= fabs(out[i] - (w[i % C] * tanh(0.7 * x[i]) + b[i % C])) < 1e-6;
  check(good, "dyt: out = w*tanh(alpha*x) + b");
  DytCtx ctx = {N, C, r, x, al, w, b, out, 0};
  for (long i = 0; i < N * C; i++) dx[i] = 0.25f;
  cpu_dyt_bwd(r, x, al, w, dx, N, C, 1);
  for (long i = 0; i < N * C; i++) dx[i] -= 0.25f;
  double ex = fd_check(dyt_f, &ctx, x, N * C, dx, 1e-2);
  cpu_dyt_bwd(r, x, al, w, dx, N, C, 0);
  double ex0 = fd_check(dyt_f, &ctx, x, N * C, dx, 1e-2);
  check(ex < 1e-3 && ex0 < 1e-3, "dyt_bwd (acc=1, acc=0) matches finite differences (rel %.1e, %.1e)", ex, ex0);
  for (long i = 0; i < C; i++) { dw[i] = 1; db[i] = 2; }
  cpu_dyt_bwd_params(r, x, al, dal, w, dw, db, N, C);
  for (long i = 0; i < C; i++) { dw[i] -= 1; db[i] -= 2; }
  dal[0] -= 0.5f;
  ctx.wrt = 1;
  double ea = fd_check(dyt_f, &ctx, al, 1, dal, 1e-3);
  ctx.wrt = 2;
  double ew = fd_check(dyt_f, &ctx, w, C, dw, 1e-2);
  ctx.wrt = 3;
  double eb = fd_check(dyt_f, &ctx, b, C, db, 1e-2);
  check(ea < 1e-3 && ew < 1e-3 && eb < 1e-3, "dyt_bwd_params accumulates dalpha, dw, db (rel %.1e, %.1e, %.1e)", ea, ew, eb);
  float *a = falloc(N * C), *sum = falloc(N * C), *out2 = falloc(N * C), *sref = falloc(N * C);
  fill(a, N * C, 1);
  cpu_add_dyt(a, x, al, w, b, sum, out2, N, C);
  cpu_add(a, x, sref, N * C);
  cpu_dyt(sref, al, w, b, out, N, C);
  check(!memcmp(sum, sref, (size_t)(N * C) * 4) && !memcmp(out, out2, (size_t)(N * C) * 4), "add_dyt: sum = a + b, then dyt of the sum");
  free(x); free(w); free(b); free(r); free(out); free(dx); free(dw); free(db); free(a); free(sum); free(out2); free(sref);
}

/* activations: f = Σ r ⊙ act(x) */
typedef struct { long n, N, F; int kind, act; const float *r; float *out; } ActCtx;
static double act_f(void *vc, const float *v) {
  ActCtx *c = vc;
  long m = c->kind == 2 ? c->N * c->F : c->n;
  if (c->kind == 0) cpu_relu(v, c->out, c->n);
  else if (c->kind == 1) cpu_silu(v, c->out, c->n);
  else cpu_glu(v, c->out, c->N, c->F, c->act);
  double s = 0;
  for (long i = 0; i < m; i++) s += (double)c->r[i] * c->out[i];
  return s;
}

static void test_activations(void) {
  long n = 40;
  float *x = falloc(n), *r = falloc(n), *out = falloc(n), *dx = falloc(n);
  fill(x, n, 3); fill(r, n, 1);
  for (long i = 0; i < n; i++) if (fabsf(x[i]) < 0.05f) x[i] = 0.5f; /* keep relu's kink out of the differences */
  cpu_relu(x, out, n);
  cpu_silu(x, dx, n);
  int good = 1;
  for (long i = 0; i < n; i++) good &= out[i] == (x[i] > 0 ? x[i] : 0) && fabs(dx[i] - x[i] / (1 + exp(-x[i]))) < 1e-6;
  check(good, "relu = max(x, 0), silu = x*sigmoid(x)");
  for (int kind = 0; kind < 2; kind++) {
    ActCtx c = {n, 0, 0, kind, 0, r, out};
    for (long i = 0; i < n; i++) dx[i] = 0.5f;
    if (kind == 0) cpu_relu_bwd(x, r, dx, n, 1); else cpu_silu_bwd(x, r, dx, n, 1);
    for (long i = 0; i < n; i++) dx[i] -= 0.5f;
    double e1 = fd_check(act_f, &c, x, n, dx, 1e-3);
    if (kind == 0) cpu_relu_bwd(x, r, dx, n, 0); else cpu_silu_bwd(x, r, dx, n, 0);
    double e0 = fd_check(act_f, &c, x, n, dx, 1e-3);
    check(e1 < 1e-3 && e0 < 1e-3, "%s_bwd (acc=1, acc=0) matches finite differences (rel %.1e, %.1e)", kind ? "silu" : "relu", e1, e0);
  }
  long N = 3, F = 5;
  float *gx = falloc(N * 2 * F), *gr = falloc(N * F), *go = falloc(N * F), *gdx = falloc(N * 2 * F);
  fill(gx, N * 2 * F, 2); fill(gr, N * F, 1);
  for (int act = 0; act < 2; act++) {
    cpu_glu(gx, go, N, F, act);
    good = 1;
    for (long i = 0; i < N; i++)
      for (long f = 0; f < F; f++) {
        double g = gx[i * 2 * F + f], u = gx[i * 2 * F + F + f];
        double a = act ? g / (1 + exp(-g)) : 0.5 * g * (1 + tanh(sqrt(2 / 3.141592653589793) * (g + 0.044715 * g * g * g)));
        good &= fabs(go[i * F + f] - a * u) < 1e-5;
      }
    ActCtx c = {0, N, F, 2, act, gr, go};
    for (long i = 0; i < N * 2 * F; i++) gdx[i] = 9; /* written, never accumulated */
    cpu_glu_bwd(gx, gr, gdx, N, F, act);
    double e = fd_check(act_f, &c, gx, N * 2 * F, gdx, 1e-3);
    check(good && e < 1e-3, "glu act=%d (%s): act(gate)*up, glu_bwd matches finite differences (rel %.1e)", act,
          act ? "swiglu" : "geglu", e);
  }
  free(x); free(r); free(out); free(dx); free(gx); free(gr); free(go); free(gdx);
}

/* the dropout hash written out once more from docs/ir_decoder.md, independently of cpu_ops.c */
static uint64_t hand_hash(uint64_t seed, uint64_t stream, uint64_t ctr, uint64_t i) {
  uint64_t z = seed ^ (stream * 0x9E3779B97F4A7C15ull) ^ (ctr * 0xD1B54A32D192ED03ull) ^ (i * 0x8CB92BA72F3D8DD7ull);
  z = z + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static void test_dropout(void) {
  /* splitmix64's first output for state 0 (Steele et al.) is 0xE220A8397B1DCDAF */
  check(mf_drop_hash(0, 0, 0, 0) == 0xE220A8397B1DCDAFull, "dropout: hash64(0) is splitmix64's first output");
  int good = 1;
  for (uint64_t i = 0; i < 1000; i++)
    good &= mf_drop_hash(123456, 7, 42, i) == hand_hash(123456, 7, 42, i) &&
            mf_drop_uniform(123456, 7, 42, i) == (float)((double)(hand_hash(123456, 7, 42, i) >> 40) / 16777216.0);
  check(good, "dropout: hash and uniform as documented");
  long n = 4096;
  float *x = falloc(n), *out = falloc(n), *dx = falloc(n), *g = falloc(n), p = 0.3f;
  fill(x, n, 1); fill(g, n, 1);
  for (long i = 0; i < n; i++) if (x[i] == 0) x[i] = 1;
  int32_t ctr[2] = {123456, 42};
  cpu_dropout(x, ctr, out, n, p, 7);
  long kept = 0;
  good = 1;
  for (long i = 0; i < n; i++) {
    int keep = (double)(hand_hash(123456, 7, 42, (uint64_t)i) >> 40) / 16777216.0 >= (double)p;
    kept += keep;
    good &= out[i] == (keep ? x[i] * (1.0f / (1.0f - p)) : 0.0f);
  }
  check(good, "dropout: the mask is the hand-computed hash (u >= p kept, scaled by 1/(1-p))");
  check(fabs((double)kept / n - 0.7) < 0.03, "dropout: about 1-p kept (%.3f)", (double)kept / n);
  for (long i = 0; i < n; i++) dx[i] = 2;
  cpu_dropout_bwd(g, ctr, dx, n, p, 7, 1);
  good = 1;
  for (long i = 0; i < n; i++) good &= dx[i] == 2 + (out[i] != 0 ? g[i] * (1.0f / (1.0f - p)) : 0.0f);
  cpu_dropout_bwd(g, ctr, dx, n, p, 7, 0);
  for (long i = 0; i < n; i++) good &= dx[i] == (out[i] != 0 ? g[i] * (1.0f / (1.0f - p)) : 0.0f);
  check(good, "dropout_bwd: the same mask (acc=1 accumulates, acc=0 writes)");
  int32_t ctr2[2] = {123456, 43};
  cpu_dropout(x, ctr2, dx, n, p, 7);
  cpu_dropout(x, ctr, g, n, p, 8);
  check(memcmp(dx, out, (size_t)n * 4) != 0 && memcmp(g, out, (size_t)n * 4) != 0, "dropout: another counter or stream, another mask");
  free(x); free(out); free(dx); free(g);
}

static void test_embed_mla(void) {
  long N = 4, D = 3;
  int32_t tok[4] = {2, 0, 2, 1};
  float wte[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, out[12];
  cpu_embed_tok(tok, wte, out, N, D);
  int good = 1;
  for (long i = 0; i < N; i++)
    for (long c = 0; c < D; c++) good &= out[i * D + c] == wte[tok[i] * D + c];
  check(good, "embed_tok: out = wte[token]");
  long H = 3, dn = 4, dr = 4, w = dn + dr, T = 2;
  float *kn = falloc(N * H * dn), *kr = falloc(N * dr), *k = falloc(N * H * w), *r = falloc(N * H * w);
  float *dkn = falloc(N * H * dn), *dkr = falloc(N * dr);
  fill(kn, N * H * dn, 1); fill(kr, N * dr, 1); fill(r, N * H * w, 1);
  for (int rope = 0; rope <= 2; rope++) {
    /* rope 0 copies krope; 1 (half-split), 2 (adjacent) turn it by R_t, t = n mod T, once for every head */
    cpu_mla_k(kn, kr, k, N, H, dn, dr, rope, T, 10000.0f);
    good = 1;
    for (long n = 0; n < N; n++) {
      double want[4];
      for (long j = 0; j < dr; j++) want[j] = kr[n * dr + j];
      if (rope) attn_rope(want, dr, dr, rope, 10000.0f, n % T, 0);
      for (long h = 0; h < H; h++)
        for (long j = 0; j < w; j++)
          good &= j < dn ? k[(n * H + h) * w + j] == kn[(n * H + h) * dn + j]
                         : fabs(k[(n * H + h) * w + j] - want[j - dn]) < 1e-6;
    }
    check(good, "mla_k rope %d: k[n, h] = [knope[n, h] ; R_t krope[n]] (t = n mod T)", rope);
    for (long i = 0; i < N * H * dn; i++) dkn[i] = 5;
    for (long i = 0; i < N * dr; i++) dkr[i] = 5;
    cpu_mla_k_bwd(r, dkn, dkr, N, H, dn, dr, rope, T, 10000.0f);
    double lhs = 0, rhs = 0;
    for (long i = 0; i < N * H * w; i++) lhs += (double)r[i] * k[i];
    for (long i = 0; i < N * H * dn; i++) rhs += (double)dkn[i] * kn[i];
    for (long i = 0; i < N * dr; i++) rhs += (double)dkr[i] * kr[i];
    check(fabs(lhs - rhs) < 1e-5, "mla_k_bwd rope %d is the adjoint of mla_k (dkrope = R_t^T sums of the heads; both written)",
          rope);
  }
  free(kn); free(kr); free(k); free(r); free(dkn); free(dkr);
}

/* ---- generalised attention ---- */

static void test_alibi_rope(void) {
  int good = 1;
  for (long h = 0; h < 8; h++) good &= attn_alibi_slope(h, 8) == pow(2, -(double)(h + 1));
  check(good, "alibi: H = 8 slopes 1/2, 1/4, ..., 1/256");
  /* H = 12: the 8 slopes of H = 8, then every other slope of H = 16: 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 */
  static const double want12[12] = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625,
                                    0.70710678118654752, 0.35355339059327376, 0.17677669529663688, 0.088388347648318440};
  good = 1;
  for (long h = 0; h < 12; h++) good &= fabs(attn_alibi_slope(h, 12) - want12[h]) < 1e-15;
  check(good, "alibi: H = 12 slopes interpolated as in the ALiBi reference code");
  /* RoPE against a direct rotation: slice = the last R = 8 of DQK = 12 dims, t = 5, base 10000 */
  long DQK = 12, R = 8, t = 5;
  double x[12], y[12], z[12];
  for (long e = 0; e < DQK; e++) x[e] = 0.1 * (double)(e + 1) - 0.35;
  for (int mode = 1; mode <= 2; mode++) {
    memcpy(y, x, sizeof x);
    attn_rope(y, DQK, R, mode, 10000.0f, t, 0);
    memcpy(z, x, sizeof x);
    double err = 0;
    for (long p = 0; p < R / 2; p++) {
      double th = pow(10000.0, -2.0 * (double)p / (double)R), c = cos(t * th), s = sin(t * th);
      long i1 = DQK - R + (mode == 1 ? p : 2 * p), i2 = DQK - R + (mode == 1 ? p + R / 2 : 2 * p + 1);
      z[i1] = x[i1] * c - x[i2] * s;
      z[i2] = x[i2] * c + x[i1] * s;
    }
    for (long e = 0; e < DQK; e++) err = fmax(err, fabs(y[e] - z[e]));
    double back = 0;
    attn_rope(y, DQK, R, mode, 10000.0f, t, 1);
    for (long e = 0; e < DQK; e++) back = fmax(back, fabs(y[e] - x[e]));
    check(err < 1e-6 && back < 1e-12, "rope %s: a rotation of pairs %s by t*theta_p, inverse restores (err %.1e)",
          mode == 1 ? "half-split" : "adjacent", mode == 1 ? "(p, p+R/2)" : "(2p, 2p+1)", err);
  }
  /* the two layouts differ, and the first DQK − R dims are never touched */
  double h1[12], h2[12];
  memcpy(h1, x, sizeof x); memcpy(h2, x, sizeof x);
  attn_rope(h1, DQK, R, 1, 10000.0f, 3, 0);
  attn_rope(h2, DQK, R, 2, 10000.0f, 3, 0);
  check(memcmp(h1, x, 4 * sizeof(double)) == 0 && memcmp(h1, h2, sizeof h1) != 0, "rope: only the last R dims turn; layouts differ");
}

/* One attention configuration with q, k, v inside one array xs (packed: q = k = v = xs; else
 * consecutive regions) and gradients in the same layout. */
typedef struct { CpuAttn a; long nq, nk, nv; int packed; const float *r; float *out, *lse; } AtGCtx;
static void atg_ptrs(AtGCtx *c, float *xs, float **q, float **k, float **v) {
  *q = xs;
  *k = c->packed ? xs : xs + c->nq;
  *v = c->packed ? xs : xs + c->nq + c->nk;
}
static double atg_f(void *vc, const float *xs) {
  AtGCtx *c = vc;
  float *q, *k, *v;
  atg_ptrs(c, (float *)xs, &q, &k, &v);
  cpu_attn(&c->a, q, k, v, c->out, c->lse, NULL, NULL);
  double s = 0;
  for (long i = 0; i < c->a.B * c->a.T * c->a.H * c->a.DV; i++) s += (double)c->r[i] * c->out[i];
  return s;
}

/* Finite differences of Σ r ⊙ attn(q, k, v) against attn_bwd_pre + attn_bwd_dkdv + attn_bwd_dq; with RoPE
 * the backward reads the forward's rotated copies (qr, kr, in an array laid out like xs) as q and k (KROT:
 * qr alone, k as given, and dk is the derivative with respect to that k). */
static void attn_fd(const char *what, CpuAttn a, int packed) {
  long N = a.B * a.T, nq = N * a.LDQ, nk = packed ? 0 : N * a.LDK, nv = packed ? 0 : N * a.LDV, n = nq + nk + nv;
  long no = N * a.H * a.DV, S = a.B * a.H * a.T;
  float *xs = falloc(n), *g = falloc(n), *r = falloc(no), *out = falloc(no), *lse = falloc(S), *delta = falloc(S);
  float *xr = falloc(n);
  fill(xs, n, 1.5f); fill(r, no, 1);
  AtGCtx c = {a, nq, nk, nv, packed, r, out, lse};
  float *q, *k, *v, *dq, *dk, *dv, *qr, *kr, *vr;
  atg_ptrs(&c, xs, &q, &k, &v);
  atg_ptrs(&c, g, &dq, &dk, &dv);
  atg_ptrs(&c, xr, &qr, &kr, &vr);
  int krot = a.ROPE && !a.KROT;
  cpu_attn(&a, q, k, v, out, lse, a.ROPE ? qr : NULL, krot ? kr : NULL);
  cpu_attn_bwd_pre(out, r, delta, a.B, a.T, a.H, a.DV);
  const float *bq = a.ROPE ? qr : q, *bk = krot ? kr : k;
  /* columns of q/k/v rows that belong to no head must stay untouched: mark them, then zero */
  for (long i = 0; i < n; i++) g[i] = 77;
  cpu_attn_bwd_dkdv(&a, bq, bk, v, r, lse, delta, dk, dv, NULL, NULL);
  cpu_attn_bwd_dq(&a, bq, bk, v, r, lse, delta, dq);
  long untouched = 0;
  for (long i = 0; i < n; i++) if (g[i] == 77) { untouched++; g[i] = 0; }
  double e = fd_check(atg_f, &c, xs, n, g, 1e-2);
  check(e < 2e-3, "attn %s: backward matches finite differences (rel %.1e, %ld unused columns untouched)", what, e, untouched);
  free(xr); free(xs); free(g); free(r); free(out); free(lse); free(delta);
}

static CpuAttn attn_packed(long B, long T, long H, long HKV, long d) {
  CpuAttn a;
  memset(&a, 0, sizeof a);
  long W = (H + 2 * HKV) * d;
  a.B = B; a.T = T; a.H = H; a.HKV = HKV; a.DQK = d; a.DV = d;
  a.LDQ = a.LDK = a.LDV = W; a.QOFF = 0; a.KOFF = H * d; a.VOFF = (H + HKV) * d;
  a.QHS = a.KHS = a.VHS = d;
  a.scale = (float)(1.0 / sqrt((double)d));
  a.rope_base = 10000.0f;
  return a;
}

/* naive forward: mask, ALiBi and GQA written out directly (no RoPE, no dropout) */
static double attn_naive_err(const CpuAttn *a, const float *qkv, const float *out, const float *lse) {
  double err = 0;
  long T = a->T;
  for (long b = 0; b < a->B; b++)
    for (long h = 0; h < a->H; h++) {
      long gk = h / (a->H / a->HKV);
      double m = a->ALIBI ? attn_alibi_slope(h, a->H) : 0;
      for (long i = 0; i < T; i++) {
        double s[64], z = 0, mx = -1e300;
        for (long j = 0; j <= i; j++) {
          int vis = a->WINDOW == 0 || i - j < a->WINDOW || j < a->SINK;
          double dot = 0;
          for (long e = 0; e < a->DQK; e++)
            dot += (double)qkv[(b * T + i) * a->LDQ + a->QOFF + h * a->QHS + e] * qkv[(b * T + j) * a->LDK + a->KOFF + gk * a->KHS + e];
          s[j] = vis ? a->scale * dot - m * (i - j) : -INFINITY;
          if (s[j] > mx) mx = s[j];
        }
        for (long j = 0; j <= i; j++) z += exp(s[j] - mx);
        err = fmax(err, fabs(lse[(b * a->H + h) * T + i] - (mx + log(z))));
        for (long e = 0; e < a->DV; e++) {
          double o = 0;
          for (long j = 0; j <= i; j++) o += exp(s[j] - mx) / z * qkv[(b * T + j) * a->LDV + a->VOFF + gk * a->VHS + e];
          err = fmax(err, fabs(out[(b * T + i) * a->H * a->DV + h * a->DV + e] - o));
        }
      }
    }
  return err;
}

static void test_attn(void) {
  test_alibi_rope();
  /* GPT-2's attention is attn with the packed layout and no extras */
  long B = 2, T = 6, H = 2, d = 4, N = B * T, D = H * d;
  CpuAttn a = attn_packed(B, T, H, H, d);
  float *qkv = falloc(N * 3 * D), *o1 = falloc(N * D), *o2 = falloc(N * D), *l1 = falloc(B * H * T), *l2 = falloc(B * H * T);
  fill(qkv, N * 3 * D, 1.5f);
  cpu_attention(qkv, o1, l1, B, T, H, d);
  cpu_attn(&a, qkv, qkv, qkv, o2, l2, NULL, NULL);
  check(maxabs_diff(o1, o2, N * D) < 1e-6 && maxabs_diff(l1, l2, B * H * T) < 1e-6, "attn: packed layout, no extras == attention");
  free(qkv); free(o1); free(o2); free(l1); free(l2);

  /* masks and ALiBi against the naive loop: GQA 4 query heads on 2 kv heads, T = 9 */
  struct { long W, S; int alibi; const char *name; } mc[] = {
    {0, 0, 0, "causal"}, {3, 0, 0, "window 3"}, {3, 2, 0, "window 3 sink 2"}, {1, 0, 0, "W = 1"},
    {1, 3, 0, "W = 1 sink 3"}, {9, 0, 0, "W >= T"}, {2, 4, 1, "sink >= W, alibi"}, {0, 0, 1, "alibi"}};
  for (size_t t = 0; t < sizeof mc / sizeof mc[0]; t++) {
    CpuAttn g = attn_packed(1, 9, 4, 2, 4);
    g.WINDOW = mc[t].W; g.SINK = mc[t].S; g.ALIBI = mc[t].alibi;
    long n = 9 * g.LDQ;
    float *x = falloc(n), *out = falloc(9 * 16), *lse = falloc(4 * 9);
    fill(x, n, 1.5f);
    cpu_attn(&g, x, x, x, out, lse, NULL, NULL);
    double e = attn_naive_err(&g, x, out, lse);
    check(e < 1e-5, "attn %s (GQA 4/2): forward against a naive loop (err %.1e)", mc[t].name, e);
    free(x); free(out); free(lse);
  }
  /* backward by finite differences over the variants */
  CpuAttn g = attn_packed(2, 5, 4, 2, 4);
  attn_fd("GQA 4/2 packed", g, 1);
  g = attn_packed(1, 7, 3, 1, 4);
  g.WINDOW = 2; g.SINK = 2; g.ALIBI = 1;
  attn_fd("MQA, window 2 + sinks 2, alibi (H = 3)", g, 1);
  g = attn_packed(1, 6, 2, 2, 8);
  g.ROPE = 1; g.ROPE_DIM = 4; g.rope_base = 100.0f;
  attn_fd("rope half-split on the last 4 of 8", g, 1);
  g.ROPE = 2;
  attn_fd("rope adjacent on the last 4 of 8", g, 1);
  /* MLA-like: separate buffers, DQK = 6 (rope on the last 2), DV = 4, per-head strides with gaps */
  CpuAttn m;
  memset(&m, 0, sizeof m);
  m.B = 1; m.T = 5; m.H = 2; m.HKV = 2; m.DQK = 6; m.DV = 4;
  m.LDQ = 16; m.QOFF = 2; m.QHS = 7; m.LDK = 12; m.KOFF = 0; m.KHS = 6; m.LDV = 10; m.VOFF = 1; m.VHS = 5;
  m.ROPE = 2; m.ROPE_DIM = 2; m.rope_base = 50.0f; m.scale = 0.4f;
  attn_fd("separate q/k/v, DQK 6 != DV 4, strided heads, rope", m, 0);
  {   /* KROT = 1 on k̃ = R·k is the attention of KROT = 0 on k: the same out and lse, and qr */
    long N = m.B * m.T, S = m.B * m.H * m.T, no = N * m.H * m.DV;
    float *q = falloc(N * m.LDQ), *k = falloc(N * m.LDK), *kt = falloc(N * m.LDK), *v = falloc(N * m.LDV);
    float *o1 = falloc(no), *o2 = falloc(no), *l1 = falloc(S), *l2 = falloc(S), *q1 = falloc(N * m.LDQ), *q2 = falloc(N * m.LDQ);
    float *kr = falloc(N * m.LDK);
    fill(q, N * m.LDQ, 1); fill(k, N * m.LDK, 1); fill(v, N * m.LDV, 1);
    memcpy(kt, k, (size_t)(N * m.LDK) * sizeof *k);
    for (long n = 0; n < N; n++)
      for (long g2 = 0; g2 < m.HKV; g2++) {
        double x[6];
        float *row = kt + n * m.LDK + m.KOFF + g2 * m.KHS;
        for (long e = 0; e < m.DQK; e++) x[e] = row[e];
        attn_rope(x, m.DQK, m.ROPE_DIM, (int)m.ROPE, m.rope_base, n % m.T, 0);
        for (long e = 0; e < m.DQK; e++) row[e] = (float)x[e];
      }
    cpu_attn(&m, q, k, v, o1, l1, q1, kr);
    m.KROT = 1;
    cpu_attn(&m, q, kt, v, o2, l2, q2, NULL);
    check(maxabs_diff(o1, o2, no) < 1e-6 && maxabs_diff(l1, l2, S) < 1e-6 && maxabs_diff(q1, q2, N * m.LDQ) == 0,
          "attn KROT: k given rotated gives the attention of k turned inside (out, lse, qr)");
    free(q); free(k); free(kt); free(v); free(o1); free(o2); free(l1); free(l2); free(q1); free(q2); free(kr);
  }
  /* MLA as gen builds it: mla_k rotated k, the attention turns q alone */
  attn_fd("separate q/k/v, rope on q alone (KROT: k arrives rotated)", m, 0);
  g = attn_packed(1, 6, 2, 2, 8);
  g.ROPE = 1; g.ROPE_DIM = 4; g.rope_base = 100.0f; g.KROT = 1;
  attn_fd("rope half-split on q alone, packed (KROT)", g, 1);
  /* attention-probability dropout: the mask is the documented hash over ((b·H + h)·T + i)·T + j */
  int32_t ctr[2] = {991, 17};
  g = attn_packed(2, 5, 2, 1, 4);
  g.dropout = 0.3f; g.stream = 5; g.ctr = ctr;
  attn_fd("dropout 0.3 (GQA 2/1)", g, 1);
  {
    long n = 2 * 5 * g.LDQ, no = 2 * 5 * 2 * 4;
    float *x = falloc(n), *od = falloc(no), *o0 = falloc(no), *ld = falloc(20), *l0 = falloc(20);
    fill(x, n, 1.5f);
    cpu_attn(&g, x, x, x, od, ld, NULL, NULL);
    CpuAttn g0 = g;
    g0.dropout = 0;
    cpu_attn(&g0, x, x, x, o0, l0, NULL, NULL);
    double err = 0;
    long dropped = 0;
    for (long b = 0; b < 2; b++)
      for (long h = 0; h < 2; h++)
        for (long i = 0; i < 5; i++)
          for (long e = 0; e < 4; e++) {
            double o = 0;
            for (long j = 0; j <= i; j++) {
              double dot = 0;
              for (long c = 0; c < 4; c++) dot += (double)x[(b * 5 + i) * g.LDQ + h * 4 + c] * x[(b * 5 + j) * g.LDQ + g.KOFF + c];
              uint64_t idx = (uint64_t)(((b * 2 + h) * 5 + i) * 5 + j);
              int keep = (double)(hand_hash(991, 5, 17, idx) >> 40) / 16777216.0 >= 0.3;
              if (!keep && e == 0) dropped++;
              o += keep ? exp(g.scale * dot - l0[(b * 2 + h) * 5 + i]) / 0.7 * x[(b * 5 + j) * g.LDQ + g.VOFF + e] : 0;
            }
            err = fmax(err, fabs(od[(b * 5 + i) * 8 + h * 4 + e] - o));
          }
    check(err < 1e-5 && maxabs_diff(ld, l0, 20) == 0 && dropped > 0,
          "attn dropout: out = sum p*keep/(1-p)*v with the hand-computed mask, lse unchanged (%ld dropped)", dropped);
    free(x); free(od); free(o0); free(ld); free(l0);
  }
}

/* A plan with a frozen sinusoidal param, a `fill` param and the dropctr input: parse, init,
 * and the counter the backend derives from the step scalars. */
static const char *DROP_PLAN =
  "moonforge-plan 1\nname drop\nsource_hash 00\n"
  "dim B 1\ndim T 4\ndim D 8\ndim N 4\ndim accum 2\ntrain seed 77\n"
  "param 0 wpe.weight 32 0 0 sinusoidal 0 2 4 8 frozen\n"
  "param 1 h.0.ln_1.alpha 1 128 0 fill 0.5 1 1\n"
  "arena params 256\n"
  "buffer 0 x f32 32 0 0\nbuffer 1 y f32 32 128 32\narena acts 256 64\n"
  "input dropctr i32 2\n"
  "op 0 fwd dropout k 1 1 1 32 1 1 0 3 x=act:0 dropctr=dropctr >out=act:1 3 n=32 p=0.25 stream=3 # drop\n"
  "end\n";

static void test_vocab_plan(void) {
  Plan p;
  char err[1024];
  write_text(path_of("drop.plan"), DROP_PLAN);
  if (plan_load(path_of("drop.plan"), &p, err, sizeof err)) { check(0, "vocab plan: %s", err); return; }
  check(p.params[0].frozen == 1 && p.params[1].frozen == 0, "plan: trailing 'frozen' sets the flag");
  float *w = falloc(p.param_elems);
  init_params(&p, 1, w);
  int good = 1;
  for (long t = 0; t < 4; t++)
    for (long i = 0; i < 4; i++) {
      double om = pow(10000.0, -2.0 * i / 8.0);
      good &= fabs(w[t * 8 + 2 * i] - sin(t * om)) < 1e-7 && fabs(w[t * 8 + 2 * i + 1] - cos(t * om)) < 1e-7;
    }
  check(good && w[128] == 0.5f, "init: sinusoidal table sin/cos(t*10000^(-2i/D)); fill = the std field");
  Backend *b = cpu_backend_new(&p);
  float scal[8], x[32], y[32], ctr[2];
  step_scalars(&p, 5, 10, scal);
  check(scal[3] == 5 && scal[4] == 77, "step_scalars: scal[3] = step, scal[4] = seed & 0xFFFFFF");
  b->set_scalars(b, scal);
  Ref rc = {.kind = REF_INPUT, .idx = plan_input(&p, "dropctr")};
  b->read_ref(b, &rc, 1, ctr, 2);
  check(ctr[0] == 77 && ctr[1] == 11, "backend: dropctr of micro-step 1 = {seed, step*accum + 1} (%g %g)", ctr[0], ctr[1]);
  fill(x, 32, 1);
  b->write_ref(b, op_ref(&p.ops[0], "x"), 0, x, 32);
  b->run_op(b, &p.ops[0], 1);
  b->read_ref(b, op_ref(&p.ops[0], "out"), 0, y, 32);
  int32_t ic[2] = {77, 11};
  float want[32];
  cpu_dropout(x, ic, want, 32, 0.25f, 3);
  check(!memcmp(y, want, sizeof y), "backend: the dropout op uses the micro-step's counter");
  b->destroy(b);
  free(w);
  plan_free(&p);
  write_text(path_of("frz.plan"), "moonforge-plan 1\nname f\nsource_hash 0\n"
             "param 0 w 8 0 1 normal 0.1 1 8 frozen\narena params 128\narena acts 0 0\nend\n");
  expect_plan_error("plan: a frozen param with decay is rejected", path_of("frz.plan"), "frozen param must have decay 0");
  write_text(path_of("frz2.plan"), "moonforge-plan 1\nname f\nsource_hash 0\n"
             "param 0 w 8 0 0 normal 0.1 1 8 melted\narena params 128\narena acts 0 0\nend\n");
  expect_plan_error("plan: an unknown trailing word is rejected", path_of("frz2.plan"), "unexpected trailing field 'melted'");
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
  cpu_sumsq(g, part, 0, pe, 4);
  cpu_adamw(wr, g, mr, vr, scal, part, 0, pe, 128, 4, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f);
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
  const char *pp = plan_variant("kind.plan", "op 1 fwd layernorm", "op 1 fwd nosuchkind");
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
  test_rmsnorm();
  test_dyt();
  test_activations();
  test_dropout();
  test_embed_mla();
  test_attn();
  test_vocab_plan();
  test_backend();
  expect_exit("backend: unknown op kind names the op and plan line", run_unknown_kind, "kind.plan:37: op 1 (nosuchkind, ln_f)");
  expect_exit("backend: out-of-range token is reported", run_bad_token, "token 99");
  expect_exit("backend: a ref smaller than the op needs is reported", run_small_ref, "ref c=act:5 has 8 elements, the op needs 128");
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
  printf("%d passed, %d failed\n", npass, nfail);
  return nfail ? 1 : 0;
}
