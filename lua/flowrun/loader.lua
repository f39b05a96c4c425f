-- flowrun.loader -- a flow file's definition, without running a session.
--
-- `flowrun check`, `flowrun graph` and the check of "flow:PATH" targets
-- need what a flow file returns. The file's top level runs in a sandbox:
-- the safe part of the standard library, `json`, and flow globals that stop
-- it (an imperative script does its work through them), with a budget of
-- instructions. Its `require "flowrun.flow"` gets a flow module whose
-- define does not raise, so that every problem can be listed; its require
-- gives the modules the sandbox has and Lua modules (run in the sandbox
-- too), and refuses the others (io, debug, package, C modules), so that
-- checking a flow never touches a file or waits for a user. The sandbox
-- is the one flows have: the runtime's flow globals, and its allow-lists
-- (runtime/lib/rules.c, through require("flowrun.runtime").rules()).

local flow = require "flowrun.flow"
local lex = require "flowrun.lex"
local runtime = require "flowrun.runtime"

local loader = { _VERSION = "flowrun.loader 0.1.0" }

local BUDGET = 50                       -- millions of instructions
local STOP = setmetatable({}, { __tostring = function() return "a flow global was called" end })

local ALLOWED = runtime.rules().sandbox.flows   -- primitives, libs, os

local checking = setmetatable({ define = flow.build }, { __index = flow })

local function noop() end

-- What `require` gives the sandbox besides Lua modules: the modules it has
-- as globals (os being the part of it listed in the sandbox).
local SAFE_MODULES = { "os", "json" }
for i, k in ipairs(ALLOWED.libs) do table.insert(SAFE_MODULES, i, k) end

-- "os.time, os.clock, os.date and os.difftime"; "os.time/clock/date/difftime"
local os_names, os_short = {}, {}
for i, k in ipairs(ALLOWED.os) do os_names[i], os_short[i] = "os." .. k, k end
local OS_TEXT = table.concat(os_names, ", ", 1, #os_names - 1) .. " and " .. os_names[#os_names]

-- The sandbox's os: what it lacks is refused where the flow reaches for it.
local SAFE_OS = {
  __index = function(_, k)
    error(("os.%s is not available: flowrun check and flowrun graph run a flow's top level "
      .. "with %s only, as flows have"):format(tostring(k), OS_TEXT), 2)
  end,
}

-- The message for a module the sandbox refuses.
local function refused(name, why)
  return ('require "%s": %s; flowrun check and flowrun graph run a flow\'s top level with the safe '
    .. 'standard library only (%s, os.%s, json, flowrun.flow and Lua modules)')
    :format(name, why, table.concat(ALLOWED.libs, ", "), table.concat(os_short, "/"))
end

-- The sandbox's require(name): the modules of SAFE_MODULES, flowrun.flow
-- (whose define does not raise), and Lua modules found on package.path,
-- run in the sandbox too. Other modules (io, debug, package, C modules)
-- are refused with an error at the line that required them. With
-- state.trusted, every module but flowrun.flow is required for real.
local function sandbox_require(env, state)
  local loaded = { json = env.json, cjson = env.json }
  for _, k in ipairs(SAFE_MODULES) do loaded[k] = env[k] end
  loaded["flowrun.flow"] = checking
  return function(name)
    if type(name) ~= "string" then
      error(("bad argument #1 to 'require' (string expected, got %s)"):format(type(name)), 2)
    end
    if name == "flowrun.flow" then state.flow = true end
    if state.trusted and name ~= "flowrun.flow" then   -- what the flow gets when it runs:
      -- the flows' require, called from code whose globals are this sandbox's
      state.require = state.require or load("return require(...)", "@" .. state.path, "t",
        setmetatable({ require = state.globals.require }, { __index = env, __metatable = false }))
      return state.require(name)
    end
    if loaded[name] ~= nil then return loaded[name] end
    local file = package.searchpath(name, package.path)
    if file then
      local chunk, err = loadfile(file, "t", env)
      if not chunk then error(err, 0) end
      local v = chunk(name, file)
      if v == nil then v = true end
      if loaded[name] == nil then loaded[name] = v end
      return loaded[name]
    end
    state.refused = true
    if package.loaded[name] ~= nil or package.preload[name] ~= nil then
      error(refused(name, "not available"), 2)
    elseif package.searchpath(name, package.cpath) then
      error(refused(name, "a C module is not loaded"), 2)
    end
    error(refused(name, "not found on package.path"), 2)
  end
end

-- A sandbox for a flow file's top level, over state.globals (the flow
-- globals); state.called is set when a flow global was called, state.flow
-- when it required flowrun.flow.
function loader.env(state)
  -- the sandbox flows have, read-only
  local env = setmetatable({}, { __index = state.globals, __metatable = false })
  env.os = {}
  for _, k in ipairs(ALLOWED.os) do env.os[k] = os[k] end
  setmetatable(env.os, SAFE_OS)
  env.print = noop
  for _, k in ipairs(ALLOWED.primitives) do   -- api_node, say, ...: they stop it
    if type(state.globals[k]) == "function" then
      env[k] = function()
        state.called = k
        error(STOP, 0)
      end
    end
  end
  env.log = { info = noop, warn = noop, error = noop }
  env.session, env.args = {}, {}
  env.require = sandbox_require(env, state)
  env._G = env
  return env
end

-- Does src name the module "flowrun.flow" (a flow file requires it)?
local function names_flow(src)
  for _, t in ipairs(lex.tokens(src)) do
    if t.type == "string" and lex.string_value(t) == "flowrun.flow" then return true end
  end
  return false
end

-- load(path) -> { kind = ..., source = the file's text, ... }:
--   "flow"        def: the definition (def.file is path)
--   "script"      an imperative flow (it called a flow global, or returned
--                 something else than a definition)
--   "error"       msg: a syntax error, or an error of a file that requires
--                 flowrun.flow; syntax = true for the former
--   "unreadable"  msg: why
-- opts.trusted: a "flow:" target checked by a running session, which will
-- run the file anyway: its require is the flows' own, and the session's
-- limits hold (no budget of the loader's). opts.globals: the flow globals of
-- the runtime (else those of require "flowrun.runtime"), whose sandbox the
-- file's top level gets.
function loader.load(path, opts)
  local f, err = io.open(path, "rb")
  local src, rerr
  if f then
    src, rerr = f:read("a")
    f:close()
    if not src then err = path .. ": " .. tostring(rerr) end
  end
  if not src then return { kind = "unreadable", msg = err } end
  local state = { trusted = opts and opts.trusted, path = path, globals = opts and opts.globals }
  if not state.globals then state.globals = runtime.flow_globals() end
  local chunk, cerr = load(src:sub(1, 1) == "#" and "--" .. src or src, "@" .. path, "t",
                           loader.env(state))
  if not chunk then return { kind = "error", msg = cerr, syntax = true, source = src } end
  local co, count = coroutine.create(chunk), 0
  if not state.trusted then             -- over budget: an error at every instruction
    local msg = ("%s: its top level ran for more than %d million instructions"):format(path, BUDGET)
    local function over() error(msg, 0) end
    debug.sethook(co, function()
      count = count + 1
      if count > BUDGET then
        debug.sethook(co, over, "", 1)
        over()
      end
    end, "", 1000000)
  end
  -- modules required for real (trusted) get the checking flow module too
  local real = package.loaded["flowrun.flow"]
  package.loaded["flowrun.flow"] = checking
  local ok, res = coroutine.resume(co)
  package.loaded["flowrun.flow"] = real
  -- an error of a flow file is a problem; a script's top level may do what
  -- only `flowrun run` offers (a module refused here says it is a flow
  -- file when the file names flowrun.flow)
  if not ok and res ~= STOP and (state.flow or state.refused and names_flow(src)) then
    return { kind = "error", msg = tostring(res), source = src }
  end
  if ok and coroutine.status(co) == "dead" and flow.is_flow(res) then
    res.file = path
    return { kind = "flow", def = res, source = src }
  end
  return { kind = "script", source = src, called = state.called }
end

-- The message for a "flow:" target whose file r (from load) is not a flow.
function loader.not_a_flow(r, target, file)
  if r.kind == "unreadable" then
    return ('target "%s": cannot read %s'):format(target, r.msg)
  elseif r.kind == "error" then
    return ('target "%s": %s'):format(target, r.msg)
  end
  return ('target "%s": %s does not define a flow (it must return flow.define{...})')
    :format(target, file)
end

return loader
