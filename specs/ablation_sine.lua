-- Seed 003 ablation: fixed sinusoidal position embeddings
return { base = "specs/ablation_baseline.lua", model = { position = "sinusoidal" } }
