-- flowrun.flow -- declarative flows (README: Declarative flows): a flow as a table of steps,
-- each api step routing the end-user by its result label.
--
--   local flow = require "flowrun.flow"
--   return flow.define { start = "ask_order", defaults = {...}, steps = {...} }
--
-- A flow file that returns a definition runs as a session like any other:
-- when the file's function returns one, the runtime (session.c) calls
-- flow.run(definition, globals, context) on the same coroutine, so ask,
-- sleep and api_node wait as usual and errors end the session with
-- file:line. A session's whole state is its current step and `session`.
--
-- flow.define validates the graph it is given and raises listing every
-- problem; flow.run checks, once per runtime, what needs the runtime (the
-- integrations, the files of "flow:PATH" targets) before the first step.
-- The rules are in flowrun.validate; `flowrun check` and `flowrun graph`
-- load flow files with flow.build, which does not raise.

local nodespec = require "flowrun.nodespec"

local flow = { _VERSION = "flowrun.flow 0.1.0" }

-- Values shared through the registry, so that the runtime (C) recognises a
-- definition and two copies of this module agree on what a step is.
local registry = debug.getregistry()
local function shared(name, init)
  if registry[name] == nil then registry[name] = init end
  return registry[name]
end

-- Every session's definitions share them: protected from the flows (a
-- flow sees false for getmetatable), recognised here through debug.
local DEF_MT = shared("flowrun.flowdef", { __name = "flowrun.flowdef", __metatable = false })
local STEP_MT = shared("flowrun.flowstep", { __name = "flowrun.flowstep", __metatable = false })
local getmetatable = debug.getmetatable

-- The target that ends the flow (a label in `on` cannot map to nil).
flow.END = shared("flowrun.flow.END", setmetatable({}, {
  __name = "flowrun.flow.END",
  __tostring = function() return "flow.END" end,
}))
local END = flow.END

local DEFAULT_LABELS, DEFAULT = nodespec.DEFAULT_LABELS, nodespec.DEFAULT

function flow.is_flow(v) return getmetatable(v) == DEF_MT end
function flow.is_step(v) return getmetatable(v) == STEP_MT end

-- ---- steps ----

local function source_name(info)
  return info.source:match("^[@=](.*)") or info.short_src
end

-- A step, knowing where the flow made it (the caller of flow.<kind>).
local function new_step(kind, spec)
  local info = debug.getinfo(3, "Sl")   -- 1 new_step, 2 flow.<kind>, 3 the flow
  local file, line = info and source_name(info), info and info.currentline
  return setmetatable({ kind = kind, spec = spec, file = file,
                        line = line and line > 0 and line or nil }, STEP_MT)
end

-- flow.api{ api_node fields..., on = { label = target }, switch = fn, save = key
--           [, pages = {...}, each = fn] }
function flow.api(spec)
  local st = new_step("api", spec)
  return st
end

-- flow.say{ text = ..., next = target } or flow.say "text"
function flow.say(spec)
  if type(spec) == "string" then spec = { text = spec } end
  local st = new_step("say", spec)
  return st
end

-- flow.ask{ prompt = ..., save = key, next = target, closed = target }
function flow.ask(spec)
  if type(spec) == "string" then spec = { prompt = spec } end
  local st = new_step("ask", spec)
  return st
end

-- flow.sleep{ ms = ..., next = target } or flow.sleep(ms)
function flow.sleep(spec)
  if type(spec) == "number" then spec = { ms = spec } end
  local st = new_step("sleep", spec)
  return st
end

-- ---- definitions ----

local function basename(file)
  return file and (file:match("([^/]*)$"):gsub("%.lua$", "")) or "flow"
end

-- Builds a definition without validating it. info: the caller of define.
local function build(spec, info, tail)
  local def = setmetatable({ steps = {}, names = {} }, DEF_MT)
  if info and not tail then
    def.file, def.line = source_name(info), info.currentline > 0 and info.currentline or nil
  end
  if type(spec) ~= "table" then
    def.bad = ("flow.define: expected a table, got %s"):format(type(spec))
    spec = {}
  end
  def.spec, def.start, def.defaults = spec, spec.start, spec.defaults
  if type(spec.steps) == "table" then
    for name, st in pairs(spec.steps) do
      if type(st) == "function" then      -- a code step
        local i = debug.getinfo(st, "S")
        st = setmetatable({ kind = "code", fn = st, file = source_name(i),
                            line = i.linedefined > 0 and i.linedefined or nil }, STEP_MT)
      end
      def.steps[name] = st
      if type(name) == "string" then def.names[#def.names + 1] = name end
    end
    table.sort(def.names)
  end
  if not def.file then                  -- `return flow.define{}` is a tail call
    local first = def.steps[def.start]
    if not flow.is_step(first) then
      for _, n in ipairs(def.names) do
        if flow.is_step(def.steps[n]) then first = def.steps[n] break end
      end
    end
    def.file = flow.is_step(first) and first.file or nil
  end
  def.name = type(spec.name) == "string" and spec.name or basename(def.file)
  return def
end

-- path with "." and "x/.." segments collapsed, as text (symbolic links are
-- not followed): one name per file, so that the files a flow reaches are
-- visited and cached once ("sub/../a.lua" is "a.lua").
function flow.normalize(path)
  local abs = path:sub(1, 1) == "/"
  local out = {}
  for seg in path:gmatch("[^/]+") do
    if seg == ".." then
      if #out > 0 and out[#out] ~= ".." then
        out[#out] = nil
      elseif not abs then
        out[#out + 1] = seg
      end
    elseif seg ~= "." then
      out[#out + 1] = seg
    end
  end
  local s = table.concat(out, "/")
  if abs then return "/" .. s end
  return s == "" and "." or s
end

-- The file a "flow:PATH" target of a flow in `file` names: relative paths
-- are taken from that file's directory, as run_flow does; normalized.
function flow.resolve(file, path)
  if path:sub(1, 1) ~= "/" then
    local dir = file and file:match("^(.*)/[^/]*$")
    if dir then path = dir .. "/" .. path end
  end
  return flow.normalize(path)
end

-- The line of the first `.define` in file: where a definition whose
-- define was a tail call (so not in the stack) stands.
local define_lines = {}
function flow.define_line(file)
  if define_lines[file] == nil then
    define_lines[file] = false
    local f = file and io.open(file, "rb")
    if f then
      local src = f:read("a") or ""
      f:close()
      local toks = require("flowrun.lex").tokens(src)
      for i = 2, #toks do
        if toks[i].text == "define" and toks[i - 1].text == "." then
          define_lines[file] = toks[i].line
          break
        end
      end
    end
  end
  return define_lines[file] or nil
end

-- One problem as a line: "file:line: step "x": message", "warning: " after
-- the location for a warning.
function flow.format(p)
  local line = p.line or (p.file and flow.define_line(p.file))
  local s = (p.file or "?") .. (line and ":" .. line or "") .. ": "
  if p.warning then s = s .. "warning: " end
  if p.step and not p.whole then s = s .. ('step "%s": '):format(p.step) end
  return s .. p.msg
end

-- ---- what each api step declares ----

-- label order in messages and pictures: codes, classes, the switch's
-- labels, then the default labels in nodespec.DEFAULT_LABELS's order
local function label_rank(l)
  local kind = nodespec.result_kind(l)
  if kind == "code" then return 1 end
  if kind == "class" then return 2 end
  if kind == "default" then
    for i, d in ipairs(DEFAULT_LABELS) do if d == l then return 3 + i end end
  end
  return 3
end
local function label_less(a, b)
  if type(a) ~= "string" or type(b) ~= "string" then return tostring(a) < tostring(b) end
  local ra, rb = label_rank(a), label_rank(b)
  if ra ~= rb then return ra < rb end
  return a < b
end
flow.label_less = label_less

-- The labels of an api step: { keys = the keys of on in order, results =
-- the declared results (for api_node), switch = { label = true } for the
-- switch's labels, problems = messages }. Cached on the step.
function flow.labels(st)
  if st.labels then return st.labels end
  local spec = type(st.spec) == "table" and st.spec or {}
  local on = spec.on
  local L = { keys = {}, results = {}, switch = {}, problems = {} }
  local function problem(msg) L.problems[#L.problems + 1] = msg end
  if on == nil then
    problem('on is required: the declared results and their targets, like on = { ["200"] = "next_step" }')
  elseif type(on) ~= "table" then
    problem(("on: expected a table of result label -> target, got %s"):format(type(on)))
  else
    for k in pairs(on) do L.keys[#L.keys + 1] = k end
    table.sort(L.keys, label_less)
    local has200 = false
    for _, k in ipairs(L.keys) do
      local kind = nodespec.result_kind(k)
      if type(k) ~= "string" then
        problem(('on: keys are result labels like "200", got %s %s'):format(type(k), tostring(k)))
      elseif kind == "upper" then
        problem("on: " .. nodespec.lower_case_problem(k))
      elseif kind then
        L.results[#L.results + 1] = k
        if k == "2xx" or (kind == "code" and k:match("^2%d%d$")) then has200 = true end
      elseif spec.switch ~= nil then
        local typo = nodespec.misspelt_result(k)
        if typo then
          problem("on: " .. typo .. "; a switch label must not look like one (fix the typo, or name the switch label otherwise)")
        else
          L.switch[k] = true
        end
      else
        problem("on: " .. nodespec.unknown_result_problem(k))
      end
    end
    if not has200 then problem("on: " .. nodespec.MISSING_200) end
  end
  st.labels = L
  return L
end

-- ---- define ----

local function caller_of_define()
  return debug.getinfo(3, "Sl"), debug.getinfo(2, "t").istailcall
end

-- flow.define(spec) -> definition; raises listing every problem.
function flow.define(spec)
  local def = build(spec, caller_of_define())
  local errors = {}
  for _, p in ipairs(require("flowrun.validate").problems(def)) do
    if not p.warning then errors[#errors + 1] = flow.format(p) end
  end
  if #errors > 0 then error(table.concat(errors, "\n"), 0) end
  return def
end

-- flow.build(spec) -> definition, without raising: what `flowrun check`
-- gives flow files for flow.define.
function flow.build(spec)
  return build(spec, caller_of_define())
end

-- ---- running ----

-- The message of an error in a function of step `name`, with the step
-- named after its position: "f.lua:8: step "x": attempt to ...". One that
-- names its step already (a flow run by a code step) is left as it is.
local function in_step(name, st, msg)
  if type(msg) ~= "string" or msg:match('^[^\n]-:%d+: step "') then return msg end
  local tag = ('step "%s": '):format(name)
  local at, rest = msg:match("^([^\n]-:%d+: )(.*)$")
  if at then return at .. tag .. rest end
  return ("%s%s: %s%s"):format(st.file or "?", st.line and ":" .. st.line or "", tag, msg)
end

-- Calls fn(...), a function of the flow for step `name`. An error in it is
-- raised again, named after its step, with the frames of the function (from
-- the error up to this call) as a traceback of its own: the session's
-- traceback starts where it is raised again.
local function protect(name, st, fn, ...)
  local function handler(msg)
    msg = in_step(name, st, msg)
    if type(msg) ~= "string" or msg:find("\nstack traceback:") then return msg end
    local tb = debug.traceback(msg, 2)
    local cut = tb:find("\n\t%[C%]: in function 'xpcall'")
    return cut and tb:sub(1, cut - 1) or tb
  end
  return (function(ok, ...)
    if not ok then error((...), 0) end
    return ...
  end)(xpcall(fn, handler, ...))
end

-- A field of a step: a value, or a function of the session.
local function value(v, s, name, st)
  if type(v) == "function" then return protect(name, st, v, s) end
  return v
end

local function fail(def, name, st, msg)
  local file = st and st.file or def.file or "?"
  local line = st and st.line
  error(("%s%s: step \"%s\": %s"):format(file, line and ":" .. line or "", name, msg), 0)
end

-- Calls a flow global (say, ask, sleep, api_node): its misuse is reported
-- at the step, not here. pcall lets the session wait inside.
local function call(def, name, st, fn, ...)
  local ok, a, b, c = pcall(fn, ...)
  if not ok then fail(def, name, st, tostring(a)) end
  return a, b, c
end

local RUN = {}

function RUN.say(st, s, env, def, name)
  call(def, name, st, env.say, value(st.spec.text, s, name, st))
  return value(st.spec.next, s, name, st)
end

function RUN.ask(st, s, env, def, name)
  local answer = call(def, name, st, env.ask, value(st.spec.prompt, s, name, st))
  if answer == nil then return value(st.spec.closed, s, name, st) end   -- the user left
  local key = value(st.spec.save, s, name, st)
  if key ~= nil then s[key] = answer end
  return value(st.spec.next, s, name, st)
end

function RUN.sleep(st, s, env, def, name)
  call(def, name, st, env.sleep, value(st.spec.ms, s, name, st))
  return value(st.spec.next, s, name, st)
end

function RUN.code(st, s, _, _, name)
  return protect(name, st, st.fn, s)
end

-- Is this a complete 2xx response whose status is a declared result?
local function declared_success(label, res)
  return label ~= "other" and type(res) == "table" and math.type(res.status) == "integer"
     and res.status >= 200 and res.status <= 299
end

-- The pages of a paged api step (README: Pagination): each(res, session,
-- page) for every page that is a declared success; the label and response
-- of the last page.
local function pages(def, name, st, env, req, s)
  local ok, next_page = pcall(env.api_pages, req)
  if not ok then fail(def, name, st, tostring(next_page)) end
  local label, res
  while true do
    local l, r, page = call(def, name, st, next_page)
    if l == nil then return label, res end
    label, res = l, r
    if st.spec.each and declared_success(l, r) then protect(name, st, st.spec.each, r, s, page) end
  end
end

function RUN.api(st, s, env, def, name)
  local spec, L = st.spec, flow.labels(st)
  local req = { results = L.results }
  for _, k in ipairs(nodespec.FIELDS) do
    if spec[k] ~= nil then req[k] = value(spec[k], s, name, st) end
  end
  local label, res
  if spec.pages ~= nil then
    req.pages = value(spec.pages, s, name, st)
    label, res = pages(def, name, st, env, req, s)
  else
    label, res = call(def, name, st, env.api_node, req)
  end
  local key = value(spec.save, s, name, st)
  if key ~= nil then s[key] = res end
  if spec.switch and declared_success(label, res) then
    local v = protect(name, st, spec.switch, res, s)
    if L.switch[v] then
      label = v
    elseif v ~= nil then
      env.log.warn(('%s:%s: step "%s": switch returned %s, not one of the labels of on; routing "%s"')
        :format(st.file or "?", st.line or "?", name,
                type(v) == "string" and ('"' .. v .. '"') or tostring(v), label))
    end
  end
  local t = spec.on[label]
  if t == nil and DEFAULT[label] and type(def.defaults) == "table" then t = def.defaults[label] end
  if t == nil then fail(def, name, st, ('label "%s" is not routed'):format(tostring(label))) end
  return value(t, s, name, st)
end

-- Checks what needs the runtime, once per definition site and runtime:
-- integrations, endpoints and header conflicts, and that each "flow:"
-- target is a file that defines a flow (checked the same way, in turn).
local function validate(def, ctx)
  local key = tostring(def.file) .. ":" .. tostring(def.line or def.names[1])
  ctx.validated = ctx.validated or {}
  if ctx.validated[key] then return end
  local rt = ctx.runtime
  local igs = rt and rt.integrations()
  local opts = {
    integrations = igs,
    header_conflict = rt and rt.header_conflict,
    hint = igs and next(igs) == nil and (" (no integrations are loaded: -I FILE on the command line,"
      .. " flowrun.new{ integrations = ... } in Lua, flowrun_load_integrations in C)") or nil,
  }
  local errors, visited = {}, {}
  local function collect(d)
    for _, p in ipairs(require("flowrun.validate").problems(d, opts)) do
      if not p.warning then errors[#errors + 1] = flow.format(p) end
    end
  end
  opts.flow_target = function(file, t)
    if not file:match("%.lua$") then return ('target "%s": a flow file is a .lua file'):format(t) end
    local loader = require "flowrun.loader"
    local r = loader.load(file, { trusted = true, globals = rt and rt.flow_globals() })
    if r.kind ~= "flow" then return loader.not_a_flow(r, t, file) end
    if not visited[file] then
      visited[file] = true
      collect(r.def)
    end
  end
  if def.file then visited[flow.normalize(def.file)] = true end
  collect(def)
  if #errors > 0 then error(table.concat(errors, "\n"), 0) end
  ctx.validated[key] = true
end

-- The definition a "flow:PATH" target continues in.
local function hand_over(def, name, st, file, env, ctx)
  local load = ctx.load or function(path)
    if not path:match("%.lua$") then return nil, path .. ": a flow file is a .lua file" end
    local f, err = loadfile(path, "t", env)
    if not f then return nil, err end
    return function(_, ...) return f(...) end
  end
  local fn, err = load(file)
  if not fn then fail(def, name, st, err) end
  local other = fn(env)
  if not flow.is_flow(other) then
    fail(def, name, st, ("%s does not define a flow (it must return flow.define{...})"):format(file))
  end
  other.file = file
  validate(other, ctx)
  return other
end

-- The kinds of step before which a session's state is kept (with a store):
-- those that may wait.
local WAITS = { ask = true, sleep = true, api = true, code = true }

-- Replaying a session kept in a store: its state as the snapshot says, and
-- the definition and step it goes on from; the step's code is the file's
-- as it is now, so a fix to a later step reaches live sessions.
local function restored(def, env, ctx)
  local file, step, saved = ctx.resume()
  if not step then return def, def.start, nil end
  if file ~= def.file then def = hand_over(def, step, nil, file, env, ctx) end
  if not flow.is_step(def.steps[step]) then
    ctx.mismatch(('%s: a session waits at step "%s", which is gone from the flow'
      .. ' (README: Changing a flow with live sessions)'):format(file, step))
  end
  local s = env.session
  for k in pairs(s) do s[k] = nil end
  for k, v in pairs(saved) do s[k] = v end
  return def, step, file .. "\0" .. step
end

-- flow.run(def, env [, ctx [, own]]): runs a definition as the session
-- whose globals are env, from its start step until a step routes to the
-- end. ctx, from the runtime: load(path) -> the compiled flow file (a
-- function of the globals), runtime = flowrun.runtime of this runtime, a
-- cache; with a store, checkpoint, resume and mismatch, used when own says
-- this is the session's own flow (not one run_flow runs).
function flow.run(def, env, ctx, own)
  ctx = ctx or {}
  if not flow.is_flow(def) then
    error("flow.run: expected a definition from flow.define, got " .. type(def), 2)
  end
  local s = env.session
  validate(def, ctx)
  local name = def.start
  local keep, at = own and ctx.checkpoint, own and ctx.step
  local kept                            -- the file and step of the snapshot kept
  if keep then def, name, kept = restored(def, env, ctx) end
  while true do
    local st = def.steps[name]
    if at then at(name) end
    if env.session ~= s then            -- a new table would be lost at a restart
      fail(def, name, st, "the global session was given a new table; a step changes its fields"
        .. " (session.x = ...) and keeps the table")
    end
    if keep and WAITS[st.kind] then
      local here = tostring(def.file) .. "\0" .. name
      local ok, err = keep(s, def.file, name, ("%s:%s"):format(st.file or def.file, st.line or "?"),
                           here == kept)
      if not ok then fail(def, name, st, err) end
      kept = here
    end
    local t = RUN[st.kind](st, s, env, def, name)
    if t == nil or t == END then return end
    if type(t) ~= "string" then
      fail(def, name, st, ('went to %s: a target is a step name, "flow:PATH" or flow.END')
        :format(type(t)))
    end
    local path = t:match("^flow:(.+)$")
    if path then
      def = hand_over(def, name, st, flow.resolve(st.file or def.file, path), env, ctx)
      name = def.start
    elseif def.steps[t] ~= nil then
      name = t
    else
      fail(def, name, st, ('unknown target "%s"'):format(t))
    end
  end
end

return flow
