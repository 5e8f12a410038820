-- Seed 003 ablation: multi-query attention (one key/value head)
return { base = "specs/ablation_baseline.lua", model = { attention = "mqa" } }
