-- gen/graph.lua — pass `graph`: config → forward op graph with static shapes.
--
-- One builder per family. The forward graph names every intermediate; the backward pass is
-- derived from it (autodiff.lua), never written by hand per model.
local IR = require "ir"
local M = {}

-- Y[N, out] = X[N, in] · Wᵀ (+ b)   — W stored [out, in]
local function linear(g, name, x, n, din, dout, bias, init_std)
  local w = g:param(name .. ".weight", { dout, din }, "normal", init_std, true)
  local refs = { { "a", x }, { "b", w } }
  local epi = 0
  if bias then
    refs[#refs + 1] = { "bias", g:param(name .. ".bias", { dout }, "zeros", 0, false) }
    epi = 1
  end
  local y = g:tensor(name .. ".out", { n, dout }, "bf16")
  refs[#refs + 1] = { "c", y, out = true }
  g:op("matmul", "fwd", name, refs, { M = n, N = dout, K = din, ta = 0, tb = 1, beta = 0, epi = epi })
  return y
end

local function layernorm(g, name, x, n, c, eps)
  local w = g:param(name .. ".weight", { c }, "ones", 0, false)
  local b = g:param(name .. ".bias", { c }, "zeros", 0, false)
  local out = g:tensor(name .. ".out", { n, c }, "bf16")
  local mean = g:tensor(name .. ".mean", { n }, "f32")
  local rstd = g:tensor(name .. ".rstd", { n }, "f32")
  g:op("layernorm", "fwd", name, {
    { "x", x }, { "w", w }, { "b", b }, { "out", out, out = true }, { "mean", mean, out = true }, { "rstd", rstd, out = true },
  }, { N = n, C = c, eps = eps })
  return out
end

local function add(g, name, a, b, n, c)
  local out = g:tensor(name, { n, c }, "bf16")
  g:op("add", "fwd", name, { { "a", a }, { "b", b }, { "out", out, out = true } }, { n = n * c })
  return out
end

-- GPT-2: learned positions, pre-LayerNorm blocks, causal MHA, GELU-tanh MLP, tied head.
function M.gpt2(cfg)
  local m, tr, dv = cfg.model, cfg.train, cfg.derived
  local g = IR.new(cfg)
  local B, T, D, L, H = tr.batch_size, m.seq_len, m.d_model, m.n_layer, m.n_head
  local N, V, Vp, d = B * T, m.vocab_size, dv.vocab_padded, dv.head_dim
  local proj_std = 0.02 / math.sqrt(2 * L) -- GPT-2: residual projections scaled by 1/√(2L)

  local tokens = g:input("tokens", { N })
  local targets = g:input("targets", { N })
  g:input("tokidx", { 2 * N + 2 })
  local wte = g:param("wte.weight", { Vp, D }, "normal", 0.02, false)
  local wpe = g:param("wpe.weight", { T, D }, "normal", 0.02, false)
  local x = g:tensor("embed.out", { N, D }, "bf16")
  g:op("embed", "fwd", "embed", { { "tokens", tokens }, { "wte", wte }, { "wpe", wpe }, { "out", x, out = true } },
    { N = N, T = T, D = D })

  for l = 0, L - 1 do
    local p = "h." .. l
    local h1 = layernorm(g, p .. ".ln_1", x, N, D, m.ln_eps)
    local qkv = linear(g, p .. ".attn.c_attn", h1, N, D, 3 * D, true, 0.02)
    local att = g:tensor(p .. ".attn.out", { N, D }, "bf16")
    local lse = g:tensor(p .. ".attn.lse", { B, H, T }, "f32")
    g:op("attention", "fwd", p .. ".attn", { { "qkv", qkv }, { "out", att, out = true }, { "lse", lse, out = true } },
      { B = B, T = T, H = H, d = d })
    local proj = linear(g, p .. ".attn.c_proj", att, N, D, D, true, proj_std)
    x = add(g, p .. ".res_1", x, proj, N, D)
    local h2 = layernorm(g, p .. ".ln_2", x, N, D, m.ln_eps)
    local fc = linear(g, p .. ".mlp.c_fc", h2, N, D, 4 * D, true, 0.02)
    local act = g:tensor(p .. ".mlp.gelu", { N, 4 * D }, "bf16")
    g:op("gelu", "fwd", p .. ".mlp.gelu", { { "x", fc }, { "out", act, out = true } }, { n = N * 4 * D })
    local mlp = linear(g, p .. ".mlp.c_proj", act, N, 4 * D, D, true, proj_std)
    x = add(g, p .. ".res_2", x, mlp, N, D)
  end

  local hf = layernorm(g, "ln_f", x, N, D, m.ln_eps)
  -- tied head: logits = ln_f(x) · wteᵀ over the padded vocabulary
  local logits = g:tensor("lm_head.logits", { N, Vp }, "bf16")
  g:op("matmul", "fwd", "lm_head", { { "a", hf }, { "b", wte }, { "c", logits, out = true } },
    { M = N, N = Vp, K = D, ta = 0, tb = 1, beta = 0, epi = 0 })
  local losses = g:tensor("loss.tokens", { N }, "f32")
  local scale = 1.0 / (N * tr.grad_accum) -- mean over every token of every micro-step
  g:op("xent", "fwd", "loss", { { "logits", logits }, { "targets", targets }, { "losses", losses, out = true } },
    { N = N, V = V, Vp = Vp, scale = scale, grad = 0 })
  g:op("loss_sum", "fwd", "loss.sum", { { "losses", losses }, { "loss", "loss", out = true } }, { N = N, scale = scale })

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
