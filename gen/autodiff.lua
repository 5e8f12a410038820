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
  for name, t in pairs(g.tensors) do if t.kind == "param" and not t.frozen then st.needs[name] = true end end
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
  if bias and st.needs[bias] then -- a frozen bias gets no gradient op
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
  if st.needs[w] or st.needs[b] then -- frozen (weight and bias together): no gradient op
    assert(st.needs[w] and st.needs[b], "layernorm: weight and bias must be frozen together")
    st.g:op("layernorm_bwd_params", "bwd", op.name .. ".dparams", {
      { "dout", dout }, { "x", x }, { "mean", mean }, { "rstd", rstd },
      { "dw", (grad_target(st, w)), out = true }, { "db", (grad_target(st, b)), out = true } }, { N = at.N, C = at.C })
  end
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
  if st.needs[IR.ref(op, "wte")] then
    st.g:op("embed_bwd_tok", "bwd", op.name .. ".dwte", { { "tokens", IR.ref(op, "tokens") }, { "tokidx", "tokidx" },
      { "dout", dout }, { "dwte", (grad_target(st, IR.ref(op, "wte"))), out = true } }, { N = at.N, D = at.D })
  end
  if st.needs[IR.ref(op, "wpe")] then -- a frozen (sinusoidal) table has no gradient
    st.g:op("embed_bwd_pos", "bwd", op.name .. ".dwpe", { { "dout", dout },
      { "dwpe", (grad_target(st, IR.ref(op, "wpe"))), out = true } }, { N = at.N, T = at.T, D = at.D })
  end
end

RULES.embed_tok = function(st, op)
  local dout = grad_of(st, IR.ref(op, "out"))
  if not dout or not st.needs[IR.ref(op, "wte")] then return end -- a frozen table has no gradient
  st.g:op("embed_bwd_tok", "bwd", op.name .. ".dwte", { { "tokens", IR.ref(op, "tokens") }, { "tokidx", "tokidx" },
    { "dout", dout }, { "dwte", (grad_target(st, IR.ref(op, "wte"))), out = true } }, { N = op.attrs.N, D = op.attrs.D })
end

RULES.rmsnorm = function(st, op)
  local x, w, rstd = IR.ref(op, "x"), IR.ref(op, "w"), IR.ref(op, "rstd")
  local dout = grad_of(st, IR.ref(op, "out"))
  if not dout then return end
  local at = op.attrs
  if st.needs[w] then -- a frozen weight has no gradient op
    st.g:op("rmsnorm_bwd_params", "bwd", op.name .. ".dparams", { { "dout", dout }, { "x", x }, { "rstd", rstd },
      { "dw", (grad_target(st, w)), out = true } }, { N = at.N, C = at.C })
  end
  if st.needs[x] then
    local dx, acc = grad_target(st, x)
    st.g:op("rmsnorm_bwd", "bwd", op.name .. ".dx", { { "dout", dout }, { "x", x }, { "w", w }, { "rstd", rstd },
      { "dx", dx, out = true } }, { N = at.N, C = at.C, acc = acc })
  end
end

RULES.dyt = function(st, op)
  local x, alpha, w, b = IR.ref(op, "x"), IR.ref(op, "alpha"), IR.ref(op, "w"), IR.ref(op, "b")
  local dout = grad_of(st, IR.ref(op, "out"))
  if not dout then return end
  local at = op.attrs
  if st.needs[w] or st.needs[b] or st.needs[alpha] then -- frozen (all three together): no gradient op
    assert(st.needs[w] and st.needs[b] and st.needs[alpha], "dyt: alpha, weight and bias must be frozen together")
    st.g:op("dyt_bwd_params", "bwd", op.name .. ".dparams", { { "dout", dout }, { "x", x }, { "alpha", alpha }, { "w", w },
      { "dalpha", (grad_target(st, alpha)), out = true }, { "dw", (grad_target(st, w)), out = true },
      { "db", (grad_target(st, b)), out = true } }, { N = at.N, C = at.C })
  end
  if st.needs[x] then
    local dx, acc = grad_target(st, x)
    st.g:op("dyt_bwd", "bwd", op.name .. ".dx", { { "dout", dout }, { "x", x }, { "alpha", alpha }, { "w", w },
      { "dx", dx, out = true } }, { N = at.N, C = at.C, acc = acc })
  end
end

-- relu and silu: dx (+)= dout · act'(x)
for _, kind in ipairs { "relu", "silu" } do
  RULES[kind] = function(st, op)
    local x = IR.ref(op, "x")
    local dout = grad_of(st, IR.ref(op, "out"))
    if not dout or not st.needs[x] then return end
    local dx, acc = grad_target(st, x)
    st.g:op(kind .. "_bwd", "bwd", op.name, { { "x", x }, { "dout", dout }, { "dx", dx, out = true } },
      { n = op.attrs.n, acc = acc })
  end
end

RULES.glu = function(st, op)
  local x = IR.ref(op, "x")
  local dout = grad_of(st, IR.ref(op, "out"))
  if not dout or not st.needs[x] then return end
  local dx, acc = grad_target(st, x)
  assert(acc == 0, "glu: its input's gradient must be its only contribution")
  st.g:op("glu_bwd", "bwd", op.name, { { "x", x }, { "dout", dout }, { "dx", dx, out = true } },
    { N = op.attrs.N, F = op.attrs.F, act = op.attrs.act })
end

RULES.dropout = function(st, op)
  local x = IR.ref(op, "x")
  local dout = grad_of(st, IR.ref(op, "out"))
  if not dout or not st.needs[x] then return end
  local dx, acc = grad_target(st, x)
  st.g:op("dropout_bwd", "bwd", op.name, { { "dout", dout }, { "dropctr", "dropctr" }, { "dx", dx, out = true } },
    { n = op.attrs.n, p = op.attrs.p, stream = op.attrs.stream, acc = acc })
end

RULES.mla_k = function(st, op)
  local dk = grad_of(st, IR.ref(op, "k"))
  if not dk then return end
  local dn, acc1 = grad_target(st, IR.ref(op, "knope"))
  local dr, acc2 = grad_target(st, IR.ref(op, "krope"))
  assert(acc1 == 0 and acc2 == 0, "mla_k: its inputs' gradients must be written here first")
  st.g:op("mla_k_bwd", "bwd", op.name, { { "dk", dk }, { "dknope", dn, out = true }, { "dkrope", dr, out = true } }, op.attrs)
end

-- Generalised attention: q, k, v may be one packed tensor (their gradients then share one
-- buffer, each kernel writing its own columns) or three tensors.
RULES.attn = function(st, op)
  local q, k, v = IR.ref(op, "q"), IR.ref(op, "k"), IR.ref(op, "v")
  local out, lse, ctr = IR.ref(op, "out"), IR.ref(op, "lse"), IR.ref(op, "dropctr")
  local dout = grad_of(st, out)
  if not dout then return end
  local at, g = op.attrs, st.g
  local delta = g:tensor(op.name .. ".delta", { at.B, at.H, at.T }, "f32")
  g:op("attn_bwd_pre", "bwd", op.name .. ".delta", { { "out", out }, { "dout", dout }, { "delta", delta, out = true } },
    { B = at.B, T = at.T, H = at.H, DV = at.DV })
  local dq, dk, dv
  if q == k and k == v then
    local acc
    dq, acc = grad_target(st, q)
    assert(acc == 0, "attn: the packed qkv gradient must be its only contribution")
    dk, dv = dq, dq
  else
    local a1, a2, a3
    dq, a1 = grad_target(st, q)
    dk, a2 = grad_target(st, k)
    dv, a3 = grad_target(st, v)
    assert(a1 + a2 + a3 == 0, "attn: q, k, v gradients must be their only contributions")
  end
  -- ParScale prefixes (docs/ir_parscale.md): pk, pv come right after v; dkdv also writes per-row f32
  -- partials of their gradients, which prefix_grad_reduce sums over each replica's rows into the params
  local pk, pv = IR.ref(op, "pk"), IR.ref(op, "pv")
  -- with RoPE the backward reads the forward's rotated copies (qr, kr) as its q and k
  local qr, kr = IR.ref(op, "qr"), IR.ref(op, "kr")
  local refs = { { "q", qr or q }, { "k", kr or k }, { "v", v } }
  if pk then
    refs[#refs + 1] = { "pk", pk }
    refs[#refs + 1] = { "pv", pv }
  end
  for _, r in ipairs { { "dout", dout }, { "lse", lse }, { "delta", delta } } do refs[#refs + 1] = r end
  if ctr then refs[#refs + 1] = { "dropctr", ctr } end
  local r1 = { table.unpack(refs) }
  r1[#r1 + 1] = { "dk", dk, out = true }
  r1[#r1 + 1] = { "dv", dv, out = true }
  local dpk, dpv
  if pk then
    dpk = g:tensor(op.name .. ".dpk", { at.B, at.HKV, at.NPRE, at.DQK }, "f32")
    dpv = g:tensor(op.name .. ".dpv", { at.B, at.HKV, at.NPRE, at.DV }, "f32")
    r1[#r1 + 1] = { "dpk", dpk, out = true }
    r1[#r1 + 1] = { "dpv", dpv, out = true }
  end
  g:op("attn_bwd_dkdv", "bwd", op.name .. ".dkdv", r1, at)
  local r2 = { table.unpack(refs) }
  r2[#r2 + 1] = { "dq", dq, out = true }
  g:op("attn_bwd_dq", "bwd", op.name .. ".dq", r2, at)
  if pk then
    local Bm = at.B // at.NREP
    for _, x in ipairs { { pk, dpk, at.DQK, ".dpk" }, { pv, dpv, at.DV, ".dpv" } } do
      if st.needs[x[1]] then
        g:op("prefix_grad_reduce", "bwd", op.name .. x[4], { { "partial", x[2] },
          { "grad", (grad_target(st, x[1])), out = true } }, { NREP = at.NREP, Bm = Bm, ROW = at.HKV * at.NPRE * x[3] })
      end
    end
  end
end

-- ParScale (docs/ir_parscale.md). Replication: the embedding gradient sums the P replicas.
RULES.ps_replicate = function(st, op)
  local x = IR.ref(op, "x")
  local dout = grad_of(st, IR.ref(op, "out"))
  if not dout or not st.needs[x] then return end
  local dx, acc = grad_target(st, x)
  local a = op.attrs
  st.g:op("ps_replicate_bwd", "bwd", op.name, { { "dout", dout }, { "dx", dx, out = true } },
    { N = a.N, C = a.C, P = a.P, acc = acc })
end

RULES.interleave = function(st, op)
  local x = IR.ref(op, "x")
  local dout = grad_of(st, IR.ref(op, "out"))
  if not dout or not st.needs[x] then return end
  local dx, acc = grad_target(st, x)
  local a = op.attrs
  st.g:op("interleave_bwd", "bwd", op.name, { { "dout", dout }, { "dx", dx, out = true } },
    { N = a.N, D = a.D, P = a.P, acc = acc })
end

-- Cross-replica attention: one op recomputes the P×P softmax per (position, head) and writes all of dqkv.
RULES.cra = function(st, op)
  local qkv = IR.ref(op, "qkv")
  local dout = grad_of(st, IR.ref(op, "out"))
  if not dout or not st.needs[qkv] then return end
  local dqkv, acc = grad_target(st, qkv)
  assert(acc == 0, "cra: the qkv gradient must be its only contribution")
  st.g:op("cra_bwd", "bwd", op.name, { { "qkv", qkv }, { "dout", dout }, { "lse", IR.ref(op, "lse") },
    { "dqkv", dqkv, out = true } }, op.attrs)
end

-- Aggregation: dh (accumulating if interleave's gradient came first), da (written) and the gradient of
-- fc2's bias b2 (a parameter: accumulated).
RULES.ps_aggregate = function(st, op)
  local h, a = IR.ref(op, "h"), IR.ref(op, "a")
  local dy = grad_of(st, IR.ref(op, "y"))
  if not dy then return end
  local g = st.g
  local dh, acch, da, acca
  if st.needs[h] then dh, acch = grad_target(st, h) end
  if st.needs[a] then da, acca = grad_target(st, a) end
  if not dh and not da then return end
  -- the kernel writes both: a gradient nobody needs goes to a scratch buffer
  if not dh then dh, acch = g:tensor(op.name .. ".dh_unused", g.tensors[h].shape, "bf16"), 0 end
  if not da then da, acca = g:tensor(op.name .. ".da_unused", g.tensors[a].shape, "bf16"), 0 end
  assert(acca == 0, "ps_aggregate: the gradient of a must be its only contribution")
  local b2 = IR.ref(op, "b2")
  assert(st.needs[b2], "ps_aggregate: b2 is a ParScale parameter, never frozen")
  local db2 = grad_target(st, b2)
  local at = op.attrs
  g:op("ps_aggregate_bwd", "bwd", op.name, { { "dy", dy }, { "h", h }, { "w", IR.ref(op, "w") },
    { "dh", dh, out = true }, { "da", da, out = true }, { "db2", db2, out = true } },
    { N = at.N, D = at.D, P = at.P, eps = at.eps, acc = acch })
end

-- Optimizer: global gradient norm (partial sums, finished inside adamw) and the AdamW update.
-- Both run over the arena range [lo, hi) held in the input `optrange` (docs/ir.md: lo and hi as
-- 64-bit integers, each two int32 words): the runtime sets [0, n) on one GPU and this rank's shard
-- under ZeRO-1, so the plan is the same for every number of GPUs.
local function append_optimizer(g)
  local tr = g.cfg.train
  local G = 512
  local range = g:input("optrange", { 4 })
  g:op("sumsq", "opt", "grad_norm", { { "grads", "grads" }, { "partials", "partials", out = true }, { "range", range } },
    { n = 0, G = G })
  g:op("adamw", "opt", "adamw", {
    { "master", "master", out = true }, { "params", "params", out = true }, { "grads", "grads" },
    { "m", "adam_m", out = true }, { "v", "adam_v", out = true }, { "scal", "scal" }, { "partials", "partials" },
    { "range", range },
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
