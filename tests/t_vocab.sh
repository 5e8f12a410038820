# tests/t_vocab.sh — the model vocabulary (issue 4) on the CPU backend: every golden of
# tests/golden/goldens.txt (each made by tests/reference/decoder_ref.py, float64) must match
# (relative L2 ≤ 1e-4 per tensor, fused graph); a few variants also against finite differences;
# and bad variant specs fail naming the field.
while read -r name spec sets; do
  case "$name" in ''|'#'*) continue ;; esac
  case "$spec" in specs/parscale_*) continue ;; esac # tests/t_parscale.sh checks the ParScale goldens
  args=()
  for kv in $sets; do args+=(--set "$kv"); done
  d="$TMPDIR/vocab_$name"
  if [ ! -f "tests/golden/$name.safetensors" ]; then
    notok "golden $name" "tests/golden/$name.safetensors is missing: run scripts/make_goldens.sh $name"
    continue
  fi
  if out=$(bin/gen "$spec" "${args[@]}" -o "$d" --no-compile 2>&1); then
    check "golden $name: CPU matches the PyTorch reference (rel L2 <= 1e-4)" \
      bin/runtime "$d/model.ptx" --cpu --golden "tests/golden/$name.safetensors" --tol 1e-4
  else
    notok "golden $name: gen" "$out"
  fi
done < tests/golden/goldens.txt

# derived gradients of the new kinds against central differences
# (dyt is covered by its golden; its gradcheck at ×5 weights gives NaN losses — open, see the closing note)
for name in abl_rope abl_alibi abl_mla swamla_tiny abl_geglu; do
  d="$TMPDIR/vocab_$name"
  [ -f "$d/model.plan" ] && check "gradcheck $name (CPU finite differences)" bin/runtime "$d/model.ptx" --cpu --gradcheck
done

# bad variant specs: exit 2, naming the field
vbad() { local name=$1 re=$2; shift 2; check_error "bad variant: $name" 2 "$re" bin/gen "$@" -o "$TMPDIR/vbad" --no-compile; }
vbad "kv heads not dividing heads" 'model\.n_kv_head: must divide model\.n_head \(12\), got 5' \
  specs/ablation_gqa.lua --set model.n_kv_head=5
vbad "gqa without n_kv_head"  'model\.n_kv_head: grouped-query attention needs n_kv_head' specs/ablation_baseline.lua --set model.attention=gqa
vbad "window <= 0"            'model\.swa_window: window must be at least 1, got 0' specs/swamla_tiny.lua --set model.swa_window=0
vbad "sink > T"               'model\.swa_sink: sink 100 exceeds the sequence length 64' specs/swamla_tiny.lua --set model.swa_sink=100
vbad "MLA rank not fitting"   'model\.mla\.kv_lora_rank: must be a positive multiple of 8, got 12' specs/swamla_tiny.lua --set model.mla.kv_lora_rank=12
vbad "MLA head dims"          'model\.mla\.qk_nope_head_dim: qk_nope_head_dim \+ qk_rope_head_dim = 40' specs/swamla_tiny.lua --set model.mla.qk_nope_head_dim=24
vbad "unknown variant name"   'model\.mlp: unknown value "swish" \(expected one of: gelu, relu, silu, geglu, swiglu\)' specs/ablation_baseline.lua --set model.mlp=swish
vbad "unknown position"       'model\.position: unknown value "xpos"' specs/ablation_baseline.lua --set model.position=xpos
