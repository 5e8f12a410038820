-- A spec axis naming spec files that do not exist.
return {
  axes = {
    spec = { "specs/gpt2_tiny.lua", "tests/specs/nope_rope.lua", "tests/specs/nope_alibi.lua" },
  },
}
