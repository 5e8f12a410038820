/* plot.c — `runtime --plot RUN_DIR... [-o FILE.png] [--title TEXT]`.
 *
 * Each run directory holds metrics.jsonl, one JSON object per logged step ("step", "train_loss",
 * and "val_loss" on the steps where the validation loss was measured). Every run becomes one solid
 * line (train loss) and, when it has validation losses, dashed points of the same colour. A run
 * is labelled by its directory name, or by its parent's when the directory is called `run` (the
 * layout of sweeps: out/<sweep>/<point>/run, so the label is the point's name, i.e. its
 * settings). gnuplot (Debian: gnuplot-nox) draws the PNG from a script and inline data blocks
 * written to its stdin, so no temporary files are needed. */
#define _POSIX_C_SOURCE 200809L
#include "plot.h"
#include "util.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct { double step, loss; } Point;
typedef struct {
  char label[256];
  Point *train, *val;
  long ntrain, nval;
} Run;

/* The number after "key": on one JSON line. 1 found, 0 absent (or null), -1 malformed. */
static int json_number(const char *line, const char *key, double *out) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\"", key);
  const char *s = strstr(line, pat);
  if (!s) return 0;
  s += strlen(pat);
  while (*s == ' ' || *s == '\t') s++;
  if (*s++ != ':') return -1;
  while (*s == ' ' || *s == '\t') s++;
  if (!strncmp(s, "null", 4)) return 0;
  char *end;
  double v = strtod(s, &end);
  if (end == s) return -1;
  *out = v;
  return 1;
}

static void push(Point **a, long *n, double step, double loss) {
  if ((*n & (*n - 1)) == 0) *a = xrealloc(*a, (size_t)(*n ? 2 * *n : 1) * sizeof **a); /* grow at powers of 2 */
  (*a)[*n].step = step;
  (*a)[*n].loss = loss;
  (*n)++;
}

/* The label of a run directory: its name, or its parent's when it is called "run". */
static void run_label(const char *dir, char *out, size_t n) {
  char d[PATH_MAX];
  snprintf(d, sizeof d, "%s", dir);
  size_t len = strlen(d);
  while (len > 1 && d[len - 1] == '/') d[--len] = 0;
  char *base = strrchr(d, '/');
  if (base && !strcmp(base + 1, "run")) {
    *base = 0;
    char *parent = strrchr(d, '/');
    snprintf(out, n, "%s", parent ? parent + 1 : d);
  } else if (!strcmp(d, "run")) {
    snprintf(out, n, "run");
  } else {
    snprintf(out, n, "%s", base ? base + 1 : d);
  }
}

static void load_run(const char *dir, Run *r) {
  char path[PATH_MAX + 16];
  snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
  FILE *f = fopen(path, "r");
  if (!f) fatal("--plot: %s: %s (a run directory written by --train)", path, strerror(errno));
  char *line = NULL;
  size_t cap = 0;
  long lineno = 0;
  while (getline(&line, &cap, f) > 0) {
    lineno++;
    if (strspn(line, " \t\r\n") == strlen(line)) continue;
    double step, loss;
    int hs = json_number(line, "step", &step);
    if (hs != 1) fatal("--plot: %s:%ld: expected a JSON object with a numeric \"step\"", path, lineno);
    int ht = json_number(line, "train_loss", &loss);
    if (ht < 0) fatal("--plot: %s:%ld: \"train_loss\" is not a number", path, lineno);
    if (ht == 1 && isfinite(loss)) push(&r->train, &r->ntrain, step, loss);
    int hv = json_number(line, "val_loss", &loss);
    if (hv < 0) fatal("--plot: %s:%ld: \"val_loss\" is not a number", path, lineno);
    if (hv == 1 && isfinite(loss)) push(&r->val, &r->nval, step, loss);
  }
  free(line);
  fclose(f);
  if (r->ntrain + r->nval == 0) fatal("--plot: %s: no logged steps yet", path);
  run_label(dir, r->label, sizeof r->label);
}

/* A gnuplot single-quoted string: the only escape is '' for a quote. */
static void put_quoted(FILE *g, const char *s) {
  fputc('\'', g);
  for (; *s; s++) {
    if (*s == '\'') fputc('\'', g);
    if (*s != '\n') fputc(*s, g);
  }
  fputc('\'', g);
}

static int on_path(const char *prog) {
  const char *path = getenv("PATH");
  if (!path) return 0;
  char buf[PATH_MAX];
  while (*path) {
    size_t n = strcspn(path, ":");
    snprintf(buf, sizeof buf, "%.*s/%s", (int)n, path, prog);
    if (access(buf, X_OK) == 0) return 1;
    path += n + (path[n] == ':');
  }
  return 0;
}

static void usage_plot(FILE *f) {
  fprintf(f, "usage: runtime --plot RUN_DIR... [-o FILE.png] [--title TEXT]\n"
             "  one PNG (default loss.png) with the train loss (lines) and validation loss (points) of every run,\n"
             "  read from RUN_DIR/metrics.jsonl; drawn by gnuplot (apt-get install gnuplot-nox)\n");
}

int plot_main(int argc, char **argv) {
  const char *out = "loss.png", *title = "training loss";
  const char **dirs = xmalloc((size_t)argc * sizeof *dirs);
  int ndir = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--plot")) continue;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_plot(stdout); free(dirs); return 0; }
    if (!strcmp(a, "-o") || !strcmp(a, "--title")) {
      if (i + 1 >= argc) fatal("--plot: %s needs a value", a);
      if (a[1] == 'o') out = argv[++i]; else title = argv[++i];
    } else if (a[0] == '-') {
      fprintf(stderr, "runtime: --plot: unknown option '%s'\n", a);
      usage_plot(stderr);
      free(dirs);
      return 1;
    } else {
      dirs[ndir++] = a;
    }
  }
  if (ndir == 0) { usage_plot(stderr); free(dirs); return 1; }
  if (!on_path("gnuplot")) fatal("--plot: gnuplot not found on PATH (Debian: apt-get install gnuplot-nox, or make deps)");

  Run *runs = xcalloc((size_t)ndir, sizeof *runs);
  for (int i = 0; i < ndir; i++) load_run(dirs[i], &runs[i]);
  /* two runs with the same name (a/run and b/x/a/run): label them by their paths instead */
  for (int i = 0; i < ndir; i++)
    for (int j = 0; j < ndir; j++)
      if (i != j && !strcmp(runs[i].label, runs[j].label)) {
        snprintf(runs[i].label, sizeof runs[i].label, "%s", dirs[i]);
        break;
      }

  /* a failed gnuplot must give an error message, not kill us with SIGPIPE mid-write */
  signal(SIGPIPE, SIG_IGN);
  remove(out);
  FILE *g = popen("gnuplot", "w");
  if (!g) fatal("--plot: cannot start gnuplot: %s", strerror(errno));
  /* pngcairo draws smoother lines; plain png (libgd) is the fallback some builds have instead */
  fprintf(g, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
             "  set terminal pngcairo noenhanced size 1400,850 font ',11'\n"
             "} else {\n"
             "  set terminal png noenhanced size 1400,850\n"
             "}\n");
  fprintf(g, "set output ");
  put_quoted(g, out);
  fprintf(g, "\nset title ");
  put_quoted(g, title);
  fprintf(g, "\nset xlabel 'step'\nset ylabel 'loss (nats/token)'\nset grid\n"
             "set key outside right top vertical Left reverse\nset datafile missing 'NaN'\n");
  for (int i = 0; i < ndir; i++) {
    fprintf(g, "$t%d << EOD\n", i);
    for (long k = 0; k < runs[i].ntrain; k++) fprintf(g, "%.17g %.9g\n", runs[i].train[k].step, runs[i].train[k].loss);
    fprintf(g, "EOD\n$v%d << EOD\n", i);
    for (long k = 0; k < runs[i].nval; k++) fprintf(g, "%.17g %.9g\n", runs[i].val[k].step, runs[i].val[k].loss);
    fprintf(g, "EOD\n");
  }
  /* 12 distinguishable colours (a sweep of up to 12 points never repeats one); beyond, they cycle */
  static const char *colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                                  "#e377c2", "#17becf", "#7f7f7f", "#bcbd22", "#000080", "#800000"};
  fprintf(g, "plot ");
  int first = 1;
  for (int i = 0; i < ndir; i++) {
    const char *c = colours[i % 12];
    if (runs[i].ntrain) {
      fprintf(g, "%s$t%d using 1:2 with lines lw 2 lc rgb '%s' title ", first ? "" : ", \\\n  ", i, c);
      put_quoted(g, runs[i].label);
      first = 0;
    }
    if (runs[i].nval) {
      fprintf(g, "%s$v%d using 1:2 with linespoints dt 2 pt 7 ps 1 lc rgb '%s' title ", first ? "" : ", \\\n  ", i, c);
      char vl[300];
      snprintf(vl, sizeof vl, "%s (val)", runs[i].label);
      put_quoted(g, vl);
      first = 0;
    }
  }
  fprintf(g, "\nset output\n");
  int st = pclose(g);
  for (int i = 0; i < ndir; i++) { free(runs[i].train); free(runs[i].val); }
  free(runs);
  free(dirs);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    fatal("--plot: gnuplot failed (exit status %d) drawing %s", WIFEXITED(st) ? WEXITSTATUS(st) : -1, out);
  struct stat sb;
  if (stat(out, &sb) != 0 || sb.st_size == 0) fatal("--plot: gnuplot wrote no image to %s", out);
  printf("plot: %d run%s → %s\n", ndir, ndir == 1 ? "" : "s", out);
  return 0;
}
