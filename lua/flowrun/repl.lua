-- flowrun.repl -- what `flowrun repl` does with a line: Lua's own REPL
-- rules (an expression prints its values, a statement runs, an incomplete
-- chunk waits for more, `=expr`), the meta commands (.help, .run, ...),
-- completion, and how results print (flowrun.pretty).
--
-- runtime/cli/repl/repl.c owns the terminal, Ctrl-C and the loop, and calls
--   repl = require("flowrun.repl").new(host, options, env)
--   repl:start()  repl:prompt()  repl:feed(line)  repl:cancel()
--   repl:complete(line, start, stop)  repl:finish()
-- where host holds what only C can do: write, read_line, start,
-- foreground, stop, sessions, sleep, last, trace, width.

local nodespec = require "flowrun.nodespec"
local pretty = require "flowrun.pretty"
local runtime = require "flowrun.runtime"

local M = { _VERSION = "flowrun.repl 0.1.0" }

local Repl = {}
Repl.__index = Repl

local ASK_PROMPT = "? "

-- ---- output ----

function Repl:paint(kind, s)
  local codes = { dim = "2", error = "31", bold = "1" }
  if self.color then return "\27[" .. codes[kind] .. "m" .. s .. "\27[0m" end
  return s
end

function Repl:say(s) self.host.write(s .. "\n") end
function Repl:note(s) if self.interactive then self.host.write(self:paint("dim", s) .. "\n") end end
-- s with control characters (but line break and tab) and C1 controls as
-- \xNN, as flowrun run prints errors: an error may carry a server's text.
local function visible(s)
  s = s:gsub("[%z\1-\8\11-\31\127]", function(c) return ("\\x%02x"):format(c:byte()) end)
  return (s:gsub("\194([\128-\159])", function(c) return ("\\xc2\\x%02x"):format(c:byte()) end))
end

function Repl:fail(s)
  self.errors = self.errors + 1
  self.host.write(self:paint("error", visible(s)) .. "\n", "err")
end

function Repl:popts(extra)
  local o = { color = self.color, width = math.max(self.host.width() - 2, 40), redact = self.host.redact }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- ---- the REPL's own globals ----

local function install_globals(self)
  local env, host = self.env, self.host
  env.args = self.args
  env.session = {}
  -- integration(name, table): defines or replaces one, for this REPL only
  env.integration = function(name, spec)
    if type(name) ~= "string" then error("integration: expected a name (string) as argument 1", 2) end
    if type(spec) ~= "table" then error("integration: expected a table as argument 2", 2) end
    runtime.define_integration(name, spec)
  end
  env.env = runtime.env
  env.print = function(...)
    local t = table.pack(...)
    for i = 1, t.n do t[i] = tostring(t[i]) end
    host.write(table.concat(t, "\t", 1, t.n) .. "\n")
  end
  -- ask: the person at the REPL answers
  env.ask = function(prompt)
    if prompt ~= nil then host.write(tostring(prompt) .. "\n") end
    local line = host.read_line(ASK_PROMPT)
    if line == false then return nil end  -- Ctrl-C: the hook raises next
    return line
  end
  env.sleep = function(ms)
    if type(ms) ~= "number" then error("sleep: expected milliseconds (a number)", 2) end
    host.sleep(ms)
  end
end

function M.new(host, options, env)
  local self = setmetatable({
    host = host, env = env, options = options,
    interactive = options.interactive, color = options.color,
    flow = options.flow, args = options.args or {},
    errors = 0, hinted = false, lines = nil,
  }, Repl)
  install_globals(self)
  return self
end

function Repl:start()
  if not self.interactive then return end
  local names = {}
  for name in pairs(runtime.integrations()) do names[#names + 1] = name end
  table.sort(names)
  local from = runtime.integrations_file()
  local igs = #names > 0 and table.concat(names, ", ") .. (from and " (" .. from .. ")" or "")
    or "none (-I FILE, or integration(name, table) here)"
  self:say(self:paint("bold", "flowrun " .. self.options.version .. " REPL") .. " · " .. _VERSION
    .. " · integrations: " .. igs)
  if self.flow then self:note("flow " .. self.flow .. ": .run plays it, reading the file again each time") end
  self:note("Lua expressions print their value; .help for commands, Tab completes, Ctrl-C cancels, Ctrl-D leaves")
end

function Repl:finish()
  if self.lines then                    -- the input ended inside a chunk
    local _, err = load(self.lines, "=stdin", "t", self.env)
    self.lines = nil
    self:fail(err or "unfinished chunk at the end of the input")
  end
  if not self.interactive and self.errors > 0 then return 1 end
  return 0
end

function Repl:prompt()
  if not self.interactive then return "" end
  return self.lines and ">> " or "> "
end

function Repl:cancel()
  self.lines = nil
end

-- ---- evaluating Lua ----

-- Compiles src as lua.c does: first as an expression whose values print,
-- else as statements. Returns the function, or nil and "incomplete", or
-- nil and the syntax error.
local function compile(src, env)
  local f, err1 = load("return " .. src, "=stdin", "t", env)
  if f then return f end
  local g, err2 = load(src, "=stdin", "t", env)
  if g then return g end
  -- incomplete either way: "1 +" as an expression, "if x then" as statements
  if err1:sub(-5) == "<eof>" or err2:sub(-5) == "<eof>" then return nil, "incomplete" end
  return nil, err2
end

local function on_error(e)
  return { e = e, tb = debug.traceback("", 2) }
end

-- The traceback of an error in the person's code, without the REPL's own
-- frames (nor the C function a frame of the REPL called).
local function user_traceback(tb)
  local lines, keep = {}, {}
  for line in tb:gmatch("[^\n]+") do lines[#lines + 1] = line end
  for i, line in ipairs(lines) do
    if line:find("in function 'xpcall'", 1, true) then break end
    local ours = line:find("flowrun/repl.lua", 1, true)
      or (line:find("%[C%]") and lines[i + 1] and lines[i + 1]:find("flowrun/repl.lua", 1, true))
    if line ~= "stack traceback:" and not ours and not line:find("(...tail calls...)", 1, true) then
      keep[#keep + 1] = line
    end
  end
  if #keep == 0 then return nil end
  return "stack traceback:\n" .. table.concat(keep, "\n")
end

function Repl:report(err)
  local e = err.e
  local msg
  if type(e) == "string" or math.type(e) then msg = tostring(e)
  else
    local mt = getmetatable(e)
    if type(mt) == "table" and rawget(mt, "__tostring") then msg = tostring(e)
    else msg = "error object: " .. pretty.value(e, self:popts()) end
  end
  msg = msg:gsub("^[^\n]-flowrun/repl%.lua:%d+: ", "")  -- raised for the person's call
  self:fail(msg)
  local tb = err.tb and user_traceback(err.tb)
  if tb then self.host.write(self:paint("dim", visible(tb)) .. "\n", "err") end
end

-- Prints the values of one result; `_` keeps the last of them.
function Repl:show(r)
  if r.n == 0 then return end
  self.env._ = r[r.n]
  local last = self.host.last()
  local rest = { n = 0 }
  for i = 1, r.n do
    local v = r[i]
    if pretty.is_response(v) then
      if rest.n > 0 and rest[rest.n] == v.label then rest.n = rest.n - 1 end
      if rest.n > 0 then self:say(pretty.values(rest, self:popts())) end
      rest = { n = 0 }
      local method = last and last.url == v.url and last.method or nil
      self:say(pretty.response(v, self:popts({ method = method })))
      if not self.hinted and i == r.n then
        self.hinted = true
        self:note("_ is this response: _.status, _.json, _.headers, _.body (.last shows it as curl)")
      end
    else
      rest.n = rest.n + 1
      rest[rest.n] = v
    end
  end
  if rest.n > 0 then self:say(pretty.values(rest, self:popts())) end
end

function Repl:run(f, ...)
  local r = table.pack(xpcall(f, on_error, ...))
  if not r[1] then return self:report(r[2]) end
  table.remove(r, 1)
  r.n = r.n - 1
  self:show(r)
end

-- ---- meta commands ----

-- The words of a command's arguments; "a b" and 'a b' are one word.
local function words(s)
  local out = {}
  s = s:gsub("^%s+", "")
  while #s > 0 do
    local q, w, rest = s:sub(1, 1), nil, nil
    if q == '"' or q == "'" then
      w, rest = s:match("^" .. q .. "(.-)" .. q .. "%s*(.*)$")
      if not w then w, rest = s:sub(2), "" end
    else
      w, rest = s:match("^(%S+)%s*(.*)$")
    end
    out[#out + 1], s = w, rest
  end
  return out
end

local COMMANDS = {}
local ORDER = {}

local function command(name, args, help, fn)
  COMMANDS[name] = { args = args, help = help, fn = fn }
  ORDER[#ORDER + 1] = name
end

command("help", "", "this list", function(self)
  local lines = {}
  for _, name in ipairs(ORDER) do
    local c = COMMANDS[name]
    lines[#lines + 1] = ("  %-22s %s"):format("." .. name .. (c.args ~= "" and " " .. c.args or ""), c.help)
  end
  self:say("Type Lua: an expression prints its value (=expr too), a statement runs, an\n"
    .. "unfinished one continues on the next line. _ is the last value.\n"
    .. "  api_node{integration=\"NAME\", path=\"/...\", results={\"200\"}}  calls an API\n"
    .. "  for label, res, page in api_pages{..., pages={link=true}} do ... end  page by page\n"
    .. "  integration(\"NAME\", { base_url = \"http://...\" })        defines one here\n"
    .. "  env(\"VAR\")   a secret from the environment (shown as ***)\n"
    .. "Commands:\n" .. table.concat(lines, "\n") .. "\n"
    .. "Tab completes names, fields, integrations and endpoints. Ctrl-C cancels the\n"
    .. "line or the call in flight; Ctrl-D (or .quit) leaves. History: ~/.flowrun_history")
end)

command("integrations", "", "the integrations: base URL, pool, endpoints (never secrets)", function(self)
  local igs = runtime.integrations()
  local names = {}
  for name in pairs(igs) do names[#names + 1] = name end
  table.sort(names)
  if #names == 0 then
    return self:say("no integrations: give -I FILE, or define one with integration(name, { base_url = ... })")
  end
  local out = {}
  for _, name in ipairs(names) do
    local ig = igs[name]
    out[#out + 1] = self:paint("bold", name) .. "  " .. ig.base_url
    out[#out + 1] = ("  pool: %d of %d in flight, queue_timeout_ms %d; timeout_ms %d, connect_timeout_ms %d")
      :format(ig.in_flight, ig.max_connections, ig.queue_timeout_ms, ig.timeout_ms, ig.connect_timeout_ms)
    local http = {}
    if ig.http_version then http[#http + 1] = "http_version " .. ig.http_version end
    if ig.cookies then http[#http + 1] = "cookies: a jar per session" end
    if #http > 0 then out[#out + 1] = "  " .. table.concat(http, ", ") end
    if ig.retry and ig.retry.attempts > 1 then
      out[#out + 1] = ("  retry: %d attempts, backoff_ms %d"):format(ig.retry.attempts, ig.retry.backoff_ms)
    end
    if ig.rate_limit then
      out[#out + 1] = ("  rate_limit: %d requests per %d ms"):format(ig.rate_limit.requests, ig.rate_limit.per_ms)
    end
    if ig.deadline_ms then out[#out + 1] = ("  deadline_ms %d"):format(ig.deadline_ms) end
    local wire = {}
    if ig.compressed then wire[#wire + 1] = "compressed" end
    if ig.proxy then
      wire[#wire + 1] = "proxy " .. ig.proxy .. (ig.no_proxy and " (no_proxy " .. ig.no_proxy .. ")" or "")
    end
    if ig.cert_file then
      wire[#wire + 1] = "client certificate " .. ig.cert_file .. (ig.key_file and " (key " .. ig.key_file
        .. (ig.key_password and ", with a password)" or ")") or (ig.key_password and " (with a password)" or ""))
    end
    if #wire > 0 then out[#out + 1] = "  wire: " .. table.concat(wire, "; ") end
    local eps = {}
    for ep in pairs(ig.endpoints) do eps[#eps + 1] = ep end
    table.sort(eps)
    for _, ep in ipairs(eps) do
      local e = ig.endpoints[ep]
      out[#out + 1] = ("  %s.%s  %s %s"):format(name, ep, e.method, e.path)
    end
    local hs = {}
    for h in pairs(ig.headers) do hs[#hs + 1] = h end
    table.sort(hs)
    if #hs > 0 then out[#out + 1] = "  headers: " .. table.concat(hs, ", ") end
    local o, k = ig.auth and ig.auth.oauth2, ig.auth and ig.auth.api_key
    if o then
      out[#out + 1] = ("  auth: oauth2 %s, client_id %s, %s%s; token: %s")
        :format(o.token_url, o.client_id, o.refresh_token and "refresh_token grant" or "client credentials",
                o.scope and ", scope " .. o.scope or "", o.token)
    elseif k then
      out[#out + 1] = ("  auth: api_key in %s %s"):format(k.header and "header" or "query", k.header or k.query)
    end
  end
  self:say(table.concat(out, "\n"))
end)

command("load", "FILE", "run a Lua file here (its globals stay)", function(self, rest)
  local file = words(rest)[1]
  if not file then return self:fail(".load: which file? .load FILE.lua") end
  local f, err = loadfile(file, "t", self.env)
  if not f then return self:fail(err) end
  self:run(f)
end)

command("run", "[FLOW [ARGS]] [&]", "play a flow as its end-user (& in the background)", function(self, rest)
  local w = words(rest)
  local background = false
  if w[#w] == "&" then background, w[#w] = true, nil
  elseif w[#w] and w[#w]:sub(-1) == "&" then background, w[#w] = true, w[#w]:sub(1, -2) end
  local flow = table.remove(w, 1)
  local args = w
  if not flow then
    flow, args = self.flow, self.args
    if not flow then flow, args = self.last_flow, self.last_args end
    if not flow then return self:fail(".run: which flow? .run FLOW.lua [ARGS...]") end
  end
  self.last_flow, self.last_args = flow, args
  local id, err = self.host.start(flow, args)
  if not id then return self:fail(err) end
  if background then
    return self:note(("[%s] %s runs in the background: .fg %s to answer it, .stop %s"):format(id, flow, id, id))
  end
  self:foreground(id)
end)

function Repl:foreground(id)
  local how, err = self.host.foreground(id, ASK_PROMPT)
  if not how then return self:fail(err) end
  if how == "interrupted" then self:note("(the flow was stopped)")
  elseif how == "done" then self:note("(the flow ended)") end
  if how == "error" then self.errors = self.errors + 1 end
end

command("sessions", "", "the flows running in the background", function(self)
  local list = self.host.sessions()
  if #list == 0 then return self:say("no sessions") end
  for _, s in ipairs(list) do
    self:say(("[%s] %s"):format(s.id, s.asking and "waits for an answer" or "running"))
  end
end)

command("fg", "ID", "bring a background flow to the foreground", function(self, rest)
  local id = words(rest)[1]
  if not id then
    local list = self.host.sessions()
    id = list[#list] and list[#list].id
    if not id then return self:fail(".fg: no session runs") end
  end
  self:foreground(id)
end)

command("stop", "ID", "stop a background flow", function(self, rest)
  local id = words(rest)[1]
  if not id then return self:fail(".stop: which session? .stop ID") end
  local ok, err = self.host.stop(id)
  if not ok then return self:fail(err) end
  self:note("[" .. id .. "] stopped")
end)

command("trace", "[on|off]", "one line per call on stderr", function(self, rest)
  local w = words(rest)[1]
  if w == "on" or w == "off" then self.host.trace(w == "on")
  elseif w then return self:fail(".trace: on or off") end
  self:say("trace is " .. (self.host.trace() and "on" or "off"))
end)

-- The last call as a curl command line: the runtime writes it, so that a
-- secret read through env("NAME") is the shell variable $NAME.
command("last", "", "the last call as a curl command line", function(self)
  local last = self.host.last()
  if not last then return self:say("no call yet") end
  local what = ("# %s: label %q%s, %d ms"):format(last.integration, last.label,
    last.status and ", status " .. last.status or "", math.floor(last.elapsed_ms + 0.5))
  self:say(self:paint("dim", what) .. "\n" .. (last.curl or "(out of memory)"))
end)

command("quit", "", "leave (Ctrl-D too)", function() return false end)

function Repl:command(name, rest)
  local c = COMMANDS[name]
  if not c then
    local names = {}
    for _, n in ipairs(ORDER) do names[#names + 1] = "." .. n end
    return self:fail(("unknown command .%s; there are %s"):format(name, table.concat(names, " ")))
  end
  return c.fn(self, rest or "")
end

-- ---- a line ----

-- Handles one line; false means leave.
function Repl:feed(line)
  self.lineno = self.host.lineno()
  if not self.lines then
    local name, rest = line:match("^%s*%.(%a[%w_]*)%s*(.*)$")
    if name then return self:command(name, rest) ~= false end
    if line:match("^%s*$") then return true end
    if line:sub(1, 1) == "=" then line = "return " .. line:sub(2) end
    self.lines = line
    self.first = self.lineno
  else
    self.lines = self.lines .. "\n" .. line
  end
  -- a script's errors name its own lines (stdin:12), a person's the chunk's
  local pad = not self.interactive and ("\n"):rep(self.first - 1) or ""
  local f, err = compile(pad .. self.lines, self.env)
  if err == "incomplete" then return true end
  self.lines = nil
  if not f then
    self:fail(err)
    return true
  end
  self:run(f)
  return true
end

-- ---- completion ----

local function sorted_unique(t)
  table.sort(t)
  local out = {}
  for _, v in ipairs(t) do if out[#out] ~= v then out[#out + 1] = v end end
  return out
end

-- The keys of v (a table, or a string's methods), following __index tables.
local function fields(v)
  local keys, seen = {}, {}
  local t = v
  if type(v) == "string" then t = string end
  while type(t) == "table" and not seen[t] do
    seen[t] = true
    local ok = pcall(function()
      for k in pairs(t) do if type(k) == "string" then keys[k] = true end end
    end)
    if not ok then for k in next, t do if type(k) == "string" then keys[k] = true end end end
    local mt = getmetatable(t)
    t = type(mt) == "table" and rawget(mt, "__index") or nil
  end
  if pretty.is_response(v) then keys.headers, keys.json = true, true end
  return keys
end

-- What the text s (a line up to the cursor) is in at its end: the position
-- of the quote that opens the string it is in (nil if none), and the
-- positions of the table constructors it is in, innermost last. Short
-- strings with escapes; a comment ends the scan.
local function context(s)
  local i, q, at, braces = 1, nil, nil, {}
  while i <= #s do
    local c = s:sub(i, i)
    if q then
      if c == "\\" then i = i + 1 elseif c == q then q = nil end
    elseif c == '"' or c == "'" then q, at = c, i
    elseif c == "{" then braces[#braces + 1] = i
    elseif c == "}" then braces[#braces] = nil
    elseif s:sub(i, i + 1) == "--" then break
    end
    i = i + 1
  end
  return q and at or nil, braces
end

-- The access chain that ends s: a global name, then .name, :name, [number]
-- or ["string"] steps, the last a partial name. Returns the position where
-- it starts, the keys before the partial name, the separator before it ("."
-- or ":", nil for a global) and the partial name; nil if s does not end so.
local function access_chain(s)
  local partial = s:match("[%w_]*$")
  local pos = #s - #partial
  local sep = s:sub(pos, pos)
  if sep ~= "." and sep ~= ":" then
    if partial:match("^%d") or s:sub(pos, pos):match("[%w_%]%)\"']") then return nil end
    return pos + 1, {}, nil, partial
  end
  local keys = {}
  pos = pos - 1
  while true do
    local head, at, key, name = s:sub(1, pos)
    at, key = head:match("()%[%s*(%-?%d+)%s*%]$")
    if at then key = math.tointeger(tonumber(key))
    else
      at, key = head:match('()%[%s*"([^"\\]*)"%s*%]$')
      if not at then at, key = head:match("()%[%s*'([^'\\]*)'%s*%]$") end
      if not at then at, key = head:match("()([%a_][%w_]*)$"); name = at ~= nil end
    end
    if not at or key == nil then return nil end
    table.insert(keys, 1, key)
    pos = at - 1
    local c = s:sub(pos, pos)
    if name then
      if c == "." then pos = pos - 1
      elseif c:match("[%w_%.:%]%)\"']") then return nil
      else return at, keys, sep, partial end
    elseif not c:match("[%w_%]]") then return nil end
  end
end

-- The fields a constructor takes, by what opens it: api_node{, api_pages{ and the
-- steps of flowrun.flow (flow.ask{ ...), as validate knows them.
local CONSTRUCTOR_FIELDS = { api_node = nodespec.FIELDS, api_pages = { "pages" } }
for _, k in ipairs(nodespec.FIELDS) do table.insert(CONSTRUCTOR_FIELDS.api_pages, k) end
for kind, set in pairs(require("flowrun.validate").FIELDS) do
  local list = {}
  for k in pairs(set) do list[#list + 1] = k end
  CONSTRUCTOR_FIELDS["flow." .. kind] = list
end

-- Names in a directory for `.run` and `.load`: dir/ entries whose name
-- starts with base (hidden ones only when base starts with a dot).
local function files(host, dir, base)
  local out = {}
  for _, e in ipairs(host.dir(dir == "" and "." or dir) or {}) do
    if e.name:sub(1, #base) == base and (e.name:sub(1, 1) ~= "." or base:sub(1, 1) == ".") then
      out[#out + 1] = dir .. e.name .. (e.dir and "/" or "")
    end
  end
  return out
end

-- libedit replaces the word from start (0-based) to the cursor; candidates
-- are made for the text from `from` (1-based) on: each is cut to the word.
local function relative(cands, from, start)
  local out = {}
  for _, c in ipairs(cands) do out[#out + 1] = c:sub(start - (from - 1) + 1) end
  return out
end

function Repl:complete(line, start, stop)
  local word = line:sub(start + 1, stop)
  local before = line:sub(1, start)
  local upto = line:sub(1, stop)
  local out = {}
  local function offer(candidate, prefix)
    if candidate:sub(1, #prefix) == prefix then out[#out + 1] = candidate end
  end
  -- meta commands and their arguments
  local cmd, arg_at = line:match("^%s*%.(%a+)%s+()")
  if cmd then
    if cmd == "load" or cmd == "run" then
      local arg = upto:sub(arg_at)
      if arg:find("%s") then return {} end      -- a flow's args: nothing to complete
      local dir, base = arg:match("^(.-)([^/]*)$")
      out = sorted_unique(files(self.host, dir, base))
      local append = (#out == 1 and out[1]:sub(-1) == "/") and "" or " "
      return relative(out, arg_at, start), append
    end
    if cmd == "fg" or cmd == "stop" then
      for _, s in ipairs(self.host.sessions()) do offer(s.id, word) end
    elseif cmd == "trace" then
      offer("on", word); offer("off", word)
    end
    return sorted_unique(out), " "
  end
  if before:match("^%s*$") and word:sub(1, 1) == "." then
    for name in pairs(COMMANDS) do offer("." .. name, word) end
    return sorted_unique(out), " "
  end
  local quote, braces = context(upto)
  -- inside a string: integration and endpoint names, endpoint paths
  if quote then
    local q, text, ctx = line:sub(quote, quote), upto:sub(quote + 1), line:sub(1, quote - 1)
    local igs = runtime.integrations()
    if ctx:match("integration%s*=%s*$") or ctx:match("integration%s*%(%s*$") then
      for name in pairs(igs) do offer(name, text) end
    elseif ctx:match("endpoint%s*=%s*$") then
      for name, ig in pairs(igs) do
        for ep in pairs(ig.endpoints) do offer(name .. "." .. ep, text) end
      end
    elseif ctx:match("path%s*=%s*$") then
      local name = line:match("integration%s*=%s*[\"']([^\"']*)[\"']")
      for iname, ig in pairs(igs) do
        if not name or iname == name then
          for _, e in pairs(ig.endpoints) do offer(e.path, text) end
        end
      end
    end
    return relative(sorted_unique(out), quote + 1, start), q
  end
  -- a field name in api_node{ ... } or a flow step's { ... }
  local open = braces[#braces]
  local between = open and upto:sub(open + 1, start)
  if open and (between:match("^%s*$") or between:match("[,;]%s*$")) and word:match("^[%a_]?[%w_]*$") then
    local head = line:sub(1, open - 1)
    local step = head:match("%.(%a+)%s*$")      -- flow.ask{, or any X.ask{
    local fields_of = CONSTRUCTOR_FIELDS[step and "flow." .. step or head:match("(api_[nodepags]+)%s*$")]
    if fields_of then
      for _, k in ipairs(fields_of) do offer(k, word) end
      return sorted_unique(out), "="
    end
  end
  -- Lua names: globals, then fields after . and methods after :, through
  -- subscripts (t.data[1].na)
  local from, keys, sep, partial = access_chain(upto)
  if not from then return {} end
  local prefix = upto:sub(from, #upto - #partial)
  if not sep then
    for k in pairs(fields(self.env)) do
      if k:match("^[%a_][%w_]*$") then offer(k, partial) end
    end
    for k in pairs(pretty.keywords) do offer(k, partial) end
    return relative(sorted_unique(out), from, start), ""
  end
  local v = self.env
  for _, k in ipairs(keys) do
    local ok, x = pcall(function() return v[k] end)
    if not ok or x == nil then return {} end
    v = x
  end
  for k in pairs(fields(v)) do
    if k:match("^[%a_][%w_]*$") and (sep == "." or type((type(v) == "string" and string or v)[k]) == "function") then
      offer(prefix .. k, prefix .. partial)
    end
  end
  return relative(sorted_unique(out), from, start), ""
end

return M
