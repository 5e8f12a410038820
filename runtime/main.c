/* main.c — the `runtime` command line: load DIR/model.plan next to the given DIR/model.ptx, pick a
 * backend, and train, benchmark, check, sample or score; or turn text into token shards
 * (--prepare) or measure the unigram baseline of shards (--unigram), which need no model. */
#define _POSIX_C_SOURCE 200809L
#include "backend.h"
#include "check.h"
#include "checkpoint.h"
#include "dist.h"
#include "dp_plan.h"
#include "evaluate.h"
#include "fsutil.h"
#include "hf_qwen2.h"
#include "init.h"
#include "plan.h"
#include "plot.h"
#include "prepare.h"
#include "runlog.h"
#include "safetensors.h"
#include "profile.h"
#include "sample.h"
#include "shards.h"
#include "textgen.h"
#include "tokenizer.h"
#include "train.h"
#include "util.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
  fprintf(f,
          "usage: runtime DIR/model.ptx [options]\n"
          "       runtime --prepare [--tokenizer DIR] [--doc-sep STR] [--val-fraction X] --out DIR INPUT...\n"
          "       runtime --unigram --data GLOB [--val-data GLOB] [DIR/model.ptx]\n"
          "       runtime --plot RUN_DIR... [-o FILE.png] [--title TEXT]   (loss curves of runs, via gnuplot)\n"
          "  Runs the model described by DIR/model.plan (written by gen next to model.ptx).\n"
          "modes (at most one; without any, print a summary of the plan and backend):\n"
          "  --train            train (on --data shards, else on a synthetic stream from the seed)\n"
          "  --generate         sample text from --init-from weights, the run's latest checkpoint, or the seed's init\n"
          "  --logits FILE      forward the first B*T tokens of shard FILE with the weights --generate would use;\n"
          "                     write logits [B,T,V], tokens, targets and loss to --out FILE.safetensors\n"
          "  --bench            5 warm-up steps, then time --steps steps; last line BENCH ...\n"
          "  --profile          with --bench: then one step op by op, each op timed on the GPU (tables by kind, slowest ops,\n"
          "                     matmuls by shape, each shape's candidate cuBLASLt algorithms timed)\n"
          "  --bench-decode     time KV-cache decoding as --generate does it: --prompt-tokens ids, then\n"
          "                     --sample-tokens greedy steps; last line BENCH_DECODE ms_per_token=...\n"
          "  --golden FILE      compare with a golden safetensors file from tests/reference\n"
          "  --gradcheck        finite-difference check of every parameter gradient (CPU)\n"
          "  --check            run every op on the GPU and the CPU and compare (needs a GPU)\n"
          "  --decode-check     KV-cache decoding reproduces the forward pass's logits\n"
          "  --export-hf DIR    write the weights --generate would use as a Hugging Face model directory DIR (new):\n"
          "                     Qwen2ForCausalLM (parscale.n = 1) or GPT2LMHeadModel; config.json + model.safetensors\n"
          "  --prepare          text files/directories -> train_*.bin / val_*.bin shards in --out (no model)\n"
          "  --unigram          cross-entropy of --val-data under --data's unigram frequencies (no model needed)\n"
          "options:\n"
          "  --cpu              use the CPU reference backend instead of the GPU\n"
          "  --steps N          optimizer steps (default: the plan's train steps; bench: 20)\n"
          "  --seed S           seed for initialisation and data (default: the plan's train seed)\n"
          "  --log-every K      print a line every K steps (default 10; 0 = summary only)\n"
          "  --tol X            tolerance: golden relative L2 (default 1e-4), --check (default 3e-2)\n"
          "  --loss-tol X       golden: relative tolerance of the losses (default: --tol)\n"
          "  --tol-for G=X      golden: gradient tensor G (e.g. grad.parscale.agg.fc1.bias) within X instead (repeatable)\n"
          "data and evaluation:\n"
          "  --data GLOB        training shards (llm.c format); without it: the synthetic stream\n"
          "  --val-data GLOB    validation shards (default: GLOB of --data with train_ replaced by val_)\n"
          "  --eval-every K     validation loss every K steps (default: only at the end, when there is a val set)\n"
          "  --eval-batches M   the fixed validation set: the first M batches of the val loader (default 20)\n"
          "run directory and checkpoints (used with --data, --run-dir, --save-every or --resume):\n"
          "  --run-dir DIR      metrics.jsonl, meta.json, config.json and ckpt/ (default: DIR of the model/run)\n"
          "  --save-every K     checkpoint every K steps (always at the end)\n"
          "  --resume           continue exactly from the run directory's newest complete checkpoint\n"
          "  --init-from DIR    start from Hugging Face weights: GPT-2 (DIR/model.safetensors, e.g. a checkpoint) or\n"
          "                     Qwen2 (config.json model_type qwen2; sharded or not); ParScale's own parameters keep\n"
          "                     their initialisation\n"
          "  --export-dtype T   f32, bf16 or f16 for --export-hf (default: the dtype of --init-from's Qwen2 files, else f32)\n"
          "sampling (at the end of training on --data, every --sample-every steps, and --generate):\n"
          "  --sample-every K   print a sample every K steps\n"
          "  --prompt TEXT      text to continue (default: a new document)\n"
          "  --sample-tokens N  tokens to generate (default 200, within the context)\n"
          "  --temperature X    default 0.8 (0 = greedy)\n"
          "  --top-k K          default 40 (0 = off)\n"
          "  --no-sample        no sample at the end of training\n"
          "  --tokenizer DIR    GPT-2 encoder.json + vocab.bpe, or a Hugging Face vocab.json + merges.txt (default:\n"
          "                     --init-from's directory when it holds vocab.json, else data/gpt2)\n"
          "  --prompt-tokens N  --bench-decode: prompt length before the timed steps (default 64)\n"
          "several GPUs (one process per GPU, data parallel; README \"Several GPUs\"; also mpirun, srun, torchrun):\n"
          "  --gpus N           start N processes on this host, one per GPU\n"
          "  --zero 0|1         1 (the default): ZeRO-1, the f32 master weights and AdamW moments sharded over\n"
          "                     the ranks; 0: plain data parallel, every rank holds and updates all of them\n"
          "  --nccl-id-file P   hand out the NCCL id through file P on a shared filesystem (else mpirun or\n"
          "                     MASTER_ADDR/MASTER_PORT)\n"
          "  --dump-master FILE after --train/--bench, write the f32 master weights (raw, param_elems floats) to\n"
          "                     FILE (rank R > 0: FILE.rankR)\n"
          "preparing shards:\n"
          "  --out DIR          output directory (must not exist)\n"
          "  --doc-sep STR      a line equal to STR ends a document (default: one document per file)\n"
          "  --val-fraction X   share of documents for validation (default 0.05)\n"
          "  --help             this text\n");
}

static long parse_long_arg(const char *flag, const char *v, long lo) {
  char *end;
  errno = 0;
  long x = v ? strtol(v, &end, 10) : 0;
  if (!v || errno || end == v || *end || x < lo) fatal("%s needs an integer >= %ld (got '%s')", flag, lo, v ? v : "");
  return x;
}

/* A number >= lo, or > lo when strict. */
static double parse_num_arg(const char *flag, const char *v, double lo, int strict) {
  char *end;
  double x = v ? strtod(v, &end) : 0;
  if (!v || end == v || *end || !(strict ? x > lo : x >= lo) || !isfinite(x))
    fatal("%s needs a %s number (got '%s')", flag, strict ? "positive" : "non-negative", v ? v : "");
  return x;
}

static const char *need_str(const char *flag, const char *v) {
  if (!v) fatal("%s needs a value", flag);
  return v;
}

typedef struct {
  Tokenizer *tok;
  TextGenOpts o;
} SampleCtx;

/* Called by the training loop: a failed sample is reported, and training goes on. */
static void sample_cb(void *ctx, Backend *b, long step) {
  SampleCtx *c = ctx;
  TextGenOpts o = c->o;
  o.seed = c->o.seed + (uint64_t)step;
  char title[64], err[1024];
  snprintf(title, sizeof title, "at step %ld", step);
  if (textgen_print(b, c->tok, &o, title, stdout, err, sizeof err)) fprintf(stderr, "runtime: no sample: %s\n", err);
}

/* "dir/train_*.bin" -> "dir/val_*.bin": the last "train_" in the glob becomes "val_" (NULL if none). */
static char *default_val_glob(const char *data) {
  const char *hit = NULL;
  for (const char *s = strstr(data, "train_"); s; s = strstr(s + 1, "train_")) hit = s;
  if (!hit) return NULL;
  size_t pre = (size_t)(hit - data), n = strlen(data) + 1;
  char *v = xmalloc(n);
  snprintf(v, n, "%.*sval_%s", (int)pre, data, hit + 6);
  return v;
}

/* Read the loader's next batch and go back: a bad token id (>= V) or an unreadable shard is
 * reported before anything is written, not after the run has started. */
static void peek_batch(Loader *l, long BT) {
  char err[2048];
  LoaderState at = loader_state(l);
  int32_t *tok = xmalloc((size_t)BT * sizeof *tok), *tgt = xmalloc((size_t)BT * sizeof *tgt);
  if (loader_next(l, tok, tgt, err, sizeof err)) fatal("--data: %s", err);
  if (loader_restore(l, &at, err, sizeof err)) fatal("--data: %s", err);
  free(tok);
  free(tgt);
}

static int run_prepare(const char *tokdir, const char **inputs, int n, const char *doc_sep, const char *out, double vf) {
  if (!out) fatal("--prepare needs --out DIR");
  if (n == 0) fatal("--prepare needs at least one input file or directory");
  if (!(vf > 0 && vf < 1)) fatal("--val-fraction must be between 0 and 1 (got %g)", vf);
  char err[4096];
  if (prepare_corpus(tokdir, inputs, n, doc_sep, out, vf, 0, err, sizeof err)) fatal("%s", err);
  return 0;
}

static int run_unigram(const char *data, const char *val, int vocab) {
  if (!data) fatal("--unigram needs --data GLOB (the training shards)");
  char *dflt = NULL;
  if (!val && !(val = dflt = default_val_glob(data))) fatal("--unigram: no --val-data and '%s' has no train_ to derive it from", data);
  double x;
  size_t nt, nv;
  char err[2048];
  if (unigram_baseline(data, val, vocab, &x, &nt, &nv, err, sizeof err)) fatal("%s", err);
  printf("unigram: %zu training tokens, %zu validation tokens | validation cross-entropy under the training unigram "
         "distribution (add-one smoothed): %.4f nats/token (perplexity %.0f)\n", nt, nv, x, exp(x));
  free(dflt);
  return 0;
}

/* --dump-master: the f32 master weights as raw little-endian floats (param_elems of them), rank 0
 * to path and rank R > 0 to path.rankR — under ZeRO-1 gathered first (a collective: every rank). */
static int dump_master_file(Backend *b, const char *path) {
  long n = b->plan->param_elems;
  float *w = xmalloc((size_t)n * sizeof *w);
  if (b->gather_state) b->gather_state(b);
  b->get_master(b, w);
  char p[4200];
  if (dist_rank() > 0) snprintf(p, sizeof p, "%s.rank%d", path, dist_rank());
  else snprintf(p, sizeof p, "%s", path);
  FILE *f = fopen(p, "wb");
  int ok = f && fwrite(w, sizeof *w, (size_t)n, f) == (size_t)n;
  if (f && fclose(f)) ok = 0;
  free(w);
  if (!ok) fatal("--dump-master %s: cannot write: %s", p, strerror(errno));
  printf("dump: %ld master weights -> %s\n", n, p);
  return 0;
}

int main(int argc, char **argv) {
  /* --plot takes run directories, not a model: its own small command (plot.c) */
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--plot")) return plot_main(argc, argv);
  const char *ptx = NULL, *golden = NULL, *logits_file = NULL;
  char *tol_for_name[16];
  double tol_for[16];
  int ntol_for = 0;
  int profile = 0;
  int train = 0, bench = 0, bench_decode = 0, gradcheck = 0, check = 0, decode_check = 0, use_cpu = 0, generate = 0, prepare = 0, unigram = 0;
  long steps = -1, log_every = 10, seed = -1;
  double tol = -1, loss_tol = -1;
  const char *data = NULL, *val_data = NULL, *run_dir_opt = NULL, *init_from = NULL, *prompt = NULL;
  const char *tokdir = NULL, *doc_sep = NULL, *out = NULL;
  long eval_every = 0, eval_batches = 20, save_every = 0, sample_every = 0, sample_tokens = -1, top_k = 40, prompt_tokens = 64;
  double temperature = 0.8, val_fraction = 0.05;
  int resume = 0, no_sample = 0, eval_asked = 0;
  long gpus = 0, zero = 1, dist_plan = 0;
  const char *id_file = NULL, *dump_master = NULL, *dist_selftest_mode = NULL, *export_hf = NULL, *export_dtype = NULL;
  const char **positional = xmalloc((size_t)argc * sizeof *positional);
  int npos = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
    else if (!strcmp(a, "--train")) train = 1;
    else if (!strcmp(a, "--bench")) bench = 1;
    else if (!strcmp(a, "--bench-decode")) bench_decode = 1;
    else if (!strcmp(a, "--profile")) profile = 1;
    else if (!strcmp(a, "--tol-for")) {
      const char *v = need_str(a, next), *eq = v ? strchr(v, '=') : NULL;
      char *end = NULL;
      double x = eq ? strtod(eq + 1, &end) : 0;
      if (!eq || eq == v || !end || *end || !(x > 0)) fatal("--tol-for %s: expected GRADIENT=TOLERANCE, e.g. grad.ln_f.weight=5e-2", v);
      if (ntol_for == 16) fatal("--tol-for: at most 16");
      tol_for_name[ntol_for] = xmalloc((size_t)(eq - v) + 1);
      memcpy(tol_for_name[ntol_for], v, (size_t)(eq - v));
      tol_for_name[ntol_for][eq - v] = 0;
      tol_for[ntol_for++] = x;
      i++;
    }
    else if (!strcmp(a, "--prompt-tokens")) { prompt_tokens = parse_long_arg(a, next, 1); i++; }
    else if (!strcmp(a, "--gradcheck")) gradcheck = 1;
    else if (!strcmp(a, "--decode-check")) decode_check = 1;
    else if (!strcmp(a, "--check")) check = 1;
    else if (!strcmp(a, "--generate")) generate = 1;
    else if (!strcmp(a, "--prepare")) prepare = 1;
    else if (!strcmp(a, "--unigram")) unigram = 1;
    else if (!strcmp(a, "--cpu")) use_cpu = 1;
    else if (!strcmp(a, "--resume")) resume = 1;
    else if (!strcmp(a, "--no-sample")) no_sample = 1;
    else if (!strcmp(a, "--golden")) { golden = need_str(a, next); i++; }
    else if (!strcmp(a, "--logits")) { logits_file = need_str(a, next); i++; }
    else if (!strcmp(a, "--steps")) { steps = parse_long_arg(a, next, 1); i++; }
    else if (!strcmp(a, "--seed")) { seed = parse_long_arg(a, next, 0); i++; }
    else if (!strcmp(a, "--log-every")) { log_every = parse_long_arg(a, next, 0); i++; }
    else if (!strcmp(a, "--tol")) { tol = parse_num_arg(a, next, 0, 1); i++; }
    else if (!strcmp(a, "--loss-tol")) { loss_tol = parse_num_arg(a, next, 0, 1); i++; }
    else if (!strcmp(a, "--data")) { data = need_str(a, next); i++; }
    else if (!strcmp(a, "--val-data")) { val_data = need_str(a, next); i++; }
    else if (!strcmp(a, "--eval-every")) { eval_every = parse_long_arg(a, next, 1); eval_asked = 1; i++; }
    else if (!strcmp(a, "--eval-batches")) { eval_batches = parse_long_arg(a, next, 1); i++; }
    else if (!strcmp(a, "--run-dir")) { run_dir_opt = need_str(a, next); i++; }
    else if (!strcmp(a, "--save-every")) { save_every = parse_long_arg(a, next, 1); i++; }
    else if (!strcmp(a, "--init-from")) { init_from = need_str(a, next); i++; }
    else if (!strcmp(a, "--export-hf")) { export_hf = need_str(a, next); i++; }
    else if (!strcmp(a, "--export-dtype")) { export_dtype = need_str(a, next); i++; }
    else if (!strcmp(a, "--sample-every")) { sample_every = parse_long_arg(a, next, 1); i++; }
    else if (!strcmp(a, "--prompt")) { prompt = need_str(a, next); i++; }
    else if (!strcmp(a, "--sample-tokens")) { sample_tokens = parse_long_arg(a, next, 1); i++; }
    else if (!strcmp(a, "--temperature")) { temperature = parse_num_arg(a, next, 0, 0); i++; }
    else if (!strcmp(a, "--top-k")) { top_k = parse_long_arg(a, next, 0); i++; }
    else if (!strcmp(a, "--tokenizer")) { tokdir = need_str(a, next); i++; }
    else if (!strcmp(a, "--doc-sep")) { doc_sep = need_str(a, next); i++; }
    else if (!strcmp(a, "--val-fraction")) { val_fraction = parse_num_arg(a, next, 0, 1); i++; }
    else if (!strcmp(a, "--out")) { out = need_str(a, next); i++; }
    else if (!strcmp(a, "--gpus")) { gpus = parse_long_arg(a, next, 1); i++; }
    else if (!strcmp(a, "--zero")) { zero = parse_long_arg(a, next, 0); i++; if (zero > 1) fatal("--zero: only 0 and 1 (ZeRO-1)"); }
    else if (!strcmp(a, "--nccl-id-file")) { id_file = need_str(a, next); i++; }
    else if (!strcmp(a, "--dump-master")) { dump_master = need_str(a, next); i++; }
    else if (!strcmp(a, "--dist-selftest")) { dist_selftest_mode = need_str(a, next); i++; } /* hidden: tests */
    else if (!strcmp(a, "--dist-plan")) { dist_plan = parse_long_arg(a, next, 1); i++; }      /* hidden: tests */
    else if (a[0] == '-' && a[1]) { fprintf(stderr, "runtime: unknown option '%s'\n", a); usage(stderr); return 1; }
    else positional[npos++] = a;
  }
  if (train + bench + bench_decode + gradcheck + check + decode_check + generate + prepare + unigram + (golden != NULL) + (logits_file != NULL) +
      (export_hf != NULL) > 1)
    fatal("choose at most one of --train, --generate, --logits, --export-hf, --bench, --bench-decode, --golden, --gradcheck, --check, --decode-check, "
          "--prepare, --unigram");
  if (export_dtype && !export_hf) fatal("--export-dtype goes with --export-hf");
  if (ntol_for && !golden) fatal("--tol-for goes with --golden");
  if (profile && !bench) fatal("--profile goes with --bench");
  char export_dir[4000];
  if (export_hf) { /* "out/" names the directory out: its temporary sibling is out.tmp.PID, not out/.tmp.PID */
    snprintf(export_dir, sizeof export_dir, "%s", export_hf);
    for (size_t n = strlen(export_dir); n > 1 && export_dir[n - 1] == '/'; n--) export_dir[n - 1] = 0;
    export_hf = export_dir;
  }
  if (export_dtype && strcmp(export_dtype, "f32") && strcmp(export_dtype, "bf16") && strcmp(export_dtype, "f16"))
    fatal("--export-dtype %s: expected f32, bf16 or f16", export_dtype);
  /* several processes (dist.h): the --gpus launcher forks the ranks and only watches them; each
   * rank then runs this program with its rank in the environment */
  if (gpus > 1) return dist_launch_local((int)gpus, argc, argv);
  if (dist_selftest_mode) return dist_selftest(dist_selftest_mode, id_file);
  dist_init(id_file, (int)zero);
  if (dist_world() > 1 && (use_cpu || !(train || bench)))
    fatal("rank %d of %d (%s): several processes run --train or --bench on the GPU only", dist_rank(), dist_world(),
          dist_env()->launcher);
  if (dump_master && !(train || bench)) fatal("--dump-master goes with --train or --bench");
  char tokbuf[4200];
  if (!tokdir && init_from && !prepare) { /* a Hugging Face directory brings its tokenizer */
    snprintf(tokbuf, sizeof tokbuf, "%s/vocab.json", init_from);
    if (file_exists(tokbuf)) tokdir = init_from;
  }
  if (!tokdir) tokdir = "data/gpt2";
  if (sample_tokens < 0) sample_tokens = bench_decode ? 128 : 200;
  if (prepare) return run_prepare(tokdir, positional, npos, doc_sep, out, val_fraction);
  if (npos > 1) fatal("more than one model path given ('%s' and '%s')", positional[0], positional[1]);
  ptx = npos ? positional[0] : NULL;
  if (!ptx && !unigram) { usage(stderr); return 1; }
  if (ptx) {
    size_t len = strlen(ptx);
    if (len < 4 || strcmp(ptx + len - 4, ".ptx")) fatal("%s: expected the generated DIR/model.ptx", ptx);
  }
  if (check && use_cpu) fatal("--check compares the GPU with the CPU: it cannot run with --cpu");
  if (resume && init_from) fatal("--resume continues a run from its checkpoint; --init-from starts a new one: choose one");
  int weights_only = generate || logits_file || export_hf; /* modes that take the weights of a run or --init-from */
  if (!(train || weights_only || unigram) &&
      (data || val_data || eval_asked || run_dir_opt || save_every || resume || sample_every || prompt || init_from))
    fatal("--data, --val-data, --eval-every, --run-dir, --save-every, --resume, --init-from, --sample-every and --prompt "
          "go with --train (some with --generate, --logits, --export-hf or --unigram)");
  if (logits_file && !out) fatal("--logits needs --out FILE.safetensors");

  char plan_path[1100];
  Plan plan;
  char err[4096];
  if (ptx) {
    const char *slash = strrchr(ptx, '/');
    if (slash) snprintf(plan_path, sizeof plan_path, "%.*s/model.plan", (int)(slash - ptx), ptx);
    else snprintf(plan_path, sizeof plan_path, "model.plan");
    if (plan_load(plan_path, &plan, err, sizeof err)) fatal("%s", err);
  }
  if (dist_plan) {
    if (!ptx) fatal("--dist-plan needs DIR/model.ptx");
    dp_print(&plan, (int)dist_plan, dp_bucket_target(), stdout);
    plan_free(&plan);
    free(positional);
    return 0;
  }
  if (unigram) {
    int rc = run_unigram(data, val_data, ptx ? (int)plan_dim(&plan, "V") : 0);
    if (ptx) plan_free(&plan);
    free(positional);
    return rc;
  }
  int need_gpu = !use_cpu && !gradcheck && !export_hf; /* the CPU backend needs only the plan; export no backend */
  if (need_gpu && !file_exists(ptx)) fatal("%s: no such file (run gen first, or use --cpu)", ptx);

  uint64_t s = seed >= 0 ? (uint64_t)seed : (uint64_t)plan_train(&plan, "seed", 1337);
  if (steps < 0) steps = bench ? 20 : (long)plan_train(&plan, "steps", 100);
  if (steps < 1) steps = 1;
  long B = plan_dim(&plan, "B"), T = plan_dim(&plan, "T"), V = plan_dim(&plan, "V");
  char run_dir[2100];
  if (run_dir_opt) snprintf(run_dir, sizeof run_dir, "%s", run_dir_opt);
  else snprintf(run_dir, sizeof run_dir, "%s/run", plan.dir[0] ? plan.dir : ".");

  /* ---- everything that can be refused is checked before a backend starts or a file is written ---- */
  if (bench_decode) {
    if (!sample_supported(&plan)) fatal("--bench-decode: %s has no decode program (regenerate it)", plan_path);
    if (prompt_tokens + sample_tokens >= T)
      fatal("--bench-decode: --prompt-tokens %ld + --sample-tokens %ld must stay below the context T = %ld", prompt_tokens,
            sample_tokens, T);
  }
  Loader *loader = NULL;
  EvalSet val = {0};
  int have_val = 0;
  char *val_glob = NULL;
  Tokenizer *tok = NULL;
  SampleCtx sctx = {0};
  int sample_at_end = 0;
  float *init_w = NULL;
  if (train) {
    if (data) {
      loader = loader_open(data, (int)B, (int)T, (int)V, dist_rank(), dist_world(), s, err, sizeof err);
      if (!loader) fatal("--data: %s", err);
      printf("data: %s | %zu tokens | %.1f batches of B*T = %ld per epoch\n", data, loader_total_tokens(loader),
             (double)loader_total_tokens(loader) / (double)(B * T), B * T);
      peek_batch(loader, B * T);
    }
    val_glob = val_data ? strcpy(xmalloc(strlen(val_data) + 1), val_data) : data ? default_val_glob(data) : NULL;
    if ((eval_asked || val_data) && !val_glob) fatal("--eval-every needs validation shards: pass --val-data GLOB");
    if (val_glob) {
      if (evalset_load(&val, val_glob, (int)B, (int)T, (int)V, (int)eval_batches, err, sizeof err)) {
        if (eval_asked || val_data) fatal("--val-data: %s", err);
        printf("note: no validation (%s)\n", err);
      } else {
        have_val = 1;
        printf("val: %s | fixed set of %d batches (%ld tokens)%s\n", val_glob, val.n, val.n * val.BT,
               val.n < eval_batches ? " — all the validation data holds" : "");
      }
    }
  }
  int want_sample = generate || (train && !no_sample && (sample_every || prompt || data));
  int sample_explicit = generate || sample_every || prompt;
  if (want_sample) {
    const char *why = NULL;
    if (!sample_supported(&plan)) why = "the plan has no decode program (a plan from an older gen: regenerate it)";
    else if (!(tok = tok_load(tokdir, err, sizeof err))) why = err;
    if (why && sample_explicit) fatal("cannot sample: %s", why);
    if (why) printf("note: no sample at the end: %s\n", why);
    else {
      sctx.tok = tok;
      sctx.o = (TextGenOpts){.prompt = prompt ? prompt : "", .tokens = (int)sample_tokens, .temperature = (float)temperature,
                             .top_k = (int)top_k, .seed = s};
      sample_at_end = train;
    }
  }
  char init_dtype[16] = "";
  if (init_from && (train || weights_only)) {
    init_w = xmalloc((size_t)plan.param_elems * sizeof *init_w);
    char mtype[64];
    int have_cfg = hf_model_type(init_from, mtype, sizeof mtype, err, sizeof err);
    if (have_cfg < 0) fatal("--init-from: %s", err);
    if (have_cfg && !strcmp(mtype, "qwen2")) {
      /* the backbone from the checkpoint; parameters it does not have (ParScale's) from the seed's init */
      init_params(&plan, s, init_w);
      if (qwen2_load(init_from, &plan, init_w, init_dtype, sizeof init_dtype, err, sizeof err)) fatal("--init-from: %s", err);
    } else if (have_cfg && strcmp(mtype, "gpt2")) {
      fatal("--init-from: %s/config.json: model_type \"%s\"; moonforge reads Hugging Face gpt2 and qwen2 directories", init_from, mtype);
    } else if (hf_load(init_from, &plan, init_w, err, sizeof err)) {
      fatal("--init-from: %s", err);
    }
    if (init_dtype[0]) printf("init: weights from %s (Hugging Face Qwen2, %s)\n", init_from, init_dtype);
    else printf("init: weights from %s\n", init_from);
  }
  int use_run_dir = train && (data || run_dir_opt || save_every || resume);
  char ckdir[4400];
  int have_ckpt = 0;
  if (use_run_dir || weights_only) {
    have_ckpt = ckpt_find_latest(run_dir, ckdir, sizeof ckdir, err, sizeof err);
    if (have_ckpt < 0) fatal("%s", err);
  }
  if (train && resume && !have_ckpt) fatal("--resume: no checkpoint in %s/ckpt", run_dir);
  if (use_run_dir && !resume && have_ckpt)
    fatal("%s already holds checkpoints (newest %s): pass --resume to continue that run, or choose another --run-dir", run_dir, ckdir);

  Backend *cpu = NULL, *gpu = NULL;
  if (use_cpu || gradcheck || check) cpu = cpu_backend_new(&plan);
  if (need_gpu) {
    gpu = gpu_backend_new(&plan, ptx, err, sizeof err);
    if (!gpu) fatal("no GPU backend: %s (use --cpu to run on the CPU reference backend)", err);
  }
  Backend *b = gpu ? gpu : cpu;

  int rc = 0;
  if (train) {
    TrainState st;
    int resumed = 0;
    if (resume) {
      if (ckpt_load(ckdir, b, &st, err, sizeof err)) fatal("--resume: %s", err);
      if (loader && loader_restore(loader, &st.loader, err, sizeof err)) fatal("--resume: %s: %s", ckdir, err);
      if (loader) peek_batch(loader, B * T);
      if (seed >= 0 && (uint64_t)seed != st.seed) printf("note: --seed %ld ignored: the run continues with its seed %llu\n", seed, (unsigned long long)st.seed);
      printf("resume: %s (step %ld)\n", ckdir, st.step);
      resumed = 1;
    }
    RunLog *log = NULL;
    if (use_run_dir && dist_rank() == 0) { /* only rank 0 writes the run's records */
      RunInfo info = {.backend = b->name, .argc = argc, .argv = argv, .seed = resumed ? st.seed : s, .steps = steps, .data = data,
                      .val_data = have_val ? val_glob : NULL, .init_from = init_from, .resumed_from = resumed ? st.step : -1};
      if (!(log = runlog_open(run_dir, &plan, &info, err, sizeof err))) fatal("--run-dir: %s", err);
      printf("run: %s (metrics.jsonl, meta.json, ckpt/)\n", run_dir);
    }
    TrainOpts o = {.steps = steps, .seed = s, .log_every = log_every, .data = loader, .val = have_val ? &val : NULL,
                   .eval_every = eval_every, .log = log, .run_dir = use_run_dir ? run_dir : NULL, .save_every = save_every,
                   .resume = resumed ? &st : NULL, .init_weights = init_w, .sample_every = tok ? sample_every : 0,
                   .sample_at_end = sample_at_end, .sample = tok ? sample_cb : NULL, .sample_ctx = &sctx};
    rc = train_run(b, &o);
    runlog_close(log);
  } else if (export_hf) {
    float *w = xmalloc((size_t)plan.param_elems * sizeof *w);
    const char *from;
    if (init_w) {
      memcpy(w, init_w, (size_t)plan.param_elems * sizeof *w);
      from = init_from;
    } else if (have_ckpt) {
      if (ckpt_load_weights(ckdir, &plan, w, err, sizeof err)) fatal("%s", err);
      from = ckdir;
    } else {
      fatal("--export-hf: no weights to export: %s/ckpt has no checkpoint (pass --run-dir RUN or --init-from DIR)", run_dir);
    }
    /* the dtype: asked for, else the one the Qwen2 weights came in (bf16 stays bf16, bit for bit), else f32 */
    const char *dt = export_dtype ? (!strcmp(export_dtype, "bf16") ? "BF16" : !strcmp(export_dtype, "f16") ? "F16" : "F32")
                                  : init_dtype[0] ? init_dtype : "F32";
    int extra;
    char why[256];
    if (qwen2_mappable(&plan, &extra, why, sizeof why)) {
      if (qwen2_export(export_hf, &plan, w, dt, init_dtype[0] ? init_from : NULL, err, sizeof err)) fatal("--export-hf: %s", err);
      printf("export: %s -> %s (Qwen2ForCausalLM, %s)\n", from, export_hf, dt);
    } else if (hf_mappable(&plan, err, sizeof err)) {
      if (strcmp(dt, "F32")) fatal("--export-hf: GPT-2 weights are written in f32 only (got --export-dtype %s)", export_dtype);
      char tmp[4200], e2[256];
      snprintf(tmp, sizeof tmp, "%s.tmp.%ld", export_hf, (long)getpid());
      if (file_exists(export_hf) || fs_is_dir(export_hf)) fatal("--export-hf: %s already exists; it writes a new directory", export_hf);
      if (fs_mkdirs(tmp, err, sizeof err) || hf_save(tmp, &plan, w, err, sizeof err) || fs_sync_dir(tmp, err, sizeof err)) {
        fs_remove_tree(tmp, e2, sizeof e2);
        fatal("--export-hf: %s", err);
      }
      if (rename(tmp, export_hf)) {
        fs_remove_tree(tmp, e2, sizeof e2);
        fatal("--export-hf: cannot rename %s to %s: %s", tmp, export_hf, strerror(errno));
      }
      printf("export: %s -> %s (GPT2LMHeadModel, F32)\n", from, export_hf);
    } else {
      fatal("--export-hf: the plan %s is neither a Qwen2 (%s) nor a GPT-2 (%s)", plan.name, why, err);
    }
    free(w);
  } else if (generate || logits_file) {
    float *w = xmalloc((size_t)plan.param_elems * sizeof *w), *z = xcalloc((size_t)plan.param_elems, sizeof *z);
    /* the weights: --init-from, else the run's newest checkpoint, else the seed's initialisation */
    char from[4600];
    if (init_w) {
      memcpy(w, init_w, (size_t)plan.param_elems * sizeof *w);
      snprintf(from, sizeof from, "%s", init_from);
    } else if (have_ckpt) {
      if (ckpt_load_weights(ckdir, &plan, w, err, sizeof err)) fatal("%s", err);
      snprintf(from, sizeof from, "%s", ckdir);
    } else {
      init_params(&plan, s, w);
      snprintf(from, sizeof from, "the initial weights of seed %llu (no checkpoint in %s/ckpt)", (unsigned long long)s, run_dir);
    }
    b->set_master(b, w);
    b->set_opt_state(b, z, z);
    free(w);
    free(z);
    if (generate) {
      char title[4700];
      snprintf(title, sizeof title, "from %s", from);
      if (textgen_print(b, tok, &sctx.o, title, stdout, err, sizeof err)) fatal("%s", err);
    } else {
      size_t n;
      int32_t *ids = shard_read(logits_file, (int)V, &n, err, sizeof err);
      if (!ids) fatal("--logits: %s", err);
      if ((long)n < B * T + 1) fatal("--logits: %s holds %zu tokens, a batch needs B*T+1 = %ld", logits_file, n, B * T + 1);
      float *lg = xmalloc((size_t)(B * T * V) * sizeof *lg);
      double loss = forward_logits(b, ids, ids + 1, lg);
      StWriter wr;
      st_writer_init(&wr);
      long lshape[3] = {B, T, V}, tshape[2] = {B, T}, one = 1;
      float lossf = (float)loss;
      st_add(&wr, "logits", "F32", 3, lshape, lg);
      st_add(&wr, "tokens", "I32", 2, tshape, ids);
      st_add(&wr, "targets", "I32", 2, tshape, ids + 1);
      st_add(&wr, "loss", "F32", 1, &one, &lossf);
      st_add_meta(&wr, "backend", b->name);
      if (st_write(&wr, out, err, sizeof err)) fatal("--out: %s", err);
      st_writer_free(&wr);
      printf("logits: %s | weights %s | %s | loss %.6f | [%ld, %ld, %ld] -> %s\n", logits_file, from, b->name, loss, B, T, V, out);
      free(lg);
      free(ids);
    }
  } else if (bench_decode) {
    float *w = xmalloc((size_t)plan.param_elems * sizeof *w), *z = xcalloc((size_t)plan.param_elems, sizeof *z);
    init_params(&plan, s, w); /* decoding costs the same whatever the weights */
    b->set_master(b, w);
    b->set_opt_state(b, z, z);
    free(w);
    free(z);
    double ms_prompt, ms_new;
    sample_bench(b, (int)prompt_tokens, (int)sample_tokens, s, &ms_prompt, &ms_new);
    printf("decode %s on %s: batch %ld (sequence 0 sampled), %ld prompt tokens at %.4f ms each, then %ld greedy tokens\n",
           plan.name, b->name, B, prompt_tokens, ms_prompt, sample_tokens);
    printf("BENCH_DECODE ms_per_token=%.4f tok_per_s=%.1f\n", ms_new, 1e3 / ms_new);
  } else if (bench) {
    TrainOpts o = {.steps = steps, .seed = s, .log_every = log_every};
    rc = bench_run(b, &o);
    if (!rc && profile) rc = profile_print(b, stdout) ? 1 : 0;
  } else if (golden) rc = check_golden(b, golden, tol > 0 ? tol : 1e-4, loss_tol > 0 ? loss_tol : (tol > 0 ? tol : 1e-4), ntol_for,
                                  tol_for_name, tol_for);
  else if (gradcheck) rc = check_gradcheck(cpu, s);
  else if (decode_check) rc = check_decode(b, s, tol > 0 ? tol : (gpu ? 2e-2 : 1e-5));
  else if (check) rc = check_ops(cpu, gpu, s, tol > 0 ? tol : 3e-2);
  else {
    long nop[4] = {0, 0, 0, 0};
    for (int i = 0; i < plan.nop; i++) nop[plan.ops[i].phase]++;
    printf("%s (%s): %d params, %ld parameter elements (%ld decayed), %d buffers, %ld activation bytes on the GPU\n",
           plan.name, plan_path, plan.nparam, plan.param_elems, plan.n_decay, plan.nbuf, plan.act_bytes);
    printf("ops: %ld fwd, %ld bwd, %ld opt, %ld dec | backend %s\n", nop[0], nop[1], nop[2], nop[3], b->name);
  }
  if (dump_master && !rc) rc = dump_master_file(b, dump_master);
  if (loader) loader_close(loader);
  evalset_free(&val);
  free(val_glob);
  free(init_w);
  if (tok) tok_free(tok);
  if (cpu) cpu->destroy(cpu);
  if (gpu) gpu->destroy(gpu);
  plan_free(&plan);
  free(positional);
  dist_finish();
  return rc ? 1 : 0;
}
