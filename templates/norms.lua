-- norms.lua — launch descriptors for norms.cuh (format: docs/ir.md, "Kernel templates").
-- RMSNorm rows: one warp per row, 8 rows per 256-thread block. DyT: one thread per 8 columns.
-- Parameter gradients: column slabs of 16 (or 8) columns, 1024 threads each (mf_col_sums).
-- C must be a multiple of 8 everywhere.
local function I(a, k, what)
  local v = math.tointeger(a[k])
  assert(v, what .. ": attr " .. k .. " = " .. tostring(a[k]) .. " is not an integer")
  return v
end
local function NC(a, what)
  local N, C = I(a, "N", what), I(a, "C", what)
  assert(C % 8 == 0, what .. ": C = " .. C .. " must be a multiple of 8")
  return N, C
end
-- min_blocks 4 (a 64-register budget) for rows of up to 4 chunks per lane (C ≤ 1024): with
-- maxntid alone ptxas aims at 48 registers there and spills (add_rmsnorm at C = 896, Qwen2-0.5B).
-- Wider rows, and the backward (two row arrays live), keep more in registers: no second bound.
local function rows(what, fwd)
  return function(a)
    local N, C = NC(a, what)
    return { grid = {(N + 7) // 8, 1, 1}, block = {256, 1, 1}, smem = 0, min_blocks = fwd and C <= 1024 and 4 or nil }
  end
end
local function flat8(what)
  return function(a)
    local N, C = NC(a, what)
    return { grid = {(N * C // 8 + 255) // 256, 1, 1}, block = {256, 1, 1}, smem = 0 }
  end
end
local function cols(what)
  return function(a)
    local _, C = NC(a, what)
    local sc = (C % 16 == 0) and 16 or 8
    return { grid = {C // sc, 1, 1}, block = {1024, 1, 1}, smem = 0 }
  end
end
return {
  file = "norms.cuh",
  kernels = {
    rmsnorm = {
      fn = "rmsnorm_fwd", tparams = { "N", "C" }, consts = { "eps" },
      args = { {"x","const bf16*"}, {"w","const bf16*"}, {"out","bf16*"}, {"rstd","float*"} },
      launch = rows("rmsnorm", true),
    },
    add_rmsnorm = {
      fn = "add_rmsnorm_fwd", tparams = { "N", "C" }, consts = { "eps" },
      args = { {"a","const bf16*"}, {"b","const bf16*"}, {"w","const bf16*"}, {"sum","bf16*"}, {"out","bf16*"},
               {"rstd","float*"} },
      launch = rows("add_rmsnorm", true),
    },
    rmsnorm_bwd = {
      fn = "rmsnorm_bwd", tparams = { "N", "C", "acc" }, consts = {},
      args = { {"dout","const bf16*"}, {"x","const bf16*"}, {"w","const bf16*"}, {"rstd","const float*"},
               {"dx","bf16*"} },
      launch = rows("rmsnorm_bwd"),
    },
    rmsnorm_bwd_params = {
      fn = "rmsnorm_bwd_params", tparams = { "N", "C" }, consts = {},
      args = { {"dout","const bf16*"}, {"x","const bf16*"}, {"rstd","const float*"}, {"dw","float*"} },
      launch = cols("rmsnorm_bwd_params"),
    },
    dyt = {
      fn = "dyt_fwd", tparams = { "N", "C" }, consts = {},
      args = { {"x","const bf16*"}, {"alpha","const bf16*"}, {"w","const bf16*"}, {"b","const bf16*"}, {"out","bf16*"} },
      launch = flat8("dyt"),
    },
    add_dyt = {
      fn = "add_dyt_fwd", tparams = { "N", "C" }, consts = {},
      args = { {"a","const bf16*"}, {"b","const bf16*"}, {"alpha","const bf16*"}, {"w","const bf16*"},
               {"bias","const bf16*"}, {"sum","bf16*"}, {"out","bf16*"} },
      launch = flat8("add_dyt"),
    },
    dyt_bwd = {
      fn = "dyt_bwd", tparams = { "N", "C", "acc" }, consts = {},
      args = { {"dout","const bf16*"}, {"x","const bf16*"}, {"alpha","const bf16*"}, {"w","const bf16*"}, {"dx","bf16*"} },
      launch = flat8("dyt_bwd"),
    },
    dyt_bwd_params = {
      fn = "dyt_bwd_params", tparams = { "N", "C" }, consts = {},
      -- w is needed for dalpha = Σ dout·w·x·(1 − tanh²(α·x))
      args = { {"dout","const bf16*"}, {"x","const bf16*"}, {"alpha","const bf16*"}, {"dalpha","float*"},
               {"w","const bf16*"}, {"dw","float*"}, {"db","float*"} },
      launch = cols("dyt_bwd_params"),
    },
  },
}
