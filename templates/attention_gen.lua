-- attention_gen.lua — launch descriptors for attention_gen.cuh (format: docs/ir.md, "Kernel templates";
-- op kinds `attn`, `attn_bwd_pre`, `attn_bwd_dkdv`, `attn_bwd_dq`, documented in docs/ir.md).
-- 4 warps (128 threads) per block; 64 query rows (attn, dq) or 64 key rows (dkdv) per block.
-- Grids are (heads, tiles): the tile index runs slowest, so the longest causal tiles start first.
-- Shared memory (bytes) follows the layouts documented in attention_gen.cuh; pitch width + 8.
-- `min_blocks` (attn, dkdv, dq) is the second __launch_bounds__ argument the kernel wrapper
-- needs: __launch_bounds__(128, min_blocks) — without it ptxas may pick 128 registers and spill.
-- Dropout (attr `dropout` = p > 0): the kernels take one more template argument (`stream`), the
-- pointer `dropctr` after the inputs and the float p after scale, rope_base — so tparams, consts
-- and args are functions of the attrs (gen/emit.lua calls them); p = 0 gives the plain kernels.
-- Learned prefix (ParScale; attr `NPRE` > 0 prefix entries, `NREP` replicas; absent or 0 = none):
-- two more template arguments (NPRE, NREP), refs `pk`, `pv` right after `v`, and attn_bwd_dkdv
-- writes the f32 per-row partials `dpk`, `dpv` after dk, dv from ⌈NPRE/64⌉ extra blocks per
-- (b, kv head) (the first blockIdx.y values). NPRE = 0 gives the plain kernels, unchanged.
-- Grouped kv heads (H/HKV = G > 1): attn_bwd_dkdv runs as thread-block clusters of `cluster` blocks
-- along x (the largest divisor of G up to 8; gen/emit.lua writes __cluster_dims__ on the wrapper), each
-- block one share of the group's query heads, summed through distributed shared memory.
-- RoPE (attr ROPE ≠ 0): attn has two more outputs, `qr` and `kr` (after lse), the rotated q and k in the
-- layouts of q and k, and the backward ops take those as their q and k (gen/autodiff.lua; docs/ir.md).
-- KROT = 1 (MLA: mla_k rotated the shared rope key): k arrives rotated, the forward rotates only its Q tile
-- and has `qr` alone, and dK/dV leaves dk un-rotated (mla_k_bwd un-rotates it).
-- Hopper (gen --arch sm_90a, the default): attn, attn_bwd_dq and attn_bwd_dkdv may run the wgmma kernels of
-- attention_wg.cuh (same arguments and grid, their own shared memory): they can when the op has no dropout
-- and no prefix and DQK ∈ {64, 128, 192}, DV ∈ {64, 128} (dK/dV: and no cluster, cluster(c) = 1), and are
-- picked where they measured faster on an H200 (docs/perf.md, 2026-12-04, sessions 4 and 5): dQ and dK/dV always (the
-- backward rotates nothing); the forward without RoPE (rotating each K tile in shared memory costs it an extra
-- barrier per tile, more than wgmma gains on one 64-row product). With KROT = 1 the forward rotates its one Q
-- tile only, so it takes wgmma by the no-RoPE measurement — a prediction not yet timed on a GPU (docs/perf.md,
-- session 6). Otherwise, and for any other target, the mma.sync kernels of attention_gen.cuh.
local function I(a, k, what)
  local v = math.tointeger(a[k])
  assert(v, what .. ": attr " .. k .. " = " .. tostring(a[k]) .. " is not an integer")
  return v
end

-- Checks the attrs shared by attn / attn_bwd_dkdv / attn_bwd_dq (the same rules as ag_check in
-- attention_gen.cuh, so a bad op fails here with its field named, before NVRTC runs).
local function pow2(x) return x > 0 and (x & (x - 1)) == 0 end
-- head widths the tiles support: multiples of 16 up to 128, DQK also 192 (ag_dim_ok)
local function dim_ok(d, qk) return (d % 16 == 0 and d >= 16 and d <= 128) or (qk and d == 192) end
local function drop_on(a) return type(a.dropout) == "number" and a.dropout > 0 end
local function pre_on(a) return a.NPRE ~= nil and a.NPRE ~= 0 end

local function cfg(a, what)
  local c = {}
  for _, k in ipairs({ "B", "T", "H", "HKV", "DQK", "DV", "LDQ", "LDK", "LDV", "QOFF", "KOFF", "VOFF",
                       "QHS", "KHS", "VHS", "WINDOW", "SINK", "ALIBI", "ROPE", "ROPE_DIM", "KROT" }) do
    c[k] = I(a, k, what)
  end
  local function need(ok, msg, ...) assert(ok, what .. ": " .. string.format(msg, ...)) end
  need(c.B >= 1 and c.T >= 1 and c.H >= 1 and c.HKV >= 1, "B, T, H, HKV must be positive")
  need(c.H % c.HKV == 0, "HKV = %d does not divide H = %d", c.HKV, c.H)
  need(dim_ok(c.DQK, true), "DQK = %d is not a multiple of 16 in [16, 128], nor 192", c.DQK)
  need(dim_ok(c.DV, false), "DV = %d is not a multiple of 16 in [16, 128]", c.DV)
  for _, k in ipairs({ "LDQ", "LDK", "LDV", "QOFF", "KOFF", "VOFF", "QHS", "KHS", "VHS" }) do
    need(c[k] >= 0 and c[k] % 8 == 0, "%s = %d must be a non-negative multiple of 8", k, c[k])
  end
  need(c.QOFF + (c.H - 1) * c.QHS + c.DQK <= c.LDQ, "q heads do not fit in a row (QOFF + (H-1)·QHS + DQK > LDQ)")
  need(c.KOFF + (c.HKV - 1) * c.KHS + c.DQK <= c.LDK, "k heads do not fit in a row (KOFF + (HKV-1)·KHS + DQK > LDK)")
  need(c.VOFF + (c.HKV - 1) * c.VHS + c.DV <= c.LDV, "v heads do not fit in a row (VOFF + (HKV-1)·VHS + DV > LDV)")
  need(c.H == 1 or c.QHS >= c.DQK, "QHS = %d < DQK: q heads overlap", c.QHS)
  need(c.HKV == 1 or (c.KHS >= c.DQK and c.VHS >= c.DV), "KHS < DQK or VHS < DV: kv heads overlap")
  need(c.WINDOW >= 0, "WINDOW = %d must be >= 0 (0 = unlimited)", c.WINDOW)
  need(c.SINK >= 0, "SINK = %d must be >= 0", c.SINK)
  need(c.ALIBI == 0 or c.ALIBI == 1, "ALIBI = %d must be 0 or 1", c.ALIBI)
  need(c.ROPE == 0 or c.ROPE == 1 or c.ROPE == 2, "ROPE = %d must be 0, 1 (half-split) or 2 (adjacent)", c.ROPE)
  if c.ROPE ~= 0 then
    local r = c.ROPE_DIM
    need(r >= 16 and r <= c.DQK and r % 16 == 0, "ROPE_DIM = %d must be a multiple of 16 in [16, DQK]", r)
  end
  need(c.KROT == 0 or (c.KROT == 1 and c.ROPE ~= 0), "KROT = %d must be 0, or 1 with ROPE != 0 (k arrives rotated)", c.KROT)
  local p = a.dropout or 0
  need(type(p) == "number" and p >= 0 and p < 1, "dropout = %s must lie in [0, 1)", tostring(p))
  c.drop = p > 0
  if c.drop then
    c.stream = I(a, "stream", what)
    need(c.stream >= 0 and c.stream < 2 ^ 31, "stream = %d must be a non-negative int", c.stream)
  end
  c.NPRE = a.NPRE == nil and 0 or I(a, "NPRE", what)
  need(c.NPRE >= 0, "NPRE = %d must be >= 0 (0 = no prefix)", c.NPRE)
  if c.NPRE > 0 then
    c.NREP = I(a, "NREP", what)
    need(c.NREP >= 1 and c.B % c.NREP == 0, "NREP = %d must be >= 1 and divide B = %d (B = NREP·Bm rows)", c.NREP, c.B)
    need(not c.drop, "dropout = %s with NPRE = %d: attention dropout with a prefix is not supported",
         tostring(p), c.NPRE)
  end
  return c
end

local TP = { "B", "T", "H", "HKV", "DQK", "DV", "LDQ", "LDK", "LDV", "QOFF", "KOFF", "VOFF",
             "QHS", "KHS", "VHS", "WINDOW", "SINK", "ALIBI", "ROPE", "ROPE_DIM", "KROT" }
local CONSTS = { "scale", "rope_base" }
local TP_DROP, TP_PRE, CONSTS_DROP = {}, {}, { "scale", "rope_base", "dropout" }
for i, k in ipairs(TP) do TP_DROP[i], TP_PRE[i] = k, k end
TP_DROP[#TP + 1] = "stream"
TP_PRE[#TP + 1], TP_PRE[#TP + 2] = "NPRE", "NREP"
local function tparams(a) return drop_on(a) and TP_DROP or pre_on(a) and TP_PRE or TP end
local function consts(a) return drop_on(a) and CONSTS_DROP or CONSTS end
-- tile sizes: keep in step with ag_bn_fwd / ag_bn_dq / ag_bq in attention_gen.cuh
local function bn_fwd(c) return 64 end
local function bn_dq(c) return c.DQK <= 128 and 64 or 32 end
-- blocks per SM for __launch_bounds__(128, min_blocks): keep in step with ag_min_blocks
local function min_blocks(c, bwd)
  -- ALiBi and grouped kv heads add live registers in the backward: 3 blocks per SM spilled there
  return (c.DQK + c.DV <= 128 and not c.drop and not (bwd and (c.ROPE ~= 0 or c.ALIBI ~= 0 or c.HKV ~= c.H
         or not pow2(c.DQK) or not pow2(c.DV)))) and 3 or 2
end
local function bq(c) return (c.DQK + c.DV <= 128) and 64 or ((c.DQK + c.DV <= 256) and 32 or 16) end
-- blocks per dK/dV cluster: keep in step with ag_cluster
local function cluster(c)
  local G, best = c.H // c.HKV, 1
  for d = 2, math.min(8, G) do
    if G % d == 0 then best = d end
  end
  return best
end
-- the wgmma kernels (attention_wg.cuh): keep in step with wg_dim_ok, wg_bn_fwd, wg_bn_dq, wg_bq, wg_smem_*
local function wg(c, o, kernel)
  local can = o ~= nil and o.arch == "sm_90a" and not c.drop and c.NPRE == 0 and
              (c.DQK == 64 or c.DQK == 128 or c.DQK == 192) and (c.DV == 64 or c.DV == 128)
  if not can then return false end
  if kernel == "fwd" then return c.ROPE == 0 or c.KROT == 1 end
  if kernel == "dkdv" then return cluster(c) == 1 end
  return true
end
local function wg_smem(c, kernel)
  local sum = c.DQK + c.DV
  if kernel == "fwd" then return 1024 + (64 * c.DQK + 2 * 64 * sum) * 2 end
  if kernel == "dq" then return 1024 + (64 * sum + 2 * (c.DQK <= 128 and 64 or 32) * sum) * 2 end
  local q = sum <= 128 and 64 or 32
  return 1024 + (64 * sum + 2 * q * sum) * 2 + 4 * q * 4
end
local WG_FILES = { "attention_gen.cuh", "attention_wg.cuh" }
-- fn and files of a kernel: the wgmma entry point (name .. "_wg") where wg() holds
local function pick(name, what, kernel)
  return function(a, o) return wg(cfg(a, what), o, kernel) and (name .. "_wg") or name end,
         function(a, o) return wg(cfg(a, what), o, kernel) and WG_FILES or nil end
end
local fwd_fn, fwd_files = pick("attn_fwd", "attn", "fwd")
local dkdv_fn, dkdv_files = pick("attn_bwd_dkdv", "attn_bwd_dkdv", "dkdv")
local dq_fn, dq_files = pick("attn_bwd_dq", "attn_bwd_dq", "dq")
local args_bwd_in = { {"q","const bf16*"}, {"k","const bf16*"}, {"v","const bf16*"}, {"dout","const bf16*"},
                      {"lse","const float*"}, {"delta","const float*"} }
local function with(base, extra)
  local t = {}
  for _, a in ipairs(base) do t[#t + 1] = a end
  for _, a in ipairs(extra) do t[#t + 1] = a end
  return t
end
local DROPCTR = { {"dropctr","const int*"} }
local PREFIX = { {"pk","const bf16*"}, {"pv","const bf16*"} }
-- with a prefix: pk, pv inserted after the first three inputs (q, k, v), `pre_out` after the outputs
local function with_prefix(inputs, outputs, pre_out)
  local t = {}
  for i, a in ipairs(inputs) do
    t[#t + 1] = a
    if i == 3 then for _, x in ipairs(PREFIX) do t[#t + 1] = x end end
  end
  return with(with(t, outputs), pre_out)
end
-- kernel arguments: the inputs, `dropctr` when the op has dropout, then the outputs, then (the forward with
-- RoPE) `rope_out`, the rotated copies qr, kr — qr alone when k arrives rotated (KROT = 1)
local function args_of(inputs, outputs, pre_out, rope_out)
  local function variants(outs)
    return { with(inputs, outs), with(with(inputs, DROPCTR), outs), with_prefix(inputs, outs, pre_out or {}) }
  end
  local plain = variants(outputs)
  local rope = rope_out and { [0] = variants(with(outputs, rope_out)), [1] = variants(with(outputs, { rope_out[1] })) }
  return function(a)
    local v = plain
    if rope and I(a, "ROPE", "attn") ~= 0 then v = rope[I(a, "KROT", "attn")] end
    return drop_on(a) and v[2] or pre_on(a) and v[3] or v[1]
  end
end
-- lanes per (row, head) of attn_bwd_pre: the largest power of two dividing DV/8 (attn_bwd_pre_lanes)
local function pre_lanes(DV)
  local n = DV // 8
  return n % 16 == 0 and 16 or n % 8 == 0 and 8 or n % 4 == 0 and 4 or 2
end

return {
  file = "attention_gen.cuh",
  kernels = {
    attn = {
      fn = fwd_fn, files = fwd_files, tparams = tparams, consts = consts,
      args = args_of({ {"q","const bf16*"}, {"k","const bf16*"}, {"v","const bf16*"} },
                     { {"out","bf16*"}, {"lse","float*"} }, nil, { {"qr","bf16*"}, {"kr","bf16*"} }),
      -- smem: Q [64][DQK+8] + K [2][BN][DQK+8] + V [2][BN][DV+8]
      launch = function(a, o)
        local c = cfg(a, "attn")
        local bn = bn_fwd(c)
        local w = wg(c, o, "fwd")
        return { grid = {c.B * c.H, (c.T + 63) // 64, 1}, block = {128, 1, 1}, min_blocks = w and 2 or min_blocks(c, false),
                 smem = w and wg_smem(c, "fwd") or ((64 + 2 * bn) * (c.DQK + 8) + 2 * bn * (c.DV + 8)) * 2 }
      end,
    },
    attn_bwd_pre = {
      fn = "attn_bwd_pre", tparams = { "B", "T", "H", "DV" }, consts = {},
      args = { {"out","const bf16*"}, {"dout","const bf16*"}, {"delta","float*"} },
      -- pre_lanes(DV) threads per (row, head)
      launch = function(a)
        local B, T, H, DV = I(a, "B", "attn_bwd_pre"), I(a, "T", "attn_bwd_pre"), I(a, "H", "attn_bwd_pre"),
                            I(a, "DV", "attn_bwd_pre")
        assert(dim_ok(DV, false), "attn_bwd_pre: DV = " .. DV .. " is not a multiple of 16 in [16, 128]")
        assert(B >= 1 and T >= 1 and H >= 1, "attn_bwd_pre: B, T, H must be positive")
        local threads = B * T * H * pre_lanes(DV)
        return { grid = {(threads + 255) // 256, 1, 1}, block = {256, 1, 1}, smem = 0 }
      end,
    },
    attn_bwd_dkdv = {
      fn = dkdv_fn, files = dkdv_files, tparams = tparams, consts = consts,
      args = args_of(args_bwd_in, { {"dk","bf16*"}, {"dv","bf16*"} }, { {"dpk","float*"}, {"dpv","float*"} }),
      -- smem: K [64][DQK+8] + V [64][DV+8] + Q [2][BQ][DQK+8] + dO [2][BQ][DV+8] + lse, delta [2][BQ] f32;
      -- with a cluster at least the f32 staging [64][DQK + DV + 4] (ag_smem_dkdv)
      -- grid: ⌈NPRE/64⌉ prefix blocks, then the ⌈T/64⌉ key tiles, per (b, kv head, rank in the cluster)
      launch = function(a, o)
        local c = cfg(a, "attn_bwd_dkdv")
        local q, cl = bq(c), cluster(c)
        if wg(c, o, "dkdv") then
          return { grid = {c.B * c.HKV, (c.T + 63) // 64, 1}, block = {128, 1, 1}, min_blocks = 2, smem = wg_smem(c, "dkdv") }
        end
        local smem = ((64 + 2 * q) * (c.DQK + 8) + (64 + 2 * q) * (c.DV + 8)) * 2 + 4 * q * 4
        if cl > 1 then smem = math.max(smem, 64 * (c.DQK + c.DV + 4) * 4) end
        return { grid = {c.B * c.HKV * cl, (c.NPRE + 63) // 64 + (c.T + 63) // 64, 1}, block = {128, 1, 1},
                 min_blocks = min_blocks(c, true), cluster = cl > 1 and cl or nil, smem = smem }
      end,
    },
    attn_bwd_dq = {
      fn = dq_fn, files = dq_files, tparams = tparams, consts = consts,
      args = args_of(args_bwd_in, { {"dq","bf16*"} }),
      -- smem: Q [64][DQK+8] + dO [64][DV+8] + K [2][BN][DQK+8] + V [2][BN][DV+8]
      launch = function(a, o)
        local c = cfg(a, "attn_bwd_dq")
        local bn = bn_dq(c)
        local w = wg(c, o, "dq")
        return { grid = {c.B * c.H, (c.T + 63) // 64, 1}, block = {128, 1, 1}, min_blocks = w and 2 or min_blocks(c, true),
                 smem = w and wg_smem(c, "dq") or ((64 + 2 * bn) * (c.DQK + 8) + (64 + 2 * bn) * (c.DV + 8)) * 2 }
      end,
    },
  },
}
