-- parscale_basic (Qwen2-0.5B, P = 4) with cross-replica attention before every layer (models.md §4):
-- h ← h + CRA(RMSNorm(h)), attention over the P replicas at each position. `--set
-- parscale.cross_attn_layers=0,12` restricts it to some layers.
return {
  base = "parscale_basic.lua",
  name = "parscale_cross_attn",
  parscale = { cross_attn = true },
}
