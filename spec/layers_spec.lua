-- The structure of the code, from the linker's view: scripts/layers.lua
-- says which object file calls which (an undefined symbol of one that
-- another defines), and each part of the tree may only call along the
-- edges listed here, with no circle. The objects are those the Makefile
-- builds (its `CLI = ...` list, ...), so a stale object left in build/
-- counts for nothing. Each part is one describe: its Makefile list, its
-- build folder, its allowed edges.

local root = debug.getinfo(1, "S").source:sub(2):gsub("/?spec/layers_spec%.lua$", "")
if root == "" then root = "." end

-- The names in the Makefile's `VAR = a b \ c` line (continuations joined).
local function make_list(var)
  local f = assert(io.open(root .. "/Makefile"))
  local text = f:read("a"):gsub("\\\n", " ")
  f:close()
  local value = assert(text:match("\n" .. var .. " =([^\n]*)"), "no " .. var .. " = in the Makefile")
  local names = {}
  for name in value:gmatch("%S+") do names[#names + 1] = name end
  return names
end

-- scripts/layers.lua over the objects: its edges { "a -> b" = "syms" },
-- its circles { "a b c" } and its exit code.
local function layers(objs)
  local cmd = "cd '" .. root .. "' && lua5.4 scripts/layers.lua " .. table.concat(objs, " ")
  local p = assert(io.popen(cmd))
  local r = { edges = {}, circles = {} }
  for line in p:lines() do
    local from, to, syms = line:match("^(%S+) %-> (%S+): (.*)$")
    if from then r.edges[from .. " -> " .. to] = syms
    else
      local circle = line:match("^circle: (.*)$")
      if circle then r.circles[#r.circles + 1] = circle end
    end
  end
  local _, _, code = p:close()
  r.code = code
  return r
end

-- The edges of r not in allowed (a set of "a -> b"), with their symbols.
local function not_allowed(r, allowed)
  local bad = {}
  for edge, syms in pairs(r.edges) do
    if not allowed[edge] then bad[#bad + 1] = edge .. ": " .. syms end
  end
  table.sort(bad)
  return bad
end

-- { "a -> b c", ... } as a set of "a -> b" and "a -> c".
local function edges(list)
  local set = {}
  for _, spec in ipairs(list) do
    local from, tos = spec:match("^(%S+) %-> (.*)$")
    for to in tos:gmatch("%S+") do set[from .. " -> " .. to] = true end
  end
  return set
end

describe("the flowrun command (runtime/cli)", function()
  local objs = {}
  for _, name in ipairs(make_list("CLI")) do objs[#objs + 1] = "build/cli/" .. name .. ".o" end
  local shared = "cli/common cli/limits"
  -- main calls each command's main; every command calls only the shared
  -- files and its own; inside the REPL main -> sessions -> term one way
  local allowed = edges{
    "cli/main -> cli/run cli/jsonl cli/serve cli/sessions cli/test cli/repl/main cli/mock/server " .. shared,
    "cli/common -> cli/limits",
    "cli/run -> " .. shared,
    "cli/jsonl -> " .. shared,
    "cli/serve -> " .. shared,
    "cli/sessions -> " .. shared,
    "cli/repl/main -> cli/repl/sessions cli/repl/term " .. shared,
    "cli/repl/sessions -> cli/repl/term " .. shared,
    "cli/repl/term -> " .. shared,
    "cli/mock/server -> cli/mock/routes " .. shared,
    "cli/mock/routes -> " .. shared,
  }

  it("is built: every object the Makefile lists is there", function()
    for _, obj in ipairs(objs) do
      local f = io.open(root .. "/" .. obj)
      assert.is_truthy(f, obj .. " is missing: make all first")
      f:close()
    end
  end)

  it("no command file reaches into another: only the allowed edges", function()
    assert.are.same({}, not_allowed(layers(objs), allowed))
  end)

  it("has no circle", function()
    local r = layers(objs)
    assert.are.same({}, r.circles)
    assert.are.equal(0, r.code)
  end)

  it("main.c is dispatch only: it calls each command's main", function()
    local r = layers(objs)
    assert.are.equal("flowrun_run_main", r.edges["cli/main -> cli/run"])
    assert.are.equal("flowrun_host_main", r.edges["cli/main -> cli/jsonl"])
    assert.are.equal("flowrun_serve_main", r.edges["cli/main -> cli/serve"])
    assert.are.equal("flowrun_repl_main", r.edges["cli/main -> cli/repl/main"])
    assert.are.equal("flowrun_mock_main", r.edges["cli/main -> cli/mock/server"])
  end)
end)

describe("the library (runtime/lib) and the Lua module (runtime/module)", function()
  -- bottom to top: a file calls only files of the layers below its own
  local order = {
    { "lib/json", "lib/secrets", "lib/rules", "lib/pool", "lib/cookies", "lib/store_sqlite", "lib/store_pg", "lib/blocks",
      "modules" },                                             -- leaves
    { "lib/base", "lib/labels", "lib/query", "lib/freeze" },   -- errors, labels, queries, shared tables
    { "lib/loop", "lib/quota", "lib/auth" },                  -- the loop; a session's limits; OAuth2 tokens
    { "lib/integrations", "lib/wire" },                        -- integrations; what they ask of the wire
    { "lib/request", "lib/response" },                         -- a spec to a request; a response table
    { "lib/call", "lib/snapshot" },                            -- a call's life; values as bytes
    { "lib/inspect", "lib/journal" },                          -- flowrun.runtime for tools; a store's journals
    { "lib/session" },                                         -- sessions and the flow primitives
    { "lib/pages" },                                           -- api_pages: api_node over pages
    { "lib/sandbox" },                                         -- what flows see
    { "lib/runtime" },                                         -- the runtime: its parts put together
    { "module/flowrun_lua" },                                  -- the Lua module, a client of them all
  }
  local layer = {}
  for i, names in ipairs(order) do
    for _, n in ipairs(names) do layer[n] = i end
  end
  local objs = { "build/modules.o", "build/module/flowrun_lua.o" }
  for _, name in ipairs(make_list("LIB")) do objs[#objs + 1] = "build/lib/" .. name .. ".o" end

  it("places every file the Makefile builds in a layer", function()
    local missing = {}
    for _, name in ipairs(make_list("LIB")) do
      if not layer["lib/" .. name] then missing[#missing + 1] = name end
    end
    assert.are.same({}, missing)
  end)

  it("calls only downward: no circle among the library's files", function()
    local r = layers(objs)
    local up = {}
    for edge, syms in pairs(r.edges) do
      local from, to = edge:match("^(%S+) %-> (%S+)$")
      if not (layer[from] and layer[to] and layer[to] < layer[from]) then up[#up + 1] = edge .. ": " .. syms end
    end
    table.sort(up)
    assert.are.same({}, up)
    assert.are.same({}, r.circles)
    assert.are.equal(0, r.code)
  end)
end)
