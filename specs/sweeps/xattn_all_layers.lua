-- Seed 001's `xattn_all_layers`: the P = 1, 2, 4, 8 scaling of parscale_scaling with cross-attention
-- between the replicas before every layer (4 runs; at P = 1 there is nothing to attend across and the
-- point is plain Qwen2-0.5B, the baseline).
return {
  title = "xattn_all_layers: Qwen2-0.5B, P = 1, 2, 4, 8, cross-replica attention on every layer",
  base = "specs/parscale_cross_attn.lua",
  axes = {
    ["parscale.n"] = { 1, 2, 4, 8 },
  },
  set = {
    ["train.lr"] = 3e-4,
    ["train.min_lr"] = 3e-4,
    ["train.steps"] = 1000,
    ["train.warmup_steps"] = 100,
  },
  run = { log_every = 10 },
}
