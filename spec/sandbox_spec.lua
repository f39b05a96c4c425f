-- README: Sandbox and limits. A flow has the flow globals and a
-- safe standard library shared read-only; no session can read or change
-- another's data, and no flow can crash, freeze or exhaust the process for
-- the others: limits end the offending session only.
local helper = require "spec.helper"
local cjson = require "cjson"

-- Runs a flow on the command line; opts.args go before the flow.
local function run(source, opts)
  opts = opts or {}
  local dir = opts.dir or helper.tmpdir()
  local flow = helper.flow(source, dir, opts.name)
  local args = {}
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  args[#args + 1] = flow
  for _, a in ipairs(opts.flow_args or {}) do args[#args + 1] = a end
  return helper.cli{ args = args, env = opts.env, stdin = opts.stdin, timeout = opts.timeout }
end

describe("Sandbox and limits", function()
  teardown(helper.cleanup)

  describe("what a flow reaches", function()
    it("has no io, no os beyond the clock, no debug, no package, no string.dump", function()
      local r = run([[
        local t = {}
        for _, name in ipairs { "io", "debug", "package", "dofile", "loadfile", "warn" } do
          t[#t + 1] = name .. "=" .. type(_ENV[name])
        end
        for _, name in ipairs { "getenv", "execute", "exit", "remove", "rename", "tmpname",
                                "time", "clock", "date", "difftime" } do
          t[#t + 1] = "os." .. name .. "=" .. type(os[name])
        end
        t[#t + 1] = "string.dump=" .. type(string.dump) .. "/" .. type(("").dump)
        t[#t + 1] = "math.randomseed=" .. type(math.randomseed)
        say(table.concat(t, " "))
      ]])
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("io=nil debug=nil package=nil dofile=nil loadfile=nil warn=nil "
        .. "os.getenv=nil os.execute=nil os.exit=nil os.remove=nil os.rename=nil os.tmpname=nil "
        .. "os.time=function os.clock=function os.date=function os.difftime=function "
        .. "string.dump=nil/nil math.randomseed=nil\n", r.stdout)
    end)

    it("refuses require of io, os's rest, debug, package and C modules, naming the module", function()
      for _, name in ipairs { "io", "debug", "package", "lfs", "cjson.safe" } do
        local r = run('require "' .. name .. '"')
        assert.are.equal(1, r.code)
        assert.matches("module '" .. name:gsub("%.", "%%.") .. "' not found %(flows load Lua files only", r.stderr)
      end
      local r = run('say(tostring(require("os").getenv))')
      assert.are.equal("nil\n", r.stdout)
    end)

    it("cannot change the libraries every session shares, however it tries", function()
      local r = run([[
        local tries = {
          function() string.upper = function() return "x" end end,
          function() rawset(string, "upper", print) end,
          function() getmetatable("").__index.upper = print end,
          function() table.insert(math, 1) end,
          function() json.encode = print end,
          function() log.info = print end,
          function() setmetatable(string, {}) end,
          function() os.time = print end,
          function() coroutine.wrap = print end,
          function() getmetatable(_ENV).__index = {} end,
          function() require("flowrun.flow").define = print end,
          function() require("flowrun.flow").END.x = 1 end,
        }
        for i, f in ipairs(tries) do
          local ok, err = pcall(f)
          say(i .. " " .. tostring(ok) .. " " .. tostring(err):gsub("^[^:]*:%d+: ", ""))
        end
        say(("abc"):upper() .. " " .. type(getmetatable(_ENV)) .. " " .. type(getmetatable(""))
            .. " " .. type(getmetatable(require("flowrun.flow").say("x"))))
      ]])
      assert.are.equal(0, r.code, r.stderr)
      local out = helper.lines(r.stdout)
      assert.are.equal(13, #out)
      for i = 1, 12 do assert.matches("^" .. i .. " false ", out[i]) end
      assert.matches("cannot set string.upper: string is read%-only", out[1])
      assert.matches("rawset: the table is read%-only", out[2])
      assert.matches("cannot set json.encode: json is read%-only", out[5])
      assert.matches("cannot change a protected metatable", out[7])
      assert.matches("attempt to index a boolean value", out[10])
      assert.matches("cannot set flowrun.flow.define", out[11])
      assert.are.equal("ABC boolean table boolean", out[13])
    end)

    it("keeps each session's globals, _G and modules its own (--sessions)", function()
      local dir = helper.tmpdir()
      helper.write(dir .. "/counter.lua", [[
        local n = 0
        return { bump = function() n = n + 1; return n end }
      ]])
      local r = run([[
        local counter = require "counter"
        for _ = 1, tonumber(session.id) do counter.bump() end
        mine = session.id
        _G.also = session.id
        sleep(50)
        say(mine .. " " .. also .. " " .. counter.bump() .. " " .. tostring(_G == _ENV))
      ]], { dir = dir, args = { "--sessions", "3" } })
      assert.are.equal(0, r.code, r.stderr)
      local out = helper.lines(r.stdout)
      table.sort(out)
      assert.same({ "[1] 1 1 2 true", "[2] 2 2 3 true", "[3] 3 3 4 true" }, out)
    end)

    it("loads text only: a binary chunk is refused, and string.dump is not there to make one", function()
      local r = run([[
        local f, err = load("\27Lua\84\0\25\147\13\10\26\10garbage")
        say(tostring(f) .. " " .. err)
        local ok, e = pcall(load, "return 1", "x", "b")
        say(tostring(ok) .. " " .. e:gsub("^[^:]*:%d+: ", ""))
        x = 42
        say(load("return x")() .. " " .. tostring(load("return x", "c", "t", {})()))
      ]])
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("nil attempt to load a binary chunk (mode is 't')\n"
        .. "false load: binary chunks are not available to flows (text only)\n"
        .. "42 nil\n", r.stdout)
    end)

    it("refuses __gc and collectgarbage beyond \"count\"", function()
      local r = run([[
        say(select(2, pcall(setmetatable, {}, { __gc = function() while true do end end })))
        say(select(2, pcall(setmetatable, {}, { __gc = false })))
        say(select(2, pcall(collectgarbage)))
        say(select(2, pcall(collectgarbage, "stop")))
        say(type(collectgarbage("count")))
      ]])
      assert.are.equal(0, r.code, r.stderr)
      local out = helper.lines(r.stdout)
      assert.matches("__gc is not available to flows", out[1])
      assert.matches("__gc is not available to flows", out[2])
      assert.matches('collectgarbage%("collect"%): flows may only ask for "count"', out[3])
      assert.matches('collectgarbage%("stop"%)', out[4])
      assert.are.equal("number", out[5])
    end)

    it("sends print through the log, secrets hidden", function()
      local dir = helper.tmpdir()
      helper.integrations('local s = env("SB_SECRET") return {}', dir)
      local r = run('print("the secret is", "sb-hunter2")', { dir = dir, env = { SB_SECRET = "sb-hunter2" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("", r.stdout)
      assert.matches("info: the secret is ***", r.stderr, 1, true)
      assert.is_nil(r.stderr:find("hunter2", 1, true))
    end)

    it("requires Lua files from the flow's directory first, in the same sandbox, acting for the session", function()
      local mock = helper.mock({ { path = "/v1/who", echo = true } })
      local dir = helper.tmpdir()
      helper.integrations(helper.lua_source({ api = { base_url = mock.url .. "/v1" } }), dir)
      helper.write(dir .. "/lookup.lua", [[
        local M = {}
        function M.who(name)
          local label, res = api_node{ integration = "api", path = "/who", query = { n = name },
                                       results = { "200" } }
          say("module says " .. label .. " for " .. session.id)
          return res.json.args.n, type(io)
        end
        return M
      ]])
      local r = run([[
        local lookup = require "lookup"
        say(table.concat({ lookup.who("ann") }, " "))
        say(tostring(require "lookup" == lookup))
      ]], { dir = dir, args = { "--sessions", "2" } })
      assert.are.equal(0, r.code, r.stderr)
      local out = helper.lines(r.stdout)
      table.sort(out)
      assert.same({ "[1] ann nil", "[1] module says 200 for 1", "[1] true",
                    "[2] ann nil", "[2] module says 200 for 2", "[2] true" }, out)
    end)

    it("runs only .lua files with run_flow and flow: targets (no other file read out through errors)", function()
      local dir = helper.tmpdir()
      helper.write(dir .. "/notes.txt", "secret words here\n")
      local r = run('run_flow("notes.txt")', { dir = dir })
      assert.are.equal(1, r.code)
      assert.matches("run_flow: " .. dir:gsub("%p", "%%%0") .. "/notes%.txt: a flow file is a %.lua file", r.stderr)
      assert.is_nil(r.stderr:find("secret words", 1, true))
      r = run([[
        local flow = require "flowrun.flow"
        return flow.define { start = "a", steps = { a = flow.say { text = "hi", next = "flow:notes.txt" } } }
      ]], { dir = dir })
      assert.are.equal(1, r.code)
      assert.matches('target "flow:notes.txt": a flow file is a .lua file', r.stderr, 1, true)
      assert.is_nil(r.stderr:find("secret words", 1, true))
    end)

    it("hands out no way into a shared table: pairs gives an iterator, not its contents", function()
      local r = run([[
        local iter, state = pairs(string)
        say(tostring(state == string) .. " " .. tostring(pcall(function() state.format = print end)))
        local n = 0
        for k, v in pairs(string) do n = n + 1 end
        say(tostring(n > 10) .. " " .. string.format("%d", 7))
      ]])
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("true false\ntrue 7\n", r.stdout)
    end)

    it("lets no flow resume or close a session's own coroutine", function()
      local r = run([[
        local me = coroutine.running()
        local ok, err = coroutine.resume(coroutine.create(function() return coroutine.resume(me) end))
        say(tostring(ok) .. " " .. tostring(err))
        say(select(2, pcall(coroutine.close, me)))
      ]])
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("^false [^\n]*flow%.lua:2: a session's own coroutine is resumed by the runtime only\n", r.stdout)
      assert.matches("\n[^\n]*a session's own coroutine is resumed by the runtime only\n$", r.stdout)
    end)

    it("runs a flow: target's top level in the sandbox too, within the session's limits", function()
      local dir = helper.tmpdir()
      helper.write(dir .. "/other.lua", [[
        local flow = require "flowrun.flow"
        if session.id == nil then string.upper = function() return "PWNED" end end
        return flow.define { start = "a", steps = { a = flow.say { text = "other" } } }
      ]])
      local r = run([[
        local flow = require "flowrun.flow"
        if session.id == "2" then sleep(300) say(("abc"):upper()) return end
        return flow.define { start = "a", steps = { a = flow.say { text = "one", next = "flow:other.lua" } } }
      ]], { dir = dir, args = { "--sessions", "2" } })
      assert.are.equal(1, r.code)
      assert.matches("[2] ABC", r.stdout, 1, true)
      assert.matches('target "flow:other.lua": ' .. dir:gsub("%p", "%%%0")
                     .. "/other%.lua:2: cannot set string%.upper: string is read%-only", r.stderr)
    end)

    it("keeps modules out of shared tables, and counts what they hold", function()
      local dir = helper.tmpdir()
      helper.write(dir .. "/m.lua", "return {}")
      local r = run([[
        local require = require
        local function stash() local _ENV = string return (require("m")) end
        say(tostring(rawget(string, "m")) .. " " .. tostring(stash() == stash()))
        for i = 1, 1e6 do stash()[i] = ("x"):rep(1 << 16) .. i end
      ]], { dir = dir, args = { "--limit", "session-memory=16M" } })
      assert.are.equal(1, r.code)
      assert.are.equal("nil true\n", r.stdout)
      assert.matches("flow%.lua:%d: memory limit: the session holds about", r.stderr)
    end)

    it("counts memory held only through varargs, table keys and C closures", function()
      for _, src in ipairs {
        [[(function(...) for i = 1, 1e6 do select(1, ...)[i] = ("x"):rep(1 << 16) .. i end end)({})]],
        [[local t = { [{}] = true } for i = 1, 1e6 do next(t)[i] = ("x"):rep(1 << 16) .. i end]],
        [[local keep = {} for i = 1, 1e6 do keep[i] = string.gmatch(("x"):rep(1 << 16) .. i, ".") end]],
      } do
        local r = run(src, { args = { "--limit", "session-memory=16M" } })
        assert.are.equal(1, r.code, src)
        assert.matches("memory limit", r.stderr, 1, true)
      end
    end)

    it("does not run the integrations file as a module or a flow", function()
      local dir = helper.tmpdir()
      helper.integrations('return { shop = { base_url = "http://127.0.0.1:9/", headers = { ["X-Key"] = "literal-key" } } }', dir)
      local r = run('env = function() end say(select(2, pcall(require, "integrations")))', { dir = dir })
      assert.are.equal(0, r.code, r.stderr)
      assert.matches('require "integrations": [^\n]*integrations%.lua is the integrations file, not a module', r.stdout)
      assert.is_nil(r.stdout:find("literal-key", 1, true))
      r = run('run_flow("integrations.lua")', { dir = dir })
      assert.are.equal(1, r.code)
      assert.matches("a flow file is a .lua file, not the integrations file", r.stderr, 1, true)
    end)

    it("reports a module that requires itself instead of recursing", function()
      local dir = helper.tmpdir()
      helper.write(dir .. "/a.lua", 'return require "b"')
      helper.write(dir .. "/b.lua", 'return require "a"')
      local r = run('require "a"', { dir = dir })
      assert.are.equal(1, r.code)
      assert.matches('require "a": it requires itself %(a cycle of modules%)', r.stderr)
    end)

    it("grants io and os on purpose with --allow, and refuses an unknown library", function()
      local r = run('say(type(io.write) .. " " .. type(os.getenv))', { args = { "--allow", "io,os" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("function function\n", r.stdout)
      r = run('say(1)', { args = { "--allow", "sockets" } })
      assert.are.equal(2, r.code)
      assert.matches("flowrun: --allow: flowrun_allow: unknown library 'sockets' (io, os, debug or package)",
                     r.stderr, 1, true)
      r = run('say(1)', { args = { "--limit", "speed=3" } })
      assert.are.equal(2, r.code)
      assert.matches("--limit: expected NAME=VALUE", r.stderr, 1, true)
    end)
  end)

  describe("limits", function()
    it("end a session that spins without waiting, also under pcall and in a coroutine, with file:line", function()
      for _, src in ipairs {
        "while true do end",
        "while true do pcall(function() while true do end end) end",
        "coroutine.wrap(function() while true do end end)()",
        "local t = setmetatable({}, { __index = function() while true do end end }) return t.x",
        "do local x <close> = setmetatable({}, { __close = function() while true do end end }) end",
        "error(setmetatable({}, { __tostring = function() while true do end end }))",
      } do
        local r = run(src, { args = { "--limit", "instructions=2000000" } })
        assert.are.equal(1, r.code, src)
        if src:find("__tostring") then   -- its message is the object's, which cannot be had
          assert.matches("%(error object is a table value%)", r.stderr)
        else
          assert.matches("flow%.lua:1: instruction limit: 2000000 instructions without waiting", r.stderr, src)
        end
      end
    end)

    it("count instructions between two waits, not in all: a session that waits goes on", function()
      local r = run([[
        for round = 1, 5 do
          local x = 0
          for i = 1, 150000 do x = x + i end    -- ~0.6 M instructions a round
          sleep(0)
        end
        say("done")
      ]], { args = { "--limit", "instructions=1000000" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("done\n", r.stdout)
    end)

    it("end a session at the limit, not later: 1.5 M instructions without waiting end it, 0.8 M do not", function()
      local src = [[
        local x = 0
        for i = 1, %d do x = x + i end    -- 2 instructions an iteration
        say("done")
      ]]
      local r = run(src:format(400000), { args = { "--limit", "instructions=1000000" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("done\n", r.stdout)
      r = run(src:format(750000), { args = { "--limit", "instructions=1000000" } })
      assert.are.equal(1, r.code)
      assert.are.equal("", r.stdout)
      assert.matches("flow%.lua:2: instruction limit: 1000000 instructions without waiting", r.stderr)
    end)

    it("count coroutine.yield() at the session's top as a wait: the others get their turn", function()
      local r = run([[
        for round = 1, 5 do
          local x = 0
          for i = 1, 150000 do x = x + i end    -- ~0.6 M instructions a round
          coroutine.yield()
        end
        say("done")
      ]], { args = { "--limit", "instructions=1000000" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("done\n", r.stdout)
    end)

    it("end a session that eats memory, and only that one", function()
      local r = run([[
        if session.id == "2" then
          local t = {}
          for i = 1, 1e9 do t[i] = ("x"):rep(1000) .. i end
        end
        sleep(100)
        say("alive")
      ]], { args = { "--sessions", "3", "--limit", "session-memory=16M" } })
      assert.are.equal(1, r.code)
      local out = helper.lines(r.stdout)
      table.sort(out)
      assert.same({ "[1] alive", "[3] alive" }, out)
      assert.matches("%[2%] .*flow%.lua:%d+: memory limit: the session holds about %d+ bytes %(session_memory is 16777216%)",
                     r.stderr)
    end)

    it("refuse one allocation larger than a session may hold, however it is caught", function()
      local r = run([[
        local ok, err = pcall(string.rep, "x", 100 * 1024 * 1024)
        say(tostring(ok) .. " " .. tostring(err))
        local t = {}
        for i = 1, 1e9 do t[i] = ("y"):rep(4096) .. i end
      ]], { args = { "--limit", "session-memory=8M" } })
      assert.are.equal(1, r.code)
      assert.are.equal("false not enough memory\n", r.stdout)
      assert.matches("memory limit", r.stderr)
    end)

    it("say where an allocation over a limit failed, and which limit", function()
      local r = run('local s = string.rep("x", 100 * 1024 * 1024)', { args = { "--limit", "session-memory=8M" } })
      assert.are.equal(1, r.code)
      assert.matches("^[^\n]*flow%.lua:1: memory limit: the session asked for more than it may hold: "
                     .. "session_memory is 8388608 bytes\n", r.stderr)
      r = run([[
        local t = {}
        for i = 1, 1e9 do t[i] = ("x"):rep(1000) .. i end
      ]], { args = { "--limit", "memory=40M", "--limit", "session-memory=0" } })
      assert.are.equal(1, r.code)
      assert.matches("flow%.lua:2: memory limit: all sessions together hold the most they may: memory is 41943040 bytes",
                     r.stderr)
    end)

    it("end a session that floods its output", function()
      local r = run([[
        local line = ("z"):rep(1000)
        for _ = 1, 200 do say(line) sleep(0) end    -- 200 KB in all, 1 KB at a time
        say("not reached")
      ]], { args = { "--limit", "output=100K" } })
      assert.are.equal(1, r.code)
      assert.are.equal(102, #helper.lines(r.stdout))
      assert.matches("flow%.lua:2: output limit: the session said more than 102400 bytes", r.stderr)
    end)
  end)

  describe("a session stuck in C code", function()
    it("ends the command after --limit wall=SECONDS, saying so, rather than freezing every session", function()
      local t0 = helper.now()
      local r = run([[
        say("before")
        string.find(string.rep("a", 40), string.rep("a*", 40) .. "b")   -- backtracks for ages
      ]], { args = { "--limit", "wall=1" } })
      assert.are.equal(1, r.code)
      assert.are.equal("before\n", r.stdout)
      assert.matches("flowrun: a session has run for %d+ s without waiting, stuck inside a C function "
                     .. "%(a pattern match%?%) where it cannot be stopped: exiting %(%-%-limit wall=1%)", r.stderr)
      assert.is_true(helper.now() - t0 >= 1000, "ended before wall=1")   -- the cli's own timeout catches a hang
    end)

    it("watches an error's __tostring at a session's end like any of its code", function()
      local r = run([[
        if session.id == "2" then for i = 1, 3 do sleep(500) say("tick " .. i) end return end
        error(setmetatable({}, { __tostring = function() while true do local s = ("x"):rep(1 << 22) end end }))
      ]], { args = { "--sessions", "2", "--limit", "wall=1", "--limit", "instructions=0" } })
      assert.are.equal(1, r.code)
      assert.matches("[1] (error object is a table value)", r.stderr, 1, true)
      assert.matches("[2] tick 3", r.stdout, 1, true)
      assert.is_nil(r.stderr:find("exiting", 1, true))
    end)

    it("is stopped by the watchdog's break when the C function calls back into Lua", function()
      local r = run([[
        local t = {}
        for i = 1, 200 do t[i] = i end
        table.sort(t, function(a, b) local x = 0 for i = 1, 1e6 do x = x + i end return a < b end)
      ]], { args = { "--limit", "wall=1", "--limit", "instructions=0" } })
      assert.are.equal(1, r.code)
      assert.matches("flow%.lua:3: interrupted!", r.stderr)
    end)
  end)

  describe("the Lua module", function()
    it("takes allow, limits and globals (tables read-only to flows) in new, and refuses an unknown option", function()
      local flowrun = helper.module()
      local config = { name = "shop", sub = { n = 1 } }
      local rt = flowrun.new{ allow = { "os" }, limits = { instructions = 100000 },
                              globals = { greet = function(n) return "hi " .. n end, config = config } }
      helper.start(rt, "a", [[
        say(greet("ann") .. " " .. type(os.getenv))
        say(tostring(pcall(function() config.name = "x" end)) .. " " .. tostring(pcall(function() config.sub.n = 2 end))
            .. " " .. tostring(pcall(rawset, config, "name", "x")) .. " " .. config.name .. " " .. config.sub.n)
        while true do end
      ]])
      rt:run(5000)
      local ev = rt:events()
      assert.same({ "hi ann function", "false false false shop 1" }, helper.says(ev, "a"))
      assert.are.equal("shop", config.name)
      local ended = helper.events(ev, "end", "a")[1]
      assert.is_false(ended.ok)
      assert.matches("instruction limit: 100000 instructions", ended.error)
      rt:close()
      -- the module leaves its host's string methods alone; getmetatable("") is a view
      assert.are.equal("function", type(("").dump))
      assert.are.equal("table", type(getmetatable("")))
      assert.has_error(function() getmetatable("").x = 1 end,
        "cannot set the string metatable.x: the string metatable is read-only (every session shares it)")
      assert.has_error(function() flowrun.new{ allowed = {} } end,
        "flowrun.new: unknown option 'allowed' (integrations, allow, limits, globals, store, transport, virtual_clock, replay)")
    end)
  end)

  describe("the Lua module, as a newcomer uses it", function()
    it("takes integrations as a table too, validated as a file is, and says what was wrong in its own terms", function()
      local flowrun = helper.module()
      local mock = helper.mock({ { path = "/v1/item", json = { ok = true } } })
      local rt = flowrun.new{ integrations = { shop = { base_url = mock.url .. "/v1" } } }
      local label, res = rt:api_node{ integration = "shop", path = "/item", results = { "200" } }
      assert.are.equal("200", label)
      assert.is_true(res.json.ok)
      rt:close()
      assert.has_error(function() flowrun.new{ integrations = { shop = { base_url = mock.url, timeout_ms = "x" } } } end,
        "flowrun.new{ integrations }: shop.timeout_ms: expected an integer >= 1, got string")
      assert.has_error(function() flowrun.new{ integrations = 42 } end,
        "flowrun.new: integrations: expected a file name or a table, got number")
      local bare = flowrun.new{}
      local ok, err = pcall(bare.api_node, bare, { integration = "shop", results = { "200" } })
      assert.is_false(ok)
      assert.matches("no integrations are loaded: -I FILE on the command line, flowrun.new{ integrations = ... } in Lua",
                     err, 1, true)
      bare:close()
    end)

    it("says what a wrong call was in the module's terms, not as a bad argument to '?'", function()
      local flowrun = helper.module()
      local rt = flowrun.new{}
      local cases = {
        { function() rt:start() end, "flowrun: rt:start: id (the session's) must be a string, got no value" },
        { function() rt.start("x") end, "flowrun: rt:start: call it on a runtime with a colon, rt:start(...)" },
        { function() rt:send("a", {}) end, "flowrun: rt:send: text (or nil to close) must be a string, got table" },
        { function() rt:step("soon") end, "flowrun: rt:step: ms (how long it may wait) must be an integer, got string" },
        { function() flowrun.new{ allow = "io" } end, 'flowrun.new: allow: expected a list like { "io" }, got string' },
        { function() flowrun.new{ limits = { speed = 1 } } end, "flowrun.new: limits: unknown limit 'speed'" },
        { function() flowrun.new{ globals = { 2 } } end, "flowrun.new: globals: names must be strings, got number" },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(c[1])
        assert.is_false(ok)
        assert.matches(c[2], err, 1, true)
      end
      rt:close()
      local ok, err = pcall(rt.run, rt)
      assert.is_false(ok)
      assert.matches("flowrun: rt:run: the runtime is closed", err, 1, true)
    end)

    it("reports an ask once, its prompt as the ask event's text, as the C callbacks do", function()
      local rt = helper.runtime()
      helper.start(rt, "n1", 'say(ask("name?"))')
      assert.is_true(rt:run(5000))
      local ev = rt:events()
      assert.same({}, helper.says(ev, "n1"))
      assert.same({ { type = "ask", session = "n1", text = "name?" } }, helper.events(ev, "ask", "n1"))
      rt:send("n1", "Ann")
      assert.is_true(rt:run(5000))
      assert.same({ "Ann" }, helper.says(rt:events(), "n1"))
    end)
  end)

  describe("flowrun host, one hostile session of each kind among 100 ordinary ones", function()
    it("keeps every ordinary conversation exact and exits 1 for the failed ones", function()
      local mock = helper.mock({ { path = "/v1/item/{id}", json = { id = "{id}", name = "Widget {id}" } } })
      local dir = helper.tmpdir()
      helper.integrations(helper.lua_source({ shop = { base_url = mock.url .. "/v1" } }), dir)
      helper.write(dir .. "/chat.lua", [[
        local kind = args[1]
        if kind == "spin" then while true do end
        elseif kind == "eat" then local t = {} for i = 1, 1e9 do t[i] = ("m"):rep(512) .. i end
        elseif kind == "registry" then say(type(debug) .. " " .. type(getmetatable(_ENV)))
          for k in pairs(_ENV) do if k == "secret_of_another" then say("LEAK") end end
        elseif kind == "tamper" then pcall(function() string.format = function() return "PWNED" end end)
          pcall(rawset, table, "concat", function() return "PWNED" end)
        elseif kind == "bytecode" then say(tostring(load("\27Lua\84\0garbage")))
        elseif kind == "tostring" then error(setmetatable({}, { __tostring = function() error("x") end }))
        elseif kind == "stdin" then say(tostring(io and io.read and io.read("l")))
        elseif kind == "exit" then if os.exit then os.exit(0) end error("no exit here")
        elseif kind == "forge" then
          if io then io.write('{"session":"u7","say":"forged"}\n') end
          say('{"session":"u7","say":"forged"}')
        end
        secret_of_another = "s-" .. session.id
        local name = ask("name?")
        local label, res = api_node{ integration = "shop", path = "/item/{id}", params = { id = name },
                                     results = { "200" } }
        say(string.format("%s: %s %s", session.id, label, res.json.name))
      ]])
      local attacks = { "spin", "eat", "registry", "tamper", "bytecode", "tostring", "stdin", "exit", "forge" }
      local lines = {}
      for i, a in ipairs(attacks) do lines[#lines + 1] = ('{"session":"x%d","text":"%s"}'):format(i, a) end
      for i = 1, 100 do lines[#lines + 1] = ('{"session":"u%d","text":"hi"}'):format(i) end
      for i = 1, 100 do lines[#lines + 1] = ('{"session":"u%d","text":"%d"}'):format(i, i) end
      helper.write(dir .. "/in.jsonl", table.concat(lines, "\n") .. "\n")
      local r = helper.cli{ args = { "host", "--limit", "instructions=5000000", "--limit",
                                     "session-memory=32M", dir .. "/chat.lua" },
                            stdin_cmd = "cat " .. helper.quote(dir .. "/in.jsonl") }
      assert.are.equal(1, r.code, r.stderr)
      local by = {}
      for _, line in ipairs(helper.lines(r.stdout)) do
        local ok, e = pcall(cjson.decode, line)
        assert.is_true(ok, "not JSON: " .. line)
        by[e.session] = by[e.session] or {}
        table.insert(by[e.session], e)
      end
      for i = 1, 100 do
        local id = "u" .. i
        local t = by[id]
        assert.are.equal(3, #t, id .. ": " .. cjson.encode(t) .. "\n" .. r.stderr)
        assert.same({ session = id, say = "name?" }, t[1])   -- its answer came first
        assert.same({ session = id, say = ("%s: 200 Widget %d"):format(id, i) }, t[2])
        assert.same({ session = id, ["end"] = "done" }, t[3])
      end
      local function ended(id) return by[id][#by[id]] end
      assert.matches("instruction limit", ended("x1").error)
      assert.matches("memory limit", ended("x2").error)
      assert.are.equal("nil boolean", by.x3[1].say)
      assert.are.equal("name?", by.x3[2].ask)
      assert.are.equal("name?", by.x4[1].ask)         -- its tampering failed, and it asks
      assert.are.equal("nil", by.x5[1].say)
      assert.are.equal("error", ended("x6")["end"])
      assert.matches("^%(error object is a table value%)\nstack traceback:.*chat%.lua:9:", ended("x6").error)
      assert.are.equal("nil", by.x7[1].say)
      assert.matches("no exit here", ended("x8").error)
      assert.are.equal('{"session":"u7","say":"forged"}', by.x9[1].say)
      assert.is_nil(r.stdout:find('\n{"session":"u7","say":"forged"}', 1, true))
    end)
  end)
end)
