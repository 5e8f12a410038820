-- attention.lua — launch descriptors for attention.cuh (format: docs/ir.md, "Kernel templates").
-- 4 warps (128 threads) per block; 64 query rows (fwd, dq) or 64 key rows (dkdv) per block.
-- Grids are (B·H, tiles): the tile index runs slowest, so the longest causal tiles start first.
-- Shared memory (bytes) follows the layouts documented in attention.cuh; pitch d + 8 elements.
local function I(a, k, what)
  local v = math.tointeger(a[k])
  assert(v, what .. ": attr " .. k .. " = " .. tostring(a[k]) .. " is not an integer")
  return v
end
local function dims(a, what)
  local B, T, H, d = I(a, "B", what), I(a, "T", what), I(a, "H", what), I(a, "d", what)
  assert(d == 16 or d == 32 or d == 64 or d == 128,
         what .. ": head dim d = " .. d .. " is not one of 16, 32, 64, 128")
  assert(B >= 1 and T >= 1 and H >= 1, what .. ": B, T, H must be positive")
  return B, T, H, d
end
local args_bwd = { {"qkv","const bf16*"}, {"dout","const bf16*"}, {"lse","const float*"},
                   {"delta","const float*"}, {"dqkv","bf16*"} }
return {
  file = "attention.cuh",
  kernels = {
    attention = {
      fn = "attention_fwd", tparams = { "B", "T", "H", "d" }, consts = {},
      args = { {"qkv","const bf16*"}, {"out","bf16*"}, {"lse","float*"} },
      -- smem: Q [64][d+8] + K,V [2][64][d+8]
      launch = function(a)
        local B, T, H, d = dims(a, "attention")
        return { grid = {B * H, (T + 63) // 64, 1}, block = {128, 1, 1}, smem = 5 * 64 * (d + 8) * 2 }
      end,
    },
    attention_bwd_pre = {
      fn = "attention_bwd_pre", tparams = { "B", "T", "H", "d" }, consts = {},
      args = { {"out","const bf16*"}, {"dout","const bf16*"}, {"delta","float*"} },
      -- d/8 threads per (row, head)
      launch = function(a)
        local B, T, H, d = dims(a, "attention_bwd_pre")
        local threads = B * T * H * (d // 8)
        return { grid = {(threads + 255) // 256, 1, 1}, block = {256, 1, 1}, smem = 0 }
      end,
    },
    attention_bwd_dkdv = {
      fn = "attention_bwd_dkdv", tparams = { "B", "T", "H", "d" }, consts = {},
      args = args_bwd,
      -- smem: K,V [64][d+8] + Q,dO [2][BQ][d+8] + lse,delta [2][BQ] f32; BQ = 64 (d ≤ 64) or 32
      launch = function(a)
        local B, T, H, d = dims(a, "attention_bwd_dkdv")
        local bq = (d <= 64) and 64 or 32
        return { grid = {B * H, (T + 63) // 64, 1}, block = {128, 1, 1},
                 smem = (2 * 64 + 4 * bq) * (d + 8) * 2 + 4 * bq * 4 }
      end,
    },
    attention_bwd_dq = {
      fn = "attention_bwd_dq", tparams = { "B", "T", "H", "d" }, consts = {},
      args = args_bwd,
      -- smem: Q,dO [64][d+8] + K,V [2][64][d+8]
      launch = function(a)
        local B, T, H, d = dims(a, "attention_bwd_dq")
        return { grid = {B * H, (T + 63) // 64, 1}, block = {128, 1, 1}, smem = 6 * 64 * (d + 8) * 2 }
      end,
    },
  },
}
