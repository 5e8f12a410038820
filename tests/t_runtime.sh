# tests/t_runtime.sh — the runtime on the CPU backend: unit tests, goldens against the PyTorch
# reference, finite-difference gradients, training, and clear errors on bad input.
RT=bin/runtime
GOLDEN=tests/golden/gpt2_tiny.safetensors
# The golden configuration (see tests/golden/README.md): gpt2_tiny with a 500-token vocabulary
# (so logits stay small enough to commit) and batch 2.
GOLDEN_SET="--set model.vocab_size=500 --set train.batch_size=2"

check "runtime unit tests (plan parser, safetensors, init, schedule, CPU ops)" bin/test_runtime_cpu

gdir="$TMPDIR/golden_fused"
check "gen golden config (fused)" bin/gen specs/gpt2_tiny.lua $GOLDEN_SET -o "$gdir" --no-compile
check "CPU backend matches PyTorch goldens, fused graph (rel L2 <= 1e-4)" $RT "$gdir/model.ptx" --cpu --golden $GOLDEN --tol 1e-4
udir="$TMPDIR/golden_unfused"
check "gen golden config (unfused)" bin/gen specs/gpt2_tiny.lua $GOLDEN_SET -o "$udir" --no-compile --no-fuse
check "CPU backend matches PyTorch goldens, unfused graph (rel L2 <= 1e-4)" $RT "$udir/model.ptx" --cpu --golden $GOLDEN --tol 1e-4
check "derived gradients match finite differences (CPU)" $RT "$gdir/model.ptx" --cpu --gradcheck
adir="$TMPDIR/golden_accum"
check "gen with gradient accumulation" bin/gen specs/gpt2_tiny.lua --set model.vocab_size=500 --set train.batch_size=1 \
  --set train.grad_accum=2 -o "$adir" --no-compile
check "grad_accum=2 x B=1 matches the B=2 goldens" $RT "$adir/model.ptx" --cpu --golden $GOLDEN --tol 1e-4

# Training on the synthetic stream: the loss must fall well below its starting value.
tdir="$TMPDIR/train"
bin/gen specs/gpt2_tiny.lua --set model.vocab_size=500 --set train.steps=60 --set train.warmup_steps=5 \
  -o "$tdir" --no-compile >/dev/null 2>&1
train_falls() {
  local log first last
  log=$($RT "$tdir/model.ptx" --cpu --train --steps 60 --log-every 1 2>&1) || { echo "$log"; return 1; }
  first=$(grep -m1 -oE 'loss [0-9.]+' <<<"$log" | awk '{print $2}')
  last=$(grep -oE 'loss [0-9.]+' <<<"$log" | tail -1 | awk '{print $2}')
  echo "first $first last $last"
  awk -v f="$first" -v l="$last" 'BEGIN { exit !(f > 0 && l < 0.8 * f) }'
}
check "CPU training: loss falls by more than 20% in 60 steps" train_falls

# Bad input: one clear line and a non-zero exit.
check_error "runtime: missing PTX path" 1 'nope/model\.(ptx|plan)' $RT "$TMPDIR/nope/model.ptx" --cpu --train
cp -r "$gdir" "$TMPDIR/corrupt"
head -c 2000 "$gdir/model.plan" > "$TMPDIR/corrupt/model.plan"
check_error "runtime: truncated plan" 1 'model\.plan' $RT "$TMPDIR/corrupt/model.ptx" --cpu --train
sed '1s/.*/moonforge-plan 99/' "$gdir/model.plan" > "$TMPDIR/corrupt/model.plan"
check_error "runtime: wrong plan version" 1 'model\.plan:1:' $RT "$TMPDIR/corrupt/model.ptx" --cpu --train
sed -E '0,/=act:[0-9]+/s//=act:99999/' "$gdir/model.plan" > "$TMPDIR/corrupt/model.plan"
check_error "runtime: plan referencing a missing buffer" 1 'model\.plan:[0-9]+:.*99999' $RT "$TMPDIR/corrupt/model.ptx" --cpu --train
check_error "runtime: missing golden file" 1 'nope\.safetensors' $RT "$gdir/model.ptx" --cpu --golden "$TMPDIR/nope.safetensors"
head -c 100 $GOLDEN > "$TMPDIR/trunc.safetensors"
check_error "runtime: truncated golden file" 1 'trunc\.safetensors' $RT "$gdir/model.ptx" --cpu --golden "$TMPDIR/trunc.safetensors"
bin/gen specs/gpt2_tiny.lua --set model.vocab_size=500 --set model.d_model=32 --set model.n_head=2 \
  -o "$TMPDIR/other" --no-compile >/dev/null 2>&1
check_error "runtime: golden from another spec names the tensor" 1 'wte\.weight' \
  $RT "$TMPDIR/other/model.ptx" --cpu --golden $GOLDEN

# The decode program (KV cache, one token at a time) reproduces the forward pass's logits.
check "KV-cache decoding == forward pass logits, fused (CPU, rel L2 <= 1e-5)" $RT "$gdir/model.ptx" --cpu --decode-check
check "KV-cache decoding == forward pass logits, unfused (CPU)" $RT "$udir/model.ptx" --cpu --decode-check
