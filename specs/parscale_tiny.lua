-- ParScale on a Qwen2 backbone small enough for tests (docs/ir_parscale.md): P = 4 replicas with
-- 4 prefix tokens per layer, GQA 4 heads / 2 kv heads. The goldens (tests/golden/goldens.txt) vary
-- parscale.n (1, 2, 4), cross-replica attention and the frozen backbone over it.
return {
  name = "parscale_tiny",
  family = "qwen2",
  model = {
    n_layer = 2, d_model = 64, n_head = 4, n_kv_head = 2, attention = "gqa",
    mlp_hidden = 64, seq_len = 32, vocab_size = 250, rope_base = 1e6,
  },
  parscale = { n = 4, n_tokens = 4, attn_smooth = 0.01 },
  train = { batch_size = 2, lr = 1e-3, min_lr = 1e-4, warmup_steps = 3, steps = 10, log_every = 1 },
}
