-- parscale_1p5b (Qwen2-1.5B, P = 4) with cross-replica attention before every layer.
return {
  base = "parscale_1p5b.lua",
  name = "parscale_cross_attn_1p5b",
  parscale = { cross_attn = true },
}
