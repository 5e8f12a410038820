-- xent.lua — launch descriptors for xent.cuh (format: docs/ir.md, "Kernel templates").
local function I(a, k, what)
  local v = math.tointeger(a[k])
  assert(v, what .. ": attr " .. k .. " = " .. tostring(a[k]) .. " is not an integer")
  return v
end
local function rows(what)
  return function(a)
    local N, V, Vp = I(a, "N", what), I(a, "V", what), I(a, "Vp", what)
    assert(Vp % 8 == 0, what .. ": Vp = " .. Vp .. " must be a multiple of 8")
    assert(V <= Vp, what .. ": V = " .. V .. " exceeds Vp = " .. Vp)
    return { grid = {N, 1, 1}, block = {1024, 1, 1}, smem = 0 }   -- MF_XENT_THREADS
  end
end
return {
  file = "xent.cuh",
  kernels = {
    xent = {
      fn = "xent_fwd", tparams = { "N", "V", "Vp", "grad" }, consts = { "scale" },
      args = { {"logits","bf16*"}, {"targets","const int*"}, {"losses","float*"} },
      launch = rows("xent"),
    },
    xent_bwd = {
      fn = "xent_bwd", tparams = { "N", "V", "Vp" }, consts = { "scale" },
      args = { {"logits","const bf16*"}, {"targets","const int*"}, {"dlogits","bf16*"} },
      launch = rows("xent_bwd"),
    },
    loss_sum = {
      fn = "loss_sum", tparams = { "N" }, consts = { "scale" },
      args = { {"losses","const float*"}, {"loss","float*"} },
      launch = function(a)
        I(a, "N", "loss_sum")
        return { grid = {1, 1, 1}, block = {1024, 1, 1}, smem = 0 }
      end,
    },
  },
}
