# tests/t_data.sh — real data end to end on the CPU: the tokenizer, token shards and corpus
# preparation units; training on prepared shards with validation, metrics, checkpoints and a sample;
# exact resume (shards and the synthetic stream); atomic checkpoints (a save killed midway is
# ignored); the Hugging Face layout of the weights; and a clear error for each kind of bad input.
RT=bin/runtime

check "tokenizer: ids equal the npm package's JavaScript encoder, decode(encode(s)) = s" bin/test_tokenizer
check "token shards: reader/writer round trip, loader covers every window once across ranks" bin/test_shards
check "corpus preparation: text files -> train/val shards, failures leave nothing" bin/test_prepare

D=$TMPDIR/data
FORT=/usr/share/games/fortunes
check "runtime --prepare: three fortune files -> train/val shards" \
  $RT --prepare --doc-sep % --out "$D/fort" $FORT/fortunes $FORT/wisdom $FORT/science
check_error "--prepare: a missing input is named" 1 'nope\.txt' $RT --prepare --out "$D/x" "$TMPDIR/nope.txt"
unigram_ok() {
  local out
  out=$($RT --unigram --data "$D/fort/train_*.bin") || { echo "$out"; return 1; }
  echo "$out"
  grep -qE 'cross-entropy .*: [0-9]+\.[0-9]+ nats/token' <<<"$out"
}
check "--unigram: the unigram baseline of the validation shards" unigram_ok

# The tiny spec with the full GPT-2 vocabulary (shard ids go up to 50256).
M=$TMPDIR/dtiny
bin/gen specs/gpt2_tiny.lua -o "$M" --no-compile --set train.steps=20 --set train.warmup_steps=3 >/dev/null 2>&1
TRAIN=(--cpu --train --steps 20 --log-every 1 --data "$D/fort/train_*.bin" --eval-every 5 --eval-batches 2 --save-every 10)
R1=$TMPDIR/run1
train_shards() {
  local log
  log=$($RT "$M/model.ptx" "${TRAIN[@]}" --run-dir "$R1" --sample-tokens 8 2>&1) || { echo "$log"; return 1; }
  echo "$log" | tail -8
  grep -qE '^step 5/20 \| loss [0-9.]+ \| val [0-9.]+ \|.* tok/s \|.* ETA ' <<<"$log" || { echo "no progress line with val and ETA"; return 1; }
  grep -q -- '--- sample at step 20' <<<"$log" || { echo "no sample at the end"; return 1; }
  [ -f "$R1/ckpt/step_000010/state.safetensors" ] && [ -f "$R1/ckpt/step_000020/model.safetensors" ] &&
    [ -f "$R1/ckpt/step_000020/config.json" ] && [ "$(cat "$R1/ckpt/latest")" = step_000020 ] || { echo "checkpoints missing"; ls -R "$R1"; return 1; }
}
check "train on the prepared shards: progress with val and ETA, checkpoints at 10 and 20, a sample" train_shards

records_ok() {
  local n key
  n=$(wc -l <"$R1/metrics.jsonl")
  [ "$n" -eq 20 ] || { echo "metrics.jsonl has $n lines, expected 20"; return 1; }
  for key in step train_loss lr tok_per_s grad_norm ms; do
    [ "$(grep -c "\"$key\": " "$R1/metrics.jsonl")" -eq 20 ] || { echo "not every line has $key"; return 1; }
  done
  [ "$(grep -c '"val_loss": [0-9]' "$R1/metrics.jsonl")" -eq 4 ] || { echo "expected val_loss at steps 5, 10, 15, 20"; return 1; }
  for key in plan source_hash spec overrides git_commit backend command start_time; do
    grep -q "\"$key\": " "$R1/meta.json" || { echo "meta.json lacks $key"; cat "$R1/meta.json"; return 1; }
  done
  grep -q '"overrides": \["train.steps=20", "train.warmup_steps=3"\]' "$R1/meta.json" || { echo "overrides not recorded"; return 1; }
  cmp -s "$R1/config.json" "$M/config.json" || { echo "config.json not copied into the run directory"; return 1; }
}
check "run records: metrics.jsonl keys on every line, val_loss where evaluated, meta.json, config.json" records_ok

# Resume: a copy of the run without its last checkpoint, plus what a save killed midway leaves (a
# .tmp-* directory) and a step directory without its state, continues from step 10 and must give
# the uninterrupted run's losses.
R2=$TMPDIR/run2
cp -r "$R1" "$R2"
rm -rf "$R2/ckpt/step_000020"
printf 'step_000010\n' >"$R2/ckpt/latest"
mkdir -p "$R2/ckpt/.tmp-step_000015.4242" "$R2/ckpt/step_000030"
head -c 5000 "$R1/ckpt/step_000010/state.safetensors" >"$R2/ckpt/.tmp-step_000015.4242/state.safetensors"
cp "$R1/ckpt/step_000010/model.safetensors" "$R2/ckpt/step_000030/"
# the losses of steps 11..20 as "step loss" lines
losses_after10() { grep -oE '"step": [0-9]+, "train_loss": [^,]+' "$1" | awk -F'[:,]' '$2 > 10 { print $2, $4 }'; }
resume_equal() {
  local log a b
  log=$($RT "$M/model.ptx" "${TRAIN[@]}" --run-dir "$R2" --resume --no-sample 2>&1) || { echo "$log"; return 1; }
  grep -q 'resume: .*step_000010 (step 10)' <<<"$log" || { echo "did not resume from step 10:"; echo "$log" | head; return 1; }
  a=$(losses_after10 "$R1/metrics.jsonl")
  b=$(losses_after10 "$R2/metrics.jsonl")
  [ "$(wc -l <<<"$b")" -eq 10 ] || { echo "resumed run logged $(wc -l <<<"$b") steps after 10"; return 1; }
  paste <(echo "$a") <(echo "$b") | awk '{ d = $2 - $4; if (d < 0) d = -d; if (d > 1e-6 * $2) { print "step " $1 ": " $2 " vs " $4; bad = 1 } } END { exit bad }' || return 1
  [ "$a" = "$b" ] && echo "losses of steps 11..20 are bit-identical"
  [ "$(wc -l <"$R2/metrics.jsonl")" -eq 20 ] || { echo "metrics.jsonl of the resumed run has $(wc -l <"$R2/metrics.jsonl") lines"; return 1; }
}
check "--resume on the CPU: steps 11..20 equal the uninterrupted run's (rel <= 1e-6)" resume_equal
killed_save_ignored() {
  [ ! -e "$R2/ckpt/.tmp-step_000015.4242" ] || { echo "the killed save's temporary directory is still there"; return 1; }
  [ -f "$R2/ckpt/step_000020/state.safetensors" ] && [ "$(cat "$R2/ckpt/latest")" = step_000020 ]
}
check "a save killed midway (.tmp-*) and an incomplete step dir are ignored; the next save cleans up" killed_save_ignored

# The same on the synthetic stream (its position is part of the state too).
S=$TMPDIR/synth
bin/gen specs/gpt2_tiny.lua -o "$S" --no-compile --set model.vocab_size=500 --set train.steps=12 >/dev/null 2>&1
synth_resume() {
  $RT "$S/model.ptx" --cpu --train --log-every 1 --save-every 6 --run-dir "$S/a" >/dev/null 2>&1 || return 1
  cp -r "$S/a" "$S/b" && rm -rf "$S/b/ckpt/step_000012"
  $RT "$S/model.ptx" --cpu --train --log-every 1 --save-every 6 --run-dir "$S/b" --resume >/dev/null 2>&1 || return 1
  local a b
  a=$(grep -oE '"step": [0-9]+, "train_loss": [^,]+' "$S/a/metrics.jsonl")
  b=$(grep -oE '"step": [0-9]+, "train_loss": [^,]+' "$S/b/metrics.jsonl")
  [ -n "$a" ] && [ "$a" = "$b" ] || { diff <(echo "$a") <(echo "$b"); return 1; }
}
check "--resume on the synthetic stream: bit-identical losses" synth_resume

# Weights: the Hugging Face export read back with --init-from gives the same logits as the resume
# state's master weights; and (with PyTorch here) the files mean what Hugging Face's GPT-2 means.
VAL=$(ls "$D"/fort/val_*.bin | head -1)
logits_same() {
  $RT "$M/model.ptx" --cpu --logits "$VAL" --run-dir "$R1" --out "$TMPDIR/l_state.safetensors" || return 1
  $RT "$M/model.ptx" --cpu --logits "$VAL" --init-from "$R1/ckpt/step_000020" --out "$TMPDIR/l_hf.safetensors" || return 1
  cmp "$TMPDIR/l_state.safetensors" "$TMPDIR/l_hf.safetensors"
}
check "--init-from the Hugging Face export == the checkpoint's master weights (identical logits)" logits_same
if /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
  check "checkpoint in Hugging Face GPT-2 layout: logits equal a float64 HF-convention forward (rel L2 <= 1e-5)" \
    /usr/bin/python3 tests/hf_check.py "$R1/ckpt/step_000020" "$TMPDIR/l_state.safetensors" --tol 1e-5
else
  ok "checkpoint in Hugging Face GPT-2 layout (skipped: no PyTorch for /usr/bin/python3)"
fi
generate_ok() {
  local a b
  a=$($RT "$M/model.ptx" --cpu --generate --run-dir "$R1" --prompt "The" --sample-tokens 6 --temperature 0 2>&1) || { echo "$a"; return 1; }
  b=$($RT "$M/model.ptx" --cpu --generate --run-dir "$R1" --prompt "The" --sample-tokens 6 --temperature 0 2>&1) || return 1
  echo "$a"
  grep -q -- "--- sample from $R1/ckpt/step_000020" <<<"$a" && grep -q '^The' <<<"$a" && [ "$a" = "$b" ]
}
check "--generate from the latest checkpoint (greedy: repeatable)" generate_ok

# Bad input: one clear line, a non-zero exit, and no run records written.
BAD=$TMPDIR/bad
mkdir -p "$BAD"
no_records() { [ ! -e "$TMPDIR/badrun" ] || { echo "a failed run wrote $TMPDIR/badrun"; return 1; }; }
check_error "--data: a glob that matches nothing" 1 "no files match '$BAD/none_\*\.bin'" \
  $RT "$M/model.ptx" --cpu --train --data "$BAD/none_*.bin" --run-dir "$TMPDIR/badrun"
: >"$BAD/empty_000000.bin"
check_error "--data: an empty shard file" 1 'empty_000000\.bin: short header' \
  $RT "$M/model.ptx" --cpu --train --data "$BAD/empty_*.bin" --run-dir "$TMPDIR/badrun"
head -c 1024 "$D/fort/train_000000.bin" >"$BAD/zero_000000.bin"
printf '\0\0\0\0' | dd of="$BAD/zero_000000.bin" bs=1 seek=8 conv=notrunc 2>/dev/null
check_error "--data: a shard with no tokens" 1 'zero_000000\.bin: empty shard' \
  $RT "$M/model.ptx" --cpu --train --data "$BAD/zero_*.bin" --run-dir "$TMPDIR/badrun"
cp "$D/fort/train_000000.bin" "$BAD/magic_000000.bin"
printf 'XXXX' | dd of="$BAD/magic_000000.bin" bs=1 seek=0 conv=notrunc 2>/dev/null
check_error "--data: wrong magic number" 1 'magic_000000\.bin: wrong magic' \
  $RT "$M/model.ptx" --cpu --train --data "$BAD/magic_*.bin" --run-dir "$TMPDIR/badrun"
head -c 9000 "$D/fort/train_000000.bin" >"$BAD/trunc_000000.bin"
check_error "--data: truncated shard" 1 'trunc_000000\.bin: size mismatch.*truncated' \
  $RT "$M/model.ptx" --cpu --train --data "$BAD/trunc_*.bin" --run-dir "$TMPDIR/badrun"
V500=$TMPDIR/v500
bin/gen specs/gpt2_tiny.lua -o "$V500" --no-compile --set model.vocab_size=500 >/dev/null 2>&1
check_error "--data: a token id >= the vocabulary" 1 'train_000000\.bin: token id [0-9]+ .* is >= vocab 500' \
  $RT "$V500/model.ptx" --cpu --train --steps 2 --data "$D/fort/train_*.bin" --run-dir "$TMPDIR/badrun"
check "failed runs wrote no run records" no_records
check_error "--val-data: a glob that matches nothing" 1 "no files match" \
  $RT "$M/model.ptx" --cpu --train --data "$D/fort/train_*.bin" --val-data "$BAD/v_*.bin" --run-dir "$TMPDIR/badrun"

# Checkpoints: corrupt, truncated, from another spec, missing, and a fresh run over an old one.
C=$TMPDIR/ckbad
mkdir -p "$C/flip/ckpt" "$C/trunc/ckpt"
cp -r "$R1/ckpt/step_000010" "$C/flip/ckpt/"
size=$(stat -c %s "$C/flip/ckpt/step_000010/state.safetensors")
printf '\x7f' | dd of="$C/flip/ckpt/step_000010/state.safetensors" bs=1 seek=$((size - 1000)) conv=notrunc 2>/dev/null
check_error "--resume: a corrupt checkpoint (a flipped byte)" 1 'state\.safetensors: data hash .* corrupt' \
  $RT "$M/model.ptx" "${TRAIN[@]}" --run-dir "$C/flip" --resume
mkdir -p "$C/trunc/ckpt/step_000010"
head -c $((size / 2)) "$R1/ckpt/step_000010/state.safetensors" >"$C/trunc/ckpt/step_000010/state.safetensors"
check_error "--resume: a truncated checkpoint" 1 'step_000010/state\.safetensors: .*(exceed|beyond|truncat|size|short)' \
  $RT "$M/model.ptx" "${TRAIN[@]}" --run-dir "$C/trunc" --resume
O=$TMPDIR/dother
bin/gen specs/gpt2_tiny.lua -o "$O" --no-compile --set model.d_model=32 --set model.n_head=2 >/dev/null 2>&1
check_error "--resume: a checkpoint from a different spec names the tensor" 1 \
  'tensor master\.h\.0\.attn\.c_attn\.weight is F32 \[192,64\], this plan.*different spec' \
  $RT "$O/model.ptx" --cpu --train --data "$D/fort/train_*.bin" --run-dir "$R1" --resume
check_error "--init-from: Hugging Face weights of a different shape name the tensor" 1 \
  'model\.safetensors: tensor transformer\.h\.0\.attn\.c_attn\.weight has shape \[64,192\], this plan needs \[32,96\]' \
  $RT "$O/model.ptx" --cpu --train --init-from "$R1/ckpt/step_000020"
check_error "--resume without a checkpoint" 1 'no checkpoint in' \
  $RT "$M/model.ptx" "${TRAIN[@]}" --run-dir "$TMPDIR/emptyrun" --resume
check_error "a fresh run refuses a run directory that holds checkpoints" 1 'already holds checkpoints.*--resume' \
  $RT "$M/model.ptx" "${TRAIN[@]}" --run-dir "$R1"
