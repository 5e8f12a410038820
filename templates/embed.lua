-- embed.lua — launch descriptors for embed.cuh (format: docs/ir.md, "Kernel templates").
-- Attr values may arrive as Lua floats; I() turns them into integers or fails naming the attr.
local function I(a, k, what)
  local v = math.tointeger(a[k])
  assert(v, what .. ": attr " .. k .. " = " .. tostring(a[k]) .. " is not an integer")
  return v
end
local function D8(a, what)
  local D = I(a, "D", what)
  assert(D % 8 == 0, what .. ": D = " .. D .. " must be a multiple of 8")
  return D
end
-- mla_k / mla_k_bwd: N H dn dr, and ROPE (0 copy, 1 half-split, 2 adjacent: krope turned at t = n mod T)
local function mla_dims(a, what)
  local N, H, dn, dr = I(a, "N", what), I(a, "H", what), I(a, "dn", what), I(a, "dr", what)
  local rope, T = I(a, "ROPE", what), I(a, "T", what)
  assert(dn % 8 == 0 and dr % 8 == 0, what .. ": dn = " .. dn .. " and dr = " .. dr .. " must be multiples of 8")
  assert(rope >= 0 and rope <= 2, what .. ": ROPE = " .. rope .. " must be 0, 1 (half-split) or 2 (adjacent)")
  assert(rope == 0 or (dr % 16 == 0 and T >= 1 and N % T == 0),
    what .. ": with ROPE, dr = " .. dr .. " must be a multiple of 16 and T = " .. T .. " divide N = " .. N)
  return N, H, dn, dr
end
return {
  file = "embed.cuh",
  kernels = {
    embed = {
      fn = "embed_fwd",
      tparams = { "N", "T", "D" },
      consts = {},
      args = { {"tokens","const int*"}, {"wte","const bf16*"}, {"wpe","const bf16*"}, {"out","bf16*"} },
      -- one thread per 8 columns of a row
      launch = function(a)
        local N, D = I(a, "N", "embed"), D8(a, "embed")
        return { grid = {(N * (D // 8) + 255) // 256, 1, 1}, block = {256, 1, 1}, smem = 0 }
      end,
    },
    embed_bwd_tok = {
      fn = "embed_bwd_tok",
      tparams = { "N", "D" },
      consts = {},
      args = { {"tokens","const int*"}, {"tokidx","const int*"}, {"dout","const bf16*"}, {"dwte","float*"} },
      -- one block per distinct token (at most N; blocks >= U return); a thread owns 8 columns
      launch = function(a)
        local N, D = I(a, "N", "embed_bwd_tok"), D8(a, "embed_bwd_tok")
        local th = math.min(256, math.max(32, ((D // 8 + 31) // 32) * 32))
        return { grid = {N, 1, 1}, block = {th, 1, 1}, smem = 0 }
      end,
    },
    embed_bwd_pos = {
      fn = "embed_bwd_pos",
      tparams = { "N", "T", "D" },
      consts = {},
      args = { {"dout","const bf16*"}, {"dwpe","float*"} },
      -- one thread per 8 columns of one position; loops over the batch in order
      launch = function(a)
        local N, T, D = I(a, "N", "embed_bwd_pos"), I(a, "T", "embed_bwd_pos"), D8(a, "embed_bwd_pos")
        assert(N % T == 0, "embed_bwd_pos: N = " .. N .. " is not a multiple of T = " .. T)
        return { grid = {(T * (D // 8) + 255) // 256, 1, 1}, block = {256, 1, 1}, smem = 0 }
      end,
    },
    embed_tok = {
      fn = "embed_tok_fwd",
      tparams = { "N", "D" },
      consts = {},
      args = { {"tokens","const int*"}, {"wte","const bf16*"}, {"out","bf16*"} },
      -- one thread per 8 columns of a row
      launch = function(a)
        local N, D = I(a, "N", "embed_tok"), D8(a, "embed_tok")
        return { grid = {(N * (D // 8) + 255) // 256, 1, 1}, block = {256, 1, 1}, smem = 0 }
      end,
    },
    mla_k = {
      fn = "mla_k",
      tparams = { "N", "H", "dn", "dr", "ROPE", "T" },
      consts = { "rope_base" },
      args = { {"knope","const bf16*"}, {"krope","const bf16*"}, {"k","bf16*"} },
      -- one thread per 8 columns of knope, then one per 8 columns of krope (written to every head)
      launch = function(a)
        local N, H, dn, dr = mla_dims(a, "mla_k")
        return { grid = {(N * (H * dn + dr) // 8 + 255) // 256, 1, 1}, block = {256, 1, 1}, smem = 0 }
      end,
    },
    mla_k_bwd = {
      fn = "mla_k_bwd",
      tparams = { "N", "H", "dn", "dr", "ROPE", "T" },
      consts = { "rope_base" },
      args = { {"dk","const bf16*"}, {"dknope","bf16*"}, {"dkrope","bf16*"} },
      -- one thread per 8 columns of dknope, then one per 8 columns of dkrope
      launch = function(a)
        local N, H, dn, dr = mla_dims(a, "mla_k_bwd")
        return { grid = {(N * (H * dn + dr) // 8 + 255) // 256, 1, 1}, block = {256, 1, 1}, smem = 0 }
      end,
    },
  },
}
