-- Seed 003 ablation: ReLU activation in the MLP
return { base = "specs/ablation_baseline.lua", model = { mlp = "relu" } }
