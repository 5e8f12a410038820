-- Seed 001's `xattn_preset_layers`: the P = 1, 2, 4, 8 scaling with cross-attention between the
-- replicas on layers 0, 6, 12 and 18 only (4 runs).
--
-- Until the ParScale specs exist this runs on the GPT-2 family's size ladder (depth and width
-- together: ~30M, 124M, 350M and 770M parameters), the GPT-2 analogue of scaling the whole model.
-- Once they exist it becomes base = the ParScale spec, axes = { ["parscale.n"] = {1, 2, 4, 8} },
-- set = { ["parscale.cross_attn"] = true, ["parscale.cross_attn_layers"] = "0,6,12,18" } (in the
-- form the ParScale schema gives that field).
return {
  title = "xattn_preset_layers: GPT-2 size ladder (stands in until ParScale cross-attention exists)",
  base = "specs/gpt2_124m.lua",
  axes = {
    ["model.n_layer,model.d_model,model.n_head"] = { { 6, 384, 6 }, { 12, 768, 12 }, { 24, 1024, 16 }, { 36, 1280, 20 } },
  },
  set = {
    ["train.lr"] = 3e-4,
    ["train.min_lr"] = 3e-5,
    ["train.steps"] = 1000,
    ["train.warmup_steps"] = 100,
  },
  run = { log_every = 10 },
}
