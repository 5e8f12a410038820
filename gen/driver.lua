-- gen/driver.lua — the generator as one readable list of passes.
--
--   spec → config → graph → backward → fusion → memory → emit → compile
--
-- Each pass takes the previous stage's plain table and returns the next; `gen --dump STAGE`
-- prints that stage and stops, so a wrong kernel can be traced to the pass that made it.
local util = require "util"
local config = require "config"
local graph = require "graph"
local autodiff = require "autodiff"
local fuse = require "fuse"
local memplan = require "memplan"
local emit = require "emit"
local compile = require "compile"
local sweep = require "sweep"
local import_hf = require "import_hf"

local USAGE = [[
usage: gen SPEC [-o DIR] [--set key=value]... [--arch sm_90a] [--dump STAGE] [--no-fuse] [-v]
       gen --sweep SWEEP.lua [-o DIR] [--set key=value]... [--no-compile] [-v]
       gen --import-hf HF_DIR --write-spec SPEC.lua [--set key=value]... [-o DIR ...]

  SPEC            a model spec (Lua), e.g. specs/gpt2_124m.lua
  -o DIR          output directory (default out/); replaced atomically
  --set k=v       override any spec field, e.g. --set train.lr=1e-3 --set model.n_layer=4
  --arch sm_XX    NVRTC target (default sm_90a: Hopper's wgmma attention; sm_90 and others: mma.sync)
  --dump STAGE    print one stage and stop: spec config graph backward fusion memory emit
  --no-fuse       skip the fusion pass (debugging: every op runs as its own kernel)
  --no-compile    write model.cu and the plan but skip NVRTC (no model.ptx)
  --no-cache      run NVRTC even when the compile cache has this program (and do not store it);
                  the cache is $MOONFORGE_CACHE (default ~/.cache/moonforge/nvrtc; "off" disables)
  --sweep FILE    one program per point of a sweep (specs/sweeps/*.lua) into DIR/<sweep>/<point>/,
                  plus DIR/<sweep>/sweep.json; --set applies to every point (see README "Sweeps")
  --import-hf D   write a spec (--write-spec FILE) for the Qwen2 checkpoint in D (config.json); --set
                  values go into it; with -o also generate it. Load the weights with
                  `runtime DIR/model.ptx --init-from D` (README "Importing Qwen2")
  -v              print the time of each stage and whether NVRTC's output came from the cache]]

local PASSES = {
  { "spec",     function(s, o) return config.load(o.spec) end },
  { "config",   function(s, o) return config.resolve(s, o.sets) end },
  { "graph",    function(s) return graph.build(s) end },
  { "backward", function(s) return autodiff.derive(s) end },
  { "fusion",   function(s, o) return o.nofuse and s or fuse.run(s) end },
  { "memory",   function(s) return memplan.run(s) end },
  { "emit",     function(s, o) return emit.run(s, o) end },
  { "compile",  function(s, o) return compile.run(s, o) end },
}

local function parse_args(argv)
  local o = { sets = {}, out = "out", arch = "sm_90a" }
  local i = 1
  local function value(flag)
    i = i + 1
    if argv[i] == nil then util.fail(2, "gen: %s needs a value", flag) end
    return argv[i]
  end
  while argv[i] do
    local a = argv[i]
    if a == "-h" or a == "--help" then print(USAGE); os.exit(0)
    elseif a == "-o" then o.out = value(a); o.out_given = true
    elseif a == "--set" then o.sets[#o.sets + 1] = value(a)
    elseif a:match("^%-%-set=") then o.sets[#o.sets + 1] = a:sub(7)
    elseif a == "--arch" then o.arch = value(a)
    elseif a == "--dump" then o.dump = value(a)
    elseif a == "--no-fuse" then o.nofuse = true
    elseif a == "--no-compile" then o.nocompile = true
    elseif a == "--no-cache" then o.nocache = true
    elseif a == "--sweep" then o.sweep = value(a)
    elseif a == "--import-hf" then o.import_hf = value(a)
    elseif a == "--write-spec" then o.write_spec = value(a)
    elseif a == "-v" then o.verbose = true
    elseif a:sub(1, 1) == "-" then util.fail(2, "gen: unknown option %s\n%s", a, USAGE)
    elseif o.spec then util.fail(2, "gen: more than one spec given (%s and %s)", o.spec, a)
    else o.spec = a end
    i = i + 1
  end
  if o.write_spec and not o.import_hf then util.fail(2, "gen: --write-spec goes with --import-hf HF_DIR") end
  if o.import_hf and (o.spec or o.sweep) then
    util.fail(2, "gen: --import-hf writes a spec; give no spec (%s) or --sweep with it", o.spec or o.sweep)
  end
  if o.sweep and o.spec then util.fail(2, "gen: give either a spec (%s) or --sweep %s, not both", o.spec, o.sweep) end
  if o.sweep and o.dump then util.fail(2, "gen: --dump works on one spec, not with --sweep") end
  if not o.spec and not o.sweep and not o.import_hf then util.fail(2, "%s", USAGE) end
  if not o.arch:match("^sm_%d+a?$") then util.fail(2, "gen: --arch %s: expected sm_NN (e.g. sm_90)", o.arch) end
  if o.dump then
    local known = false
    for _, p in ipairs(PASSES) do known = known or p[1] == o.dump end
    if not known then util.fail(2, "gen: --dump %s: unknown stage (spec config graph backward fusion memory emit)", o.dump) end
  end
  o.out = o.out:gsub("/+$", "")
  return o
end

-- Run the passes for options `o` (o.spec, o.sets, ...) up to and including stage `last`; returns
-- that stage's table. With o.dump, prints the dumped stage and returns nil.
local function pipeline(o, last)
  local stage
  for _, p in ipairs(PASSES) do
    local t0 = mf.clock()
    stage = p[2](stage, o)
    if o.verbose then io.stderr:write(string.format("gen: %-8s %7.1f ms\n", p[1], (mf.clock() - t0) * 1e3)) end
    if o.dump == p[1] then
      io.write(util.dump(stage, p[1]))
      return nil
    end
    if p[1] == last then break end
  end
  return stage
end

local o = parse_args(arg)
if o.import_hf then
  -- the --set values are now part of the spec: generating it applies them once, from the file
  o.spec = import_hf.run(o)
  o.sets = {}
  if o.out_given or o.dump then pipeline(o, "compile") end
elseif o.sweep then
  sweep.run(o, pipeline)
else
  pipeline(o, "compile")
end
return 0
