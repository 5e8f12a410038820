-- adamw.lua — launch descriptors for adamw.cuh (format: docs/ir.md, "Kernel templates").
local function I(a, k, what)
  local v = math.tointeger(a[k])
  assert(v, what .. ": attr " .. k .. " = " .. tostring(a[k]) .. " is not an integer")
  return v
end
return {
  file = "adamw.cuh",
  kernels = {
    sumsq = {
      fn = "sumsq", tparams = { "n", "G" }, consts = {},
      args = { {"grads","const float*"}, {"partials","float*"}, {"range","const int*"} },
      -- one 256-thread block per chunk g < G of the range [lo, hi) read from `range` (optrange)
      launch = function(a)
        I(a, "n", "sumsq")
        local G = I(a, "G", "sumsq")
        assert(G >= 1, "sumsq: G must be positive")
        return { grid = {G, 1, 1}, block = {256, 1, 1}, smem = 0 }
      end,
    },
    adamw = {
      fn = "adamw", tparams = { "n", "n_decay", "G" },
      consts = { "wd", "beta1", "beta2", "eps", "clip" },
      args = { {"master","float*"}, {"params","bf16*"}, {"grads","const float*"}, {"m","float*"},
               {"v","float*"}, {"scal","const float*"}, {"partials","const float*"},
               {"range","const int*"} },
      -- grid-stride over groups of 4 elements of [lo, hi); at most 2048 blocks of 256 threads
      -- (sized for the whole arena n: a shard is smaller, so the grid only covers it faster)
      launch = function(a)
        local n = I(a, "n", "adamw")
        I(a, "n_decay", "adamw"); I(a, "G", "adamw")
        local blocks = math.max(1, math.min(2048, (n + 1023) // 1024))
        return { grid = {blocks, 1, 1}, block = {256, 1, 1}, smem = 0 }
      end,
    },
  },
}
