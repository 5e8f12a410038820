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
  family = { type = "string", enum = { "gpt2" }, default = "gpt2" },
  model = {
    n_layer = { type = "int", min = 1, default = 12 },
    d_model = { type = "int", min = 8, default = 768 },
    n_head = { type = "int", min = 1, default = 12 },
    seq_len = { type = "int", min = 1, default = 1024 },
    vocab_size = { type = "int", min = 2, default = 50257 },
    ln_eps = { type = "number", gt = 0, default = 1e-5 },
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

-- Pass `spec`: the raw table a spec returns, with the lines of its fields.
function M.load(path)
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
  local l = spec.lines[key]
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
local function check_field(spec, key, v, s)
  if s.type == "int" then
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
local function validate(spec, fields, schema, prefix, out)
  for k, v in pairs(fields) do
    local key = prefix .. tostring(k)
    local s = schema[k]
    if s == nil then
      local names = util.sorted_keys(schema)
      bad(spec, key, "unknown field (known here: %s)", table.concat(names, ", "))
    end
    if s.type then
      out[k] = check_field(spec, key, v, s)
    else
      if type(v) ~= "table" then bad(spec, key, "expected a table of fields, got %s", util.serialize(v)) end
      out[k] = out[k] or {}
      validate(spec, v, s, key .. ".", out[k])
    end
  end
end

local function fill_defaults(schema, out)
  for k, s in pairs(schema) do
    if s.type then
      if out[k] == nil then out[k] = s.default end
    else
      out[k] = out[k] or {}
      fill_defaults(s, out[k])
    end
  end
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
      else
        t[p] = parse_value(val)
      end
    end
    spec.origin[key] = "--set " .. s
  end

  local cfg = {}
  validate(spec, fields, SCHEMA, "", cfg)
  fill_defaults(SCHEMA, cfg)
  if cfg.name == nil then
    cfg.name = spec.path:match("([^/]+)%.lua$") or "model"
  end
  local m, t = cfg.model, cfg.train

  -- cross-field rules, each reported at the field a user would change
  if m.d_model % m.n_head ~= 0 then
    bad(spec, "model.n_head", "must divide model.d_model (%d), got %d", m.d_model, m.n_head)
  end
  local hd = m.d_model // m.n_head
  if hd ~= 16 and hd ~= 32 and hd ~= 64 and hd ~= 128 then
    bad(spec, "model.n_head", "head dim d_model/n_head = %d; the attention kernels support 16, 32, 64, 128", hd)
  end
  if m.d_model % 8 ~= 0 then bad(spec, "model.d_model", "must be a multiple of 8 (16-byte vector loads), got %d", m.d_model) end
  if t.min_lr > t.lr then bad(spec, "train.min_lr", "must not exceed train.lr (%g), got %g", t.lr, t.min_lr) end
  if m.vocab_size > 2 ^ 31 - 1 then bad(spec, "model.vocab_size", "too large") end

  cfg.spec_path = spec.path
  cfg.overrides = setmetatable({}, util.array_mt)
  for i, s in ipairs(sets or {}) do cfg.overrides[i] = s end
  cfg.derived = {
    vocab_padded = util.round_up(m.vocab_size, 128),
    head_dim = hd,
    tokens_per_micro = t.batch_size * m.seq_len,
    tokens_per_step = t.batch_size * m.seq_len * t.grad_accum,
  }
  return cfg
end

return M
