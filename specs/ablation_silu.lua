-- Seed 003 ablation: SiLU activation in the MLP
return { base = "specs/ablation_baseline.lua", model = { mlp = "silu" } }
