return {
  name = "bad_type",
  model = {
    n_layer = 2,
    d_model = "wide",
  },
}
