-- The editor annotations of lua/meta/ (LuaLS `---@meta` files) against what
-- flowrun really has: the globals a running flow sees, the api_node spec
-- fields the validator accepts, the fields of real responses, the step
-- kinds and fields flow.define accepts, and the Lua module's functions.
-- Each check fails naming what is missing (or annotated but not real).
-- lua-language-server itself is not needed: the files are read as text.
local helper = require "spec.helper"

local META = helper.root .. "/lua/meta"
local FILES = { "flow_globals.lua", "flowrun/flow.lua", "flowrun.lua" }

-- What the meta files annotate: classes (name -> set of field names),
-- globals (set), members ("table.name" -> true for functions and values
-- assigned to a table), aliases (name -> set of the quoted values listed).
local function read_meta()
  local A = { classes = {}, globals = {}, members = {}, aliases = {} }
  for _, f in ipairs(FILES) do
    local path = META .. "/" .. f
    local text = assert(helper.read(path), "cannot read " .. path)
    local chunk, err = loadfile(path, "t", {})
    assert(chunk, err)                  -- valid Lua
    local class, alias
    for line in text:gmatch("[^\n]*") do
      local c = line:match("^%-%-%-@class ([%w_.]+)")
      local a = line:match("^%-%-%-@alias ([%w_.]+)")
      if c then
        class, alias = c, nil
        A.classes[c] = A.classes[c] or {}
      elseif a then
        alias, class = a, nil
        A.aliases[a] = A.aliases[a] or {}
      elseif line:match("^%-%-%-") then
        local field = line:match("^%-%-%-@field ([%w_]+)%??%s")
        if field and class then A.classes[class][field] = true end
        local value = line:match('^%-%-%-| "([^"]*)"')
        if value and alias then A.aliases[alias][value] = true end
      elseif line:match("%S") then      -- code ends the block; a blank line does not
        class, alias = nil, nil
      end
      local g = line:match("^function ([%w_]+)%(") or line:match("^([%w_]+) = ")
      if g then A.globals[g] = true end
      local t, m = line:match("^function ([%w_]+)[.:]([%w_]+)%(")
      if not t then t, m = line:match("^([%w_]+)%.([%w_]+) = ") end
      if t then A.members[t .. "." .. m] = true end
    end
  end
  return A
end

-- The names annotated for table `var` (its functions and assignments) and
-- class `class` (its fields), as a set.
local function members(A, var, class)
  local set = {}
  for k in pairs(A.members) do
    local name = k:match("^" .. var .. "%.(.*)$")
    if name then set[name] = true end
  end
  for k in pairs(A.classes[class] or {}) do set[k] = true end
  return set
end

local function sorted(set)
  local t = {}
  for k in pairs(set) do t[#t + 1] = k end
  table.sort(t)
  return t
end

-- Problems comparing the real names (a set) with the annotated ones:
-- "WHAT NAME is not annotated (WHERE)" and "WHAT NAME is annotated but ...".
local function compare(real, annotated, what, where, out)
  for _, k in ipairs(sorted(real)) do
    if not annotated[k] then out[#out + 1] = ("%s '%s' is not annotated (%s)"):format(what, k, where) end
  end
  for _, k in ipairs(sorted(annotated)) do
    if not real[k] then
      out[#out + 1] = ("%s '%s' is annotated (%s) but flowrun has no such thing"):format(what, k, where)
    end
  end
  return out
end

local function set_of(list)
  local s = {}
  for _, k in ipairs(list) do s[k] = true end
  return s
end

-- lua/flowrun's modules as plain Lua (their own copies, not the library's);
-- flowrun.runtime, written in C, is the module's (a runtime preloads it).
local function lua_module(name)
  local cache = {}
  local env = setmetatable({}, { __index = _G })
  function env.require(n)
    if n == "flowrun.runtime" then
      helper.runtime()
      return require(n)
    end
    if cache[n] == nil then
      cache[n] = assert(loadfile(helper.root .. "/lua/" .. n:gsub("%.", "/") .. ".lua", "t", env))()
    end
    return cache[n]
  end
  return env.require(name)
end

describe("the editor annotations (lua/meta)", function()
  local A
  setup(function() A = read_meta() end)
  teardown(helper.cleanup)

  it("annotate every global a flow sees that plain Lua does not have, and json, log and session", function()
    local d = helper.tmpdir()
    helper.write(d .. "/integrations.lua", "return {}")
    -- the flow's globals, the shared ones behind its own _G included
    -- (--allow debug reaches them; debug is plain Lua's anyway)
    local flow = helper.flow([[
      local function keys(t)
        local n = {}
        while t do
          for k in pairs(t) do n[#n + 1] = tostring(k) end
          local mt = debug.getmetatable(t)
          t = mt and type(mt.__index) == "table" and mt.__index or nil
        end
        table.sort(n)
        return table.concat(n, " ")
      end
      say("globals " .. keys(_G))
      say("json " .. keys(json))
      say("log " .. keys(log))
      say("session " .. keys(session))
    ]], d)
    local r = helper.cli({ args = { "run", "--allow", "debug", "-I", d .. "/integrations.lua", flow } })
    assert.are.equal(0, r.code, r.stderr)
    local seen = {}
    for line in r.stdout:gmatch("[^\n]+") do
      local what, names = line:match("^(%S+) ?(.*)$")
      seen[what] = {}
      for n in names:gmatch("%S+") do seen[what][n] = true end
    end
    local p = io.popen("lua5.4 -e 'for k in pairs(_G) do print(k) end'")
    local plain = {}
    for k in p:lines() do plain[k] = true end
    p:close()
    assert.is_true(plain.string and plain.io and true)
    local own = {}
    for k in pairs(seen.globals) do
      if not plain[k] then own[k] = true end
    end
    assert.is_true(own.api_node and own.session and true)   -- the walk found them
    local out = {}
    compare(own, A.globals, "flow global", "lua/meta/flow_globals.lua", out)
    compare(seen.json, members(A, "json", "flowrun.json"), "json field", "class flowrun.json", out)
    compare(seen.log, members(A, "log", "flowrun.log"), "log field", "class flowrun.log", out)
    local session = members(A, "session", "flowrun.Session")
    for k in pairs(seen.session) do
      if not session[k] then out[#out + 1] = ("session field '%s' is not annotated (class flowrun.Session)"):format(k) end
    end
    assert.are.same({}, out)
  end)

  it("annotate every api_node spec field the validator accepts, and the labels", function()
    local nodespec = lua_module("flowrun.nodespec")
    local out = compare(set_of(nodespec.FIELDS), A.classes["flowrun.ApiSpec"] or {},
      "api_node field", "class flowrun.ApiSpec", {})
    local labels = A.aliases["flowrun.Label"] or {}
    for _, l in ipairs(nodespec.DEFAULT_LABELS) do
      if not labels[l] then out[#out + 1] = ("label '%s' is not in alias flowrun.Label"):format(l) end
    end
    assert.are.same({}, out)
  end)

  it("annotate every field of real responses: a 200 with JSON, a body that is not JSON, an error", function()
    local mock = helper.mock({
      { path = "/v1/json", json = { a = 1 } },
      { path = "/v1/badjson", headers = { ["Content-Type"] = "application/json" }, body = "{nope" },
      { path = "/v1/cut", fault = "reset", body = helper.code('string.rep("x", 100000)') },
    })
    local rt = helper.runtime({ shop = { base_url = mock.url .. "/v1" } })
    local real, labels = {}, {}
    for _, path in ipairs { "/json", "/badjson", "/cut" } do
      local label, res = rt:api_node{ integration = "shop", path = path, results = { "200" } }
      labels[#labels + 1] = label
      for k in pairs(res) do real[k] = true end
    end
    assert.are.same({ "200", "200", "error" }, labels)
    assert.is_true(real.json and real.json_error and real.reason and true)
    assert.are.same({}, compare(real, A.classes["flowrun.Response"] or {},
      "response field", "class flowrun.Response", {}))
  end)

  it("annotate every step kind and step field flow.define accepts, and flow.define and flow.END", function()
    local validate = lua_module("flowrun.validate")
    local flow = lua_module("flowrun.flow")
    local out = {}
    local kinds = {}
    for kind, fields in pairs(validate.FIELDS) do
      kinds[kind] = true
      local class = "flowrun.flow." .. kind:sub(1, 1):upper() .. kind:sub(2) .. "Step"
      compare(fields, A.classes[class] or {}, "flow." .. kind .. " field", "class " .. class, out)
    end
    compare(validate.DEFINE_FIELDS, A.classes["flowrun.flow.Definition"] or {},
      "flow.define field", "class flowrun.flow.Definition", out)
    local public = { define = true, END = true }
    for kind in pairs(kinds) do public[kind] = true end
    for k in pairs(public) do
      assert(flow[k] ~= nil, "flowrun.flow has no " .. k)
    end
    compare(public, members(A, "flow", "flowrun.flow"), "flowrun.flow function", "lua/meta/flowrun/flow.lua", out)
    assert.are.same({}, out)
  end)

  it("annotate the Lua module: flowrun.new and every method of a runtime", function()
    local flowrun = helper.module()
    local rt = helper.runtime()
    local out = {}
    local fns = {}
    for k in pairs(flowrun) do fns[k] = true end
    compare(fns, members(A, "flowrun", "flowrun"), "flowrun function", "lua/meta/flowrun.lua", out)
    local methods = {}
    for k in pairs(debug.getmetatable(rt).__index) do methods[k] = true end
    compare(methods, members(A, "Runtime", "flowrun.Runtime"), "runtime method", "class flowrun.Runtime", out)
    assert.are.same({}, out)
  end)
end)
