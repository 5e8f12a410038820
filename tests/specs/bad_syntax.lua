return {
  name = "bad_syntax",
  model = { n_layer = 2 d_model = 64 },
}
