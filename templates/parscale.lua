-- parscale.lua — launch descriptors for parscale.cuh (format: docs/ir.md, "Kernel templates"; op
-- kinds of docs/ir_parscale.md: ps_replicate, ps_replicate_bwd, interleave, interleave_bwd,
-- prefix_grad_reduce, cra, cra_bwd, ps_aggregate, ps_aggregate_bwd). The checks repeat the
-- static_asserts of parscale.cuh so that a bad op fails here, naming the op kind and the attr.
local function I(a, k, what)
  local v = math.tointeger(a[k])
  assert(v, what .. ": attr " .. k .. " = " .. tostring(a[k]) .. " is not an integer")
  return v
end
local function need(ok, what, msg, ...) assert(ok, what .. ": " .. string.format(msg, ...)) end
local MAX_P = 32                 -- PS_MAX_P
local AGG_MAX_BLOCKS = 1024      -- PS_AGG_MAX_BLOCKS

local function pos(a, what, ...)
  local r = {}
  for i, k in ipairs({ ... }) do
    r[i] = I(a, k, what)
    need(r[i] >= 1, what, "attr %s = %d must be positive", k, r[i])
  end
  return table.unpack(r)
end
local function acc_ok(a, what)
  local acc = I(a, "acc", what)
  need(acc == 0 or acc == 1, what, "attr acc = %d must be 0 or 1", acc)
end
local function flat(threads) return { grid = {(threads + 255) // 256, 1, 1}, block = {256, 1, 1}, smem = 0 } end

-- cross-replica attention: floats of shared memory per warp and warps per block (ps_cra_* in parscale.cuh)
local function cra_warp_floats(P, d, bwd) return (bwd and 4 or 3) * P * (d + 1) + (bwd and 2 or 1) * P * (P + 1) end
local function cra_warps(P, d, bwd)
  local f = cra_warp_floats(P, d, bwd) * 4
  return f * 4 <= 98304 and 4 or f * 2 <= 98304 and 2 or 1
end
local function cra_launch(what, bwd)
  return function(a)
    local N, P, H, d = pos(a, what, "N", "P", "H", "d")
    need(P <= MAX_P, what, "attr P = %d must be at most %d", P, MAX_P)
    need(d <= 256, what, "attr d = %d must be at most 256", d)
    need(type(a.scale) == "number", what, "attr scale must be a number")
    local wpb = cra_warps(P, d, bwd)
    return { grid = {(N * H + wpb - 1) // wpb, 1, 1}, block = {32 * wpb, 1, 1},
             smem = wpb * cra_warp_floats(P, d, bwd) * 4 }
  end
end
local function agg_check(a, what)
  local N, D, P = pos(a, what, "N", "D", "P")
  need(D % 8 == 0, what, "attr D = %d must be a multiple of 8", D)
  need(P <= MAX_P, what, "attr P = %d must be at most %d", P, MAX_P)
  need(type(a.eps) == "number" and a.eps >= 0 and a.eps < 1, what, "attr eps = %s must lie in [0, 1)", tostring(a.eps))
  return N, D, P
end

return {
  file = "parscale.cuh",
  kernels = {
    ps_replicate = {
      fn = "ps_replicate", tparams = { "N", "C", "P" }, consts = {},
      args = { {"x","const bf16*"}, {"out","bf16*"} },
      launch = function(a)
        local N, C, P = pos(a, "ps_replicate", "N", "C", "P")
        need(C % 8 == 0, "ps_replicate", "attr C = %d must be a multiple of 8", C)
        return flat(P * N * C // 8)
      end,
    },
    ps_replicate_bwd = {
      fn = "ps_replicate_bwd", tparams = { "N", "C", "P", "acc" }, consts = {},
      args = { {"dout","const bf16*"}, {"dx","bf16*"} },
      launch = function(a)
        local N, C = pos(a, "ps_replicate_bwd", "N", "C", "P")
        need(C % 8 == 0, "ps_replicate_bwd", "attr C = %d must be a multiple of 8", C)
        acc_ok(a, "ps_replicate_bwd")
        return flat(N * C // 8)
      end,
    },
    interleave = {
      fn = "interleave", tparams = { "N", "D", "P" }, consts = {},
      args = { {"x","const bf16*"}, {"out","bf16*"} },
      launch = function(a)
        local N, D, P = pos(a, "interleave", "N", "D", "P")
        need(D % 8 == 0, "interleave", "attr D = %d must be a multiple of 8", D)
        return flat(N * P * D // 8)
      end,
    },
    interleave_bwd = {
      fn = "interleave_bwd", tparams = { "N", "D", "P", "acc" }, consts = {},
      args = { {"dout","const bf16*"}, {"dx","bf16*"} },
      launch = function(a)
        local N, D, P = pos(a, "interleave_bwd", "N", "D", "P")
        need(D % 8 == 0, "interleave_bwd", "attr D = %d must be a multiple of 8", D)
        acc_ok(a, "interleave_bwd")
        return flat(P * N * D // 8)
      end,
    },
    prefix_grad_reduce = {
      fn = "prefix_grad_reduce", tparams = { "NREP", "Bm", "ROW" }, consts = {},
      args = { {"partial","const float*"}, {"grad","float*"} },
      launch = function(a)
        local NREP, _, ROW = pos(a, "prefix_grad_reduce", "NREP", "Bm", "ROW")
        need(ROW % 4 == 0, "prefix_grad_reduce", "attr ROW = %d must be a multiple of 4", ROW)
        return flat(NREP * ROW // 4)
      end,
    },
    cra = {
      fn = "cra_fwd", tparams = { "N", "P", "H", "d" }, consts = { "scale" },
      args = { {"qkv","const bf16*"}, {"out","bf16*"}, {"lse","float*"} },
      -- one warp per (position, head); shared memory q, k, v [P][d+1] f32 + scores [P][P+1] per warp
      launch = cra_launch("cra", false),
    },
    cra_bwd = {
      fn = "cra_bwd", tparams = { "N", "P", "H", "d" }, consts = { "scale" },
      args = { {"qkv","const bf16*"}, {"dout","const bf16*"}, {"lse","const float*"}, {"dqkv","bf16*"} },
      -- shared memory q, k, v, dout [P][d+1] + π, ds [P][P+1] per warp
      launch = cra_launch("cra_bwd", true),
    },
    ps_aggregate = {
      fn = "ps_aggregate", tparams = { "N", "D", "P" }, consts = { "eps" },
      args = { {"h","const bf16*"}, {"a","const bf16*"}, {"b2","const bf16*"}, {"y","bf16*"}, {"w","float*"} },
      -- one warp per row, 8 rows per block
      launch = function(a)
        local N = agg_check(a, "ps_aggregate")
        return { grid = {(N + 7) // 8, 1, 1}, block = {256, 1, 1}, smem = 0 }
      end,
    },
    ps_aggregate_bwd = {
      fn = "ps_aggregate_bwd", tparams = { "N", "D", "P", "acc" }, consts = { "eps" },
      args = { {"dy","const bf16*"}, {"h","const bf16*"}, {"w","const float*"}, {"dh","bf16*"}, {"da","bf16*"},
               {"db2","float*"} },
      -- min(⌈N/32⌉, 1024) blocks of 8 warps (ps_agg_blocks): the db2 partials of one block each
      launch = function(a)
        local N = agg_check(a, "ps_aggregate_bwd")
        acc_ok(a, "ps_aggregate_bwd")
        local nb = math.min((N + 31) // 32, AGG_MAX_BLOCKS)
        return { grid = {nb, 1, 1}, block = {256, 1, 1}, smem = 0 }
      end,
    },
  },
}
