-- flowrun.graph -- `flowrun graph FLOW.lua [--mermaid]`: a declarative flow
-- as a picture, in Graphviz DOT (the default) or as a Mermaid flowchart.
--
-- One node per step: api steps show their method and path, ask and say
-- steps their text (cut), code steps are diamonds whose edges go to the
-- step names written in their code. Edges carry the result labels; those
-- of the default labels (other, error, timeout, max-connection) and an
-- ask's `closed` are dashed. "flow:" targets and the end are nodes of
-- their own.

local flow = require "flowrun.flow"
local loader = require "flowrun.loader"
local validate = require "flowrun.validate"

local graph = { _VERSION = "flowrun.graph 0.1.0" }

local DEFAULT = require("flowrun.nodespec").DEFAULT
local END = flow.END
local CUT = 28                          -- characters of text shown

-- s cut to n characters (UTF-8 aware), with an ellipsis when it was longer.
local function cut(s, n)
  s = s:gsub("%s+", " ")
  local ok, len = pcall(utf8.len, s)
  if not ok or not len then return s:sub(1, n) end
  if len <= n then return s end
  return s:sub(1, utf8.offset(s, n) - 1):gsub("%s+$", "") .. "…"
end

-- The text lines that describe a step: its name, then what it does.
local function describe(def, name, st, igs)
  if not flow.is_step(st) then return { name, "?" } end
  local spec = type(st.spec) == "table" and st.spec or {}
  local function text(v)
    if type(v) == "function" then return "(computed)" end
    if v == nil then return "" end
    return '"' .. cut(tostring(v), CUT) .. '"'
  end
  if st.kind == "api" then
    local method, path = spec.method, spec.path
    if type(spec.endpoint) == "string" then
      local ig, ep = spec.endpoint:match("^([^.]*)%.(.*)$")
      local e = ig and igs and igs[ig] and igs[ig].endpoints and igs[ig].endpoints[ep]
      method = method or (e and e.method)
      path = path or (e and e.path) or spec.endpoint
    end
    if type(method) == "function" then method = "(computed)" end
    if type(path) == "function" then path = "(computed path)" end
    return { name, ("%s %s%s"):format(method or "GET", cut(tostring(path or ""), CUT + 12),
                                      spec.pages ~= nil and " (pages)" or "") }
  elseif st.kind == "say" then
    return { name, "say " .. text(spec.text) }
  elseif st.kind == "ask" then
    local t = { name, "ask " .. text(spec.prompt) }
    if spec.prompt == nil then t[2] = "ask" end
    return t
  elseif st.kind == "sleep" then
    local ms = spec.ms
    return { name, type(ms) == "number" and ("sleep %g ms"):format(ms) or "sleep (computed)" }
  end
  return { name, "(code)" }
end

-- The picture as data: nodes { id, kind, lines } and edges { from, to,
-- labels, style = "solid" | "dashed" } in a stable order. Ids are the step
-- names, the targets, and for the start and the end ids that are neither.
function graph.model(def, opts)
  opts = opts or {}
  local nodes, edges, ids = {}, {}, {}
  local function node(id, kind, lines)
    if not ids[id] then
      ids[id] = true
      nodes[#nodes + 1] = { id = id, kind = kind, lines = lines }
    end
  end
  -- steps breadth first from start (the picture reads in the order of a
  -- session), then those not reached, by name
  local order, seen, queue, i = {}, {}, {}, 1
  local function reach(from)
    queue[#queue + 1] = from
    while queue[i] do
      local name = queue[i]
      i = i + 1
      if type(name) == "string" and def.steps[name] ~= nil and not seen[name] then
        seen[name] = true
        order[#order + 1] = name
        for _, e in ipairs(validate.edges(def, name, opts.source)) do
          if type(e.target) == "string" then queue[#queue + 1] = e.target end
        end
      end
    end
  end
  reach(def.start)
  for _, name in ipairs(def.names) do reach(name) end
  -- the ids of the start and the end: "(start)" and "(end)" unless a step
  -- or a target has that name
  local taken = {}
  for _, name in ipairs(order) do
    taken[name] = true
    for _, e in ipairs(validate.edges(def, name, opts.source)) do
      if type(e.target) == "string" then taken[e.target] = true end
    end
  end
  local function free(id)
    local candidate, k = id, 1
    while taken[candidate] do
      k = k + 1
      candidate = ("%s_%d"):format(id, k)
    end
    taken[candidate] = true
    return candidate
  end
  local start_id, end_id = free("(start)"), free("(end)")
  node(start_id, "start", { "start" })
  if type(def.start) == "string" then
    edges[#edges + 1] = { from = start_id, to = def.start, labels = {}, style = "solid" }
  end
  local tail = {}
  for _, name in ipairs(order) do
    local st = def.steps[name]
    node(name, flow.is_step(st) and st.kind or "code", describe(def, name, st, opts.integrations))
    local merged = {}
    for _, e in ipairs(validate.edges(def, name, opts.source)) do
      local to = e.target == END and end_id or e.target
      local style = (DEFAULT[e.label] or (e.via or e.kind) == "closed") and "dashed" or "solid"
      if e.target == END then
        tail.has_end = true
      elseif to:match("^flow:") then
        tail[#tail + 1] = { id = to, kind = "flow", lines = { to } }
      elseif def.steps[to] == nil then
        tail[#tail + 1] = { id = to, kind = "unknown", lines = { to, "(unknown step)" } }
      end
      local key = to .. "\0" .. style
      local edge = merged[key]
      if not edge then
        edge = { from = name, to = to, labels = {}, style = style }
        merged[key] = edge
        edges[#edges + 1] = edge
      end
      if e.label then edge.labels[#edge.labels + 1] = e.label end
    end
  end
  for _, n in ipairs(tail) do node(n.id, n.kind, n.lines) end
  if tail.has_end then node(end_id, "end", { "end" }) end
  return { name = def.name, nodes = nodes, edges = edges }
end

-- ---- Graphviz ----

local function dot_string(s)
  return '"' .. s:gsub('[\\"]', "\\%0"):gsub("\n", "\\n") .. '"'
end

local DOT_NODE = {
  start = 'shape=circle, style=filled, fillcolor=black, label="", width=0.2',
  ["end"] = 'shape=doublecircle, style=filled, fillcolor=black, label="", width=0.12',
  api = 'shape=box, style="filled", fillcolor="#dbeafe"',
  say = 'shape=box, style="rounded,filled", fillcolor="#dcfce7"',
  ask = 'shape=box, style="rounded,filled", fillcolor="#fef3c7"',
  sleep = 'shape=box, style="rounded,filled", fillcolor="#f3f4f6"',
  code = 'shape=diamond, style="filled", fillcolor="#f3e8ff"',
  flow = 'shape=component, style="filled", fillcolor="#e5e7eb"',
  unknown = 'shape=box, style="dashed", color="#dc2626", fontcolor="#dc2626"',
}

function graph.dot(m)
  local out = {
    ("digraph %s {"):format(dot_string(m.name)),
    '  graph [rankdir=TB, fontname="Helvetica"];',
    '  node [fontname="Helvetica", fontsize=11];',
    '  edge [fontname="Helvetica", fontsize=9];',
  }
  for _, n in ipairs(m.nodes) do
    local attrs = DOT_NODE[n.kind] or DOT_NODE.code
    if n.kind ~= "start" and n.kind ~= "end" then
      attrs = attrs .. ", label=" .. dot_string(table.concat(n.lines, "\n"))
    end
    out[#out + 1] = ("  %s [%s];"):format(dot_string(n.id), attrs)
  end
  for _, e in ipairs(m.edges) do
    local attrs = {}
    if #e.labels > 0 then attrs[#attrs + 1] = "label=" .. dot_string(table.concat(e.labels, ", ")) end
    if e.style ~= "solid" then attrs[#attrs + 1] = "style=" .. e.style end
    out[#out + 1] = ("  %s -> %s%s;"):format(dot_string(e.from), dot_string(e.to),
      #attrs > 0 and " [" .. table.concat(attrs, ", ") .. "]" or "")
  end
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

-- ---- Mermaid ----

local function mermaid_text(s)
  return '"' .. s:gsub("&", "#amp;"):gsub('"', "#quot;"):gsub("<", "#lt;"):gsub(">", "#gt;") .. '"'
end

local MERMAID_SHAPE = {          -- opening and closing brackets
  start = { "((", "))" }, ["end"] = { "(((", ")))" },
  api = { "[", "]" }, say = { "(", ")" }, ask = { "[/", "/]" }, sleep = { "([", "])" },
  code = { "{", "}" }, flow = { "[[", "]]" }, unknown = { "[", "]" },
}

function graph.mermaid(m)
  local ids, used, out, kinds = {}, {}, { "flowchart TD" }, {}
  for _, n in ipairs(m.nodes) do kinds[n.id] = n.kind end
  local function id(n)
    if not ids[n] then
      local base = kinds[n] == "start" and "flow_start" or kinds[n] == "end" and "flow_end"
        or "s_" .. n:gsub("[^%w_]", "_")
      local candidate, k = base, 1
      while used[candidate] do
        k = k + 1
        candidate = base .. "_" .. k
      end
      used[candidate] = true
      ids[n] = candidate
    end
    return ids[n]
  end
  for _, n in ipairs(m.nodes) do
    local shape = MERMAID_SHAPE[n.kind] or MERMAID_SHAPE.code
    local lines = {}
    for _, l in ipairs(n.lines) do lines[#lines + 1] = mermaid_text(l):sub(2, -2) end
    out[#out + 1] = ('  %s%s"%s"%s'):format(id(n.id), shape[1], table.concat(lines, "<br/>"), shape[2])
  end
  for _, e in ipairs(m.edges) do
    local arrow = e.style == "solid" and "-->" or "-.->"
    local label = #e.labels > 0 and "|" .. mermaid_text(table.concat(e.labels, ", ")) .. "|" or ""
    out[#out + 1] = ("  %s %s%s %s"):format(id(e.from), arrow, label, id(e.to))
  end
  out[#out + 1] = "  classDef api fill:#dbeafe,stroke:#1e3a8a"
  out[#out + 1] = "  classDef say fill:#dcfce7,stroke:#14532d"
  out[#out + 1] = "  classDef ask fill:#fef3c7,stroke:#78350f"
  local by_class = {}
  for _, n in ipairs(m.nodes) do
    if n.kind == "api" or n.kind == "say" or n.kind == "ask" then
      by_class[n.kind] = by_class[n.kind] or {}
      table.insert(by_class[n.kind], id(n.id))
    end
  end
  for _, k in ipairs({ "api", "say", "ask" }) do
    if by_class[k] then out[#out + 1] = ("  class %s %s"):format(table.concat(by_class[k], ","), k) end
  end
  return table.concat(out, "\n") .. "\n"
end

-- ---- the command ----

local USAGE = "usage: flowrun graph [-I FILE] [--mermaid] FLOW.lua\n"

function graph.main(args)
  local path, mermaid
  for _, a in ipairs(args) do
    if a == "--mermaid" then mermaid = true
    elseif a == "--dot" then mermaid = false
    elseif a == "-h" or a == "--help" then io.write(USAGE) return 0
    elseif a:sub(1, 1) == "-" then
      io.stderr:write(("flowrun graph: unknown option '%s'\n%s"):format(a, USAGE))
      return 2
    elseif path then
      io.stderr:write("flowrun graph: one flow file at a time\n" .. USAGE)
      return 2
    else path = a end
  end
  if not path then
    io.stderr:write("flowrun graph: no flow file given\n" .. USAGE)
    return 2
  end
  local r = loader.load(path)
  if r.kind == "unreadable" then
    io.stderr:write("flowrun graph: cannot read ", r.msg, "\n")
    return 2
  elseif r.kind == "error" then
    io.stderr:write("flowrun graph: ", r.msg, "\n")
    return 2
  elseif r.kind == "script" then
    io.stderr:write(("flowrun graph: %s does not define a flow (graph draws a file that returns "
      .. "flow.define{...}; flowrun check checks scripts)\n"):format(path))
    return 2
  end
  local igs = require("flowrun.runtime").integrations()
  local text = r.source
  local m = graph.model(r.def, {
    integrations = igs,
    source = function(file)
      if file == path then return text end
      local f = io.open(file, "rb")
      local s = f and f:read("a")
      if f then f:close() end
      return s
    end,
  })
  io.write(mermaid and graph.mermaid(m) or graph.dot(m))
  return 0
end

return graph
