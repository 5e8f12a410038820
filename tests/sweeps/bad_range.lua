-- Values of the right type that make an impossible model: 7 heads do not divide d_model 64.
return {
  base = "specs/gpt2_tiny.lua",
  axes = {
    ["model.n_head"] = { 4, 7 },
  },
}
