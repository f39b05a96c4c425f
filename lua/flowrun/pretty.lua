-- flowrun.pretty -- values as a person reads them at the REPL.
--
--   pretty.value(v, opts)       any Lua value: tables nested with their keys
--                               sorted, cycles marked, long strings cut
--   pretty.values(t, opts)      the values t[1..t.n] of one result
--   pretty.response(res, opts)  an api_node response as a summary: label,
--                               status, time, URL, the headers that matter and
--                               the body (JSON indented), cut to fit a screen
--   pretty.json(text, opts)     JSON text indented, its key order kept
--   pretty.is_response(v)
--
-- opts (all optional): color (ANSI colours), width (columns, 80), depth
-- (levels of nesting shown, 6), items (entries per table, 50), string
-- (bytes of a string, 200), lines (lines of a body, 30), method (shown
-- before the URL).

local pretty = { _VERSION = "flowrun.pretty 0.1.0" }

local json_null
do
  local ok, json = pcall(require, "json")
  if ok and type(json) == "table" then json_null = json.null end
end

local KEYWORDS = require("flowrun.lex").KEYWORDS   -- Lua's reserved words
pretty.keywords = KEYWORDS

local COLOR = {
  string = "32", number = "36", literal = "35", dim = "2", key = "1",
  good = "1;32", warn = "1;33", bad = "1;31", error = "31",
}

local function options(o)
  o = o or {}
  return {
    color = o.color, width = o.width or 80, depth = o.depth or 6,
    items = o.items or 50, string = o.string or 200, lines = o.lines or 30,
    method = o.method, redact = o.redact,
  }
end

local function paint(o, kind, s)
  if o.color and COLOR[kind] then return "\27[" .. COLOR[kind] .. "m" .. s .. "\27[0m" end
  return s
end

-- Columns s takes on the screen (colours do not count).
local function width(s)
  s = s:gsub("\27%[[%d;]*m", "")
  return utf8.len(s) or #s
end

-- At most n bytes of s, not cutting a UTF-8 character in two.
local function cut(s, n)
  if #s <= n then return s end
  while n > 0 and (s:byte(n + 1) or 0) >= 0x80 and (s:byte(n + 1) or 0) < 0xC0 do n = n - 1 end
  return s:sub(1, n)
end

local ESC = { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

-- Control characters are escaped, C1 ones (U+0080-U+009F, which some
-- terminals obey as ESC sequences) too: a server's text cannot steer the terminal.
local function quote(s)
  s = s:gsub('[%c"\\]', function(c)
    return ESC[c] or ("\\%03d"):format(c:byte())
  end):gsub("\194([\128-\159])", function(c) return ("\\194\\%03d"):format(c:byte()) end)
  return '"' .. s .. '"'
end

-- Secrets are hidden before a string is escaped or cut: either would
-- leave a spelling, or a piece, that the output's own redaction misses.
local function str(s, o)
  if o.redact then s = o.redact(s) end
  if #s > o.string then
    return paint(o, "string", quote(cut(s, o.string))) .. paint(o, "dim", ("… (%d bytes)"):format(#s))
  end
  return paint(o, "string", quote(s))
end

local function num(n)
  if math.type(n) == "integer" then return tostring(n) end
  if n ~= n then return "0/0" end
  if n == math.huge then return "math.huge" elseif n == -math.huge then return "-math.huge" end
  local s = ("%.14g"):format(n)
  if not s:find("[%.eEn]") then s = s .. ".0" end
  return s
end

local RANK = { number = 1, string = 2, boolean = 3 }

local function before(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (RANK[ta] or 4) < (RANK[tb] or 4) end
  if ta == "number" or ta == "string" then return a < b end
  if ta == "boolean" then return not a and b end
  return tostring(a) < tostring(b)
end

local function describe_function(f)
  local info = debug.getinfo(f, "S")
  if not info or info.what == "C" then return "function: builtin" end
  return ("function: %s:%d"):format(info.short_src, info.linedefined)
end

local render

local function key_text(k, o, seen, level)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not KEYWORDS[k] then return k end
  return "[" .. render(k, o, seen, level) .. "]"
end

-- The entries of t: its array part 1..n, then the other keys, sorted.
local function entries(t)
  local n = 0
  while rawget(t, n + 1) ~= nil do n = n + 1 end
  local keys = {}
  local mt = getmetatable(t)
  local iter = next
  if type(mt) == "table" and rawget(mt, "__pairs") then
    local ok, f, s, c = pcall(pairs, t)
    if ok then
      local okk = pcall(function()
        for k in f, s, c do
          if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
        end
      end)
      if okk then table.sort(keys, before) return n, keys end
      keys = {}
    end
  end
  for k in iter, t do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, before)
  return n, keys
end

local function render_table(t, o, seen, level)
  if seen[t] then return paint(o, "dim", "<cycle>") end
  local mt = getmetatable(t)
  if type(mt) == "table" and rawget(mt, "__tostring") then
    local ok, s = pcall(tostring, t)
    if ok and type(s) == "string" then return s end
  end
  if level >= o.depth then return next(t) == nil and "{}" or paint(o, "dim", "{…}") end
  seen[t] = true
  local n, keys = entries(t)
  local items, shown = {}, 0
  local total = n + #keys
  for i = 1, n do
    if shown >= o.items then break end
    items[#items + 1] = render(rawget(t, i), o, seen, level + 1)
    shown = shown + 1
  end
  for _, k in ipairs(keys) do
    if shown >= o.items then break end
    local ok, v = pcall(function() return t[k] end)
    if not ok then v = rawget(t, k) end
    items[#items + 1] = key_text(k, o, seen, level + 1) .. " = " .. render(v, o, seen, level + 1)
    shown = shown + 1
  end
  seen[t] = nil
  if total > shown then items[#items + 1] = paint(o, "dim", ("… %d more"):format(total - shown)) end
  if #items == 0 then return "{}" end
  local line = "{ " .. table.concat(items, ", ") .. " }"
  if not line:find("\n", 1, true) and width(line) + level * 2 <= o.width then return line end
  local pad = ("  "):rep(level + 1)
  return "{\n" .. pad .. table.concat(items, ",\n" .. pad) .. "\n" .. ("  "):rep(level) .. "}"
end

function render(v, o, seen, level)
  local t = type(v)
  if t == "string" then return str(v, o)
  elseif t == "number" then return paint(o, "number", num(v))
  elseif t == "boolean" or t == "nil" then return paint(o, "literal", tostring(v))
  elseif t == "table" then return render_table(v, o, seen, level)
  elseif json_null ~= nil and v == json_null then return paint(o, "literal", "json.null")
  elseif t == "function" then return paint(o, "dim", describe_function(v))
  end
  return paint(o, "dim", tostring(v))
end

function pretty.value(v, opts)
  return render(v, options(opts), {}, 0)
end

-- The values of one result, packed (t.n): side by side when they are short.
function pretty.values(t, opts)
  local o = options(opts)
  local parts, multi = {}, false
  for i = 1, t.n or #t do
    parts[i] = render(t[i], o, {}, 0)
    if parts[i]:find("\n", 1, true) then multi = true end
  end
  local line = table.concat(parts, "\t")
  if multi or width(line) > o.width then return table.concat(parts, "\n") end
  return line
end

-- ---- JSON ----

-- The tokens of JSON text: strings (quotes and escapes kept), atoms
-- (numbers, true, false, null) and the punctuation { } [ ] , :
local function json_tokens(s)
  local i, n = 1, #s
  return function()
    i = s:find("[^ \t\r\n]", i) or n + 1
    if i > n then return nil end
    local c = s:sub(i, i)
    if c == '"' then
      local j = i + 1
      while true do
        local k = s:find('["\\]', j)
        if not k then
          local tok = s:sub(i)
          i = n + 1
          return "string", tok
        end
        if s:sub(k, k) == "\\" then j = k + 2
        else
          local tok = s:sub(i, k)
          i = k + 1
          return "string", tok
        end
      end
    elseif c:find("[{}%[%],:]") then
      i = i + 1
      return "punct", c
    end
    local j = s:find('[ \t\r\n{}%[%],:"]', i) or n + 1
    local tok = s:sub(i, j - 1)
    i = j
    return "atom", tok
  end
end

-- JSON text indented, two spaces a level, as an array of lines and how
-- many lines were left out (0, or nil when the rest was not counted).
function pretty.json_lines(text, opts)
  local o = options(opts)
  local lines, cur, level = {}, "", 0
  local pending = {}
  local next_token = json_tokens(text)
  local function take()
    if #pending > 0 then return table.remove(pending, 1) end
    local k, t = next_token()
    if k then return { k, t } end
  end
  local function peek()
    if #pending == 0 then
      local k, t = next_token()
      if not k then return nil end
      pending[1] = { k, t }
    end
    return pending[1]
  end
  local function newline()
    lines[#lines + 1] = cur
    cur = ("  "):rep(level)
  end
  while #lines < o.lines do
    local tok = take()
    if not tok then break end
    local kind, t = tok[1], tok[2]
    if t == "{" or t == "[" then
      local close = t == "{" and "}" or "]"
      local nxt = peek()
      if nxt and nxt[2] == close then
        take()
        cur = cur .. t .. close
      else
        cur = cur .. t
        level = level + 1
        newline()
      end
    elseif t == "}" or t == "]" then
      level = math.max(level - 1, 0)
      if cur:find("%S") then newline() else cur = ("  "):rep(level) end
      cur = cur .. t
    elseif t == "," then
      cur = cur .. ","
      newline()
    elseif t == ":" then
      cur = cur .. ": "
    elseif kind == "string" then
      local nxt = peek()
      if o.redact then t = o.redact(t) end
      local shown = #t > o.string and cut(t, o.string) .. "…\"" or t
      if nxt and nxt[2] == ":" then cur = cur .. paint(o, "key", shown)
      else cur = cur .. paint(o, "string", shown) end
    else
      local k = (t == "true" or t == "false" or t == "null") and "literal" or "number"
      cur = cur .. paint(o, k, t)
    end
  end
  local more = peek() ~= nil
  if cur:find("%S") then lines[#lines + 1] = cur end
  if more then
    while #lines > o.lines do table.remove(lines) end
    return lines, nil
  end
  return lines, 0
end

function pretty.json(text, opts)
  local lines, more = pretty.json_lines(text, opts)
  if more == nil then lines[#lines + 1] = "…" end
  return table.concat(lines, "\n")
end

-- ---- api_node responses ----

local REASON = {
  [100] = "Continue", [101] = "Switching Protocols",
  [200] = "OK", [201] = "Created", [202] = "Accepted", [203] = "Non-Authoritative Information",
  [204] = "No Content", [205] = "Reset Content", [206] = "Partial Content",
  [300] = "Multiple Choices", [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [304] = "Not Modified", [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [406] = "Not Acceptable",
  [408] = "Request Timeout", [409] = "Conflict", [410] = "Gone", [411] = "Length Required",
  [412] = "Precondition Failed", [413] = "Content Too Large", [414] = "URI Too Long",
  [415] = "Unsupported Media Type", [418] = "I'm a teapot", [422] = "Unprocessable Content",
  [425] = "Too Early", [428] = "Precondition Required", [429] = "Too Many Requests",
  [431] = "Request Header Fields Too Large", [451] = "Unavailable For Legal Reasons",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
}
pretty.reason_phrase = REASON

-- The headers worth a glance; the rest stay in response.headers.
local NOTABLE = {
  "content-type", "location", "retry-after", "www-authenticate", "x-request-id",
  "request-id", "x-ratelimit-remaining", "ratelimit-remaining", "idempotency-key",
}

local registry = debug.getregistry()

function pretty.is_response(v)
  if type(v) ~= "table" then return false end
  local mt = debug.getmetatable(v)
  if mt ~= nil and mt == registry["flowrun.response"] then return true end
  return type(rawget(v, "label")) == "string" and type(rawget(v, "url")) == "string"
    and rawget(v, "elapsed_ms") ~= nil and rawget(v, "attempts") ~= nil
end

local function label_kind(res)
  local l = res.label
  if l == "error" or l == "timeout" or l == "max-connection" then return "bad" end
  local s = tonumber(res.status)
  if s and s >= 200 and s < 300 and l ~= "other" then return "good" end
  if s and s >= 500 then return "bad" end
  return "warn"
end

local function text_lines(body, o)
  if body:find("\0", 1, true) or not utf8.len(body) then
    return { paint(o, "dim", ("(%d bytes, not text)"):format(#body)) }
  end
  local lines, count = {}, 0
  for line in (body:gsub("\r\n", "\n") .. "\n"):gmatch("(.-)\n") do
    count = count + 1
    if #lines < o.lines then
      if width(line) > o.width then line = cut(line, o.width) .. paint(o, "dim", "…") end
      lines[#lines + 1] = line
    end
  end
  if count > #lines then lines[#lines + 1] = paint(o, "dim", ("… %d more lines"):format(count - #lines)) end
  return lines
end

-- The summary of an api_node response, as rows "name  value".
function pretty.response(res, opts)
  local o = options(opts)
  local rows = {}
  local pad = ("%-9s")
  local function row(name, value)
    local first = true
    for line in (value .. "\n"):gmatch("(.-)\n") do
      rows[#rows + 1] = (first and paint(o, "dim", pad:format(name)) or pad:format("")) .. line
      first = false
    end
  end
  local label = paint(o, label_kind(res), quote(tostring(res.label)))
  local status = tonumber(res.status)
  if res.label == "other" and status then
    label = label .. paint(o, "dim", ("  (%d is not among the declared results)"):format(status))
  end
  row("label", label)
  if res.reason then
    local err = res.error and res.error ~= "" and " — " .. res.error or ""
    row("reason", paint(o, "error", tostring(res.reason)) .. err)
  end
  local took = ("%d ms"):format(tonumber(res.elapsed_ms) or 0)
  local attempts = tonumber(res.attempts) or 1
  if attempts > 1 then took = took .. (", %d attempts"):format(attempts) end
  local body = type(res.body) == "string" and res.body or ""
  if status then
    if #body > 0 then took = took .. (", %d bytes"):format(#body) end
    row("status", ("%d %s  "):format(status, REASON[status] or "") .. paint(o, "dim", "(" .. took .. ")"))
  else
    row("status", "no response  " .. paint(o, "dim", "(" .. took .. ")"))
  end
  row("url", (o.method and o.method .. " " or "") .. tostring(res.url))
  local headers = type(res.headers) == "table" and res.headers or {}
  local shown, total = {}, 0
  for _ in pairs(headers) do total = total + 1 end
  for _, name in ipairs(NOTABLE) do
    if headers[name] then shown[#shown + 1] = name .. ": " .. tostring(headers[name]) end
  end
  if total > #shown then
    shown[#shown + 1] = paint(o, "dim", ("(%d%s in _.headers)"):format(total - #shown, #shown > 0 and " more" or ""))
  end
  if #shown > 0 then row("headers", table.concat(shown, "\n")) end
  if res.json ~= nil then
    local lines, more = pretty.json_lines(body, { color = o.color, string = o.string, lines = o.lines })
    if more == nil then lines[#lines + 1] = paint(o, "dim", ("… (%d bytes in all: _.json, _.body)"):format(#body)) end
    row("json", table.concat(lines, "\n"))
  elseif #body > 0 then
    row("body", table.concat(text_lines(body, o), "\n"))
    if res.json_error then row("json", paint(o, "error", "does not parse: " .. tostring(res.json_error))) end
  elseif status then
    row("body", paint(o, "dim", "(empty)"))
  end
  return table.concat(rows, "\n")
end

return pretty
