-- flowrun.lex -- a small Lua 5.4 tokenizer for the static tools.
--
-- `flowrun check` finds literal api_node{} tables in imperative scripts with
-- it, and declarative flows read the step names a code step may return. It
-- only has to skip strings and comments correctly and keep line numbers:
-- a file with a syntax error is reported by load() before anyone lexes it.

local lex = { _VERSION = "flowrun.lex 0.1.0" }

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in
  local nil not or repeat return then true until while]]):gmatch("%a+") do
  KEYWORDS[w] = true
end
lex.KEYWORDS = KEYWORDS

local OPS = { "...", "..", "==", "~=", "<=", ">=", "//", "::", "<<", ">>" }

-- The end of a long bracket opening at i ("[[", "[==["), or nil.
local function long_close(src, i)
  local eq = src:match("^%[(=*)%[", i)
  if not eq then return nil end
  local _, e = src:find("]" .. eq .. "]", i + #eq + 2, true)
  return e or #src, #eq + 2
end

-- tokens(src) -> an array of { type, text, line, s, e }: type is "name",
-- "keyword", "string", "number" or "op"; s and e are byte offsets in src.
function lex.tokens(src)
  local toks, i, line, n = {}, 1, 1, #src
  local function add(type_, s, e)
    toks[#toks + 1] = { type = type_, text = src:sub(s, e), line = line, s = s, e = e }
  end
  local function lines_in(s, e)
    local _, k = src:sub(s, e):gsub("\n", "")
    line = line + k
  end
  if src:sub(1, 1) == "#" then                   -- a shebang line
    i = src:find("\n", 1, true) or n + 1
  end
  while i <= n do
    local c = src:sub(i, i)
    if c == "\n" then
      line = line + 1
      i = i + 1
    elseif c:match("%s") then
      i = i + 1
    elseif src:sub(i, i + 1) == "--" then
      local e = long_close(src, i + 2)
      if not e then e = (src:find("\n", i, true) or n + 1) - 1 end
      lines_in(i, e)
      i = e + 1
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= n do
        local d = src:sub(j, j)
        if d == "\\" then
          if src:sub(j + 1, j + 1) == "z" then
            j = (src:find("[^%s]", j + 2) or n + 1)
          else
            j = j + 2
          end
        elseif d == c or d == "\n" then
          break
        else
          j = j + 1
        end
      end
      add("string", i, j)
      lines_in(i, j - 1)
      i = j + 1
    elseif c == "[" and long_close(src, i) then
      local e = long_close(src, i)
      add("string", i, e)
      lines_in(i, e)
      i = e + 1
    elseif c:match("[%a_]") then
      local e = select(2, src:find("^[%w_]*", i + 1))
      local word = src:sub(i, e)
      add(KEYWORDS[word] and "keyword" or "name", i, e)
      i = e + 1
    elseif c:match("%d") or (c == "." and src:sub(i + 1, i + 1):match("%d")) then
      local hex = src:match("^0[xX]", i)
      local e = select(2, src:find(hex and "^0[xX]%x*%.?%x*" or "^%d*%.?%d*", i))
      e = select(2, src:find(hex and "^[pP][+-]?%d+" or "^[eE][+-]?%d+", e + 1)) or e
      add("number", i, e)
      i = e + 1
    else
      local op = c
      for _, o in ipairs(OPS) do
        if src:sub(i, i + #o - 1) == o then op = o break end
      end
      add("op", i, i + #op - 1)
      i = i + #op
    end
  end
  return toks
end

-- The value of a string token, or nil when it is not a valid literal.
function lex.string_value(tok)
  local f = load("return " .. tok.text, "=string", "t", {})
  if not f then return nil end
  local ok, v = pcall(f)
  if ok and type(v) == "string" then return v end
  return nil
end

return lex
