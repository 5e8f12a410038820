-- Seed 003 ablation: multi-head latent attention on every layer (kv rank 256, nope 32 + rope 32 = 64, v 64)
return { base = "specs/ablation_baseline.lua", model = { attention = "mla", mla = { kv_lora_rank = 256, qk_nope_head_dim = 32, qk_rope_head_dim = 32, v_head_dim = 64 } } }
