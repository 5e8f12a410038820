-- ParScale on Qwen2-1.5B: 28 layers, D 1536, 12 heads / 2 kv heads (head dim 128), SwiGLU 8960, tied
-- head; otherwise as parscale_basic (P = 4, 48 prefix tokens, stage-2 schedule).
return {
  base = "parscale_basic.lua",
  name = "parscale_1p5b",
  model = { n_layer = 28, d_model = 1536, n_head = 12, n_kv_head = 2, mlp_hidden = 8960 },
  train = { batch_size = 2, grad_accum = 16 },
}
