-- decode.lua — launch descriptors for decode.cuh (format: docs/ir.md, "Kernel templates").
local function I(a, k, what)
  local v = math.tointeger(a[k])
  assert(v, what .. ": attr " .. k .. " = " .. tostring(a[k]) .. " is not an integer")
  return v
end
return {
  file = "decode.cuh",
  kernels = {
    embed_pos = {
      fn = "embed_pos_fwd",
      tparams = { "N", "T", "D" },
      consts = {},
      args = { {"tokens","const int*"}, {"pos","const int*"}, {"wte","const bf16*"}, {"wpe","const bf16*"}, {"out","bf16*"} },
      launch = function(a)
        local N, D = I(a, "N", "embed_pos"), I(a, "D", "embed_pos")
        assert(D % 8 == 0, "embed_pos: D = " .. D .. " must be a multiple of 8")
        return { grid = {(N * (D // 8) + 127) // 128, 1, 1}, block = {128, 1, 1}, smem = 0 }
      end,
    },
    attention_decode = {
      fn = "attention_decode_fwd",
      tparams = { "B", "T", "H", "d" },
      consts = {},
      args = { {"qkv","const bf16*"}, {"pos","const int*"}, {"kcache","bf16*"}, {"vcache","bf16*"}, {"out","bf16*"} },
      -- one block of 4 warps per (sequence, head); the scores of one query live in shared memory
      launch = function(a)
        local B, T, H = I(a, "B", "attention_decode"), I(a, "T", "attention_decode"), I(a, "H", "attention_decode")
        return { grid = {B * H, 1, 1}, block = {128, 1, 1}, smem = 4 * T }
      end,
    },
  },
}
