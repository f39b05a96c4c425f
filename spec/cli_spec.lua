-- README: The command line.
local helper = require "spec.helper"
local cjson = require "cjson"

describe("The command line", function()
  local mock

  setup(function()
    mock = helper.mock({
      { path = "/echo", echo = true },
      { path = "/hang", fault = "no_response" },
      { path = "/missing", status = 404, body = "no" },
    })
  end)

  teardown(helper.cleanup)

  -- A directory with an integrations.lua for the mock and a flow.
  local function project(flow_source, ig_name)
    local dir = helper.tmpdir()
    helper.integrations({ [ig_name or "shop"] = { base_url = mock.url } }, dir)
    return dir, helper.flow(flow_source, dir)
  end

  local CALL = [[
    local label = api_node{ integration = "shop", path = "/echo", results = { "200" } }
    say(label)
  ]]

  describe("exit status", function()
    it("is 0 when the flow is done", function()
      local _, flow = project([[ say("ok") ]])
      local r = helper.cli{ args = { flow } }
      assert.are.equal(0, r.code)
      assert.are.equal("ok\n", r.stdout)
      assert.are.equal("", r.stderr)
    end)

    it("is 0 whatever labels the calls got", function()
      local _, flow = project([[
        local label = api_node{ integration = "shop", path = "/hang", timeout_ms = 100, results = { "200" } }
        say(label)
      ]])
      local r = helper.cli{ args = { flow } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("timeout\n", r.stdout)
    end)

    it("is 1 when a session raised an error", function()
      local _, flow = project([[ say("a") error("stop here") ]])
      local r = helper.cli{ args = { flow } }
      assert.are.equal(1, r.code)
      assert.are.equal("a\n", r.stdout)
      assert.matches(flow .. ":1: stop here", r.stderr, 1, true)
    end)

    it("is 2 for an unknown option", function()
      local _, flow = project([[ say("never") ]])
      local r = helper.cli{ args = { "--frobnicate", flow } }
      assert.are.equal(2, r.code)
      assert.are.equal("", r.stdout)
      assert.matches("--frobnicate", r.stderr, 1, true)
    end)

    it("is 2 for an option without its value", function()
      local r = helper.cli{ args = { "-I" } }
      assert.are.equal(2, r.code)
    end)

    it("is 2 without a flow", function()
      local r = helper.cli{ args = { "run" } }
      assert.are.equal(2, r.code)
      r = helper.cli{ args = {} }
      assert.are.equal(2, r.code)
    end)

    it("is 2 for a missing flow file, naming it", function()
      local missing = helper.tmpdir() .. "/nope.lua"
      local r = helper.cli{ args = { missing } }
      assert.are.equal(2, r.code)
      assert.matches(missing, r.stderr, 1, true)
    end)

    it("is 2 for a flow that is a directory", function()
      local r = helper.cli{ args = { helper.tmpdir() } }
      assert.are.equal(2, r.code)
    end)

    it("is 2 for a syntax error in the flow, with file and line", function()
      local _, flow = project("say('a')\nlocal = 3\n")
      local r = helper.cli{ args = { flow } }
      assert.are.equal(2, r.code)
      assert.are.equal("", r.stdout)
      assert.matches(flow .. ":2:", r.stderr, 1, true)
    end)

    it("is 2 for a broken integrations file, naming file and key", function()
      local dir, flow = project([[ say("never") ]])
      local ig = helper.integrations({ shop = { base_url = mock.url, max_connections = "many" } }, dir)
      local r = helper.cli{ args = { flow } }
      assert.are.equal(2, r.code)
      assert.are.equal("", r.stdout)
      assert.matches(ig .. ": shop.max_connections: expected an integer >= 1, got string", r.stderr, 1, true)
    end)

    it("is 2 for a missing -I file", function()
      local _, flow = project([[ say("never") ]])
      local r = helper.cli{ args = { "-I", helper.tmpdir() .. "/none.lua", flow } }
      assert.are.equal(2, r.code)
      assert.are.equal("", r.stdout)
    end)

    it("is 1 when the output cannot be written, and says why", function()
      local dir, flow = project([[ say("ok") ]])
      local _, _, code = os.execute("cd " .. helper.quote(dir) .. " && " .. helper.quote(helper.flowrun)
        .. " " .. helper.quote(flow) .. " >/dev/full 2>" .. dir .. "/err")
      assert.are.equal(1, code)
      assert.matches("flowrun: cannot write the output: No space left on device",
                     helper.read(dir .. "/err"), 1, true)
    end)

    it("host: is 1 when its JSON lines cannot be written (stdout full or closed), and says why", function()
      local dir, flow = project([[ say("ok " .. args[1]) ]])
      helper.write(dir .. "/in.jsonl", '{"session":"u1","text":"x"}\n')
      for _, out in ipairs { ">/dev/full", ">&-" } do
        local _, _, code = os.execute("cd " .. helper.quote(dir) .. " && " .. helper.quote(helper.flowrun)
          .. " host " .. helper.quote(flow) .. " <in.jsonl " .. out .. " 2>" .. dir .. "/err")
        assert.are.equal(1, code, out)
        assert.matches("^flowrun: cannot write the output: ", helper.read(dir .. "/err"))
      end
    end)

    it("is 1 when the --trace-json file cannot be written, for run and host, and says why", function()
      local _, flow = project(CALL)
      local r = helper.cli{ args = { "--trace-json", "/dev/full", flow } }
      assert.are.equal(1, r.code)
      assert.are.equal("200\n", r.stdout)
      assert.are.equal("flowrun: cannot write /dev/full: No space left on device\n", r.stderr)
      r = helper.cli{ args = { "host", "--trace-json", "/dev/full", flow },
                      stdin = '{"session":"u1","text":"x"}\n' }
      assert.are.equal(1, r.code)
      assert.are.equal('{"session":"u1","say":"200"}\n{"session":"u1","end":"done"}\n', r.stdout)
      assert.are.equal("flowrun: cannot write /dev/full: No space left on device\n", r.stderr)
    end)

    it("is 2 for a bad --sessions", function()
      local _, flow = project([[ say("never") ]])
      for _, n in ipairs { "0", "-1", "two", "" } do
        local r = helper.cli{ args = { "--sessions", n, flow } }
        assert.are.equal(2, r.code, "--sessions " .. n)
        assert.are.equal("", r.stdout)
      end
    end)
  end)

  describe("text from outside on the terminal", function()
    local away, dir
    setup(function()
      away = helper.mock({ { path = "/away", status = 302,
        headers = { Location = "http://other.invalid/\27[31mRED\27]0;title\7" } } })
      dir = helper.tmpdir()
      helper.integrations({ r = { base_url = away.url, follow_redirects = true } }, dir)
      helper.flow([[
        local label, res = api_node{ integration = "r", path = "/away", results = { "200" } }
        log.warn(res.error .. " \r|\194\155|\255|é\tend")
        say(res.error)
        error(res.error, 0)
      ]], dir, "away.lua")
    end)

    it("errors and logs show a server's control characters as \\xNN; say writes them as they are", function()
      local r = helper.cli{ args = { dir .. "/away.lua" } }
      assert.are.equal(1, r.code)
      local shown = "redirect to another origin refused: http://other.invalid/\\x1b[31mRED\\x1b]0;title\\x07"
      local want = "warn: " .. shown .. " \\x0d|\\xc2\\x9b|\\xff|é\tend\n" .. shown .. "\nstack traceback:\n"
      assert.are.equal(want, r.stderr:sub(1, #want))
      assert.are.equal("redirect to another origin refused: http://other.invalid/\27[31mRED\27]0;title\7\n", r.stdout)
    end)

    it("host: a session id with control characters is escaped in logs and --trace", function()
      local r = helper.cli{ args = { "host", "--trace", dir .. "/away.lua" },
                            stdin = '{"session":"\\u001b[2J","text":"x"}\n' }
      assert.are.equal(1, r.code)
      local lines = helper.lines(r.stderr)
      assert.matches("^trace session=\\x1b%[2J integration=r method=GET ", lines[1])
      assert.are.equal("[\\x1b[2J] warn: redirect to another origin refused: http://other.invalid/"
        .. "\\x1b[31mRED\\x1b]0;title\\x07 \\x0d|\\xc2\\x9b|\\xff|é\tend", lines[2])
      assert.is_nil(r.stderr:find("\27", 1, true))
    end)

    it("the REPL's printer escapes control characters, C1 ones too", function()
      local r = helper.cli{ args = { "repl" }, stdin = 'x = "a\\27[31mb\\194\\155c"\nx\n' }
      assert.are.equal(0, r.code, r.stderr)
      assert.matches('"a\\027[31mb\\194\\155c"', r.stdout, 1, true)
    end)

    it("the REPL escapes control characters in errors, its own and a flow's, and in logs", function()
      local dir = helper.tmpdir()
      helper.flow('log.info("l\\27[1m") error("f\\27[2m")', dir, "esc.lua")
      local r = helper.cli{ args = { "repl" }, cwd = dir,
                            stdin = 'error("a\\27[31mb")\n.run esc.lua\n' }
      assert.are.equal(1, r.code)
      assert.is_nil(r.stderr:find("\27", 1, true), r.stderr)
      assert.matches("a\\x1b[31mb", r.stderr, 1, true)
      assert.matches("l\\x1b[1m", r.stderr, 1, true)
      assert.matches("f\\x1b[2m", r.stderr, 1, true)
    end)
  end)

  describe("a newcomer's first steps", function()
    it("SUBCOMMAND --help prints that subcommand's usage on stdout and exits 0, for every one", function()
      for _, sub in ipairs { "run", "host", "serve", "mock", "check", "graph", "repl" } do
        for _, flag in ipairs { "--help", "-h" } do
          local r = helper.cli{ args = { sub, flag } }
          assert.are.equal(0, r.code, sub .. " " .. flag .. ": " .. r.stderr)
          assert.matches("^usage: flowrun " .. (sub == "run" and "%[run%]" or sub), r.stdout)
          assert.are.equal("", r.stderr, sub)
        end
      end
    end)

    it("says a flow path that is a directory is one", function()
      local dir = helper.tmpdir()
      local r = helper.cli{ args = { dir } }
      assert.are.equal(2, r.code)
      assert.matches("cannot open " .. dir:gsub("%p", "%%%0") .. ": Is a directory", r.stderr)
    end)

    it("goes through the proxy the environment names only with proxy = \"env\" (http_proxy, no_proxy)", function()
      local mock = helper.mock({ { path = "/v1/x", json = { ok = true } } })
      local dir = helper.tmpdir()
      helper.integrations(helper.lua_source({ shop = { base_url = mock.url .. "/v1" } }), dir)
      local f = helper.flow([[
        local label, res = api_node{ integration = "shop", path = "/x", results = { "200" } }
        say(label .. " " .. tostring(res.reason))
      ]], dir)
      local proxy = "http://127.0.0.1:" .. helper.closed_port()
      local r = helper.cli{ args = { f }, env = { http_proxy = proxy, no_proxy = "", NO_PROXY = "" } }
      assert.are.equal("200 nil\n", r.stdout, r.stderr)   -- the environment is not the integration's
      helper.integrations(helper.lua_source({ shop = { base_url = mock.url .. "/v1", proxy = "env" } }), dir)
      r = helper.cli{ args = { f }, env = { http_proxy = proxy, no_proxy = "", NO_PROXY = "" } }
      assert.are.equal("error refused\n", r.stdout, r.stderr)
      r = helper.cli{ args = { f }, env = { http_proxy = proxy, no_proxy = "127.0.0.1" } }
      assert.are.equal("200 nil\n", r.stdout)
    end)

    it("gives every session of --sessions the same args", function()
      local f = helper.flow('say(session.id .. " " .. table.concat(args, ","))')
      local r = helper.cli{ args = { "--sessions", "2", f, "a", "b" } }
      local out = helper.lines(r.stdout)
      table.sort(out)
      assert.same({ "[1] 1 a,b", "[2] 2 a,b" }, out)
    end)

    it("keeps a CHANGELOG with the version flowrun says it is", function()
      local log = helper.read(helper.root .. "/CHANGELOG.md")
      local version = helper.cli{ args = { "--version" } }.stdout:match("^flowrun (%S+)")
      assert.is_truthy(log and version)
      assert.matches("\n## " .. version:gsub("%p", "%%%0") .. " ", log)
      assert.matches("^# Changelog\n\n## Unreleased\n", log)
    end)

    it("ships the MIT licence the README states", function()
      local licence = helper.read(helper.root .. "/LICENSE")
      assert.is_truthy(licence and licence:find("^MIT License\n"))
      assert.matches("flowrun is under the MIT licence (`LICENSE`)", helper.read(helper.root .. "/README.md"), 1, true)
    end)
  end)

  describe("--version and --help", function()
    it("--version prints the version and exits 0", function()
      local r = helper.cli{ args = { "--version" } }
      assert.are.equal(0, r.code)
      assert.matches("^flowrun " .. helper.module()._VERSION:gsub("%p", "%%%0"), r.stdout)
    end)

    it("--help prints the usage on stdout and exits 0", function()
      local r = helper.cli{ args = { "--help" } }
      assert.are.equal(0, r.code)
      assert.matches("usage", r.stdout)
      for _, word in ipairs { "--sessions", "--trace", "--trace-json", "-I", "mock" } do
        assert.matches(word, r.stdout, 1, true)
      end
    end)
  end)

  describe("run", function()
    it("`flowrun run FLOW` is `flowrun FLOW`", function()
      local _, flow = project([[ say("ran " .. table.concat(args, ",")) ]])
      local a = helper.cli{ args = { "run", flow, "x" } }
      local b = helper.cli{ args = { flow, "x" } }
      assert.are.equal(0, a.code)
      assert.are.equal("ran x\n", a.stdout)
      assert.are.same(a, b)
    end)

    it("arguments after the flow are the flow's, even those starting with -", function()
      local _, flow = project([[ say(table.concat(args, " ")) ]])
      local r = helper.cli{ args = { flow, "--trace", "-I", "x" } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("--trace -I x\n", r.stdout)
      assert.are.equal("", r.stderr)
    end)

    it("takes as many arguments as the command line holds (300)", function()
      local _, flow = project([[ say(select("#", ...) .. " " .. #args .. " " .. select(300, ...)) ]])
      local argv = { flow }
      for i = 1, 300 do argv[#argv + 1] = "a" .. i end
      local r = helper.cli{ args = argv }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("300 300 a300\n", r.stdout)
    end)
  end)

  describe("finding the integrations file", function()
    it("-I FILE", function()
      local dir = helper.tmpdir()
      local ig = helper.integrations({ shop = { base_url = mock.url } }, dir)
      local flow = helper.flow(CALL, helper.tmpdir())
      local r = helper.cli{ args = { "-I", ig, flow } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("200\n", r.stdout)
    end)

    it("else $FLOWRUN_INTEGRATIONS", function()
      local ig = helper.integrations({ shop = { base_url = mock.url } })
      local flow = helper.flow(CALL, helper.tmpdir())
      local r = helper.cli{ args = { flow }, env = { FLOWRUN_INTEGRATIONS = ig } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("200\n", r.stdout)
    end)

    it("-I wins over $FLOWRUN_INTEGRATIONS", function()
      local good = helper.integrations({ shop = { base_url = mock.url } })
      local broken = helper.integrations("return {")
      local flow = helper.flow(CALL, helper.tmpdir())
      local r = helper.cli{ args = { "-I", good, flow }, env = { FLOWRUN_INTEGRATIONS = broken } }
      assert.are.equal(0, r.code, r.stderr)
    end)

    it("else integrations.lua beside the flow", function()
      local _, flow = project(CALL)
      local r = helper.cli{ args = { flow }, cwd = helper.tmpdir() }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("200\n", r.stdout)
    end)

    it("$FLOWRUN_INTEGRATIONS wins over integrations.lua beside the flow", function()
      local _, flow = project(CALL, "elsewhere")
      local ig = helper.integrations({ shop = { base_url = mock.url } })
      local r = helper.cli{ args = { flow }, env = { FLOWRUN_INTEGRATIONS = ig } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("200\n", r.stdout)
    end)

    it("beside the flow wins over the current directory", function()
      local _, flow = project(CALL)
      local cwd = helper.tmpdir()
      helper.integrations("return {", cwd)
      local r = helper.cli{ args = { flow }, cwd = cwd }
      assert.are.equal(0, r.code, r.stderr)
    end)

    it("else integrations.lua in the current directory", function()
      local cwd = helper.tmpdir()
      helper.integrations({ shop = { base_url = mock.url } }, cwd)
      local flow = helper.flow(CALL, helper.tmpdir())
      local r = helper.cli{ args = { flow }, cwd = cwd }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("200\n", r.stdout)
    end)

    it("a relative flow path finds integrations.lua beside it", function()
      local dir, _ = project(CALL)
      local parent, name = dir:match("^(.*)/([^/]+)$")
      local r = helper.cli{ args = { name .. "/flow.lua" }, cwd = parent }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("200\n", r.stdout)
    end)

    it("without any, api_node says the integration is unknown", function()
      local flow = helper.flow(CALL, helper.tmpdir())
      local r = helper.cli{ args = { flow }, cwd = helper.tmpdir() }
      assert.are.equal(1, r.code)
      assert.matches("api_node: unknown integration 'shop'", r.stderr, 1, true)
    end)
  end)

  describe("--sessions N", function()
    it("runs N sessions and prefixes every output line with [ID]", function()
      local _, flow = project([[
        say("hello")
        local label = api_node{ integration = "shop", path = "/echo", results = { "200" } }
        say(label)
      ]])
      local r = helper.cli{ args = { "run", "--sessions", "3", flow } }
      assert.are.equal(0, r.code, r.stderr)
      local lines = helper.lines(r.stdout)
      table.sort(lines)
      assert.are.same({ "[1] 200", "[1] hello", "[2] 200", "[2] hello", "[3] 200", "[3] hello" }, lines)
    end)

    it("prefixes ask prompts, logs and errors too", function()
      local _, flow = project([[
        log.info("from " .. session.id)
        if session.id == "2" then error("two fails") end
        ask("name?")
      ]])
      local r = helper.cli{ args = { "--sessions", "2", flow }, stdin = "a\n" }
      assert.are.equal(1, r.code)
      assert.are.equal("[1] name?\n", r.stdout)
      assert.matches("[1] info: from 1", r.stderr, 1, true)
      assert.matches("[2] info: from 2", r.stderr, 1, true)
      assert.matches("[2] " .. flow .. ":2: two fails", r.stderr, 1, true)
    end)

    it("prefixes each line of a message of several lines, and of a traceback", function()
      local _, flow = project([[
        say("first\nsecond")
        log.warn("a\nb")
        error("boom")
      ]])
      local r = helper.cli{ args = { "--sessions", "2", flow } }
      assert.are.equal(1, r.code)
      local out = helper.lines(r.stdout)
      table.sort(out)
      assert.are.same({ "[1] first", "[1] second", "[2] first", "[2] second" }, out)
      for _, line in ipairs(helper.lines(r.stderr)) do
        assert.matches("^%[[12]%] ", line)
      end
      assert.matches("[1] warn: a\n[1] b\n", r.stderr, 1, true)
      assert.matches("[2] stack traceback:", r.stderr, 1, true)
    end)

    it("1 means no prefix", function()
      local _, flow = project([[ say("plain") ]])
      local r = helper.cli{ args = { "--sessions", "1", flow } }
      assert.are.equal("plain\n", r.stdout)
    end)
  end)

  describe("--trace", function()
    it("writes one line per call on stderr", function()
      local _, flow = project([[
        api_node{ integration = "shop", path = "/echo", query = { q = 1 }, results = { "200" } }
        api_node{ integration = "shop", method = "POST", path = "/missing", body = { a = 1 }, results = { "200" } }
        api_node{ integration = "shop", path = "/hang", timeout_ms = 100, results = { "200" } }
        say("done")
      ]])
      local r = helper.cli{ args = { "--trace", flow } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("done\n", r.stdout)
      local lines = helper.lines(r.stderr)
      assert.are.equal(3, #lines, r.stderr)
      local url = mock.url:gsub("%p", "%%%0")
      assert.matches("^trace session=1 integration=shop method=GET url=" .. url .. "/echo%?q=1 label=200 status=200 elapsed_ms=%d+ attempts=1$", lines[1])
      assert.matches("^trace session=1 integration=shop method=POST url=" .. url .. "/missing label=other status=404 elapsed_ms=%d+ attempts=1$", lines[2])
      assert.matches("^trace session=1 integration=shop method=GET url=" .. url .. "/hang label=timeout elapsed_ms=%d+ attempts=1 reason=timeout$", lines[3])
    end)

    it("names each session", function()
      local _, flow = project(CALL)
      local r = helper.cli{ args = { "--trace", "--sessions", "2", flow } }
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("trace session=1 ", r.stderr, 1, true)
      assert.matches("trace session=2 ", r.stderr, 1, true)
    end)

    it("is silent without the option", function()
      local _, flow = project(CALL)
      local r = helper.cli{ args = { flow } }
      assert.are.equal("", r.stderr)
    end)
  end)

  describe("--trace-json FILE", function()
    it("writes the same as JSON lines", function()
      local dir, flow = project([[
        api_node{ integration = "shop", path = "/echo", results = { "200" } }
        api_node{ integration = "shop", path = "/hang", timeout_ms = 100, results = { "200" } }
      ]])
      local file = dir .. "/trace.jsonl"
      local r = helper.cli{ args = { "--trace-json", file, flow } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("", r.stderr)
      local lines = helper.lines(helper.read(file))
      assert.are.equal(2, #lines)
      local ok = cjson.decode(lines[1])
      assert.are.equal("1", ok.session)
      assert.are.equal("shop", ok.integration)
      assert.are.equal("GET", ok.method)
      assert.are.equal(mock.url .. "/echo", ok.url)
      assert.are.equal("200", ok.label)
      assert.are.equal(200, ok.status)
      assert.are.equal("number", type(ok.elapsed_ms))
      assert.are.equal(1, ok.attempts)
      assert.is_nil(ok.reason)
      assert.is_nil(ok.error)
      local to = cjson.decode(lines[2])
      assert.are.equal("timeout", to.label)
      assert.are.equal(cjson.null, to.status)
      assert.are.equal("timeout", to.reason)
      assert.are.equal("string", type(to.error))
      assert.are.equal("number", type(to.elapsed_ms))
      assert.are.equal(1, to.attempts)
    end)

    it("writes both with --trace", function()
      local dir, flow = project(CALL)
      local file = dir .. "/t.jsonl"
      local r = helper.cli{ args = { "--trace", "--trace-json", file, "--sessions", "2", flow } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(2, #helper.lines(r.stderr))
      local sessions = {}
      for _, line in ipairs(helper.lines(helper.read(file))) do
        sessions[#sessions + 1] = cjson.decode(line).session
      end
      table.sort(sessions)
      assert.are.same({ "1", "2" }, sessions)
    end)

    it("is 2 when the file cannot be written", function()
      local _, flow = project(CALL)
      local r = helper.cli{ args = { "--trace-json", helper.tmpdir() .. "/no/such/dir/t.jsonl", flow } }
      assert.are.equal(2, r.code)
    end)
  end)
end)
