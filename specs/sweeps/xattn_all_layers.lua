-- Seed 001's `xattn_all_layers`: the P = 1, 2, 4, 8 scaling of parscale_scaling with cross-attention
-- between the replicas on every layer (4 runs).
--
-- Cross-attention between replicas has no GPT-2 counterpart, so until the ParScale specs exist
-- this runs the GPT-2 family's other scaling direction, width (d_model with the head count, heads
-- of 64), as ×1 ... ×8-ish steps in compute. Once they exist it becomes base = the ParScale spec,
-- axes = { ["parscale.n"] = {1, 2, 4, 8} }, set = { ["parscale.cross_attn"] = true }.
-- A linked axis: each value sets both fields of the key, so the four points keep heads of 64.
return {
  title = "xattn_all_layers: GPT-2 width scaling (stands in until ParScale cross-attention exists)",
  base = "specs/gpt2_124m.lua",
  axes = {
    ["model.d_model,model.n_head"] = { { 256, 4 }, { 512, 8 }, { 768, 12 }, { 1024, 16 } },
  },
  set = {
    ["train.lr"] = 3e-4,
    ["train.min_lr"] = 3e-5,
    ["train.steps"] = 1000,
    ["train.warmup_steps"] = 100,
  },
  run = { log_every = 10 },
}
