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
      tparams = { "N", "H", "dn", "dr" },
      consts = {},
      args = { {"knope","const bf16*"}, {"krope","const bf16*"}, {"k","bf16*"} },
      -- one thread per 8 columns of k
      launch = function(a)
        local N, H, dn, dr = I(a, "N", "mla_k"), I(a, "H", "mla_k"), I(a, "dn", "mla_k"), I(a, "dr", "mla_k")
        assert(dn % 8 == 0 and dr % 8 == 0, "mla_k: dn = " .. dn .. " and dr = " .. dr .. " must be multiples of 8")
        return { grid = {(N * H * (dn + dr) // 8 + 255) // 256, 1, 1}, block = {256, 1, 1}, smem = 0 }
      end,
    },
    mla_k_bwd = {
      fn = "mla_k_bwd",
      tparams = { "N", "H", "dn", "dr" },
      consts = {},
      args = { {"dk","const bf16*"}, {"dknope","bf16*"}, {"dkrope","bf16*"} },
      -- one thread per 8 columns of dknope, then one per 8 columns of dkrope
      launch = function(a)
        local N, H, dn, dr = I(a, "N", "mla_k_bwd"), I(a, "H", "mla_k_bwd"), I(a, "dn", "mla_k_bwd"), I(a, "dr", "mla_k_bwd")
        assert(dn % 8 == 0 and dr % 8 == 0, "mla_k_bwd: dn = " .. dn .. " and dr = " .. dr .. " must be multiples of 8")
        return { grid = {(N * (H * dn + dr) // 8 + 255) // 256, 1, 1}, block = {256, 1, 1}, smem = 0 }
      end,
    },
  },
}
