# tests/t_qwen2_import.sh — Hugging Face Qwen2 in and out (issue 5), on the CPU backend.
# tests/reference/qwen2_hf.py writes small random Qwen2 directories (struct + json safetensors; bf16, f16
# or f32; one file or shards) and computes their logits in float64 straight from the Hugging Face names.
# Each is imported (`gen --import-hf` + `runtime --init-from`), its CPU logits must match that reference
# (relative L2 ≤ 1e-4), and `runtime --export-hf` must give back every tensor bit for bit in the same
# dtype. Then bad inputs must fail naming the tensor, field or file.
QPY=/usr/bin/python3
QH=tests/reference/qwen2_hf.py
QD="$TMPDIR/qwen2"
mkdir -p "$QD"

if ! $QPY -c 'import torch, numpy' >/dev/null 2>&1; then
  notok "Qwen2 import: /usr/bin/python3 has no torch/numpy (apt-get install python3-torch): nothing below can run"
else

# one round trip: NAME, the sets of `gen --import-hf` (besides batch 2 × seq 32), then qwen2_hf.py make options
qwen2_roundtrip() {
  local name=$1 sets=$2; shift 2
  local hf="$QD/$name" spec="$QD/$name.lua" out="$QD/${name}_out" args=() out_txt
  for kv in $sets; do args+=(--set "$kv"); done
  if ! out_txt=$($QPY $QH make "$hf" "$@" 2>&1); then notok "qwen2 $name: make the Hugging Face directory" "$out_txt"; return; fi
  if ! out_txt=$(bin/gen --import-hf "$hf" --write-spec "$spec" --set train.batch_size=2 --set model.seq_len=32 "${args[@]}" \
      -o "$out" --no-compile 2>&1); then
    notok "qwen2 $name: gen --import-hf" "$out_txt"; return
  fi
  ok "qwen2 $name: gen --import-hf wrote $spec and generated it"
  check "qwen2 $name: CPU logits from --init-from" bin/runtime "$out/model.ptx" --cpu --init-from "$hf" \
    --logits "$QD/tok.bin" --out "$QD/${name}_got.safetensors"
  check "qwen2 $name: float64 reference logits over the Hugging Face names" \
    $QPY $QH logits "$hf" "$QD/tok.bin" "$QD/${name}_ref.safetensors" --batch 2 --seq 32
  check "qwen2 $name: logits match the reference (rel L2 <= 1e-4)" \
    $QPY $QH compare "$QD/${name}_ref.safetensors" "$QD/${name}_got.safetensors" --tol 1e-4
  check "qwen2 $name: --export-hf" bin/runtime "$out/model.ptx" --init-from "$hf" --export-hf "$QD/${name}_exp"
  check "qwen2 $name: exported tensors equal the originals bit for bit (same dtype)" $QPY $QH same "$hf" "$QD/${name}_exp"
}

$QPY $QH shard "$QD/tok.bin" --vocab 300 --tokens 200
qwen2_roundtrip bf16_gqa_untied "train.warmup_steps=0 train.lr=1e-3" --dtype bf16 --kv-heads 2
qwen2_roundtrip f16_mqa_tied_sharded "" --dtype f16 --kv-heads 1 --tie 1 --shards 3 --theta 10000 --eps 1e-5
qwen2_roundtrip f32_mha_sharded "" --dtype f32 --kv-heads 4 --shards 2 --layers 3 --seed 5

# the spec says what config.json says
S="$QD/bf16_gqa_untied.lua"
check "qwen2 import: the spec has the checkpoint's shapes" \
  grep -qE 'n_kv_head = 2,' "$S"
check "qwen2 import: the spec keeps rope_theta and rms_norm_eps exactly" \
  bash -c "grep -q 'rope_base = 1000000.0,' '$S' && grep -q 'ln_eps = 1e-06,' '$S'"
check "qwen2 import: seq_len defaults to min(max_position_embeddings, 2048)" \
  bash -c "bin/gen --import-hf '$QD/bf16_gqa_untied' --write-spec '$QD/mpe.lua' && grep -q 'seq_len = 64,' '$QD/mpe.lua'"
check "qwen2 import: --set values are written into the spec" grep -q 'seq_len = 32,' "$S"

# train from the import, then export the run's checkpoint: its logits (runtime, from the checkpoint) are
# the reference's logits of the exported f32 directory
R="$QD/run"
QO="$QD/bf16_gqa_untied_out"
if out_txt=$(bin/runtime "$QO/model.ptx" --cpu --train --steps 2 --init-from "$QD/bf16_gqa_untied" --run-dir "$R" \
    --save-every 2 --log-every 0 --no-sample 2>&1); then
  check "qwen2 trained: --export-hf --run-dir (f32)" bin/runtime "$QO/model.ptx" --run-dir "$R" --export-hf "$QD/trained_exp" --export-dtype f32
  check "qwen2 trained: CPU logits from the checkpoint" bin/runtime "$QO/model.ptx" --cpu --run-dir "$R" --logits "$QD/tok.bin" \
    --out "$QD/trained_got.safetensors"
  check "qwen2 trained: reference logits of the exported directory" \
    $QPY $QH logits "$QD/trained_exp" "$QD/tok.bin" "$QD/trained_ref.safetensors" --batch 2 --seq 32
  check "qwen2 trained: exported weights give the checkpoint's logits (rel L2 <= 1e-4)" \
    $QPY $QH compare "$QD/trained_ref.safetensors" "$QD/trained_got.safetensors" --tol 1e-4
  check_error "qwen2 trained: the weights moved (the checkpoint is not the import)" 1 'FAIL' \
    $QPY $QH compare "$QD/bf16_gqa_untied_ref.safetensors" "$QD/trained_got.safetensors" --tol 1e-3
else
  notok "qwen2 trained: 2 CPU steps from the import" "$out_txt"
fi

# bad inputs: each names what is wrong
QX="$QO/model.ptx"
qbad() { # SLUG NAME REGEX MAKE-OPTIONS... : a directory made with these options must be refused by --init-from
  local name=$2 re=$3 d="$QD/bad_$1"; shift 3
  $QPY $QH make "$d" "$@" >/dev/null 2>&1
  check_error "qwen2 bad: $name" 1 "$re" bin/runtime "$QX" --cpu --init-from "$d" --logits "$QD/tok.bin" --out "$QD/bad.safetensors"
}
qbad missing "missing tensor" 'model\.safetensors: tensor model\.layers\.1\.mlp\.up_proj\.weight is missing' --drop model.layers.1.mlp.up_proj.weight
qbad missing_sh "missing tensor in shards" 'tensor model\.norm\.weight is missing \(in every shard' --drop model.norm.weight --shards 2
qbad shape "wrong shape" 'tensor model\.layers\.0\.self_attn\.k_proj\.weight has shape \[33,64\], config\.json \(and the plan [a-z0-9_]+\) make it \[32,64\]' \
  --reshape model.layers.0.self_attn.k_proj.weight
qbad f64 "unsupported dtype" 'tensor [a-z._0-9]+ has dtype F64; F32, BF16 and F16 are supported' --dtype f64
qbad extra "tensor with no place" 'tensor model\.layers\.0\.self_attn\.rope_scale has no place in the plan' --extra model.layers.0.self_attn.rope_scale
qbad kv "config: kv heads differ" 'config\.json: num_key_value_heads is 4, the plan [a-z0-9_]+ has kv heads 2' --kv-heads 4
qbad tied "config: tied differs" 'config\.json: tie_word_embeddings is true, the plan [a-z0-9_]+ has an untied lm_head\.weight' --tie 1
qbad llama "not Qwen2 (runtime)" 'config\.json: model_type "llama"; moonforge reads Hugging Face gpt2 and qwen2' --model-type llama
check_error "qwen2 bad: not Qwen2 (gen)" 2 'config\.json: model_type: "llama"; --import-hf reads Qwen2' \
  bin/gen --import-hf "$QD/bad_llama" --write-spec "$QD/bad.lua"
mkdir -p "$QD/badjson" && printf '{"model_type": "qwen2",\n "hidden_size": 64,,}\n' > "$QD/badjson/config.json"
check_error "qwen2 bad: config.json syntax (gen)" 2 'badjson/config\.json:2:20: bad JSON: expected a string key' \
  bin/gen --import-hf "$QD/badjson" --write-spec "$QD/bad.lua"
check_error "qwen2 bad: config.json syntax (runtime)" 1 'badjson/config\.json:2:20: bad JSON: expected a string key' \
  bin/runtime "$QX" --cpu --init-from "$QD/badjson" --logits "$QD/tok.bin" --out "$QD/bad.safetensors"
$QPY - "$QD/bf16_gqa_untied/config.json" "$QD/badact" <<'EOF'
import json, os, sys
c = json.load(open(sys.argv[1])); c["hidden_act"] = "gelu"; os.makedirs(sys.argv[2], exist_ok=True)
json.dump(c, open(os.path.join(sys.argv[2], "config.json"), "w"))
open(os.path.join(sys.argv[2], "model.safetensors"), "wb").close()
EOF
$QPY - "$QD/bf16_gqa_untied/config.json" "$QD/badswa" <<'EOF'
import json, os, sys
c = json.load(open(sys.argv[1])); c["layer_types"] = ["full_attention", "sliding_attention"]; os.makedirs(sys.argv[2], exist_ok=True)
json.dump(c, open(os.path.join(sys.argv[2], "config.json"), "w"))
open(os.path.join(sys.argv[2], "model.safetensors"), "wb").close()
EOF
check_error "qwen2 bad: a sliding-window layer (gen)" 2 'config\.json: layer_types: layer 1 is "sliding_attention"; only full attention' \
  bin/gen --import-hf "$QD/badswa" --write-spec "$QD/bad.lua"
check_error "qwen2 bad: hidden_act (gen)" 2 'config\.json: hidden_act: "gelu"; Qwen2.s MLP is SwiGLU' \
  bin/gen --import-hf "$QD/badact" --write-spec "$QD/bad.lua"
check_error "qwen2 bad: --import-hf without --write-spec" 2 'needs --write-spec FILE\.lua' bin/gen --import-hf "$QD/bf16_gqa_untied"
mkdir -p "$QD/noweights" && cp "$QD/bf16_gqa_untied/config.json" "$QD/noweights/"
check_error "qwen2 bad: no weights in the directory (gen)" 2 'no model\.safetensors or model\.safetensors\.index\.json' \
  bin/gen --import-hf "$QD/noweights" --write-spec "$QD/bad.lua"
check_error "qwen2 bad: no weights in the directory (runtime)" 1 'noweights: no model\.safetensors and no model\.safetensors\.index\.json' \
  bin/runtime "$QX" --cpu --init-from "$QD/noweights" --logits "$QD/tok.bin" --out "$QD/bad.safetensors"
check_error "qwen2 bad: --export-hf onto an existing directory" 1 'already exists; --export-hf writes a new directory' \
  bin/runtime "$QX" --init-from "$QD/bf16_gqa_untied" --export-hf "$QD/bf16_gqa_untied_exp"
check_error "qwen2 bad: --export-hf with nothing to export" 1 'no weights to export: .* has no checkpoint' \
  bin/runtime "$QX" --run-dir "$QD/norun" --export-hf "$QD/nothing"
check_error "qwen2 bad: --export-dtype" 1 '--export-dtype f8: expected f32, bf16 or f16' \
  bin/runtime "$QX" --init-from "$QD/bf16_gqa_untied" --export-hf "$QD/x" --export-dtype f8
check_error "qwen2 bad: a GPT-2 plan cannot load a Qwen2 directory" 1 'cannot load Hugging Face Qwen2 weights: the plan has no attn op' \
  bash -c "bin/gen specs/gpt2_tiny.lua -o '$QD/gpt2' --no-compile >/dev/null 2>&1 && bin/runtime '$QD/gpt2/model.ptx' --cpu --init-from '$QD/bf16_gqa_untied' --logits '$QD/tok.bin' --out '$QD/bad.safetensors'"
fi

# --export-hf of a GPT-2 plan: the Hugging Face GPT-2 files its checkpoints already hold
G="$QD/gpt2x"
if out_txt=$(bin/gen specs/gpt2_tiny.lua --set model.vocab_size=500 -o "$G/out" --no-compile 2>&1 &&
    bin/runtime "$G/out/model.ptx" --cpu --train --steps 1 --run-dir "$G/run" --log-every 0 --no-sample 2>&1); then
  check "gpt2 --export-hf --run-dir/ (trailing slash) writes GPT2LMHeadModel files" \
    bin/runtime "$G/out/model.ptx" --run-dir "$G/run" --export-hf "$G/exp/"
  check "gpt2 --export-hf: the same model.safetensors as the checkpoint's" \
    cmp "$G/exp/model.safetensors" "$G/run/ckpt/step_000001/model.safetensors"
  check_error "gpt2 --export-hf: bf16 refused" 1 'GPT-2 weights are written in f32 only' \
    bin/runtime "$G/out/model.ptx" --run-dir "$G/run" --export-hf "$G/exp2" --export-dtype bf16
else
  notok "gpt2 --export-hf: a 1-step run" "$out_txt"
fi

# the Qwen2 tokenizer (vocab.json + merges.txt + tokenizer_config.json): `--prepare --tokenizer DIR` must give
# the ids of tests/reference/qwen2_hf.py's encoder (Qwen2's regex in Python's re, encoder.py's BPE) for every
# document, each after <|endoftext|> (the id after vocab.json's, from tokenizer_config.json)
TK="$QD/tok"
if out_txt=$($QPY $QH tokdir "$TK" 2>&1); then
  printf "It's DON'T you'LL 2024 abc123def (hello) ...world!\n\n\nfoo.\n\nbar  baz \t qux\r\ncafé naïve 中文字 über_all __x a   b  \n  end 3.14159 the lazy dog.\n" > "$TK/doc.txt"
  : > "$TK/docs.txt"
  for i in 1 2 3 4 5 6 7 8; do # different documents (the split hashes their text), each with its reference
    { printf 'Doc %s: ' "$i"; cat "$TK/doc.txt"; } > "$TK/doc$i.txt"
    cat "$TK/doc$i.txt" >> "$TK/docs.txt"; echo "%" >> "$TK/docs.txt"
    $QPY $QH encode "$TK" "$TK/doc$i.txt" > "$TK/ref$i.txt"
  done
  check "qwen2 tokenizer: --prepare with vocab.json + merges.txt" \
    bin/runtime --prepare --tokenizer "$TK" --doc-sep % --val-fraction 0.4 --out "$TK/shards" "$TK/docs.txt"
  check "qwen2 tokenizer: every document is <|endoftext|> + the reference ids" $QPY - "$TK" <<'PYEOF'
import glob, json, os, sys
sys.path.insert(0, "tests/reference")
import qwen2_hf as Q
d = sys.argv[1]
refs = sorted([int(x) for x in open(os.path.join(d, f"ref{i}.txt"))] for i in range(1, 9))
eot = int(next(k for k, v in json.load(open(os.path.join(d, "tokenizer_config.json")))["added_tokens_decoder"].items()
               if v["content"] == "<|endoftext|>"))
docs = []
for f in sorted(glob.glob(os.path.join(d, "shards", "*.bin"))):
    t = Q.read_shard(f).tolist()
    starts = [i for i, x in enumerate(t) if x == eot]
    docs += [t[a + 1:b] for a, b in zip(starts, starts[1:] + [len(t)])]
docs = sorted(docs)
if docs != refs:
    bad = [i for i in range(min(len(docs), len(refs))) if docs[i] != refs[i]][:1] or [0]
    sys.exit(f"{len(docs)} documents (8 expected); they differ from the reference:\n got {docs[bad[0]] if docs else ''}\n ref {refs[bad[0]]}")
print(f"8 documents of {len(refs[0])} ids, eot {eot}")
PYEOF
  check "qwen2 tokenizer: prepare.json names <|endoftext|>'s id" \
    bash -c "grep -q '\"eot\": 365,' '$TK/shards/prepare.json'"
  mkdir -p "$TK/noeot" && cp "$TK/vocab.json" "$TK/merges.txt" "$TK/noeot/"
  check_error "qwen2 tokenizer: no <|endoftext|> to separate documents" 1 'has no end-of-text token' \
    bin/runtime --prepare --tokenizer "$TK/noeot" --out "$TK/shards2" "$TK/docs.txt"
else
  notok "qwen2 tokenizer: make a tokenizer directory" "$out_txt"
fi

# ParScale on an imported Qwen2: the backbone loads into a parscale.n = 2 plan (prefixes, cross-replica attention and
# the aggregation keep their init: the logits differ from P = 1's), and --export-hf refuses it
PS="$QD/p2"
if out_txt=$(bin/gen --import-hf "$QD/bf16_gqa_untied" --write-spec "$PS.lua" --set train.batch_size=2 --set model.seq_len=32 \
    --set parscale.n=2 --set parscale.cross_attn=true -o "$PS" --no-compile 2>&1); then
  check "parscale.n=2 import: the spec says family qwen2 and parscale.n = 2" \
    bash -c "grep -q 'family = \"qwen2\"' '$PS.lua' && grep -qE '^    n = 2,' '$PS.lua'"
  check "parscale.n=2 import: --init-from loads the backbone (CPU logits)" \
    bin/runtime "$PS/model.ptx" --cpu --init-from "$QD/bf16_gqa_untied" --logits "$QD/tok.bin" --out "$QD/p2_got.safetensors"
  check_error "parscale.n=2 import: the logits are not P = 1's" 1 'FAIL' \
    $QPY $QH compare "$QD/bf16_gqa_untied_ref.safetensors" "$QD/p2_got.safetensors" --tol 1e-2
  check_error "parscale.n=2: --export-hf refused naming parscale.n" 1 'the plan p2 has parscale\.n = 2 .*only a plan with parscale\.n = 1 exports' \
    bin/runtime "$PS/model.ptx" --init-from "$QD/bf16_gqa_untied" --export-hf "$QD/p2_exp"
else
  notok "parscale.n=2 import: gen" "$out_txt"
fi

# --generate --prompt from an imported Qwen2 directory that carries its tokenizer (vocab.json + merges.txt,
# found without --tokenizer): greedy text equal to the float64 reference's greedy continuation
qwen2_generate() {
  local g="$QD/gen" prompt="Doc 0: It's 2024" nv
  $QPY $QH tokdir "$g.tok" >/dev/null || return 1
  nv=$($QPY -c "import json, sys; print(len(json.load(open(sys.argv[1]))) + 3)" "$g.tok/vocab.json")
  $QPY $QH make "$g" --vocab "$nv" --dtype f32 --layers 2 >/dev/null && cp "$g.tok"/* "$g/" || return 1
  bin/gen --import-hf "$g" --write-spec "$g.lua" --set train.batch_size=1 -o "$g.out" --no-compile >/dev/null || return 1
  bin/runtime "$g.out/model.ptx" --cpu --generate --init-from "$g" --prompt "$prompt" --sample-tokens 12 --temperature 0 \
    >"$g.txt" || return 1
  { printf '%s' "$prompt"; $QPY $QH greedy "$g" "$prompt" --tokens 12; printf '\n---\n'; } >"$g.want" || return 1
  tail -n +3 "$g.txt" >"$g.got" # after the init line and the sample's header
  cat "$g.txt"
  cmp "$g.got" "$g.want"
}
check "qwen2 --generate --prompt: greedy text from the directory's own tokenizer == float64 reference" qwen2_generate
