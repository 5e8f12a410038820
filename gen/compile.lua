-- gen/compile.lua — pass `compile`: NVRTC model.cu → model.ptx (+ model.cubin for a real sm_XX),
-- read ptxas's resource report into kernels.txt, print the summary and publish out/ atomically.
--
-- NVRTC output is cached (see "The compile cache" below), so regenerating a spec whose kernels
-- did not change — every point of a learning-rate sweep, say — skips NVRTC entirely.
--
-- A compile error leaves out/ untouched and writes DIR.failed/ (model.cu + nvrtc.log) so the
-- failure can be reproduced with the exact source.
local util = require "util"
local M = {}

local function cuda_home()
  local h = os.getenv("CUDA_HOME") or os.getenv("CUDA_PATH")
  if h and h ~= "" then return h end
  return "/usr/local/cuda"
end

-- ptxas -v lines → per-kernel registers, stack frame and spills.
local function parse_ptxas(log)
  local ks, cur = {}, nil
  for ln in log:gmatch("[^\n]+") do
    local fn = ln:match("Compiling entry function '([^']+)'") or ln:match("Function properties for ([%w_]+)")
    if fn then
      cur = ks[fn] or { name = fn, regs = 0, stack = 0, spill_st = 0, spill_ld = 0 }
      ks[fn] = cur
    end
    if cur then
      local st, ss, sl = ln:match("(%d+) bytes stack frame, (%d+) bytes spill stores, (%d+) bytes spill loads")
      if st then cur.stack, cur.spill_st, cur.spill_ld = tonumber(st), tonumber(ss), tonumber(sl) end
      local r = ln:match("Used (%d+) registers")
      if r then cur.regs = tonumber(r) end
    end
  end
  local out = {}
  for _, k in ipairs(util.sorted_keys(ks)) do out[#out + 1] = ks[k] end
  return out
end

local function summary(e, o)
  local g, cfg = e.graph, e.graph.cfg
  local pe = g.param_elems
  local bytes = { params = pe * 2, master = pe * 4, grads = pe * 4, adam = pe * 8, acts = g.memory.gpu_bytes }
  local total = 0
  for _, v in pairs(bytes) do total = total + v end
  local gib = function(b)
    if b >= 2 ^ 30 then return string.format("%.2f GiB", b / 2 ^ 30) end
    return string.format("%.2f MiB", b / 2 ^ 20)
  end
  local lines = {
    string.format("gen: %s → %s/  (%s%s)", cfg.spec_path, o.out, cfg.name,
      #cfg.overrides > 0 and (", --set " .. table.concat(cfg.overrides, " --set ")) or ""),
    string.format("  parameters      %.3fM (%d tensors, vocab %d padded to %d)", g.stats.params / 1e6, #g.params,
      cfg.model.vocab_size, cfg.derived.vocab_padded),
    string.format("  FLOPs/token     %.3f GFLOP (6·N + 6·L·T·D)", g.stats.flops_per_token / 1e9),
    string.format("  step            %d × %d tokens (batch %d × seq %d, accum %d)", cfg.train.grad_accum,
      cfg.derived.tokens_per_micro, cfg.train.batch_size, cfg.model.seq_len, cfg.train.grad_accum),
    string.format("  ops             %d (%d kernels, %d cuBLASLt matmuls)%s", #g.ops, #e.kernels,
      (function() local n = 0; for _, op in ipairs(g.ops) do if op.kind == "matmul" then n = n + 1 end end; return n end)(),
      g.fused and (" — fusion: " .. table.concat(g.fused, ", ")) or ""),
    string.format("  device memory   %s: params bf16 %s, master+grads+AdamW f32 %s, activations %s (%s without reuse)",
      gib(total), gib(bytes.params), gib(bytes.master + bytes.grads + bytes.adam), gib(bytes.acts), gib(g.memory.unshared_bytes)),
  }
  return table.concat(lines, "\n")
end

-- ---- The compile cache -------------------------------------------------------------------------
-- An entry is a directory CACHE/<key>/ holding what one NVRTC run produced (model.ptx, model.cubin
-- when NVRTC made one, nvrtc.log with ptxas's report) and what it was made from (key.txt: the
-- NVRTC version, architecture and options; model.cu: the source). key = FNV-1a 64 of exactly that
-- material, so any change to the generated source, the options, the architecture or the NVRTC
-- version gives another entry. A hit is accepted only when key.txt and the source are byte-equal
-- to the current ones, so a hash collision can only cost a recompile, never a wrong program.
-- Entries are written with mf.publish (a temporary directory beside the entry, then one rename),
-- so a concurrent or interrupted gen leaves either no entry or a complete one.
-- The source's leading `//` comment lines (provenance: the spec path and its --set overrides) are
-- left out of the key and the comparison: comments cannot change the compiled code, and keeping
-- them out is what lets the points of a sweep that differ only in runtime values (train.lr,
-- train.steps, ...) share one entry.
-- CACHE is $MOONFORGE_CACHE, else ~/.cache/moonforge/nvrtc; MOONFORGE_CACHE=off (or gen
-- --no-cache) turns it off.

local function cache_root(o)
  if o.nocache then return nil end
  local d = os.getenv("MOONFORGE_CACHE")
  if d then
    if d == "" or d == "off" then return nil end
    return (d:gsub("/+$", ""))
  end
  local home = os.getenv("HOME")
  if not home or home == "" then return nil end
  return home .. "/.cache/moonforge/nvrtc"
end

-- The source without its leading comment lines: what the key and the comparison see.
local function code_of(source)
  local i = 1
  while source:sub(i, i + 1) == "//" do
    local j = source:find("\n", i, true)
    if not j then return "" end
    i = j + 1
  end
  return source:sub(i)
end

-- A cached entry's outputs, or nil when there is none that matches exactly.
local function cache_get(dir, header, code)
  if mf.read(dir .. "/key.txt") ~= header then return nil end
  local cached = mf.read(dir .. "/model.cu")
  if not cached or code_of(cached) ~= code then return nil end
  local ptx, log = mf.read(dir .. "/model.ptx"), mf.read(dir .. "/nvrtc.log")
  if not ptx or not log then return nil end
  return ptx, mf.read(dir .. "/model.cubin"), log -- no model.cubin: NVRTC made none (virtual arch)
end

local function cache_put(dir, header, source, ptx, cubin, log)
  local files = { ["key.txt"] = header, ["model.cu"] = source, ["model.ptx"] = ptx, ["nvrtc.log"] = log }
  if cubin and #cubin > 0 then files["model.cubin"] = cubin end
  -- a cache that cannot be written (read-only home, full disk) costs speed, not correctness
  local ok, err = pcall(mf.publish, dir, files)
  if not ok then
    io.stderr:write("gen: warning: cannot write the compile cache: " .. tostring(type(err) == "table" and err.msg or err) .. "\n")
  end
end

local function vlog(o, fmt, ...)
  if o.verbose then io.stderr:write(string.format("gen: " .. fmt .. "\n", ...)) end
end

-- NVRTC (or the cache) for e.source: adds model.ptx, model.cubin and kernels.txt to e.files.
-- Returns { hit = bool (the output came from the cache), key = the entry's 16 hex digits }.
function M.nvrtc(e, o)
  local files = e.files
  local opts = { "--gpu-architecture=" .. o.arch, "-std=c++17", "-I" .. cuda_home() .. "/include",
    "-lineinfo", "--ptxas-options=-v", "-default-device",
    -- optimise the kernels on every core (a fresh swamla_base: 10.1 s → 6.4 s of NVRTC on 2 cores;
    -- the same registers and spills per kernel, give or take one register)
    "--split-compile=0" }
  local version, verr = mf.nvrtc_version()
  if not version then util.fail(1, "gen: %s", verr) end
  local header = table.concat({ "moonforge nvrtc cache 1", "nvrtc " .. version, "arch " .. o.arch,
    "options " .. table.concat(opts, " ") }, "\n") .. "\n"
  local root = cache_root(o)
  local t0 = mf.clock()
  local code = code_of(e.source)
  local key = util.hash(header .. code)
  local dir = root and (root .. "/" .. key)
  local ptx, cubin, log
  if dir then ptx, cubin, log = cache_get(dir, header, code) end
  local hit = ptx ~= nil
  if hit then
    vlog(o, "compile  cache hit  %s (%s; NVRTC skipped, %.1f ms)", key, dir, (mf.clock() - t0) * 1e3)
  else
    local t1 = mf.clock()
    ptx, cubin, log = mf.nvrtc(e.source, "model.cu", opts, true)
    if not ptx then
      mf.publish(o.out .. ".failed", { ["model.cu"] = e.source, ["nvrtc.log"] = log,
        ["command.txt"] = "nvrtc " .. table.concat(opts, " ") .. "\n" })
      util.fail(1, "gen: NVRTC failed to compile %s/model.cu — source and log kept in %s.failed/ (%s unchanged):\n%s",
        o.out, o.out, o.out, log)
    end
    local t2 = mf.clock()
    if dir then cache_put(dir, header, e.source, ptx, cubin, log) end
    vlog(o, "compile  cache miss %s (NVRTC %s %.1f ms%s)", key, version, (t2 - t1) * 1e3,
      dir and string.format(", stored in %s in %.1f ms", dir, (mf.clock() - t2) * 1e3) or ", cache off")
  end
  files["model.ptx"] = ptx
  if cubin and #cubin > 0 then files["model.cubin"] = cubin end
  local ks = parse_ptxas(log)
  local rep = { "# kernel registers stack_bytes spill_store_bytes spill_load_bytes  (ptxas -v, " .. o.arch .. ", NVRTC " ..
    version .. ")" }
  local spills = {}
  for _, k in ipairs(ks) do
    rep[#rep + 1] = string.format("%s %d %d %d %d", k.name, k.regs, k.stack, k.spill_st, k.spill_ld)
    if k.spill_st > 0 or k.spill_ld > 0 then spills[#spills + 1] = k.name end
  end
  files["kernels.txt"] = table.concat(rep, "\n") .. "\n"
  if #spills > 0 then io.stderr:write("gen: warning: register spills in " .. table.concat(spills, ", ") .. " (see kernels.txt)\n") end
  return { hit = hit, key = key }
end

function M.run(e, o)
  if not o.nocompile then M.nvrtc(e, o) end
  local t0 = mf.clock()
  mf.publish(o.out, e.files)
  vlog(o, "compile  published %s/ in %.1f ms", o.out, (mf.clock() - t0) * 1e3)
  print(summary(e, o))
  return e
end

return M
