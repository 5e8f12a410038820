-- Seed 004's small transformer baseline: 3 pre-norm layers, width 512, 4 heads, RoPE, a ReLU MLP of
-- hidden 2048 with dropout, separate input and output embeddings (W_e, W_ue).
return {
  name = "scaletrain_tiny",
  family = "gpt2",
  model = { n_layer = 3, d_model = 512, n_head = 4, seq_len = 256, vocab_size = 50257,
            position = "rope", mlp = "relu", mlp_hidden = 2048, tie_embeddings = false,
            dropout = { mlp = 0.1 } },
  train = { batch_size = 32, lr = 1e-3, min_lr = 1e-4, warmup_steps = 100, steps = 5000, weight_decay = 0.1 },
}
