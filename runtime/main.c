/* main.c — the `runtime` command line: load DIR/model.plan next to the given DIR/model.ptx,
 * pick a backend, and train, benchmark or check. */
#include "backend.h"
#include "check.h"
#include "plan.h"
#include "train.h"
#include "util.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
  fprintf(f,
          "usage: runtime DIR/model.ptx [options]\n"
          "  Runs the model described by DIR/model.plan (written by gen next to model.ptx).\n"
          "modes (at most one; without any, print a summary of the plan and backend):\n"
          "  --train            train on synthetic data from the seed\n"
          "  --bench            5 warm-up steps, then time --steps steps; last line BENCH ...\n"
          "  --golden FILE      compare with a golden safetensors file from tests/reference\n"
          "  --gradcheck        finite-difference check of every parameter gradient (CPU)\n"
          "  --check            run every op on the GPU and the CPU and compare (needs a GPU)\n"
          "  --decode-check     KV-cache decoding reproduces the forward pass's logits\n"
          "options:\n"
          "  --cpu              use the CPU reference backend instead of the GPU\n"
          "  --steps N          optimizer steps (default: the plan's train steps; bench: 20)\n"
          "  --seed S           seed for initialisation and data (default: the plan's train seed)\n"
          "  --log-every K      print a line every K steps (default 10; 0 = summary only)\n"
          "  --tol X            tolerance: golden relative L2 (default 1e-4), --check (default 3e-2)\n"
          "  --loss-tol X       golden: relative tolerance of the losses (default: --tol)\n"
          "  --help             this text\n");
}

static long parse_long_arg(const char *flag, const char *v, long lo) {
  char *end;
  errno = 0;
  long x = v ? strtol(v, &end, 10) : 0;
  if (!v || errno || end == v || *end || x < lo) fatal("%s needs an integer >= %ld (got '%s')", flag, lo, v ? v : "");
  return x;
}

static double parse_double_arg(const char *flag, const char *v) {
  char *end;
  double x = v ? strtod(v, &end) : 0;
  if (!v || end == v || *end || !(x > 0)) fatal("%s needs a positive number (got '%s')", flag, v ? v : "");
  return x;
}

int main(int argc, char **argv) {
  const char *ptx = NULL, *golden = NULL;
  int train = 0, bench = 0, gradcheck = 0, check = 0, decode_check = 0, use_cpu = 0;
  long steps = -1, log_every = 10, seed = -1;
  double tol = -1, loss_tol = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
    else if (!strcmp(a, "--train")) train = 1;
    else if (!strcmp(a, "--bench")) bench = 1;
    else if (!strcmp(a, "--gradcheck")) gradcheck = 1;
    else if (!strcmp(a, "--decode-check")) decode_check = 1;
    else if (!strcmp(a, "--check")) check = 1;
    else if (!strcmp(a, "--cpu")) use_cpu = 1;
    else if (!strcmp(a, "--golden")) { if (!next) fatal("--golden needs a file"); golden = next; i++; }
    else if (!strcmp(a, "--steps")) { steps = parse_long_arg(a, next, 1); i++; }
    else if (!strcmp(a, "--seed")) { seed = parse_long_arg(a, next, 0); i++; }
    else if (!strcmp(a, "--log-every")) { log_every = parse_long_arg(a, next, 0); i++; }
    else if (!strcmp(a, "--tol")) { tol = parse_double_arg(a, next); i++; }
    else if (!strcmp(a, "--loss-tol")) { loss_tol = parse_double_arg(a, next); i++; }
    else if (a[0] == '-') { fprintf(stderr, "runtime: unknown option '%s'\n", a); usage(stderr); return 1; }
    else if (ptx) fatal("more than one model path given ('%s' and '%s')", ptx, a);
    else ptx = a;
  }
  if (!ptx) { usage(stderr); return 1; }
  if (train + bench + gradcheck + check + decode_check + (golden != NULL) > 1)
    fatal("choose at most one of --train, --bench, --golden, --gradcheck, --check, --decode-check");
  size_t len = strlen(ptx);
  if (len < 4 || strcmp(ptx + len - 4, ".ptx")) fatal("%s: expected the generated DIR/model.ptx", ptx);
  if (check && use_cpu) fatal("--check compares the GPU with the CPU: it cannot run with --cpu");
  int need_gpu = !use_cpu && !gradcheck; /* the CPU backend needs only the plan */
  if (need_gpu && !file_exists(ptx)) fatal("%s: no such file (run gen first, or use --cpu)", ptx);

  char plan_path[1100];
  const char *slash = strrchr(ptx, '/');
  if (slash) snprintf(plan_path, sizeof plan_path, "%.*s/model.plan", (int)(slash - ptx), ptx);
  else snprintf(plan_path, sizeof plan_path, "model.plan");
  Plan plan;
  char err[2048];
  if (plan_load(plan_path, &plan, err, sizeof err)) fatal("%s", err);

  uint64_t s = seed >= 0 ? (uint64_t)seed : (uint64_t)plan_train(&plan, "seed", 1337);
  if (steps < 0) steps = bench ? 20 : (long)plan_train(&plan, "steps", 100);
  if (steps < 1) steps = 1;

  Backend *cpu = NULL, *gpu = NULL;
  if (use_cpu || gradcheck || check) cpu = cpu_backend_new(&plan);
  if (need_gpu) {
    gpu = gpu_backend_new(&plan, ptx, err, sizeof err);
    if (!gpu) fatal("no GPU backend: %s (use --cpu to run on the CPU reference backend)", err);
  }
  Backend *b = gpu ? gpu : cpu;

  int rc = 0;
  TrainOpts o = {.steps = steps, .seed = s, .log_every = log_every};
  if (train) rc = train_run(b, &o);
  else if (bench) rc = bench_run(b, &o);
  else if (golden) rc = check_golden(b, golden, tol > 0 ? tol : 1e-4, loss_tol > 0 ? loss_tol : (tol > 0 ? tol : 1e-4));
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
  if (cpu) cpu->destroy(cpu);
  if (gpu) gpu->destroy(gpu);
  plan_free(&plan);
  return rc ? 1 : 0;
}
