return {
  name = "bad_negative",
  model = { d_model = 64, n_head = 4 },
  train = {
    batch_size = -4,
  },
}
