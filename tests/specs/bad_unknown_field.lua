return {
  name = "bad_unknown_field",
  model = {
    n_layer = 2,
    n_heads = 4,
  },
}
