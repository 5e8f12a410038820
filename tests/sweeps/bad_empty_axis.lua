-- An axis with no values.
return {
  base = "specs/gpt2_tiny.lua",
  axes = {
    ["train.lr"] = {},
  },
}
