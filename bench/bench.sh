#!/usr/bin/env bash
# GPU benchmark: moonforge against PyTorch, every ratio measured in the same run. PARTS picks:
#   gpt2    GPT-2 124M training, T = 1024, B in $BATCHES, against bench/torch_gpt2.py (eager, torch.compile)
#   swamla  the seed-002 presets in $SWAMLA at their own batch and T = 2048, against bench/torch_decoder.py
#           (eager, torch.compile; SWA through FlexAttention)
#   attn    the attention kernels alone: bin/test_attention_gen --bench-only, then bench/attention_sdpa.py
#           (SDPA, FlexAttention) — T = 1024, 4096, 16384, d = 64, 128, causal and SWA (W = 256, S = 4)
#   parscale  ParScale on the Qwen2-0.5B shape (specs/parscale_basic.lua) for P in $PS_P: training tok/s at
#           B = $PS_B, T = $PS_T against bench/torch_parscale.py (eager, torch.compile), and batch-1 decoding
#           (runtime --bench-decode: 64 prompt tokens, then 128 greedy ones) against its eager KV-cache decoder;
#           PS_WHAT (default "train decode") picks either half
#
# Run on the GPU machine from the repo root after `make`:
#     bash bench/bench.sh
# Environment: OUT (log folder, default /tmp/bench), PYTHON (default python3, the one with PyTorch 2.x),
# BATCHES (default "16 32"), STEPS (timed steps, default 20), WARMUP (default 5),
# RUN_TIMEOUT (seconds per run, default 300), PARTS (default "gpt2 swamla attn parscale"),
# SWAMLA (default "swamla_small swamla_base").
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
PARTS=${PARTS:-"gpt2 swamla attn parscale"}
SWAMLA=${SWAMLA:-"swamla_small swamla_base"}
PS_P=${PS_P:-"1 2 4 8"}
PS_B=${PS_B:-1}
PS_T=${PS_T:-2048}
PS_WHAT=${PS_WHAT:-"train decode"}
ps_has() { case " $PS_WHAT " in *" $1 "*) return 0 ;; esac; return 1; }
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
mkdir -p "$LOGS" || { echo "bench.sh: cannot create $LOGS" >&2; exit 1; }

# value KEY from the last BENCH line (or TAG line: BENCH_DECODE) of log file $1 (empty when there is none)
bench_val() {
  grep "^${3:-BENCH} " "$1" 2>/dev/null | tail -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"
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
  [ -n "$tok" ] || tok=$(bench_val "$log" tok_per_s BENCH_DECODE)
  if [ "$rc" -eq 0 ] && [ -n "$tok" ]; then
    echo "bench.sh: $name: $tok tok/s ($((SECONDS - t0)) s) log $log"
  else
    echo "bench.sh: $name: FAILED (exit $rc) — last lines of $log:"
    tail -n 5 "$log" | sed 's/^/    /'
  fi
}

# cell LOG KEY [TAG]: the number, or FAILED
cell() {
  local v
  v=$(bench_val "$1" "$2" "${3:-BENCH}")
  if [ -n "$v" ]; then echo "$v"; else echo FAILED; fi
}

# ratio A B: A/B to two decimals, or n/a when either is missing
ratio() {
  case "$1$2" in *FAILED*) echo "n/a"; return ;; esac
  awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f\n", a / b; else print "n/a" }'
}

# gen_bench NAME LOG SPEC OUTDIR [gen args...]: generate the program, then time it with --bench; a failed
# gen leaves its reason in LOG (so the table shows FAILED) and in LOG.gen
gen_bench() {
  local name=$1 log=$2 spec=$3 out=$4
  shift 4
  echo "== gen: bin/gen $spec -o $out $*" >"$log.gen"
  if timeout "$RUN_TIMEOUT" bin/gen "$spec" -o "$out" "$@" >>"$log.gen" 2>&1; then
    run "$name" "$log" bin/runtime "$out/model.ptx" --bench --steps "$STEPS"
  else
    echo "bench.sh: gen for $name: FAILED — see $log.gen"
    tail -n 5 "$log.gen" | sed 's/^/    /'
    echo "gen failed: see $log.gen" >"$log"
  fi
}

if has gpt2; then
  for B in $BATCHES; do
    gen_bench "moonforge B=$B" "$LOGS/moonforge_b$B.log" specs/gpt2_124m.lua "out/bench_b$B" --set "train.batch_size=$B"
    for mode in eager compile; do
      run "torch $mode B=$B" "$LOGS/torch_${mode}_b$B.log" \
        "$PY" bench/torch_gpt2.py --batch "$B" --seq 1024 --mode "$mode" --steps "$STEPS" --warmup "$WARMUP"
    done
  done
fi

if has swamla; then
  for P in $SWAMLA; do
    gen_bench "moonforge $P" "$LOGS/moonforge_$P.log" "specs/$P.lua" "out/bench_$P"
    for mode in eager compile; do
      run "torch $mode $P" "$LOGS/torch_${mode}_$P.log" \
        "$PY" bench/torch_decoder.py --preset "$P" --mode "$mode" --steps "$STEPS" --warmup "$WARMUP"
    done
  done
fi

if has attn; then
  if [ -x bin/test_attention_gen ]; then
    timeout "$RUN_TIMEOUT" bin/test_attention_gen --bench-only >"$LOGS/attn_moonforge.log" 2>&1 ||
      { echo "bench.sh: attention kernels: FAILED"; tail -n 5 "$LOGS/attn_moonforge.log"; }
  else
    echo "bench.sh: bin/test_attention_gen is missing: make bin/test_attention_gen (needs nvcc)" | tee "$LOGS/attn_moonforge.log"
  fi
  timeout "$RUN_TIMEOUT" "$PY" bench/attention_sdpa.py >"$LOGS/attn_torch.log" 2>&1 ||
    { echo "bench.sh: bench/attention_sdpa.py: FAILED"; tail -n 5 "$LOGS/attn_torch.log"; }
fi

if has parscale; then
  for P in $PS_P; do
    d=out/bench_ps$P
    if ps_has train; then
    gen_bench "moonforge parscale P=$P" "$LOGS/moonforge_ps$P.log" specs/parscale_basic.lua "$d" --set "parscale.n=$P" \
      --set "train.batch_size=$PS_B" --set train.grad_accum=1 --set "model.seq_len=$PS_T"
    for mode in eager compile; do
      run "torch $mode parscale P=$P" "$LOGS/torch_${mode}_ps$P.log" "$PY" bench/torch_parscale.py --what train --P "$P" \
        --batch "$PS_B" --seq "$PS_T" --mode "$mode" --steps "$STEPS" --warmup "$WARMUP"
    done
    fi
    ps_has decode || continue
    if [ "$PS_B" = 1 ] && [ -f "$d/model.ptx" ]; then dd=$d; else
      dd=out/bench_psd$P
      timeout "$RUN_TIMEOUT" bin/gen specs/parscale_basic.lua -o "$dd" --set "parscale.n=$P" --set train.batch_size=1 \
        --set "model.seq_len=$PS_T" >"$LOGS/moonforge_psd$P.log.gen" 2>&1
    fi
    run "moonforge decode P=$P" "$LOGS/moonforge_psd$P.log" bin/runtime "$dd/model.ptx" --bench-decode \
      --prompt-tokens 64 --sample-tokens 128
    run "torch decode P=$P" "$LOGS/torch_psd$P.log" "$PY" bench/torch_parscale.py --what decode --P "$P" --seq "$PS_T" \
      --prompt-tokens 64 --new-tokens 128
  done
fi

# ---- the tables, last
if has gpt2; then
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
fi
if has swamla; then
  echo
  echo "SWA-MLA presets (seed 002), T=2048, median of $STEPS steps after warmup; logs in $LOGS"
  echo
  echo "| preset | moonforge tok/s | MFU | eager tok/s | compile tok/s | moonforge/eager | moonforge/compile |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  for P in $SWAMLA; do
    mf=$(cell "$LOGS/moonforge_$P.log" tok_per_s)
    mfu=$(cell "$LOGS/moonforge_$P.log" mfu)
    eg=$(cell "$LOGS/torch_eager_$P.log" tok_per_s)
    cp=$(cell "$LOGS/torch_compile_$P.log" tok_per_s)
    echo "| $P | $mf | $mfu | $eg | $cp | $(ratio "$mf" "$eg") | $(ratio "$mf" "$cp") |"
  done
fi
if has attn; then
  echo
  echo "Attention alone (bf16, TFLOP/s over the visible pairs; logs in $LOGS):"
  sed -n '/^attention_gen benchmark/,/^[0-9]* passed/p' "$LOGS/attn_moonforge.log" | grep -v ' passed, '
  grep -E '^bench B\*H' "$LOGS/attn_moonforge.log"
  echo
  sed -n '/^| kernel /,$p' "$LOGS/attn_torch.log"
fi
if has parscale && ps_has train; then
  echo
  echo "ParScale on Qwen2-0.5B (specs/parscale_basic.lua), training B=$PS_B T=$PS_T (tok/s of data tokens), median of"
  echo "$STEPS steps after warmup; logs in $LOGS"
  echo
  echo "| P | moonforge tok/s | MFU | eager tok/s | compile tok/s | moonforge/eager | moonforge/compile |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  for P in $PS_P; do
    mf=$(cell "$LOGS/moonforge_ps$P.log" tok_per_s)
    mfu=$(cell "$LOGS/moonforge_ps$P.log" mfu)
    eg=$(cell "$LOGS/torch_eager_ps$P.log" tok_per_s)
    cp=$(cell "$LOGS/torch_compile_ps$P.log" tok_per_s)
    echo "| $P | $mf | $mfu | $eg | $cp | $(ratio "$mf" "$eg") | $(ratio "$mf" "$cp") |"
  done
fi
if has parscale && ps_has decode; then
  echo
  echo "Decoding at batch 1 (64 prompt tokens, then 128 greedy ones; ms per generated token):"
  echo
  echo "| P | moonforge ms/token | torch eager ms/token | torch/moonforge | moonforge P/P=1 | torch P/P=1 |"
  echo "| --- | --- | --- | --- | --- | --- |"
  set -- $PS_P
  m1=$(cell "$LOGS/moonforge_psd$1.log" ms_per_token BENCH_DECODE)
  t1=$(cell "$LOGS/torch_psd$1.log" ms_per_token BENCH_DECODE)
  for P in $PS_P; do
    m=$(cell "$LOGS/moonforge_psd$P.log" ms_per_token BENCH_DECODE)
    t=$(cell "$LOGS/torch_psd$P.log" ms_per_token BENCH_DECODE)
    echo "| $P | $m | $t | $(ratio "$t" "$m") | $(ratio "$m" "$m1") | $(ratio "$t" "$t1") |"
  done
fi
