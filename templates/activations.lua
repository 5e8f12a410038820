-- activations.lua — launch descriptors for activations.cuh (format: docs/ir.md, "Kernel templates").
local function I(a, k, what)
  local v = math.tointeger(a[k])
  assert(v, what .. ": attr " .. k .. " = " .. tostring(a[k]) .. " is not an integer")
  return v
end
-- flat kernels: 8 elements per thread when n % 8 == 0, else 1 (matches act_map in activations.cuh)
local function flat(what)
  return function(a)
    local n = I(a, "n", what)
    assert(n >= 1, what .. ": n must be positive")
    local per = (n % 8 == 0) and 8 or 1
    return { grid = {(n // per + 255) // 256, 1, 1}, block = {256, 1, 1}, smem = 0 }
  end
end
-- gated units: 8 output columns per thread when F % 8 == 0, else 1
local function gated(what)
  return function(a)
    local N, F, act = I(a, "N", what), I(a, "F", what), I(a, "act", what)
    assert(act == 0 or act == 1, what .. ": act = " .. act .. " (expected 0 gelu or 1 silu)")
    local per = (F % 8 == 0) and 8 or 1
    return { grid = {(N * F // per + 255) // 256, 1, 1}, block = {256, 1, 1}, smem = 0 }
  end
end
local function dropout(what)
  local f = flat(what)
  return function(a)
    local p = a.p
    assert(type(p) == "number" and p >= 0 and p < 1, what .. ": p = " .. tostring(p) .. " must lie in [0, 1)")
    I(a, "stream", what)
    return f(a)
  end
end
return {
  file = "activations.cuh",
  kernels = {
    relu = {
      fn = "relu_fwd", tparams = { "n" }, consts = {},
      args = { {"x","const bf16*"}, {"out","bf16*"} },
      launch = flat("relu"),
    },
    relu_bwd = {
      fn = "relu_bwd", tparams = { "n", "acc" }, consts = {},
      args = { {"x","const bf16*"}, {"dout","const bf16*"}, {"dx","bf16*"} },
      launch = flat("relu_bwd"),
    },
    silu = {
      fn = "silu_fwd", tparams = { "n" }, consts = {},
      args = { {"x","const bf16*"}, {"out","bf16*"} },
      launch = flat("silu"),
    },
    silu_bwd = {
      fn = "silu_bwd", tparams = { "n", "acc" }, consts = {},
      args = { {"x","const bf16*"}, {"dout","const bf16*"}, {"dx","bf16*"} },
      launch = flat("silu_bwd"),
    },
    glu = {
      fn = "glu_fwd", tparams = { "N", "F", "act" }, consts = {},
      args = { {"x","const bf16*"}, {"out","bf16*"} },
      launch = gated("glu"),
    },
    glu_bwd = {
      fn = "glu_bwd", tparams = { "N", "F", "act" }, consts = {},
      args = { {"x","const bf16*"}, {"dout","const bf16*"}, {"dx","bf16*"} },
      launch = gated("glu_bwd"),
    },
    dropout = {
      fn = "dropout_fwd", tparams = { "n", "stream" }, consts = { "p" },
      args = { {"x","const bf16*"}, {"dropctr","const int*"}, {"out","bf16*"} },
      launch = dropout("dropout"),
    },
    dropout_bwd = {
      fn = "dropout_bwd", tparams = { "n", "stream", "acc" }, consts = { "p" },
      args = { {"dout","const bf16*"}, {"dropctr","const int*"}, {"dx","bf16*"} },
      launch = dropout("dropout_bwd"),
    },
  },
}
