-- gen/fuse.lua — pass `fusion`: rewrite patterns of the derived graph into fewer, larger ops.
--
-- Each rule matches ops by kind and by who reads which tensor, rewrites in place, and removes the
-- absorbed ops. Rules only fire when no other op observes the intermediate they make disappear,
-- so the fused graph computes exactly what the unfused one did (the CPU backend runs both).
--
--   gelu_epilogue   matmul(+bias) → gelu          ⇒ matmul epi=gelu_bias (pre-activation kept as aux)
--   dgelu_epilogue  matmul(dX)    → gelu_bwd       ⇒ matmul epi=dgelu (reads aux)
--   add_norm        add           → layer/rms/dyt   ⇒ add_<norm> (one pass over the residual)
--   xent_inplace    xent          + xent_bwd       ⇒ xent grad=1, dlogits written over the logits
local IR = require "ir"
local M = {}

local EPI_BIAS, EPI_GELU_BIAS, EPI_DGELU = 1, 2, 3

-- Indices of ops that reference tensor `name` (any role, in or out), excluding `skip`.
local function users(g, name, skip)
  local out = {}
  for i, op in ipairs(g.ops) do
    if op ~= skip then
      for _, r in ipairs(op.refs) do if r.tensor == name then out[#out + 1] = op; break end end
    end
  end
  return out
end

local function producer(g, name)
  for _, op in ipairs(g.ops) do
    for _, r in ipairs(op.refs) do if r.out and r.tensor == name then return op end end
  end
end

local function remove(g, dead)
  local keep = {}
  for _, op in ipairs(g.ops) do if not dead[op] then keep[#keep + 1] = op end end
  g.ops = keep
end

local function drop_tensor(g, name)
  g.tensors[name] = nil
  g.ntensors = g.ntensors - 1
end

local RULES = {}

RULES[#RULES + 1] = { name = "gelu_epilogue", run = function(g)
  local dead = {}
  for _, op in ipairs(g.ops) do
    if op.kind == "gelu" and (op.phase == "fwd" or op.phase == "dec") then
      local h, a = IR.ref(op, "x"), IR.ref(op, "out")
      local mm = producer(g, h)
      if mm and mm.kind == "matmul" and mm.attrs.epi == EPI_BIAS then
        -- h is now only the aux output: gelu and gelu_bwd keep reading it
        IR.set_ref(mm, "c", a)
        mm.refs[#mm.refs + 1] = { role = "aux", tensor = h, out = true }
        mm.attrs.epi = EPI_GELU_BIAS
        dead[op] = true
      end
    end
  end
  remove(g, dead)
end }

RULES[#RULES + 1] = { name = "dgelu_epilogue", run = function(g)
  local dead = {}
  for _, op in ipairs(g.ops) do
    if op.kind == "gelu_bwd" and op.attrs.acc == 0 then
      local da, dh, h = IR.ref(op, "dout"), IR.ref(op, "dx"), IR.ref(op, "x")
      local mm = producer(g, da)
      local others = users(g, da, op)
      if mm and mm.kind == "matmul" and mm.attrs.epi == 0 and mm.attrs.beta == 0 and #others == 1 and others[1] == mm then
        IR.set_ref(mm, "c", dh)
        mm.refs[#mm.refs + 1] = { role = "aux", tensor = h }
        mm.attrs.epi = EPI_DGELU
        dead[op] = true
        drop_tensor(g, da)
      end
    end
  end
  remove(g, dead)
end }

-- The refs of the fused add+norm kinds (docs/ir.md, docs/ir_decoder.md): the add's a, b, then the
-- norm's parameters (its `b` renamed `bias`), then sum and the norm's outputs.
local ADD_NORM = {
  layernorm = { kind = "add_layernorm", params = { "w", "b" }, outs = { "out", "mean", "rstd" } },
  rmsnorm = { kind = "add_rmsnorm", params = { "w" }, outs = { "out", "rstd" } },
  dyt = { kind = "add_dyt", params = { "alpha", "w", "b" }, outs = { "out" } },
}

RULES[#RULES + 1] = { name = "add_norm", run = function(g)
  local dead = {}
  for i, ln in ipairs(g.ops) do
    local f = ADD_NORM[ln.kind]
    if f then
      local s = IR.ref(ln, "x")
      local add = producer(g, s)
      -- the add must come right before (nothing in between may read the sum)
      if add and add.kind == "add" and add.phase == ln.phase and g.ops[i - 1] == add then
        ln.kind = f.kind
        local refs = { { role = "a", tensor = IR.ref(add, "a") }, { role = "b", tensor = IR.ref(add, "b") } }
        for _, r in ipairs(f.params) do refs[#refs + 1] = { role = r == "b" and "bias" or r, tensor = IR.ref(ln, r) } end
        refs[#refs + 1] = { role = "sum", tensor = s, out = true }
        for _, r in ipairs(f.outs) do refs[#refs + 1] = { role = r, tensor = IR.ref(ln, r), out = true } end
        ln.refs = refs
        ln.name = add.name .. "+" .. ln.name
        dead[add] = true
      end
    end
  end
  remove(g, dead)
end }

RULES[#RULES + 1] = { name = "xent_inplace", run = function(g)
  local dead = {}
  for _, op in ipairs(g.ops) do
    if op.kind == "xent_bwd" then
      local logits, dl = IR.ref(op, "logits"), IR.ref(op, "dlogits")
      local fwd = producer(g, "loss.tokens")
      local readers = users(g, logits, op)
      -- logits may only be read by the forward xent (which is where the gradient now gets written)
      if fwd and fwd.kind == "xent" and #readers == 2 then
        fwd.attrs.grad = 1
        for _, r in ipairs(fwd.refs) do if r.role == "logits" then r.out = true end end
        g.tensors[dl].alias = logits
        dead[op] = true
      end
    end
  end
  remove(g, dead)
end }

function M.run(g)
  g.fused = {}
  for _, rule in ipairs(RULES) do
    local before = #g.ops
    rule.run(g)
    g.fused[#g.fused + 1] = string.format("%s: %d ops removed", rule.name, before - #g.ops)
  end
  return g
end

return M
