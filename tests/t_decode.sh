# tests/t_decode.sh — the one-token decode program (phase dec, docs/ir.md "Decode") for every model
# the generator builds: KV-cache decoding reproduces the forward pass's logits (CPU, rel L2 <= 1e-5)
# for every golden config that is not about dropout (decoding is inference: configs with dropout are
# generated with it off, which leaves the decode program unchanged); the caches hold HKV heads;
# --generate prints text; and the attn_decode kernel matches the CPU op in the CPU emulator.
NODROP=(--set model.dropout.attn=0 --set model.dropout.resid=0 --set model.dropout.mlp=0)
while read -r name spec sets; do
  case "$name" in ''|'#'*|dropout_*) continue ;; esac   # ps_p*: ParScale's P prefixed streams + aggregation
  args=()
  for kv in $sets; do args+=(--set "$kv"); done
  d="$TMPDIR/dec_$name"
  if out=$(bin/gen "$spec" "${args[@]}" "${NODROP[@]}" -o "$d" --no-compile 2>&1); then
    check "decode $name: KV-cache decoding == forward pass logits (CPU, rel L2 <= 1e-5)" \
      bin/runtime "$d/model.ptx" --cpu --decode-check
  else
    notok "decode $name: gen" "$out"
  fi
done < tests/golden/goldens.txt

# unfused: the decode program without add+norm fusion or GELU epilogues
d="$TMPDIR/dec_swamla_unfused"
bin/gen specs/swamla_tiny.lua --set model.vocab_size=250 --no-fuse -o "$d" --no-compile >/dev/null 2>&1
check "decode swamla_tiny unfused: KV-cache decoding == forward pass logits (CPU)" bin/runtime "$d/model.ptx" --cpu --decode-check

# The caches hold the kv heads, never repeated: [1, T, HKV·d] (GQA: HKV = 2, d = 16, T = 32 → 1024)
# and, for MLA, the per-head k = [k_nope; k_rope] (H·(dn + dr) = 128) and v (H·dv = 64).
cache_numel() { awk -v n="$2" '$1 == "buffer" && $3 == n {print $5}' "$1/model.plan"; }
cache_ok() {
  [ "$(cache_numel "$TMPDIR/dec_abl_gqa" dec.h.0.attn.kcache)" = 1024 ] &&
  [ "$(cache_numel "$TMPDIR/dec_abl_gqa" dec.h.0.attn.vcache)" = 1024 ] &&
  [ "$(cache_numel "$TMPDIR/dec_abl_mqa" dec.h.1.attn.kcache)" = 512 ] &&
  [ "$(cache_numel "$TMPDIR/dec_abl_mla" dec.h.0.attn.kcache)" = $((32 * 128)) ] &&
  [ "$(cache_numel "$TMPDIR/dec_abl_mla" dec.h.0.attn.vcache)" = $((32 * 64)) ] &&
  ! grep -q '^op .* dec embed_pos' "$TMPDIR/dec_abl_rope/model.plan" &&
  grep -q '^op .* dec embed_tok' "$TMPDIR/dec_abl_rope/model.plan"
}
check "decode caches: HKV heads (GQA, MQA), MLA's per-head k and v; RoPE embeds from wte only" cache_ok

# a forward pass with dropout is another function: --decode-check says so
d="$TMPDIR/dec_drop"
bin/gen specs/scaletrain_tiny.lua --set model.vocab_size=250 --set model.seq_len=32 -o "$d" --no-compile >/dev/null 2>&1
check_error "decode-check refuses a forward pass with dropout, naming the op" 1 'has dropout \(op [0-9]+, h\.0\.mlp\.drop\)' \
  bin/runtime "$d/model.ptx" --cpu --decode-check

# --generate prints text with the KV-cache decoder (SWA + sinks + MLA; RoPE)
gen_text() {
  local d="$TMPDIR/dec_text_$1" out; shift
  bin/gen "$@" -o "$d" --no-compile >/dev/null 2>&1 || return 1
  out=$(bin/runtime "$d/model.ptx" --cpu --generate --run-dir "$d/run" --prompt "Once upon a time" \
        --sample-tokens 8 --temperature 0 2>&1) || { echo "$out"; return 1; }
  echo "$out"
  # the prompt, then at least one more word on the sample's line
  grep -qE '^Once upon a time.*[A-Za-z]' <<<"$(sed -n 2p <<<"$out")" && [ "$(sed -n 2p <<<"$out" | wc -w)" -gt 4 ]
}
check "--generate prints text: swamla_tiny" gen_text swamla specs/swamla_tiny.lua
check "--generate prints text: ablation_rope (2 layers, T = 64)" gen_text rope specs/ablation_rope.lua \
  --set model.n_layer=2 --set model.seq_len=64 --set model.d_model=64 --set model.n_head=4

# The GPU kernel in the CPU emulator against the CPU op (GQA, MQA, RoPE both layouts, ALiBi, window +
# sinks with W = 1 and S >= W, MLA 192/128, T no multiple of 32); built on demand (g++, python3).
if out=$(make -s bin/test_decode_emu 2>&1); then
  check "attn_decode kernel == CPU op in the CPU emulator (every variant)" bin/test_decode_emu
else
  notok "attn_decode kernel in the CPU emulator: build" "$out"
fi
# ParScale (P > 1): the token replicated to P rows, prefixes read from the parameters (never cached),
# the caches hold P replica rows [P, T, HKV·d]; the aggregation leaves one logits row
ps_dec_ok() {
  local pl="$TMPDIR/dec_ps_p4/model.plan"
  [ "$(cache_numel "$TMPDIR/dec_ps_p4" dec.h.0.attn.kcache)" = $((4 * 32 * 32)) ] &&
  grep -q '^op .* dec ps_replicate' "$pl" && grep -q '^op .* dec ps_aggregate' "$pl" &&
  [ "$(grep -c '^op .* dec attn_decode .*NPRE=' "$pl")" -ge 2 ]
}
check "decode ParScale P = 4: replicate, prefixed attn_decode over [P, T, HKV·d] caches (HKV·d = 32), aggregate" ps_dec_ok
check "--generate prints text: parscale_tiny with parscale.n = 4" gen_text ps4 specs/parscale_tiny.lua --set parscale.n=4 \
  --set model.vocab_size=50257

# --bench-decode (the decode benchmark of bench/bench.sh) on the CPU: it runs and prints its line; a prompt
# and a continuation that do not fit the context are refused before anything runs
d="$TMPDIR/dec_bench"
if bin/gen specs/parscale_tiny.lua --set parscale.n=4 --set train.batch_size=1 -o "$d" --no-compile >/dev/null 2>&1; then
  check_error "--bench-decode: parscale_tiny P = 4, batch 1 prints BENCH_DECODE" 0 '^BENCH_DECODE ms_per_token=[0-9.]+ tok_per_s=[0-9.]+$' \
    bin/runtime "$d/model.ptx" --cpu --bench-decode --prompt-tokens 8 --sample-tokens 8
  check_error "--bench-decode: prompt + tokens past the context is refused" 1 \
    '--prompt-tokens 30 \+ --sample-tokens 8 must stay below the context T = 32' \
    bin/runtime "$d/model.ptx" --cpu --bench-decode --prompt-tokens 30 --sample-tokens 8
else
  notok "--bench-decode: gen parscale_tiny"
fi
# the PyTorch baseline's decoder (bench/torch_parscale.py) is the model its training benchmark runs:
# KV-cache decoding with prefixes and aggregation == the full forward, float64, P = 1, 2, 4
if /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
  check "bench/torch_parscale.py --check: its decoder == its forward pass (float64)" /usr/bin/python3 bench/torch_parscale.py --check
else
  notok "bench/torch_parscale.py --check: /usr/bin/python3 has no torch (apt-get install python3-torch)"
fi
