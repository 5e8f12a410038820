-- gen/config.lua — spec → validated config.
--
-- Pass `spec`: run the spec file in a sandbox (no io, os, require, load) and record the source line
-- where every field was written, so errors can point at it.
-- Pass `config`: apply --set overrides, check every field against the schema (unknown names,
-- types, ranges, cross-field rules), fill defaults and derive the sizes the later passes use.
local util = require "util"
local M = {}

-- The schema: every field a spec may set, its type, its default and its range. A spec names only
-- what differs from the defaults of its family.
local SCHEMA = {
  name = { type = "string" },
  family = { type = "string", enum = { "gpt2", "swamla", "llama", "qwen2" }, default = "gpt2" },
  model = {
    n_layer = { type = "int", min = 1, default = 12 },
    d_model = { type = "int", min = 8, default = 768 },
    n_head = { type = "int", min = 1, default = 12 },
    n_kv_head = { type = "int", min = 0, default = 0 },          -- 0: = n_head (gqa needs it set)
    seq_len = { type = "int", min = 1, default = 1024 },
    vocab_size = { type = "int", min = 2, default = 50257 },
    ln_eps = { type = "number", gt = 0, default = 1e-5 },        -- epsilon of every norm
    attention = { type = "string", enum = { "mha", "gqa", "mqa", "mla" }, default = "mha" },
    position = { type = "string", enum = { "learned", "rope", "alibi", "sinusoidal", "none" }, default = "learned" },
    rope_base = { type = "number", gt = 0, default = 10000 },
    rope_layout = { type = "string", enum = { "half", "adjacent" }, default = "half" },
    mlp = { type = "string", enum = { "gelu", "relu", "silu", "geglu", "swiglu" }, default = "gelu" },
    mlp_hidden = { type = "int", min = 0, default = 0 },         -- 0: 4·d_model
    norm = { type = "string", enum = { "layernorm", "rmsnorm", "dyt" }, default = "layernorm" },
    dyt_alpha = { type = "number", default = 0.5 },
    attn_bias = { type = "bool", default = true },               -- bias of the q/k/v projection
    proj_bias = { type = "bool", default = true },               -- bias of the attention output projection
    mlp_bias = { type = "bool", default = true },
    tie_embeddings = { type = "bool", default = true },
    dropout = {
      attn = { type = "number", min = 0, lt = 1, default = 0 },
      resid = { type = "number", min = 0, lt = 1, default = 0 },
      mlp = { type = "number", min = 0, lt = 1, default = 0 },
    },
    -- layer pattern: cycles of SWA then MLA layers, or an explicit (cyclic) list, plus overrides
    swa_layers_per_cycle = { type = "int", min = 0, default = 0 },
    mla_layers_per_cycle = { type = "int", min = 0, default = 0 },
    layer_pattern = { type = "list", of = { type = "string", enum = { "full", "swa", "mla" } }, default = {} },
    layer_overrides = { type = "map", of = {
      attention = { type = "string", enum = { "full", "swa", "mla" } },
      window = { type = "int" }, sink = { type = "int" },
      kv_lora_rank = { type = "int" }, q_lora_rank = { type = "int" },
    }, default = {} },
    swa_window = { type = "int", default = 256 },
    swa_sink = { type = "int", default = 4 },
    mla = {
      kv_lora_rank = { type = "int", default = 256 },
      q_lora_rank = { type = "int", default = 0 },
      qk_nope_head_dim = { type = "int", default = 128 },
      qk_rope_head_dim = { type = "int", default = 64 },
      v_head_dim = { type = "int", default = 128 },
      latent_norm = { type = "string", enum = { "rmsnorm", "layernorm" }, default = "rmsnorm" },
      latent_eps = { type = "number", gt = 0, default = 1e-6 },
      rope_layout = { type = "string", enum = { "half", "adjacent" }, default = "adjacent" },
    },
  },
  -- ParScale (models.md §4, docs/ir_parscale.md): P replicas with learned prefixes, an aggregation
  -- head, optional cross-replica attention. n = 1 is the plain model.
  parscale = {
    n = { type = "int", default = 1 },
    n_tokens = { type = "int", default = 48 },
    prefix_std = { type = "number", gt = 0, default = 0.02 },   -- init std of the prefix keys/values
    attn_smooth = { type = "number", default = 0.01 },
    cross_attn = { type = "bool", default = false },
    cross_attn_layers = { type = "list", of = { type = "int" }, default = {} }, -- empty: every layer
    freeze_backbone = { type = "bool", default = false },
  },
  train = {
    batch_size = { type = "int", min = 1, default = 16 },
    grad_accum = { type = "int", min = 1, default = 1 },
    lr = { type = "number", gt = 0, default = 6e-4 },
    min_lr = { type = "number", min = 0, default = 6e-5 },
    warmup_steps = { type = "int", min = 0, default = 100 },
    steps = { type = "int", min = 1, default = 1000 },
    weight_decay = { type = "number", min = 0, default = 0.1 },
    beta1 = { type = "number", min = 0, lt = 1, default = 0.9 },
    beta2 = { type = "number", min = 0, lt = 1, default = 0.95 },
    eps = { type = "number", gt = 0, default = 1e-8 },
    grad_clip = { type = "number", min = 0, default = 1.0 },
    seed = { type = "int", min = 0, default = 1337 },
    log_every = { type = "int", min = 1, default = 10 },
  },
}
M.SCHEMA = SCHEMA

-- Where each field was written: a tiny scan of the spec's tokens tracking `name = {` nesting.
-- It only has to find `key =` at each table depth; strings and comments are skipped.
local function field_lines(src)
  local lines, stack = {}, {}
  local i, line, n = 1, 1, #src
  local last_ident, last_ident_line, pending_key
  while i <= n do
    local c = src:sub(i, i)
    if c == "\n" then line = line + 1; i = i + 1
    elseif src:sub(i, i + 1) == "--" then
      local lvl = src:match("^%-%-%[(=*)%[", i)
      if lvl then
        local close = "]" .. lvl .. "]"
        local j = src:find(close, i, true) or n
        for _ in src:sub(i, j):gmatch("\n") do line = line + 1 end
        i = j + #close
      else
        i = (src:find("\n", i, true) or n + 1)
      end
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= n and src:sub(j, j) ~= c do
        if src:sub(j, j) == "\\" then j = j + 1 end
        j = j + 1
      end
      i = j + 1
      last_ident = nil
    elseif src:match("^%[=*%[", i) then
      local lvl = src:match("^%[(=*)%[", i)
      local close = "]" .. lvl .. "]"
      local j = src:find(close, i, true) or n
      for _ in src:sub(i, j):gmatch("\n") do line = line + 1 end
      i = j + #close
    elseif c:match("[%a_]") then
      local id = src:match("^[%w_]+", i)
      last_ident, last_ident_line = id, line
      i = i + #id
    elseif c == "=" and src:sub(i + 1, i + 1) ~= "=" then
      if last_ident then
        local path = {}
        for _, s in ipairs(stack) do if s then path[#path + 1] = s end end
        path[#path + 1] = last_ident
        local key = table.concat(path, ".")
        lines[key] = lines[key] or last_ident_line
        pending_key = last_ident
      end
      last_ident = nil
      i = i + 1
    elseif c == "{" then
      stack[#stack + 1] = pending_key or false
      pending_key, last_ident = nil, nil
      i = i + 1
    elseif c == "}" then
      stack[#stack] = nil
      pending_key, last_ident = nil, nil
      i = i + 1
    else
      if not c:match("%s") then pending_key = nil; last_ident = nil end
      i = i + 1
    end
  end
  return lines
end
M.field_lines = field_lines

local function merge(base, over)
  for k, v in pairs(over) do
    if type(v) == "table" and type(base[k]) == "table" and #v == 0 and next(v) ~= nil then merge(base[k], v)
    else base[k] = v end
  end
  return base
end

-- Pass `spec`: the raw table a spec returns, with the lines of its fields. A spec may name a
-- `base` spec (path from the repository root or from its own directory): it then holds only what
-- differs, merged over the base's fields; errors still point at the file that set a field.
function M.load(path, seen)
  seen = seen or {}
  if seen[path] then util.fail(2, "%s: base specs form a cycle", path) end
  seen[path] = true
  local spec = M.load_one(path)
  local base = spec.fields.base
  if base ~= nil then
    if type(base) ~= "string" then util.fail(2, "%s:%d: base: expected a spec path", path, spec.lines.base or 1) end
    local bpath = base
    if not mf.read(bpath) then bpath = (path:match("^(.*)/[^/]*$") or ".") .. "/" .. base end
    if not mf.read(bpath) then util.fail(2, "%s:%d: base: cannot read spec %s", path, spec.lines.base or 1, base) end
    local b = M.load(bpath, seen)
    spec.fields.base = nil
    local name = spec.fields.name
    spec.fields = merge(b.fields, spec.fields)
    spec.fields.name = name or spec.path:match("([^/]+)%.lua$")
    for k, l in pairs(b.lines) do
      if spec.lines[k] == nil then spec.lines[k] = type(l) == "table" and l or { b.path, l } end
    end
  end
  return spec
end

function M.load_one(path)
  local src, err = mf.read(path)
  if not src then util.fail(2, "gen: cannot read spec %s", err) end
  -- the sandbox: pure functions only, so a spec cannot touch files or the environment
  local env = {
    math = math, string = string, table = table, pairs = pairs, ipairs = ipairs, type = type,
    tostring = tostring, tonumber = tonumber, select = select, error = error, assert = assert,
    print = function() end,
  }
  local chunk, perr = load(src, "@" .. path, "t", env)
  if not chunk then
    -- Lua's message is "path:LINE: text"; keep it, prefixed so it reads as a spec error
    util.fail(2, "%s", (perr:gsub("^@", "")))
  end
  local ok, value = pcall(chunk)
  if not ok then util.fail(2, "%s", tostring(type(value) == "table" and value.msg or value)) end
  if type(value) ~= "table" then
    util.fail(2, "%s:1: the spec must return a table (got %s)", path, type(value))
  end
  return { path = path, fields = value, lines = field_lines(src) }
end

local function where(spec, key)
  if spec.origin[key] then return spec.origin[key] end
  -- list and map entries ([3] = {...}) are found by their field name without the index
  local l = spec.lines[key] or spec.lines[(key:gsub("%.%d+", ""))]
  if type(l) == "table" then return string.format("%s:%d", l[1], l[2]) end
  if l then return string.format("%s:%d", spec.path, l) end
  return spec.path
end

local function bad(spec, key, fmt, ...)
  util.fail(2, "%s: %s: %s", where(spec, key), key, string.format(fmt, ...))
end

local function parse_value(s)
  if s == "true" then return true elseif s == "false" then return false end
  local n = math.tointeger(tonumber(s)) or tonumber(s)
  if n then return n end
  return s
end

-- Check one value against its schema entry.
local check_field
local validate

check_field = function(spec, key, v, s)
  if s.type == "list" then
    if type(v) ~= "table" then bad(spec, key, "expected a list, got %s", util.serialize(v)) end
    local out = {}
    for i, x in ipairs(v) do out[i] = check_field(spec, key .. "." .. i, x, s.of) end
    for k in pairs(v) do
      if math.type(k) ~= "integer" or k < 1 or k > #v then bad(spec, key, "expected a list (1, 2, ...), found key %s", tostring(k)) end
    end
    return out
  elseif s.type == "map" then
    if type(v) ~= "table" then bad(spec, key, "expected a table keyed by layer index, got %s", util.serialize(v)) end
    local out = {}
    for k, x in pairs(v) do
      if math.type(k) ~= "integer" then bad(spec, key, "keys must be layer indices (0-based integers), found %s", tostring(k)) end
      if type(x) ~= "table" then bad(spec, key .. "." .. k, "expected a table of fields, got %s", util.serialize(x)) end
      out[k] = {}
      validate(spec, x, s.of, key .. "." .. k .. ".", out[k])
    end
    return out
  elseif s.type == "int" then
    if math.type(v) == "float" and v == math.floor(v) and math.abs(v) < 2 ^ 53 then v = math.tointeger(v) end
    if math.type(v) ~= "integer" then bad(spec, key, "expected an integer, got %s", util.serialize(v)) end
  elseif s.type == "number" then
    if type(v) ~= "number" then bad(spec, key, "expected a number, got %s", util.serialize(v)) end
  elseif s.type == "string" then
    if type(v) ~= "string" then bad(spec, key, "expected a string, got %s", util.serialize(v)) end
  elseif s.type == "bool" then
    if type(v) ~= "boolean" then bad(spec, key, "expected true or false, got %s", util.serialize(v)) end
  end
  if s.min and v < s.min then bad(spec, key, "must be at least %s, got %s", s.min, v) end
  if s.gt and not (v > s.gt) then bad(spec, key, "must be greater than %s, got %s", s.gt, v) end
  if s.lt and not (v < s.lt) then bad(spec, key, "must be less than %s, got %s", s.lt, v) end
  if s.enum then
    local ok = false
    for _, e in ipairs(s.enum) do ok = ok or e == v end
    if not ok then bad(spec, key, "unknown value %s (expected one of: %s)", util.serialize(v), table.concat(s.enum, ", ")) end
  end
  return v
end

-- Walk the spec's fields against the schema; unknown names are errors, not silently ignored.
validate = function(spec, fields, schema, prefix, out)
  for k, v in pairs(fields) do
    local key = prefix .. tostring(k)
    local s = schema[k]
    if s == nil then
      local names = util.sorted_keys(schema)
      bad(spec, key, "unknown field (known here: %s)", table.concat(names, ", "))
    end
    if type(s.type) == "string" then
      out[k] = check_field(spec, key, v, s)
    else
      if type(v) ~= "table" then bad(spec, key, "expected a table of fields, got %s", util.serialize(v)) end
      out[k] = out[k] or {}
      validate(spec, v, s, key .. ".", out[k])
    end
  end
end

-- A family is a set of defaults over the same schema: a spec names only what differs from its
-- family (the GPT-2 ablations differ from gpt2 in one field each).
local FAMILY = {
  gpt2 = {},
  -- seed 002: pre-RMSNorm, SwiGLU, RoPE, tied embeddings, no biases, 2 SWA + 1 MLA per cycle
  swamla = { model = { norm = "rmsnorm", mlp = "swiglu", position = "rope", attn_bias = false, proj_bias = false,
    mlp_bias = false, swa_layers_per_cycle = 2, mla_layers_per_cycle = 1, ln_eps = 1e-6 } },
  -- Llama/Qwen2-style blocks: RMSNorm, SwiGLU, RoPE (half-split), no biases, untied head
  llama = { model = { norm = "rmsnorm", mlp = "swiglu", position = "rope", attn_bias = false, proj_bias = false,
    mlp_bias = false, tie_embeddings = false, ln_eps = 1e-6 } },
  -- Qwen2 (ParScale's backbone): llama with q/k/v bias (o without), RoPE base 1e6, GQA; tied head as in
  -- Qwen2-0.5B/1.5B (a spec sets tie_embeddings = false for the larger ones)
  qwen2 = { model = { norm = "rmsnorm", mlp = "swiglu", position = "rope", rope_layout = "half", rope_base = 1e6,
    attn_bias = true, proj_bias = false, mlp_bias = false, tie_embeddings = true, ln_eps = 1e-6 } },
}

local function fill_defaults(schema, out, fam)
  for k, s in pairs(schema) do
    if s.type then
      if out[k] == nil then
        if fam and fam[k] ~= nil then out[k] = fam[k] else out[k] = s.default end
      end
    else
      out[k] = out[k] or {}
      fill_defaults(s, out[k], fam and fam[k])
    end
  end
end

-- The attention of every layer after the pattern, cycles and overrides: a list (0-based layer l at
-- index l + 1) of { attention = "full"|"swa"|"mla", window, sink, kv_lora_rank, q_lora_rank }.
local function layer_plan(spec, m)
  local layers = {}
  local s, c = m.swa_layers_per_cycle, m.mla_layers_per_cycle
  for l = 0, m.n_layer - 1 do
    local kind = m.attention == "mla" and "mla" or "full"
    if #m.layer_pattern > 0 then
      kind = m.layer_pattern[l % #m.layer_pattern + 1]
    elseif s + c > 0 then
      kind = (l % (s + c) < s) and "swa" or "mla"
    end
    local L = { attention = kind, window = m.swa_window, sink = m.swa_sink,
      kv_lora_rank = m.mla.kv_lora_rank, q_lora_rank = m.mla.q_lora_rank }
    for k, v in pairs(m.layer_overrides[l] or {}) do L[k] = v end
    layers[l + 1] = L
  end
  for l in pairs(m.layer_overrides) do
    if l < 0 or l >= m.n_layer then
      bad(spec, "model.layer_overrides." .. l, "layer index %d outside 0..%d", l, m.n_layer - 1)
    end
  end
  for l, L in ipairs(layers) do
    local key = m.layer_overrides[l - 1] and ("model.layer_overrides." .. (l - 1)) or nil
    if L.attention == "swa" then
      if L.window <= 0 then bad(spec, key and key .. ".window" or "model.swa_window", "window must be at least 1, got %d", L.window) end
      if L.sink < 0 then bad(spec, key and key .. ".sink" or "model.swa_sink", "sink must not be negative, got %d", L.sink) end
      if L.sink > m.seq_len then
        bad(spec, key and key .. ".sink" or "model.swa_sink", "sink %d exceeds the sequence length %d", L.sink, m.seq_len)
      end
    elseif L.attention == "mla" then
      if L.kv_lora_rank < 8 or L.kv_lora_rank % 8 ~= 0 then
        bad(spec, key and key .. ".kv_lora_rank" or "model.mla.kv_lora_rank", "must be a positive multiple of 8, got %d", L.kv_lora_rank)
      end
      if L.q_lora_rank < 0 or L.q_lora_rank % 8 ~= 0 then
        bad(spec, key and key .. ".q_lora_rank" or "model.mla.q_lora_rank", "must be 0 or a positive multiple of 8, got %d", L.q_lora_rank)
      end
    end
  end
  return layers
end

-- ParScale's fields (docs/ir_parscale.md "Spec fields"): ranges, which families and layer kinds can
-- carry prefixes, and the set of cross-attention layers. Returns derived.parscale:
-- { n, n_tokens, eps, cra_layers = {sorted 0-based layer indices}, freeze }.
local function parscale_rules(spec, cfg, layers)
  local ps, m = cfg.parscale, cfg.model
  local P = ps.n
  if P < 1 then bad(spec, "parscale.n", "the number of replicas must be at least 1, got %d", P) end
  if P > 32 then bad(spec, "parscale.n", "at most 32 replicas are supported, got %d", P) end
  if ps.n_tokens <= 0 then bad(spec, "parscale.n_tokens", "the prefix length must be at least 1, got %d", ps.n_tokens) end
  if not (ps.attn_smooth >= 0 and ps.attn_smooth < 1) then
    bad(spec, "parscale.attn_smooth", "must lie in [0, 1), got %s", tostring(ps.attn_smooth))
  end
  local cra, list = {}, {}
  for i, l in ipairs(ps.cross_attn_layers) do
    if l < 0 or l >= m.n_layer then
      bad(spec, "parscale.cross_attn_layers", "layer index %d (entry %d) outside 0..%d (model.n_layer = %d)",
        l, i, m.n_layer - 1, m.n_layer)
    end
    if cra[l] then bad(spec, "parscale.cross_attn_layers", "layer %d listed twice", l) end
    cra[l] = true
  end
  if #ps.cross_attn_layers > 0 and not ps.cross_attn then
    bad(spec, "parscale.cross_attn_layers", "set, but parscale.cross_attn is false (set parscale.cross_attn = true)")
  end
  if P == 1 then
    -- the plain model. cross_attn is ignored (one replica has nobody to attend to, and a P = 1, 2, 4, 8
    -- sweep with cross_attn on needs its P = 1 baseline to be plain Qwen2); a frozen backbone would
    -- leave nothing to train
    if ps.freeze_backbone then
      bad(spec, "parscale.freeze_backbone", "with parscale.n = 1 there are no ParScale parameters: nothing would train")
    end
    return { n = 1, n_tokens = 0, eps = 0, cra_layers = setmetatable({}, util.array_mt), freeze = false }
  end
  if cfg.family ~= "qwen2" and cfg.family ~= "llama" then
    bad(spec, "parscale.n", "ParScale (n = %d > 1) is built on family qwen2 or llama, not %s", P, cfg.family)
  end
  for l, L in ipairs(layers) do
    if L.attention == "mla" then
      bad(spec, "parscale.n", "layer %d is MLA: ParScale prefixes need full or sliding-window attention", l - 1)
    end
  end
  if m.position == "learned" or m.position == "sinusoidal" then
    bad(spec, "parscale.n", "ParScale needs position rope, alibi or none (got %s)", m.position)
  end
  for _, k in ipairs { "attn", "resid", "mlp" } do
    if m.dropout[k] > 0 then bad(spec, "model.dropout." .. k, "dropout is not supported with parscale.n > 1 (got %g)", m.dropout[k]) end
  end
  if ps.cross_attn and #ps.cross_attn_layers == 0 then
    for l = 0, m.n_layer - 1 do cra[l] = true end
  end
  for l = 0, m.n_layer - 1 do if cra[l] then list[#list + 1] = l end end
  return { n = P, n_tokens = ps.n_tokens, eps = ps.attn_smooth, prefix_std = ps.prefix_std,
    cra_layers = setmetatable(list, util.array_mt), freeze = ps.freeze_backbone }
end

-- Pass `config`.
function M.resolve(spec, sets)
  spec.origin = {}
  local fields = spec.fields
  for _, s in ipairs(sets or {}) do
    local key, val = s:match("^([%w_%.]+)=(.*)$")
    if not key then util.fail(2, "gen: --set %s: expected key=value (e.g. train.lr=1e-3)", s) end
    local parts = {}
    for p in key:gmatch("[^%.]+") do parts[#parts + 1] = p end
    local sch, t = SCHEMA, fields
    for i, p in ipairs(parts) do
      sch = sch and sch[p]
      if sch == nil or (i < #parts and sch.type) or (i == #parts and not sch.type) then
        util.fail(2, "gen: --set %s: unknown field %s", s, key)
      end
      if i < #parts then
        t[p] = t[p] or {}
        t = t[p]
      elseif sch.type == "list" then
        -- a list from the command line: comma-separated values (e.g. parscale.cross_attn_layers=0,2)
        local list = {}
        for item in val:gmatch("[^,]+") do list[#list + 1] = parse_value(item) end
        t[p] = list
      else
        t[p] = parse_value(val)
      end
    end
    spec.origin[key] = "--set " .. s
  end

  local cfg = {}
  validate(spec, fields, SCHEMA, "", cfg)
  fill_defaults(SCHEMA, cfg, FAMILY[cfg.family or "gpt2"])
  if cfg.name == nil then
    cfg.name = spec.path:match("([^/]+)%.lua$") or "model"
  end
  local m, t = cfg.model, cfg.train

  -- cross-field rules, each reported at the field a user would change
  if m.d_model % m.n_head ~= 0 then
    bad(spec, "model.n_head", "must divide model.d_model (%d), got %d", m.d_model, m.n_head)
  end
  local hd = m.d_model // m.n_head
  if hd % 16 ~= 0 or hd > 128 then
    bad(spec, "model.n_head", "head dim d_model/n_head = %d; the attention kernels support multiples of 16 up to 128", hd)
  end
  if m.d_model % 8 ~= 0 then bad(spec, "model.d_model", "must be a multiple of 8 (16-byte vector loads), got %d", m.d_model) end
  -- key/value heads: mha uses n_head, mqa one, gqa a divisor of n_head that the spec must name
  local hkv = m.n_kv_head
  if m.attention == "mqa" then
    if hkv ~= 0 and hkv ~= 1 then bad(spec, "model.n_kv_head", "multi-query attention has 1 kv head, got %d", hkv) end
    hkv = 1
  elseif m.attention == "gqa" then
    if hkv == 0 then bad(spec, "model.n_kv_head", "grouped-query attention needs n_kv_head (a divisor of n_head = %d)", m.n_head) end
  elseif hkv == 0 then
    hkv = m.n_head
  end
  if m.n_head % hkv ~= 0 then bad(spec, "model.n_kv_head", "must divide model.n_head (%d), got %d", m.n_head, hkv) end
  if m.attention == "mha" and hkv ~= m.n_head then
    bad(spec, "model.n_kv_head", "multi-head attention uses n_head kv heads (%d); use attention = \"gqa\" for %d", m.n_head, hkv)
  end
  if m.position == "rope" and hd % 2 ~= 0 then bad(spec, "model.n_head", "RoPE needs an even head dim, got %d", hd) end
  local mla = m.mla
  local dqk, dv = mla.qk_nope_head_dim + mla.qk_rope_head_dim, mla.v_head_dim
  local ok_dqk = { [16] = true, [32] = true, [64] = true, [128] = true, [192] = true }
  local ok_dv = { [16] = true, [32] = true, [64] = true, [128] = true }
  local layers = layer_plan(spec, m)
  local any_mla = false
  for _, L in ipairs(layers) do any_mla = any_mla or L.attention == "mla" end
  if any_mla then
    if mla.qk_rope_head_dim <= 0 or mla.qk_rope_head_dim % 2 ~= 0 then
      bad(spec, "model.mla.qk_rope_head_dim", "must be a positive even number, got %d", mla.qk_rope_head_dim)
    end
    if mla.qk_nope_head_dim < 0 then bad(spec, "model.mla.qk_nope_head_dim", "must not be negative, got %d", mla.qk_nope_head_dim) end
    if not ok_dqk[dqk] then
      bad(spec, "model.mla.qk_nope_head_dim", "qk_nope_head_dim + qk_rope_head_dim = %d; the attention kernels support 16, 32, 64, 128, 192", dqk)
    end
    if not ok_dv[dv] then bad(spec, "model.mla.v_head_dim", "must be 16, 32, 64 or 128, got %d", dv) end
  end
  local ps = parscale_rules(spec, cfg, layers)
  if t.min_lr > t.lr then bad(spec, "train.min_lr", "must not exceed train.lr (%g), got %g", t.lr, t.min_lr) end
  if m.vocab_size > 2 ^ 31 - 1 then bad(spec, "model.vocab_size", "too large") end

  cfg.spec_path = spec.path
  cfg.overrides = setmetatable({}, util.array_mt)
  for i, s in ipairs(sets or {}) do cfg.overrides[i] = s end
  cfg.derived = {
    vocab_padded = util.round_up(m.vocab_size, 128),
    head_dim = hd,
    n_kv_head = hkv,
    mlp_hidden = m.mlp_hidden > 0 and m.mlp_hidden or 4 * m.d_model,
    layers = layers,
    parscale = ps,
    tokens_per_micro = t.batch_size * m.seq_len,
    tokens_per_step = t.batch_size * m.seq_len * t.grad_accum,
  }
  return cfg
end

return M
