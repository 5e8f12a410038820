-- Seed 003's ablation grid: GPT-2 124M (the baseline) against one change each — position encoding
-- (ALiBi, RoPE, sinusoidal), attention (MQA, GQA, MLA), RMSNorm, and the MLP activation (GEGLU,
-- SwiGLU, SiLU, ReLU) — all with the baseline's training settings, one point per spec file.
-- Twelve points; each spec file names only what differs from ablation_baseline.lua.
return {
  title = "ablations: GPT-2 124M components (seed 003)",
  axes = {
    spec = {
      "specs/ablation_baseline.lua", -- learned positions, MHA, LayerNorm, GELU MLP
      "specs/ablation_alibi.lua",
      "specs/ablation_rope.lua",
      "specs/ablation_sine.lua",
      "specs/ablation_mqa.lua",
      "specs/ablation_gqa.lua",
      "specs/ablation_mla.lua",
      "specs/ablation_rmsnorm.lua",
      "specs/ablation_geglu.lua",
      "specs/ablation_swiglu.lua",
      "specs/ablation_silu.lua",
      "specs/ablation_relu.lua",
    },
  },
  set = {
    ["train.steps"] = 2000,
    ["train.warmup_steps"] = 200,
  },
  run = { log_every = 10 },
}
