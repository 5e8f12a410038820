# tests/t_parscale.sh — ParScale (issue 5, docs/ir_parscale.md) on the CPU backend: the ParScale goldens of
# tests/golden/goldens.txt (tests/reference/parscale_ref.py, float64) within rel L2 1e-4, finite-difference
# gradients, the plan's structure (P = 1 is exactly Qwen2; a frozen backbone leaves only ParScale parameters
# trainable), every ParScale spec generating, and bad parscale fields failing with exit 2 naming the field.

# -- goldens: the lines of goldens.txt whose spec is specs/parscale_* (t_vocab.sh leaves them to this file)
while read -r name spec sets; do
  case "$name" in ''|'#'*) continue ;; esac
  case "$spec" in specs/parscale_*) ;; *) continue ;; esac
  args=()
  for kv in $sets; do args+=(--set "$kv"); done
  d="$TMPDIR/ps_$name"
  if [ ! -f "tests/golden/$name.safetensors" ]; then
    notok "parscale golden $name" "tests/golden/$name.safetensors is missing: run scripts/make_goldens.sh $name"
    continue
  fi
  if out=$(bin/gen "$spec" "${args[@]}" -o "$d" --no-compile 2>&1); then
    check "parscale golden $name: CPU matches the PyTorch reference (rel L2 <= 1e-4)" \
      bin/runtime "$d/model.ptx" --cpu --golden "tests/golden/$name.safetensors" --tol 1e-4
  else
    notok "parscale golden $name: gen" "$out"
  fi
done < tests/golden/goldens.txt

# the unfused graph computes the same
d="$TMPDIR/ps_unfused"
bin/gen specs/parscale_cross_attn_tiny.lua -o "$d" --no-compile --no-fuse >/dev/null 2>&1
check "parscale golden ps_p4_cra, unfused graph" bin/runtime "$d/model.ptx" --cpu --golden tests/golden/ps_p4_cra.safetensors --tol 1e-4
# --tol-for (run_gpu.sh gives the aggregation's bias gradients their own tolerance): it applies to the named
# tensor only, a name that matches nothing fails the check, and it is refused malformed or without --golden
check_error "--tol-for: a tolerance that no bias can meet fails that tensor alone" 1 \
  'grad\.parscale\.agg\.fc2\.bias +rel [0-9.e+-]+  FAIL \(own tolerance\)' \
  bin/runtime "$d/model.ptx" --cpu --golden tests/golden/ps_p4_cra.safetensors --tol 1e-4 --tol-for grad.parscale.agg.fc2.bias=1e-30
check_error "--tol-for: a gradient name that is not in the plan fails" 1 '--tol-for grad\.agg\.bias: no gradient of that name' \
  bin/runtime "$d/model.ptx" --cpu --golden tests/golden/ps_p4_cra.safetensors --tol 1e-4 --tol-for grad.agg.bias=5e-2
check_error "--tol-for: malformed" 1 '--tol-for grad\.x: expected GRADIENT=TOLERANCE' \
  bin/runtime "$d/model.ptx" --cpu --golden tests/golden/ps_p4_cra.safetensors --tol-for grad.x
check_error "--tol-for: only with --golden" 1 '--tol-for goes with --golden' bin/runtime "$d/model.ptx" --cpu --tol-for grad.x=1

# -- derived gradients against central differences (prefixes, aggregation; plain Qwen2). The other
# variants are covered by their goldens: at the 5x weights of --gradcheck, cross-replica attention (or a
# window) makes the aggregation's gradient so small that its finite differences (ε up to 10% of the
# tensor) are too coarse for 1e-3, and frozen parameters have zero gradient by design.
[ -d "$TMPDIR/ps_ps_p4" ] && check "gradcheck ParScale P=4 (CPU finite differences)" bin/runtime "$TMPDIR/ps_ps_p4/model.ptx" --cpu --gradcheck
[ -d "$TMPDIR/ps_ps_qwen2_p1" ] && check "gradcheck Qwen2 (parscale.n = 1)" bin/runtime "$TMPDIR/ps_ps_qwen2_p1/model.ptx" --cpu --gradcheck

# -- structure of the plan
p1="$TMPDIR/ps_ps_qwen2_p1/model.plan"
p1_is_qwen2() {
  local plan=$1
  if grep -E '^(param|op) ' "$plan" | grep -qE 'prefix_|parscale|\.cra\.|ps_replicate|ps_aggregate|interleave|cra'; then
    echo "ParScale params or ops in a P = 1 plan"; return 1
  fi
  grep -q ' h\.0\.attn\.c_attn\.bias ' "$plan" || { echo "no q/k/v bias"; return 1; }
  grep -q ' h\.0\.attn\.c_proj\.bias ' "$plan" && { echo "an o bias"; return 1; }
  grep -q ' lm_head\.weight ' "$plan" && { echo "untied head"; return 1; }
  grep -qE '^op .* attn .*ROPE=1 .*rope_base=1000000 ' "$plan" || { echo "no half-split RoPE with base 1e6"; return 1; }
  grep -qE '^op .* glu .*act=1' "$plan" || { echo "no SwiGLU"; return 1; }
  grep -qE '^op .* rmsnorm .*eps=9\.9999999999999995e-07' "$plan" || { echo "no RMSNorm eps 1e-6"; return 1; }
  return 0
}
check "parscale.n = 1 is exactly Qwen2 (q/k/v bias, no o bias, tied, RoPE 1e6, SwiGLU, RMSNorm; no ParScale ops)" p1_is_qwen2 "$p1"
frozen_ok() {
  local plan=$1 bad
  bad=$(awk '$1 == "param" { frozen = ($NF == "frozen"); ps = ($3 ~ /^parscale\./ || $3 ~ /\.attn\.prefix_[kv]$/ || $3 ~ /\.cra\./);
         if (ps == frozen) print $3 }' "$plan")
  [ -z "$bad" ] || { echo "wrongly frozen or trainable: $bad"; return 1; }
  grep -q ' frozen$' "$plan" || { echo "nothing frozen"; return 1; }
}
check "parscale.freeze_backbone freezes exactly the non-ParScale parameters" frozen_ok "$TMPDIR/ps_ps_p2_freeze/model.plan"
prefix_attrs() {
  grep -qE '^op .* fwd attn .*NPRE=4 NREP=2 ' "$1" && grep -qE '^op .* bwd prefix_grad_reduce .*Bm=2 NREP=2 ROW=128' "$1"
}
check "prefix attention: attn NPRE=4 NREP=2, prefix_grad_reduce over Bm=2 rows" prefix_attrs "$TMPDIR/ps_ps_p2/model.plan"

# -- CPU training: the loss falls
pst="$TMPDIR/ps_train"
bin/gen specs/parscale_tiny.lua --set train.steps=60 --set train.warmup_steps=5 --set train.lr=3e-3 --set parscale.n=2 -o "$pst" --no-compile >/dev/null 2>&1
ps_train_falls() {
  local log first last
  log=$(bin/runtime "$pst/model.ptx" --cpu --train --steps 60 --log-every 1 2>&1) || { echo "$log"; return 1; }
  first=$(grep -m1 -oE 'loss [0-9.]+' <<<"$log" | awk '{print $2}')
  last=$(grep -oE 'loss [0-9.]+' <<<"$log" | tail -1 | awk '{print $2}')
  echo "first $first last $last"
  awk -v f="$first" -v l="$last" 'BEGIN { exit !(f > 0 && l < 0.85 * f) }'
}
check "ParScale CPU training (P=2): loss falls by more than 15% in 60 steps" ps_train_falls

# -- every ParScale spec generates (the full-size ones: plan only); --set parscale.n works on them
for s in specs/parscale_basic.lua specs/parscale_cross_attn.lua specs/parscale_1p5b.lua specs/parscale_cross_attn_1p5b.lua \
         specs/parscale_tiny.lua specs/parscale_cross_attn_tiny.lua; do
  check "gen $s" bin/gen "$s" -o "$TMPDIR/ps_spec" --no-compile
done
check "gen specs/parscale_basic.lua --set parscale.n=8" bin/gen specs/parscale_basic.lua --set parscale.n=8 -o "$TMPDIR/ps_spec" --no-compile
check "gen specs/parscale_basic.lua --set parscale.n=1 (Qwen2-0.5B)" bin/gen specs/parscale_basic.lua --set parscale.n=1 -o "$TMPDIR/ps_spec" --no-compile
cra_p1_plain() {
  bin/gen specs/parscale_cross_attn_tiny.lua --set parscale.n=1 -o "$TMPDIR/ps_cra_p1" --no-compile >/dev/null 2>&1 || return 1
  cmp <(grep -E '^(param|op) ' "$TMPDIR/ps_cra_p1/model.plan" | sed 's/ #.*//') \
      <(grep -E '^(param|op) ' "$TMPDIR/ps_ps_qwen2_p1/model.plan" | sed 's/ #.*//')
}
check "parscale.cross_attn with parscale.n = 1 is plain Qwen2 (the same params and ops)" cra_p1_plain
check "gen specs/parscale_cross_attn.lua --set parscale.cross_attn_layers=0,12,23" \
  bin/gen specs/parscale_cross_attn.lua --set parscale.cross_attn_layers=0,12,23 -o "$TMPDIR/ps_spec" --no-compile

# -- bad parscale fields: exit 2, naming the field
psbad() { local name=$1 re=$2; shift 2; check_error "bad parscale spec: $name" 2 "$re" bin/gen "$@" -o "$TMPDIR/psbad" --no-compile; }
T=specs/parscale_tiny.lua
C=specs/parscale_cross_attn_tiny.lua
psbad "P < 1"                'parscale\.n: the number of replicas must be at least 1, got 0' $T --set parscale.n=0
psbad "P > 32"               'parscale\.n: at most 32 replicas are supported, got 33' $T --set parscale.n=33
psbad "n_tokens = 0"         'parscale\.n_tokens: the prefix length must be at least 1, got 0' $T --set parscale.n_tokens=0
psbad "n_tokens < 0"         'parscale\.n_tokens: the prefix length must be at least 1, got -3' $T --set parscale.n_tokens=-3
psbad "attn_smooth = 1"      'parscale\.attn_smooth: must lie in \[0, 1\), got 1' $T --set parscale.attn_smooth=1
psbad "attn_smooth < 0"      'parscale\.attn_smooth: must lie in \[0, 1\), got -0\.1' $T --set parscale.attn_smooth=-0.1
psbad "cross-attn layer out of range" 'parscale\.cross_attn_layers: layer index 2 \(entry 2\) outside 0\.\.1' $C --set parscale.cross_attn_layers=0,2
psbad "negative cross-attn layer" 'parscale\.cross_attn_layers: layer index -1' $C --set parscale.cross_attn_layers=-1
psbad "cross-attn layer twice" 'parscale\.cross_attn_layers: layer 1 listed twice' $C --set parscale.cross_attn_layers=1,1
psbad "cross_attn_layers without cross_attn" 'parscale\.cross_attn_layers: set, but parscale\.cross_attn is false' $T --set parscale.cross_attn_layers=1
psbad "freeze_backbone with P = 1" 'parscale\.freeze_backbone: with parscale\.n = 1 there are no ParScale parameters' $T --set parscale.n=1 --set parscale.freeze_backbone=true
psbad "ParScale on gpt2"     'parscale\.n: ParScale \(n = 2 > 1\) is built on family qwen2 or llama, not gpt2' specs/gpt2_tiny.lua --set parscale.n=2
psbad "ParScale on swamla"   'parscale\.n: ParScale \(n = 2 > 1\) is built on family qwen2 or llama, not swamla' specs/swamla_tiny.lua --set parscale.n=2
psbad "ParScale with an MLA layer" 'parscale\.n: layer 0 is MLA' $T --set model.layer_pattern=mla
psbad "ParScale with learned positions" 'parscale\.n: ParScale needs position rope, alibi or none \(got learned\)' $T --set model.position=learned
psbad "ParScale with dropout" 'model\.dropout\.attn: dropout is not supported with parscale\.n > 1' $T --set model.dropout.attn=0.1
psbad "unknown parscale field" 'unknown field parscale\.n_prefix' $T --set parscale.n_prefix=3
psbad "parscale.n not an integer" 'parscale\.n: expected an integer, got 2\.5' $T --set parscale.n=2.5
