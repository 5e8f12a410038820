-- elementwise.lua — launch descriptors for elementwise.cuh (format: docs/ir.md, "Kernel templates").
local function I(a, k, what)
  local v = math.tointeger(a[k])
  assert(v, what .. ": attr " .. k .. " = " .. tostring(a[k]) .. " is not an integer")
  return v
end
-- flat kernels: 8 elements per thread when n % 8 == 0, else 1 (matches elementwise.cuh)
local function flat(what)
  return function(a)
    local n = I(a, "n", what)
    local per = (n % 8 == 0) and 8 or 1
    return { grid = {(n // per + 255) // 256, 1, 1}, block = {256, 1, 1}, smem = 0 }
  end
end
return {
  file = "elementwise.cuh",
  kernels = {
    add = {
      fn = "add_fwd", tparams = { "n" }, consts = {},
      args = { {"a","const bf16*"}, {"b","const bf16*"}, {"out","bf16*"} },
      launch = flat("add"),
    },
    gelu = {
      fn = "gelu_fwd", tparams = { "n" }, consts = {},
      args = { {"x","const bf16*"}, {"out","bf16*"} },
      launch = flat("gelu"),
    },
    gelu_bwd = {
      fn = "gelu_bwd", tparams = { "n", "acc" }, consts = {},
      args = { {"x","const bf16*"}, {"dout","const bf16*"}, {"dx","bf16*"} },
      launch = flat("gelu_bwd"),
    },
    bias_grad = {
      fn = "bias_grad", tparams = { "N", "C" }, consts = {},
      args = { {"dout","const bf16*"}, {"db","float*"} },
      -- column slabs of 16 (or 8) columns, 1024 threads each (mf_col_reduce in common.cuh)
      launch = function(a)
        local C = I(a, "C", "bias_grad")
        I(a, "N", "bias_grad")
        assert(C % 8 == 0, "bias_grad: C = " .. C .. " must be a multiple of 8")
        local sc = (C % 16 == 0) and 16 or 8
        return { grid = {C // sc, 1, 1}, block = {1024, 1, 1}, smem = 0 }
      end,
    },
  },
}
