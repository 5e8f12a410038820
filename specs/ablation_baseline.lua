-- Seed 003's ablation baseline: GPT-2 124M (learned positions, LayerNorm, MHA, GELU MLP, tied head).
-- Each ablation_<name>.lua names only what it changes, on top of this file.
return {
  name = "ablation_baseline",
  family = "gpt2",
  model = { n_layer = 12, d_model = 768, n_head = 12, seq_len = 1024, vocab_size = 50257 },
  train = { batch_size = 16, lr = 6e-4, min_lr = 6e-5, warmup_steps = 700, steps = 19073, weight_decay = 0.1 },
}
