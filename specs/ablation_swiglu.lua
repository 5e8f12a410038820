-- Seed 003 ablation: SwiGLU MLP (hidden 4·D)
return { base = "specs/ablation_baseline.lua", model = { mlp = "swiglu" } }
