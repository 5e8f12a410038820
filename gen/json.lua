-- gen/json.lua — a small JSON reader (RFC 8259) for the files gen imports (Hugging Face config.json).
--
-- json.decode(text, name) returns the value: objects and arrays as Lua tables (arrays 1-based),
-- numbers as Lua numbers (integers when the text has no fraction or exponent and fits), strings with
-- their escapes resolved (\uXXXX and surrogate pairs to UTF-8), and JSON null as json.null (a unique
-- sentinel, so that a key present with null differs from an absent key). Errors are user errors
-- naming the file, line and column.
local util = require "util"
local M = {}

M.null = setmetatable({}, { __tostring = function() return "null" end })

function M.decode(text, name)
  local pos, n = 1, #text

  local function fail(fmt, ...)
    local line, col = 1, 1
    for i = 1, math.min(pos, n + 1) - 1 do
      if text:byte(i) == 10 then line, col = line + 1, 1 else col = col + 1 end
    end
    util.fail(2, "%s:%d:%d: bad JSON: %s", name, line, col, string.format(fmt, ...))
  end

  local function ws()
    pos = text:find("[^ \t\r\n]", pos) or n + 1
  end

  local value

  local function str()
    -- pos is at the opening quote
    local out = {}
    local i = pos + 1
    while true do
      local j = text:find('["\\%c]', i)
      if not j then pos = n + 1; fail("unterminated string") end
      out[#out + 1] = text:sub(i, j - 1)
      local c = text:sub(j, j)
      if c == '"' then pos = j + 1; break end
      if c ~= "\\" then pos = j; fail("control character in a string") end
      local e = text:sub(j + 1, j + 1)
      local simple = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
      if simple[e] then
        out[#out + 1] = simple[e]
        i = j + 2
      elseif e == "u" then
        local h = text:match("^%x%x%x%x", j + 2)
        if not h then pos = j; fail("bad \\u escape") end
        local cp = tonumber(h, 16)
        i = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          local lo = text:match("^\\u(%x%x%x%x)", i)
          local l = lo and tonumber(lo, 16)
          if not l or l < 0xDC00 or l > 0xDFFF then pos = j; fail("unpaired surrogate in a \\u escape") end
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (l - 0xDC00)
          i = i + 6
        elseif cp >= 0xDC00 and cp <= 0xDFFF then
          pos = j; fail("unpaired surrogate in a \\u escape")
        end
        out[#out + 1] = utf8.char(cp)
      else
        pos = j; fail("bad escape \\%s", e)
      end
    end
    return table.concat(out)
  end

  local function num()
    -- the strict grammar: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [-+]? [0-9]+)?
    local int, frac, exp = text:match("^(-?%d+)(%.?%d*)([eE]?[-+]?%d*)", pos)
    if not int or int:match("^-?0%d") or frac == "." or (exp ~= "" and not exp:match("^[eE][-+]?%d+$")) then
      fail("bad number")
    end
    local s = int .. frac .. exp
    pos = pos + #s
    if frac == "" and exp == "" then
      local v = math.tointeger(tonumber(s))
      if v then return v end
    end
    return tonumber(s) + 0.0
  end

  value = function(depth)
    if depth > 200 then fail("nested too deeply") end
    ws()
    local c = text:sub(pos, pos)
    if c == "{" then
      pos = pos + 1
      local t = {}
      ws()
      if text:sub(pos, pos) == "}" then pos = pos + 1; return t end
      while true do
        ws()
        if text:sub(pos, pos) ~= '"' then fail("expected a string key") end
        local k = str()
        ws()
        if text:sub(pos, pos) ~= ":" then fail("expected ':' after key \"%s\"", k) end
        pos = pos + 1
        if t[k] ~= nil then fail("duplicate key \"%s\"", k) end
        t[k] = value(depth + 1)
        ws()
        c = text:sub(pos, pos)
        pos = pos + 1
        if c == "}" then return t end
        if c ~= "," then pos = pos - 1; fail("expected ',' or '}' in an object") end
      end
    elseif c == "[" then
      pos = pos + 1
      local t = {}
      ws()
      if text:sub(pos, pos) == "]" then pos = pos + 1; return t end
      while true do
        t[#t + 1] = value(depth + 1)
        ws()
        c = text:sub(pos, pos)
        pos = pos + 1
        if c == "]" then return t end
        if c ~= "," then pos = pos - 1; fail("expected ',' or ']' in an array") end
      end
    elseif c == '"' then
      return str()
    elseif c == "-" or c:match("%d") then
      return num()
    elseif text:sub(pos, pos + 3) == "true" then pos = pos + 4; return true
    elseif text:sub(pos, pos + 4) == "false" then pos = pos + 5; return false
    elseif text:sub(pos, pos + 3) == "null" then pos = pos + 4; return M.null
    elseif pos > n then fail("unexpected end of input")
    else fail("unexpected character '%s'", c) end
  end

  local v = value(0)
  ws()
  if pos <= n then fail("trailing characters after the value") end
  return v
end

return M
