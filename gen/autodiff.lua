-- gen/autodiff.lua — pass `backward`: derive the backward ops from the forward graph, then append
-- the optimizer ops.
--
-- Reverse-mode: walk the forward ops last to first; each op kind has one rule that reads the
-- gradients of its outputs and emits the ops producing the gradients of its inputs. Gradients of
-- activations are bf16 buffers named "d:<tensor>"; a second contribution to the same gradient is
-- emitted with acc = 1 (beta = 1 for matmul) instead of a separate add. Parameter gradients are
-- slices of the f32 grads arena and always accumulate (the runtime zeroes them once per step).
local IR = require "ir"
local M = {}

local RULES = {}

-- State of the derivation: which tensors need gradients, and the gradient of each.
local function new_state(g)
  local st = { g = g, grad = {}, started = {}, needs = {} }
  for name, t in pairs(g.tensors) do if t.kind == "param" then st.needs[name] = true end end
  for _, op in ipairs(g.ops) do
    if op.phase ~= "fwd" then goto continue end
    local any = false
    for _, r in ipairs(op.refs) do if not r.out and st.needs[r.tensor] then any = true end end
    if any then for _, r in ipairs(op.refs) do if r.out then st.needs[r.tensor] = true end end end
    ::continue::
  end
  return st
end

-- The gradient tensor to write for x, and whether it accumulates into an earlier contribution.
local function grad_target(st, x)
  local t = st.g.tensors[x]
  if t.kind == "param" then return "grad:" .. t.param, 1 end
  local gname = st.grad[x]
  if gname then
    local acc = st.started[gname] and 1 or 0
    st.started[gname] = true
    return gname, acc
  end
  gname = "d:" .. x
  st.g:tensor(gname, t.shape, "bf16")
  st.grad[x] = gname
  st.started[gname] = true
  return gname, 0
end

-- The gradient of output y if anything upstream needs it, else nil.
local function grad_of(st, y) return st.grad[y] end

RULES.loss_sum = function(st, op)
  -- d loss / d losses[i] = scale: a constant, consumed by the xent rule as its `scale` attr
  st.seed = { tensor = IR.ref(op, "losses"), scale = op.attrs.scale }
end

RULES.xent = function(st, op)
  local logits = IR.ref(op, "logits")
  assert(st.seed and st.seed.tensor == IR.ref(op, "losses"), "xent losses must feed loss_sum")
  if not st.needs[logits] then return end
  local dl, acc = grad_target(st, logits)
  assert(acc == 0, "xent: logits gradient must be its only contribution")
  local a = op.attrs
  st.g:op("xent_bwd", "bwd", op.name, { { "logits", logits }, { "targets", IR.ref(op, "targets") }, { "dlogits", dl, out = true } },
    { N = a.N, V = a.V, Vp = a.Vp, scale = st.seed.scale })
end

RULES.matmul = function(st, op)
  local a, b, c, bias = IR.ref(op, "a"), IR.ref(op, "b"), IR.ref(op, "c"), IR.ref(op, "bias")
  local dc = grad_of(st, c)
  if not dc then return end
  local at = op.attrs
  assert(at.ta == 0 and at.tb == 1 and (at.epi == 0 or at.epi == 1), "matmul rule covers Y = X·Wᵀ (+ b) only")
  local g = st.g
  if st.needs[a] then -- dX = dY · W        [M,K] = [M,N]·[N,K]
    local da, acc = grad_target(st, a)
    g:op("matmul", "bwd", op.name .. ".dx", { { "a", dc }, { "b", b }, { "c", da, out = true } },
      { M = at.M, N = at.K, K = at.N, ta = 0, tb = 0, beta = acc, epi = 0 })
  end
  if st.needs[b] then -- dW += dYᵀ · X      [N,K] = [M,N]ᵀ·[M,K]
    local db, acc = grad_target(st, b)
    g:op("matmul", "bwd", op.name .. ".dw", { { "a", dc }, { "b", a }, { "c", db, out = true } },
      { M = at.N, N = at.K, K = at.M, ta = 1, tb = 0, beta = acc, epi = 0 })
  end
  if bias then
    local dbias = grad_target(st, bias)
    g:op("bias_grad", "bwd", op.name .. ".db", { { "dout", dc }, { "db", dbias, out = true } }, { N = at.M, C = at.N })
  end
end

RULES.layernorm = function(st, op)
  local x, w, b = IR.ref(op, "x"), IR.ref(op, "w"), IR.ref(op, "b")
  local mean, rstd = IR.ref(op, "mean"), IR.ref(op, "rstd")
  local dout = grad_of(st, IR.ref(op, "out"))
  if not dout then return end
  local at = op.attrs
  -- parameters first: this reads dout before anything can accumulate into a shared gradient
  st.g:op("layernorm_bwd_params", "bwd", op.name .. ".dparams", {
    { "dout", dout }, { "x", x }, { "mean", mean }, { "rstd", rstd },
    { "dw", (grad_target(st, w)), out = true }, { "db", (grad_target(st, b)), out = true } }, { N = at.N, C = at.C })
  if st.needs[x] then
    local dx, acc = grad_target(st, x)
    st.g:op("layernorm_bwd", "bwd", op.name .. ".dx", {
      { "dout", dout }, { "x", x }, { "w", w }, { "mean", mean }, { "rstd", rstd }, { "dx", dx, out = true } },
      { N = at.N, C = at.C, acc = acc })
  end
end

-- out = a + b: both inputs receive dout unchanged. The first contribution shares dout's buffer
-- (no copy); later contributions accumulate into it, which is safe because reverse order runs
-- every reader of dout (the other branch's backward) before the accumulating op.
RULES.add = function(st, op)
  local dout = grad_of(st, IR.ref(op, "out"))
  if not dout then return end
  for _, role in ipairs { "a", "b" } do
    local x = IR.ref(op, role)
    if st.needs[x] then
      if st.grad[x] then
        local gx, acc = grad_target(st, x)
        assert(acc == 1)
        st.g:op("add", "bwd", op.name .. ".d" .. role, { { "a", gx }, { "b", dout }, { "out", gx, out = true } }, { n = op.attrs.n })
      else
        st.grad[x] = dout
      end
    end
  end
end

RULES.gelu = function(st, op)
  local x = IR.ref(op, "x")
  local dout = grad_of(st, IR.ref(op, "out"))
  if not dout or not st.needs[x] then return end
  local dx, acc = grad_target(st, x)
  st.g:op("gelu_bwd", "bwd", op.name, { { "x", x }, { "dout", dout }, { "dx", dx, out = true } }, { n = op.attrs.n, acc = acc })
end

RULES.attention = function(st, op)
  local qkv, out, lse = IR.ref(op, "qkv"), IR.ref(op, "out"), IR.ref(op, "lse")
  local dout = grad_of(st, out)
  if not dout then return end
  local at = op.attrs
  local g = st.g
  local delta = g:tensor(op.name .. ".delta", { at.B, at.H, at.T }, "f32")
  local shape = { B = at.B, T = at.T, H = at.H, d = at.d }
  g:op("attention_bwd_pre", "bwd", op.name .. ".delta", { { "out", out }, { "dout", dout }, { "delta", delta, out = true } }, shape)
  local dqkv, acc = grad_target(st, qkv)
  assert(acc == 0, "attention: qkv gradient must be its only contribution")
  local refs = { { "qkv", qkv }, { "dout", dout }, { "lse", lse }, { "delta", delta }, { "dqkv", dqkv, out = true } }
  g:op("attention_bwd_dkdv", "bwd", op.name .. ".dkdv", refs, shape)
  g:op("attention_bwd_dq", "bwd", op.name .. ".dq", refs, shape)
end

RULES.embed = function(st, op)
  local dout = grad_of(st, IR.ref(op, "out"))
  if not dout then return end
  local at = op.attrs
  st.g:op("embed_bwd_tok", "bwd", op.name .. ".dwte", { { "tokens", IR.ref(op, "tokens") }, { "tokidx", "tokidx" },
    { "dout", dout }, { "dwte", (grad_target(st, IR.ref(op, "wte"))), out = true } }, { N = at.N, D = at.D })
  st.g:op("embed_bwd_pos", "bwd", op.name .. ".dwpe", { { "dout", dout },
    { "dwpe", (grad_target(st, IR.ref(op, "wpe"))), out = true } }, { N = at.N, T = at.T, D = at.D })
end

-- Optimizer: global gradient norm (partial sums, finished inside adamw) and the AdamW update.
local function append_optimizer(g)
  local tr = g.cfg.train
  local G = 512
  g:op("sumsq", "opt", "grad_norm", { { "grads", "grads" }, { "partials", "partials", out = true } }, { n = 0, G = G })
  g:op("adamw", "opt", "adamw", {
    { "master", "master", out = true }, { "params", "params", out = true }, { "grads", "grads" },
    { "m", "adam_m", out = true }, { "v", "adam_v", out = true }, { "scal", "scal" }, { "partials", "partials" },
  }, { n = 0, n_decay = 0, G = G, wd = tr.weight_decay, beta1 = tr.beta1, beta2 = tr.beta2, eps = tr.eps, clip = tr.grad_clip })
  -- n and n_decay are the arena sizes, known once the memory pass lays the arena out
end

function M.derive(g)
  local st = new_state(g)
  local nfwd = #g.ops
  for i = nfwd, 1, -1 do
    local op = g.ops[i]
    if op.phase == "fwd" then
      local rule = RULES[op.kind]
      assert(rule, "no backward rule for op kind " .. op.kind)
      rule(st, op)
    end
  end
  append_optimizer(g)
  g:order_by_phase()
  return g
end

return M
