#!/usr/bin/env bash
# GPU benchmark: moonforge vs PyTorch (eager and torch.compile) training GPT-2 124M, T = 1024.
#
# Run on the GPU machine from the repo root after `make`:
#     bash bench/bench.sh
# Environment: OUT (log folder, default /tmp/bench), PYTHON (default python3, the one with PyTorch 2.x),
# BATCHES (default "16 32"), STEPS (timed steps, default 20), WARMUP (default 5),
# RUN_TIMEOUT (seconds per run, default 300).
#
# Every system prints `BENCH tok_per_s=... ms_per_step=... mfu=...` as its last line; a run that fails or
# prints none gets FAILED in its cell and the others still run. The Markdown table is printed last.
set -u

cd "$(dirname "$0")/.." || exit 1
LOGS=${OUT:-/tmp/bench}
PY=${PYTHON:-python3}
BATCHES=${BATCHES:-"16 32"}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-5}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
mkdir -p "$LOGS" || { echo "bench.sh: cannot create $LOGS" >&2; exit 1; }

# value KEY from the last BENCH line of log file $1 (empty when there is none)
bench_val() {
  grep '^BENCH ' "$1" 2>/dev/null | tail -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# run NAME LOG CMD...: run with a time limit, log stdout+stderr, report one line
run() {
  local name=$1 log=$2
  shift 2
  echo "== $name: $*" >"$log"
  local t0=$SECONDS
  timeout "$RUN_TIMEOUT" "$@" >>"$log" 2>&1
  local rc=$?
  local tok
  tok=$(bench_val "$log" tok_per_s)
  if [ "$rc" -eq 0 ] && [ -n "$tok" ]; then
    echo "bench.sh: $name: $tok tok/s ($((SECONDS - t0)) s) log $log"
  else
    echo "bench.sh: $name: FAILED (exit $rc) — last lines of $log:"
    tail -n 5 "$log" | sed 's/^/    /'
  fi
}

# cell LOG KEY: the number, or FAILED
cell() {
  local v
  v=$(bench_val "$1" "$2")
  if [ -n "$v" ]; then echo "$v"; else echo FAILED; fi
}

# ratio A B: A/B to two decimals, or n/a when either is missing
ratio() {
  case "$1$2" in *FAILED*) echo "n/a"; return ;; esac
  awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f\n", a / b; else print "n/a" }'
}

for B in $BATCHES; do
  mf_log=$LOGS/moonforge_b$B.log
  echo "== gen: bin/gen specs/gpt2_124m.lua -o out/bench_b$B --set train.batch_size=$B" >"$LOGS/gen_b$B.log"
  if timeout "$RUN_TIMEOUT" bin/gen specs/gpt2_124m.lua -o "out/bench_b$B" --set "train.batch_size=$B" \
       >>"$LOGS/gen_b$B.log" 2>&1; then
    run "moonforge B=$B" "$mf_log" bin/runtime "out/bench_b$B/model.ptx" --bench --steps "$STEPS"
  else
    echo "bench.sh: gen B=$B: FAILED — see $LOGS/gen_b$B.log"
    tail -n 5 "$LOGS/gen_b$B.log" | sed 's/^/    /'
    echo "gen failed: see gen_b$B.log" >"$mf_log"
  fi
  for mode in eager compile; do
    run "torch $mode B=$B" "$LOGS/torch_${mode}_b$B.log" \
      "$PY" bench/torch_gpt2.py --batch "$B" --seq 1024 --mode "$mode" --steps "$STEPS" --warmup "$WARMUP"
  done
done

echo
echo "GPT-2 124M, T=1024, median of $STEPS steps after warmup; logs in $LOGS"
echo
echo "| B | moonforge tok/s | MFU | eager tok/s | compile tok/s | moonforge/eager | moonforge/compile |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for B in $BATCHES; do
  mf=$(cell "$LOGS/moonforge_b$B.log" tok_per_s)
  mfu=$(cell "$LOGS/moonforge_b$B.log" mfu)
  eg=$(cell "$LOGS/torch_eager_b$B.log" tok_per_s)
  cp=$(cell "$LOGS/torch_compile_b$B.log" tok_per_s)
  echo "| $B | $mf | $mfu | $eg | $cp | $(ratio "$mf" "$eg") | $(ratio "$mf" "$cp") |"
done
