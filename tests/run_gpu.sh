#!/usr/bin/env bash
# tests/run_gpu.sh — the GPU tests (`make test-gpu`, on the GPU machine): kernels against CPU
# references, the GPU backend against the PyTorch goldens and op by op against the CPU backend,
# determinism, and a short real-size training run.
#   GPU_PARTS   which parts run (default all): base (foundation), data (issue 3: resume, HF GPT-2
#               checkpoints), vocab (issue 4: attention kernels, every golden, transformers, SWA-MLA)
#               decode (the KV-cache program of every attention variant), parscale (issue 5: kernels, goldens,
#               op by op, Qwen2 import/export against transformers), hf (goldens made by transformers itself:
#               GPT-2, Llama GQA/MQA, Qwen2 = ParScale P = 1, DeepseekV3 MLA — logits and every gradient, both backends)
#   GOLDENS     vocab: only these golden names (default: every line of tests/golden/goldens.txt but ps_*)
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
export TMPDIR=${TMPDIR_GPU:-$(mktemp -d)}
mkdir -p "$TMPDIR" || exit 1
RT=bin/runtime
GOLDEN=tests/golden/gpt2_tiny.safetensors
GOLDEN_SET="--set model.vocab_size=500 --set train.batch_size=2"

GPU_PARTS=${GPU_PARTS:-"base data vocab decode parscale hf"}
part() { case " $GPU_PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

check "GPU present" nvidia-smi -L
# Tolerance: 2e-2 relative L2 per tensor, with three stated exceptions. ReLU's derivative is a step: a
# pre-activation within bf16 rounding of 0 (about 2^-9 ≈ 0.2% of them) takes the other branch than in
# float64, and the bias and norm gradients above the MLP are sums over 64 rows that cancel to ~1/8 of
# their terms, so they move by ~√0.002·8 ≈ 4-9% (measured on an H100: 4-9e-2; every smooth MLP stays
# under 2e-2). DyT's α gradient of the final norm is one scalar Σ over every element, with the same
# cancellation (6.5e-2). Those cases get 1e-1, and each is also checked op by op against the CPU
# (each op fed the GPU's own inputs, so no mask flips) at the usual tolerances.
gpu_tol() { case "$1" in abl_relu|scaletrain_tiny|dyt) echo 1e-1 ;; *) echo 2e-2 ;; esac; }
# ParScale with P > 1: the aggregation's two bias gradients are Σ over every row of
# da_p = (1−ε)·σ_p·(g_p − Σ_r σ_r·g_r), g_p = dy·h_p — a difference between replicas that are alike, taken
# from bf16 h and dy, then summed over rows that cancel. Measured on an H100 (prefix std 0.5): 1.6-2.4e-2,
# every other tensor of those cases ≤ 1.2e-2. Those two tensors alone get 5e-2; the op-by-op check of
# ps_p4_cra (below) holds ps_aggregate_bwd to the usual tolerance on the GPU's own inputs. With the
# backbone frozen (ps_p2_freeze) the aggregator's weight gradients are the same cancelling sums, now
# the largest gradients left: measured 2.0e-2 (fc1) and 2.3e-2 (fc2) on an H100, so they get 5e-2 too.
gpu_tol_for() {
  local agg="--tol-for grad.parscale.agg.fc1.bias=5e-2 --tol-for grad.parscale.agg.fc2.bias=5e-2"
  case "$1" in
    ps_p[0-9]*freeze*) echo "$agg --tol-for grad.parscale.agg.fc1.weight=5e-2 --tol-for grad.parscale.agg.fc2.weight=5e-2" ;;
    ps_p[0-9]*) echo "$agg" ;;
  esac
}
# gpu_goldens: every golden of tests/golden/goldens.txt that `wanted` picks (GOLDEN_SET vocab: all but ps_*,
# or only GOLDENS; GOLDEN_SET parscale: the ps_* cases), generated 8 at a time (NVRTC is single-threaded),
# then compared one by one.
gen_golden() {  # NAME SPEC SETS...: the golden's program in $TMPDIR/gv_NAME (log in .log)
  local name=$1 spec=$2; shift 2
  local args=() kv
  for kv in "$@"; do args+=(--set "$kv"); done
  bin/gen "$spec" "${args[@]}" -o "$TMPDIR/gv_$name" >"$TMPDIR/gv_$name.log" 2>&1
}
export -f gen_golden; export TMPDIR
wanted() {
  case "$1" in ps_*) [ "${GOLDEN_SET:-vocab}" = parscale ]; return ;; esac
  [ "${GOLDEN_SET:-vocab}" = vocab ] || return 1
  [ -z "${GOLDENS:-}" ] && return 0; case " $GOLDENS " in *" $1 "*) return 0 ;; esac; return 1
}
gpu_goldens() {
grep -vE '^[[:space:]]*(#|$)' tests/golden/goldens.txt | while read -r n rest; do wanted "$n" && echo "$n $rest"; done | xargs -P 8 -L 1 bash -c 'gen_golden "$@"' _
while read -r name spec sets; do
  case "$name" in ''|'#'*) continue ;; esac
  wanted "$name" || continue
  if [ -f "$TMPDIR/gv_$name/model.ptx" ]; then
    tol=$(gpu_tol "$name")
    check "GPU golden $name vs PyTorch float64 (bf16: rel L2 <= $tol, losses <= 1%)" \
      $RT "$TMPDIR/gv_$name/model.ptx" --golden "tests/golden/$name.safetensors" --tol "$tol" --loss-tol 1e-2 $(gpu_tol_for "$name")
    [ "$tol" = 2e-2 ] || check "GPU vs CPU op by op, $name" $RT "$TMPDIR/gv_$name/model.ptx" --check
  else
    notok "GPU golden $name: gen" "$(tail -5 "$TMPDIR/gv_$name.log")"
  fi
done < tests/golden/goldens.txt
}

kernel_test() { # NAME BINARY ARGS...: a standalone kernel test (built with make BINARY, needs nvcc)
  local name=$1 bin=$2; shift 2
  if [ -x "bin/$bin" ]; then check "$name" "bin/$bin" "$@"
  else notok "$name" "bin/$bin missing: build it with 'make bin/$bin' (needs nvcc)"; fi
}
if part base; then
if [ -x bin/test_kernels ]; then
  check "kernel tests (each kernel vs a CPU double reference)" bin/test_kernels
else
  notok "kernel tests" "bin/test_kernels missing: build it with 'make bin/test_kernels' (needs nvcc)"
fi

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
fi # base

if part data; then
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
fi # data

# ---- Issue 4 on the GPU: the generalized attention kernels, every golden, transformers, a real-size SWA-MLA.
if part vocab; then
kernel_test "generalized attention kernels (each variant, prefixes too, vs a CPU double reference)" test_attention_gen --no-bench
GOLDEN_SET=vocab gpu_goldens
if [ -z "${GOLDENS:-}" ]; then
check "GPU vs CPU op by op, swamla_tiny golden" $RT "$TMPDIR/gv_swamla_tiny/model.ptx" --check
check "GPU vs CPU op by op, GQA + SWA at T=50" $RT "$TMPDIR/gv_swa_t50_gqa/model.ptx" --check
# Real head dims (SWA d 64; MLA nope 128 + rope 64, v 128) with tiles that straddle the window.
sw="$TMPDIR/swamla_real"
check "gen SWA-MLA with the real head dims" bin/gen specs/swamla_tiny.lua --set model.d_model=256 --set model.n_head=4 \
  --set model.seq_len=200 --set model.swa_window=70 --set model.swa_sink=4 --set model.vocab_size=1000 \
  --set model.mla.kv_lora_rank=64 --set model.mla.qk_nope_head_dim=128 --set model.mla.qk_rope_head_dim=64 \
  --set model.mla.v_head_dim=128 --set train.batch_size=2 -o "$sw"
check "GPU vs CPU op by op, SWA-MLA real head dims (T=200, W=70)" $RT "$sw/model.ptx" --check
check "decoder reference == transformers GPT2 / Llama / Qwen2 / DeepseekV3 (float64)" \
  python3 tests/reference/hf_crosscheck.py --device cpu
ss="$TMPDIR/swamla_small"
check "gen swamla_small" bin/gen specs/swamla_small.lua --set train.warmup_steps=10 --set train.batch_size=4 -o "$ss"
falls_ss() {
  local log first last
  log=$($RT "$ss/model.ptx" --train --steps 40 --log-every 10 2>&1) || { echo "$log" | tail -5; return 1; }
  echo "$log" | tail -2
  first=$(grep -m1 -oE 'loss [0-9.]+' <<<"$log" | awk '{print $2}')
  last=$(grep -oE 'loss [0-9.]+' <<<"$log" | tail -1 | awk '{print $2}')
  awk -v f="$first" -v l="$last" 'BEGIN { exit !(f > 0 && l < 0.8 * f) }'
}
check "swamla_small trains on the GPU (loss falls > 20% in 40 steps)" falls_ss
fi # all goldens
fi # vocab

# ---- The KV-cache decode program of every attention variant (attn_decode).
if part decode; then
kernel_test "attn_decode kernel == CPU op (GQA, RoPE both layouts, ALiBi, SWA + sinks, MLA 192/128)" test_decode
dec_check() { # NAME SPEC SETS...: gen, then --decode-check on the GPU
  local name=$1 spec=$2; shift 2
  local args=() kv
  for kv in "$@"; do args+=(--set "$kv"); done
  if out=$(bin/gen "$spec" "${args[@]}" -o "$TMPDIR/dec_$name" 2>&1); then
    check "GPU KV-cache decoding == forward pass logits, $name (rel L2 <= 2e-2)" $RT "$TMPDIR/dec_$name/model.ptx" --decode-check
  else notok "gen for decode $name" "$out"; fi
}
dec_check swamla_tiny specs/swamla_tiny.lua model.vocab_size=250 model.mlp_hidden=64 model.swa_window=8 model.swa_sink=2 train.batch_size=2
dec_check rope_gqa_T256 specs/ablation_rope.lua model.attention=gqa model.n_kv_head=2 model.n_layer=2 model.seq_len=256 train.batch_size=2
dec_check alibi specs/ablation_alibi.lua model.n_layer=2 model.seq_len=256 train.batch_size=2
dec_check swamla_small_3l specs/swamla_small.lua model.n_layer=3 train.batch_size=1
dec_check qwen2_p1 specs/parscale_tiny.lua parscale.n=1
# ParScale P > 1: the P streams batched, prefixes from the parameters, the aggregation before the head
dec_check ps_p4 specs/parscale_tiny.lua parscale.n=4 parscale.prefix_std=0.5
dec_check ps_p4_cra specs/parscale_cross_attn_tiny.lua parscale.n=4 parscale.prefix_std=0.5
dec_check ps_basic_p8 specs/parscale_basic.lua parscale.n=8 model.seq_len=256 train.batch_size=1
fi # decode

# ---- ParScale (issue 5): kernels, goldens (P = 1, 2, 4; cross-replica attention; frozen backbone; window;
# accumulation), op by op, the Qwen2 import/export against transformers, and the 0.5B shape trains.
if part parscale; then
kernel_test "ParScale kernels (replicate, interleave, prefix reduce, cra, aggregate) vs a CPU double reference" test_parscale --no-bench
kernel_test "attention with learned prefixes (NPRE > 0) vs a CPU double reference" test_attention_gen --only pre
kernel_test "cross-entropy at Qwen2's vocabulary (streamed rows)" test_kernels --xent
GOLDEN_SET=parscale gpu_goldens
check "GPU vs CPU op by op, P = 4 with cross-replica attention" $RT "$TMPDIR/gv_ps_p4_cra/model.ptx" --check
check "Qwen2 import (GPU and CPU) and export == transformers Qwen2ForCausalLM" python3 tests/reference/qwen2_roundtrip.py
pb="$TMPDIR/ps_basic"
check "gen parscale_basic (Qwen2-0.5B shape, P = 4), T = 1024, B = 1" bin/gen specs/parscale_basic.lua \
  --set model.seq_len=1024 --set train.batch_size=1 --set train.warmup_steps=5 -o "$pb"
falls_ps() {
  local log first last
  log=$($RT "$pb/model.ptx" --train --steps 30 --log-every 10 2>&1) || { echo "$log" | tail -5; return 1; }
  echo "$log" | tail -2
  first=$(grep -m1 -oE 'loss [0-9.]+' <<<"$log" | awk '{print $2}')
  last=$(grep -oE 'loss [0-9.]+' <<<"$log" | tail -1 | awk '{print $2}')
  awk -v f="$first" -v l="$last" 'BEGIN { exit !(f > 0 && l < 0.8 * f) }'
}
check "parscale_basic trains on the GPU (loss falls > 20% in 30 steps)" falls_ps
fi # parscale

# ---- transformers as the reference (issues 4 and 5): the model classes of tests/golden/hf_goldens.txt with our
# weights give the golden's logits, loss and every gradient (tests/reference/hf_golden.py, float64); the CPU backend
# must match within 1e-4, the GPU within bf16 tolerance.
if part hf; then
. tests/hf_golden.sh
hf_golden_cases transformers python3 cpu gpu
fi # hf

summary
