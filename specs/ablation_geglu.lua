-- Seed 003 ablation: GEGLU MLP (hidden 4·D)
return { base = "specs/ablation_baseline.lua", model = { mlp = "geglu" } }
