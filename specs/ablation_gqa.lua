-- Seed 003 ablation: grouped-query attention, 4 key/value heads for 12 query heads
return { base = "specs/ablation_baseline.lua", model = { attention = "gqa", n_kv_head = 4 } }
