#!/usr/bin/env bash
# scripts/run.sh [SPEC] — the main job behind `make run` (which first runs `make deps all`):
# generate the program for SPEC, turn the default corpus (Debian's fortunes) into token shards once,
# print the unigram baseline, then train with progress lines and validation, checkpoint at the end
# and print a sample. On the GPU when `nvidia-smi -L` sees one (default specs/gpt2_124m.lua), else
# on the CPU reference backend (default specs/gpt2_mini.lua, a few minutes on 2 cores).
#   STEPS=N    optimizer steps (default: 500 on the GPU, 200 on the CPU)
#   DATA=DIR   shards to train on (DIR/train_*.bin, DIR/val_*.bin) instead of data/fortunes
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "run: $*" >&2; exit 1; }

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  spec=${1:-specs/gpt2_124m.lua} steps=${STEPS:-500} where=GPU
  backend=() genflags=(--set train.warmup_steps=50)
  eval=(--eval-every 100 --eval-batches 20) log_every=25
else
  spec=${1:-specs/gpt2_mini.lua} steps=${STEPS:-200} where=CPU
  backend=(--cpu) genflags=(--no-compile) # the CPU backend needs only the plan
  eval=(--eval-every 50 --eval-batches 10) log_every=10
fi
[ -f "$spec" ] || die "$spec: no such spec"
name=$(basename "$spec" .lua)
out=out/$name
data=${DATA:-data/fortunes}

# 1. the program
bin/gen "$spec" -o "$out" --set train.steps="$steps" "${genflags[@]}"

# 2. the corpus, once: every fortune file (the .dat indexes and .u8 links are not text)
if [ ! -f "$data/prepare.json" ]; then
  [ -z "${DATA:-}" ] || die "$data: no prepare.json (make shards with: bin/runtime --prepare --out $data FILES...)"
  src=/usr/share/games/fortunes
  mapfile -t files < <(find "$src" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' | sort)
  [ ${#files[@]} -gt 0 ] || die "no fortune files in $src (Debian package fortunes: run make deps)"
  echo "run: preparing ${#files[@]} fortune files from $src into $data"
  bin/runtime --prepare --doc-sep % --out "$data" "${files[@]}"
fi

# 3. the baseline a model must beat: predicting tokens by their training frequency alone
uni=$(bin/runtime --unigram --data "$data/train_*.bin" --val-data "$data/val_*.bin")
echo "$uni"

# 4. train: progress, validation, a checkpoint and a sample at the end
run_dir=$out/run
if [ -e "$run_dir" ]; then # each `make run` starts afresh; the previous one is kept once, as run.prev
  rm -rf "$run_dir.prev" && mv "$run_dir" "$run_dir.prev"
  echo "run: the previous run moved to $run_dir.prev"
fi
echo "run: training $name on the $where for $steps steps; records and checkpoints in $run_dir"
bin/runtime "$out/model.ptx" ${backend[@]+"${backend[@]}"} --train --steps "$steps" --log-every "$log_every" \
  --data "$data/train_*.bin" --val-data "$data/val_*.bin" "${eval[@]}" --run-dir "$run_dir"

# 5. how it went
base=$(grep -oE '[0-9.]+ nats/token' <<<"$uni" | awk '{print $1}')
val=$(grep -oE '"val_loss": [0-9.]+' "$run_dir/metrics.jsonl" | tail -1 | awk '{print $2}')
if [ -n "$base" ] && [ -n "$val" ]; then
  awk -v v="$val" -v b="$base" 'BEGIN { printf "run: validation loss %.3f vs %.3f for the unigram baseline (%+.3f nats/token)\n", v, b, v - b }'
fi
echo "run: sample again with: bin/runtime $out/model.ptx ${backend[*]:-} --generate --run-dir $run_dir --prompt 'Your text'"
