# tests/t_gen.sh — the generator: every spec compiles, no spills, stages dump, bad specs fail well.
GEN=bin/gen

# Every spec generates and NVRTC-compiles for sm_90a (the default target); ptxas reports no spills in any kernel.
for spec in specs/*.lua; do
  name=$(basename "$spec" .lua)
  out="$TMPDIR/gen_$name"
  check "gen $name compiles for sm_90a" $GEN "$spec" -o "$out"
  check "gen $name wrote every output" test -s "$out/model.cu" -a -s "$out/model.ptx" -a -s "$out/model.cubin" \
    -a -s "$out/model.plan" -a -s "$out/config.json" -a -s "$out/kernels.txt"
  spills=$(awk '!/^#/ && ($4 > 0 || $5 > 0) {print $1 " (" $4 "/" $5 " bytes spilled)"}' "$out/kernels.txt" 2>/dev/null)
  if [ -f "$out/kernels.txt" ] && [ -z "$spills" ] && [ "$(grep -vc '^#' "$out/kernels.txt")" -gt 0 ]; then
    ok "gen $name: no register spills ($(grep -vc '^#' "$out/kernels.txt") kernels)"
  else
    notok "gen $name: no register spills" "${spills:-kernels.txt missing or empty}"
  fi
done

# Attention kernel choice (attention_gen.lua, wg): for sm_90a swamla_small's backward kernels (dQ and dK/dV of
# SWA d 64 and MLA 192/128, which read the forward's rotated q, k) are the wgmma ones; of its RoPE forwards the
# MLA one (k rotated by mla_k, KROT = 1: only its Q tile turns) on wgmma, the SWA one (every K tile turns) on
# mma.sync; for sm_90 none is wgmma, and that target also compiles with no spills.
wg_count() { grep -c "  $1_wg<" "$2/model.cu"; }
sws="$TMPDIR/gen_swamla_small"
check "swamla_small sm_90a: dQ on wgmma (2 kernels)" test "$(wg_count attn_bwd_dq "$sws")" = 2
check "swamla_small sm_90a: dK/dV on wgmma (2 kernels)" \
  test "$(wg_count attn_bwd_dkdv "$sws")" = 2 -a "$(grep -c '  attn_bwd_dkdv<' "$sws/model.cu")" = 0
check "swamla_small sm_90a: MLA forward (KROT) on wgmma, SWA forward on mma.sync" \
  test "$(wg_count attn_fwd "$sws")" = 1 -a "$(grep -c '  attn_fwd<' "$sws/model.cu")" = 1
krot_attn=$(grep '^op [0-9]* fwd attn .* KROT=1 ' "$sws/model.plan")
check "swamla_small: its 4 mla_k turn the rope key (ROPE=2); its 4 MLA attn take it rotated (KROT=1), with no kr" \
  test "$(grep -c '^op [0-9]* fwd mla_k .* ROPE=2 ' "$sws/model.plan")" = 4 -a "$(printf '%s\n' "$krot_attn" | grep -c .)" = 4 \
  -a "$(printf '%s\n' "$krot_attn" | grep -c '>kr=')" = 0
check "gen swamla_small --arch sm_90" $GEN specs/swamla_small.lua --arch sm_90 -o "$TMPDIR/gen_sws90"
check "swamla_small sm_90: no wgmma kernel" test "$(grep -c '_wg<' "$TMPDIR/gen_sws90/model.cu")" = 0
check "swamla_small sm_90: no register spills" test -z \
  "$(awk '!/^#/ && ($4 > 0 || $5 > 0)' "$TMPDIR/gen_sws90/kernels.txt")"

# Shape inference: GPT-2 124M has 124,475,904 parameters with the vocabulary padded to 50304.
check_error "gpt2_124m parameter count" 0 "parameters +124\.476M .*vocab 50257 padded to 50304" \
  $GEN specs/gpt2_124m.lua --no-compile -o "$TMPDIR/g124"
check_error "gpt2_124m FLOPs per token = 6N + 6LTD" 0 "FLOPs/token +0\.803 GFLOP" \
  $GEN specs/gpt2_124m.lua --no-compile -o "$TMPDIR/g124"
# bench/floors.py (a step's time floors from its plan) counts GPT-2 124M's products as 2·tokens·N forward and
# twice that backward (N = 12·12·768² + 768·50304 = 123,568,128 matmul weights, the tied head once; 16,384
# tokens: 4049.1 and 8098.2 GFLOP) and its 12 causal attention forwards as 12·4·B·H·d·T(T+1)/2 = 309.5 GFLOP.
floors=$(python3 bench/floors.py "$TMPDIR/g124/model.plan" 2>&1)
check "floors.py: gpt2_124m matmuls 4049.1 + 8098.2 GFLOP, attention forward 309.5 GFLOP" \
  sh -c "printf '%s\n' \"\$1\" | grep -q '^| fwd matmul | 49 | 4049.1 |' && printf '%s\n' \"\$1\" | grep -q '^| bwd matmul | 98 | 8098.2 |' && printf '%s\n' \"\$1\" | grep -q '^| fwd attention | 12 | 309.5 |'" _ "$floors"
check_error "floors.py: a file that is no plan is refused, naming it" 1 "gpt2_tiny.lua:1: not a moonforge plan" \
  python3 bench/floors.py specs/gpt2_tiny.lua

# Every stage can be dumped, and each shows what its pass added.
check_error "--dump spec"     0 'n_layer = 2'                 $GEN specs/gpt2_tiny.lua --dump spec
check_error "--dump config"   0 'vocab_padded = 50304'        $GEN specs/gpt2_tiny.lua --dump config
check_error "--dump graph"    0 'fwd attention +h\.1\.attn'   $GEN specs/gpt2_tiny.lua --dump graph
check_error "--dump backward" 0 'bwd attention_bwd_dq'        $GEN specs/gpt2_tiny.lua --dump backward
check_error "--dump fusion"   0 'fwd add_layernorm'           $GEN specs/gpt2_tiny.lua --dump fusion
check_error "--dump memory"   0 '# memory: activations'       $GEN specs/gpt2_tiny.lua --dump memory
check_error "--dump emit"     0 '==> model\.plan <=='         $GEN specs/gpt2_tiny.lua --dump emit
check_error "--dump unknown stage" 2 'unknown stage'          $GEN specs/gpt2_tiny.lua --dump parse
check_error "--no-fuse keeps gelu and xent_bwd ops" 0 'bwd xent_bwd' $GEN specs/gpt2_tiny.lua --no-fuse --dump memory

# The backward pass is derived: every parameter of the forward graph gets exactly one gradient
# accumulation path into grad:<name>, and fusion removes exactly the ops it claims to.
nparams=$(awk '/^param /' "$TMPDIR/gen_gpt2_tiny/model.plan" | wc -l)
ngrads=$($GEN specs/gpt2_tiny.lua --dump backward | grep -oE '[a-z]+=grad:[^[]+' | sed 's/.*grad://' | sort -u | wc -l)
if [ "$nparams" -gt 0 ] && [ "$nparams" -eq "$ngrads" ]; then ok "backward reaches all $nparams parameters"
else notok "backward reaches all parameters" "plan params: $nparams, parameters with a gradient op: $ngrads"; fi

# The memory plan never gives two buffers that are alive at the same time overlapping addresses.
memcheck() {
  $GEN "$1" --dump memory | awk '
    /^  buf / { n++; sz = ($4 == "f32" || $4 == "i32") ? 4 : 2
      sub("gpu@", "", $6); split($9, lv, /\.\./)
      lo[n] = $6 + 0; hi[n] = $6 + $5 * sz; a[n] = lv[1] + 0; b[n] = lv[2] + 0; name[n] = $3 }
    END { bad = 0
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
        if (!(b[i] < a[j] || b[j] < a[i]) && lo[i] < hi[j] && lo[j] < hi[i]) {
          print "overlap: " name[i] " and " name[j]; bad = 1 }
      if (n < 10) { print "too few buffers: " n; bad = 1 }
      exit bad }'
}
check "memory plan: live buffers never overlap (gpt2_tiny)" memcheck specs/gpt2_tiny.lua
check "memory plan: live buffers never overlap (gpt2_124m)" memcheck specs/gpt2_124m.lua

# Overrides reach the config and the plan.
check_error "--set reaches the plan" 0 '^dim L 3$' sh -c "$GEN specs/gpt2_tiny.lua --set model.n_layer=3 --dump emit | grep '^dim L'"

# Bad specs: exit 2, one line naming the file, the line and the field; out/ untouched.
keep="$TMPDIR/keep"
mkdir -p "$keep" && echo sentinel > "$keep/model.plan"
bad() { # NAME REGEX SPEC [ARGS...]
  local name=$1 re=$2; shift 2
  check_error "bad spec: $name" 2 "$re" $GEN "$@" -o "$keep"
}
bad "syntax error"          '^tests/specs/bad_syntax\.lua:3: .*expected'                tests/specs/bad_syntax.lua
bad "unknown field"         '^tests/specs/bad_unknown_field\.lua:5: model\.n_heads: unknown field' tests/specs/bad_unknown_field.lua
bad "wrong type"            '^tests/specs/bad_type\.lua:5: model\.d_model: expected an integer' tests/specs/bad_type.lua
bad "D not divisible by H"  '^tests/specs/bad_heads\.lua:5: model\.n_head: must divide model\.d_model' tests/specs/bad_heads.lua
bad "negative size"         '^tests/specs/bad_negative\.lua:5: train\.batch_size: must be at least 1, got -4' tests/specs/bad_negative.lua
bad "sandbox: no io"        "^tests/specs/bad_sandbox\.lua:2: .*'io'"                    tests/specs/bad_sandbox.lua
bad "--set unknown field"   'unknown field model\.foo'                                   specs/gpt2_tiny.lua --set model.foo=1
bad "--set wrong type"      '^--set train\.lr=abc: train\.lr: expected a number'          specs/gpt2_tiny.lua --set train.lr=abc
bad "missing spec file"     'cannot read spec .*nope\.lua'                                specs/nope.lua
if [ "$(ls "$keep")" = "model.plan" ] && [ "$(cat "$keep/model.plan")" = sentinel ] && ! ls -d "$keep".tmp.* >/dev/null 2>&1; then
  ok "bad specs leave the output directory untouched"
else
  notok "bad specs leave the output directory untouched" "$(ls -la "$keep")"
fi
