-- The sweep of `make test` (tests/t_sweep.sh): gpt2_tiny with a 500-token vocabulary, 2 learning
-- rates × 2 depths = 4 points of a few CPU steps each.
return {
  title = "gpt2_tiny: lr x depth (test)",
  base = "specs/gpt2_tiny.lua",
  axes = {
    ["train.lr"] = { 1e-3, 3e-3 },
    ["model.n_layer"] = { 1, 2 },
  },
  set = {
    ["model.vocab_size"] = 500,
    ["train.steps"] = 12,
    ["train.warmup_steps"] = 2,
    ["train.log_every"] = 1,
  },
  run = { log_every = 1 },
}
