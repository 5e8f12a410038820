-- Seed 002's SWA-MLA hybrid, "xl" preset: cycles of 2 sliding-window blocks (window 256, 4 sink
-- tokens, RoPE) then 1 multi-head latent attention block (kv rank 256, q rank 0, nope 128 + rope 64,
-- v 128); pre-RMSNorm, SwiGLU, tied embeddings, GPT-2 tokenizer.
return {
  name = "swamla_xl",
  family = "swamla",
  model = { n_layer = 32, d_model = 4096, n_head = 32, seq_len = 2048, vocab_size = 50257,
            swa_window = 256, swa_sink = 4,
            mla = { kv_lora_rank = 256, q_lora_rank = 0, qk_nope_head_dim = 128, qk_rope_head_dim = 64, v_head_dim = 128 } },
  train = { batch_size = 1, lr = 6e-4, min_lr = 6e-5, warmup_steps = 400, steps = 20000, weight_decay = 0.1, grad_clip = 1.0 },
}
