-- flowrun.loader -- a flow file's definition, without running a session.
--
-- `flowrun check`, `flowrun graph` and the check of "flow:PATH" targets
-- need what a flow file returns. The file's top level runs in a sandbox:
-- the safe part of the standard library, `json`, and flow globals that stop
-- it (an imperative script does its work through them), with a budget of
-- instructions. Its `require "flowrun.flow"` gets a flow module whose
-- define does not raise, so that every problem can be listed.

local flow = require "flowrun.flow"

local loader = { _VERSION = "flowrun.loader 0.1.0" }

local BUDGET = 50                       -- millions of instructions
local STOP = setmetatable({}, { __tostring = function() return "a flow global was called" end })

local SAFE = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "rawequal",
  "rawget", "rawlen", "rawset", "select", "setmetatable", "getmetatable",
  "tonumber", "tostring", "type", "_VERSION", "string", "table", "math", "utf8",
}

local checking = setmetatable({ define = flow.build }, { __index = flow })

local function noop() end

-- A sandbox for a flow file's top level; state.called is set when a flow
-- global was called, state.flow when it required flowrun.flow.
function loader.env(state)
  local env = {}
  for _, k in ipairs(SAFE) do env[k] = _G[k] end
  env.os = { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime,
             getenv = os.getenv }
  env.print = noop
  local ok, json = pcall(require, "json")
  env.json = ok and json or nil
  for _, k in ipairs({ "api_node", "say", "ask", "sleep", "run_flow" }) do
    env[k] = function()
      state.called = k
      error(STOP, 0)
    end
  end
  env.log = { info = noop, warn = noop, error = noop }
  env.session, env.args = {}, {}
  env.require = function(name)
    if name == "flowrun.flow" then
      state.flow = true
      return checking
    end
    return require(name)
  end
  env._G = env
  return env
end

-- load(path) -> { kind = ..., source = the file's text, ... }:
--   "flow"        def: the definition (def.file is path)
--   "script"      an imperative flow (it called a flow global, or returned
--                 something else than a definition)
--   "error"       msg: a syntax error, or an error of a file that requires
--                 flowrun.flow; syntax = true for the former
--   "unreadable"  msg: why
function loader.load(path)
  local f, err = io.open(path, "rb")
  local src, rerr
  if f then
    src, rerr = f:read("a")
    f:close()
    if not src then err = path .. ": " .. tostring(rerr) end
  end
  if not src then return { kind = "unreadable", msg = err } end
  local state = {}
  local chunk, cerr = load(src:sub(1, 1) == "#" and "--" .. src or src, "@" .. path, "t",
                           loader.env(state))
  if not chunk then return { kind = "error", msg = cerr, syntax = true, source = src } end
  local co, count = coroutine.create(chunk), 0
  debug.sethook(co, function()
    count = count + 1
    if count > BUDGET then
      error(("%s: its top level ran for more than %d million instructions"):format(path, BUDGET), 0)
    end
  end, "", 1000000)
  -- modules the file requires get the checking flow module too
  local real = package.loaded["flowrun.flow"]
  package.loaded["flowrun.flow"] = checking
  local ok, res = coroutine.resume(co)
  package.loaded["flowrun.flow"] = real
  if not ok and res ~= STOP and state.flow then
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
