-- The REPL (`flowrun repl`): a person at a terminal, played through a
-- pseudo-terminal (build/pty.so), and `flowrun repl < script`.
local helper = require "spec.helper"

package.path = helper.root .. "/lua/?.lua;" .. package.path
local pty = require "pty"
local pretty = require "flowrun.pretty"

local TIMEOUT = helper.san and 20000 or 8000
local SECRET = "s3cr3t-t0ken-42"

-- Output as a person sees it: no colours, no cursor movements.
local function plain(s)
  return (s:gsub("\27%[[%d;?]*[A-Za-z]", ""):gsub("[\r\7]", ""))
end

describe("the REPL", function()
  local mock, dir

  setup(function()
    mock = helper.mock({
      { method = "GET", path = "/v1/product/{id}", status = 200, json = { id = "{id}", name = "Widget" } },
      { path = "/v1/missing", status = 404, json = { error = "no such thing" } },
      { path = "/v1/hang", fault = "no_response" },
      { path = "/v1/echo", echo = true },
      { path = "/v1/big", body = helper.code('string.rep("line of text\\n", 500)') },
    })
    dir = helper.tmpdir()
    helper.integrations({
      demo = {
        base_url = mock.url,
        headers = { Accept = "application/json" },
        auth = { bearer = helper.code('env("DEMO_TOKEN")') },
        endpoints = { get_product = { method = "GET", path = "/v1/product/{id}" } },
      },
    }, dir)
    helper.flow([[
      local id = ask("Your order number?")
      local name = ask("Your name?")
      say("Thanks " .. tostring(name) .. ", order " .. tostring(id))
    ]], dir, "order.lua")
    helper.flow([[
      for i = 1, 3 do sleep(150) say("tick " .. i) end
    ]], dir, "ticks.lua")
    helper.flow([[
      say("before")
      local label, res = api_node{ integration = "demo", path = "/v1/hang", results = { "200" } }
      say("after " .. label)
    ]], dir, "hangs.lua")
    helper.flow([[
      say("spinning")
      while true do end
    ]], dir, "spins.lua")
    helper.flow([[
      say("spinning under pcall")
      while true do pcall(function() for i = 1, 1e9 do end end) end
    ]], dir, "spins_pcall.lua")
    helper.flow([[
      say("spinning in a coroutine")
      coroutine.wrap(function() while true do end end)()
    ]], dir, "spins_coroutine.lua")
    helper.flow([[
      say("stuck in C")
      string.find(string.rep("a", 40), string.rep("a*", 40) .. "b")
    ]], dir, "stuck_in_c.lua")
  end)

  teardown(helper.cleanup)

  -- ---- a person at a terminal ----

  local sessions = {}

  local term_mt = {}
  term_mt.__index = term_mt

  -- Types a line (Enter included).
  function term_mt:line(text) assert(self.p:send(text .. "\r")) end
  function term_mt:keys(text) assert(self.p:send(text)) end

  -- Waits until the output after the last match, as the person sees it
  -- (no colours or cursor moves, "\r\n" as "\n"), holds text.
  function term_mt:expect(text, ms, raw)
    local until_ = helper.now() + (ms or TIMEOUT)
    repeat
      local out = self.p:output()
      if not raw then out = plain(out) end
      local at = select(2, out:find(text, (raw and self.rawpos or self.pos) + 1, true))
      if at then
        if raw then self.rawpos = at else self.pos = at end
        return
      end
      self.p:pump(20)
    until helper.now() > until_
    error(("expected %q in the REPL's output; it was:\n%s"):format(text, plain(self.p:output())), 2)
  end

  -- Waits for the next prompt ("> " at the start of a line).
  function term_mt:prompt() self:expect("\n> ") end

  function term_mt:output() return plain(self.p:output()) end

  -- Leaves with Ctrl-D; returns the exit status.
  function term_mt:quit()
    -- a Ctrl-D typed while the REPL is busy arrives with the terminal in
    -- cooked mode, where it is an end of file that libedit never reads: wait
    -- (a while) for the prompt first
    local until_ = helper.now() + 5000
    while not plain(self.p:output()):find("\n[>?] $") and helper.now() < until_ do self.p:pump(20) end
    self:keys("\4")
    local status = self.p:wait(TIMEOUT)
    local report = helper.sanitizer_report(self.p:output())
    if report then error("flowrun repl reported:\n" .. report, 2) end
    return status
  end

  -- Starts `flowrun repl ARGS...` on a terminal in dir; waits for the prompt.
  local function repl(args, opts)
    opts = opts or {}
    local argv = { helper.flowrun, "repl" }
    for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
    local home = opts.home or helper.tmpdir()
    local env = { HOME = home, TERM = "xterm", DEMO_TOKEN = SECRET, NO_COLOR = not opts.color and "1" or false,
                  FLOWRUN_INTEGRATIONS = false, LANG = "C.UTF-8" }
    if os.getenv("SPEC_CHILD_ASAN_OPTIONS") then
      env.LD_PRELOAD = false
      env.ASAN_OPTIONS = os.getenv("SPEC_CHILD_ASAN_OPTIONS")
    end
    local p = pty.spawn{ argv = argv, env = env, cwd = opts.cwd or dir, cols = 120, rows = 40 }
    local t = setmetatable({ p = p, home = home, pos = 0, rawpos = 0 }, term_mt)
    sessions[#sessions + 1] = p
    t:prompt()
    return t
  end

  after_each(function()
    for i = #sessions, 1, -1 do
      sessions[i]:close()
      sessions[i] = nil
    end
  end)

  describe("on a terminal", function()
    it("prints the value of an expression, and of =expr", function()
      local t = repl()
      t:line("1 + 1")
      t:expect("\n2\n")
      t:line("x = 6 * 7")
      t:prompt()
      t:line("=x")
      t:expect("\n42\n")
      t:line("'a', nil, true")
      t:expect('"a"\tnil\ttrue')
      assert.are.equal(0, t:quit())
    end)

    it("continues an incomplete chunk on a second prompt", function()
      local t = repl()
      t:line("for i = 1, 3 do")
      t:expect(">> ")
      t:line("  print(i * 10)")
      t:expect(">> ")
      t:line("end")
      t:expect("10\n20\n30")
      t:prompt()
      t:line("function f(a,")
      t:expect(">> ")
      t:line("  b) return a + b end")
      t:prompt()
      t:line("f(2, 3)")
      t:expect("\n5\n")
      t:quit()
    end)

    it("shows an api_node result as a summary and keeps the response in _", function()
      local t = repl()
      t:line('api_node{integration="demo", path="/v1/product/1", results={"200"}}')
      t:expect('label    "200"')
      t:expect("status   200 OK")
      t:expect("url      GET " .. mock.url .. "/v1/product/1")
      t:expect("content-type: application/json")
      t:expect('"name": "Widget"')
      t:prompt()
      t:line("_.json.name, _.status")
      t:expect('"Widget"\t200')
      t:prompt()
      t:line('label, res = api_node{integration="demo", path="/v1/missing", results={"200"}}')
      t:prompt()
      t:line("label, res.status")
      t:expect('"other"\t404')
      t:prompt()
      t:line('_, fresh = api_node{integration="demo", path="/v1/missing", results={"200"}}')
      t:prompt()
      t:line("fresh")                   -- nothing read yet: the summary reads its fields
      t:expect("status   404 Not Found  (")
      t:expect(" ms, 25 bytes)")
      t:expect("url      GET " .. mock.url .. "/v1/missing")
      assert.are.equal(0, t:quit())
      assert.is_nil(t:output():find(SECRET, 1, true))
    end)

    it("plays a flow that asks twice with .run; the person answers", function()
      local t = repl({ "order.lua" })
      t:line(".run")
      t:expect("Your order number?")
      t:expect("? ")
      t:line("42")
      t:expect("Your name?")
      t:expect("? ")
      t:line("Ann")
      t:expect("Thanks Ann, order 42")
      t:prompt()
      t:line("1 + 2")                   -- the REPL goes on
      t:expect("\n3\n")
      t:line(".run order.lua")          -- and plays it again, by name
      t:expect("Your order number?")
      t:line("7")
      t:expect("Your name?")
      t:keys("\4")                      -- Ctrl-D: the end-user has gone (ask returns nil)
      t:expect("Thanks nil, order 7")
      t:prompt()
      assert.are.equal(0, t:quit())
    end)

    it("ends a hanging call with Ctrl-C: label error, reason interrupted", function()
      local t = repl()
      -- a timeout no loaded machine reaches: only Ctrl-C ends this call
      local before = mock:count("/v1/hang")
      t:line('api_node{integration="demo", path="/v1/hang", timeout_ms=600000, results={"200"}}')
      assert.is_true(helper.wait_for(function() return mock:count("/v1/hang") > before end, TIMEOUT),
                     "the mock never saw the call")
      t:keys("\3")
      t:expect('label    "error"')
      t:expect("reason   interrupted")
      t:prompt()
      t:line("_.label, _.reason")
      t:expect('"error"\t"interrupted"')
      t:prompt()
      t:line("while true do end")           -- Lua that runs is interrupted too
      helper.wait_for(function() return false end, 300)
      t:keys("\3")
      t:expect("interrupted!")
      t:prompt()
      t:keys("half a line")                 -- and a line being typed is dropped
      t:keys("\3")
      t:prompt()
      t:line("'still here'")
      t:expect('"still here"')
      assert.are.equal(0, t:quit())
    end)

    -- Ctrl-C makes the terminal drop what was typed but not yet read; a
    -- wake-up for those keys then finds nothing to read. That is not the
    -- terminal going away: the REPL stays, however the keys and ^C interleave.
    it("stays when Ctrl-C drops keys it was about to read", function()
      local t = repl()
      for i = 1, 40 do
        t:keys(("typed %d"):format(i))
        t:keys("\3")
        -- a new prompt, usually; two Ctrl-C the REPL takes in one turn (a slow,
        -- sanitized build) give one: what must hold is that it stays (below)
        pcall(t.expect, t, "^C\n> ", 3000)
      end
      t:line("'still here'")
      t:expect('"still here"')
      assert.are.equal(0, t:quit())
    end)

    it("stops a flow in the foreground with Ctrl-C", function()
      local t = repl()
      t:line(".run hangs.lua")
      t:expect("before")
      helper.wait_for(function() return false end, 300)
      t:keys("\3")
      t:expect("the flow was stopped")
      t:prompt()
      t:line("2 * 21")
      t:expect("\n42\n")
      t:quit()
    end)

    it("stops a flow whose Lua code spins with Ctrl-C, in the foreground or the background", function()
      local t = repl({ "--limit", "instructions=0" })   -- only Ctrl-C stops it
      t:line(".run spins.lua")
      t:expect("spinning")
      helper.wait_for(function() return false end, 300)
      t:keys("\3")
      t:expect("interrupted!")
      t:prompt()
      t:line("2 * 21")
      t:expect("\n42")
      t:prompt()
      t:line(".run spins.lua &")                -- a background flow holds the loop
      t:expect("spinning")
      helper.wait_for(function() return false end, 300)
      t:keys("\3")
      t:expect("interrupted!")
      t:line("3 * 14")
      t:expect("\n42\n")
      t:line(".sessions")
      t:expect("no sessions")
      assert.are.equal(0, t:quit())
    end)

    it("stops a flow that spins under pcall: the interruption cannot be caught", function()
      local t = repl({ "--limit", "instructions=0" })
      t:line(".run spins_pcall.lua")
      t:expect("spinning under pcall")
      helper.wait_for(function() return false end, 300)
      t:keys("\3")
      t:expect("interrupted!")
      t:prompt()
      t:line("6 * 7")
      t:expect("42")
      assert.are.equal(0, t:quit())
    end)

    it("stops a flow spinning inside a coroutine of its own (the hook goes with its coroutines)", function()
      local t = repl({ "--limit", "instructions=0" })
      t:line(".run spins_coroutine.lua")
      t:expect("spinning in a coroutine")
      t:keys("\3")
      t:expect("spins_coroutine.lua:2: interrupted!")
      t:prompt()
      t:line("6 * 7")
      t:expect("42")
      t:prompt()
      assert.are.equal(0, t:quit())
    end)

    it("lets the person leave when a flow is stuck in C code, at the fourth Ctrl-C", function()
      local t = repl()
      t:line(".run stuck_in_c.lua")
      t:expect("stuck in C")
      for _ = 1, 3 do
        helper.wait_for(function() return false end, 200)
        t:keys("\3")
      end
      t:expect("the flow does not stop")
      t:keys("\3")
      local status = t.p:wait(TIMEOUT)
      assert.is_not_nil(status, "the REPL is still running")
      assert.are_not.equal(0, status)
    end)

    it("keeps the history in ~/.flowrun_history", function()
      local home = helper.tmpdir()
      local t = repl(nil, { home = home })
      t:line("history_marker_1 = 1")
      t:prompt()
      t:line("history_marker_2 = 2")
      t:prompt()
      assert.are.equal(0, t:quit())
      local h = helper.read(home .. "/.flowrun_history")
      assert.truthy(h, "no history file")
      assert.matches("history_marker_1", h, 1, true)
      assert.matches("history_marker_2", h, 1, true)
      -- the next REPL has it: Up brings the last line back
      t = repl(nil, { home = home })
      t:keys("\27[A")
      t:expect("history_marker_2")
      t:keys("\r")
      t:prompt()
      t:line("history_marker_2")
      t:expect("\n2\n")
      t:quit()
    end)

    it("keeps the last 1000 lines of history: an older file is cut to its last 1000", function()
      local home = helper.tmpdir()
      local lines = { "_HiStOrY_V2_" }
      for i = 1, 1200 do lines[#lines + 1] = "old_line_" .. i end
      helper.write(home .. "/.flowrun_history", table.concat(lines, "\n") .. "\n")
      local t = repl(nil, { home = home })
      t:line("newest_line = 1")
      t:prompt()
      assert.are.equal(0, t:quit())
      local kept = {}
      for l in helper.read(home .. "/.flowrun_history"):gmatch("[^\n]+") do
        if l ~= "_HiStOrY_V2_" then kept[#kept + 1] = l end
      end
      assert.are.equal(1000, #kept)
      assert.are.equal("old_line_202", kept[1])
      assert.are.equal("old_line_1200", kept[999])
      assert.are.equal("newest_line\\040=\\0401", kept[1000])
    end)

    it("searches the history back with Ctrl-R", function()
      local home = helper.tmpdir()
      local lines = { "_HiStOrY_V2_", "4200\\040+\\04042" }
      for i = 1, 30 do lines[#lines + 1] = "filler_" .. i end
      helper.write(home .. "/.flowrun_history", table.concat(lines, "\n") .. "\n")
      local t = repl(nil, { home = home })
      t:keys("\18")
      t:expect("bck:")
      t:keys("4200 +")
      t:expect("4200 + 42")
      t:keys("\r")              -- Enter ends the search, with the line found to edit
      t:keys("\r")              -- and runs it
      t:expect("\n4242\n")
      t:prompt()
      assert.are.equal(0, t:quit())
    end)

    it("keeps what the person answers to a flow's ask out of the history", function()
      local home = helper.tmpdir()
      local t = repl(nil, { home = home })
      t:line(".run order.lua")
      t:expect("Your order number?")
      t:line("answer_one_4711")
      t:expect("Your name?")
      t:line("answer_two_secret")
      t:expect("Thanks answer_two_secret, order answer_one_4711")
      t:prompt()
      t:line("after_the_flow = 1")
      t:prompt()
      assert.are.equal(0, t:quit())
      local h = helper.read(home .. "/.flowrun_history")
      assert.matches("order.lua", h, 1, true)       -- libedit writes spaces as \040
      assert.matches("after_the_flow", h, 1, true)
      assert.falsy(h:find("answer_one_4711", 1, true))
      assert.falsy(h:find("answer_two_secret", 1, true))
    end)

    it("Ctrl-C stops a completion that runs into a looping __index", function()
      local t = repl()
      t:line("t = setmetatable({}, { __index = function() while true do end end })")
      t:prompt()
      t:keys("t.x.\t")
      helper.wait_for(function() return false end, 300)
      t:keys("\3")                         -- ends the completion; the line stays
      helper.wait_for(function() return false end, 300)
      t:keys("\3")                         -- and this drops it
      t:prompt()
      t:line("'still here'")
      t:expect('"still here"')
      assert.are.equal(0, t:quit())
    end)

    it("completes integration names, endpoints, globals, fields and commands", function()
      local t = repl()
      t:keys('api_node{integration="de\t')
      t:expect('demo"')
      t:line(', path="/v1/product/9", results={"200"}}')
      t:expect('"id": "9"')
      t:prompt()
      t:keys('api_node{endpoint="demo.g\t')
      t:expect('demo.get_product"')
      t:line(', params={id=3}, results={"200"}}')
      t:expect('"id": "3"')
      t:prompt()
      t:keys("string.for\t")
      t:expect("string.format")
      t:keys("\3")
      t:prompt()
      t:keys(".integ\t")
      t:expect(".integrations")
      t:keys("\r")
      t:expect("demo  " .. mock.url)
      t:prompt()
      t:quit()
    end)

    it("completes endpoint paths inside path=\"...\", whatever the string holds so far", function()
      local t = repl()
      t:keys('api_node{integration="demo", path="/v1/pr\t')
      t:expect('oduct/{id}"')                  -- not a Lua global: the endpoint's path
      t:keys("\3")
      t:prompt()
      t:keys('api_node{path="/\t')
      t:expect('v1/product/{id}"')
      t:keys("\3")
      t:prompt()
      t:quit()
    end)

    it("completes .run and .load file names in the directory typed", function()
      local d = helper.tmpdir()
      os.execute("mkdir -p " .. helper.quote(d .. "/flows/deeper"))
      helper.write(d .. "/flows/only_hello.lua", 'say("hello from the sub folder")\n')
      helper.write(d .. "/flows/deeper/x.lua", "\n")
      helper.write(d .. "/top_level_file.lua", "\n")
      local t = repl({ "-I", dir .. "/integrations.lua" }, { cwd = d })
      t:keys(".run flows/o\t")
      t:expect("nly_hello.lua ")
      t:keys("\r")
      t:expect("hello from the sub folder")
      t:prompt()
      t:keys(".load flows/d\t")
      t:expect("eeper/")
      t:keys("\t")                             -- a folder's one file
      t:expect("x.lua ")
      t:keys("\3")
      t:prompt()
      t:quit()
    end)

    it("completes fields after subscripts, and api_node's and flow steps' field names", function()
      local t = repl()
      t:line('t = { data = { { name_of_thing = 1 } }, ["odd key"] = { inner_field = 2 } }')
      t:prompt()
      t:keys("t.data[1].na\t")
      t:expect("me_of_thing")
      t:keys("\r")
      t:expect("\n1")
      t:prompt()
      t:keys('t["odd key"].in\t')
      t:expect("ner_field")
      t:keys("\r")
      t:expect("\n2")
      t:prompt()
      t:keys("api_node{inte\t")
      t:expect("gration=")
      t:keys('"demo", headers={A="b"}, res\t')
      t:expect("ults=")
      t:keys('{"200"}, pat\t')
      t:expect("h=")
      t:keys('"/v1/product/4"}\r')
      t:expect('"id": "4"')
      t:prompt()
      t:keys('f = require("flowrun.flow").ask{pro\t')
      t:expect("mpt=")
      t:keys("\3")
      t:prompt()
      t:quit()
    end)

    it("reports an error with a traceback and goes on", function()
      local t = repl()
      t:line("local function inner() error('boom') end inner()")
      t:expect("stdin:1: boom")
      t:expect("stack traceback:")
      t:expect("in local 'inner'")
      t:prompt()
      t:line("1 +")
      t:expect(">> ")
      t:line(")")
      t:expect("unexpected symbol")
      t:prompt()
      t:line('api_node{integration="nope", path="/", results={"200"}}')
      t:expect("nope")
      t:prompt()
      t:line("'alive'")
      t:expect('"alive"')
      assert.are.equal(0, t:quit())
    end)

    it("keeps background flows running while a call is in flight", function()
      local t = repl()
      t:line(".run ticks.lua &")
      t:prompt()
      t:line('api_node{integration="demo", path="/v1/hang", timeout_ms=900, results={"200"}}')
      t:expect("[1] tick 1")
      t:expect("[1] tick 3")
      t:expect('label    "timeout"')
      t:prompt()
      t:quit()
    end)

    it("colours its output on a terminal unless NO_COLOR is set", function()
      local t = repl(nil, { color = true })
      t:line("'text'")
      t:expect('\27[32m"text"\27[0m', nil, true)
      t:quit()
    end)
  end)

  -- ---- scripts ----

  local function script(text, args, env)
    local a = { "repl" }
    for _, x in ipairs(args or {}) do a[#a + 1] = x end
    env = env or {}
    if env.DEMO_TOKEN == nil then env.DEMO_TOKEN = SECRET end
    return helper.cli{ args = a, stdin = text, cwd = dir, env = env }
  end

  describe("without a terminal (flowrun repl < script)", function()
    it("works line by line, with no prompt and no colour", function()
      local r = script("1 + 1\nx = 3\nfor i = 1, 2 do\n  print(i * x)\nend\n'done'\n")
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal('2\n3\n6\n"done"\n', r.stdout)
      assert.are.equal("", r.stderr)
    end)

    it("plays the README's tour with make repl (scripts/demo/run.sh repl)", function()
      local d = helper.tmpdir()
      helper.write(d .. "/in", table.concat({
        'api_node{integration="demo", path="/v1/product/1", results={"200"}}',
        "_.json.name", ".last", ".run", "1", "7", "",
      }, "\n") .. "\n")
      local p = io.popen("env -u DEMO_TOKEN sh " .. helper.quote(helper.root .. "/scripts/demo/run.sh")
                         .. " repl <" .. d .. "/in 2>&1")
      local out = p:read("a")
      assert.is_true(p:close(), out)
      assert.matches('label    "200"', out, 1, true)
      assert.matches('"name": "Widget"', out, 1, true)
      assert.matches("\n\"Widget\"\n", out)
      assert.matches("-H 'Authorization: Bearer ***'", out, 1, true)
      assert.matches("Which product?\nWidget: 9.5 EUR\nAnything else?\nThere is no product 7\nAnything else?\nBye", out, 1, true)
      assert.is_nil(out:find("demo-token", 1, true))
    end)

    it("prints a string with NUL bytes whole, secrets hidden around them", function()
      local r = script('"a\\0bc"\n#"a\\0bc"\nenv("DEMO_TOKEN") .. "\\0" .. env("DEMO_TOKEN")\n')
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal('"a\\000bc"\n4\n"***\\000***"\n', r.stdout)
    end)

    it("reads the same from a pipe", function()
      local r = helper.cli{ args = { "repl", "-I", dir .. "/integrations.lua" }, stdin = "2 ^ 10\n",
                            stdin_pipe = true, env = { DEMO_TOKEN = SECRET } }
      assert.are.equal("1024.0\n", r.stdout)
    end)

    it("answers a flow's asks from the next lines, then goes on", function()
      local r = script(".run order.lua\n42\nAnn\n'after'\n")
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal('Your order number?\nYour name?\nThanks Ann, order 42\n"after"\n', r.stdout)
    end)

    it("starts with a secret unset, and the integration that needs it says so when called", function()
      local d = helper.tmpdir()
      helper.integrations('return { needs = { base_url = "http://127.0.0.1:9/v1", '
        .. 'auth = { bearer = env("REPL_UNSET_TOKEN") } }, plain = { base_url = "http://127.0.0.1:9/v1" } }', d)
      local r = helper.cli{ args = { "repl" }, cwd = d, env = { REPL_UNSET_TOKEN = false },
        stdin = 'api_node{ integration = "needs", path = "/x", results = { "200" } }\n'
             .. '(api_node{ integration = "plain", path = "/x", results = { "200" }, timeout_ms = 500 })\n' }
      assert.are.equal(1, r.code, r.stderr)
      assert.matches("stdin:1: api_node: integration 'needs' cannot be used: environment variable "
                     .. "REPL_UNSET_TOKEN is not set", r.stderr, 1, true)
      assert.matches('"error"', r.stdout, 1, true)   -- the other one is called (and refused: port 9)
    end)

    it("names the script's own line in errors, answers to a flow counted", function()
      helper.flow('say(ask("q?"))', dir, "asks_once.lua")
      local r = script('x = 1\n\ny = 2\nerror("boom")\n.run asks_once.lua\nanswer\nz = nil + 1\n')
      assert.are.equal(1, r.code)
      assert.matches("stdin:4: boom", r.stderr, 1, true)
      assert.matches("stdin:7: attempt to perform arithmetic on a nil value", r.stderr, 1, true)
    end)

    it("exits 1 when a line raised an error, after running the rest", function()
      local r = script("error('first')\n'second'\n")
      assert.are.equal(1, r.code)
      assert.are.equal('"second"\n', r.stdout)
      assert.matches("stdin:1: first", r.stderr, 1, true)
    end)

    it("reports a chunk left unfinished at the end", function()
      local r = script("for i = 1, 2 do\n")
      assert.are.equal(1, r.code)
      assert.matches("<eof>", r.stderr, 1, true)
    end)

    it("prints an api_node summary with the body cut, and .last as curl", function()
      local r = script('api_node{integration="demo", path="/v1/big", results={"200"}}\n.last\n')
      assert.are.equal(0, r.code, r.stderr)
      assert.matches('label    "200"', r.stdout, 1, true)
      assert.matches("… 471 more lines", r.stdout, 1, true)
      assert.matches("curl " .. mock.url .. "/v1/big \\\n  -H 'Accept: application/json' \\\n"
        .. '  -H "Authorization: Bearer $DEMO_TOKEN"', r.stdout, 1, true)
      assert.is_nil(r.stdout:find(SECRET, 1, true))
    end)

    it("shows a POST in .last with its method and body", function()
      local r = script('api_node{integration="demo", method="PUT", path="/v1/echo", body={a=1}, results={"200"}}\n.last\n')
      assert.matches("curl -X PUT " .. mock.url .. "/v1/echo", r.stdout, 1, true)
      assert.matches([[-H 'Content-Type: application/json']], r.stdout, 1, true)
      assert.matches([[--data-raw '{"a":1}']], r.stdout, 1, true)
    end)

    it(".last writes each env() secret as its shell variable, and the line runs", function()
      local d = helper.tmpdir()
      local ig = helper.integrations({
        bear = { base_url = mock.url .. "/v1", headers = { ["X-Key"] = helper.code('env("SPEC_KEY")') },
                 auth = { bearer = helper.code('env("SPEC_TOKEN")') } },
        basic = { base_url = mock.url .. "/v1", auth = { basic = { "ann", helper.code('env("SPEC_PASS")') } } },
      }, d)
      local env = { SPEC_TOKEN = [[t0k"en$HOME'!x\y`z]], SPEC_KEY = "k3y-value_1", SPEC_PASS = "p@ss w'rd" }
      local r = helper.cli{ args = { "repl", "-I", ig }, env = env, stdin = table.concat({
        'api_node{integration="bear", method="POST", path="/echo", query={q=env("SPEC_KEY"), p=env("SPEC_PASS")}, '
          .. 'body={note="it\'s", key=env("SPEC_KEY")}, results={"200"}}',
        '.last',
        'api_node{integration="basic", path="/echo", results={"200"}}',
        '.last',
      }, "\n") .. "\n" }
      assert.are.equal(0, r.code, r.stderr)
      for _, v in pairs(env) do assert.is_nil(r.stdout:find(v, 1, true), v) end
      assert.matches([[-H "Authorization: Bearer $SPEC_TOKEN"]], r.stdout, 1, true)
      assert.matches([[-H "X-Key: $SPEC_KEY"]], r.stdout, 1, true)
      assert.matches([[-u "ann:$SPEC_PASS"]], r.stdout, 1, true)
      -- a secret held encoded (percent-encoded in the query) cannot be a variable
      assert.matches([["http://127.0.0.1:%d+/v1/echo%?p=%*%*%*&q=$SPEC_KEY"]], r.stdout)
      -- each command, run by a shell with the variables set, sends what flowrun sent
      local cjson = require "cjson"
      local sent = {}
      for cmd in r.stdout:gmatch("\n(curl .-[^\\])\n") do
        local file = helper.write(d .. "/cmd.sh", cmd .. " -s --max-time 20\n")
        local p = io.popen(("env -u LD_PRELOAD -u ASAN_OPTIONS SPEC_TOKEN=%s SPEC_KEY=%s SPEC_PASS=%s sh %s"):format(
          helper.quote(env.SPEC_TOKEN), helper.quote(env.SPEC_KEY), helper.quote(env.SPEC_PASS), file))
        sent[#sent + 1] = cjson.decode(p:read("a"))
        p:close()
      end
      assert.are.equal(2, #sent)
      assert.are.equal("POST", sent[1].method)
      assert.are.equal("Bearer " .. env.SPEC_TOKEN, sent[1].headers.authorization)
      assert.are.equal(env.SPEC_KEY, sent[1].headers["x-key"])
      assert.are.equal(env.SPEC_KEY, sent[1].args.q)
      assert.are.same({ note = "it's", key = env.SPEC_KEY }, cjson.decode(sent[1].body))
      local b64 = io.popen("printf %s " .. helper.quote("ann:" .. env.SPEC_PASS) .. " | env -u LD_PRELOAD base64 -w0")
      assert.are.equal("Basic " .. b64:read("a"), sent[2].headers.authorization)
      b64:close()
    end)

    it("never shows a secret: values, .integrations, .last, errors", function()
      local r = script(table.concat({
        'os.getenv("DEMO_TOKEN")',
        'print("token: " .. os.getenv("DEMO_TOKEN"))',
        '.integrations',
        'api_node{integration="demo", path="/v1/echo", results={"200"}}',
        '.last',
        'error("bad " .. os.getenv("DEMO_TOKEN"))',
      }, "\n") .. "\n")
      assert.matches('"***"', r.stdout, 1, true)
      assert.matches("token: ***", r.stdout, 1, true)
      assert.matches("headers: Accept, Authorization", r.stdout, 1, true)
      assert.matches("bad ***", r.stderr, 1, true)
      assert.is_nil(r.stdout:find(SECRET, 1, true))
      assert.is_nil(r.stderr:find(SECRET, 1, true))
    end)

    it("defines integrations with integration(), validated like the file", function()
      local r = script(table.concat({
        'integration("local", { base_url = "' .. mock.url .. '/v1", timeout_ms = 2000 })',
        'label, res = api_node{integration="local", path="/product/5", results={"200"}}',
        'label, res.json.id',
        'integration("bad", { base_url = "ftp://x", timeout_ms = "soon" })',
        'integration("local", { base_url = "' .. mock.url .. '", endpoints = { p = { path = "/v1/product/{id}" } } })',
        'select(2, api_node{endpoint="local.p", params={id=8}, results={"200"}}).json.id',
      }, "\n") .. "\n")
      assert.matches('"200"\t"5"\n', r.stdout, 1, true)
      assert.matches("integration(): bad", r.stderr, 1, true)
      assert.matches('"8"\n', r.stdout, 1, true)
    end)

    it("has .help, .integrations, .trace, and names the commands when one is unknown", function()
      local r = script(".help\n.trace on\napi_node{integration=\"demo\", path=\"/v1/echo\", results={\"200\"}}\n.trace off\n.frobnicate\n")
      assert.matches(".run [FLOW [ARGS]] [&]", r.stdout, 1, true)
      assert.matches(".last", r.stdout, 1, true)
      assert.matches("trace is on", r.stdout, 1, true)
      assert.matches("trace session=- integration=demo method=GET url=" .. mock.url .. "/v1/echo label=200",
        r.stderr, 1, true)
      assert.matches("unknown command .frobnicate; there are .help .integrations .load .run", r.stderr, 1, true)
    end)

    it(".load runs a file in the REPL's globals", function()
      local file = helper.write(helper.tmpdir() .. "/lib.lua", "greeting = 'hi'\nfunction twice(x) return 2 * x end\n")
      local r = script(".load " .. file .. "\ngreeting, twice(21)\n.load /nonexistent.lua\n")
      assert.matches('"hi"\t42\n', r.stdout, 1, true)
      assert.matches("nonexistent", r.stderr, 1, true)
    end)

    it("runs flows in the background with .run &, and .sessions lists them", function()
      local r = script(".run ticks.lua &\n.sessions\nsleep(800)\n.sessions\n")
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("[1] running\n", r.stdout, 1, true)
      assert.matches("[1] tick 1\n[1] tick 2\n[1] tick 3\n", r.stdout, 1, true)
      assert.matches("no sessions\n", r.stdout, 1, true)
    end)

    it("steps in slices: a burst of background flows does not hold the next line until it is done", function()
      -- 100 background flows wake together from sleep(300) and each runs a few
      -- ms of Lua: the REPL's sleep(320) ends within a slice of its time, so
      -- 'typed' comes out while most of them have not run; in one step (no
      -- slices) it would come after all that were due then. The last sleep
      -- lets them all end before the script does.
      helper.flow([[
        sleep(300)
        local n = 0
        for i = 1, tonumber(args[1]) do n = n + i end
        say("hog")
      ]], dir, "hog.lua")                 -- args[1]: how much Lua it runs
      local function hogs_before_typed(r, how)
        assert.are.equal(0, r.code, r.stderr)
        local before = r.stdout:match("^(.-)typed\n")
        assert.is_truthy(before, r.stdout)
        local hogs, all = 0, 0
        for _ in before:gmatch("%] hog\n") do hogs = hogs + 1 end
        assert.is_true(hogs < 50, hogs .. " flows said hog before the next line ran (" .. how .. ")")
        for _ in r.stdout:gmatch("%] hog\n") do all = all + 1 end
        -- most ran after it (the REPL leaves at the end of its input: on a slow
        -- machine the last few may not have run by then)
        assert.is_true(all - hogs >= 40, (all - hogs) .. " flows said hog after the next line ran (" .. how .. ")")
      end
      -- a file, read line by line: the REPL's own sleep(320) ends on time
      hogs_before_typed(script(string.rep(".run hog.lua 1e6 &\n", 100) .. "sleep(320)\nprint('typed')\n"
                               .. (helper.san and "sleep(8000)\n" or "sleep(3000)\n")), "a file")
      -- a pipe, read by the loop between slices: a line that comes in the
      -- middle of the burst (each flow about 10 ms now) is read in it
      helper.write(dir .. "/hogs.txt", string.rep(".run hog.lua 3e6 &\n", 100))
      hogs_before_typed(helper.cli{ args = { "repl" }, cwd = dir, env = { DEMO_TOKEN = SECRET },
                                    stdin_cmd = "cat " .. helper.quote(dir .. "/hogs.txt")
                                      .. "; sleep 0.5; echo \"print('typed')\"; sleep "
                                      .. (helper.san and 12 or 6) }, "a pipe")
    end)

    it(".fg answers a background flow's asks, .stop ends one, .quit leaves before the next line", function()
      local r = script(".run order.lua &\n.fg 1\n42\nann\n.run ticks.lua &\n.stop 2\n.sessions\n"
        .. "sleep(600)\n.quit\n'after quit'\n")
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("Your order number?\nYour name?\nThanks ann, order 42\nno sessions\n", r.stdout)
      assert.are.equal("", r.stderr)
    end)

    it(".fg without an id takes the last background flow; .fg and .stop of no session are errors", function()
      helper.flow([[ local a = ask("which?") say("session " .. session.id .. " got " .. tostring(a)) ]], dir, "who.lua")
      local r = script(".run who.lua &\n.run who.lua &\n.fg\nfirst\n.fg\nsecond\n.stop 1\n.fg 9\n")
      assert.are.equal(1, r.code)
      assert.matches("\nsession 2 got first\n", r.stdout, 1, true)
      assert.matches("\nsession 1 got second\n", r.stdout, 1, true)
      assert.are.equal("no session 1 (.sessions lists them)\nno session 9 (.sessions lists them)\n", r.stderr)
    end)

    it("re-reads a flow file on each .run", function()
      local d = helper.tmpdir()
      local flow = helper.flow('say("one")', d, "edit.lua")
      local r = helper.cli{ args = { "repl", flow }, cwd = d,
        stdin = ".run\nlocal f = io.open('" .. flow .. "', 'w') f:write('say(\"two\")') f:close()\n.run\n" }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("one\ntwo\n", r.stdout)
    end)

    it("finds the integrations beside the flow, or takes -I FILE", function()
      local r = helper.cli{ args = { "repl", dir .. "/order.lua" }, stdin = ".integrations\n",
                            env = { DEMO_TOKEN = SECRET } }
      assert.matches("demo  " .. mock.url, r.stdout, 1, true)
      r = helper.cli{ args = { "repl", "-I", dir .. "/integrations.lua" }, stdin = ".integrations\n",
                      env = { DEMO_TOKEN = SECRET } }
      assert.matches("demo  " .. mock.url, r.stdout, 1, true)
      r = helper.cli{ args = { "repl", "-I", dir .. "/missing.lua" }, stdin = "" }
      assert.are.equal(2, r.code)
    end)
  end)

  -- ---- the pretty-printer ----

  describe("pretty-printer", function()
    it("sorts keys: the array part first, then numbers, then strings", function()
      assert.are.equal('{ 1, 2, [5] = "x", a = true, b = { c = 1 } }',
        pretty.value({ 1, 2, b = { c = 1 }, a = true, [5] = "x" }))
    end)

    it("marks cycles", function()
      local t = { name = "t" }
      t.self = t
      assert.are.equal('{ name = "t", self = <cycle> }', pretty.value(t))
    end)

    it("cuts long strings, saying how long they were", function()
      local s = pretty.value(("x"):rep(1000), { string = 10 })
      assert.are.equal('"xxxxxxxxxx"… (1000 bytes)', s)
    end)

    it("nests what does not fit on a line", function()
      local s = pretty.value({ list = { ("a"):rep(30), ("b"):rep(30), ("c"):rep(30) } }, { width = 40 })
      assert.are.equal('{\n  list = {\n    "' .. ("a"):rep(30) .. '",\n    "' .. ("b"):rep(30)
        .. '",\n    "' .. ("c"):rep(30) .. '"\n  }\n}', s)
    end)

    it("quotes keys that are not names and escapes control characters", function()
      assert.are.equal('{ ["a b"] = "line\\nnext", ["end"] = 1 }', pretty.value({ ["a b"] = "line\nnext", ["end"] = 1 }))
    end)

    it("shows at most 50 entries of a table, saying how many more", function()
      local t = {}
      for i = 1, 60 do t[i] = i end
      local s = pretty.value(t, { width = 100000 })
      local shown = {}
      for i = 1, 50 do shown[i] = tostring(i) end
      assert.are.equal("{ " .. table.concat(shown, ", ") .. ", … 10 more }", s)
      local keyed = {}
      for i = 1, 51 do keyed[("k%02d"):format(i)] = true end
      assert.matches(", k50 = true, … 1 more }$", pretty.value(keyed, { width = 100000 }))
    end)

    it("shows 6 levels of nesting, and {…} below", function()
      local deep = { 1 }
      for _ = 1, 6 do deep = { deep } end   -- 7 tables, a number at the bottom
      assert.are.equal("{ { { { { { {…} } } } } } }", pretty.value(deep))
      assert.are.equal("{ { { { { { {} } } } } } }", pretty.value({ { { { { { {} } } } } } }))
      assert.are.equal("{ { { { { { 1 } } } } } }", pretty.value({ { { { { { 1 } } } } } }))
    end)

    it("indents JSON keeping its order, and cuts it", function()
      assert.are.equal('{\n  "b": 1,\n  "a": [\n    true,\n    null\n  ],\n  "e": {}\n}',
        pretty.json('{"b":1,"a":[true,null],"e":{}}'))
      assert.are.equal('[\n  1,\n…', pretty.json("[1,2,3,4]", { lines = 2 }))
    end)

    it("summarises a response", function()
      local s = pretty.response({ label = "other", status = 404, elapsed_ms = 12, attempts = 2,
        url = "http://api.example/x", body = "gone", headers = { ["content-type"] = "text/plain", server = "x" } },
        { method = "GET" })
      assert.are.equal(table.concat({
        'label    "other"  (404 is not among the declared results)',
        "status   404 Not Found  (12 ms, 2 attempts, 4 bytes)",
        "url      GET http://api.example/x",
        "headers  content-type: text/plain",
        "         (1 more in _.headers)",
        "body     gone",
      }, "\n"), s)
    end)
  end)
end)
