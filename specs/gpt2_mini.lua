-- A small GPT-2 for the CPU quick start (`make run` without a GPU): 4 layers, width 128, context
-- 64, batch 8, the full GPT-2 vocabulary. On 2 cores a step takes ~0.9 s, most of it in the
-- 50257-way output layer, so 200 steps (100K tokens of the fortunes corpus) fit in 3-4 minutes and
-- bring the validation loss from 10.8 to ~6.55 nats, under the corpus's unigram 7.02.
return {
  name = "gpt2_mini",
  family = "gpt2",
  model = {
    n_layer = 4,
    d_model = 128,
    n_head = 4,
    seq_len = 64,
    vocab_size = 50257,
  },
  train = {
    batch_size = 8,
    lr = 2e-3,
    min_lr = 2e-4,
    warmup_steps = 10,
    steps = 200,
    weight_decay = 0.1,
    grad_clip = 1.0,
  },
}
