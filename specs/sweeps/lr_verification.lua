-- Seed 001's `lr_verification`: the learning rates {1e-4, 3e-4, 5e-4, 1e-3} at ParScale P = 1 and
-- P = 4 on Qwen2-0.5B (specs/parscale_basic.lua), to check which learning rate is best before the
-- scaling runs (8 runs). The learning rate is a runtime value, so the four points of each P share one
-- NVRTC compile.
return {
  title = "lr_verification: learning rate x ParScale P (Qwen2-0.5B)",
  base = "specs/parscale_basic.lua",
  axes = {
    ["train.lr"] = { 1e-4, 3e-4, 5e-4, 1e-3 },
    ["parscale.n"] = { 1, 4 },
  },
  set = {
    ["train.steps"] = 1000,
    ["train.warmup_steps"] = 100,
    ["train.min_lr"] = 1e-5,
  },
  run = { log_every = 10 },
}
