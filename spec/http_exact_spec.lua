-- README: Behaviour in detail (retries, resends, a response cut short)
-- and The labels, exactly: what reaches the server is what res.attempts
-- says, a response cut short is not a response, and a process out of
-- descriptors says so.
local helper = require "spec.helper"

-- The requests a faultsrv in closekeep, cut or mix mode has received (it
-- answers GET /count on a connection of its own).
local function server_count(srv)
  local rt = helper.runtime({ counter = { base_url = srv.url } })
  local label, res = rt:api_node{ integration = "counter", path = "/count", results = { "200" } }
  assert.are.equal("200", label)
  return tonumber(res.body:match("total (%d+)"))
end

describe("exact HTTP", function()
  teardown(helper.cleanup)

  describe("a kept-alive connection the server closes without answering", function()
    local srv

    before_each(function() srv = helper.faultsrv("closekeep") end)

    local function runtime(ig)
      ig.base_url = srv.url
      return helper.runtime({ pay = ig })
    end

    -- The first call of a runtime opens the connection and gets its answer;
    -- the second goes out on that kept-alive connection, which the server
    -- closes after reading it.
    local function second_call(rt, spec)
      local first = { integration = "pay", path = "/first", results = { "200" } }
      assert.are.equal("200", (rt:api_node(first)))
      spec.integration = "pay"
      spec.results = { "200" }
      return rt:api_node(spec)
    end

    it("a POST without Idempotency-Key is sent once: error / reset, attempts 1", function()
      local rt = runtime({})
      local label, res = second_call(rt, { method = "POST", path = "/pay", body = { amount = 5 } })
      assert.are.equal("error", label)
      assert.are.equal("reset", res.reason)
      assert.are.equal(1, res.attempts)
      assert.are.equal("the server closed the kept-alive connection without answering; "
        .. "not sent again: a POST without Idempotency-Key is never retried", res.error)
      assert.are.equal(2, server_count(srv))           -- /first and /pay, once
    end)

    it("a PATCH without Idempotency-Key is sent once, even with retry.attempts = 3", function()
      local rt = runtime({ retry = { attempts = 3, on = { "error" }, backoff_ms = 10 } })
      local label, res = second_call(rt, { method = "PATCH", path = "/pay", body = { a = 1 } })
      assert.are.equal("error", label)
      assert.are.equal("reset", res.reason)
      assert.are.equal(1, res.attempts)
      assert.are.equal(2, server_count(srv))
    end)

    it("a POST with Idempotency-Key is sent again and counted", function()
      local rt = runtime({})
      local label, res = second_call(rt, { method = "POST", path = "/pay", body = { amount = 5 },
                                           headers = { ["Idempotency-Key"] = "k-1" } })
      -- sent again on a new connection, whose first request the server answers
      assert.are.equal("200", label)
      assert.are.equal(2, res.attempts)
      assert.are.equal(3, server_count(srv))
    end)

    it("a GET is sent again, even with retry.attempts = 1, and counted in res.attempts", function()
      local rt = runtime({})
      local label, res = second_call(rt, { path = "/item" })
      -- the connection may just have gone stale: a GET can be sent again
      assert.are.equal("200", label)
      assert.are.equal(2, res.attempts)
      assert.are.equal(3, server_count(srv))
    end)

    it("a GET's resend shows in the trace: the server's count is the trace's sum", function()
      local d = helper.tmpdir()
      local ig = helper.integrations({ pay = { base_url = srv.url } }, d)
      local flow = helper.flow([[
        for i = 1, 4 do
          local label, res = api_node{ integration = "pay", path = "/item", results = { "200" } }
          say(("%d %s %d"):format(i, label, res.attempts))
        end
      ]], d)
      local r = helper.cli({ args = { "run", "-I", ig, "--trace", flow } })
      assert.are.equal(0, r.code)
      -- from the second on, each goes out on a connection that has had its answer
      assert.are.same({ "1 200 1", "2 200 2", "3 200 2", "4 200 2" }, helper.lines(r.stdout))
      local sum = 0
      for n in r.stderr:gmatch("attempts=(%d+)") do sum = sum + tonumber(n) end
      assert.are.equal(7, sum)
      assert.are.equal(7, server_count(srv))
    end)

    it("a POST without key from the command line: the server's count is the trace's sum", function()
      local d = helper.tmpdir()
      local ig = helper.integrations({ pay = { base_url = srv.url } }, d)
      local flow = helper.flow([[
        for i = 1, 4 do
          local label, res = api_node{ integration = "pay", method = "POST", path = "/pay",
                                       body = { n = i }, results = { "200" } }
          say(("%d %s %s %d"):format(i, label, tostring(res.reason), res.attempts))
        end
      ]], d)
      local r = helper.cli({ args = { "run", "-I", ig, "--trace", flow } })
      assert.are.equal(0, r.code)
      -- each connection: one answer, then a close without answering
      assert.are.same({ "1 200 nil 1", "2 error reset 1", "3 200 nil 1", "4 error reset 1" },
                      helper.lines(r.stdout))
      local sum = 0
      for n in r.stderr:gmatch("attempts=(%d+)") do sum = sum + tonumber(n) end
      assert.are.equal(4, sum)
      assert.are.equal(4, server_count(srv))
    end)
  end)

  describe("a response cut short by a clean close", function()
    local srv, rt

    setup(function()
      srv = helper.faultsrv("cut")
      rt = helper.runtime({ cut = { base_url = srv.url } })
    end)

    local function get(path)
      return rt:api_node{ integration = "cut", path = path, results = { "200" } }
    end

    it("inside the headers: error / reset, not 200", function()
      local label, res = get("/head")
      assert.are.equal("error", label)
      assert.are.equal("reset", res.reason)
      assert.is_nil(res.status)
      assert.are.equal("the connection closed before the response headers ended", res.error)
    end)

    it("after the status line: error / reset", function()
      local label, res = get("/status")
      assert.are.equal("error", label)
      assert.are.equal("reset", res.reason)
      assert.is_nil(res.status)
    end)

    it("after a 100 Continue: error / reset", function()
      local label, res = get("/continue")
      assert.are.equal("error", label)
      assert.are.equal("reset", res.reason)
      assert.is_nil(res.status)
    end)

    it("a body shorter than Content-Length: error / reset", function()
      local label, res = get("/body")
      assert.are.equal("error", label)
      assert.are.equal("reset", res.reason)
      assert.is_nil(res.status)
    end)

    it("a chunked body without its last chunk: error / reset", function()
      local label, res = get("/chunk")
      assert.are.equal("error", label)
      assert.are.equal("reset", res.reason)
      assert.is_nil(res.status)
    end)

    it("a complete response on the same server is still 200", function()
      local label, res = get("/whole")
      assert.are.equal("200", label)
      assert.are.equal("complete", res.body)
    end)
  end)

  describe("out of file descriptors", function()
    it("a connection that cannot get a socket is error / fd_limit, and says why", function()
      local mock = helper.mock({ { path = "/slow", delay_ms = 300, body = "slow" } })
      local d = helper.tmpdir()
      local ig = helper.integrations({ m = { base_url = mock.url, max_connections = 1000 } }, d)
      local flow = helper.flow([[
        local label, res = api_node{ integration = "m", path = "/slow", results = { "200" } }
        say(("%s %s %s"):format(label, tostring(res.reason), tostring(res.error)))
      ]], d)
      -- 60 calls at once under a limit of 40 descriptors
      local asan = os.getenv("SPEC_CHILD_ASAN_OPTIONS")
      local cmd = "ulimit -n 40; exec "
        .. (asan and "env -u LD_PRELOAD ASAN_OPTIONS=" .. helper.quote(asan) .. " " or "")
        .. helper.quote(helper.flowrun) .. " run --sessions 60 -I " .. helper.quote(ig)
        .. " " .. helper.quote(flow)
      local ok = os.execute("timeout -k 5 60 sh -c " .. helper.quote(cmd) .. " >" .. d
                            .. "/out 2>" .. d .. "/err")
      local err = helper.read(d .. "/err")
      assert.is_nil(helper.sanitizer_report(err))
      assert.is_true(ok, err)
      local limited, ok200, other = 0, 0, {}
      local pattern = "^error fd_limit out of file descriptors %(Too many open files%): "
        .. "Failed to connect to 127%.0%.0%.1 port " .. mock.port
        .. " after %d+ ms: Couldn't connect to server$"
      for _, line in ipairs(helper.lines(helper.read(d .. "/out"))) do
        line = line:gsub("^%[%d+%] ", "")
        if line:match(pattern) then limited = limited + 1
        elseif line == "200 nil nil" then ok200 = ok200 + 1
        else other[#other + 1] = line end
      end
      assert.are.same({}, other)
      assert.is_true(limited > 0, "no fd_limit among the calls")
      assert.is_true(ok200 > 0, "no call got through")
      assert.are.equal(60, limited + ok200)
    end)
  end)
end)
