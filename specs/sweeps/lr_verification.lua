-- Seed 001's `lr_verification`: the learning rates {1e-4, 3e-4, 5e-4, 1e-3} at two model sizes,
-- to check which learning rate is best before the scaling runs (8 runs).
--
-- The seed runs it at ParScale P = 1 and P = 4. Until the ParScale specs exist this runs on the
-- GPT-2 family, with depth standing in for P (3 layers vs 12: roughly the ×4 in compute); then it
-- becomes base = the ParScale spec, axes = { ["train.lr"] = {...}, ["parscale.n"] = {1, 4} }.
-- The learning rate is a runtime value, so the four points of each size share one NVRTC compile.
return {
  title = "lr_verification: learning rate x size (GPT-2 124M family)",
  base = "specs/gpt2_124m.lua",
  axes = {
    ["train.lr"] = { 1e-4, 3e-4, 5e-4, 1e-3 },
    ["model.n_layer"] = { 3, 12 },
  },
  set = {
    ["train.steps"] = 1000,
    ["train.warmup_steps"] = 100,
    ["train.min_lr"] = 1e-5,
  },
  run = { log_every = 10 },
}
