-- gen/graph.lua — pass `graph`: config → forward op graph with static shapes.
--
-- One builder covers every family (gpt2, swamla, llama): pre-norm residual blocks
--   x = x + drop(proj(attn(norm_1(x))));  x = x + drop(mlp(norm_2(x)))
-- then the final norm and the (tied or separate) LM head. Each axis of the vocabulary — attention
-- kind per layer, positions, norm, MLP, dropout — picks which ops a block is made of. The backward
-- pass is derived from this graph (autodiff.lua), never written by hand per model.
--
-- The builders take the phase their ops belong to: the training forward ("fwd") and the one-token
-- decode program ("dec") are the same blocks over different row counts and names.
local IR = require "ir"
local M = {}

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

-- norm_kind: layernorm (w, b), rmsnorm (w), dyt (alpha, w, b: w·tanh(α·x) + b)
local function norm(g, ph, pfx, name, kind, x, n, c, eps, alpha0)
  local out = g:tensor(pfx .. name .. ".out", { n, c }, "bf16")
  local w = g:param(name .. ".weight", { c }, "ones", 0, false)
  if kind == "layernorm" then
    local b = g:param(name .. ".bias", { c }, "zeros", 0, false)
    g:op("layernorm", ph, pfx .. name, { { "x", x }, { "w", w }, { "b", b }, { "out", out, out = true },
      { "mean", g:tensor(pfx .. name .. ".mean", { n }, "f32"), out = true },
      { "rstd", g:tensor(pfx .. name .. ".rstd", { n }, "f32"), out = true } }, { N = n, C = c, eps = eps })
  elseif kind == "rmsnorm" then
    g:op("rmsnorm", ph, pfx .. name, { { "x", x }, { "w", w }, { "out", out, out = true },
      { "rstd", g:tensor(pfx .. name .. ".rstd", { n }, "f32"), out = true } }, { N = n, C = c, eps = eps })
  elseif kind == "dyt" then
    local b = g:param(name .. ".bias", { c }, "zeros", 0, false)
    local alpha = g:param(name .. ".alpha", { 1 }, "fill", alpha0, false)
    g:op("dyt", ph, pfx .. name, { { "x", x }, { "alpha", alpha }, { "w", w }, { "b", b }, { "out", out, out = true } },
      { N = n, C = c })
  else
    error("unknown norm " .. tostring(kind))
  end
  return out
end

local function add(g, ph, pfx, name, a, b, n, c)
  local out = g:tensor(pfx .. name, { n, c }, "bf16")
  g:op("add", ph, pfx .. name, { { "a", a }, { "b", b }, { "out", out, out = true } }, { n = n * c })
  return out
end

-- Dropout (training forward only): a fresh stream id per op keeps the masks independent.
local function dropout(g, ph, pfx, name, x, n, c, p)
  if ph ~= "fwd" or p == 0 then return x end
  g.streams = (g.streams or 0) + 1
  local out = g:tensor(pfx .. name, { n, c }, "bf16")
  g:op("dropout", ph, pfx .. name, { { "x", x }, { "dropctr", "dropctr" }, { "out", out, out = true } },
    { n = n * c, p = p, stream = g.streams })
  return out
end

local ACT = { gelu = "gelu", relu = "relu", silu = "silu" }
local GLU = { geglu = 0, swiglu = 1 } -- glu act attr: 0 gelu (tanh form), 1 silu

local function mlp(g, cfg, ph, pfx, p, x, n, proj_std)
  local m, D, F = cfg.model, cfg.model.d_model, cfg.derived.mlp_hidden
  local h
  if ACT[m.mlp] then
    local fc = linear(g, ph, pfx, p .. ".mlp.c_fc", x, n, D, F, m.mlp_bias, 0.02)
    h = g:tensor(pfx .. p .. ".mlp." .. m.mlp, { n, F }, "bf16")
    g:op(ACT[m.mlp], ph, pfx .. p .. ".mlp." .. m.mlp, { { "x", fc }, { "out", h, out = true } }, { n = n * F })
  else
    local fc = linear(g, ph, pfx, p .. ".mlp.c_fc", x, n, D, 2 * F, m.mlp_bias, 0.02) -- rows [gate; up]
    h = g:tensor(pfx .. p .. ".mlp." .. m.mlp, { n, F }, "bf16")
    g:op("glu", ph, pfx .. p .. ".mlp." .. m.mlp, { { "x", fc }, { "out", h, out = true } },
      { N = n, F = F, act = GLU[m.mlp] })
  end
  h = dropout(g, ph, pfx, p .. ".mlp.drop", h, n, F, m.dropout.mlp)
  return linear(g, ph, pfx, p .. ".mlp.c_proj", h, n, F, D, m.mlp_bias, proj_std)
end

local ROPE = { half = 1, adjacent = 2 }

-- Decode: the same layout attrs over one row per sequence (B = Bs sequences, T = the cache
-- length); the op appends k̃ = R_pos·k and v to KV caches of HKV heads kept for the whole
-- generation and attends from position dpos (docs/ir.md "Decode"). With ParScale's prefixes (pre)
-- the B = P rows are the replicas (Bs = 1): each also sees its NPRE prefix entries, read from the
-- parameters (refs pk, pv after v; attrs NPRE, NREP as attn), never copied into the cache.
local function attn_decode_op(g, cfg, name, q, k, v, lay, B, T, pre)
  local kc = g:tensor(name .. ".kcache", { B, T, lay.HKV * lay.DQK }, "bf16")
  local vc = g:tensor(name .. ".vcache", { B, T, lay.HKV * lay.DV }, "bf16")
  g.tensors[kc].keep, g.tensors[vc].keep = "dec", "dec" -- live across decode steps
  local out = g:tensor(name .. ".out", { B, lay.H * lay.DV }, "bf16")
  local a = { B = B, T = T, scale = 1 / math.sqrt(lay.DQK), rope_base = cfg.model.rope_base }
  for key, val in pairs(lay) do a[key] = val end
  local refs = { { "q", q }, { "k", k }, { "v", v } }
  if pre then
    refs[#refs + 1] = { "pk", pre.pk }
    refs[#refs + 1] = { "pv", pre.pv }
    a.NPRE, a.NREP = pre.n, pre.rep
  end
  refs[#refs + 1] = { "pos", "dpos" }
  refs[#refs + 1] = { "kcache", kc, out = true }
  refs[#refs + 1] = { "vcache", vc, out = true }
  refs[#refs + 1] = { "out", out, out = true }
  g:op("attn_decode", "dec", name, refs, a)
  return out
end

-- The generalised attention op over q, k, v given with their layouts (docs/ir.md, `attn`).
-- pre: nil, or ParScale's prefixes { pk = param, pv = param, n = NPRE, rep = NREP } (docs/ir_parscale.md):
-- extra keys/values of each replica that every query of that replica sees.
local function attn_op(g, cfg, ph, name, q, k, v, lay, n, B, T, pre)
  if ph == "dec" then
    return attn_decode_op(g, cfg, name, q, k, v, lay, B, T, pre)
  end
  local m = cfg.model
  local out = g:tensor(name .. ".out", { n, lay.H * lay.DV }, "bf16")
  local lse = g:tensor(name .. ".lse", { B, lay.H, T }, "f32")
  local refs = { { "q", q }, { "k", k }, { "v", v } }
  if pre then
    refs[#refs + 1] = { "pk", pre.pk }
    refs[#refs + 1] = { "pv", pre.pv }
  end
  refs[#refs + 1] = { "out", out, out = true }
  refs[#refs + 1] = { "lse", lse, out = true }
  if (lay.ROPE or 0) ~= 0 then
    -- the rotated q̃, k̃ in the layouts of q, k (one tensor when q and k share a buffer): the forward
    -- writes them, the backward reads them instead of rotating tiles again; k̃ only when k arrives
    -- unrotated (KROT = 0)
    local qr = g:tensor(name .. ".qr", g.tensors[q].shape, "bf16")
    refs[#refs + 1] = { "qr", qr, out = true }
    if lay.KROT == 0 then
      local kr = k == q and qr or g:tensor(name .. ".kr", g.tensors[k].shape, "bf16")
      refs[#refs + 1] = { "kr", kr, out = true }
    end
  end
  local a = { B = B, T = T, scale = 1 / math.sqrt(lay.DQK), rope_base = m.rope_base, dropout = 0, stream = 0,
    NPRE = pre and pre.n or 0, NREP = pre and pre.rep or 1 }
  for key, val in pairs(lay) do a[key] = val end
  if m.dropout.attn > 0 and ph == "fwd" then
    assert(not pre, "attention dropout with ParScale prefixes (config.lua rejects it)")
    g.streams = (g.streams or 0) + 1
    a.dropout, a.stream = m.dropout.attn, g.streams
    refs[#refs + 1] = { "dropctr", "dropctr" }
  end
  g:op("attn", ph, name, refs, a)
  return out
end

-- One layer's attention, before the output projection: returns [n, H·dv] and dv.
local function attention(g, cfg, ph, pfx, l, p, x, n, B, T)
  local m, dv = cfg.model, cfg.derived
  local D, H, Hkv, d = m.d_model, m.n_head, dv.n_kv_head, dv.head_dim
  local L = dv.layers[l + 1]
  if L.attention == "mla" then
    local mla = m.mla
    local dn, dr, dvh, r, rq = mla.qk_nope_head_dim, mla.qk_rope_head_dim, mla.v_head_dim, L.kv_lora_rank, L.q_lora_rank
    local q
    if rq == 0 then
      q = linear(g, ph, pfx, p .. ".attn.q_proj", x, n, D, H * (dn + dr), false, 0.02)
    else
      local qa = linear(g, ph, pfx, p .. ".attn.q_a_proj", x, n, D, rq, false, 0.02)
      local qan = norm(g, ph, pfx, p .. ".attn.q_a_norm", "rmsnorm", qa, n, rq, mla.latent_eps)
      q = linear(g, ph, pfx, p .. ".attn.q_b_proj", qan, n, rq, H * (dn + dr), false, 0.02)
    end
    local c = linear(g, ph, pfx, p .. ".attn.kv_a_c", x, n, D, r, false, 0.02)
    local kr = linear(g, ph, pfx, p .. ".attn.kv_a_r", x, n, D, dr, false, 0.02)
    local cn = norm(g, ph, pfx, p .. ".attn.kv_a_norm", mla.latent_norm, c, n, r, mla.latent_eps)
    local knope = linear(g, ph, pfx, p .. ".attn.kv_b_k", cn, n, r, H * dn, false, 0.02)
    local v = linear(g, ph, pfx, p .. ".attn.kv_b_v", cn, n, r, H * dvh, false, 0.02)
    local k = g:tensor(pfx .. p .. ".attn.k", { n, H * (dn + dr) }, "bf16")
    -- mla_k rotates the shared rope key once per row, so the attention rotates q only (KROT = 1): a K tile
    -- would otherwise be rotated by every query tile that reads it. The decode program's attn_decode rotates
    -- what it appends to its cache, so there mla_k only copies.
    local krot = ph ~= "dec"
    g:op("mla_k", ph, pfx .. p .. ".attn.k", { { "knope", knope }, { "krope", kr }, { "k", k, out = true } },
      { N = n, H = H, dn = dn, dr = dr, ROPE = krot and ROPE[mla.rope_layout] or 0, T = T, rope_base = m.rope_base })
    local w = dn + dr
    local lay = { H = H, HKV = H, DQK = w, DV = dvh, LDQ = H * w, LDK = H * w, LDV = H * dvh, QOFF = 0, KOFF = 0, VOFF = 0,
      QHS = w, KHS = w, VHS = dvh, WINDOW = 0, SINK = 0, ALIBI = 0, ROPE = ROPE[mla.rope_layout], ROPE_DIM = dr,
      KROT = krot and 1 or 0 }
    return attn_op(g, cfg, ph, pfx .. p .. ".attn", q, k, v, lay, n, B, T), dvh
  end
  local width = (H + 2 * Hkv) * d
  local qkv = linear(g, ph, pfx, p .. ".attn.c_attn", x, n, D, width, m.attn_bias, 0.02)
  local ps, pre = dv.parscale, nil
  if ps.n > 1 then
    -- ParScale: per-replica prefix keys and values [P, Hkv, NPRE, d], never rotated
    local shape = { ps.n, Hkv, ps.n_tokens, d }
    pre = { pk = g:param(p .. ".attn.prefix_k", shape, "normal", ps.prefix_std, false),
      pv = g:param(p .. ".attn.prefix_v", shape, "normal", ps.prefix_std, false), n = ps.n_tokens, rep = ps.n }
  end
  local plain = not pre and L.attention == "full" and Hkv == H and (m.position == "learned" or m.position == "sinusoidal"
    or m.position == "none") and (m.dropout.attn == 0 or ph ~= "fwd") and (d == 16 or d == 32 or d == 64 or d == 128)
  if plain and ph == "fwd" then
    -- the GPT-2 case keeps its dedicated kernels (docs/ir.md `attention`)
    local att = g:tensor(p .. ".attn.out", { n, D }, "bf16")
    local lse = g:tensor(p .. ".attn.lse", { B, H, T }, "f32")
    g:op("attention", ph, p .. ".attn", { { "qkv", qkv }, { "out", att, out = true }, { "lse", lse, out = true } },
      { B = B, T = T, H = H, d = d })
    return att, d
  end
  local swa = L.attention == "swa"
  local lay = { H = H, HKV = Hkv, DQK = d, DV = d, LDQ = width, LDK = width, LDV = width,
    QOFF = 0, KOFF = H * d, VOFF = (H + Hkv) * d, QHS = d, KHS = d, VHS = d,
    WINDOW = swa and L.window or 0, SINK = swa and L.sink or 0, ALIBI = m.position == "alibi" and 1 or 0,
    ROPE = m.position == "rope" and ROPE[m.rope_layout] or 0, ROPE_DIM = d, KROT = 0 }
  return attn_op(g, cfg, ph, pfx .. p .. ".attn", qkv, qkv, qkv, lay, n, B, T, pre), d
end

-- Cross-replica attention before layer l (models.md §4): x + c_proj(CRA(c_attn(RMSNorm(x)))), softmax over
-- the P replicas at the same (sequence, position, head); rows replica-major (docs/ir_parscale.md `cra`).
local function cross_replica(g, cfg, ph, pfx, p, x, n)
  local m, dv = cfg.model, cfg.derived
  local P, D, H, d = dv.parscale.n, m.d_model, m.n_head, dv.head_dim
  local W = H * d
  local hn = norm(g, ph, pfx, p .. ".cra.ln", "rmsnorm", x, n, D, m.ln_eps)
  local qkv = linear(g, ph, pfx, p .. ".cra.c_attn", hn, n, D, 3 * W, true, 0.02)
  local out = g:tensor(pfx .. p .. ".cra.out", { n, W }, "bf16")
  local lse = g:tensor(pfx .. p .. ".cra.lse", { n, H }, "f32")
  g:op("cra", ph, pfx .. p .. ".cra", { { "qkv", qkv }, { "out", out, out = true }, { "lse", lse, out = true } },
    { N = n // P, P = P, H = H, d = d, scale = 1 / math.sqrt(d) })
  local proj = linear(g, ph, pfx, p .. ".cra.c_proj", out, n, W, D, false, 0.02)
  return add(g, ph, pfx, p .. ".cra.res", x, proj, n, D)
end

-- ParScale's aggregation (models.md §4) of the final-norm output h [P·N, D] into y [N, D]:
-- z = interleave(h), a = fc2(SiLU(fc1(z))) [N, P] (+ b2), w = (1−ε)·softmax(a + b2) + ε/P, y = Σ_p w_p·h_p.
local function aggregate(g, cfg, ph, pfx, h, N)
  local m, ps = cfg.model, cfg.derived.parscale
  local P, D = ps.n, m.d_model
  local z = g:tensor(pfx .. "parscale.z", { N, P * D }, "bf16")
  g:op("interleave", ph, pfx .. "parscale.interleave", { { "x", h }, { "out", z, out = true } }, { N = N, D = D, P = P })
  local u = linear(g, ph, pfx, "parscale.agg.fc1", z, N, P * D, D, true, 0.02)
  local su = g:tensor(pfx .. "parscale.agg.silu", { N, D }, "bf16")
  g:op("silu", ph, pfx .. "parscale.agg.silu", { { "x", u }, { "out", su, out = true } }, { n = N * D })
  -- fc2's bias b2 [P] is added inside ps_aggregate (and its gradient summed there): a P-column bias
  -- gradient is too narrow for the column-reduction kernels
  local a = linear(g, ph, pfx, "parscale.agg.fc2", su, N, D, P, false, 0.02)
  local b2 = g:param("parscale.agg.fc2.bias", { P }, "zeros", 0, false)
  local y = g:tensor(pfx .. "parscale.y", { N, D }, "bf16")
  local w = g:tensor(pfx .. "parscale.w", { N, P }, "f32")
  g:op("ps_aggregate", ph, pfx .. "parscale.aggregate", { { "h", h }, { "a", a }, { "b2", b2 }, { "y", y, out = true },
    { "w", w, out = true } }, { N = N, D = D, P = P, eps = ps.eps })
  return y
end

-- The trunk: L blocks, the final norm, the head. Returns the logits [n/P, Vp]. With ParScale the
-- rows are the P replicas (n = P·N, B = P·Bm, replica-major) until the aggregation.
local function trunk(g, cfg, ph, pfx, x, n, B, T)
  local m, ps = cfg.model, cfg.derived.parscale
  local D, L, Vp = m.d_model, m.n_layer, cfg.derived.vocab_padded
  local proj_std = 0.02 / math.sqrt(2 * L) -- GPT-2: residual projections scaled by 1/√(2L)
  local cra = {}
  for _, l in ipairs(ps.cra_layers) do cra[l] = true end
  for l = 0, L - 1 do
    local p = "h." .. l
    if cra[l] then x = cross_replica(g, cfg, ph, pfx, p, x, n) end
    local h1 = norm(g, ph, pfx, p .. ".ln_1", m.norm, x, n, D, m.ln_eps, m.dyt_alpha)
    local att, dvh = attention(g, cfg, ph, pfx, l, p, h1, n, B, T)
    local proj = linear(g, ph, pfx, p .. ".attn.c_proj", att, n, m.n_head * dvh, D, m.proj_bias, proj_std)
    proj = dropout(g, ph, pfx, p .. ".attn.drop", proj, n, D, m.dropout.resid)
    x = add(g, ph, pfx, p .. ".res_1", x, proj, n, D)
    local h2 = norm(g, ph, pfx, p .. ".ln_2", m.norm, x, n, D, m.ln_eps, m.dyt_alpha)
    local y = mlp(g, cfg, ph, pfx, p, h2, n, proj_std)
    y = dropout(g, ph, pfx, p .. ".mlp.resid_drop", y, n, D, m.dropout.resid)
    x = add(g, ph, pfx, p .. ".res_2", x, y, n, D)
  end
  local hf = norm(g, ph, pfx, "ln_f", m.norm, x, n, D, m.ln_eps, m.dyt_alpha)
  if ps.n > 1 then
    n = n // ps.n
    hf = aggregate(g, cfg, ph, pfx, hf, n)
  end
  local head = "param:wte.weight"
  if not m.tie_embeddings then head = g:param("lm_head.weight", { Vp, D }, "normal", 0.02, true) end
  local logits = g:tensor(pfx .. "lm_head.logits", { n, Vp }, "bf16")
  g:op("matmul", ph, pfx .. "lm_head", { { "a", hf }, { "b", head }, { "c", logits, out = true } },
    { M = n, N = Vp, K = D, ta = 0, tb = 1, beta = 0, epi = 0 })
  return logits
end

local function embed(g, cfg, ph, pfx, tokens, n, pos)
  local m, D, T = cfg.model, cfg.model.d_model, cfg.model.seq_len
  local wte = g:param("wte.weight", { cfg.derived.vocab_padded, D }, "normal", 0.02, false)
  local wpe
  if m.position == "learned" then wpe = g:param("wpe.weight", { T, D }, "normal", 0.02, false)
  elseif m.position == "sinusoidal" then wpe = g:param("wpe.weight", { T, D }, "sinusoidal", 0, false, true) end
  local x = g:tensor(pfx .. "embed.out", { n, D }, "bf16")
  if pos and wpe then
    g:op("embed_pos", ph, pfx .. "embed", { { "tokens", tokens }, { "pos", pos }, { "wte", wte }, { "wpe", wpe },
      { "out", x, out = true } }, { N = n, T = T, D = D })
  elseif wpe then
    g:op("embed", ph, pfx .. "embed", { { "tokens", tokens }, { "wte", wte }, { "wpe", wpe }, { "out", x, out = true } },
      { N = n, T = T, D = D })
  else
    g:op("embed_tok", ph, pfx .. "embed", { { "tokens", tokens }, { "wte", wte }, { "out", x, out = true } }, { N = n, D = D })
  end
  return x
end

-- Whether the one-token decode program can express this model: attn_decode takes every layout
-- and mask of attn (GQA/MQA, MLA, RoPE, ALiBi, window + sinks, ParScale prefixes), and the P > 1
-- streams are the same ops over P rows — every model this builder makes.
local function decodable(cfg)
  return true
end

function M.decoder(cfg)
  local m, tr, dv = cfg.model, cfg.train, cfg.derived
  local g = IR.new(cfg)
  local B, T, D, L = tr.batch_size, m.seq_len, m.d_model, m.n_layer
  local N, V, Vp = B * T, m.vocab_size, dv.vocab_padded

  -- training forward: N = B·T rows, causal attention within each sequence
  local tokens = g:input("tokens", { N })
  local targets = g:input("targets", { N })
  g:input("tokidx", { 2 * N + 2 })
  if m.dropout.attn > 0 or m.dropout.resid > 0 or m.dropout.mlp > 0 then g:input("dropctr", { 2 }) end
  local x = embed(g, cfg, "fwd", "", tokens, N)
  local P = dv.parscale.n
  if P > 1 then
    -- ParScale: P replicas of the embeddings, replica-major [P·N, D] (row p·N + i)
    local xr = g:tensor("parscale.replicate", { P * N, D }, "bf16")
    g:op("ps_replicate", "fwd", "parscale.replicate", { { "x", x }, { "out", xr, out = true } }, { N = N, C = D, P = P })
    x = xr
  end
  local logits = trunk(g, cfg, "fwd", "", x, P * N, P * B, T)
  if dv.parscale.freeze then
    -- the backbone is frozen: only ParScale's own parameters (prefixes, cross-replica attention,
    -- aggregation) train (docs/ir_parscale.md)
    for _, prm in ipairs(g.params) do
      if not (prm.name:match("^parscale%.") or prm.name:match("%.attn%.prefix_[kv]$") or prm.name:match("^h%.%d+%.cra%.")) then
        prm.frozen, prm.decay = true, false
        g.tensors["param:" .. prm.name].frozen = true
      end
    end
  end
  local losses = g:tensor("loss.tokens", { N }, "f32")
  local scale = 1.0 / (N * tr.grad_accum) -- mean over every token of every micro-step
  g:op("xent", "fwd", "loss", { { "logits", logits }, { "targets", targets }, { "losses", losses, out = true } },
    { N = N, V = V, Vp = Vp, scale = scale, grad = 0 })
  g:op("loss_sum", "fwd", "loss.sum", { { "losses", losses }, { "loss", "loss", out = true } }, { N = N, scale = scale })

  -- decode program: Bs sequences, one token each at position dpos; every layer appends its key
  -- and value to a KV cache [Bs, T, HKV·d] kept for the whole generation (sample.c drives it)
  if decodable(cfg) then
    local Bs = 1
    local dtok, dpos = g:input("dtokens", { Bs }), g:input("dpos", { 1 })
    local xd = embed(g, cfg, "dec", "dec.", dtok, Bs, dpos)
    if P > 1 then
      -- ParScale: the token replicated to P rows (replica-major, as training); the P streams are
      -- batched in every op up to the aggregation, which leaves one row for the head
      local xr = g:tensor("dec.parscale.replicate", { P * Bs, D }, "bf16")
      g:op("ps_replicate", "dec", "dec.parscale.replicate", { { "x", xd }, { "out", xr, out = true } },
        { N = Bs, C = D, P = P })
      xd = xr
    end
    trunk(g, cfg, "dec", "dec.", xd, P * Bs, P * Bs, T)
  end

  -- FLOPs per token: 6 per trainable parameter (forward + backward matmuls) plus attention:
  -- 3 × 2·ctx·H·(DQK + DV) per layer, ctx the mean number of keys a query sees
  -- ParScale (P > 1): the block weights (and prefixes, cross-replica attention) act on P·N rows, the
  -- aggregation and the head on N, so they count P times per token; every query also sees NPRE prefix keys.
  -- Frozen parameters are left out, as a frozen sinusoidal table always was (a frozen backbone still costs
  -- the activation gradients: this is the trainable-parameter count, not the executed FLOPs).
  local nparams, flops = 0, 0
  for _, prm in ipairs(g.params) do
    if not prm.frozen then
      nparams = nparams + prm.numel
      local once = P == 1 or prm.name:match("^parscale%.") or prm.name == "wte.weight" or prm.name == "lm_head.weight"
      flops = flops + 6 * prm.numel * (once and 1 or P)
    end
  end
  local attn = 0
  for _, Ly in ipairs(dv.layers) do
    local ctx = T / 2
    if Ly.attention == "swa" then ctx = math.min(T / 2, Ly.window + Ly.sink) end
    if P > 1 then ctx = P * (ctx + dv.parscale.n_tokens) end
    local dqk, dvh = dv.head_dim, dv.head_dim
    if Ly.attention == "mla" then dqk, dvh = m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim, m.mla.v_head_dim end
    attn = attn + 6 * ctx * m.n_head * (dqk + dvh)
  end
  g.stats = { params = nparams, flops_per_token = math.floor(flops + attn + 0.5) }
  return g
end

function M.build(cfg)
  return M.decoder(cfg)
end

return M
