-- Seed 003 ablation: RMSNorm instead of LayerNorm
return { base = "specs/ablation_baseline.lua", model = { norm = "rmsnorm" } }
