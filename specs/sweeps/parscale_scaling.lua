-- Seed 001's `parscale_scaling`: the ParScale paper's P = 1, 2, 4, 8 at a fixed learning rate
-- (4 runs).
--
-- Until the ParScale specs exist this runs on the GPT-2 family, scaling depth instead of P: 3, 6,
-- 12 and 24 layers of GPT-2 small's width give the same ×1, ×2, ×4, ×8 in compute per token.
-- Once they exist it becomes base = the ParScale spec, axes = { ["parscale.n"] = {1, 2, 4, 8} }.
return {
  title = "parscale_scaling: compute x1 x2 x4 x8 (GPT-2 depth stands in for ParScale P)",
  base = "specs/gpt2_124m.lua",
  axes = {
    ["model.n_layer"] = { 3, 6, 12, 24 },
  },
  set = {
    ["train.lr"] = 3e-4,
    ["train.min_lr"] = 3e-5,
    ["train.steps"] = 1000,
    ["train.warmup_steps"] = 100,
  },
  run = { log_every = 10 },
}
