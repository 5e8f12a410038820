-- GPT-2 small (124M): the shapes of OpenAI's release and of llm.c's reproduction.
return {
  name = "gpt2_124m",
  family = "gpt2",
  model = {
    n_layer = 12,
    d_model = 768,
    n_head = 12,
    seq_len = 1024,
    vocab_size = 50257, -- padded to 50304 for the matrices
  },
  train = {
    batch_size = 16,
    lr = 6e-4,
    min_lr = 6e-5,
    warmup_steps = 700,
    steps = 19073, -- ~10B tokens at 524K tokens a step (with grad_accum = 32 at B = 16)
    weight_decay = 0.1,
    grad_clip = 1.0,
  },
}
