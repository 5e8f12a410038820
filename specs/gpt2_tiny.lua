-- A GPT-2 small enough for tests: a training step takes well under a second on a CPU.
-- The golden tests use it with --set model.vocab_size=500 (see tests/golden/README.md).
return {
  name = "gpt2_tiny",
  family = "gpt2",
  model = {
    n_layer = 2,
    d_model = 64,
    n_head = 4,
    seq_len = 64,
    vocab_size = 50257,
  },
  train = {
    batch_size = 4,
    lr = 1e-3,
    min_lr = 1e-4,
    warmup_steps = 3,
    steps = 10,
    weight_decay = 0.1,
    grad_clip = 1.0,
    log_every = 1,
  },
}
