-- Seed 003 ablation: rotary position embeddings (half-split) instead of learned positions
return { base = "specs/ablation_baseline.lua", model = { position = "rope" } }
