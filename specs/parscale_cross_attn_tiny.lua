-- parscale_tiny with cross-replica attention before every layer (models.md §4).
return {
  base = "parscale_tiny.lua",
  name = "parscale_cross_attn_tiny",
  parscale = { cross_attn = true },
}
