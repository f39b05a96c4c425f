-- README: flowrun check. `flowrun check FLOW.lua...`: every routing
-- mistake of a declarative flow, and the literal api_node{} tables of a
-- script, found before anything runs; one line per problem, then a summary.
local helper = require "spec.helper"

describe("flowrun check", function()
  local mock, dir, ig_file

  setup(function()
    mock = helper.mock({ { path = "/orders/{id}", json = { status = "shipped" } } })
    dir = helper.tmpdir()
    ig_file = helper.integrations({
      shop = {
        base_url = mock.url,
        headers = { Accept = "application/json" },
        auth = { bearer = helper.code('env("CHECK_SPEC_TOKEN")') },
        endpoints = { get_order = { method = "GET", path = "/orders/{id}" } },
      },
    }, dir)
  end)

  teardown(function()
    -- nothing was ever sent: checking calls nothing
    assert.are.equal(0, mock:count("GET"))
    helper.cleanup()
  end)

  local function check(files, opts)
    opts = opts or {}
    local args = { "check" }
    if not opts.no_integrations then
      args[#args + 1] = "-I"
      args[#args + 1] = ig_file
    end
    for _, f in ipairs(files) do args[#args + 1] = f end
    return helper.cli{ args = args, env = { CHECK_SPEC_TOKEN = "s3cret" } }
  end

  local n = 0
  local function file(source, name)
    n = n + 1
    return helper.flow(source, dir, name or ("flow" .. n .. ".lua"))
  end

  -- A declarative flow whose step "call" (or whatever steps gives) starts at
  -- line 7; `done` is a step, and defaults route every default label to it.
  local function decl(steps, defaults)
    return file(([[
local flow = require "flowrun.flow"
return flow.define {
  start = "call",
  defaults = %s,
  steps = {
    done = flow.say "done",
%s  },
}
]]):format(defaults or '{ other = "done", error = "done", timeout = "done", ["max-connection"] = "done" }',
           steps))
  end

  -- Checks one file and expects exactly these lines (without the summary).
  local function expect(path, lines, code, summary)
    local r = check({ path })
    assert.are.equal("", r.stderr)
    local out = table.concat(lines, "\n") .. (#lines > 0 and "\n" or "") .. summary .. "\n"
    assert.are.equal(out, r.stdout)
    assert.are.equal(code, r.code)
  end

  local function expect_one(path, line)
    expect(path, { line }, 1, "1 file checked: 1 problem")
  end

  describe("a declarative flow", function()
    it("with no problem: exit 0", function()
      local f = decl('    call = flow.api { integration = "shop", path = "/orders/1", on = { ["200"] = "done" } },\n')
      expect(f, {}, 0, "1 file checked: no problems")
    end)

    it("unknown target", function()
      local f = decl('    call = flow.api { integration = "shop", path = "/x", on = { ["200"] = "shw" } },\n')
      expect_one(f, f .. ':7: step "call": unknown target "shw"')
    end)

    it("unknown target of next, closed, defaults and start", function()
      local f = file([[
local flow = require "flowrun.flow"
return flow.define {
  start = "begin",
  defaults = { other = "oops" },
  steps = {
    q = flow.ask { prompt = "?", next = "nxt", closed = "gone" },
  },
}
]])
      expect(f, {
        f .. ':2: start: unknown step "begin"',
        f .. ':2: defaults["other"]: unknown target "oops"',
        f .. ':6: step "q": unknown target "nxt"',
        f .. ':6: step "q": unknown target "gone"',
      }, 1, "1 file checked: 4 problems")
    end)

    it("unrouted default label", function()
      local f = decl('    call = flow.api { integration = "shop", path = "/x", on = { ["200"] = "done" } },\n',
                     '{ other = "done", error = "done", timeout = "done" }')
      expect_one(f, f .. ':7: step "call": default label "max-connection" is not routed (add it to on or to defaults)')
    end)

    it("every default label unrouted without defaults", function()
      local f = decl('    call = flow.api { integration = "shop", path = "/x", on = { ["200"] = "done", error = "done" } },\n',
                     "nil")
      expect(f, {
        f .. ':7: step "call": default label "other" is not routed (add it to on or to defaults)',
        f .. ':7: step "call": default label "timeout" is not routed (add it to on or to defaults)',
        f .. ':7: step "call": default label "max-connection" is not routed (add it to on or to defaults)',
      }, 1, "1 file checked: 3 problems")
    end)

    it("upper-case default label in on", function()
      local f = decl('    call = flow.api { integration = "shop", path = "/x", on = { ["200"] = "done", Timeout = "done" } },\n')
      expect_one(f, f .. ':7: step "call": on: result labels must be lower case: "Timeout"')
    end)

    it("upper-case default label in defaults", function()
      local f = decl('    call = flow.api { integration = "shop", path = "/x", on = { ["200"] = "done" } },\n',
                     '{ other = "done", error = "done", timeout = "done", ["Max-Connection"] = "done" }')
      expect(f, {
        f .. ':2: defaults: result labels must be lower case: "Max-Connection"',
        f .. ':7: step "call": default label "max-connection" is not routed (add it to on or to defaults)',
      }, 1, "1 file checked: 2 problems")
    end)

    it('no success among the results', function()
      local f = decl('    call = flow.api { integration = "shop", path = "/x", on = { ["404"] = "done" } },\n')
      expect_one(f, f .. ':7: step "call": on: must include a success: a 2xx status like "200" or "201", or "2xx"')
    end)

    it('a 2xx status other than 200 is a success', function()
      local f = decl('    call = flow.api { integration = "shop", method = "POST", path = "/x", on = { ["201"] = "done" } },\n')
      local r = check({ f })
      assert.are.equal(0, r.code, r.stdout)
      assert.matches("1 file checked: no problems", r.stdout, 1, true)
    end)

    it("unknown result in on, without a switch", function()
      local f = decl('    call = flow.api { integration = "shop", path = "/x", on = { ["200"] = "done", shipped = "done" } },\n')
      expect_one(f, f .. ':7: step "call": on: unknown result "shipped" (use a status like "404", '
        .. 'a class like "4xx", or other, error, timeout, max-connection)')
    end)

    it("unknown integration", function()
      local f = decl('    call = flow.api { integration = "nope", path = "/x", on = { ["200"] = "done" } },\n')
      expect_one(f, f .. ":7: step \"call\": unknown integration 'nope'")
    end)

    it("unknown integration, when no integrations file is found", function()
      local d = helper.tmpdir()
      local f = helper.flow(([[
local flow = require "flowrun.flow"
return flow.define {
  start = "call",
  defaults = { other = flow.END, error = flow.END, timeout = flow.END, ["max-connection"] = flow.END },
  steps = { call = flow.api { integration = "shop", path = "/x", on = { ["200"] = flow.END } } },
}
]]), d)
      local r = helper.cli{ args = { "check", f }, cwd = d }
      assert.are.equal(f .. ":5: step \"call\": unknown integration 'shop' (no integrations are loaded: use -I FILE)\n"
        .. "1 file checked: 1 problem\n", r.stdout)
      assert.are.equal(1, r.code)
    end)

    it("unknown endpoint", function()
      local f = decl('    call = flow.api { endpoint = "shop.nope", on = { ["200"] = "done" } },\n')
      expect_one(f, f .. ":7: step \"call\": integration 'shop' has no endpoint 'nope'")
    end)

    it("header conflict with the integration (a secret header too, without its value)", function()
      local f = decl('    call = flow.api { endpoint = "shop.get_order", params = { id = 1 },\n'
        .. '      headers = { accept = "text/plain", Authorization = "Bearer other" }, on = { ["200"] = "done" } },\n')
      local r = check({ f })
      assert.are.equal(f .. ":7: step \"call\": header 'Authorization' differs between the node and integration 'shop'\n"
        .. f .. ":7: step \"call\": header 'Accept' differs between the node and integration 'shop'\n"
        .. "1 file checked: 2 problems\n", r.stdout)
      assert.is_nil(r.stdout:find("s3cret", 1, true))
    end)

    it("the same header value as the integration is no conflict", function()
      local f = decl('    call = flow.api { integration = "shop", path = "/x", headers = { ACCEPT = "application/json" },\n'
        .. '      on = { ["200"] = "done" } },\n')
      expect(f, {}, 0, "1 file checked: no problems")
    end)

    it('a "flow:" file that does not exist', function()
      local f = decl('    call = flow.ask { prompt = "?", next = "flow:missing.lua", closed = "done" },\n')
      expect_one(f, f .. ':7: step "call": target "flow:missing.lua": cannot read ' .. dir
        .. "/missing.lua: No such file or directory")
    end)

    it('a "flow:" file that does not define a flow', function()
      file('say("I am a script")\n', "script.lua")
      local f = decl('    call = flow.ask { prompt = "?", next = "flow:script.lua", closed = "done" },\n')
      expect_one(f, f .. ':7: step "call": target "flow:script.lua": ' .. dir
        .. "/script.lua does not define a flow (it must return flow.define{...})")
    end)

    it('checks the file of a "flow:" target in turn', function()
      local sub = file([[
local flow = require "flowrun.flow"
return flow.define {
  start = "a",
  steps = { a = flow.say { text = "sub", next = "b" } },
}
]], "sub_with_problem.lua")
      local f = decl('    call = flow.ask { prompt = "?", next = "flow:sub_with_problem.lua", closed = "done" },\n')
      expect(f, { sub .. ':4: step "a": unknown target "b"' }, 1, "2 files checked: 1 problem")
    end)

    it("unreachable step (a warning: exit 0)", function()
      local f = decl('    call = flow.say { text = "x", next = "done" },\n'
        .. '    lonely = flow.say { text = "nobody comes here" },\n')
      expect(f, { f .. ':8: warning: step "lonely" is unreachable' }, 0, "1 file checked: 0 problems, 1 warning")
    end)

    it("a cycle with no ask, sleep or api step (a warning: it would spin)", function()
      local f = decl('    call = flow.api { integration = "shop", path = "/x", on = { ["200"] = "again" } },\n'
        .. '    again = function(s) return "more" end,\n'
        .. '    more = flow.say { text = "more", next = "again" },\n')
      expect(f, { f .. ':8: warning: cycle "again" -> "more" -> "again" has no ask, sleep or api step: it would spin' },
        0, "1 file checked: 0 problems, 1 warning")
    end)

    it("no warning for a loop through an api step: a call waits (pagination)", function()
      local f = decl('    call = flow.api { integration = "shop", path = "/x", on = { ["200"] = "collect" } },\n'
        .. '    collect = function(s) if s.more then return "call" end return "done" end,\n')
      expect(f, {}, 0, "1 file checked: no problems")
    end)

    it("no warning for a cycle through an ask, a sleep step, or code that sleeps", function()
      for _, wait in ipairs({
        'flow.ask { prompt = "again?", next = "call" }',
        'flow.sleep { ms = 500, next = "call" }',
        'function(s) sleep(500) return "call" end',
      }) do
        local f = decl('    call = flow.api { integration = "shop", path = "/x", on = { ["200"] = "again" } },\n'
          .. "    again = " .. wait .. ",\n")
        expect(f, {}, 0, "1 file checked: no problems")
      end
    end)

    it("a cycle through an ask's closed target (a warning: ask no longer waits once the user left)", function()
      local f = file([[
local flow = require "flowrun.flow"
return flow.define {
  start = "a",
  steps = {
    a = flow.ask { prompt = "?", next = "a", closed = "b" },
    b = flow.say { text = "are you there?", next = "a" },
  },
}
]])
      expect(f, { f .. ':5: warning: cycle "a" -> "b" -> "a" waits for nothing once the user has left '
        .. '(ask "a" goes on through closed at once): it would spin' }, 0, "1 file checked: 0 problems, 1 warning")
    end)

    it('a cycle across files through "flow:" targets (a warning naming the files and steps)', function()
      local d = helper.tmpdir()
      local c = helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "hello",
  steps = { hello = flow.say { text = "in c", next = "flow:d.lua" } },
}
]], d, "c.lua")
      local dd = helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "x",
  steps = {
    x = flow.say { text = "in d", next = "y" },
    y = flow.say { text = "again", next = "flow:c.lua" },
  },
}
]], d, "d.lua")
      expect(c, { c .. ':4: warning: cycle ' .. c .. ' "hello" -> ' .. dd .. ' "x" -> ' .. dd .. ' "y" -> '
        .. c .. ' "hello" has no ask, sleep or api step: it would spin' }, 0, "2 files checked: 0 problems, 1 warning")
      -- an ask on the way waits: no warning
      helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "x",
  steps = { x = flow.ask { prompt = "again?", next = "flow:c.lua" } },
}
]], d, "d.lua")
      expect(c, {}, 0, "2 files checked: no problems")
    end)

    it('"flow:" files that reach each other through ../ are checked once each', function()
      local d = helper.tmpdir()
      os.execute("mkdir -p " .. helper.quote(d .. "/sub"))
      helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "a",
  steps = { a = flow.ask { prompt = "?", next = "flow:sub/child.lua" } },
}
]], d, "nested.lua")
      helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "b",
  steps = {
    b = flow.ask { prompt = "?", next = "flow:../nested.lua" },
    c = flow.say { text = "x", next = "nowhere" },
  },
}
]], d, "sub/child.lua")
      local r = helper.cli{ args = { "check", "nested.lua" }, cwd = d }
      assert.are.equal('sub/child.lua:6: step "c": unknown target "nowhere"\n'
        .. 'sub/child.lua:6: warning: step "c" is unreachable\n'
        .. "2 files checked: 1 problem, 1 warning\n", r.stdout)
      assert.are.equal(1, r.code, r.stderr)
      -- the same file given by another name is one file
      r = helper.cli{ args = { "check", "nested.lua", "./sub/../nested.lua", "sub/./child.lua" }, cwd = d }
      assert.matches("2 files checked: 1 problem, 1 warning\n$", r.stdout)
    end)

    it("lists every problem, step by step, then the warnings", function()
      local f = file([[
local flow = require "flowrun.flow"
return flow.define {
  start = "ask_order",
  defaults = { other = "sorry", error = "sorry", Timeout = "sorry" },
  steps = {
    ask_order = flow.ask { prompt = "Your order number?", save = "order_id", next = "lookup" },
    lookup = flow.api {
      integration = "shop", path = "/orders/{id}", colour = "red",
      on = { ["404"] = "shw", Error = "sorry" },
    },
    sorry = flow.say { text = "Something went wrong." },
    extra = flow.say { txt = "typo" },
  },
}
]])
      expect(f, {
        f .. ':2: defaults: result labels must be lower case: "Timeout"',
        f .. ':12: step "extra": unknown field \'txt\'',
        f .. ':12: step "extra": text is required',
        f .. ':7: step "lookup": unknown field \'colour\'',
        f .. ':7: step "lookup": on: result labels must be lower case: "Error"',
        f .. ':7: step "lookup": on: must include a success: a 2xx status like "200" or "201", or "2xx"',
        f .. ':7: step "lookup": unknown target "shw"',
        f .. ':7: step "lookup": default label "timeout" is not routed (add it to on or to defaults)',
        f .. ':7: step "lookup": default label "max-connection" is not routed (add it to on or to defaults)',
        f .. ':7: step "lookup": path placeholder {id} has no value in params',
        f .. ':12: warning: step "extra" is unreachable',
      }, 1, "1 file checked: 10 problems, 1 warning")
    end)

    it("more rules of steps and definitions", function()
      local f = file([[
local flow = require "flowrun.flow"
return flow.define {
  start = 1,
  stepz = {},
  steps = {
    a = flow.api { integration = "shop", path = "/x", results = { "200" }, switch = "status",
                   on = { ["200"] = 42, shipped = flow.END } },
    b = flow.sleep { ms = "soon" },
    c = "not a step",
    d = flow.api { integration = "shop", method = "GET", path = "/x", body = { a = 1 },
                   switch = function(res) return res.json.status end, on = { ["2xx"] = flow.END },
                   other = flow.END, error = flow.END, timeout = flow.END },
  },
}
]])
      expect(f, {
        f .. ":2: unknown field 'stepz'",
        f .. ":2: start: expected a step name, got number",
        f .. ":6: step \"a\": results: a step declares its results as the keys of on",
        f .. ':6: step "a": switch: expected a function of the response, got string',
        f .. ':6: step "a": on["200"]: expected a step name, "flow:PATH" or flow.END, got number',
        f .. ':6: step "a": default label "other" is not routed (add it to on or to defaults)',
        f .. ':6: step "a": default label "error" is not routed (add it to on or to defaults)',
        f .. ':6: step "a": default label "timeout" is not routed (add it to on or to defaults)',
        f .. ':6: step "a": default label "max-connection" is not routed (add it to on or to defaults)',
        f .. ':8: step "b": ms: expected a number of milliseconds or a function of the session, got string',
        f .. ':2: step "c": expected flow.api{}, flow.ask{}, flow.say{}, flow.sleep{} or a function, got string',
        f .. ":10: step \"d\": unknown field 'error'",
        f .. ":10: step \"d\": unknown field 'other'",
        f .. ":10: step \"d\": unknown field 'timeout'",
        f .. ':10: step "d": default label "other" is not routed (add it to on or to defaults)',
        f .. ':10: step "d": default label "error" is not routed (add it to on or to defaults)',
        f .. ':10: step "d": default label "timeout" is not routed (add it to on or to defaults)',
        f .. ':10: step "d": default label "max-connection" is not routed (add it to on or to defaults)',
        f .. ":10: step \"d\": a GET request cannot have a body",
        f .. ':10: warning: step "d": switch: on has no label for it (its keys are all result names)',
      }, 1, "1 file checked: 19 problems, 1 warning")
    end)
  end)

  describe("an imperative script", function()
    it("is checked for syntax", function()
      local f = file('say("hi")\nif x then\n  say("unfinished"\nend\n')
      local r = check({ f })
      assert.are.equal(1, r.code)
      assert.are.equal(f .. ":4: ')' expected (to close '(' at line 3) near 'end'\n"
        .. "1 file checked: 1 problem\n", r.stdout)
    end)

    it("has its literal api_node{} tables checked", function()
      local f = file([==[
-- api_node{ integration = "in a comment" }
local s = "api_node{ integration = 'in a string' }"
local id = ask("id?")
local label = api_node{ integration = "shop", path = "/orders/{id}", params = { id = id }, results = { "200" } }
local l2 = api_node({
  integration = "nope",
  results = { "200", "Timeout" },
})
api_node { integration = "shop", method = "GET", body = "x", results = { "404" } }
api_node { endpoint = "shop.get_order", params = { id = 1 } }
api_node(spec_from_elsewhere)
local t = rt:api_node{ integration = "shop", path = "/x", headers = { Accept = "text/html" }, results = { "2xx" } }
]==])
      expect(f, {
        f .. ":5: api_node: unknown integration 'nope'",
        f .. ':5: api_node: results: result labels must be lower case: "Timeout"',
        f .. ':9: api_node: results: must include a success: a 2xx status like "200" or "201", or "2xx"',
        f .. ":9: api_node: a GET request cannot have a body",
        f .. ":9: api_node: a string body needs a Content-Type header (for example application/xml)",
        f .. ':10: api_node: results is required and must include a success: a 2xx status like "200" or "201", or "2xx"',
        f .. ":12: api_node: header 'Accept' differs between the node and integration 'shop'",
      }, 1, "1 file checked: 7 problems")
    end)

    it("finds what api_node would refuse in a path or a header, as api_node words it", function()
      local f = file([[
api_node{ integration = "shop", path = "/orders/../admin", results = { "200" } }
api_node{ integration = "shop", path = "/orders/a b", results = { "200" } }
api_node{ integration = "shop", path = "/orders/{id}", params = { id = 1 }, headers = { ["content-length"] = "3" }, results = { "200" } }
api_node{ integration = "shop", path = "/orders/{an id}", params = { ["an id"] = 1 }, results = { "200" } }
]])
      expect(f, {
        f .. ':1: api_node: path: "." and ".." segments are not allowed (a path stays under base_url)',
        f .. ":2: api_node: path: spaces, control characters and '#' are not allowed (percent-encode them, or give the value in params)",
        f .. ":3: api_node: headers.content-length: flowrun sets it from the body",
      }, 1, "1 file checked: 3 problems")
    end)

    it("skips what is not a literal", function()
      local f = file([[
local id, m = ask("id?"), args[1]
api_node{ integration = "shop", path = "/orders/{id}", params = { id = id }, results = { "200" } }
api_node{ integration = "shop", method = m, path = "/x", body = { id = id }, results = { "200" } }
api_node{ integration = "shop", path = "/x", headers = { Accept = args[2] }, results = { "200" } }
api_node{ integration = "shop", path = "/x", results = args }
]])
      expect(f, {}, 0, "1 file checked: no problems")
    end)
  end)

  describe("the sandbox of a flow's top level", function()
    -- a flow whose top level is `lines` (%s: a path to write to)
    local function flow_doing(lines)
      return file(([[
local flow = require "flowrun.flow"
%s
return flow.define { start = "a", steps = { a = flow.say "hi" } }
]]):format(lines))
    end

    it("refuses os.execute and the io, debug and package modules, at the flow's line, running nothing", function()
      local d = helper.tmpdir()
      local cases = {
        { 'require("os").execute("touch ' .. d .. '/ran")',
          'os.execute is not available: flowrun check and flowrun graph run a flow\'s top level with os.time, '
          .. "os.clock, os.date and os.difftime only, as flows have" },
        { 'require("io").open("' .. d .. '/ran", "w"):close()', 'require "io": not available' },
        { 'require("debug").sethook()', 'require "debug": not available' },
        { 'require("package").loadlib("x", "y")', 'require "package": not available' },
      }
      for _, c in ipairs(cases) do
        local f = flow_doing(c[1])
        local r = check({ f })
        assert.matches("^" .. f:gsub("%p", "%%%0") .. ":2: " .. c[2]:gsub("%p", "%%%0"), r.stdout)
        assert.matches("1 file checked: 1 problem\n$", r.stdout)
        assert.are.equal(1, r.code)
        assert.is_nil(helper.read(d .. "/ran"), c[1])
        -- graph loads a flow the same way
        r = helper.cli{ args = { "graph", "-I", ig_file, f }, env = { CHECK_SPEC_TOKEN = "s3cret" } }
        assert.are.equal(2, r.code)
        assert.matches(f .. ":2: " .. c[2], r.stderr, 1, true)
      end
      -- a refused module before flowrun.flow is required still makes a flow file's problem
      local f = file('require("io").open("' .. d .. '/ran", "w"):close()\nlocal flow = require "flowrun.flow"\n'
        .. 'return flow.define { start = "a", steps = { a = flow.say "hi" } }\n')
      local r = check({ f })
      assert.matches(f .. ':1: require "io": not available', r.stdout, 1, true)
      assert.is_nil(helper.read(d .. "/ran"))
    end)

    it("refuses C modules, and gives the safe modules and Lua modules on package.path", function()
      local d = helper.tmpdir()
      helper.write(d .. "/texts.lua", 'local flow = require "flowrun.flow"\n'
        .. 'return { hi = "hi at " .. type(os.time()) .. ", io is " .. type(io), END = flow.END }\n')
      local f = helper.flow([[
local flow = require "flowrun.flow"
local texts = require "texts"
assert(require("string") == string and require("table") == table and require("math") == math
       and require("utf8") == utf8 and require("json") == json and require("os") == os)
assert(texts.END == flow.END and require("texts") == texts)
return flow.define { start = "a", steps = { a = flow.say(texts.hi) } }
]], d, "uses_texts.lua")
      local r = helper.cli{ args = { "check", f }, env = { LUA_PATH_5_4 = d .. "/?.lua" } }
      assert.are.equal("1 file checked: no problems\n", r.stdout)
      assert.are.equal(0, r.code, r.stderr)
      r = helper.cli{ args = { "graph", f }, env = { LUA_PATH_5_4 = d .. "/?.lua" } }
      assert.are.equal(0, r.code, r.stderr)
      assert.matches('say \\"hi at number, io is nil\\"', r.stdout, 1, true)
      -- a C module found on package.cpath is not loaded
      local c = helper.flow('local flow = require "flowrun.flow"\nlocal m = require "flowrun"\n'
        .. 'return flow.define { start = "a", steps = { a = flow.say "hi" } }\n', d, "uses_c.lua")
      r = helper.cli{ args = { "check", c }, env = { LUA_CPATH_5_4 = helper.root .. "/build/?.so" } }
      assert.matches(c .. ':2: require "flowrun": a C module is not loaded', r.stdout, 1, true)
      assert.are.equal(1, r.code)
    end)

    it("leaves a script's top level to flowrun run: a refused module is no problem of a script", function()
      local f = file('local io = require "io"\nsay(io.read("l"))\n')
      expect(f, {}, 0, "1 file checked: no problems")
    end)
  end)

  describe("secrets", function()
    it("need not be set: env() of an unset variable is a placeholder for check and graph", function()
      local dir = helper.tmpdir()
      local ig = helper.integrations('return { shop = { base_url = "http://127.0.0.1:9/v1", '
        .. 'auth = { bearer = env("CHECK_UNSET_TOKEN") }, headers = { ["X-Key"] = env("CHECK_UNSET_KEY") } } }', dir)
      local f = helper.flow([[
        local flow = require "flowrun.flow"
        return flow.define { start = "a",
          defaults = { other = "b", error = "b", timeout = "b", ["max-connection"] = "b" },
          steps = { a = flow.api { integration = "shop", path = "/x", headers = { ["X-Key"] = "literal" },
                                   on = { ["200"] = "b" } },
                    b = flow.say "bye" } }
      ]], dir)
      local env = { CHECK_UNSET_TOKEN = false, CHECK_UNSET_KEY = false }
      local r = helper.cli{ args = { "check", "-I", ig, f }, env = env }
      assert.are.equal(1, r.code, r.stderr)
      assert.matches("header 'X-Key' differs between the node and integration 'shop'", r.stdout, 1, true)
      r = helper.cli{ args = { "graph", "-I", ig, f }, env = env }
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("^digraph", r.stdout)
      r = helper.cli{ args = { "run", "-I", ig, f }, env = env }   -- running still needs them
      assert.are.equal(2, r.code)
      assert.matches("environment variable CHECK_UNSET_TOKEN is not set", r.stderr, 1, true)
    end)
  end)

  describe("files and exit status", function()
    it("checks every file and adds up the problems", function()
      local ok = decl('    call = flow.api { integration = "shop", path = "/x", on = { ["200"] = "done" } },\n')
      local bad = decl('    call = flow.api { integration = "shop", path = "/x", on = { ["200"] = "shw" } },\n')
      local script = file('say("hi")\napi_node{ integration = "nope", results = { "200" } }\n')
      local r = check({ ok, bad, script })
      assert.are.equal(bad .. ':7: step "call": unknown target "shw"\n'
        .. script .. ":2: api_node: unknown integration 'nope'\n"
        .. "3 files checked: 2 problems\n", r.stdout)
      assert.are.equal(1, r.code)
    end)

    it("is 2 when a file cannot be read, after checking the others", function()
      local bad = decl('    call = flow.api { integration = "shop", path = "/x", on = { ["200"] = "shw" } },\n')
      local r = check({ dir .. "/nothing_here.lua", bad })
      assert.are.equal(2, r.code)
      assert.are.equal("flowrun check: cannot read " .. dir .. "/nothing_here.lua: No such file or directory\n",
        r.stderr)
      assert.are.equal(bad .. ':7: step "call": unknown target "shw"\n1 file checked: 1 problem\n', r.stdout)
    end)

    it("is 2 with the errors only when no file can be read (no \"0 files checked\")", function()
      local r = check({ dir .. "/nothing_here.lua", dir })
      assert.are.equal(2, r.code)
      assert.are.equal("flowrun check: cannot read " .. dir .. "/nothing_here.lua: No such file or directory\n"
        .. "flowrun check: cannot read " .. dir .. ": Is a directory\n", r.stderr)
      assert.are.equal("", r.stdout)
    end)

    it("is 2 without a file or with an unknown option", function()
      local r = helper.cli{ args = { "check" } }
      assert.are.equal(2, r.code)
      assert.matches("no flow file given", r.stderr, 1, true)
      r = helper.cli{ args = { "check", "--frobnicate", "x.lua" } }
      assert.are.equal(2, r.code)
      assert.matches("unknown option '--frobnicate'", r.stderr, 1, true)
    end)

    it("passes the demo and the examples", function()
      local files = {}
      for _, name in ipairs({ "demo/order_status.lua", "demo/order_status_imperative.lua",
                              "examples/support_bot.lua", "examples/open_ticket.lua",
                              "examples/game_reward.lua" }) do
        files[#files + 1] = helper.root .. "/scripts/" .. name
      end
      local ig = helper.root .. "/scripts/examples/integrations.lua"
      local r = helper.cli{ args = { "check", "-I", ig, table.unpack(files, 3) } }
      assert.are.equal("3 files checked: no problems\n", r.stdout)
      assert.are.equal(0, r.code, r.stderr)
      r = helper.cli{ args = { "check", files[1], files[2] } }
      assert.are.equal("2 files checked: no problems\n", r.stdout)
      assert.are.equal(0, r.code, r.stderr)
    end)
  end)
end)
