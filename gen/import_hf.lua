-- gen/import_hf.lua — a Hugging Face Qwen2 directory → a moonforge spec file.
--
--   gen --import-hf HF_DIR --write-spec specs/x.lua [--set key=value]... [-o OUT]
--
-- Reads HF_DIR/config.json (model_type qwen2, Qwen2ForCausalLM) and writes a spec of family qwen2
-- whose shapes are the checkpoint's, so that `runtime OUT/model.ptx --init-from HF_DIR` can load the
-- weights (runtime/hf_qwen2.c maps the tensor names). --set overrides are written into the spec
-- (e.g. --set parscale.n=4 for the two-stage ParScale recipe). The spec is validated by the config
-- pass before it is written, and written atomically.
--
-- config.json → spec:
--   hidden_size → model.d_model          num_hidden_layers → model.n_layer
--   num_attention_heads → model.n_head   num_key_value_heads → model.n_kv_head (attention mha / gqa / mqa)
--   intermediate_size → model.mlp_hidden vocab_size → model.vocab_size (padded to 128 rows by gen)
--   rope_theta (or rope_parameters.rope_theta) → model.rope_base   rms_norm_eps → model.ln_eps
--   tie_word_embeddings → model.tie_embeddings
--   max_position_embeddings → model.seq_len = min(max_position_embeddings, 2048): the training context,
--     not the model's limit (RoPE has no position table, so a shorter context loses nothing; 2048 is the
--     context of the ParScale paper's continued pre-training). --set model.seq_len=N picks another.
-- Fixed by Qwen2: RMSNorm, SwiGLU (hidden_act silu), RoPE half-split, q/k/v bias, no o/MLP bias.
-- Refused with a message naming the field: another model_type, hidden_act ≠ silu, a head_dim ≠
-- hidden_size / num_attention_heads, rope scaling, sliding-window attention, missing or mistyped fields.
local util = require "util"
local json = require "json"
local config = require "config"
local M = {}

M.DEFAULT_SEQ_LEN = 2048

local function is_null(v) return v == nil or v == json.null end

-- Read and check config.json; returns the model fields of the spec and a few notes for its header.
function M.model_fields(dir)
  local path = dir .. "/config.json"
  local text, err = mf.read(path)
  if not text then util.fail(2, "gen: --import-hf: cannot read %s", err) end
  local c = json.decode(text, path)
  if type(c) ~= "table" or c[1] ~= nil then util.fail(2, "%s: expected a JSON object", path) end
  local function bad(key, fmt, ...) util.fail(2, "%s: %s: %s", path, key, string.format(fmt, ...)) end
  if c.model_type ~= "qwen2" then
    bad("model_type", "%s; --import-hf reads Qwen2 checkpoints (model_type \"qwen2\", Qwen2ForCausalLM)",
      is_null(c.model_type) and "missing" or util.serialize(c.model_type))
  end
  local function int(key, dflt)
    local v = c[key]
    if is_null(v) then
      if dflt ~= nil then return dflt end
      bad(key, "missing")
    end
    if math.type(v) ~= "integer" or v < 1 then bad(key, "expected a positive integer, got %s", util.serialize(v)) end
    return v
  end
  local function num(v, key)
    if type(v) ~= "number" or not (v > 0) then bad(key, "expected a positive number, got %s", util.serialize(v)) end
    return v + 0.0
  end
  local D, L, H = int("hidden_size"), int("num_hidden_layers"), int("num_attention_heads")
  local Hkv = int("num_key_value_heads", H)
  local F, V = int("intermediate_size"), int("vocab_size")
  local mpe = int("max_position_embeddings", 32768)
  if D % H ~= 0 then bad("num_attention_heads", "%d does not divide hidden_size %d", H, D) end
  if H % Hkv ~= 0 then bad("num_key_value_heads", "%d does not divide num_attention_heads %d", Hkv, H) end
  if not is_null(c.head_dim) and c.head_dim ~= D // H then
    bad("head_dim", "%s; moonforge's heads have hidden_size / num_attention_heads = %d dims", util.serialize(c.head_dim), D // H)
  end
  local act = is_null(c.hidden_act) and "silu" or c.hidden_act
  if act ~= "silu" then bad("hidden_act", "%s; Qwen2's MLP is SwiGLU (silu)", util.serialize(act)) end
  if c.use_sliding_window == true then
    bad("use_sliding_window", "true; sliding-window Qwen2 layers are not supported (the mask differs from moonforge's swa)")
  end
  -- transformers 5.x lists each layer's attention; a sliding one would need Qwen2's window mask
  if not is_null(c.layer_types) then
    if type(c.layer_types) ~= "table" then bad("layer_types", "expected a list, got %s", util.serialize(c.layer_types)) end
    for i, t in ipairs(c.layer_types) do
      if t ~= "full_attention" then
        bad("layer_types", "layer %d is %s; only full attention layers are supported", i - 1, util.serialize(t))
      end
    end
  end
  -- RoPE: transformers 4.x writes rope_theta (+ rope_scaling), 5.x rope_parameters {rope_type, rope_theta}
  local base, rp = c.rope_theta, c.rope_parameters
  if not is_null(rp) then
    if type(rp) ~= "table" then bad("rope_parameters", "expected an object, got %s", util.serialize(rp)) end
    if not is_null(rp.rope_type) and rp.rope_type ~= "default" then
      bad("rope_parameters.rope_type", "%s; only the default (unscaled) RoPE is supported", util.serialize(rp.rope_type))
    end
    if not is_null(rp.rope_theta) then
      num(rp.rope_theta, "rope_parameters.rope_theta")
      if not is_null(base) and num(base, "rope_theta") ~= rp.rope_theta + 0.0 then
        bad("rope_theta", "%s differs from rope_parameters.rope_theta %s", util.serialize(base), util.serialize(rp.rope_theta))
      end
      base = rp.rope_theta
    end
  end
  local rs = c.rope_scaling
  if not is_null(rs) then
    local kind = type(rs) == "table" and (rs.rope_type or rs.type) or rs
    if kind ~= "default" then bad("rope_scaling", "%s; only the default (unscaled) RoPE is supported", util.serialize(rs)) end
  end
  base = is_null(base) and 10000.0 or num(base, "rope_theta")
  local eps = is_null(c.rms_norm_eps) and 1e-6 or num(c.rms_norm_eps, "rms_norm_eps")
  local tie = c.tie_word_embeddings
  if is_null(tie) then tie = false end -- Qwen2Config's default
  if type(tie) ~= "boolean" then bad("tie_word_embeddings", "expected true or false, got %s", util.serialize(tie)) end
  local m = {
    n_layer = L, d_model = D, n_head = H, seq_len = math.min(mpe, M.DEFAULT_SEQ_LEN), vocab_size = V,
    mlp_hidden = F, ln_eps = eps, rope_base = base, tie_embeddings = tie,
    norm = "rmsnorm", mlp = "swiglu", position = "rope", rope_layout = "half",
    attn_bias = true, proj_bias = false, mlp_bias = false,
  }
  if Hkv == H then m.attention = "mha"
  elseif Hkv == 1 then m.attention = "mqa"
  else m.attention, m.n_kv_head = "gqa", Hkv end
  local dtype = c.torch_dtype or c.dtype
  local notes = {
    string.format("max_position_embeddings %d; training context seq_len = min(that, %d)", mpe, M.DEFAULT_SEQ_LEN),
    string.format("checkpoint dtype %s", type(dtype) == "string" and dtype or "unknown"),
  }
  return m, notes
end

-- A Lua literal for a value; floats with the fewest digits that read back exactly.
local function lit(v)
  if type(v) == "string" then return string.format("%q", v) end
  if math.type(v) == "float" then
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%.1f", v) end
    for digits = 1, 17 do
      local s = string.format("%." .. digits .. "g", v)
      if tonumber(s) == v then return s end
    end
  end
  return tostring(v)
end

local ORDER = { "name", "family", "model", "parscale", "train" }

local function emit(v, indent, out)
  if type(v) ~= "table" then out[#out + 1] = lit(v); return end
  if next(v) == nil then out[#out + 1] = "{}"; return end
  local keys = util.sorted_keys(v)
  if indent == "" then -- top level: the conventional order first
    local rank = {}
    for i, k in ipairs(ORDER) do rank[k] = i end
    table.sort(keys, function(a, b)
      local ra, rb = rank[a] or 99, rank[b] or 99
      if ra ~= rb then return ra < rb end
      return tostring(a) < tostring(b)
    end)
  end
  local list = #v > 0
  out[#out + 1] = "{\n"
  for _, k in ipairs(keys) do
    out[#out + 1] = indent .. "  "
    if not list then
      out[#out + 1] = (type(k) == "string" and k:match("^[%a_][%w_]*$")) and k or ("[" .. lit(k) .. "]")
      out[#out + 1] = " = "
    end
    emit(v[k], indent .. "  ", out)
    out[#out + 1] = ",\n"
  end
  out[#out + 1] = indent .. "}"
end

-- o.import_hf (directory), o.write_spec (path), o.sets. Writes the spec; returns its path.
function M.run(o)
  if not o.write_spec then util.fail(2, "gen: --import-hf %s needs --write-spec FILE.lua (where to write the spec)", o.import_hf) end
  if not o.write_spec:match("%.lua$") then util.fail(2, "gen: --write-spec %s: expected a .lua file name", o.write_spec) end
  local dir = o.import_hf:gsub("/+$", "")
  local m, notes = M.model_fields(dir)
  -- the weights must be there too (their names and shapes are checked by the runtime's --init-from)
  local function exists(p)
    local f = io.open(p, "rb")
    if f then f:close() end
    return f ~= nil
  end
  if not exists(dir .. "/model.safetensors") and not exists(dir .. "/model.safetensors.index.json") then
    util.fail(2, "gen: --import-hf %s: no model.safetensors or model.safetensors.index.json there", dir)
  end
  local families = {}
  for _, f in ipairs(config.SCHEMA.family.enum) do families[f] = true end
  local name = o.write_spec:match("([^/]+)%.lua$")
  local fields = {
    name = name,
    family = families.qwen2 and "qwen2" or "llama",
    model = m,
    -- stage 2 of the ParScale recipe: lr 3e-4, 2K warmup steps, then constant (min_lr = lr)
    train = { lr = 3e-4, min_lr = 3e-4, warmup_steps = 2000 },
  }
  -- --set values go into the spec; the config pass checks the result exactly as it will be read
  local spec = { path = o.write_spec, fields = fields, lines = {} }
  config.resolve(spec, o.sets)
  local out = {
    string.format("-- %s: imported from %s/config.json (Qwen2ForCausalLM) by `gen --import-hf`.\n", name, dir),
    string.format("-- Weights: runtime OUT/model.ptx --init-from %s (parameters not in the checkpoint keep their init).\n", dir),
  }
  for _, n in ipairs(notes) do out[#out + 1] = "-- " .. n .. ".\n" end
  if #(o.sets or {}) > 0 then out[#out + 1] = "-- --set " .. table.concat(o.sets, " --set ") .. "\n" end
  out[#out + 1] = "return "
  emit(spec.fields, "", out)
  out[#out + 1] = "\n"
  local text = table.concat(out)
  -- read back through the spec pass: what was written is what will be loaded
  local ok, e = mf.write_atomic(o.write_spec, text)
  if not ok then util.fail(2, "gen: --write-spec: %s", e) end
  local back = config.load(o.write_spec)
  config.resolve(back, {})
  io.stderr:write(string.format("gen: %s/config.json → %s (family %s)\n", dir, o.write_spec, fields.family))
  return o.write_spec
end

return M
