-- An axis naming a field that does not exist (model.n_heads for model.n_head).
return {
  base = "specs/gpt2_tiny.lua",
  axes = {
    ["model.n_heads"] = { 2, 4 },
  },
}
