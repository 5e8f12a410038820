# tests/t_hf_golden.sh — the transformers goldens' driver (tests/reference/hf_golden.py) with its reference engine
# (decoder_ref / parscale_ref's forward in place of transformers, which this machine lacks): every case of
# tests/golden/hf_goldens.txt is made and the CPU backend matches it. On the GPU machine run_gpu.sh runs the same
# cases with transformers itself, on both backends.
. tests/hf_golden.sh
hf_golden_cases ref /usr/bin/python3 cpu
check_error "hf_golden.py: a config with dropout is refused, naming the file" 1 'config.json: the configuration has dropout' \
  bash -c "bin/gen specs/scaletrain_tiny.lua -o $TMPDIR/hfg_drop --no-compile >/dev/null && /usr/bin/python3 tests/reference/hf_golden.py $TMPDIR/hfg_drop/config.json $TMPDIR/hfg_drop/x.safetensors"
check_error "hf_golden.py: a golden of another plan is refused" 1 'no tensor init\..* \(a golden of another plan\?\)' \
  /usr/bin/python3 tests/reference/hf_golden.py "$TMPDIR/hfg_hf_gpt2/config.json" "$TMPDIR/hfg_bad.safetensors" --src tests/golden/ps_qwen2_p1.safetensors --engine ref
check "hf_golden.py: a refused golden leaves no file" test ! -e "$TMPDIR/hfg_bad.safetensors"
