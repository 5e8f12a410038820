return {
  name = "bad_heads",
  model = {
    d_model = 64,
    n_head = 3,
  },
}
