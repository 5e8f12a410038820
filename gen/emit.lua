-- gen/emit.lua — pass `emit`: the memory-planned graph → model.cu, model.plan, config.json.
--
-- Kernels come from templates/: each templates/<group>.lua describes the device-function
-- templates of templates/<group>.cuh (signature, compile-time parameters, launch geometry).
-- model.cu is common.cuh + each used template inlined once (#line points back to the template)
-- + one extern "C" wrapper per distinct instantiation, with every shape a compile-time constant.
local util = require "util"
local M = {}

local EPI_NAMES = { [0] = "none", "bias", "gelu_bias", "dgelu" }

-- Load every kernel descriptor in templates/ into kind → descriptor.
local function load_descriptors(home)
  local kinds = {}
  for _, f in ipairs(mf.list(home .. "/templates")) do
    if f:match("%.lua$") then
      local path = home .. "/templates/" .. f
      local src = assert(mf.read(path))
      local chunk = assert(load(src, "@templates/" .. f, "t", { math = math, string = string, table = table,
        assert = assert, error = error, ipairs = ipairs, pairs = pairs, tostring = tostring, tonumber = tonumber,
        type = type }))
      local d = chunk()
      for kind, k in pairs(d.kernels) do
        assert(not kinds[kind], "op kind " .. kind .. " described twice (templates/" .. f .. ")")
        k.file = d.file
        k.kind = kind
        kinds[kind] = k
      end
    end
  end
  return kinds
end

local function fmt_attr(v)
  if math.type(v) == "integer" then return tostring(v) end
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
  return string.format("%.17g", v)
end

local function cfloat(v)
  local s = string.format("%.9g", v)
  if not s:find("[%.eEn]") then s = s .. ".0" end
  return s .. "f"
end

-- The plan's name for the storage behind a tensor.
local function ref_string(g, pidx, name)
  local t = g.tensors[name]
  if t.kind == "act" then return "act:" .. t.buffer end
  if t.kind == "param" then return "param:" .. pidx[t.param] end
  if t.kind == "grad" then return "grad:" .. pidx[t.param] end
  return name -- inputs and specials are named
end

-- A descriptor's tparams, consts, args, fn or files: a value, or a function of the op's attrs (and the
-- gen options: the target arch) returning one (attention_gen.lua: the dropout instantiation of attn takes
-- one more of each; for sm_90a the wgmma kernels of attention_wg.cuh replace the mma.sync ones).
local function dfield(d, key, attrs, opts)
  local v = d[key]
  if type(v) == "function" then v = v(attrs, opts) end
  return v
end

-- Order an op's refs as its kernel's arguments (matmul: a b c bias aux).
local MATMUL_ROLES = { "a", "b", "c", "bias", "aux" }
local function ordered_refs(op, desc)
  local by = {}
  for _, r in ipairs(op.refs) do by[r.role] = r end
  local out = {}
  if desc then
    for _, a in ipairs(dfield(desc, "args", op.attrs)) do
      local r = by[a[1]]
      if not r then error(string.format("op %s (%s): kernel argument %s has no ref", op.name, op.kind, a[1])) end
      out[#out + 1] = r
      by[a[1]] = nil
    end
    local extra = next(by)
    if extra then error(string.format("op %s (%s): ref %s is not a kernel argument", op.name, op.kind, extra)) end
  else
    for _, role in ipairs(MATMUL_ROLES) do if by[role] then out[#out + 1] = by[role] end end
  end
  return out
end

function M.run(g, opts)
  local home = mf.home
  local kinds = load_descriptors(home)
  local cfg = g.cfg
  local pidx = {}
  for i, p in ipairs(g.params) do pidx[p.name] = i - 1 end

  -- 1. kernels: one wrapper per distinct (kind, template args, consts)
  local wrappers, by_sig, used_files, names, missing = {}, {}, {}, {}, {}
  for i, op in ipairs(g.ops) do
    op.index = i - 1
    if op.kind ~= "matmul" then
      local d = kinds[op.kind]
      if not d and opts.nocompile then
        -- a kind the CPU backend defines but no template describes yet: with --no-compile the plan is
        -- still complete for `runtime --cpu` (refs in graph order, no kernel); compiling refuses it
        if not missing[op.kind] then
          missing[op.kind] = true
          io.stderr:write("gen: note: no kernel template describes op kind " .. op.kind ..
            " yet: this plan runs on the CPU backend only\n")
        end
        op.kernel = "-"
        goto next_op
      end
      if not d then error("no kernel template describes op kind " .. op.kind .. " (templates/*.lua)") end
      local tvals, cvals = {}, {}
      for _, k in ipairs(dfield(d, "tparams", op.attrs) or {}) do
        local v = op.attrs[k]
        assert(v, op.kind .. ": missing attr " .. k)
        tvals[#tvals + 1] = fmt_attr(v)
      end
      for _, k in ipairs(dfield(d, "consts", op.attrs) or {}) do
        local v = op.attrs[k]
        assert(v, op.kind .. ": missing attr " .. k)
        cvals[#cvals + 1] = cfloat(v)
      end
      local sig = op.kind .. "<" .. table.concat(tvals, ",") .. ">(" .. table.concat(cvals, ",") .. ")"
      local w = by_sig[sig]
      if not w then
        local base = op.kind .. (#tvals > 0 and ("_" .. table.concat(tvals, "x")) or "")
        local name, k = base, 1
        while names[name] do k = k + 1; name = base .. "_v" .. k end
        names[name] = true
        local L = d.launch(op.attrs, opts)
        local files = dfield(d, "files", op.attrs, opts) or { d.file }
        w = { name = name, desc = d, tvals = tvals, cvals = cvals, launch = L, first = op,
              args = dfield(d, "args", op.attrs), fn = dfield(d, "fn", op.attrs, opts), file = files[#files] }
        by_sig[sig] = w
        wrappers[#wrappers + 1] = w
        for _, f in ipairs(files) do used_files[f] = true end
      end
      op.kernel = w.name
      op.launch = w.launch
    else
      op.kernel = "-"
    end
    ::next_op::
  end

  -- 2. model.cu
  local cu = {}
  local function add(s) cu[#cu + 1] = s end
  add(string.format("// model.cu — generated by moonforge gen from %s%s. Do not edit: regenerate.",
    cfg.spec_path, #cfg.overrides > 0 and (" with --set " .. table.concat(cfg.overrides, " --set ")) or ""))
  add(string.format("// %s: %d parameters, %d ops, %d kernels.", cfg.name, g.stats.params, #g.ops, #wrappers))
  local function inline(file)
    local src = assert(mf.read(home .. "/templates/" .. file))
    add('#line 1 "templates/' .. file .. '"')
    add(src)
  end
  inline("common.cuh")
  -- inlined in name order (a file needing another's functions sorts after it: attention_gen.cuh, then
  -- attention_wg.cuh)
  for _, f in ipairs(util.sorted_keys(used_files)) do inline(f) end
  local body = {}
  for _, w in ipairs(wrappers) do
    local d, L = w.desc, w.launch
    local params, args = {}, {}
    for _, a in ipairs(w.args) do
      params[#params + 1] = a[2] .. " " .. a[1]
      args[#args + 1] = a[1]
    end
    for _, c in ipairs(w.cvals) do args[#args + 1] = c end
    local attrs = {}
    for _, k in ipairs(util.sorted_keys(w.first.attrs)) do attrs[#attrs + 1] = k .. "=" .. fmt_attr(w.first.attrs[k]) end
    local threads = L.block[1] * (L.block[2] or 1) * (L.block[3] or 1)
    body[#body + 1] = string.format("// %s (%s)  templates/%s\n" ..
      "extern \"C\" __global__ void __launch_bounds__(%s)%s %s(%s) {\n  %s%s(%s);\n}\n",
      w.first.kind, table.concat(attrs, " "), w.file,
      -- a descriptor may ask for a minimum number of resident blocks (it caps registers per thread)
      L.min_blocks and (threads .. ", " .. L.min_blocks) or tostring(threads),
      -- and for thread-block clusters along x (grid x is a multiple; the launch itself stays plain)
      L.cluster and string.format(" __cluster_dims__(%d, 1, 1)", L.cluster) or "", w.name, table.concat(params, ", "),
      w.fn, #w.tvals > 0 and ("<" .. table.concat(w.tvals, ", ") .. ">") or "", table.concat(args, ", "))
  end
  local pre = table.concat(cu, "\n")
  local nlines = select(2, pre:gsub("\n", "")) + 3
  local source = pre .. "\n// ---- kernels: one per distinct instantiation ----\n#line " .. nlines .. ' "model.cu"\n' ..
    table.concat(body, "\n")

  -- 3. model.plan
  local tr, m = cfg.train, cfg.model
  local P = {}
  local function line(...) P[#P + 1] = table.concat({ ... }, " ") end
  line("moonforge-plan", "1")
  line("name", cfg.name)
  line("source_hash", util.hash(source))
  local dims = {
    B = tr.batch_size, T = m.seq_len, D = m.d_model, L = m.n_layer, H = m.n_head, V = m.vocab_size,
    Vp = cfg.derived.vocab_padded, accum = tr.grad_accum, N = cfg.derived.tokens_per_micro,
    flops_per_token = g.stats.flops_per_token, nparams = g.stats.params, G = 512,
    arch = tonumber(opts.arch:match("%d+")),
  }
  for _, k in ipairs(util.sorted_keys(dims)) do line("dim", k, fmt_attr(dims[k])) end
  for _, k in ipairs(util.sorted_keys(tr)) do line("train", k, fmt_attr(tr[k])) end
  for i, p in ipairs(g.params) do
    local dd = {}
    for j, v in ipairs(p.shape) do dd[j] = tostring(v) end
    line("param", i - 1, p.name, p.numel, p.offset, p.decay and 1 or 0, p.init, fmt_attr(p.std), #p.shape, table.concat(dd, " "),
      p.frozen and "frozen" or nil)
  end
  line("arena", "params", g.param_elems)
  for _, b in ipairs(g.buffers) do
    line("buffer", b.index, b.name, b.dtype, b.numel, b.gpu_off, b.cpu_off)
  end
  line("arena", "acts", g.memory.gpu_bytes, g.memory.cpu_elems)
  for _, nm in ipairs(util.sorted_keys(g.tensors)) do
    local t = g.tensors[nm]
    if t.kind == "input" then line("input", nm, "i32", util.prod(t.shape)) end
  end
  for _, op in ipairs(g.ops) do
    local refs = missing[op.kind] and op.refs or ordered_refs(op, op.kind ~= "matmul" and kinds[op.kind] or nil)
    local rs = {}
    for _, r in ipairs(refs) do rs[#rs + 1] = (r.out and ">" or "") .. r.role .. "=" .. ref_string(g, pidx, r.tensor) end
    local as = {}
    for _, k in ipairs(util.sorted_keys(op.attrs)) do as[#as + 1] = k .. "=" .. fmt_attr(op.attrs[k]) end
    local L = op.launch or { grid = { 0, 0, 0 }, block = { 0, 0, 0 }, smem = 0 }
    local comment = op.name or op.kind
    if op.kind == "matmul" then comment = comment .. " epi=" .. EPI_NAMES[op.attrs.epi] end
    line("op", op.index, op.phase, op.kind, op.kernel,
      L.grid[1], L.grid[2] or 1, L.grid[3] or 1, L.block[1], L.block[2] or 1, L.block[3] or 1, L.smem or 0,
      #rs, table.concat(rs, " "), #as, table.concat(as, " "), "#", comment)
  end
  line("end")

  -- 4. config.json: the resolved config and the parameter table, for references and tools
  local params = {}
  for i, p in ipairs(g.params) do
    params[i] = { name = p.name, shape = p.shape, decay = p.decay, init = p.init, std = p.std, offset = p.offset,
      frozen = p.frozen }
  end
  local conf = {
    name = cfg.name, family = cfg.family, spec = cfg.spec_path, overrides = cfg.overrides,
    model = m, train = tr, derived = cfg.derived, params = params, parscale = cfg.parscale,
    stats = { params = g.stats.params, flops_per_token = g.stats.flops_per_token },
  }
  conf.model = {}
  for k, v in pairs(m) do conf.model[k] = v end
  conf.model.vocab_padded = cfg.derived.vocab_padded

  return {
    graph = g, source = source, kernels = wrappers,
    files = { ["model.cu"] = source, ["model.plan"] = table.concat(P, "\n") .. "\n", ["config.json"] = util.json(conf) },
  }
end

return M
