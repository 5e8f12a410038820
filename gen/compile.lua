-- gen/compile.lua — pass `compile`: NVRTC model.cu → model.ptx (+ model.cubin for a real sm_XX),
-- read ptxas's resource report into kernels.txt, print the summary and publish out/ atomically.
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

function M.run(e, o)
  local files = e.files
  if not o.nocompile then
    local opts = { "--gpu-architecture=" .. o.arch, "-std=c++17", "-I" .. cuda_home() .. "/include",
      "-lineinfo", "--ptxas-options=-v", "-default-device" }
    local ptx, cubin, log = mf.nvrtc(e.source, "model.cu", opts, true)
    if not ptx then
      mf.publish(o.out .. ".failed", { ["model.cu"] = e.source, ["nvrtc.log"] = log,
        ["command.txt"] = "nvrtc " .. table.concat(opts, " ") .. "\n" })
      util.fail(1, "gen: NVRTC failed to compile %s/model.cu — source and log kept in %s.failed/ (%s unchanged):\n%s",
        o.out, o.out, o.out, log)
    end
    files["model.ptx"] = ptx
    if cubin and #cubin > 0 then files["model.cubin"] = cubin end
    local ks = parse_ptxas(log)
    local rep = { "# kernel registers stack_bytes spill_store_bytes spill_load_bytes  (ptxas -v, " .. o.arch .. ", NVRTC " ..
      (mf.nvrtc_version() or "?") .. ")" }
    local spills = {}
    for _, k in ipairs(ks) do
      rep[#rep + 1] = string.format("%s %d %d %d %d", k.name, k.regs, k.stack, k.spill_st, k.spill_ld)
      if k.spill_st > 0 or k.spill_ld > 0 then spills[#spills + 1] = k.name end
    end
    files["kernels.txt"] = table.concat(rep, "\n") .. "\n"
    if #spills > 0 then io.stderr:write("gen: warning: register spills in " .. table.concat(spills, ", ") .. " (see kernels.txt)\n") end
  end
  mf.publish(o.out, files)
  print(summary(e, o))
  return e
end

return M
