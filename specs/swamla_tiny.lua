-- A SWA-MLA hybrid small enough for tests: one full cycle (SWA, SWA, MLA) with a window that
-- matters at this sequence length.
return {
  name = "swamla_tiny",
  family = "swamla",
  model = { n_layer = 3, d_model = 64, n_head = 4, seq_len = 64, vocab_size = 50257,
            swa_window = 16, swa_sink = 2,
            mla = { kv_lora_rank = 32, q_lora_rank = 0, qk_nope_head_dim = 16, qk_rope_head_dim = 16, v_head_dim = 16 } },
  train = { batch_size = 4, lr = 1e-3, min_lr = 1e-4, warmup_steps = 3, steps = 10, log_every = 1 },
}
