-- README: Declarative flows. Flows of lua/flowrun/flow.lua running as sessions:
-- routing by label against the mock API, steps, switch, "flow:" hand-over,
-- and the validation that happens when a flow is loaded.
local helper = require "spec.helper"

describe("Declarative flows", function()
  local mock, ig_dir, ig_file

  setup(function()
    mock = helper.mock({
      { path = "/orders/42", json = { id = "42", status = "shipped" } },
      { path = "/orders/7", status = 404, json = { error = "no such order" } },
      { path = "/status/{s}", json = { status = "{s}" } },
      { path = "/created", status = 201, json = { status = "shipped" } },
      { path = "/teapot", status = 418, body = "short and stout" },
      { path = "/fail", status = 503, body = "down" },
      { path = "/notjson", body = "plain" },
      { path = "/hang", fault = "no_response" },
      { path = "/slow", delay_ms = 200, body = "slow" },
      { path = "/echo", echo = true },
    })
    ig_dir = helper.tmpdir()
    ig_file = helper.integrations({
      shop = { base_url = mock.url, headers = { Accept = "application/json" } },
      down = { base_url = "http://127.0.0.1:" .. helper.closed_port() },
      tiny = { base_url = mock.url, max_connections = 1, queue_timeout_ms = 0 },
    }, ig_dir)
  end)

  teardown(helper.cleanup)

  -- Writes source as a flow beside the integrations and runs it.
  local function run(source, opts)
    opts = opts or {}
    local flow = helper.flow(source, opts.dir or ig_dir, opts.name or ("flow_" .. math.random(1e9) .. ".lua"))
    local args = { "run" }
    for _, a in ipairs(opts.before or {}) do args[#args + 1] = a end
    args[#args + 1] = "-I"
    args[#args + 1] = ig_file
    args[#args + 1] = flow
    for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
    local r = helper.cli{ args = args, stdin = opts.stdin }
    r.flow = flow
    return r
  end

  -- a flow calling args[1] (an integration) at path args[2], each label to
  -- its own step
  local ROUTER = [[
local flow = require "flowrun.flow"
return flow.define {
  start = "call",
  defaults = { other = "d_other", error = "d_error", timeout = "d_timeout", ["max-connection"] = "d_maxconn" },
  steps = {
    call = flow.api {
      integration = function() return args[1] end,
      path = function() return args[2] end,
      timeout_ms = 600,
      save = "res",
      on = { ["200"] = "ok", ["404"] = "not_found", ["5xx"] = "server" },
    },
    ok = flow.say { text = function(s) return "200 " .. s.res.body end },
    not_found = flow.say "404",
    server = flow.say { text = function(s) return "5xx " .. s.res.status end },
    d_other = flow.say { text = function(s) return "other " .. s.res.status end },
    d_error = flow.say { text = function(s) return "error " .. s.res.reason end },
    d_timeout = flow.say { text = function(s) return "timeout " .. s.res.reason end },
    d_maxconn = flow.say { text = function(s) return "max-connection " .. s.res.reason end },
  },
}
]]

  describe("routing by result label", function()
    local cases = {
      { "a declared status", "shop", "/slow", "200 slow\n" },
      { "another declared status", "shop", "/orders/7", "404\n" },
      { "a declared class", "shop", "/fail", "5xx 503\n" },
      { "other, through defaults", "shop", "/teapot", "other 418\n" },
      { "error, through defaults", "down", "/x", "error refused\n" },
      { "timeout, through defaults", "shop", "/hang", "timeout timeout\n" },
    }
    for _, c in ipairs(cases) do
      it("routes " .. c[1], function()
        local r = run(ROUTER, { args = { c[2], c[3] } })
        assert.are.equal(0, r.code, r.stderr)
        assert.are.equal(c[4], r.stdout)
      end)
    end

    it("routes max-connection, through defaults", function()
      local r = run(ROUTER, { before = { "--sessions", "2" }, args = { "tiny", "/slow" } })
      assert.are.equal(0, r.code, r.stderr)
      local lines = helper.lines(r.stdout)
      table.sort(lines)
      assert.are.same({ "[1] 200 slow", "[2] max-connection pool_full" }, lines)
    end)

    it("prefers the step's own on over defaults for a default label", function()
      local r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "call",
  defaults = { other = "generic", error = "generic", timeout = "generic", ["max-connection"] = "generic" },
  steps = {
    call = flow.api { integration = "shop", path = "/hang", timeout_ms = 100,
                      on = { ["200"] = flow.END, timeout = "own" } },
    own = flow.say "own timeout step",
    generic = flow.say "generic step",
  },
}
]])
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("own timeout step\n", r.stdout)
    end)

    it("ends the flow on a label routed to flow.END", function()
      local r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "call",
  defaults = { other = flow.END, error = flow.END, timeout = flow.END, ["max-connection"] = flow.END },
  steps = {
    call = flow.api { integration = "shop", path = "/orders/7", on = { ["200"] = "never", ["404"] = flow.END } },
    never = flow.say "never",
  },
}
]])
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("", r.stdout)
    end)

    it("gives api_node every field, each of which may be a function of the session", function()
      local r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "name",
  defaults = { other = "bad", error = "bad", timeout = "bad", ["max-connection"] = "bad" },
  steps = {
    name = flow.ask { prompt = "name?", save = "who", next = "call" },
    call = flow.api {
      integration = "shop",
      method = function() return "POST" end,
      path = "/{p}",
      params = function() return { p = "echo" } end,
      query = function(s) return { who = s.who, tag = { "a", "b" } } end,
      headers = function(s) return { ["X-Who"] = s.who } end,
      body = function(s) return { hello = s.who } end,
      timeout_ms = function() return 2000 end,
      save = "res",
      on = { ["200"] = "show" },
    },
    show = flow.say { text = function(s)
      local e = s.res.json
      return table.concat({ e.method, e.path, e.query, e.headers["x-who"], e.body }, " | ")
    end },
    bad = flow.say { text = function(s) return "bad " .. s.res.label end },
  },
}
]], { stdin = "Ada\n" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal('name?\nPOST | /echo | tag=a&tag=b&who=Ada | Ada | {"hello":"Ada"}\n', r.stdout)
    end)
  end)

  describe("steps", function()
    it("say, ask with save, code steps and next, until a step without next", function()
      local r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "hello",
  steps = {
    hello = flow.say { text = "Hi", next = "q" },
    q = flow.ask { prompt = function(s) return "Number, " .. s.id .. "?" end, save = "n", next = "route" },
    route = function(s)
      if tonumber(s.n) then return "even_or_odd" end
      return "q"
    end,
    even_or_odd = flow.say {
      text = function(s) return s.n % 2 == 0 and "even" or "odd" end,
      next = function(s) return s.n == "3" and "bye" or "q" end,
    },
    bye = flow.say "Bye",
  },
}
]], { stdin = "x\n4\n3\n" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("Hi\nNumber, 1?\nNumber, 1?\neven\nNumber, 1?\nodd\nBye\n", r.stdout)
    end)

    it("goes to ask's closed target when the channel is closed, else ends", function()
      local source = [[
local flow = require "flowrun.flow"
return flow.define {
  start = "q",
  steps = {
    q = flow.ask { prompt = "?", next = "q"%s },
    left = flow.say "the user left",
  },
}
]]
      local r = run(source:format(', closed = "left"'), { stdin = "a\nb\n" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("?\n?\n?\nthe user left\n", r.stdout)
      r = run(source:format(""), { stdin = "a\n" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("?\n?\n", r.stdout)
    end)

    it("sleeps in a sleep step, suspending only that session", function()
      local t0 = helper.now()
      local r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "nap",
  steps = {
    nap = flow.sleep { ms = function(s) return s.id == "1" and 300 or 0 end, next = "done" },
    done = flow.say { text = function(s) return "woke " .. s.id end },
  },
}
]], { before = { "--sessions", "2" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("[2] woke 2\n[1] woke 1\n", r.stdout)
      assert.is_true(helper.now() - t0 >= 300)
    end)

    it("flow.sleep(ms) is a sleep step of ms; with no next the flow ends after it", function()
      -- order, not time: session 1 naps 400 ms and ends, session 2 says
      -- "mid" after 200 ms, so 2's say comes before 1's end (flowrun host
      -- writes both as they happen); a nap of 0.4 ms would end 1 first
      local flow = helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "hello",
  steps = {
    hello = function(s) say("hello " .. s.id) return s.id == "1" and "nap" or "mid" end,
    nap = flow.sleep(400),
    mid = function() sleep(200) say("mid") end,
  },
}
]], ig_dir, "nap_" .. math.random(1e9) .. ".lua")
      local r = helper.cli{ args = { "host", "-I", ig_file, flow },
                            stdin_cmd = [[printf '{"session":"1","text":"go"}\n{"session":"2","text":"go"}\n']] }
      assert.are.equal(0, r.code, r.stderr)
      local order = {}
      for line in r.stdout:gmatch("[^\n]+") do
        if line:find('"end"') or line:find('"say"') then order[#order + 1] = line end
      end
      assert.are.same({
        '{"session":"1","say":"hello 1"}', '{"session":"2","say":"hello 2"}',
        '{"session":"2","say":"mid"}', '{"session":"2","end":"done"}',
        '{"session":"1","end":"done"}',
      }, order)
    end)

    it("stores an api step's response in session[save], for every label", function()
      local r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "call",
  defaults = { other = "show", error = "show", timeout = "show", ["max-connection"] = "show" },
  steps = {
    call = flow.api { integration = "shop", path = "/teapot", save = "got", on = { ["200"] = "show" } },
    show = flow.say { text = function(s) return s.got.label .. " " .. s.got.status .. " " .. s.got.body end },
  },
}
]])
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("other 418 short and stout\n", r.stdout)
    end)
  end)

  describe("switch", function()
    local SWITCH = [[
local flow = require "flowrun.flow"
return flow.define {
  start = "call",
  defaults = { other = "other", error = "other", timeout = "other", ["max-connection"] = "other" },
  steps = {
    call = flow.api {
      integration = "shop",
      path = function() return args[1] end,
      save = "res",
      switch = function(res, s)
        s.calls = (s.calls or 0) + 1
        return res.json and res.json.status or nil
      end,
      on = { ["200"] = "ok", ["404"] = "nf", shipped = "shipped", pending = "pending" },
    },
    ok = flow.say { text = function(s) return "200 after " .. s.calls .. " switch call" end },
    nf = flow.say { text = function(s) return "404, switch calls: " .. (s.calls or 0) end },
    shipped = flow.say "shipped",
    pending = flow.say "pending",
    other = flow.say { text = function(s) return s.res.label .. ", switch calls: " .. (s.calls or 0) end },
  },
}
]]

    it("routes a declared success by the label the switch returns", function()
      assert.are.equal("shipped\n", run(SWITCH, { args = { "/orders/42" } }).stdout)
      assert.are.equal("pending\n", run(SWITCH, { args = { "/status/pending" } }).stdout)
    end)

    it("keeps the status label when the switch returns nil", function()
      local r = run(SWITCH, { args = { "/notjson" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("200 after 1 switch call\n", r.stdout)
    end)

    it("keeps the status label, with a warning, when the switch returns another value", function()
      local r = run(SWITCH, { args = { "/status/lost" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("200 after 1 switch call\n", r.stdout)
      assert.matches('step "call": switch returned "lost", not one of the labels of on; routing "200"',
        r.stderr, 1, true)
    end)

    it("is not called for a status that is not a declared success", function()
      assert.are.equal("404, switch calls: 0\n", run(SWITCH, { args = { "/orders/7" } }).stdout)
      -- a 201 is a success, but not declared: its label is other
      assert.are.equal("other, switch calls: 0\n", run(SWITCH, { args = { "/created" } }).stdout)
      assert.are.equal("other, switch calls: 0\n", run(SWITCH, { args = { "/teapot" } }).stdout)
    end)

    it("refuses an on key that is a result label misspelt, even beside switch labels", function()
      for typo, says in pairs {
        timout = '"timout" looks like the result label "timeout" misspelt',
        eror = '"eror" looks like the result label "error" misspelt',
        max_connection = '"max_connection" looks like the result label "max-connection" misspelt',
        ["2000"] = '"2000" is not a status',
        ["40x"] = '"40x" is not a status',
      } do
        local src = SWITCH:gsub("pending = \"pending\" }", ('pending = "pending", ["%s"] = "other" }'):format(typo))
        assert.are_not.equal(SWITCH, src)
        local r = run(src, { args = { "/orders/42" } })
        assert.are.equal(1, r.code, typo)
        assert.are.equal("", r.stdout)
        assert.matches('step "call": on: ' .. says, r.stderr, 1, true)
        local c = helper.cli{ args = { "check", "-I", ig_file, r.flow } }
        assert.are.equal(1, c.code, typo .. ": " .. c.stdout .. c.stderr)
        assert.matches(says, c.stdout .. c.stderr, 1, true)
      end
      -- words that are not one edit from a label stay switch labels
      local src = SWITCH:gsub("pending = \"pending\" }", 'pending = "pending", order = "other", errors_seen = "other" }')
      assert.are.equal("shipped\n", run(src, { args = { "/orders/42" } }).stdout)
    end)

    it("is called for a class of successes", function()
      local r = run(SWITCH:gsub('%["200"%] = "ok"', '["2xx"] = "ok"'), { args = { "/created" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("shipped\n", r.stdout)
    end)
  end)

  describe('"flow:PATH" targets', function()
    it("continue in another flow file in the same session", function()
      local dir = helper.tmpdir()
      helper.integrations({ shop = { base_url = mock.url } }, dir)
      helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "greet",
  steps = {
    greet = flow.say { text = function(s) s.visits = (s.visits or 0) + 1 return "main " .. s.visits end,
                       next = "flow:sub/second.lua" },
  },
}
]], dir, "main.lua")
      os.execute("mkdir -p " .. helper.quote(dir .. "/sub"))
      helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "q",
  steps = {
    q = flow.ask { prompt = function(s) return "second sees session " .. s.id .. ", visit " .. s.visits end,
                   save = "answer", next = "route" },
    route = function(s) if s.answer == "again" then return "flow:../main.lua" end end,
  },
}
]], dir .. "/sub", "second.lua")
      local r = helper.cli{ args = { dir .. "/main.lua" }, stdin = "again\nstop\n" }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("main 1\nsecond sees session 1, visit 1\nmain 2\nsecond sees session 1, visit 2\n",
        r.stdout)
    end)

    it("reach each other through ../ by one name: each file checked once", function()
      local dir = helper.tmpdir()
      os.execute("mkdir -p " .. helper.quote(dir .. "/sub"))
      helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "a",
  steps = { a = flow.ask { prompt = "in nested", next = "flow:sub/child.lua" } },
}
]], dir, "nested.lua")
      local child = [[
local flow = require "flowrun.flow"
return flow.define {
  start = "b",
  steps = {
    b = flow.ask { prompt = "in child", next = "flow:../nested.lua" },%s
  },
}
]]
      helper.flow(child:format(""), dir .. "/sub", "child.lua")
      local r = helper.cli{ args = { "nested.lua" }, cwd = dir, stdin = "1\n2\n3\n" }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("in nested\nin child\nin nested\nin child\n", r.stdout)
      -- a mistake in the child is reported once, under the child's own name
      helper.flow(child:format('\n    c = flow.say { text = "x", next = "nowhere" },'), dir .. "/sub", "child.lua")
      r = helper.cli{ args = { "nested.lua" }, cwd = dir }
      assert.are.equal(1, r.code)
      assert.are.equal("", r.stdout)
      local _, n = r.stderr:gsub('sub/child.lua:6: step "c": unknown target "nowhere"', "")
      assert.are.equal(1, n, r.stderr)
      assert.is_nil(r.stderr:find("../", 1, true), r.stderr)
    end)

    it("are checked when the flow is loaded, before its first step", function()
      local r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "a",
  steps = { a = flow.say { text = "never said", next = "flow:no_such_file.lua" } },
}
]])
      assert.are.equal(1, r.code)
      assert.are.equal("", r.stdout)
      assert.matches(r.flow .. ':4: step "a": target "flow:no_such_file.lua": cannot read '
        .. ig_dir .. "/no_such_file.lua: No such file or directory", r.stderr, 1, true)
    end)

    it("run_flow runs a declarative flow in the calling session", function()
      local dir = helper.tmpdir()
      helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "a",
  steps = { a = flow.say { text = function(s) s.seen = true return "declarative " .. s.id end } },
}
]], dir, "decl.lua")
      local main = helper.flow([[
say("imperative")
local n = select("#", run_flow("decl.lua"))
say("back: " .. n .. " results, seen " .. tostring(session.seen))
]], dir, "main.lua")
      local r = helper.cli{ args = { "-I", ig_file, main } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("imperative\ndeclarative 1\nback: 0 results, seen true\n", r.stdout)
    end)
  end)

  describe("sessions", function()
    it("run concurrently, each with its own step and session", function()
      local r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "q",
  steps = {
    q = flow.ask { prompt = function(s) return "q" .. s.id end, save = "a", next = "show" },
    show = flow.say { text = function(s) return s.id .. " said " .. s.a end },
  },
}
]], { before = { "--sessions", "3" }, stdin = "x\ny\nz\n" })
      assert.are.equal(0, r.code, r.stderr)
      local lines = helper.lines(r.stdout)
      table.sort(lines)
      assert.are.same({ "[1] 1 said x", "[1] q1", "[2] 2 said y", "[2] q2", "[3] 3 said z", "[3] q3" }, lines)
    end)

    it("run through the embedding API (the Lua module)", function()
      local rt = helper.runtime(ig_file)
      local path = helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "q",
  defaults = { other = "x", error = "x", timeout = "x", ["max-connection"] = "x" },
  steps = {
    q = flow.ask { prompt = "order?", save = "id", next = "call" },
    call = flow.api { integration = "shop", path = "/orders/{id}",
                      params = function(s) return { id = s.id } end,
                      save = "res", on = { ["200"] = "ok", ["404"] = "x" } },
    ok = flow.say { text = function(s) return s.id .. ": " .. s.res.json.status end },
    x = flow.say { text = function(s) return s.id .. ": " .. s.res.label end },
  },
}
]], ig_dir, "module_flow.lua")
      rt:start("u1", path)
      rt:start("u2", path)
      assert.is_true(rt:run(5000))
      rt:send("u1", "42")
      rt:send("u2", "7")
      assert.is_true(rt:run(5000))
      local events = rt:events()
      assert.are.same({ "42: shipped" }, helper.says(events, "u1"))
      assert.are.same({ "7: 404" }, helper.says(events, "u2"))
      assert.are.equal("order?", helper.events(events, "ask", "u1")[1].text)
      for _, e in ipairs(helper.events(events, "end")) do assert.is_true(e.ok, e.error) end
      assert.are.equal(0, rt:sessions())
    end)
  end)

  describe("errors", function()
    it("flow.define raises listing every problem, at the flow's lines", function()
      local r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "call",
  defaults = { other = "x", error = "x", Timeout = "x" },
  steps = {
    call = flow.api { integration = "shop", path = "/orders/7", on = { ["404"] = "shw" } },
    x = flow.say "x",
  },
}
]])
      assert.are.equal(1, r.code)
      assert.are.equal("", r.stdout)
      local f = r.flow
      assert.matches(table.concat({
        f .. ':2: defaults: result labels must be lower case: "Timeout"',
        f .. ':6: step "call": on: must include a success: a 2xx status like "200" or "201", or "2xx"',
        f .. ':6: step "call": unknown target "shw"',
        f .. ':6: step "call": default label "timeout" is not routed (add it to on or to defaults)',
        f .. ':6: step "call": default label "max-connection" is not routed (add it to on or to defaults)',
      }, "\n"), r.stderr, 1, true)
    end)

    it("checks the integrations when the flow is loaded, and sends nothing", function()
      local before = mock:count("/orders/42")
      local r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "hello",
  defaults = { other = flow.END, error = flow.END, timeout = flow.END, ["max-connection"] = flow.END },
  steps = {
    hello = flow.say { text = "hello", next = "ok" },
    ok = flow.api { integration = "shop", path = "/orders/42", on = { ["200"] = "bad" } },
    bad = flow.api { integration = "nope", path = "/orders/42", on = { ["200"] = flow.END } },
  },
}
]])
      assert.are.equal(1, r.code)
      assert.are.equal("", r.stdout)
      assert.matches(r.flow .. ":8: step \"bad\": unknown integration 'nope'", r.stderr, 1, true)
      assert.are.equal(before, mock:count("/orders/42"))
    end)

    it("reports a misused api_node at the step", function()
      local r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "call",
  defaults = { other = flow.END, error = flow.END, timeout = flow.END, ["max-connection"] = flow.END },
  steps = {
    call = flow.api { integration = "shop", path = "/orders/{id}",
                      params = function(s) return {} end, on = { ["200"] = flow.END } },
  },
}
]])
      assert.are.equal(1, r.code)
      assert.matches(r.flow .. ':6: step "call": api_node: path placeholder {id} has no value in params',
        r.stderr, 1, true)
    end)

    it("reports an error in a step's function at its own line, naming the step, with a traceback", function()
      local r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "a",
  steps = {
    a = flow.say { text = function(s)
      return s.missing.field
    end },
  },
}
]])
      assert.are.equal(1, r.code)
      assert.matches(r.flow .. ":6: step \"a\": attempt to index a nil value (field 'missing')\n",
        r.stderr, 1, true)
      assert.matches("stack traceback:\n\t" .. r.flow .. ":6: in function <" .. r.flow .. ":5>",
        r.stderr, 1, true)
    end)

    it("names the step of an error in a code step, a switch or a computed api field", function()
      local r = run([[
local flow = require "flowrun.flow"
local function helper(s) return s.nothere.x end
return flow.define {
  start = "lookup",
  steps = {
    lookup = function(s)
      local v = helper(s)
      return v
    end,
  },
}
]])
      assert.are.equal(1, r.code)
      assert.matches(r.flow .. ":2: step \"lookup\": attempt to index a nil value (field 'nothere')\n",
        r.stderr, 1, true)
      -- the traceback goes through the helper and the step's function
      assert.matches(r.flow .. ":2: in upvalue 'helper'\n\t" .. r.flow .. ":7: in function <"
        .. r.flow .. ":6>", r.stderr, 1, true)
      r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "call",
  defaults = { other = flow.END, error = flow.END, timeout = flow.END, ["max-connection"] = flow.END },
  steps = {
    call = flow.api {
      integration = "shop", path = "/notjson",
      switch = function(res) return res.json.status end,
      on = { ["200"] = flow.END, shipped = flow.END },
    },
  },
}
]])
      assert.are.equal(1, r.code)
      assert.matches(r.flow .. ":8: step \"call\": attempt to index a nil value (field 'json')\n",
        r.stderr, 1, true)
      r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "call",
  defaults = { other = flow.END, error = flow.END, timeout = flow.END, ["max-connection"] = flow.END },
  steps = {
    call = flow.api {
      integration = "shop",
      path = function(s) error("no path for " .. s.id) end,
      on = { ["200"] = flow.END },
    },
  },
}
]])
      assert.are.equal(1, r.code)
      assert.matches(r.flow .. ":8: step \"call\": no path for 1\n", r.stderr, 1, true)
      -- an error without a position is placed at the step
      r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "a",
  steps = { a = flow.say { text = function() error("no text", 0) end } },
}
]])
      assert.are.equal(1, r.code)
      assert.matches(r.flow .. ':4: step "a": no text\n', r.stderr, 1, true)
    end)

    it("reports a code step that returns an unknown step", function()
      local r = run([[
local flow = require "flowrun.flow"
return flow.define {
  start = "a",
  steps = { a = function(s) return "nowhere" end },
}
]])
      assert.are.equal(1, r.code)
      assert.matches(r.flow .. ':4: step "a": unknown target "nowhere"', r.stderr, 1, true)
    end)
  end)
end)
