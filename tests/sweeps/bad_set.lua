-- A common setting naming a field that does not exist.
return {
  base = "specs/gpt2_tiny.lua",
  axes = { ["train.lr"] = { 1e-3 } },
  set = {
    ["train.stepz"] = 5,
  },
}
