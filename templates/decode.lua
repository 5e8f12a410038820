-- decode.lua — launch descriptors for decode.cuh (format: docs/ir.md, "Kernel templates").
local function I(a, k, what)
  local v = math.tointeger(a[k])
  assert(v, what .. ": attr " .. k .. " = " .. tostring(a[k]) .. " is not an integer")
  return v
end

-- attn_decode takes the attrs of attn (docs/ir.md "Generalized attention") with B = sequences and
-- T = the cache length; checked here so that a bad op fails naming the attr before NVRTC runs.
local TP = { "B", "T", "H", "HKV", "DQK", "DV", "LDQ", "LDK", "LDV", "QOFF", "KOFF", "VOFF",
             "QHS", "KHS", "VHS", "WINDOW", "SINK", "ALIBI", "ROPE", "ROPE_DIM" }
-- head widths as the training kernels (attention_gen.lua): multiples of 16 up to 128, DQK also 192
local function dim_ok(d, qk) return (d % 16 == 0 and d >= 16 and d <= 128) or (qk and d == 192) end
local function cfg(a)
  local c, what = {}, "attn_decode"
  for _, k in ipairs(TP) do c[k] = I(a, k, what) end
  local function need(ok, msg, ...) assert(ok, what .. ": " .. string.format(msg, ...)) end
  need(c.B >= 1 and c.T >= 1 and c.H >= 1 and c.HKV >= 1, "B, T, H, HKV must be positive")
  need(c.H % c.HKV == 0, "HKV = %d does not divide H = %d", c.HKV, c.H)
  need(dim_ok(c.DQK, true), "DQK = %d is not a multiple of 16 in [16, 128], nor 192", c.DQK)
  need(dim_ok(c.DV, false), "DV = %d is not a multiple of 16 in [16, 128]", c.DV)
  for _, k in ipairs({ "LDQ", "LDK", "LDV", "QOFF", "KOFF", "VOFF", "QHS", "KHS", "VHS" }) do
    need(c[k] >= 0 and c[k] % 2 == 0, "%s = %d must be a non-negative even number", k, c[k])
  end
  need(c.QOFF + (c.H - 1) * c.QHS + c.DQK <= c.LDQ, "q heads do not fit in a row (QOFF + (H-1)·QHS + DQK > LDQ)")
  need(c.KOFF + (c.HKV - 1) * c.KHS + c.DQK <= c.LDK, "k heads do not fit in a row (KOFF + (HKV-1)·KHS + DQK > LDK)")
  need(c.VOFF + (c.HKV - 1) * c.VHS + c.DV <= c.LDV, "v heads do not fit in a row (VOFF + (HKV-1)·VHS + DV > LDV)")
  need(c.WINDOW >= 0, "WINDOW = %d must be >= 0 (0 = unlimited)", c.WINDOW)
  need(c.SINK >= 0, "SINK = %d must be >= 0", c.SINK)
  need(c.ALIBI == 0 or c.ALIBI == 1, "ALIBI = %d must be 0 or 1", c.ALIBI)
  need(c.ROPE == 0 or c.ROPE == 1 or c.ROPE == 2, "ROPE = %d must be 0, 1 (half-split) or 2 (adjacent)", c.ROPE)
  if c.ROPE ~= 0 then
    need(c.ROPE_DIM >= 2 and c.ROPE_DIM <= c.DQK and c.ROPE_DIM % 2 == 0, "ROPE_DIM = %d must be even in [2, DQK]", c.ROPE_DIM)
  end
  need((a.dropout or 0) == 0, "dropout = %s: decoding takes no dropout", tostring(a.dropout))
  need((a.KROT or 0) == 0, "KROT = %s: attn_decode rotates the k it appends, so k must arrive unrotated", tostring(a.KROT))
  -- ParScale prefixes (docs/ir_parscale.md): attrs NPRE (absent or 0 = none) and NREP, refs pk, pv after v
  c.NPRE = a.NPRE == nil and 0 or I(a, "NPRE", what)
  need(c.NPRE >= 0, "NPRE = %d must be >= 0 (0 = no prefix)", c.NPRE)
  if c.NPRE > 0 then
    c.NREP = I(a, "NREP", what)
    need(c.NREP >= 1 and c.B % c.NREP == 0, "NREP = %d must be >= 1 and divide B = %d (B = NREP·Bm rows)", c.NREP, c.B)
  end
  return c
end
local function pre_on(a) return a.NPRE ~= nil and a.NPRE ~= 0 end
local TP_PRE = {}
for i, k in ipairs(TP) do TP_PRE[i] = k end
TP_PRE[#TP + 1], TP_PRE[#TP + 2] = "NPRE", "NREP"
local ARGS = { {"q","const bf16*"}, {"k","const bf16*"}, {"v","const bf16*"}, {"pos","const int*"},
               {"kcache","bf16*"}, {"vcache","bf16*"}, {"out","bf16*"} }
local ARGS_PRE = { {"q","const bf16*"}, {"k","const bf16*"}, {"v","const bf16*"}, {"pk","const bf16*"},
                   {"pv","const bf16*"}, {"pos","const int*"}, {"kcache","bf16*"}, {"vcache","bf16*"}, {"out","bf16*"} }

return {
  file = "decode.cuh",
  kernels = {
    embed_pos = {
      fn = "embed_pos_fwd",
      tparams = { "N", "T", "D" },
      consts = {},
      args = { {"tokens","const int*"}, {"pos","const int*"}, {"wte","const bf16*"}, {"wpe","const bf16*"}, {"out","bf16*"} },
      launch = function(a)
        local N, D = I(a, "N", "embed_pos"), I(a, "D", "embed_pos")
        assert(D % 8 == 0, "embed_pos: D = " .. D .. " must be a multiple of 8")
        return { grid = {(N * (D // 8) + 127) // 128, 1, 1}, block = {128, 1, 1}, smem = 0 }
      end,
    },
    attn_decode = {
      fn = "attn_decode_fwd",
      -- with a prefix: template args NPRE, NREP and the overload taking pk, pv
      tparams = function(a) return pre_on(a) and TP_PRE or TP end,
      consts = { "scale", "rope_base" },
      args = function(a) return pre_on(a) and ARGS_PRE or ARGS end,
      -- one block of 8 warps per (sequence, query head); no dynamic shared memory (online softmax)
      launch = function(a)
        local c = cfg(a)
        return { grid = {c.B * c.H, 1, 1}, block = {256, 1, 1}, smem = 0 }
      end,
    },
  },
}
