-- gen/graph.lua — pass `graph`: config → forward op graph with static shapes.
--
-- One builder per family. The forward graph names every intermediate; the backward pass is
-- derived from it (autodiff.lua), never written by hand per model.
local IR = require "ir"
local M = {}

-- The builders take the phase their ops belong to: the training forward ("fwd") and the
-- one-token decode program ("dec") are the same blocks over different row counts and names.

-- Y[N, out] = X[N, in] · Wᵀ (+ b)   — W stored [out, in]
local function linear(g, ph, pfx, name, x, n, din, dout, bias, init_std)
  local w = g:param(name .. ".weight", { dout, din }, "normal", init_std, true)
  local refs = { { "a", x }, { "b", w } }
  local epi = 0
  if bias then
    refs[#refs + 1] = { "bias", g:param(name .. ".bias", { dout }, "zeros", 0, false) }
    epi = 1
  end
  local y = g:tensor(pfx .. name .. ".out", { n, dout }, "bf16")
  refs[#refs + 1] = { "c", y, out = true }
  g:op("matmul", ph, pfx .. name, refs, { M = n, N = dout, K = din, ta = 0, tb = 1, beta = 0, epi = epi })
  return y
end

local function layernorm(g, ph, pfx, name, x, n, c, eps)
  local w = g:param(name .. ".weight", { c }, "ones", 0, false)
  local b = g:param(name .. ".bias", { c }, "zeros", 0, false)
  local out = g:tensor(pfx .. name .. ".out", { n, c }, "bf16")
  local mean = g:tensor(pfx .. name .. ".mean", { n }, "f32")
  local rstd = g:tensor(pfx .. name .. ".rstd", { n }, "f32")
  g:op("layernorm", ph, pfx .. name, {
    { "x", x }, { "w", w }, { "b", b }, { "out", out, out = true }, { "mean", mean, out = true }, { "rstd", rstd, out = true },
  }, { N = n, C = c, eps = eps })
  return out
end

local function add(g, ph, pfx, name, a, b, n, c)
  local out = g:tensor(pfx .. name, { n, c }, "bf16")
  g:op("add", ph, pfx .. name, { { "a", a }, { "b", b }, { "out", out, out = true } }, { n = n * c })
  return out
end

-- The GPT-2 trunk: L pre-LayerNorm blocks (attention via `attend`), the final norm, the tied head.
-- Returns the logits [n, Vp].
local function gpt2_trunk(g, cfg, ph, pfx, x, n, attend)
  local m = cfg.model
  local D, L, Vp = m.d_model, m.n_layer, cfg.derived.vocab_padded
  local proj_std = 0.02 / math.sqrt(2 * L) -- GPT-2: residual projections scaled by 1/√(2L)
  for l = 0, L - 1 do
    local p = "h." .. l
    local h1 = layernorm(g, ph, pfx, p .. ".ln_1", x, n, D, m.ln_eps)
    local qkv = linear(g, ph, pfx, p .. ".attn.c_attn", h1, n, D, 3 * D, true, 0.02)
    local att = attend(l, p, qkv)
    local proj = linear(g, ph, pfx, p .. ".attn.c_proj", att, n, D, D, true, proj_std)
    x = add(g, ph, pfx, p .. ".res_1", x, proj, n, D)
    local h2 = layernorm(g, ph, pfx, p .. ".ln_2", x, n, D, m.ln_eps)
    local fc = linear(g, ph, pfx, p .. ".mlp.c_fc", h2, n, D, 4 * D, true, 0.02)
    local act = g:tensor(pfx .. p .. ".mlp.gelu", { n, 4 * D }, "bf16")
    g:op("gelu", ph, pfx .. p .. ".mlp.gelu", { { "x", fc }, { "out", act, out = true } }, { n = n * 4 * D })
    local mlp = linear(g, ph, pfx, p .. ".mlp.c_proj", act, n, 4 * D, D, true, proj_std)
    x = add(g, ph, pfx, p .. ".res_2", x, mlp, n, D)
  end
  local hf = layernorm(g, ph, pfx, "ln_f", x, n, D, m.ln_eps)
  -- tied head: logits = ln_f(x) · wteᵀ over the padded vocabulary
  local logits = g:tensor(pfx .. "lm_head.logits", { n, Vp }, "bf16")
  g:op("matmul", ph, pfx .. "lm_head", { { "a", hf }, { "b", "param:wte.weight" }, { "c", logits, out = true } },
    { M = n, N = Vp, K = D, ta = 0, tb = 1, beta = 0, epi = 0 })
  return logits
end

-- GPT-2: learned positions, pre-LayerNorm blocks, causal MHA, GELU-tanh MLP, tied head.
function M.gpt2(cfg)
  local m, tr, dv = cfg.model, cfg.train, cfg.derived
  local g = IR.new(cfg)
  local B, T, D, L, H = tr.batch_size, m.seq_len, m.d_model, m.n_layer, m.n_head
  local N, V, Vp, d = B * T, m.vocab_size, dv.vocab_padded, dv.head_dim

  -- training forward: N = B·T rows, causal attention over each sequence
  local tokens = g:input("tokens", { N })
  local targets = g:input("targets", { N })
  g:input("tokidx", { 2 * N + 2 })
  local wte = g:param("wte.weight", { Vp, D }, "normal", 0.02, false)
  local wpe = g:param("wpe.weight", { T, D }, "normal", 0.02, false)
  local x = g:tensor("embed.out", { N, D }, "bf16")
  g:op("embed", "fwd", "embed", { { "tokens", tokens }, { "wte", wte }, { "wpe", wpe }, { "out", x, out = true } },
    { N = N, T = T, D = D })
  local logits = gpt2_trunk(g, cfg, "fwd", "", x, N, function(_, p, qkv)
    local att = g:tensor(p .. ".attn.out", { N, D }, "bf16")
    local lse = g:tensor(p .. ".attn.lse", { B, H, T }, "f32")
    g:op("attention", "fwd", p .. ".attn", { { "qkv", qkv }, { "out", att, out = true }, { "lse", lse, out = true } },
      { B = B, T = T, H = H, d = d })
    return att
  end)
  local losses = g:tensor("loss.tokens", { N }, "f32")
  local scale = 1.0 / (N * tr.grad_accum) -- mean over every token of every micro-step
  g:op("xent", "fwd", "loss", { { "logits", logits }, { "targets", targets }, { "losses", losses, out = true } },
    { N = N, V = V, Vp = Vp, scale = scale, grad = 0 })
  g:op("loss_sum", "fwd", "loss.sum", { { "losses", losses }, { "loss", "loss", out = true } }, { N = N, scale = scale })

  -- decode program: Bs sequences, one token each at position dpos; every layer appends its key
  -- and value to a KV cache [Bs, T, D] kept for the whole generation (sample.c drives it)
  local Bs = 1
  local dtok, dpos = g:input("dtokens", { Bs }), g:input("dpos", { 1 })
  local dx = g:tensor("dec.embed.out", { Bs, D }, "bf16")
  g:op("embed_pos", "dec", "dec.embed", { { "tokens", dtok }, { "pos", dpos }, { "wte", wte }, { "wpe", wpe },
    { "out", dx, out = true } }, { N = Bs, T = T, D = D })
  gpt2_trunk(g, cfg, "dec", "dec.", dx, Bs, function(_, p, qkv)
    local kc = g:tensor("dec." .. p .. ".kcache", { Bs, T, D }, "bf16")
    local vc = g:tensor("dec." .. p .. ".vcache", { Bs, T, D }, "bf16")
    g.tensors[kc].keep, g.tensors[vc].keep = "dec", "dec" -- live across decode steps
    local att = g:tensor("dec." .. p .. ".attn.out", { Bs, D }, "bf16")
    g:op("attention_decode", "dec", "dec." .. p .. ".attn", { { "qkv", qkv }, { "pos", dpos },
      { "kcache", kc, out = true }, { "vcache", vc, out = true }, { "out", att, out = true } },
      { B = Bs, T = T, H = H, d = d })
    return att
  end)

  -- FLOPs per token: 6 per parameter (forward + backward matmuls) + 6·L·T·D for causal attention
  local nparams = 0
  for _, prm in ipairs(g.params) do nparams = nparams + prm.numel end
  g.stats = { params = nparams, flops_per_token = 6 * nparams + 6 * L * T * D }
  return g
end

function M.build(cfg)
  local builder = M[cfg.family]
  assert(builder, "no graph builder for family " .. cfg.family)
  return builder(cfg)
end

return M
