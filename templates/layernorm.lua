-- layernorm.lua — launch descriptors for layernorm.cuh (format: docs/ir.md, "Kernel templates").
-- Row kernels: one warp per row, 8 rows per 256-thread block. C must be a multiple of 8.
local function I(a, k, what)
  local v = math.tointeger(a[k])
  assert(v, what .. ": attr " .. k .. " = " .. tostring(a[k]) .. " is not an integer")
  return v
end
local function rows(what)
  return function(a)
    local N, C = I(a, "N", what), I(a, "C", what)
    assert(C % 8 == 0, what .. ": C = " .. C .. " must be a multiple of 8")
    return { grid = {(N + 7) // 8, 1, 1}, block = {256, 1, 1}, smem = 0 }
  end
end
return {
  file = "layernorm.cuh",
  kernels = {
    layernorm = {
      fn = "layernorm_fwd",
      tparams = { "N", "C" },
      consts = { "eps" },
      args = { {"x","const bf16*"}, {"w","const bf16*"}, {"b","const bf16*"},
               {"out","bf16*"}, {"mean","float*"}, {"rstd","float*"} },
      launch = rows("layernorm"),
    },
    add_layernorm = {
      fn = "add_layernorm_fwd",
      tparams = { "N", "C" },
      consts = { "eps" },
      args = { {"a","const bf16*"}, {"b","const bf16*"}, {"w","const bf16*"}, {"bias","const bf16*"},
               {"sum","bf16*"}, {"out","bf16*"}, {"mean","float*"}, {"rstd","float*"} },
      launch = rows("add_layernorm"),
    },
    layernorm_bwd = {
      fn = "layernorm_bwd",
      tparams = { "N", "C", "acc" },
      consts = {},
      args = { {"dout","const bf16*"}, {"x","const bf16*"}, {"w","const bf16*"},
               {"mean","const float*"}, {"rstd","const float*"}, {"dx","bf16*"} },
      launch = rows("layernorm_bwd"),
    },
    layernorm_bwd_params = {
      fn = "layernorm_bwd_params",
      tparams = { "N", "C" },
      consts = {},
      args = { {"dout","const bf16*"}, {"x","const bf16*"}, {"mean","const float*"},
               {"rstd","const float*"}, {"dw","float*"}, {"db","float*"} },
      -- column slabs of 16 (or 8) columns, 1024 threads each (mf_col_reduce in common.cuh)
      launch = function(a)
        local C = I(a, "C", "layernorm_bwd_params")
        I(a, "N", "layernorm_bwd_params")
        assert(C % 8 == 0, "layernorm_bwd_params: C = " .. C .. " must be a multiple of 8")
        local sc = (C % 16 == 0) and 16 or 8
        return { grid = {C // sc, 1, 1}, block = {1024, 1, 1}, smem = 0 }
      end,
    },
  },
}
