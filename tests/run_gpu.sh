#!/usr/bin/env bash
# tests/run_gpu.sh — the GPU tests (`make test-gpu`, on the GPU machine): kernels against CPU
# references, the GPU backend against the PyTorch goldens and op by op against the CPU backend,
# determinism, and a short real-size training run.
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
export TMPDIR=${TMPDIR_GPU:-$(mktemp -d)}
RT=bin/runtime
GOLDEN=tests/golden/gpt2_tiny.safetensors
GOLDEN_SET="--set model.vocab_size=500 --set train.batch_size=2"

check "GPU present" nvidia-smi -L
if [ -x bin/test_kernels ]; then
  check "kernel tests (each kernel vs a CPU double reference)" bin/test_kernels
else
  notok "kernel tests" "bin/test_kernels missing: build it with 'make bin/test_kernels' (needs nvcc)"
fi
# generalized attention (with learned prefixes) and the ParScale kernels, each against a CPU double reference
for t in test_attention_gen test_parscale; do
  if [ -x bin/$t ]; then
    check "kernel tests: $t --no-bench" bin/$t --no-bench
  else
    notok "kernel tests: $t" "bin/$t missing: build it with 'make bin/$t' (needs nvcc)"
  fi
done

for variant in fused unfused; do
  flag=""; [ $variant = unfused ] && flag=--no-fuse
  d="$TMPDIR/g_$variant"
  check "gen golden config ($variant)" bin/gen specs/gpt2_tiny.lua $GOLDEN_SET $flag -o "$d"
  check "GPU matches PyTorch goldens, $variant (bf16: rel L2 <= 2e-2, losses <= 1%)" \
    $RT "$d/model.ptx" --golden $GOLDEN --tol 2e-2 --loss-tol 1e-2
  check "GPU vs CPU op by op, $variant" $RT "$d/model.ptx" --check
  check "GPU KV-cache decoding == forward pass logits, $variant (rel L2 <= 2e-2)" $RT "$d/model.ptx" --decode-check
done

# The reference is GPT-2: its logits equal transformers' GPT2LMHeadModel with the same weights.
check "reference == transformers GPT2LMHeadModel (float64)" python3 tests/reference/gpt2_ref.py \
  "$TMPDIR/g_fused/config.json" "$TMPDIR/hf_check.safetensors" --hf

# A wider model exercises the head dims and tiles the tiny one does not (d = 64, T = 256, N = 1024).
w="$TMPDIR/wide"
check "gen wider config" bin/gen specs/gpt2_tiny.lua --set model.vocab_size=1000 --set model.d_model=256 \
  --set model.n_head=4 --set model.seq_len=256 --set train.batch_size=4 -o "$w"
check "GPU vs CPU op by op, d=64 T=256" $RT "$w/model.ptx" --check
w2="$TMPDIR/wide128"
check "gen head dim 128, T not a tile multiple" bin/gen specs/gpt2_tiny.lua --set model.vocab_size=700 \
  --set model.d_model=256 --set model.n_head=2 --set model.seq_len=200 --set train.batch_size=2 -o "$w2"
check "GPU vs CPU op by op, d=128 T=200" $RT "$w2/model.ptx" --check

# Determinism: the same run twice gives bit-identical losses.
t="$TMPDIR/det"
bin/gen specs/gpt2_tiny.lua --set model.vocab_size=500 --set train.steps=30 -o "$t" >/dev/null 2>&1
det() {
  local a b
  a=$($RT "$t/model.ptx" --train --steps 30 --log-every 1 2>&1 | grep -oE 'loss [0-9.]+') || return 1
  b=$($RT "$t/model.ptx" --train --steps 30 --log-every 1 2>&1 | grep -oE 'loss [0-9.]+') || return 1
  [ -n "$a" ] && [ "$a" = "$b" ] || { echo "run 1: $a"; echo "run 2: $b"; return 1; }
}
check "GPU training is deterministic (two runs, identical losses)" det

# Real size: GPT-2 124M trains (loss falls from ~ln V on the synthetic stream, no NaN).
big="$TMPDIR/g124"
check "gen gpt2_124m" bin/gen specs/gpt2_124m.lua --set train.warmup_steps=10 -o "$big"
falls() {
  local log first last
  log=$($RT "$big/model.ptx" --train --steps 60 --log-every 10 2>&1) || { echo "$log"; return 1; }
  echo "$log" | tail -3
  first=$(grep -m1 -oE 'loss [0-9.]+' <<<"$log" | awk '{print $2}')
  last=$(grep -oE 'loss [0-9.]+' <<<"$log" | tail -1 | awk '{print $2}')
  awk -v f="$first" -v l="$last" 'BEGIN { exit !(f > 0 && l < 0.8 * f) }'
}
check "gpt2_124m trains on the GPU (loss falls > 20% in 60 steps)" falls
check "gpt2_124m KV-cache decoding == forward pass logits (T=1024, rel L2 <= 2e-2)" $RT "$big/model.ptx" --decode-check
# Real data on the GPU: a resumed run repeats the uninterrupted one bit for bit, and a checkpoint is a
# Hugging Face GPT-2 whose logits (transformers' GPT2LMHeadModel) equal the runtime's within bf16.
# The shards are written here (a learnable token stream), so neither the tokenizer nor a corpus is needed.
gd="$TMPDIR/gdata"
python3 - "$gd" <<'PY'
import os, struct, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
def shard(path, n, seed):
    x, prev, toks = seed, 0, []
    for i in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        prev = 50256 if i % 200 == 0 else (prev * 31 + (x >> 61)) % 5000
        toks.append(prev)
    hdr = struct.pack("<3i", 20240520, 1, n) + b"\0" * (1024 - 12)
    with open(path, "wb") as f:
        f.write(hdr + struct.pack(f"<{n}H", *toks))
shard(os.path.join(d, "train_000000.bin"), 60000, 1)
shard(os.path.join(d, "val_000000.bin"), 6000, 2)
PY
gr="$TMPDIR/gres"
check "gen tiny for the real-data tests" bin/gen specs/gpt2_tiny.lua --set train.steps=20 --set train.warmup_steps=3 -o "$gr"
GTRAIN=(--train --steps 20 --log-every 1 --data "$gd/train_*.bin" --eval-every 10 --eval-batches 2 --save-every 10 --no-sample)
gpu_resume() {
  local a b log
  log=$($RT "$gr/model.ptx" "${GTRAIN[@]}" --run-dir "$TMPDIR/gA" 2>&1) || { echo "$log" | tail -5; return 1; }
  cp -r "$TMPDIR/gA" "$TMPDIR/gB" && rm -rf "$TMPDIR/gB/ckpt/step_000020"
  log=$($RT "$gr/model.ptx" "${GTRAIN[@]}" --run-dir "$TMPDIR/gB" --resume 2>&1) || { echo "$log" | tail -5; return 1; }
  grep -q 'resume: .*step_000010' <<<"$log" || { echo "did not resume from step 10"; return 1; }
  a=$(grep -oE '"step": [0-9]+, "train_loss": [^,]+' "$TMPDIR/gA/metrics.jsonl")
  b=$(grep -oE '"step": [0-9]+, "train_loss": [^,]+' "$TMPDIR/gB/metrics.jsonl")
  [ "$(wc -l <<<"$a")" -eq 20 ] && [ "$a" = "$b" ] || { diff <(echo "$a") <(echo "$b"); return 1; }
}
check "--resume on the GPU: losses bit-identical to the uninterrupted run" gpu_resume
check "runtime logits of the checkpoint (--logits)" $RT "$gr/model.ptx" --logits "$gd/val_000000.bin" --run-dir "$TMPDIR/gA" \
  --out "$TMPDIR/glogits.safetensors"
check "checkpoint loads in transformers' GPT2LMHeadModel with the runtime's logits (bf16: rel L2 <= 2e-2, loss 1%)" \
  python3 tests/hf_check.py "$TMPDIR/gA/ckpt/step_000020" "$TMPDIR/glogits.safetensors" --tol 2e-2 --loss-tol 1e-2 \
  --require-transformers
summary
