-- README: Flow globals. Flow scripts, their globals and sessions; through
-- the command line and through the Lua module.
local helper = require "spec.helper"

describe("Flow globals: flow scripts", function()
  local mock, ig_dir

  setup(function()
    mock = helper.mock({
      { path = "/echo", echo = true },
      { path = "/slow", delay_ms = 300, body = "slow" },
      { path = "/second", delay_ms = 1000, body = "ok" },
    })
    ig_dir = helper.tmpdir()
    helper.integrations({ shop = { base_url = mock.url, max_connections = 250 } }, ig_dir)
  end)

  teardown(helper.cleanup)

  -- Runs source as a flow (beside the integrations) on the command line.
  local function cli(source, opts)
    opts = opts or {}
    local flow = helper.flow(source, ig_dir, "flow_" .. tostring(math.random(1e9)) .. ".lua")
    local args = {}
    for _, a in ipairs(opts.before or {}) do args[#args + 1] = a end
    args[#args + 1] = flow
    for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
    local r = helper.cli{ args = args, stdin = opts.stdin, stdin_cmd = opts.stdin_cmd, env = opts.env }
    r.flow = flow
    return r
  end

  local function runtime()
    return helper.runtime(ig_dir .. "/integrations.lua")
  end

  describe("say", function()
    it("writes one line to stdout", function()
      local r = cli([[ say("hello") say("") say(42) ]])
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("hello\n\n42\n", r.stdout)
    end)

    it("is a say event in the module", function()
      local rt = runtime()
      helper.start(rt, "u1", [[ say("hi there") ]])
      assert.is_true(rt:run(5000))
      local events = rt:events()
      assert.are.same({ "hi there" }, helper.says(events, "u1"))
      local ends = helper.events(events, "end", "u1")
      assert.are.equal(1, #ends)
      assert.is_true(ends[1].ok)
    end)
  end)

  describe("ask", function()
    it("writes its prompt as a line and returns the next line of stdin", function()
      local r = cli([[
        local name = ask("Your name?")
        say("Hello, " .. name)
      ]], { stdin = "Ada\n" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("Your name?\nHello, Ada\n", r.stdout)
    end)

    it("without a prompt writes nothing", function()
      local r = cli([[ say("got " .. ask()) ]], { stdin = "x\n" })
      assert.are.equal("got x\n", r.stdout)
    end)

    it("reads one line per call, the last one even without a newline", function()
      local r = cli([[ say(ask() .. "|" .. ask() .. "|" .. tostring(ask())) ]], { stdin = "a\r\nb" })
      assert.are.equal("a|b|nil\n", r.stdout)
    end)

    it("drops a '\\r' at a line's end, the last line's too, from a file and a pipe", function()
      local flow = helper.flow([[ say("[" .. ask() .. "][" .. ask() .. "]") ]], ig_dir, "crlf.lua")
      for _, pipe in ipairs{ false, true } do
        local r = helper.cli{ args = { flow }, stdin = "a\r\nb\r", stdin_pipe = pipe }
        assert.are.equal(0, r.code, r.stderr)
        assert.are.equal("[a][b]\n", r.stdout)
      end
    end)

    it("returns nil at the end of stdin", function()
      local r = cli([[ say(tostring(ask("?"))) ]], { stdin = "" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("?\nnil\n", r.stdout)
    end)

    it("works the same with stdin a pipe", function()
      local flow = helper.flow([[
        say(ask("one?"))
        say(ask("two?"))
        say(tostring(ask("three?")))
      ]], ig_dir, "piped.lua")
      local r = helper.cli{ args = { flow }, stdin = "1\n2\n", stdin_pipe = true }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("one?\n1\ntwo?\n2\nthree?\nnil\n", r.stdout)
    end)

    it("waits for rt:send in the module, and returns nil once the channel is closed", function()
      local rt = runtime()
      helper.start(rt, "u1", [[
        local a = ask("first?")
        say("got " .. a)
        local b = ask()
        say("then " .. tostring(b))
      ]])
      assert.is_true(rt:run(5000))
      local events = rt:events()
      assert.are.same({}, helper.says(events, "u1"))           -- the prompt is the ask's, once
      assert.are.equal(1, #helper.events(events, "ask", "u1"))
      assert.are.equal("first?", helper.events(events, "ask", "u1")[1].text)
      assert.are.equal(1, rt:sessions())
      rt:send("u1", "apples")
      assert.is_true(rt:run(5000))
      assert.are.same({ "got apples" }, helper.says(rt:events(), "u1"))
      rt:send("u1", nil)
      assert.is_true(rt:run(5000))
      events = rt:events()
      assert.are.same({ "then nil" }, helper.says(events, "u1"))
      assert.are.equal(0, rt:sessions())
    end)

    it("sends stdin lines to the sessions in the order they ask", function()
      local r = cli([[
        if session.id == "1" then sleep(300) end
        local line = ask("ready")
        say("took " .. line)
      ]], { before = { "--sessions", "2" }, stdin = "first\nsecond\n" })
      assert.are.equal(0, r.code, r.stderr)
      local lines = helper.lines(r.stdout)
      table.sort(lines)
      assert.are.same({ "[1] ready", "[1] took second", "[2] ready", "[2] took first" }, lines)
    end)
  end)

  describe("sleep", function()
    it("suspends the session for at least ms", function()
      local rt = runtime()
      helper.start(rt, "s", [[ sleep(200) say("woke") ]])
      local t0 = helper.now()
      assert.is_true(rt:run(5000))
      assert.is_true(helper.now() - t0 >= 195, "woke after " .. (helper.now() - t0) .. " ms")
    end)

    it("suspends only this session", function()
      local rt = runtime()
      helper.start(rt, "sleeper", [[ sleep(500) say("sleeper woke") ]])
      helper.start(rt, "worker", [[
        for i = 1, 3 do
          local label = api_node{ integration = "shop", path = "/echo", results = { "200" } }
          say("worker " .. label)
        end
      ]])
      assert.is_true(rt:run(5000))
      local said = {}
      for _, e in ipairs(rt:events()) do if e.type == "say" then said[#said + 1] = e.text end end
      assert.are.same({ "worker 200", "worker 200", "worker 200", "sleeper woke" }, said)
    end)
  end)

  describe("session", function()
    it("has the id the host gave, a string", function()
      local rt = runtime()
      helper.start(rt, "user-42", [[ say(type(session.id) .. " " .. session.id) ]])
      assert.is_true(rt:run(5000))
      assert.are.same({ "string user-42" }, helper.says(rt:events(), "user-42"))
    end)

    it("is \"1\" … \"N\" on the command line", function()
      local r = cli([[ say(type(session.id) .. " " .. session.id) ]], { before = { "--sessions", "3" } })
      local lines = helper.lines(r.stdout)
      table.sort(lines)
      assert.are.same({ "[1] string 1", "[2] string 2", "[3] string 3" }, lines)
      r = cli([[ say(session.id) ]])
      assert.are.equal("1\n", r.stdout)
    end)

    it("is a table of the session's own that the flow may fill", function()
      local rt = runtime()
      local src = [[
        session.name = session.name or ask()
        say(session.id .. " " .. session.name)
      ]]
      helper.start(rt, "a", src)
      helper.start(rt, "b", src)
      assert.is_true(rt:run(5000))
      rt:send("a", "Ann")
      rt:send("b", "Bob")
      assert.is_true(rt:run(5000))
      local events = rt:events()
      assert.are.same({ "a Ann" }, helper.says(events, "a"))
      assert.are.same({ "b Bob" }, helper.says(events, "b"))
    end)
  end)

  describe("globals", function()
    it("are per session: two sessions of one flow never share them", function()
      local rt = runtime()
      local src = [[
        counter = (counter or 0) + 1
        mine = session.id
        ask()
        say(counter .. " " .. mine)
      ]]
      for _, id in ipairs { "a", "b", "c" } do helper.start(rt, id, src) end
      assert.is_true(rt:run(5000))
      for _, id in ipairs { "a", "b", "c" } do rt:send(id, "go") end
      assert.is_true(rt:run(5000))
      local events = rt:events()
      for _, id in ipairs { "a", "b", "c" } do
        assert.are.same({ "1 " .. id }, helper.says(events, id))
      end
    end)

    it("are per session on the command line too", function()
      local r = cli([[
        seen = (seen or 0) + 1
        sleep(50)
        say(seen)
      ]], { before = { "--sessions", "3" } })
      assert.are.same({ "[1] 1", "[2] 1", "[3] 1" }, (function(t) table.sort(t) return t end)(helper.lines(r.stdout)))
    end)

    it("include the standard library", function()
      local r = cli([[ say(string.upper("ok") .. " " .. math.max(1, 2) .. " " .. table.concat({ "a", "b" }, ",")) ]])
      assert.are.equal("OK 2 a,b\n", r.stdout)
    end)
  end)

  describe("json", function()
    it("encodes, decodes and has json.null", function()
      local r = cli([[
        local t = json.decode('{"a":[1,2,3],"b":null,"c":"x"}')
        say(#t.a .. " " .. tostring(t.b == json.null) .. " " .. t.c)
        say(json.encode({ 1, 2 }))
        say(json.encode({ k = "v" }))
        say(json.encode({ n = json.null }))
      ]])
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal('3 true x\n[1,2]\n{"k":"v"}\n{"n":null}\n', r.stdout)
    end)
  end)

  describe("log", function()
    it("log.info, log.warn and log.error write to stderr, not stdout", function()
      local r = cli([[
        log.info("starting", 1, true)
        log.warn("careful")
        log.error("bad")
        say("done")
      ]])
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("done\n", r.stdout)
      assert.matches("info: starting 1 true\n", r.stderr, 1, true)
      assert.matches("warn: careful\n", r.stderr, 1, true)
      assert.matches("error: bad\n", r.stderr, 1, true)
    end)

    it("is a log event in the module", function()
      local rt = runtime()
      helper.start(rt, "s", [[ log.warn("low", "stock") ]])
      assert.is_true(rt:run(5000))
      local logs = helper.events(rt:events(), "log", "s")
      assert.are.equal(1, #logs)
      assert.are.equal("warn", logs[1].level)
      assert.are.equal("low stock", logs[1].message)
    end)
  end)

  describe("run_flow", function()
    it("runs another flow in the same session and returns its results", function()
      local dir = helper.tmpdir()
      helper.flow([[
        local a, b = ...
        say("sub sees session " .. session.id .. " and " .. a .. "," .. b)
        local answer = ask("sub asks")
        return a + b, answer
      ]], dir, "sub.lua")
      local main = helper.flow([[
        local sum, answer = run_flow("sub.lua", 2, 3)
        say("main got " .. sum .. " " .. answer)
      ]], dir, "main.lua")
      local r = helper.cli{ args = { "-I", ig_dir .. "/integrations.lua", main }, stdin = "yes\n" }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("sub sees session 1 and 2,3\nsub asks\nmain got 5 yes\n", r.stdout)
    end)

    it("lets the other flow call api_node and sleep", function()
      local dir = helper.tmpdir()
      helper.flow([[
        sleep(10)
        local label = api_node{ integration = "shop", path = "/echo", results = { "200" } }
        return label
      ]], dir, "call.lua")
      local main = helper.flow([[ say("label " .. run_flow("call.lua")) ]], dir, "main.lua")
      local r = helper.cli{ args = { "-I", ig_dir .. "/integrations.lua", main } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("label 200\n", r.stdout)
    end)

    it("raises naming a flow that cannot be read", function()
      local r = cli([[ run_flow("no_such_flow.lua") ]])
      assert.are.equal(1, r.code)
      assert.matches("no_such_flow.lua", r.stderr, 1, true)
    end)
  end)

  describe("args", function()
    it("are the command-line arguments after the script, also as ...", function()
      local r = cli([[
        say(#args .. " " .. table.concat(args, ","))
        local a, b = ...
        say(select("#", ...) .. " " .. a .. " " .. b)
      ]], { args = { "x", "y z" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("2 x,y z\n2 x y z\n", r.stdout)
    end)

    it("are empty without arguments", function()
      local r = cli([[ say(#args .. " " .. select("#", ...)) ]])
      assert.are.equal("0 0\n", r.stdout)
    end)

    it("are the extra arguments of rt:start in the module", function()
      local rt = runtime()
      helper.start(rt, "s", [[ local n = select("#", ...) say(n .. " " .. table.concat(args, ",")) ]], "p", "q")
      assert.is_true(rt:run(5000))
      assert.are.same({ "2 p,q" }, helper.says(rt:events(), "s"))
    end)
  end)

  describe("ending", function()
    it("returning from the script ends the session", function()
      local rt = runtime()
      helper.start(rt, "s", [[ say("a") do return end say("never") ]])
      assert.is_true(rt:run(5000))
      local events = rt:events()
      assert.are.same({ "a" }, helper.says(events, "s"))
      assert.is_true(helper.events(events, "end", "s")[1].ok)
      assert.are.equal(0, rt:sessions())
    end)

    it("an uncaught error ends that session only, with file:line and a traceback", function()
      local rt = runtime()
      local path = helper.start(rt, "bad", [[
say("before")
local t = nil
t.x = 1
say("after")
]])
      helper.start(rt, "good", [[ sleep(100) say("still here") ]])
      assert.is_true(rt:run(5000))
      local events = rt:events()
      assert.are.same({ "before" }, helper.says(events, "bad"))
      assert.are.same({ "still here" }, helper.says(events, "good"))
      local bad = helper.events(events, "end", "bad")[1]
      assert.is_false(bad.ok)
      assert.matches("^" .. path:gsub("%p", "%%%0") .. ":3: attempt to index a nil value", bad.error)
      assert.matches("stack traceback:", bad.error, 1, true)
      assert.is_true(helper.events(events, "end", "good")[1].ok)
    end)

    it("on the command line: the message and traceback on stderr, exit 1, other sessions go on", function()
      local r = cli([[
if session.id == "1" then
  error("boom")
end
sleep(100)
say("finished")
]], { before = { "--sessions", "2" } })
      assert.are.equal(1, r.code)
      assert.are.equal("[2] finished\n", r.stdout)
      assert.matches("[1] " .. r.flow .. ":2: boom\n", r.stderr, 1, true)
      assert.matches("stack traceback:", r.stderr, 1, true)
    end)

    it("an error value that is not a string is still reported", function()
      local r = cli([[ error({ code = 7 }) ]])
      assert.are.equal(1, r.code)
      assert.matches("table", r.stderr, 1, true)
    end)
  end)

  describe("concurrency", function()
    it("200 sessions each waiting 1 s on the API finish together, before a 5 s sleep of session 201", function()
      local r = cli([[
        if session.id == "201" then sleep(5000) say("5 s") return end   -- the loop's own clock
        local label, res = api_node{ integration = "shop", path = "/second", results = { "200" } }
        say(label)
      ]], { before = { "--sessions", "201" } })
      assert.are.equal(0, r.code, r.stderr)
      local lines = helper.lines(r.stdout)
      assert.are.equal(201, #lines)
      assert.are.equal("[201] 5 s", lines[201])    -- one after another, they would take 200 s
      local seen = {}
      for i = 1, 200 do
        local id, label = lines[i]:match("^%[(%d+)%] (.*)$")
        assert.are.equal("200", label, lines[i])
        seen[tonumber(id)] = true
      end
      for i = 1, 200 do assert.is_true(seen[i], "no line from session " .. i) end
    end)

    it("api_node suspends only its own session", function()
      local rt = runtime()
      helper.start(rt, "caller", [[
        local label = api_node{ integration = "shop", path = "/slow", results = { "200" } }
        say("caller " .. label)
      ]])
      helper.start(rt, "other", [[ say("other 1") sleep(10) say("other 2") ]])
      assert.is_true(rt:run(5000))
      local said = {}
      for _, e in ipairs(rt:events()) do if e.type == "say" then said[#said + 1] = e.text end end
      assert.are.same({ "other 1", "other 2", "caller 200" }, said)
    end)

    it("while one session waits in ask, the others keep running", function()
      local rt = runtime()
      helper.start(rt, "asker", [[ local a = ask("?") say("asker got " .. a) ]])
      helper.start(rt, "worker", [[
        for i = 1, 3 do
          local label = api_node{ integration = "shop", path = "/echo", results = { "200" } }
          sleep(10)
          say("worker " .. i .. " " .. label)
        end
      ]])
      assert.is_true(rt:run(5000))
      local events = rt:events()
      assert.are.same({ "worker 1 200", "worker 2 200", "worker 3 200" }, helper.says(events, "worker"))
      assert.is_true(helper.events(events, "end", "worker")[1].ok)
      assert.are.equal(1, rt:sessions())
      rt:send("asker", "hello")
      assert.is_true(rt:run(5000))
      assert.are.same({ "asker got hello" }, helper.says(rt:events(), "asker"))
    end)

    it("on the command line a session waiting in ask does not hold the others", function()
      local flow = helper.flow([[
        if session.id == "1" then
          say("1 got " .. tostring(ask()))
        else
          local label = api_node{ integration = "shop", path = "/slow", results = { "200" } }
          say("2 " .. label)
        end
      ]], ig_dir, "ask_holds_none.lua")
      -- the answer is written only once session 2's call has ended (its trace)
      local proc = helper.cli_piped({ "--trace", "--sessions", "2", flow })
      assert.is_truthy(helper.wait_for(function() return proc:stderr():find("trace session=2 .* label=200") end, 30000),
                       "session 2 did not go on while session 1 waited: " .. proc:stderr())
      proc:send("hi")
      local r = proc:finish()
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "[2] 2 200", "[1] 1 got hi" }, helper.lines(r.stdout))
    end)
  end)

  describe("the Lua module", function()
    it("rt:start raises on a syntax error, naming file and line", function()
      local rt = runtime()
      local flow = helper.flow("say('a')\nlocal = 1\n")
      local ok, err = pcall(rt.start, rt, "s", flow)
      assert.is_false(ok)
      assert.matches(flow .. ":2:", err, 1, true)
      assert.are.equal(0, rt:sessions())
    end)

    it("rt:start raises on an id in use", function()
      local rt = runtime()
      helper.start(rt, "same", [[ ask() ]])
      local ok, err = pcall(helper.start, rt, "same", [[ ask() ]])
      assert.is_false(ok)
      assert.matches("same", err, 1, true)
      assert.are.equal(1, rt:sessions())
    end)

    it("rt:send raises for an unknown session", function()
      local rt = runtime()
      assert.has_error(function() rt:send("ghost", "hi") end, "no session ghost")
    end)

    it("rt:stop ends a session wherever it waits", function()
      local rt = runtime()
      helper.start(rt, "asking", [[ ask() say("never") ]])
      helper.start(rt, "calling", [[ api_node{ integration = "shop", path = "/second", results = { "200" } } say("never") ]])
      helper.start(rt, "sleeping", [[ sleep(60000) say("never") ]])
      rt:step(0)
      assert.are.equal(3, rt:sessions())
      for _, id in ipairs { "asking", "calling", "sleeping" } do rt:stop(id) end
      assert.are.equal(0, rt:sessions())
      assert.is_true(rt:run(2000))
      assert.are.same({}, helper.says(rt:events()))
    end)

    it("rt:step(0) never blocks: ten steps do not wait for a session's 2 s sleep", function()
      local rt = runtime()
      helper.start(rt, "s", [[ sleep(2000) say("woke") ]])
      for _ = 1, 10 do rt:step(0) end
      assert.are.equal(1, rt:sessions())     -- a step that waited for the timer would have ended it
      assert.are.same({}, helper.says(rt:events(), "s"))
    end)

    it("rt:step(ms, budget_ms) stops when the budget is spent: one session a step, in order; <= 0 is none", function()
      local rt = runtime()
      for i = 1, 5 do helper.start(rt, "b" .. i, [[ say(session.id) ]]) end
      local order = {}
      for step = 1, 5 do
        rt:step(0, 0.0001)                  -- 0.1 us: spent by the first session it resumes
        local said = helper.says(rt:events())
        assert.are.equal(1, #said, "step " .. step)
        order[#order + 1] = said[1]
      end
      assert.are.same({ "b1", "b2", "b3", "b4", "b5" }, order)
      for i = 1, 5 do helper.start(rt, "c" .. i, [[ say(session.id) ]]) end
      rt:step(0, -1)
      assert.are.equal(5, #helper.says(rt:events()))
      assert.has_error(function() rt:step(0, "soon") end,
                       "flowrun: rt:step: budget_ms must be a number, got string")
      assert.has_error(function() rt:step(0, 0 / 0) end,
                       "flowrun: rt:step: budget_ms must be a number, got number")
    end)

    it("rt:run(max_ms) gives up with false while a session still works", function()
      local rt = runtime()
      helper.start(rt, "s", [[ sleep(5000) ]])
      assert.is_false(rt:run(100))
      assert.are.equal(1, rt:sessions())
    end)

    it("rt:events() returns the events once, oldest first", function()
      local rt = runtime()
      helper.start(rt, "s", [[ say("1") log.info("2") say("3") ]])
      assert.is_true(rt:run(5000))
      local types = {}
      for _, e in ipairs(rt:events()) do types[#types + 1] = e.type end
      assert.are.same({ "say", "log", "say", "end" }, types)
      assert.are.same({}, rt:events())
    end)

    it("a trace event has the call's fields", function()
      local rt = runtime()
      helper.start(rt, "s", [[
        api_node{ integration = "shop", path = "/echo", results = { "200" } }
        api_node{ integration = "shop", path = "/slow", timeout_ms = 50, results = { "200" } }
      ]])
      assert.is_true(rt:run(5000))
      local traces = helper.events(rt:events(), "trace", "s")
      assert.are.equal(2, #traces)
      local t = traces[1]
      assert.are.equal("shop", t.integration)
      assert.are.equal("GET", t.method)
      assert.are.equal(mock.url .. "/echo", t.url)
      assert.are.equal("200", t.label)
      assert.are.equal(200, t.status)
      assert.are.equal(1, t.attempts)
      assert.are.equal("number", type(t.elapsed_ms))
      assert.is_nil(t.reason)
      t = traces[2]
      assert.are.equal("timeout", t.label)
      assert.are.equal("timeout", t.reason)
      assert.are.equal("string", type(t.error))
      assert.is_nil(t.status)
    end)

    it("rt:api_node outside a session drives the loop, so sessions go on meanwhile", function()
      local rt = runtime()
      helper.start(rt, "s", [[ sleep(20) say("meanwhile") ]])
      local label = rt:api_node{ integration = "shop", path = "/slow", results = { "200" } }
      assert.are.equal("200", label)
      assert.are.same({ "meanwhile" }, helper.says(rt:events(), "s"))
    end)

    it("a closed runtime says so", function()
      local rt = runtime()
      rt:close()
      rt:close()
      assert.has_error(function() rt:sessions() end, "flowrun: rt:sessions: the runtime is closed")
    end)

    it("closing a runtime with sessions and calls in flight closes it, and the next runtime calls as before", function()
      local rt = runtime()
      helper.start(rt, "a", [[ api_node{ integration = "shop", path = "/second", results = { "200" } } say("late") ]])
      helper.start(rt, "b", [[ ask() ]])
      rt:step(10)
      assert.are.equal(2, rt:sessions())   -- both wait: one on its call, one on its ask
      rt:close()
      collectgarbage()
      collectgarbage()
      assert.has_error(function() rt:sessions() end, "flowrun: rt:sessions: the runtime is closed")
      assert.has_error(function() rt:events() end, "flowrun: rt:events: the runtime is closed")
      local again = runtime()
      helper.start(again, "c", [[ say(api_node{ integration = "shop", path = "/second", results = { "200" } }) ]])
      assert.is_true(again:run(30000))
      assert.are.same({ "200" }, helper.says(again:events(), "c"))
    end)
  end)
end)
