-- Seed 001's `xattn_preset_layers`: the P = 1, 2, 4, 8 scaling with cross-attention between the
-- replicas on layers 0, 6, 12 and 18 only (4 runs; P = 1 is plain Qwen2-0.5B).
return {
  title = "xattn_preset_layers: Qwen2-0.5B, P = 1, 2, 4, 8, cross-replica attention on layers 0 6 12 18",
  base = "specs/parscale_cross_attn.lua",
  axes = {
    ["parscale.n"] = { 1, 2, 4, 8 },
  },
  set = {
    ["parscale.cross_attn_layers"] = { 0, 6, 12, 18 },
    ["train.lr"] = 3e-4,
    ["train.min_lr"] = 3e-4,
    ["train.steps"] = 1000,
    ["train.warmup_steps"] = 100,
  },
  run = { log_every = 10 },
}
