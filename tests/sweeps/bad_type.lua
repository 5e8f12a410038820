-- An axis value of the wrong type (a string where an integer belongs).
return {
  base = "specs/gpt2_tiny.lua",
  axes = {
    ["model.n_layer"] = { 2, "four" },
  },
}
