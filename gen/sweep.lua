-- gen/sweep.lua — `gen --sweep FILE`: one program per point of a grid of configurations.
--
-- A sweep file (specs/sweeps/*.lua, format in README.md "Sweeps") names a base spec, the axes
-- to vary and the settings common to every point. The points are the Cartesian product of the
-- axes. Every point is validated (the sweep file's own shape, then config.resolve on the point's
-- spec and overrides) before anything is written, so a typo fails in a second instead of after
-- half a sweep has trained. Then each point's program goes to DIR/<sweep>/<point>/ and the
-- sweep's description to DIR/<sweep>/sweep.json (with points.tsv and run.args, the same facts in
-- the plain form scripts/sweep.sh reads).
--
-- A point directory also holds its training run (run/, written by the runtime). Regenerating a
-- sweep therefore never replaces a point directory that has a run: unchanged programs are left
-- alone, and a changed program's files are replaced one by one (each atomically). Whether the run
-- still counts is the runner's decision (its copy of config.json against the program's).
local util = require "util"
local config = require "config"
local compile = require "compile"
local M = {}

local TOP = { title = true, base = true, axes = true, set = true, run = true }
-- The sweep's `run` table: runtime options common to every point, and their flags.
local RUN = {
  data = { type = "string", flag = "--data" },
  eval_every = { type = "int", min = 1, flag = "--eval-every" },
  log_every = { type = "int", min = 0, flag = "--log-every" },
  save_every = { type = "int", min = 1, flag = "--save-every" },
}

-- "path:LINE" of the first place `needle` is written in the sweep file (for error messages).
local function where(sw, ...)
  for _, needle in ipairs({ ... }) do
    local i = sw.src:find(needle)
    if i then
      local _, n = sw.src:sub(1, i):gsub("\n", "")
      return string.format("%s:%d", sw.path, n + 1)
    end
  end
  return sw.path
end
local function quoted(key) return '["\']' .. key:gsub("%p", "%%%0") .. '["\']' end
local function bare(key) return "%f[%w_]" .. key:gsub("%p", "%%%0") .. "%s*=" end

-- The sandbox of config.load: a sweep file is data, it cannot touch files or the environment.
local function load_sweep(path)
  local src, err = mf.read(path)
  if not src then util.fail(2, "gen: cannot read sweep %s", err) end
  local env = {
    math = math, string = string, table = table, pairs = pairs, ipairs = ipairs, type = type,
    tostring = tostring, tonumber = tonumber, select = select, error = error, assert = assert,
  }
  local chunk, perr = load(src, "@" .. path, "t", env)
  if not chunk then util.fail(2, "%s", (perr:gsub("^@", ""))) end
  local ok, value = pcall(chunk)
  if not ok then util.fail(2, "%s", tostring(type(value) == "table" and value.msg or value)) end
  if type(value) ~= "table" then util.fail(2, "%s:1: a sweep file must return a table (got %s)", path, type(value)) end
  return { path = path, src = src, t = value, name = path:match("([^/]+)%.lua$") or path:match("[^/]+$") }
end

-- The schema entry of a dotted field name, or nil and a reason naming the known fields.
local function schema_of(field)
  local s, prefix = config.SCHEMA, ""
  for part in field:gmatch("[^%.]+") do
    if s.type or s[part] == nil then
      local known = s.type and "it has no sub-fields" or ("known" .. (prefix ~= "" and (" in " .. prefix:sub(1, -2)) or "")
        .. ": " .. table.concat(util.sorted_keys(s), ", "))
      return nil, "unknown field (" .. known .. ")"
    end
    s, prefix = s[part], prefix .. part .. "."
  end
  if not s.type then return nil, "names a table of fields, not one field" end
  return s
end

-- Check a sweep value against a schema type; returns the value (an integral float made an
-- integer for int fields) or nil and what was expected. Ranges and cross-field rules are left to
-- config.resolve, which sees the whole point.
local check_type
check_type = function(s, v)
  if s.type == "list" and s.of and s.of.type ~= "list" and s.of.type ~= "map" and type(v) == "table" then
    -- a list of scalars: --set takes it comma-separated (config.lua), e.g. parscale.cross_attn_layers
    local out = {}
    for i, x in ipairs(v) do
      local y, why = check_type(s.of, x)
      if y == nil then return nil, "entry " .. i .. ": " .. why end
      out[i] = y
    end
    return out
  elseif s.type == "list" or s.type == "map" then
    return nil, "a " .. s.type .. " field cannot be varied by value (--set takes one value); give one spec file per value in a spec axis"
  elseif s.type == "int" then
    if math.type(v) == "float" and v == math.floor(v) and math.abs(v) < 2 ^ 53 then v = math.tointeger(v) end
    if math.type(v) ~= "integer" then return nil, "expected an integer" end
  elseif s.type == "number" then
    if type(v) ~= "number" then return nil, "expected a number" end
  elseif s.type == "string" then
    if type(v) ~= "string" then return nil, "expected a string" end
  elseif s.type == "bool" then
    if type(v) ~= "boolean" then return nil, "expected true or false" end
  end
  return v
end

-- Values as --set text: the shortest decimal that reads back as the same number.
local function fmt_set(v)
  if type(v) == "table" then -- a list of scalars, comma-separated
    local parts = {}
    for i, x in ipairs(v) do parts[i] = fmt_set(x) end
    return table.concat(parts, ",")
  end
  if math.type(v) == "float" then
    for n = 1, 17 do
      local s = string.format("%." .. n .. "g", v)
      if tonumber(s) == v then return s end
    end
  end
  return tostring(v)
end

-- Values in point names: 3e-04, 12, true, gpt2_124m — short, and safe in file names.
local function fmt_name(v)
  if math.type(v) == "float" then
    for n = 0, 16 do
      local s = string.format("%." .. n .. "e", v)
      if tonumber(s) == v then return s end
    end
    return string.format("%.17e", v)
  end
  return (tostring(v):gsub("[^%w%.%-]", "_"))
end

local function is_list(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

-- The sweep file → { base, axes = { {key, fields, values, line} }, set = {"k=v"}, run, runargs }.
local function validate(sw, cli_sets)
  local t = sw.t
  for k in pairs(t) do
    if not TOP[k] then
      util.fail(2, "%s: unknown field %s (known: %s)", where(sw, bare(tostring(k))), tostring(k),
        table.concat(util.sorted_keys(TOP), ", "))
    end
  end
  local axes_at = where(sw, bare("axes"))
  if type(t.axes) ~= "table" or next(t.axes) == nil then
    util.fail(2, "%s: axes: expected a table of axes, e.g. axes = { [\"train.lr\"] = {1e-4, 3e-4} }", axes_at)
  end
  if t.title ~= nil and type(t.title) ~= "string" then util.fail(2, "%s: title: expected a string", where(sw, bare("title"))) end

  -- axes: "spec" first, then the fields in sorted order (a Lua table has no order of its own)
  local keys = util.sorted_keys(t.axes)
  table.sort(keys, function(a, b)
    if (a == "spec") ~= (b == "spec") then return a == "spec" end
    return tostring(a) < tostring(b)
  end)
  local axes, axis_field = {}, {}
  for _, key in ipairs(keys) do
    local vals = t.axes[key]
    local at = type(key) == "string" and where(sw, quoted(key), bare(key)) or axes_at
    local function bad(fmt, ...) util.fail(2, "%s: axis %s: %s", at, tostring(key), string.format(fmt, ...)) end
    if type(key) ~= "string" then bad("axes are named by a field (\"train.lr\") or \"spec\"") end
    if type(vals) ~= "table" or not is_list(vals) then bad("expected a list of values, e.g. {1e-4, 3e-4}") end
    if #vals == 0 then bad("empty (give at least one value)") end
    local ax = { key = key, values = {}, line = at }
    if key == "spec" then
      ax.fields = { "spec" }
      local missing = {}
      for i, v in ipairs(vals) do
        if type(v) ~= "string" then bad("value %d (%s): expected a spec file name", i, util.serialize(v)) end
        if not mf.read(v) then missing[#missing + 1] = v end
        ax.values[i] = { v }
      end
      if #missing > 0 then bad("spec files not found: %s", table.concat(missing, ", ")) end
      if t.base ~= nil then
        util.fail(2, "%s: base: a sweep with a spec axis takes each point's spec from that axis; remove base",
          where(sw, bare("base")))
      end
    else
      -- "a.b,c.d" links fields: every value is a list with one entry per field
      ax.fields = {}
      for f in key:gmatch("[^,]+") do ax.fields[#ax.fields + 1] = f:match("^%s*(.-)%s*$") end
      local schemas = {}
      for i, f in ipairs(ax.fields) do
        local s, why = schema_of(f)
        if not s then bad("%s%s", #ax.fields > 1 and (f .. ": ") or "", why) end
        if axis_field[f] then bad("%s is already varied by axis %s", f, axis_field[f]) end
        axis_field[f] = key
        schemas[i] = s
      end
      for i, v in ipairs(vals) do
        local tuple = v
        if #ax.fields == 1 then tuple = { v }
        elseif type(v) ~= "table" or #v ~= #ax.fields or not is_list(v) then
          bad("value %d (%s): expected a list of %d values, one for each of %s", i, util.serialize(v), #ax.fields,
            table.concat(ax.fields, ", "))
        end
        local norm = {}
        for j, x in ipairs(tuple) do
          local y, why = check_type(schemas[j], x)
          if y == nil then bad("value %d (%s): %s%s", i, util.serialize(x), #ax.fields > 1 and (ax.fields[j] .. ": ") or "", why) end
          norm[j] = y
        end
        ax.values[i] = norm
      end
    end
    axes[#axes + 1] = ax
  end
  if t.axes.spec == nil then
    if type(t.base) ~= "string" then
      util.fail(2, "%s: base: expected the spec file every point starts from (e.g. base = \"specs/gpt2_tiny.lua\")",
        t.base == nil and sw.path or where(sw, bare("base")))
    end
    if not mf.read(t.base) then util.fail(2, "%s: base: spec file not found: %s", where(sw, bare("base")), t.base) end
  end

  -- set: the overrides every point shares, as --set text
  local sets = {}
  if t.set ~= nil then
    local set_at = where(sw, bare("set"))
    if type(t.set) ~= "table" then util.fail(2, "%s: set: expected a table like { [\"train.steps\"] = 200 }", set_at) end
    for _, k in ipairs(util.sorted_keys(t.set)) do
      local v = t.set[k]
      local at = type(k) == "string" and where(sw, quoted(k), bare(k)) or set_at
      if type(k) ~= "string" then util.fail(2, "%s: set: keys are dotted field names, e.g. [\"train.steps\"]", at) end
      local s, why = schema_of(k)
      if not s then util.fail(2, "%s: set %s: %s", at, k, why) end
      local y, why2 = check_type(s, v)
      if y == nil then util.fail(2, "%s: set %s: %s, got %s", at, k, why2, util.serialize(v)) end
      if axis_field[k] then util.fail(2, "%s: set %s: also varied by axis %s", at, k, axis_field[k]) end
      sets[#sets + 1] = k .. "=" .. fmt_set(y)
    end
  end
  for _, s in ipairs(cli_sets) do
    local k = s:match("^([%w_%.]+)=")
    if k and axis_field[k] then util.fail(2, "gen: --set %s: %s is an axis of %s", s, k, sw.path) end
    sets[#sets + 1] = s
  end

  -- run: runtime options, passed to every point's training as flags
  local run, runargs = {}, {}
  if t.run ~= nil then
    local run_at = where(sw, bare("run"))
    if type(t.run) ~= "table" then util.fail(2, "%s: run: expected a table like { eval_every = 50 }", run_at) end
    for _, k in ipairs(util.sorted_keys(t.run)) do
      local v, r = t.run[k], RUN[k]
      local at = type(k) == "string" and where(sw, bare(k)) or run_at
      if not r then
        util.fail(2, "%s: run.%s: unknown field (known: %s; steps and the rest of training are spec fields: use set)",
          at, tostring(k), table.concat(util.sorted_keys(RUN), ", "))
      end
      local y, why = check_type(r, v)
      if y == nil then util.fail(2, "%s: run.%s: %s, got %s", at, k, why, util.serialize(v)) end
      if r.min and y < r.min then util.fail(2, "%s: run.%s: must be at least %d, got %d", at, k, r.min, y) end
      if type(y) == "string" and (y == "" or y:find("%s")) then
        util.fail(2, "%s: run.%s: must be non-empty and without spaces, got %q", at, k, y)
      end
      run[k] = y
      runargs[#runargs + 1] = r.flag
      runargs[#runargs + 1] = tostring(y)
    end
  end
  return { base = t.base, axes = axes, sets = sets, run = run, runargs = runargs, title = t.title or sw.name }
end

-- The Cartesian product of the axes (the last axis varies fastest), each point named by its values.
local function enumerate(sw, v)
  local leaves = {}
  for _, ax in ipairs(v.axes) do
    for _, f in ipairs(ax.fields) do
      local leaf = f:match("[^%.]+$")
      leaves[leaf] = (leaves[leaf] or 0) + 1
    end
  end
  local function label(f)
    local leaf = f:match("[^%.]+$")
    return leaves[leaf] > 1 and f:gsub("%.", "_") or leaf
  end
  local points, seen = {}, {}
  local function rec(i, acc)
    if i > #v.axes then
      local p = { spec = v.base, sets = {}, settings = {}, parts = {}, columns = {} }
      for _, s in ipairs(v.sets) do p.sets[#p.sets + 1] = s end
      for _, pick in ipairs(acc) do
        local ax, vals = pick[1], pick[2]
        local part = {}
        for j, f in ipairs(ax.fields) do
          local x = vals[j]
          if f == "spec" then
            p.spec = x
            part[#part + 1] = fmt_name(x:match("([^/]+)%.lua$") or x)
            p.settings.spec = x
          else
            p.sets[#p.sets + 1] = f .. "=" .. fmt_set(x)
            part[#part + 1] = label(f) .. "_" .. fmt_name(x)
            p.settings[f] = x
          end
          p.columns[#p.columns + 1] = f == "spec" and x or fmt_set(x)
        end
        p.parts[#p.parts + 1] = { axis = ax, text = table.concat(part, "_") }
      end
      local names = {}
      for _, pt in ipairs(p.parts) do names[#names + 1] = pt.text end
      p.name = table.concat(names, "__")
      if seen[p.name] then
        util.fail(2, "%s: two points are both named %s (an axis lists the same value twice?)", sw.path, p.name)
      end
      seen[p.name] = true
      points[#points + 1] = p
      return
    end
    for _, vals in ipairs(v.axes[i].values) do
      acc[i] = { v.axes[i], vals }
      rec(i + 1, acc)
    end
    acc[i] = nil
  end
  rec(1, {})
  return points
end

-- config.resolve on every point, its errors re-addressed to the sweep file and the axis.
local function check_point(sw, v, p)
  local ok, err = pcall(function() return config.resolve(config.load(p.spec), p.sets) end)
  if ok then return end
  if type(err) ~= "table" then error(err, 0) end
  local at, what = sw.path, "point " .. p.name
  for _, pt in ipairs(p.parts) do
    for _, f in ipairs(pt.axis.fields) do
      if err.msg:find(": " .. f .. ": ", 1, true) or (f == "spec" and err.msg:find(p.spec, 1, true)) then
        at, what = pt.axis.line, "axis " .. pt.axis.key .. ", point " .. p.name
      end
    end
  end
  util.fail(2, "%s: %s: %s", at, what, err.msg)
end

-- Write one file atomically: a temporary beside it, then rename.
local function write_file(path, data)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then util.fail(1, "gen: cannot write %s: %s", tmp, err) end
  local ok, werr = f:write(data)
  f:close()
  if not ok then os.remove(tmp); util.fail(1, "gen: cannot write %s: %s", tmp, werr) end
  local rok, rerr = os.rename(tmp, path)
  if not rok then os.remove(tmp); util.fail(1, "gen: cannot rename %s: %s", tmp, rerr) end
end

local PROGRAM = { "model.cu", "model.plan", "config.json" } -- what decides whether a run is stale
local COMPILED = { "model.ptx", "model.cubin", "kernels.txt" }

local function has_run(dir)
  for _, n in ipairs(mf.list(dir)) do if n == "run" then return true end end
  return false
end

-- Generate one point into its directory; returns a word saying what happened.
local function generate(o, p, pipeline)
  local po = {}
  for k, x in pairs(o) do po[k] = x end
  po.spec, po.sets, po.out, po.sweep = p.spec, p.sets, p.dir, nil
  local e = pipeline(po, "emit")
  local how = "not compiled (--no-compile)"
  if not o.nocompile then
    how = compile.nvrtc(e, po).hit and "compiled (cache hit)" or "compiled (NVRTC)"
  end
  local changed, same = false, true
  for _, f in ipairs(PROGRAM) do changed = changed or mf.read(p.dir .. "/" .. f) ~= e.files[f] end
  for f, data in pairs(e.files) do same = same and mf.read(p.dir .. "/" .. f) == data end
  if same then return "unchanged" end
  if not has_run(p.dir) then
    mf.publish(p.dir, e.files) -- a fresh directory, swapped in with one rename
    return how
  end
  -- keep run/: replace the program's files one by one, and drop compiled files of an older program
  for _, f in ipairs(COMPILED) do
    if not e.files[f] and changed then os.remove(p.dir .. "/" .. f) end
  end
  for _, f in ipairs(util.sorted_keys(e.files)) do
    if mf.read(p.dir .. "/" .. f) ~= e.files[f] then write_file(p.dir .. "/" .. f, e.files[f]) end
  end
  -- A run belongs to the configuration in its copy of config.json; scripts/sweep.sh retrains a
  -- point whose run has another one (a new arch or kernel code alone leaves the run valid).
  if mf.read(p.dir .. "/run/config.json") and mf.read(p.dir .. "/run/config.json") ~= e.files["config.json"] then
    return how .. "; configuration changed: its run is stale and will be retrained"
  end
  return how
end

function M.run(o, pipeline)
  local t0 = mf.clock()
  local sw = load_sweep(o.sweep)
  local v = validate(sw, o.sets)
  local points = enumerate(sw, v)
  for _, p in ipairs(points) do check_point(sw, v, p) end
  local dir = o.out .. "/" .. sw.name
  for _, p in ipairs(points) do p.dir = dir .. "/" .. p.name end
  if o.verbose then
    io.stderr:write(string.format("gen: sweep %s: %d points validated in %.1f ms\n", sw.name, #points, (mf.clock() - t0) * 1e3))
  end

  for i, p in ipairs(points) do
    local how = generate(o, p, pipeline)
    print(string.format("sweep %s: [%d/%d] %s → %s/  %s", sw.name, i, #points, p.name, p.dir, how))
  end

  -- sweep.json: everything about the sweep; points.tsv and run.args: the runner's plain view
  local axes_json = setmetatable({}, util.array_mt)
  local columns = { "point" }
  for _, ax in ipairs(v.axes) do
    local vals = setmetatable({}, util.array_mt)
    for i, x in ipairs(ax.values) do vals[i] = #ax.fields == 1 and x[1] or x end
    axes_json[#axes_json + 1] = { key = ax.key, fields = ax.fields, values = vals }
    for _, f in ipairs(ax.fields) do columns[#columns + 1] = f end
  end
  local pts, tsv = setmetatable({}, util.array_mt), { table.concat(columns, "\t") }
  for i, p in ipairs(points) do
    local ov = setmetatable({}, util.array_mt)
    for j, s in ipairs(p.sets) do ov[j] = s end
    pts[i] = { name = p.name, dir = p.dir, run_dir = p.dir .. "/run", spec = p.spec, overrides = ov, settings = p.settings }
    tsv[#tsv + 1] = p.name .. "\t" .. table.concat(p.columns, "\t")
  end
  local sets = setmetatable({}, util.array_mt)
  for i, s in ipairs(v.sets) do sets[i] = s end
  local runargs = setmetatable({}, util.array_mt)
  for i, a in ipairs(v.runargs) do runargs[i] = a end
  write_file(dir .. "/sweep.json", util.json({
    name = sw.name, file = sw.path, title = v.title, base = v.base, axes = axes_json, set = sets, run = v.run,
    runtime_args = runargs, points = pts,
  }))
  write_file(dir .. "/points.tsv", table.concat(tsv, "\n") .. "\n")
  write_file(dir .. "/run.args", #v.runargs > 0 and (table.concat(v.runargs, "\n") .. "\n") or "")
  write_file(dir .. "/title.txt", v.title .. "\n")
  print(string.format("sweep %s: %d point%s in %s/ (sweep.json) in %.2f s — train with scripts/sweep.sh %s",
    sw.name, #points, #points == 1 and "" or "s", dir, mf.clock() - t0, o.sweep))
end

return M
