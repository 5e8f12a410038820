/* plot.h — `runtime --plot RUN_DIR... [-o FILE.png] [--title TEXT]`: the loss curves of any set of
 * training runs in one PNG, drawn by gnuplot. */
#ifndef MF_PLOT_H
#define MF_PLOT_H

/* The whole --plot command: argv as main() got it (the "--plot" flag itself is skipped). Reads
 * RUN_DIR/metrics.jsonl of every run, writes the PNG; returns the process exit code (0 ok, 1 error,
 * with one line on stderr naming the file at fault). */
int plot_main(int argc, char **argv);
#endif
