-- Seed 003 ablation: ALiBi attention biases instead of learned positions
return { base = "specs/ablation_baseline.lua", model = { position = "alibi" } }
