-- flowrun.test -- conversation tests for flows (README: Testing flows).
--
-- A test file (`*_test.lua`) returns a table: the flow, its integrations,
-- stubs that answer its calls, and tests, each a conversation:
--
--   return {
--     flow = "order_status.lua", integrations = "integrations.lua",
--     stubs = { stub { endpoint = "shop.get_order", reply = { status = 200, json = {...} } } },
--     test "a shipped order" {
--       bot "Your order number?", user "42", label { "200", at = "lookup" },
--       bot { match = "shipped" }, done(),
--     },
--   }
--
-- stub, test, bot, user, close, label, state, wait, done, fails and
-- include are globals of the file; each notes its line, so a mistake is
-- reported at file:line. Every test of a run is a session of one runtime
-- on a virtual clock whose calls the stubs answer: no network, no real
-- waiting, the same result every time.

local flowrun = require "flowrun"

local M = { _VERSION = "flowrun.test 0.1.0" }

local DEFAULT_LABELS = { "other", "error", "timeout", "max-connection" }
local START = 1767225600000             -- the virtual clock's start: 2026-01-01T00:00:00Z

-- ---- the file's vocabulary ----

local MARK = {}                         -- entry[MARK] = { kind, line, file }

local function where(level)
  local info = debug.getinfo(level + 1, "Sl")
  return info and info.currentline or 0, info and info.source:match("^@(.*)") or "?"
end

local function entry(kind, t, level)
  local line, file = where(level + 1)
  t[MARK] = { kind = kind, line = line, file = file }
  return t
end

local function kind_of(v) return type(v) == "table" and v[MARK] and v[MARK].kind end

local load_in, resolve

local function vocabulary(state)
  local v = {}
  function v.stub(spec)
    if type(spec) ~= "table" then state.problem(2, "stub: expected a table like stub { endpoint = ..., reply = {...} }") return {} end
    local e = entry("stub", spec, 2)
    return e
  end
  function v.test(name)
    local line, file = where(2)
    if type(name) ~= "string" then state.problem(2, 'test: expected a name, as in test "a shipped order" { ... }') end
    return function(body)
      if type(body) ~= "table" then state.problem(2, "test: expected its conversation in a table") body = {} end
      body[MARK] = { kind = "test", line = line, file = file, name = tostring(name) }
      return body
    end
  end
  function v.bot(x) local e = entry("bot", { expect = x }, 2) return e end
  function v.user(text) local e = entry("user", { text = text }, 2) return e end
  function v.close() local e = entry("user", { close = true }, 2) return e end
  function v.label(x)
    local e = entry("label", type(x) == "table" and { label = x[1], at = x.at } or { label = x }, 2)
    return e
  end
  function v.state(x) local e = entry("state", { expect = x }, 2) return e end
  function v.wait(ms) local e = entry("wait", { ms = ms }, 2) return e end
  function v.done() local e = entry("done", {}, 2) return e end
  function v.fails(pattern) local e = entry("fails", { pattern = pattern }, 2) return e end
  function v.include(path) local e = entry("include", { path = path }, 2) return e end
  -- recorded "FILE.lua": the stubs `flowrun test --live --record FILE.lua` wrote
  function v.recorded(path)
    local line, file = where(2)
    local list = load_in(resolve(file, path), state)
    if type(list) ~= "table" then
      state.problem_at({ file = file, line = line }, ("recorded %s: the file must return a list of stubs"):format(path))
      return {}
    end
    return list
  end
  return v
end

-- ---- loading a test file ----

local function dirname(path) return path:match("^(.*)/[^/]*$") or "." end
function resolve(base, path)
  if path:sub(1, 1) == "/" then return path end
  return dirname(base) .. "/" .. path
end

-- Loads a Lua file in an environment with the vocabulary; returns its value.
function load_in(path, state)
  local env = setmetatable(vocabulary(state), { __index = _G })
  local chunk, err = loadfile(path, "t", env)
  if not chunk then state.fail(err) return nil end
  local ok, v = pcall(chunk)
  if not ok then state.fail(tostring(v)) return nil end
  return v
end

local STUB_KEYS = { endpoint = true, integration = true, method = true, path = true, query = true,
                    headers = true, body = true, reply = true, replies = true }
local REPLY_KEYS = { status = true, headers = true, json = true, body = true, delay_ms = true,
                     fault = true, message = true }
local TEST_KEYS = { args = true, stubs = true, rows = true, session = true, id = true }
local FILE_KEYS = { flow = true, integrations = true, stubs = true, args = true, name = true }

local function check_reply(r, at, problem)
  if type(r) ~= "table" then return problem(at, "a reply is a table like { status = 200, json = {...} }") end
  for k in pairs(r) do
    if not REPLY_KEYS[k] then problem(at, ("reply: unknown key '%s' (status, headers, json, body, delay_ms, fault, message)"):format(tostring(k))) end
  end
  if r.fault == nil and math.type(r.status) ~= "integer" then problem(at, "reply: status (an integer) or fault is required") end
end

local function check_stub(s, problem)
  local at = s[MARK]
  for k in pairs(s) do
    if k ~= MARK and not STUB_KEYS[k] then
      problem(at, ("stub: unknown key '%s' (endpoint, integration, method, path, query, headers, body, reply, replies)"):format(tostring(k)))
    end
  end
  if (s.reply == nil) == (s.replies == nil) then problem(at, "stub: give reply, or replies (a sequence)") end
  if s.reply ~= nil then check_reply(s.reply, at, problem) end
  if s.replies ~= nil then
    if type(s.replies) ~= "table" or #s.replies == 0 then problem(at, "stub: replies is a list of replies")
    else for _, r in ipairs(s.replies) do check_reply(r, at, problem) end end
  end
  if s.endpoint ~= nil and (type(s.endpoint) ~= "string" or not s.endpoint:find("^[^.]+%.[^.]+$")) then
    problem(at, 'stub: endpoint is "integration.endpoint"')
  end
end

-- Expands includes and data rows into a flat conversation.
local function flatten(list, file, state, subst, out)
  out = out or {}
  for _, e in ipairs(list) do
    local k = kind_of(e)
    if k == "include" then
      local v = load_in(resolve(file, e.path), state)
      if type(v) == "table" then flatten(v, resolve(file, e.path), state, subst, out)
      elseif v ~= nil then state.problem_at(e[MARK], ("include %s: the file must return a list of conversation lines"):format(e.path)) end
    elseif k then
      local c = {}
      for key, val in pairs(e) do c[key] = key == MARK and val or subst(val) end
      out[#out + 1] = c
    else
      state.problem_at({ line = 0, file = file }, ("a conversation line is bot, user, close, label, state, wait, done, fails or include, not %s")
        :format(type(e)))
    end
  end
  return out
end

-- M.load(path) -> suite, or nil and the problems ("file:line: ...").
function M.load(path)
  local problems = {}
  local state = {}
  function state.problem(level, msg)
    local line, file = where(level + 1)
    problems[#problems + 1] = ("%s:%d: %s"):format(file, line, msg)
  end
  function state.problem_at(at, msg)
    problems[#problems + 1] = ("%s:%d: %s"):format(at.file or path, at.line or 0, msg)
  end
  function state.fail(msg) problems[#problems + 1] = msg end
  local t = load_in(path, state)
  if t == nil then return nil, problems end
  if type(t) ~= "table" then return nil, { path .. ": a test file returns a table: { flow = ..., test \"...\" { ... } }" } end
  for k in pairs(t) do
    if type(k) == "string" and not FILE_KEYS[k] then
      problems[#problems + 1] = ("%s: unknown key '%s' (flow, integrations, stubs, args, and tests)"):format(path, k)
    end
  end
  if type(t.flow) ~= "string" then problems[#problems + 1] = path .. ": flow = \"FILE.lua\" is required" end
  local suite = { file = path, flow = type(t.flow) == "string" and resolve(path, t.flow) or nil,
                  args = t.args or {}, stubs = {}, tests = {} }
  if type(t.integrations) == "string" then suite.integrations = resolve(path, t.integrations)
  else suite.integrations = t.integrations end
  for _, s in ipairs(t.stubs or {}) do
    if kind_of(s) ~= "stub" then problems[#problems + 1] = path .. ": stubs holds stub { ... } entries"
    else check_stub(s, state.problem_at) suite.stubs[#suite.stubs + 1] = s end
  end
  for _, tt in ipairs(t) do
    if kind_of(tt) ~= "test" then
      problems[#problems + 1] = path .. ': the list part holds tests: test "name" { ... }'
    else
      local at = tt[MARK]
      for k in pairs(tt) do
        if type(k) == "string" and not TEST_KEYS[k] then
          state.problem_at(at, ("test %q: unknown key '%s' (args, stubs, rows, session, id)"):format(at.name, k))
        end
      end
      local rows = tt.rows or { false }
      for i, row in ipairs(rows) do
        -- a row's values in place of "${name}": the value itself when it is the whole string
        local function subst(s)
          if not row then return s end
          local whole = s:match("^%${([%w_]+)}$")
          if whole and row[whole] ~= nil then return row[whole] end
          return (s:gsub("%${([%w_]+)}", function(k)
            if row[k] == nil then state.problem_at(at, ("test %q: row %d has no %s"):format(at.name, i, k)) return "" end
            return tostring(row[k])
          end))
        end
        local function deep(v)
          if type(v) == "string" then return subst(v) end
          if type(v) ~= "table" then return v end
          local c = {}
          for k, x in pairs(v) do c[k] = k == MARK and x or deep(x) end
          return c
        end
        local stubs = {}
        for _, s in ipairs(tt.stubs or {}) do
          s = deep(s)
          check_stub(s, state.problem_at)
          stubs[#stubs + 1] = s
        end
        suite.tests[#suite.tests + 1] = {
          name = row and subst(at.name) or at.name, line = at.line, file = at.file,
          args = deep(tt.args or suite.args), stubs = stubs, session = deep(tt.session),
          id = tt.id ~= nil and tostring(deep(tt.id)) or nil,
          conversation = flatten(tt, path, state, deep),
        }
      end
    end
  end
  if #problems > 0 then return nil, problems end
  return suite
end

-- ---- stubs ----

local function describe_request(rq)
  return ("%s %s %s%s"):format(rq.method, rq.integration, rq.relative, rq.endpoint and (" (" .. rq.integration .. "." .. rq.endpoint .. ")") or "")
end

-- Why stub s does not match request rq, or nil when it does.
local function mismatch(s, rq)
  if s.endpoint and s.endpoint ~= (rq.endpoint and rq.integration .. "." .. rq.endpoint) then
    return ("endpoint %s, the call's is %s"):format(s.endpoint, rq.endpoint and rq.integration .. "." .. rq.endpoint or "none")
  end
  if s.integration and s.integration ~= rq.integration then return ("integration %s, not %s"):format(s.integration, rq.integration) end
  if s.method and s.method:upper() ~= rq.method then return ("method %s, not %s"):format(s.method, rq.method) end
  if s.path then
    if not rq.relative:find("^" .. s.path .. "$") then return ("path %s does not match %s"):format(s.path, rq.relative) end
  end
  if s.query then
    for k, v in pairs(s.query) do
      if rq.params[k] ~= tostring(v) then return ("query %s=%s, the call has %s"):format(k, tostring(v), tostring(rq.params[k])) end
    end
  end
  if s.headers then
    for k, v in pairs(s.headers) do
      local got = rq.headers[k:lower()]
      if got ~= tostring(v) then return ("header %s: %s, the call has %s"):format(k, tostring(v), tostring(got)) end
    end
  end
  if s.body ~= nil then
    local b = rq.body or ""
    if type(s.body) == "function" then
      if not s.body(b) then return "body refused by its function" end
    elseif b ~= s.body then return ("body %q, the call's is %q"):format(s.body, b) end
  end
end

local function decode_query(q)
  local t = {}
  for pair in (q or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    local function dec(s) return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)) end
    t[dec(k)] = dec(v)
  end
  return t
end

-- ---- coverage ----

-- The flow globals as the loader of flow files needs them (what each is,
-- not what it does): given here, so that it asks no runtime (the one it
-- would ask, the first made in this state, may be closed by now).
local FLOW_GLOBALS = setmetatable({}, { __index = _G })
for _, k in ipairs({ "api_node", "api_pages", "say", "ask", "sleep", "run_flow", "continue_as_new" }) do
  FLOW_GLOBALS[k] = function() end
end
FLOW_GLOBALS.log, FLOW_GLOBALS.json = {}, {}

local function load_flow(path) return require("flowrun.loader").load(path, { globals = FLOW_GLOBALS }) end

-- The lines of a Lua file that hold code (a set), as luac lists its
-- instructions; nil and why when luac5.4 is not there or cannot read it.
local function code_lines(path)
  local p = io.popen("luac5.4 -l -p '" .. path:gsub("'", "'\\''") .. "' 2>/dev/null")
  local set, any = {}, false
  for line in p:lines() do
    local n, op = line:match("^%s+%d+%s+%[(%d+)%]%s+(%u+)")
    if n and op ~= "VARARGPREP" then set[tonumber(n)], any = true, true end   -- no line event
  end
  p:close()
  if not any then return nil, "line coverage needs luac5.4 (the Debian package lua5.4)" end
  return set
end

-- What can be covered in flow file path: its api nodes and the labels each
-- can take (declared results and the default labels); for a declarative
-- flow also its steps and edges. Needs a runtime made in this state (the
-- flowrun.* modules it preloads).
local function coverage_model(path)
  local flow = require "flowrun.flow"
  local r = load_flow(path)
  local m = { file = path, nodes = {}, steps = nil, edges = nil }
  local function node(key, where, results, name)
    local labels, seen = {}, {}
    for _, l in ipairs(results) do if not seen[l] then labels[#labels + 1] = l seen[l] = true end end
    for _, l in ipairs(DEFAULT_LABELS) do if not seen[l] then labels[#labels + 1] = l seen[l] = true end end
    m.nodes[#m.nodes + 1] = { key = key, where = where, labels = labels, taken = {}, name = name or key }
  end
  if r.kind == "flow" then
    local validate = require "flowrun.validate"
    m.steps, m.edges = {}, {}
    for _, name in ipairs(r.def.names) do
      local st = r.def.steps[name]
      if flow.is_step(st) then
        m.steps[#m.steps + 1] = { name = name, reached = 0 }
        if st.kind == "api" then
          node(name, ("%s:%s"):format(st.file or path, st.line or "?"), flow.labels(st).results)
        end
        local seen = {}
        for _, e in ipairs(validate.edges(r.def, name, function(file)
          if file == path then return r.source end
          local f = io.open(file, "rb")
          local text = f and f:read("a")
          if f then f:close() end
          return text
        end)) do
          local to = e.target == flow.END and "(end)" or e.target
          local key = name .. " -> " .. tostring(to)
          if type(to) == "string" and not seen[key] then
            seen[key] = true
            m.edges[#m.edges + 1] = { from = name, to = to, key = key, taken = 0 }
          end
        end
      end
    end
  elseif r.kind == "script" then
    for _, call in ipairs(require("flowrun.check").literal_calls(r.source)) do
      local results = {}
      if type(call.spec.results) == "table" then
        for _, l in ipairs(call.spec.results) do if type(l) == "string" then results[#results + 1] = l end end
      end
      node(tostring(call.line), ("%s:%d"):format(path, call.line), results, "line " .. call.line)
    end
    m.code, m.no_lines = code_lines(path)
    m.run = {}
  end
  return m
end

-- Notes in m what a session did: its calls (at, step, label) and steps.
local function cover(m, calls, steps, ended)
  for _, c in ipairs(calls) do
    for _, n in ipairs(m.nodes) do
      if (c.step and n.key == c.step) or (not c.step and c.at and c.at:match(":(%d+)$") == n.key) then
        n.taken[c.label] = (n.taken[c.label] or 0) + 1
      end
    end
  end
  if not m.steps then return end
  local index = {}
  for _, s in ipairs(m.steps) do index[s.name] = s end
  for i, name in ipairs(steps) do
    if index[name] then index[name].reached = index[name].reached + 1 end
    local to, found = steps[i + 1] or (ended and "(end)"), false
    for _, e in ipairs(m.edges) do
      if to and e.from == name and e.to == to then e.taken, found = e.taken + 1, true end
    end
    if to and not found and not index[to] then   -- on into another flow file ("flow:PATH")
      for _, e in ipairs(m.edges) do
        if e.from == name and e.to:find("^flow:") then e.taken = e.taken + 1 end
      end
    end
  end
end

-- M.coverage_lines(models) -> lines of the coverage table, and totals
-- { labels = { taken, all }, steps = {...}, edges = {...} }.
function M.coverage_lines(models)
  local lines, total = {}, { labels = { 0, 0 }, steps = { 0, 0 }, edges = { 0, 0 }, lines = { 0, 0 } }
  local function pct(a, b) return b == 0 and 100 or math.floor(a * 100 / b) end
  for _, m in ipairs(models) do
    lines[#lines + 1] = "coverage of " .. m.file
    for _, n in ipairs(m.nodes) do
      local parts, k = {}, 0
      for _, l in ipairs(n.labels) do
        if n.taken[l] then k = k + 1 parts[#parts + 1] = l else parts[#parts + 1] = "[" .. l .. "]" end
      end
      lines[#lines + 1] = ("  %-22s %3d%%  %s"):format(n.name .. ":", pct(k, #n.labels), table.concat(parts, " "))
      total.labels[1], total.labels[2] = total.labels[1] + k, total.labels[2] + #n.labels
    end
    if m.code then
      local all, run, missed = 0, 0, {}
      for n in pairs(m.code) do
        all = all + 1
        if m.run[n] then run = run + 1 else missed[#missed + 1] = n end
      end
      table.sort(missed)
      lines[#lines + 1] = ("  %-22s %3d%%  %d of %d%s"):format("lines:", pct(run, all), run, all,
        #missed > 0 and ("; never run: " .. table.concat(missed, ", ")) or "")
      total.lines[1], total.lines[2] = total.lines[1] + run, total.lines[2] + all
    elseif m.no_lines then
      lines[#lines + 1] = "  lines: not measured: " .. m.no_lines
    end
    if m.steps then
      local missed = {}
      for _, s in ipairs(m.steps) do
        if s.reached > 0 then total.steps[1] = total.steps[1] + 1 else missed[#missed + 1] = s.name end
        total.steps[2] = total.steps[2] + 1
      end
      if #missed > 0 then lines[#lines + 1] = "  steps never reached: " .. table.concat(missed, ", ") end
      missed = {}
      for _, e in ipairs(m.edges) do
        if e.taken > 0 then total.edges[1] = total.edges[1] + 1 else missed[#missed + 1] = e.key end
        total.edges[2] = total.edges[2] + 1
      end
      if #missed > 0 then lines[#lines + 1] = "  edges never taken: " .. table.concat(missed, ", ") end
    end
  end
  lines[#lines + 1] = ("labels %d of %d (%d %%), steps %d of %d (%d %%), edges %d of %d (%d %%), "
                       .. "lines %d of %d (%d %%)  ([x]: never taken)")
    :format(total.labels[1], total.labels[2], pct(total.labels[1], total.labels[2]),
            total.steps[1], total.steps[2], pct(total.steps[1], total.steps[2]),
            total.edges[1], total.edges[2], pct(total.edges[1], total.edges[2]),
            total.lines[1], total.lines[2], pct(total.lines[1], total.lines[2]))
  return lines, total
end

-- ---- running ----

local function matches(expect, text)
  if type(expect) == "string" then return expect == text end
  if type(expect) == "table" and expect.match then return text:find(expect.match) ~= nil end
  if type(expect) == "function" then return expect(text) and true or false end
  return false
end

local function show(expect)
  if type(expect) == "string" then return ("%q"):format(expect) end
  if type(expect) == "table" and expect.match then return ("matching %q"):format(expect.match) end
  return "(a function)"
end

-- A value as a test line shows it.
local function repr(v, depth)
  depth = depth or 0
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) ~= "table" or depth > 3 then return tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. " = " .. repr(v[k], depth + 1) end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

-- Does want (a table of expected fields) hold in got? Returns nil or why not.
local function subset(want, got, path)
  if type(want) ~= "table" then
    if want ~= got then return ("%s is %s, expected %s"):format(path, repr(got), repr(want)) end
    return nil
  end
  if type(got) ~= "table" then return ("%s is %s, expected a table"):format(path, repr(got)) end
  for k, v in pairs(want) do
    local why = subset(v, got[k], path .. "." .. tostring(k))
    if why then return why end
  end
end

-- M.run(suites, opts) -> results: runs every test of every suite at once.
-- opts: on_result(result) as each test ends (result: suite, test, ok,
-- failures = { lines }, transcript = { lines }), coverage (a table to fill).
function M.run(suites, opts)
  opts = opts or {}
  local results, by_id = {}, {}
  for si, suite in ipairs(suites) do
    local stubs_seen = {}
    local function transport(rq)
      local t = by_id[rq.session]
      rq.params = decode_query(rq.query)
      local tried, lists = {}, t and { t.test.stubs, suite.stubs } or { suite.stubs }
      for _, list in ipairs(lists) do
        for _, s in ipairs(list) do
          local why = mismatch(s, rq)
          if not why then
            local reply = s.reply
            if s.replies then
              stubs_seen[s] = (stubs_seen[s] or 0) + 1
              reply = s.replies[math.min(stubs_seen[s], #s.replies)]
            end
            local a = {}
            for k, v in pairs(reply) do a[k] = v end
            return a
          end
          tried[#tried + 1] = ("  %s:%d: %s"):format(s[MARK].file, s[MARK].line, why)
        end
      end
      local msg = ("no stub answers %s%s"):format(describe_request(rq),
        #tried > 0 and (":\n" .. table.concat(tried, "\n", 1, math.min(#tried, 5))) or " (there are no stubs)")
      if t then t.failures[#t.failures + 1] = msg end
      return { fault = "no_stub", message = msg }
    end
    local rt
    if opts.live then                   -- the real APIs, the real clock: stubs unused
      rt = flowrun.new{ integrations = suite.integrations }
    else
      rt = flowrun.new{ integrations = suite.integrations, virtual_clock = START, transport = function(rq)
        local ok, a = pcall(transport, rq)
        if not ok then error(a, 0) end
        if a.fault == "no_stub" then error(a.message, 0) end
        return a
      end }
    end
    local r = load_flow(suite.flow)
    if r.kind == "unreadable" or r.kind == "error" then
      opts.problems = opts.problems or {}
      opts.problems[#opts.problems + 1] = ("%s: flow %s: %s"):format(suite.file, suite.flow, r.msg)
    end
    if r.kind == "flow" then                -- a step named in a test is one of the flow's
      local names, seen, queue = {}, {}, { { def = r.def, file = suite.flow } }
      while #queue > 0 do                   -- and of the flows it hands over to
        local q = table.remove(queue)
        for name, st in pairs(q.def.steps) do
          names[name] = true
          local spec = type(st) == "table" and type(st.spec) == "table" and st.spec or {}
          local targets = { spec.next, spec.closed }
          for _, t in pairs(type(spec.on) == "table" and spec.on or {}) do targets[#targets + 1] = t end
          if st.kind == "code" then
            local validate = require "flowrun.validate"
            for _, x in ipairs((validate.infer(st.fn, q.def, function(f) local h = io.open(f) local s = h and h:read("a") if h then h:close() end return s end))) do targets[#targets + 1] = x end
          end
          for _, t in pairs(targets) do
            local path = type(t) == "string" and t:match("^flow:(.+)$")
            local file = path and require("flowrun.flow").resolve(q.file, path)
            if file and not seen[file] then
              seen[file] = true
              local o = load_flow(file)
              if o.kind == "flow" then queue[#queue + 1] = { def = o.def, file = file } end
            end
          end
        end
      end
      for _, test in ipairs(suite.tests) do
        for _, e in ipairs(test.conversation) do
          local k, name = e[MARK] and e[MARK].kind, nil
          if k == "label" and type(e.at) == "string" and not e.at:find(":") then name = e.at end
          if k == "state" and type(e.expect) == "table" then name = e.expect.step end
          if name and not names[name] then
            opts.problems = opts.problems or {}
            opts.problems[#opts.problems + 1] = ("%s:%d: %s: no step %q in %s"):format(e[MARK].file, e[MARK].line, k,
              tostring(name), suite.flow)
          end
        end
      end
    end
    if opts.problems then
      rt:close()
      return results
    end
    local model = opts.coverage and coverage_model(suite.flow)
    if model then opts.coverage[#opts.coverage + 1] = model end
    if model and model.code then rt:count_lines(true) end
    local running = {}
    for ti, test in ipairs(suite.tests) do
      local id = test.id or ("%d.%d"):format(si, ti)
      if by_id[id] then
        opts.problems = opts.problems or {}
        opts.problems[#opts.problems + 1] = ("%s:%d: test %q: session id %s is taken by another test")
          :format(test.file, test.line, test.name, id)
        break
      end
      local t = { test = test, suite = suite, id = id, pos = 1, transcript = {}, failures = {},
                  calls = {}, steps = {}, ended = false }
      by_id[id] = t
      running[#running + 1] = t
      rt:start(id, suite.flow, table.unpack(test.args))
      if test.session then                -- what the session holds before its flow runs
        local _, sess = rt:state(id)
        for k, v in pairs(test.session) do sess[k] = v end
      end
    end
    -- Moves t's cursor up to its next user line, checking the states and
    -- taking the waits on the way (where the flow waits now).
    local function before_user(t)
      local conv = t.test.conversation
      while t.pos <= #conv do
        local e = conv[t.pos]
        if e.kind == "state" or (e[MARK] and e[MARK].kind == "state") then
          -- checked where the flow waits
          local step, sess = rt:state(t.id)
          local want = e.expect
          if type(want) ~= "table" then t.failures[#t.failures + 1] = "state: expected a table"
          else
            if want.step and want.step ~= step then
              t.failures[#t.failures + 1] = ("%s:%d: state: the session is at step %s, expected %s")
                :format(t.test.file, e[MARK] and e[MARK].line or 0, tostring(step), want.step)
            end
            if want.session then
              local why = subset(want.session, sess, "session")
              if why then t.failures[#t.failures + 1] = ("%s:%d: state: %s"):format(t.test.file, e[MARK] and e[MARK].line or 0, why) end
            end
          end
          t.pos = t.pos + 1
        elseif (e[MARK] and e[MARK].kind) == "wait" then
          if opts.live then             -- the user is silent that long, for real
            local until_ms = rt:clock() + e.ms
            while rt:clock() < until_ms do rt:step(math.max(1, math.floor(until_ms - rt:clock()))) end
          else
            rt:advance(e.ms)
          end
          t.pos = t.pos + 1
        elseif (e[MARK] and e[MARK].kind) == "user" then
          return
        else                            -- bot lines and labels: compared when all is done
          t.pos = t.pos + 1
        end
      end
    end
    local turns = 0
    while true do
      turns = turns + 1
      local alive = rt:step(100)
      for _, ev in ipairs(rt:events()) do
        local t = by_id[ev.session]
        if t and ev.type == "say" then
          t.transcript[#t.transcript + 1] = { kind = "bot", text = ev.text }
        elseif t and ev.type == "trace" and ev.final then   -- a call's last record: one a call
          t.transcript[#t.transcript + 1] = { kind = "call", label = ev.label, at = ev.at, step = ev.step,
                                              what = ("%s %s"):format(ev.method, ev.url) }
          t.calls[#t.calls + 1] = { at = ev.at, step = ev.step, label = ev.label }
          if opts.record and ev.status then opts.record[#opts.record + 1] = ev end
        elseif t and ev.type == "step" then
          t.steps[#t.steps + 1] = ev.step
        elseif t and ev.type == "ask" then
          if ev.text then t.transcript[#t.transcript + 1] = { kind = "bot", text = ev.text } end
          before_user(t)
          -- the next user line of the conversation, after the bot lines before it
          local conv, nexti = t.test.conversation, nil
          for i = t.pos, #conv do
            local k = conv[i][MARK] and conv[i][MARK].kind
            if k == "user" then nexti = i break end
          end
          if nexti then
            local e = conv[nexti]
            t.userpos = nexti
            if e.close then
              t.transcript[#t.transcript + 1] = { kind = "user", close = true }
              rt:send(t.id, nil)
            else
              t.transcript[#t.transcript + 1] = { kind = "user", text = e.text }
              rt:send(t.id, tostring(e.text))
            end
            t.pos = nexti + 1
          else
            t.transcript[#t.transcript + 1] = { kind = "user", close = true, unasked = true }
            rt:send(t.id, nil)
          end
        elseif t and ev.type == "end" then
          t.transcript[#t.transcript + 1] = { kind = "end", ok = ev.ok, error = ev.error }
          t.ended = true
        end
      end
      if alive == 0 or turns > 1000000 then break end
    end
    if model and model.code then
      for n, k in pairs(rt:lines()[suite.flow] or {}) do model.run[n] = (model.run[n] or 0) + k end
    end
    rt:close()
    for _, t in ipairs(running) do
      if model then
        local last = t.transcript[#t.transcript]
        cover(model, t.calls, t.steps, last and last.kind == "end" and last.ok)
      end
      local r = M.compare(t)
      results[#results + 1] = r
      if opts.on_result then opts.on_result(r) end
    end
  end
  return results
end

-- Compares a test's expected conversation with what happened.
function M.compare(t)
  local conv, actual = t.test.conversation, t.transcript
  local failures = {}
  for _, f in ipairs(t.failures) do failures[#failures + 1] = f end
  local ai = 1
  local function next_of(kinds, from)
    for i = from, #actual do
      if kinds[actual[i].kind] then return i end
    end
  end
  local lastcall = 0
  for _, e in ipairs(conv) do
    local k, at = e[MARK] and e[MARK].kind, e[MARK] or {}
    local here = ("%s:%d"):format(at.file or t.test.file, at.line or 0)
    if k == "bot" then
      local i = next_of({ bot = true, user = true, ["end"] = true }, ai)
      local a = i and actual[i]
      if not a or a.kind ~= "bot" then
        failures[#failures + 1] = ("%s: expected the bot to say %s, but %s"):format(here, show(e.expect),
          not a and "the conversation ended" or a.kind == "user" and "it waited for the user" or "the flow ended")
        break
      elseif not matches(e.expect, a.text) then
        failures[#failures + 1] = ("%s: expected the bot to say %s, it said %q"):format(here, show(e.expect), a.text)
        break
      end
      ai = i + 1
    elseif k == "user" then
      local i = next_of({ bot = true, user = true, ["end"] = true }, ai)
      local a = i and actual[i]
      if not a or a.kind ~= "user" then
        failures[#failures + 1] = ("%s: the user was to say %s, but %s"):format(here, e.close and "nothing more (close)" or ("%q"):format(e.text),
          not a and "the conversation ended" or a.kind == "bot" and ("the bot said %q first"):format(a.text) or "the flow ended")
        break
      end
      ai = i + 1
    elseif k == "label" then
      -- a call at the node: its step, its "file:line", or its line
      local function at_node(a)
        return a.kind == "call" and (not e.at or a.step == e.at
          or (a.at and (a.at == e.at or a.at:match(":(%d+)$") == tostring(e.at))))
      end
      local found
      for i = math.max(ai, lastcall + 1), #actual do   -- after the lines matched so far
        if at_node(actual[i]) then found = i break end
      end
      if not found then                 -- or before the bot line the list puts first
        for i = lastcall + 1, #actual do
          if at_node(actual[i]) then found = i break end
        end
      end
      if not found then
        failures[#failures + 1] = ("%s: expected a call%s with label %s, none came"):format(here, e.at and (" at " .. e.at) or "", e.label)
        break
      elseif actual[found].label ~= e.label then
        failures[#failures + 1] = ("%s: the call%s (%s) has label %s, expected %s"):format(here, e.at and (" at " .. e.at) or "",
          actual[found].what, actual[found].label, e.label)
        break
      end
      lastcall = found
    elseif k == "done" or k == "fails" then
      local i = next_of({ bot = true, user = true, ["end"] = true }, ai)
      local a = i and actual[i]
      if not a or a.kind ~= "end" then
        failures[#failures + 1] = ("%s: expected the flow to end, but %s"):format(here, not a and "it did not"
          or a.kind == "bot" and ("the bot said %q"):format(a.text) or "it waited for the user")
        break
      elseif k == "done" and not a.ok then
        failures[#failures + 1] = ("%s: expected the flow to end done, it failed: %s"):format(here, (a.error or ""):match("^[^\n]*"))
        break
      elseif k == "fails" and (a.ok or not (a.error or ""):find(e.pattern)) then
        failures[#failures + 1] = ("%s: expected the flow to fail matching %q, it %s"):format(here, e.pattern,
          a.ok and "ended done" or ("failed: " .. (a.error or ""):match("^[^\n]*")))
        break
      end
      ai = i + 1
    end
  end
  -- a flow that fails where the test expected no end is a failure too
  if #failures == 0 then
    for i = ai, #actual do
      if actual[i].kind == "end" and not actual[i].ok then
        failures[#failures + 1] = ("the flow failed: %s"):format((actual[i].error or ""):match("^[^\n]*"))
      end
    end
  end
  local lines = {}
  for _, a in ipairs(actual) do
    if a.kind == "bot" then lines[#lines + 1] = "  bot:  " .. a.text
    elseif a.kind == "user" then lines[#lines + 1] = a.close and "  user: (closes the conversation)" or "  user: " .. tostring(a.text)
    elseif a.kind == "call" then lines[#lines + 1] = ("  call: %s -> %s%s"):format(a.what, a.label, a.step and (" (step " .. a.step .. ")") or a.at and (" (" .. a.at .. ")") or "")
    elseif a.kind == "end" then lines[#lines + 1] = a.ok and "  end:  done" or "  end:  failed: " .. (a.error or ""):match("^[^\n]*") end
  end
  return { suite = t.suite, test = t.test, ok = #failures == 0, failures = failures, transcript = lines }
end

local function xml(s)
  return (tostring(s):gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" })
    :gsub("[%z\1-\8\11\12\14-\31]", "?"))
end

-- Writes results as JUnit XML (a testsuite per test file) to path.
function M.write_junit(path, results, err)
  local f, ferr = io.open(path, "w")
  if not f then err:write("flowrun test: --junit: ", ferr, "\n") return false end
  local files, order = {}, {}
  for _, r in ipairs(results) do
    local file = r.test.file
    if not files[file] then files[file] = {} order[#order + 1] = file end
    table.insert(files[file], r)
  end
  local failed = 0
  for _, r in ipairs(results) do if not r.ok then failed = failed + 1 end end
  f:write('<?xml version="1.0" encoding="UTF-8"?>\n')
  f:write(('<testsuites name="flowrun test" tests="%d" failures="%d">\n'):format(#results, failed))
  for _, file in ipairs(order) do
    local rs, nf = files[file], 0
    for _, r in ipairs(rs) do if not r.ok then nf = nf + 1 end end
    f:write(('  <testsuite name="%s" tests="%d" failures="%d">\n'):format(xml(file), #rs, nf))
    for _, r in ipairs(rs) do
      f:write(('    <testcase classname="%s" name="%s"'):format(xml(file), xml(r.test.name)))
      if r.ok then f:write("/>\n")
      else
        f:write(('>\n      <failure message="%s">%s\n%s</failure>\n    </testcase>\n'):format(
          xml(r.failures[1]:match("^[^\n]*")), xml(table.concat(r.failures, "\n")),
          xml("what happened:\n" .. table.concat(r.transcript, "\n"))))
      end
    end
    f:write("  </testsuite>\n")
  end
  f:write("</testsuites>\n")
  f:close()
  return true
end

-- The calls traces saw (live) as a Lua file of stubs: one a request (its
-- integration, method, path and query), its answer, or its answers in
-- turn when they differed. Cookies stay out (Set-Cookie is not written).
function M.write_recorded(path, traces, files, err)
  local keys, by = {}, {}
  for _, ev in ipairs(traces) do
    local rel = ev.relative or ""
    local p, q = rel:match("^([^?]*)%??(.*)$")
    local key = ("%s %s %s?%s"):format(ev.integration, ev.method, p, q)
    if not by[key] then keys[#keys + 1] = key by[key] = { ev = ev, path = p, query = q, replies = {} } end
    local headers = {}
    for line in (ev.response_headers or ""):gmatch("[^\r\n]+") do
      local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
      if name and name:lower() ~= "set-cookie" and name:lower() ~= "authorization" then headers[name] = value end
    end
    local reply = { status = ev.status, headers = headers, body = ev.response_body or "" }
    local list = by[key].replies
    local last = list[#list]
    if not (last and last.status == reply.status and last.body == reply.body) then list[#list + 1] = reply end
  end
  local function lit(v, indent)
    if type(v) == "string" then return ("%q"):format(v):gsub("\\\n", "\\n") end
    if type(v) ~= "table" then return tostring(v) end
    local names = {}
    for k in pairs(v) do names[#names + 1] = k end
    table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    for _, k in ipairs(names) do
      local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or ("[%s]"):format(lit(k))
      parts[#parts + 1] = key .. " = " .. lit(v[k], indent)
    end
    return "{ " .. table.concat(parts, ", ") .. " }"
  end
  local f, ferr = io.open(path, "w")
  if not f then err:write("flowrun test: --record: ", ferr, "\n") return false end
  f:write("-- Recorded by `flowrun test --live --record` from ", table.concat(files, ", "), ": the\n",
          "-- answers the real APIs gave, as stubs (cookies left out). A test file takes them\n",
          "-- with stubs = recorded \"", path:match("[^/]*$"), "\".\nreturn {\n")
  for _, key in ipairs(keys) do
    local r = by[key]
    local query = decode_query(r.query)
    for k, v in pairs(query) do
      if v == "***" then query[k] = nil end   -- a secret (an api_key): the run sends it
    end
    f:write("  stub { integration = ", lit(r.ev.integration), ", method = ", lit(r.ev.method),
            ", path = ", lit((r.path:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))),
            next(query) and (", query = " .. lit(query)) or "",
            #r.replies == 1 and (",\n         reply = " .. lit(r.replies[1])) or (",\n         replies = " .. lit(r.replies)),
            " },\n")
  end
  f:write("}\n")
  f:close()
  return true
end

-- M.replay(store, { integrations = FILE, allow = {...} }) -> results: every
-- unfinished session of the store replayed against the flows as they are
-- now, up to the end of its journal (flowrun_replay_store). The store is
-- only read. Each result: { id, flow, ok, text } (text: where its journal
-- ends, or the mismatch); sorted by id.
function M.replay(store, opts)
  opts = opts or {}
  local listed, by_id, results = flowrun.store_list(store), {}, {}
  local integrations = opts.integrations or os.getenv("FLOWRUN_INTEGRATIONS")
  for _, e in ipairs(listed) do
    if e.state ~= "ended" then
      local r = { id = e.id, flow = e.flow, parked = e.note ~= nil }
      by_id[e.id] = r
      results[#results + 1] = r
      if not integrations then         -- as the other commands: beside the flow, else here
        local beside = (e.flow:match("^(.*/)") or "") .. "integrations.lua"
        local f = io.open(beside) or io.open("integrations.lua")
        if f then f:close() integrations = io.open(beside) and beside or "integrations.lua" end
      end
    end
  end
  table.sort(results, function(a, b) return a.id < b.id end)
  local rt <close> = flowrun.new{ integrations = integrations, allow = opts.allow, replay = store }
  local turns = 0
  repeat
    turns = turns + 1
    local alive = rt:step(100)
    for _, ev in ipairs(rt:events()) do
      local r = by_id[ev.session]
      if r and ev.type == "end" then
        r.ok, r.ended = ev.ok, true
        r.text = ev.replayed and ev.text or ev.ok and "replays to its end: the flow ends where its journal does"
                 or ev.error
      end
    end
  until alive == 0 or turns > 1000000
  for _, r in ipairs(results) do
    if not r.ended then r.ok, r.text = false, "did not reach the end of its journal" end
  end
  return results
end

-- `flowrun test --replay STORE`: a line per session, the closing count.
function M.replay_main(store, o, out, err)
  if #o.files > 0 or o.live then
    err:write("flowrun test: --replay STORE checks a store's sessions: no test files, --live, --record or --coverage with it\n")
    return 2
  end
  local ok, results = pcall(M.replay, store, o)
  if not ok then err:write("flowrun test: --replay: ", (tostring(results):gsub("^.-flowrun%.[%w_]+: ", "")), "\n") return 2 end
  local passed, failed, all = 0, 0, {}
  for n, r in ipairs(results) do
    if r.ok then passed = passed + 1 else failed = failed + 1 end
    out:write(("%s %d - session %s (%s%s): %s\n"):format(r.ok and "ok" or "not ok", n, r.id, r.flow,
      r.parked and ", parked" or "", r.ok and r.text or "does not replay"))
    if not r.ok then out:write("# ", (r.text:gsub("\n", "\n# ")), "\n") end
    all[#all + 1] = { ok = r.ok, test = { file = store, name = "session " .. r.id }, failures = r.ok and {} or { r.text },
                      transcript = {} }
  end
  out:write(("1..%d\n"):format(#results))
  if o.junit and not M.write_junit(o.junit, all, err) then return 2 end
  out:write(("%d passed, %d failed\n"):format(passed, failed))
  return failed == 0 and 0 or 1
end

-- M.main(args) -> exit status: the `flowrun test` command.
function M.main(args, out, err)
  out, err = out or io.stdout, err or io.stderr
  local files, problems, coverage, cov_file, junit, live, record = {}, {}, nil, nil, nil, false, nil
  local replay, integrations, allow
  local i = 0
  while i < #args do
    i = i + 1
    local a = args[i]
    if a == "--coverage" then
      coverage = {}
      if args[i + 1] and args[i + 1]:match("%.json$") then cov_file = args[i + 1] i = i + 1 end
    elseif a == "--live" then
      live = true
    elseif a == "--record" then
      record = args[i + 1]
      i = i + 1
      if not record then err:write("flowrun test: --record FILE: the file is missing\n") return 2 end
    elseif a == "--replay" or a == "-I" or a == "--allow" then
      local v = args[i + 1]
      i = i + 1
      if not v then err:write(("flowrun test: %s: the %s is missing\n"):format(a, a == "--allow" and "list" or "file")) return 2 end
      if a == "--replay" then replay = v
      elseif a == "-I" then integrations = v
      else allow = {} for name in v:gmatch("[^,%s]+") do allow[#allow + 1] = name end end
    elseif a == "--junit" then
      junit = args[i + 1]
      i = i + 1
      if not junit then err:write("flowrun test: --junit FILE: the file is missing\n") return 2 end
    elseif a:sub(1, 1) == "-" then
      err:write(("flowrun test: unknown option '%s'\nusage: flowrun test [--live] [--coverage [FILE.json]] [--junit FILE] [FILE_test.lua | DIR]...\n"
                 .. "       flowrun test --replay STORE [-I FILE] [--allow LIST] [--junit FILE]\n"):format(a))
      return 2
    elseif a:match("%.lua$") then files[#files + 1] = a
    else
      local p = io.popen("find " .. ("'" .. a:gsub("'", "'\\''") .. "'") .. " -name '*_test.lua' -type f 2>/dev/null | sort")
      for f in p:lines() do files[#files + 1] = f end
      p:close()
    end
  end
  if replay then return M.replay_main(replay, { integrations = integrations, allow = allow, junit = junit,
                                              files = files, live = live or record or coverage }, out, err) end
  if #files == 0 then
    err:write("flowrun test: no test files (FILE_test.lua, or a folder holding some)\n")
    return 2
  end
  local suites = {}
  for _, f in ipairs(files) do
    local s, ps = M.load(f)
    if s then suites[#suites + 1] = s else for _, p in ipairs(ps) do problems[#problems + 1] = p end end
  end
  if #problems > 0 then
    for _, p in ipairs(problems) do err:write(p, "\n") end
    return 2
  end
  local n, passed, failed, all = 0, 0, 0, {}
  local ropts
  if record and not live then
    err:write("flowrun test: --record FILE records the real APIs' answers: give --live too\n")
    return 2
  end
  ropts = { coverage = coverage, live = live, record = record and {}, on_result = function(r)
    n = n + 1
    all[#all + 1] = r
    if r.ok then passed = passed + 1 else failed = failed + 1 end
    out:write(("%s %d - %s: %s\n"):format(r.ok and "ok" or "not ok", n, r.test.file, r.test.name))
    if not r.ok then
      for _, f in ipairs(r.failures) do out:write("# ", (f:gsub("\n", "\n# ")), "\n") end
      out:write("# what happened:\n")
      for _, l in ipairs(r.transcript) do out:write("# ", l, "\n") end
    end
  end }
  M.run(suites, ropts)
  if ropts.problems then
    for _, p in ipairs(ropts.problems) do err:write(p, "\n") end
    return 2
  end
  out:write(("1..%d\n"):format(n))   -- the TAP plan
  if record and not M.write_recorded(record, ropts.record, files, err) then return 2 end
  if junit and not M.write_junit(junit, all, err) then return 2 end
  if coverage then
    local lines, total = M.coverage_lines(coverage)
    for _, l in ipairs(lines) do out:write(l, "\n") end
    if cov_file then
      local json = require "cjson"
      local f, ferr = io.open(cov_file, "w")
      if not f then err:write("flowrun test: ", ferr, "\n") return 2 end
      local flows = {}
      for _, m in ipairs(coverage) do
        local nodes = {}
        for _, nd in ipairs(m.nodes) do
          local taken = {}
          for _, l in ipairs(nd.labels) do taken[#taken + 1] = { label = l, taken = nd.taken[l] or 0 } end
          nodes[#nodes + 1] = { node = nd.key, at = nd.where, labels = taken }
        end
        local steps, edges = json.empty_array, json.empty_array
        if m.steps then
          steps, edges = {}, {}
          for _, s in ipairs(m.steps) do steps[#steps + 1] = { step = s.name, reached = s.reached } end
          for _, e in ipairs(m.edges) do edges[#edges + 1] = { from = e.from, to = e.to, taken = e.taken } end
        end
        local run, missed = json.empty_array, json.empty_array
        if m.code then
          run, missed = {}, {}
          for n in pairs(m.code) do if m.run[n] then run[#run + 1] = n else missed[#missed + 1] = n end end
          table.sort(run) table.sort(missed)
          if #run == 0 then run = json.empty_array end
          if #missed == 0 then missed = json.empty_array end
        end
        flows[#flows + 1] = { flow = m.file, nodes = #nodes > 0 and nodes or json.empty_array, steps = steps, edges = edges,
                              lines_run = run, lines_never_run = missed }
      end
      f:write(json.encode({ flows = flows, labels = total.labels, steps = total.steps, edges = total.edges,
                            lines = total.lines }), "\n")
      f:close()
    end
  end
  out:write(("%d passed, %d failed\n"):format(passed, failed))
  return failed == 0 and 0 or 1
end

return M
