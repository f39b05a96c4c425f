-- flowrun.validate -- the rules of a declarative flow (README: Declarative flows), every
-- problem at once: for flow.define (which raises listing them), for the
-- runtime's check of a definition against its integrations, and for
-- `flowrun check` (which also wants the warnings) and `flowrun graph`
-- (which wants the edges).

local flow = require "flowrun.flow"
local nodespec = require "flowrun.nodespec"
local lex = require "flowrun.lex"

local validate = { _VERSION = "flowrun.validate 0.1.0" }

local END = flow.END
local DEFAULT_LABELS = nodespec.DEFAULT_LABELS
local labels = flow.labels

local FIELDS = {
  api = { save = true, on = true, switch = true, pages = true, each = true },
  say = { text = true, next = true },
  ask = { prompt = true, save = true, next = true, closed = true },
  sleep = { ms = true, next = true },
}
for _, k in ipairs(nodespec.FIELDS) do FIELDS.api[k] = true end
FIELDS.api.results = nil

local DEFINE_FIELDS = { name = true, start = true, steps = true, defaults = true }

-- What each step kind and flow.define accept (spec/meta_spec.lua holds the
-- editor annotations of lua/meta/ to them).
validate.FIELDS, validate.DEFINE_FIELDS = FIELDS, DEFINE_FIELDS

-- ---- the targets a function may return ----

local sources = setmetatable({}, { __mode = "k" })

-- What a function (a code step, a computed target) may return, read from
-- its source: the string literals in it that name a step of def or a
-- "flow:" file, and whether it waits (calls ask or sleep). source(file)
-- gives a file's text.
function validate.infer(fn, def, source)
  local cache = sources[fn]
  if cache then return cache[1], cache[2] end
  local info = debug.getinfo(fn, "S")
  local file = info.source:match("^@(.*)")
  local text = file and source and source(file)
  if not text or info.linedefined <= 0 then return {}, false end
  local lines, n = {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if n >= info.linedefined and n <= info.lastlinedefined then lines[#lines + 1] = line end
  end
  local toks = lex.tokens(table.concat(lines, "\n"))
  local found, seen, waits = {}, {}, false
  for i, t in ipairs(toks) do
    if t.type == "string" then
      local v = lex.string_value(t)
      if v and not seen[v] and (def.steps[v] ~= nil or v:match("^flow:.")) then
        seen[v] = true
        found[#found + 1] = v
      end
    elseif t.type == "name" and (t.text == "ask" or t.text == "sleep")
           and (not toks[i - 1] or toks[i - 1].text ~= ".") then
      waits = true
    end
  end
  sources[fn] = { found, waits }
  return found, waits
end

-- edges(def, name [, source]) -> the edges out of a step, in order: {
-- label (nil for next), target (a step name, "flow:PATH" or flow.END),
-- kind = "on" | "switch" | "default" | "next" | "closed" | "code" }. The
-- targets of functions are inferred (validate.infer), kind "code", via =
-- the kind of the field the function was given in.
function validate.edges(def, name, source)
  local st, E = def.steps[name], {}
  if not flow.is_step(st) then return E end
  local spec = type(st.spec) == "table" and st.spec or {}
  local function edge(label, t, kind)
    if type(t) == "function" then
      for _, x in ipairs((validate.infer(t, def, source))) do
        E[#E + 1] = { label = label, target = x, kind = "code", via = kind }
      end
    elseif t == nil or t == END then
      E[#E + 1] = { label = label, target = END, kind = kind }
    elseif type(t) == "string" then
      E[#E + 1] = { label = label, target = t, kind = kind }
    end
  end
  if st.kind == "api" then
    local L = labels(st)
    for _, k in ipairs(L.keys) do
      if type(k) == "string" then edge(k, spec.on[k], L.switch[k] and "switch" or "on") end
    end
    local defaults = type(def.defaults) == "table" and def.defaults or {}
    for _, l in ipairs(DEFAULT_LABELS) do
      if type(spec.on) == "table" and spec.on[l] == nil and defaults[l] ~= nil then
        edge(l, defaults[l], "default")
      end
    end
  elseif st.kind == "code" then
    for _, x in ipairs((validate.infer(st.fn, def, source))) do
      E[#E + 1] = { target = x, kind = "code" }
    end
  else
    edge(nil, spec.next, "next")
    if st.kind == "ask" and spec.closed ~= nil then edge("closed", spec.closed, "closed") end
  end
  return E
end

-- ---- validation ----

local NONE = setmetatable({}, { __newindex = function() error("read-only", 2) end })

-- The keys of t not in allowed, sorted.
local function unknown_keys(t, allowed)
  local bad
  for k in pairs(t) do
    if not allowed[k] then
      bad = bad or {}
      bad[#bad + 1] = k
    end
  end
  if not bad then return NONE end
  table.sort(bad, function(a, b) return tostring(a) < tostring(b) end)
  return bad
end

local STRING, KEY, NUMBER = { string = true, number = true }, { string = true }, { number = true }


-- problems(def [, opts]) -> an array of problems { file, line, step, msg,
-- warning }, every one, in the order of the steps' names. opts:
--   integrations, header_conflict, hint   as nodespec.problems (the
--                    integrations are checked only when given)
--   flow_target(path, target)   -> a message when the file of a "flow:"
--                    target cannot be used (else nil); absent: not checked
--   warnings         also the warnings: unreachable steps, cycles that
--                    would spin; source(file) gives a file's text, to read
--                    the targets of code steps
function validate.problems(def, opts)
  opts = opts or {}
  local P, seen = {}, {}
  local function add(name, st, msg, warning, whole)
    local p = { file = st and st.file or def.file, line = st and st.line or (not st and def.line) or nil,
                step = name, msg = msg, warning = warning, whole = whole }
    local key = flow.format(p)
    if not seen[key] then
      seen[key] = true
      P[#P + 1] = p
    end
  end
  local spec = def.spec
  if def.bad then add(nil, nil, def.bad) end
  for _, k in ipairs(unknown_keys(spec, DEFINE_FIELDS)) do
    add(nil, nil, ("unknown field '%s'"):format(tostring(k)))
  end
  if spec.name ~= nil and type(spec.name) ~= "string" then
    add(nil, nil, ("name: expected a string, got %s"):format(type(spec.name)))
  end
  local flow_checked = {}
  -- checks a target; what (and label) name where it was given
  local function target(name, st, t, what, label)
    if t == nil or t == END or type(t) == "function" then return end
    if type(t) ~= "string" then
      if label then what = ('%s["%s"]'):format(what, tostring(label)) end
      add(name, st, ('%s: expected a step name, "flow:PATH" or flow.END, got %s'):format(what, type(t)))
      return
    end
    if def.steps[t] ~= nil then return end
    local path = t:match("^flow:(.*)$")
    if path == "" then
      if label then what = ('%s["%s"]'):format(what, tostring(label)) end
      add(name, st, ('%s: "flow:" needs a file, like "flow:other.lua"'):format(what))
    elseif path then
      if opts.flow_target then
        local file = flow.resolve(st and st.file or def.file, path)
        if flow_checked[file] == nil then flow_checked[file] = opts.flow_target(file, t) or false end
        if flow_checked[file] then add(name, st, flow_checked[file]) end
      end
    elseif name then
      add(name, st, ('unknown target "%s"'):format(t))
    else
      add(nil, nil, ('%s["%s"]: unknown target "%s"'):format(what, tostring(label), t))
    end
  end

  -- steps and start
  if spec.steps == nil then
    add(nil, nil, "steps is required: a table of step name -> step")
  elseif type(spec.steps) ~= "table" then
    add(nil, nil, ("steps: expected a table of step name -> step, got %s"):format(type(spec.steps)))
  else
    for k in pairs(spec.steps) do
      if type(k) ~= "string" then
        add(nil, nil, ("steps: names are strings, got %s %s"):format(type(k), tostring(k)))
      elseif k:match("^flow:") then
        add(k, def.steps[k], 'a step name cannot start with "flow:"')
      end
    end
  end
  if def.start == nil then
    add(nil, nil, "start is required: the name of the first step")
  elseif type(def.start) ~= "string" then
    add(nil, nil, ("start: expected a step name, got %s"):format(type(def.start)))
  elseif type(spec.steps) == "table" and def.steps[def.start] == nil then
    add(nil, nil, ('start: unknown step "%s"'):format(def.start))
  end

  -- defaults
  local defaults = def.defaults
  if defaults ~= nil and type(defaults) ~= "table" then
    add(nil, nil, ("defaults: expected a table of default label -> target, got %s"):format(type(defaults)))
    defaults = nil
  end
  if defaults then
    for _, k in ipairs(unknown_keys(defaults, nodespec.DEFAULT)) do
      if nodespec.result_kind(k) == "upper" then
        add(nil, nil, "defaults: " .. nodespec.lower_case_problem(k))
      else
        add(nil, nil, ('defaults: only other, error, timeout and max-connection have defaults, got "%s"')
          :format(tostring(k)))
      end
    end
    for _, l in ipairs(DEFAULT_LABELS) do target(nil, nil, defaults[l], "defaults", l) end
  end
  defaults = defaults or {}

  -- each step
  local function check_value(name, st, spec_, field, types, desc, required)
    local v = spec_[field]
    if v == nil then
      if required then add(name, st, ("%s is required"):format(field)) end
    elseif type(v) ~= "function" and not types[type(v)] then
      add(name, st, ("%s: expected %s or a function of the session, got %s"):format(field, desc, type(v)))
    end
  end
  local node_opts
  for _, name in ipairs(def.names) do
    local st = def.steps[name]
    if not flow.is_step(st) then
      add(name, { file = def.file, line = def.line },
        ("expected flow.api{}, flow.ask{}, flow.say{}, flow.sleep{} or a function, got %s")
        :format(type(st)))
    elseif st.kind ~= "code" then
      local s = st.spec
      if type(s) ~= "table" then
        add(name, st, ("flow.%s: expected a table, got %s"):format(st.kind, type(s)))
        s = {}
      end
      for _, k in ipairs(unknown_keys(s, FIELDS[st.kind])) do
        if k == "results" and st.kind == "api" then
          add(name, st, "results: a step declares its results as the keys of on")
        else
          add(name, st, ("unknown field '%s'"):format(tostring(k)))
        end
      end
      if st.kind ~= "api" then target(name, st, s.next, "next") end
      if st.kind == "say" then
        check_value(name, st, s, "text", STRING, "a string", true)
      elseif st.kind == "ask" then
        check_value(name, st, s, "prompt", STRING, "a string", false)
        check_value(name, st, s, "save", KEY, "a session key (a string)", false)
        target(name, st, s.closed, "closed")
      elseif st.kind == "sleep" then
        check_value(name, st, s, "ms", NUMBER, "a number of milliseconds", true)
      else                                -- api
        local L = labels(st)
        for _, msg in ipairs(L.problems) do add(name, st, msg) end
        check_value(name, st, s, "save", KEY, "a session key (a string)", false)
        if s.switch ~= nil and type(s.switch) ~= "function" then
          add(name, st, ("switch: expected a function of the response, got %s"):format(type(s.switch)))
        elseif s.switch ~= nil and next(L.switch) == nil and type(s.on) == "table" then
          add(name, st, "switch: on has no label for it (its keys are all result names)", true)
        end
        if s.pages ~= nil then          -- a paged step (README: Pagination)
          for _, msg in ipairs(nodespec.pages_problems(s.pages)) do add(name, st, msg) end
        end
        if s.each ~= nil and type(s.each) ~= "function" then
          add(name, st, ("each: expected a function of a page's response, got %s"):format(type(s.each)))
        elseif s.each ~= nil and s.pages == nil then
          add(name, st, "each: a step without pages has no pages to go through (add pages = {...})")
        end
        if type(s.on) == "table" then
          for _, k in ipairs(L.keys) do
            target(name, st, s.on[k], "on", k)
          end
          for _, l in ipairs(DEFAULT_LABELS) do
            if s.on[l] == nil and defaults[l] == nil then
              add(name, st, ('default label "%s" is not routed (add it to on or to defaults)'):format(l))
            end
          end
        end
        node_opts = node_opts or {
          no_results = true, no_fields = true, integrations = opts.integrations,
          header_conflict = opts.header_conflict, hint = opts.hint,
        }
        for _, msg in ipairs((nodespec.problems(s, node_opts))) do
          add(name, st, msg)
        end
      end
    end
  end
  if opts.warnings then validate.warnings(def, opts.source, add) end
  local errors, warnings = {}, {}
  for _, p in ipairs(P) do
    if p.warning then warnings[#warnings + 1] = p else errors[#errors + 1] = p end
  end
  for _, p in ipairs(warnings) do errors[#errors + 1] = p end
  return errors
end

-- ---- cycles a session would spin in ----

-- Does a session wait before it takes edge e out of step st? After an ask
-- answered or a sleep, yes; not through an ask's `closed` (once the user
-- has left, ask returns nil at once, every time); after code that calls ask
-- or sleep, yes.
function validate.waits(def, st, e, source)
  if not flow.is_step(st) then return true end
  if st.kind == "sleep" then return true end
  if st.kind == "ask" then return (e.via or e.kind) ~= "closed" end
  if st.kind == "code" then return select(2, validate.infer(st.fn, def, source)) end
  return st.kind == "api"               -- a call waits for its answer (pagination loops)
end

-- The strongly connected components with a cycle (Tarjan) of the graph of
-- nodes (an array: the order of the search) and out[v] = { { from = v, to
-- = w, ... }, ... }: an array of sets of nodes.
local function components(nodes, out)
  local index, low, onstack, stack, n, found = {}, {}, {}, {}, 0, {}
  local function connect(v)
    n = n + 1
    index[v], low[v] = n, n
    stack[#stack + 1] = v
    onstack[v] = true
    for _, e in ipairs(out[v]) do
      local w = e.to
      if not index[w] then
        connect(w)
        low[v] = math.min(low[v], low[w])
      elseif onstack[w] then
        low[v] = math.min(low[v], index[w])
      end
    end
    if low[v] == index[v] then
      local comp, size = {}, 0
      repeat
        local w = table.remove(stack)
        onstack[w] = nil
        comp[w] = true
        size = size + 1
      until w == v
      local cycle = size > 1
      for _, e in ipairs(out[v]) do if e.to == v then cycle = true end end
      if cycle then found[#found + 1] = comp end
    end
  end
  for _, v in ipairs(nodes) do
    if not index[v] then connect(v) end
  end
  return found
end

-- The shortest path of edges from a to b (a cycle when a == b) inside comp.
local function path_in(comp, out, a, b)
  local prev, q, j = { [a] = false }, { a }, 1
  while q[j] do
    local v = q[j]
    j = j + 1
    for _, e in ipairs(out[v]) do
      if e.to == b then
        local p, at = { e }, v
        while at ~= a do
          table.insert(p, 1, prev[at])
          at = prev[at].from
        end
        return p
      end
      if comp[e.to] and prev[e.to] == nil then
        prev[e.to] = e
        q[#q + 1] = e.to
      end
    end
  end
end

-- The warning for the cycle of edges p: its steps as name(node) says them.
local function spin_message(p, name)
  local words = { name(p[1].from) }
  local closed
  for _, e in ipairs(p) do
    words[#words + 1] = name(e.to)
    if e.closed and not closed then closed = name(e.from) end
  end
  local s = "cycle " .. table.concat(words, " -> ")
  if closed then
    return s .. (" waits for nothing once the user has left (ask %s goes on through closed at once):"
      .. " it would spin"):format(closed)
  end
  return s .. " has no ask, sleep or api step: it would spin"
end

-- The edges a session takes without waiting out of the steps of def:
-- out[name] = { { from, to, closed }, ... }. to(name, target) gives the node
-- of a target, or nil for none (default: the steps of def).
local function spin_edges(def, source, to)
  local out = {}
  for _, name in ipairs(def.names) do
    local st, list = def.steps[name], {}
    out[name] = list
    for _, e in ipairs(validate.edges(def, name, source)) do
      local w = type(e.target) == "string" and to(name, e.target)
      if w and not validate.waits(def, st, e, source) then
        list[#list + 1] = { from = name, to = w, closed = (e.via or e.kind) == "closed" }
      end
    end
  end
  return out
end

-- ---- warnings ----

-- Adds the warnings of def through add(name, step, msg, true, whole):
-- steps that cannot be reached from start, and cycles without an ask or a
-- sleep that waits (a session in one would spin, calling APIs as fast as it
-- can).
function validate.warnings(def, source, add)
  local function step(_, t) return def.steps[t] ~= nil and t or nil end
  -- unreachable
  local reached, queue = {}, {}
  if type(def.start) == "string" and def.steps[def.start] ~= nil then
    reached[def.start] = true
    queue[1] = def.start
  end
  local i = 1
  while queue[i] do
    for _, e in ipairs(validate.edges(def, queue[i], source)) do
      local t = type(e.target) == "string" and step(nil, e.target)
      if t and not reached[t] then reached[t] = true; queue[#queue + 1] = t end
    end
    i = i + 1
  end
  if next(reached) then
    for _, name in ipairs(def.names) do
      if not reached[name] then
        local st = def.steps[name]
        add(name, flow.is_step(st) and st or nil, ('step "%s" is unreachable'):format(name), true, true)
      end
    end
  end
  -- cycles, each from its first step (by name) back to it
  local out = spin_edges(def, source, step)
  local function quoted(name) return ('"%s"'):format(name) end
  for _, comp in ipairs(components(def.names, out)) do
    local first
    for w in pairs(comp) do
      if not first or w < first then first = w end
    end
    add(first, def.steps[first], spin_message(path_in(comp, out, first, first), quoted), true, true)
  end
end

-- Cycles that cross files through "flow:" targets and have no ask, sleep
-- or api step that waits (those inside one file are warnings of validate.warnings).
-- files: the paths of the flows, in order; defs[path]: their definitions,
-- keyed by flow.normalize(path). Returns problems as validate.problems.
function validate.spin_across(files, defs, source)
  local SEP = "\0"
  local nodes, out, where = {}, {}, {}
  local function key(file, step) return file .. SEP .. step end
  for _, f in ipairs(files) do
    local def = defs[f]
    local function to(name, t)
      if def.steps[t] ~= nil then return key(f, t) end
      local path = t:match("^flow:(.+)$")
      if not path then return nil end
      local st = def.steps[name]
      local other = flow.resolve(flow.is_step(st) and st.file or def.file, path)
      local d = defs[other]
      if d and type(d.start) == "string" and d.steps[d.start] ~= nil then return key(other, d.start) end
    end
    for name, list in pairs(spin_edges(def, source, to)) do
      local v = key(f, name)
      for _, e in ipairs(list) do e.from = v end
      out[v] = list
    end
    for _, name in ipairs(def.names) do
      local v = key(f, name)
      nodes[#nodes + 1] = v
      where[v] = { def = def, step = name }
    end
  end
  local function file_of(v) return v:match("^(.-)" .. SEP) end
  local function name(v)
    local w = where[v]
    return ('%s "%s"'):format(w.def.file or file_of(v), w.step)
  end
  local P = {}
  for _, comp in ipairs(components(nodes, out)) do
    -- the first edge (in the order of the nodes) from one file to another
    local cross
    for _, v in ipairs(nodes) do
      if comp[v] then
        for _, e in ipairs(out[v]) do
          if comp[e.to] and file_of(e.to) ~= file_of(v) then cross = e break end
        end
      end
      if cross then break end
    end
    if cross then
      local p = path_in(comp, out, cross.to, cross.from)
      table.insert(p, 1, cross)
      local w = where[cross.from]
      local st = w.def.steps[w.step]
      P[#P + 1] = { file = flow.is_step(st) and st.file or w.def.file, line = flow.is_step(st) and st.line or nil,
                    step = w.step, msg = spin_message(p, name), warning = true, whole = true }
    end
  end
  return P
end

return validate
