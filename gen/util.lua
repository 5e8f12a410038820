-- gen/util.lua — small helpers shared by the passes: user errors, stage dumps, JSON, hashing.
local M = {}

-- A user error: raised as a table so main.c prints just the message and exits with `code`
-- (2 for bad input). Internal errors stay plain strings and carry a traceback position.
function M.fail(code, fmt, ...)
  error({ code = code, msg = string.format(fmt, ...) }, 0)
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta == "number" end
    return a < b
  end)
  return ks
end
M.sorted_keys = sorted_keys

local function fmt_value(v)
  if type(v) == "string" then return string.format("%q", v) end
  if math.type(v) == "float" then return string.format("%.9g", v) end
  return tostring(v)
end

-- Generic deterministic serializer (keys sorted), used for the spec/config stages.
local function serialize(v, indent, out)
  if type(v) ~= "table" then out[#out + 1] = fmt_value(v); return end
  local ks = sorted_keys(v)
  if #ks == 0 then out[#out + 1] = "{}"; return end
  local simple = true
  for _, k in ipairs(ks) do simple = simple and type(v[k]) ~= "table" end
  if simple and #ks <= 8 then
    local parts = {}
    for _, k in ipairs(ks) do
      parts[#parts + 1] = (math.type(k) == "integer" and k == #parts + 1) and fmt_value(v[k]) or (tostring(k) .. " = " .. fmt_value(v[k]))
    end
    out[#out + 1] = "{ " .. table.concat(parts, ", ") .. " }"
    return
  end
  out[#out + 1] = "{\n"
  for _, k in ipairs(ks) do
    out[#out + 1] = indent .. "  " .. tostring(k) .. " = "
    serialize(v[k], indent .. "  ", out)
    out[#out + 1] = ",\n"
  end
  out[#out + 1] = indent .. "}"
end

function M.serialize(v)
  local out = {}
  serialize(v, "", out)
  return table.concat(out)
end

local function shape_str(s)
  local p = {}
  for i, d in ipairs(s) do p[i] = tostring(d) end
  return "[" .. table.concat(p, ",") .. "]"
end
M.shape_str = shape_str

-- One line per op, for the graph stages: the readable form of the IR.
local function dump_graph(g)
  local out = {}
  local function tdesc(name)
    local t = g.tensors[name]
    if not t then return name end
    local s = name .. shape_str(t.shape) .. ":" .. t.dtype
    if t.alias then s = s .. "=" .. t.alias end
    if t.buffer then s = s .. "@" .. t.buffer end
    return s
  end
  out[#out + 1] = string.format("# %s: %d ops, %d tensors, %d params", g.name or "model", #g.ops, g.ntensors or 0, #g.params)
  for i, op in ipairs(g.ops) do
    local ins, outs, attrs = {}, {}, {}
    for _, r in ipairs(op.refs) do
      local d = r.role .. "=" .. tdesc(r.tensor)
      if r.out then outs[#outs + 1] = d else ins[#ins + 1] = d end
    end
    for _, k in ipairs(sorted_keys(op.attrs)) do attrs[#attrs + 1] = k .. "=" .. fmt_value(op.attrs[k]) end
    out[#out + 1] = string.format("%3d %-3s %-20s %-22s %s -> %s  {%s}%s", i, op.phase, op.kind, op.name or "",
      table.concat(ins, " "), table.concat(outs, " "), table.concat(attrs, " "),
      op.kernel and ("  " .. op.kernel) or "")
  end
  if g.memory then
    out[#out + 1] = string.format("# memory: activations %.2f MiB on the GPU (%d buffers, %d tensors), %.2f MiB on the CPU",
      g.memory.gpu_bytes / 2 ^ 20, #g.buffers, g.ntensors or 0, g.memory.cpu_elems * 4 / 2 ^ 20)
    for i, b in ipairs(g.buffers) do
      out[#out + 1] = string.format("  buf %3d %-28s %-4s %10d  gpu@%-10d cpu@%-9d live %d..%d", i, b.name, b.dtype, b.numel,
        b.gpu_off, b.cpu_off, b.first, b.last)
    end
  end
  return table.concat(out, "\n") .. "\n"
end

function M.dump(stage, name)
  if type(stage) == "table" and stage.ops and stage.tensors then return dump_graph(stage) end
  if type(stage) == "table" and stage.files then
    local out = {}
    for _, f in ipairs(sorted_keys(stage.files)) do
      if f:match("%.plan$") or f:match("%.cu$") or f:match("%.json$") then
        out[#out + 1] = "==> " .. f .. " <==\n" .. stage.files[f]
      else
        out[#out + 1] = string.format("==> %s <== (%d bytes)\n", f, #stage.files[f])
      end
    end
    return table.concat(out, "\n")
  end
  return M.serialize(stage) .. "\n"
end

-- JSON (for config.json): objects with sorted keys, arrays for sequences.
local function json(v, out)
  local t = type(v)
  if t == "table" then
    if #v > 0 or next(v) == nil and getmetatable(v) == M.array_mt then
      out[#out + 1] = "["
      for i, x in ipairs(v) do
        if i > 1 then out[#out + 1] = ", " end
        json(x, out)
      end
      out[#out + 1] = "]"
    else
      out[#out + 1] = "{"
      for i, k in ipairs(sorted_keys(v)) do
        if i > 1 then out[#out + 1] = ", " end
        out[#out + 1] = string.format("%q: ", tostring(k))
        json(v[k], out)
      end
      out[#out + 1] = "}"
    end
  elseif t == "string" then
    out[#out + 1] = '"' .. v:gsub('[%c"\\]', function(c)
      return string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif math.type(v) == "integer" then
    out[#out + 1] = tostring(v)
  elseif t == "number" then
    out[#out + 1] = string.format("%.17g", v)
  else
    out[#out + 1] = "null"
  end
end
M.array_mt = {}
function M.json(v)
  local out = {}
  json(v, out)
  return table.concat(out) .. "\n"
end

-- FNV-1a, 64-bit, as 16 hex digits: the source hash that names compiled output.
function M.hash(s)
  local h = -3750763034362895579 -- 0xcbf29ce484222325 as a signed 64-bit integer
  for i = 1, #s do
    h = h ~ s:byte(i)
    h = h * 1099511628211
  end
  return string.format("%016x", h)
end

function M.ceildiv(a, b) return (a + b - 1) // b end
function M.round_up(a, b) return ((a + b - 1) // b) * b end

function M.prod(shape)
  local n = 1
  for _, d in ipairs(shape) do n = n * d end
  return n
end

return M
