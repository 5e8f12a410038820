-- gen/memplan.lua — pass `memory`: lay out the parameter arena and plan activation buffers.
--
-- Parameters: decayed parameters first (so AdamW needs one boundary, n_decay), each at a multiple
-- of 128 elements (16-byte aligned vectors in bf16 and f32, cuBLASLt's alignment wants 16 bytes).
--
-- Activations: every act tensor (through its alias root) is one buffer live from the first op
-- that touches it to the last, in the micro-step order fwd…bwd. Buffers whose lifetimes do not
-- overlap share memory: greedy placement, largest first, each at the lowest offset that collides
-- with no placed buffer alive at the same time. The plan is made twice — GPU bytes (bf16/f32)
-- and CPU f32 elements — with the same lifetimes, so the CPU backend exercises the same reuse.
local util = require "util"
local M = {}

local SIZE = { bf16 = 2, f32 = 4, i32 = 4 }
local PARAM_ALIGN, GPU_ALIGN, CPU_ALIGN = 128, 256, 64

local function layout_params(g)
  local ordered = {}
  for _, p in ipairs(g.params) do if p.decay then ordered[#ordered + 1] = p end end
  for _, p in ipairs(g.params) do if not p.decay then ordered[#ordered + 1] = p end end
  local off, n_decay = 0, 0
  for _, p in ipairs(ordered) do
    p.offset = off
    off = util.round_up(off + p.numel, PARAM_ALIGN)
    if p.decay then n_decay = off end
  end
  g.params = ordered
  g.param_elems = off
  g.n_decay = n_decay
  for _, op in ipairs(g.ops) do
    if op.kind == "adamw" or op.kind == "sumsq" then
      op.attrs.n = off
      if op.kind == "adamw" then op.attrs.n_decay = n_decay end
    end
  end
end

-- Place intervals [first,last] of given sizes; returns offsets and the arena size. O(n²) in the
-- buffer count (~1000 for a 24-layer model), so the inner loop touches only precomputed numbers.
local function place(bufs, sizeof, align)
  local n, size, first, last = #bufs, {}, {}, {}
  local order = {}
  for i = 1, n do
    order[i], size[i] = i, util.round_up(sizeof(bufs[i]), align)
    first[i], last[i] = bufs[i].first, bufs[i].last
  end
  table.sort(order, function(a, b)
    if size[a] ~= size[b] then return size[a] > size[b] end
    return first[a] < first[b]
  end)
  -- placed: the placed buffers sorted by offset, so the first gap that fits is found in one scan
  -- over the live ones without sorting them per buffer
  local placed, offs, top = {}, {}, 0
  for _, i in ipairs(order) do
    local fi, li, si = first[i], last[i], size[i]
    local off = 0
    for k = 1, #placed do
      local j = placed[k]
      if not (last[j] < fi or li < first[j]) then
        if off + si <= offs[j] then break end
        local e = offs[j] + size[j]
        if e > off then off = e end
      end
    end
    offs[i] = off
    local k = #placed + 1
    while k > 1 and offs[placed[k - 1]] > off do placed[k] = placed[k - 1]; k = k - 1 end
    placed[k] = i
    if off + si > top then top = off + si end
  end
  return offs, top
end

function M.run(g)
  layout_params(g)
  -- lifetimes over the micro-step's op order (opt ops never touch activations)
  local index, bufs = {}, {}
  for i, op in ipairs(g.ops) do
    for _, r in ipairs(op.refs) do
      local t = g.tensors[r.tensor]
      if t.kind == "act" then
        local root = g:root(r.tensor)
        local b = index[root]
        if not b then
          local rt = g.tensors[root]
          b = { name = root, dtype = rt.dtype, numel = util.prod(rt.shape), first = i, last = i }
          index[root] = b
          bufs[#bufs + 1] = b
        end
        if i < b.first then b.first = i end
        if i > b.last then b.last = i end
      end
    end
  end
  -- buffers kept across runs of a phase (the decode program's KV cache) live over all its ops
  local span = {}
  for i, op in ipairs(g.ops) do
    local s = span[op.phase] or { i, i }
    s[2] = i
    span[op.phase] = s
  end
  for _, b in ipairs(bufs) do
    local keep = g.tensors[b.name].keep
    if keep then b.first, b.last = span[keep][1], span[keep][2] end
  end
  table.sort(bufs, function(a, b) return a.first < b.first or (a.first == b.first and a.name < b.name) end)
  for i, b in ipairs(bufs) do b.index = i - 1 end
  for name, t in pairs(g.tensors) do
    if t.kind == "act" then
      local b = index[g:root(name)]
      if b then t.buffer = b.index end
    end
  end
  local goffs, gtop = place(bufs, function(b) return b.numel * SIZE[b.dtype] end, GPU_ALIGN)
  local coffs, ctop = place(bufs, function(b) return b.numel end, CPU_ALIGN)
  local naive = 0
  for i, b in ipairs(bufs) do
    b.gpu_off, b.cpu_off = goffs[i], coffs[i]
    naive = naive + util.round_up(b.numel * SIZE[b.dtype], GPU_ALIGN)
  end
  g.buffers = bufs
  g.memory = { gpu_bytes = gtop, cpu_elems = ctop, unshared_bytes = naive }
  return g
end

M.SIZE = SIZE
return M
