-- gen/ir.lua — the graph IR shared by every pass: tensors, parameters and ops as plain tables.
--
--   g.tensors[name] = { name, shape = {...}, dtype = "bf16"|"f32"|"i32", kind, param?, alias? }
--     kind: "act" (a buffer of the memory plan), "param"/"grad" (slices of the parameter
--     arenas), "input" (tokens, targets, tokidx), "special" (loss, scal, partials, whole arenas)
--   g.params[i]   = { name, shape, numel, init, std, decay }
--   g.ops[i]      = { kind, phase = "fwd"|"bwd"|"opt", name, attrs = {...},
--                     refs = { {role, tensor, out = bool}, ... } }
local util = require "util"
local M = {}
M.__index = M

function M.new(cfg)
  local g = setmetatable({ name = cfg.name, cfg = cfg, tensors = {}, params = {}, ops = {}, ntensors = 0 }, M)
  for _, s in ipairs { "loss", "scal", "partials", "params", "master", "grads", "adam_m", "adam_v" } do
    g:tensor(s, { 1 }, "f32", "special")
  end
  return g
end

function M:tensor(name, shape, dtype, kind)
  assert(not self.tensors[name], "tensor defined twice: " .. name)
  local t = { name = name, shape = shape, dtype = dtype, kind = kind or "act" }
  self.tensors[name] = t
  self.ntensors = self.ntensors + 1
  return name
end

function M:input(name, shape)
  return self:tensor(name, shape, "i32", "input")
end

-- A trainable parameter: its value lives in the params arena, its gradient in the grads arena.
-- Asking again for an existing parameter returns it (the decode program shares the weights).
-- A frozen parameter (the sinusoidal table) gets no gradient op.
function M:param(name, shape, init, std, decay, frozen)
  local existing = self.tensors["param:" .. name]
  if existing then
    assert(util.prod(existing.shape) == util.prod(shape), "parameter " .. name .. " redefined with another shape")
    return existing.name
  end
  local p = { name = name, shape = shape, numel = util.prod(shape), init = init, std = std or 0, decay = decay,
    frozen = frozen or false }
  self.params[#self.params + 1] = p
  local t = self.tensors[self:tensor("param:" .. name, shape, "bf16", "param")]
  t.param, t.frozen = name, p.frozen
  self.tensors[self:tensor("grad:" .. name, shape, "f32", "grad")].param = name
  return "param:" .. name
end

-- Append an op. refs: list of {role, tensor} (inputs) and {role, tensor, out = true} (outputs).
function M:op(kind, phase, name, refs, attrs)
  for _, r in ipairs(refs) do
    assert(self.tensors[r[2]], "op " .. kind .. " " .. tostring(name) .. ": unknown tensor " .. tostring(r[2]))
  end
  local op = { kind = kind, phase = phase, name = name, attrs = attrs or {}, refs = {} }
  for _, r in ipairs(refs) do op.refs[#op.refs + 1] = { role = r[1], tensor = r[2], out = r.out or false } end
  self.ops[#self.ops + 1] = op
  return op
end

function M.ref(op, role)
  for _, r in ipairs(op.refs) do if r.role == role then return r.tensor end end
  return nil
end

function M.set_ref(op, role, tensor)
  for _, r in ipairs(op.refs) do if r.role == role then r.tensor = tensor; return end end
  error("op " .. op.kind .. " has no ref " .. role)
end

-- List ops grouped by phase — fwd, bwd, opt, dec — keeping their order within a phase. The
-- memory plan reads lifetimes off this order, so the decode program (which never runs inside a
-- training step) lands after the optimizer and reuses the training activations' memory.
local PHASE_ORDER = { fwd = 1, bwd = 2, opt = 3, dec = 4 }
function M:order_by_phase()
  local groups = { {}, {}, {}, {} }
  for _, op in ipairs(self.ops) do
    local k = assert(PHASE_ORDER[op.phase], "unknown phase " .. tostring(op.phase))
    groups[k][#groups[k] + 1] = op
  end
  self.ops = {}
  for _, grp in ipairs(groups) do for _, op in ipairs(grp) do self.ops[#self.ops + 1] = op end end
end

-- Follow alias links to the tensor that owns the storage.
function M:root(name)
  local t = self.tensors[name]
  while t.alias do t = self.tensors[t.alias] end
  return t.name
end

-- The ops that read tensor `name` (by storage root), as indices.
function M:readers(name)
  local root, out = self:root(name), {}
  for i, op in ipairs(self.ops) do
    for _, r in ipairs(op.refs) do
      if not r.out and self.tensors[r.tensor].kind == "act" and self:root(r.tensor) == root then out[#out + 1] = i; break end
    end
  end
  return out
end

return M
