-- Seed 001's `parscale_scaling`: the ParScale paper's P = 1, 2, 4, 8 at a fixed learning rate
-- (4 runs) on Qwen2-0.5B (specs/parscale_basic.lua; P = 1 is plain Qwen2). Stage 2 of the recipe:
-- start from an imported Qwen2 checkpoint (runtime --init-from, README "Importing Qwen2").
return {
  title = "parscale_scaling: Qwen2-0.5B with P = 1, 2, 4, 8 replicas",
  base = "specs/parscale_basic.lua",
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
