-- ParScale on Qwen2-0.5B (models.md §4, docs/ir_parscale.md): 24 layers, D 896, 14 heads / 2 kv heads
-- (head dim 64), SwiGLU 4864, vocabulary 151936, RoPE base 1e6, tied head; P = 4 replicas with 48 prefix
-- tokens per layer and aggregation smoothing 0.01. `--set parscale.n=1` is plain Qwen2-0.5B (for importing
-- it: gen --import-hf writes a spec from the checkpoint's config.json). Stage 2 of the paper's recipe:
-- lr 3e-4, 2K warmup steps, then constant (min_lr = lr); set parscale.freeze_backbone = true to train
-- only the ParScale parameters.
return {
  name = "parscale_basic",
  family = "qwen2",
  model = {
    n_layer = 24, d_model = 896, n_head = 14, n_kv_head = 2, attention = "gqa",
    mlp_hidden = 4864, vocab_size = 151936, seq_len = 2048, rope_base = 1e6, tie_embeddings = true,
  },
  parscale = { n = 4, n_tokens = 48, attn_smooth = 0.01 },
  train = {
    batch_size = 4, grad_accum = 8,        -- 4 × 2048 tokens per micro-step (P·4 rows through the backbone)
    lr = 3e-4, min_lr = 3e-4, warmup_steps = 2000, steps = 20000,
    weight_decay = 0.1, grad_clip = 1.0,
  },
}
