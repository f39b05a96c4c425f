-- README: Integrations for real APIs -- rate limits, 429 pauses,
-- deadline_ms, traces per attempt. Against real servers on 127.0.0.1:
-- nginx (its access log has each request's arrival to the millisecond,
-- $msec) measures the rate on the server's side; flowrun mock's delay
-- routes time out attempts.
local helper = require "spec.helper"
local cjson = require "cjson"

-- ---- nginx with an access log of $msec ----

-- Starts nginx (helper.nginx) on a free port: /ok answers 200, /busy a 429
-- with Retry-After: 1, /down 503, /moved a redirect to /ok. Returns { url,
-- log = function() -> { {t, uri, status} }, stop }.
local function start_nginx()
  local ng = helper.nginx({ log = "$msec $request_uri $status", servers = [[
  server {
    listen 127.0.0.1:PORT1;
    location /ok { return 200 "ok\n"; }
    location /busy { add_header Retry-After 1 always; return 429 "busy\n"; }
    location /down { return 503 "down\n"; }
    location /moved { return 302 /ok; }
  }
]] })
  local srv = { url = "http://127.0.0.1:" .. ng.ports[1], pid = ng.pid, dir = ng.dir, stop = ng.stop }
  function srv.log()
    local out = {}
    for _, line in ipairs(ng.log()) do
      local t, uri, status = line:match("^(%S+) (%S+) (%d+)$")
      out[#out + 1] = { t = tonumber(t) * 1000, uri = uri, status = tonumber(status) }
    end
    return out
  end
  return srv
end

describe("Integrations for real APIs: limits", function()
  local mock, nginx

  setup(function()
    mock = helper.mock({
      { path = "/echo", echo = true },
      { path = "/slow", delay_ms = 300, body = "slow" },
      { path = "/late-then-conflict", delay_ms = 500, times = 1, body = "late" },
      { path = "/late-then-conflict", status = 409, json = { error = "exists" } },
      { path = "/late-then-conflict2", delay_ms = 500, times = 1, body = "late" },
      { path = "/late-then-conflict2", status = 409, json = { error = "exists" } },
      { path = "/hop", status = 302, headers = { Location = "/echo?hop=1" } },
    })
    nginx = start_nginx()
  end)

  teardown(function()
    if nginx then nginx.stop() end
    helper.cleanup()
  end)

  local function fresh_log()               -- the access log's lines so far
    return #nginx.log()
  end

  describe("rate_limit", function()
    it("keeps the requests the server sees within the bucket: no per_ms window holds more than `requests`", function()
      local dir = helper.tmpdir()
      local ig = helper.integrations({ api = { base_url = nginx.url, rate_limit = { requests = 5, per_ms = 400 },
                                               queue_timeout_ms = 5000 } }, dir)
      local flow = helper.flow([[
        local label = api_node{ integration = "api", path = "/ok", results = { "200" } }
        say(label)
      ]], dir)
      local from = fresh_log()
      local t0 = helper.now()
      local r = helper.cli{ args = { "run", "-I", ig, "--sessions", "20", flow } }
      local took = helper.now() - t0
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(20, select(2, r.stdout:gsub("200\n", "")))
      local times = {}
      for i, e in ipairs(nginx.log()) do
        if i > from then times[#times + 1] = e.t end
      end
      table.sort(times)
      assert.are.equal(20, #times)
      -- 20 requests, 5 a window: the last starts 3 windows after the first
      assert.is_true(times[20] - times[1] >= 3 * 400 - 40, ("spread %.0f ms"):format(times[20] - times[1]))
      for i = 1, #times - 5 do            -- the 6th after any request: a window later
        assert.is_true(times[i + 5] - times[i] >= 400 - 40,
                       ("requests %d and %d %.0f ms apart"):format(i, i + 5, times[i + 5] - times[i]))
      end
      assert.is_true(took < 4000, "took " .. took)
    end)

    it("a call that gets no turn within queue_timeout_ms: max-connection, reason rate_limit", function()
      local rt = helper.runtime({ api = { base_url = nginx.url, rate_limit = { requests = 1, per_ms = 60000 },
                                          queue_timeout_ms = 200 } })
      local spec = { integration = "api", path = "/ok", results = { "200" } }
      assert.are.equal("200", (rt:api_node(spec)))
      local t0 = helper.now()
      local label, res = rt:api_node(spec)
      local took = helper.now() - t0
      assert.are.equal("max-connection", label)
      assert.are.equal("rate_limit", res.reason)
      assert.are.equal("integration 'api' allows 1 requests per 60000 ms (rate_limit) and had no turn"
                       .. " free within queue_timeout_ms (200)", res.error)
      assert.is_true(took >= 190 and took < 1000, "took " .. took)
    end)

    it("with queue_timeout_ms = 0 fails at once; a full pool keeps its own reason", function()
      local rt = helper.runtime({ api = { base_url = nginx.url, rate_limit = { requests = 1, per_ms = 60000 },
                                          queue_timeout_ms = 0 } })
      local spec = { integration = "api", path = "/ok", results = { "200" } }
      assert.are.equal("200", (rt:api_node(spec)))
      local label, res = rt:api_node(spec)
      assert.are.equal("max-connection", label)
      assert.are.equal("rate_limit", res.reason)
      assert.are.equal("integration 'api' allows 1 requests per 60000 ms (rate_limit) and had no turn free",
                       res.error)
      local rt2 = helper.runtime({ shop = { base_url = mock.url, max_connections = 1, queue_timeout_ms = 100 } })
      helper.start(rt2, "a", [[ api_node{ integration = "shop", path = "/slow", results = { "200" } } ]])
      rt2:step(50)
      local l2, r2 = rt2:api_node({ integration = "shop", path = "/echo", results = { "200" } })
      assert.are.equal("max-connection", l2)
      assert.are.equal("pool_full", r2.reason)
    end)

    it("a retry takes a token too (its wait bounded by deadline_ms); a redirect followed does not", function()
      local rt = helper.runtime({ api = { base_url = nginx.url, rate_limit = { requests = 1, per_ms = 60000 },
                                          follow_redirects = true, retry = { attempts = 2, backoff_ms = 10 } } })
      local from = fresh_log()
      assert.are.equal("200", (rt:api_node({ integration = "api", path = "/moved", results = { "200" } })))
      local rt2 = helper.runtime({ api = { base_url = nginx.url, rate_limit = { requests = 1, per_ms = 60000 },
                                           deadline_ms = 400, retry = { attempts = 2, backoff_ms = 10 } } })
      local t0 = helper.now()
      local label, res = rt2:api_node({ integration = "api", path = "/down", results = { "200" } })
      local took = helper.now() - t0
      assert.are.equal("timeout", label)
      assert.are.equal("deadline", res.reason)
      assert.are.equal("deadline_ms (400) of the call would pass before attempt 2 had its turn", res.error)
      assert.are.equal(1, res.attempts)
      assert.is_true(took < 300, "took " .. took)   -- ended when its backoff did, not at the deadline
      local uris = {}
      for i, e in ipairs(nginx.log()) do
        if i > from then uris[#uris + 1] = e.uri end
      end
      assert.are.same({ "/moved", "/ok", "/down" }, uris)
    end)
  end)

  describe("a 429 with Retry-After", function()
    it("pauses the whole integration: other sessions' calls reach the server after it, not before", function()
      local rt = helper.runtime({ api = { base_url = nginx.url, queue_timeout_ms = 3000 } })
      local flow = [[
        local path = ...
        local label, res = api_node{ integration = "api", path = path, results = { "200", "429" } }
        say(label)
      ]]
      local from = fresh_log()
      helper.start(rt, "busy", flow, "/busy")
      local said = {}
      local function pump(ms)
        rt:step(ms)
        for _, e in ipairs(rt:events()) do
          if e.type == "say" then said[e.session] = e.text end
        end
      end
      helper.wait_for(function() pump(10) return said.busy end, 5000)
      assert.are.equal("429", said.busy)
      local t0 = helper.now()
      for i = 1, 3 do helper.start(rt, "s" .. i, flow, "/ok") end
      helper.wait_for(function() pump(10) return said.s1 and said.s2 and said.s3 end, 5000)
      local took = helper.now() - t0
      assert.are.same({ "200", "200", "200" }, { said.s1, said.s2, said.s3 })
      local busy_t, oks = nil, {}
      for i, e in ipairs(nginx.log()) do
        if i > from and e.uri == "/busy" then busy_t = e.t
        elseif i > from and e.uri == "/ok" then oks[#oks + 1] = e.t end
      end
      assert.are.equal(3, #oks)
      for _, t in ipairs(oks) do
        assert.is_true(t - busy_t >= 1000 - 40, ("an /ok %.0f ms after the 429"):format(t - busy_t))
      end
      assert.is_true(took < 2500, "took " .. took)
    end)

    it("a call that waits past queue_timeout_ms meanwhile: max-connection, reason rate_limit", function()
      local rt = helper.runtime({ api = { base_url = nginx.url, queue_timeout_ms = 200 } })
      local l1 = rt:api_node({ integration = "api", path = "/busy", results = { "200", "429" } })
      assert.are.equal("429", l1)
      local label, res = rt:api_node({ integration = "api", path = "/ok", results = { "200" } })
      assert.are.equal("max-connection", label)
      assert.are.equal("rate_limit", res.reason)
      assert.matches("^integration 'api' is paused by a 429's Retry%-After for %d+ ms more, past queue_timeout_ms$",
                     res.error)
    end)
  end)

  describe("deadline_ms", function()
    it("cuts the retries: the attempt in flight ends at the deadline, timeout / deadline", function()
      local srv = helper.faultsrv("mix")   -- /hang: never answered; /count: what it received
      local rt = helper.runtime({ shop = { base_url = srv.url, timeout_ms = 200, deadline_ms = 450,
                                           retry = { attempts = 5, backoff_ms = 100, on = { "timeout" } } } })
      local t0 = helper.now()
      local label, res = rt:api_node({ integration = "shop", path = "/hang", results = { "200" } })
      local took = helper.now() - t0
      assert.are.equal("timeout", label)
      assert.are.equal("deadline", res.reason)
      assert.are.equal("deadline_ms (450) of the call passed during attempt 2", res.error)
      assert.are.equal(2, res.attempts)
      assert.is_true(took >= 440 and took < 750, "took " .. took)
      local _, count = rt:api_node({ integration = "shop", path = "/count", results = { "200" } })
      assert.matches("\n/hang 2\n", count.body, 1, true)   -- the server saw two attempts
    end)

    it("starts no attempt that the backoff puts past the deadline, and the node's deadline_ms wins", function()
      local rt = helper.runtime({ shop = { base_url = mock.url, timeout_ms = 200, deadline_ms = 60000,
                                           retry = { attempts = 5, backoff_ms = 1000, on = { "timeout" } } } })
      local t0 = helper.now()
      local label, res = rt:api_node({ integration = "shop", path = "/slow", deadline_ms = 700,
                                       results = { "200" } })
      local took = helper.now() - t0
      assert.are.equal("timeout", label)
      assert.are.equal("deadline", res.reason)
      assert.are.equal("deadline_ms (700) of the call would pass before attempt 2", res.error)
      assert.are.equal(1, res.attempts)
      assert.is_true(took >= 190 and took < 500, "took " .. took)
    end)

    it("ends a call that waits in the queue at its deadline", function()
      local rt = helper.runtime({ api = { base_url = nginx.url, rate_limit = { requests = 1, per_ms = 60000 },
                                          queue_timeout_ms = 5000, deadline_ms = 300 } })
      local spec = { integration = "api", path = "/ok", results = { "200" } }
      assert.are.equal("200", (rt:api_node(spec)))
      local t0 = helper.now()
      local label, res = rt:api_node(spec)
      local took = helper.now() - t0
      assert.are.equal("timeout", label)
      assert.are.equal("deadline", res.reason)
      assert.are.equal("deadline_ms (300) of the call passed while it waited for integration 'api'", res.error)
      assert.is_true(took >= 290 and took < 1000, "took " .. took)
    end)

    it("is checked when the file loads and by flowrun check", function()
      local d = helper.tmpdir()
      local ig = helper.integrations({ api = { base_url = mock.url, deadline_ms = 0 } }, d)
      local flow = helper.flow('say("x")', d)
      local r = helper.cli{ args = { "run", "-I", ig, flow } }
      assert.are.equal(2, r.code)
      assert.matches("integrations%.lua: api%.deadline_ms: expected an integer >= 1, got 0", r.stderr)
      local ok_ig = helper.integrations({ api = { base_url = mock.url } }, d)
      flow = helper.flow([[api_node{ integration = "api", path = "/x", deadline_ms = "5", results = { "200" } }]], d)
      r = helper.cli{ args = { "check", "-I", ok_ig, flow } }
      assert.are.equal(1, r.code)
      assert.matches("deadline_ms: expected a positive integer", r.stdout .. r.stderr)
    end)
  end)

  describe("rate_limit in the integrations file", function()
    local function load_error(spec)
      local d = helper.tmpdir()
      local ig = helper.integrations({ api = spec }, d)
      local r = helper.cli{ args = { "run", "-I", ig, helper.flow('say("x")', d) } }
      assert.are.equal(2, r.code)
      return r.stderr
    end

    it("names the file and the key on a mistake", function()
      local base = mock.url
      assert.matches("integrations%.lua: api%.rate_limit: expected a table, got number",
                     load_error({ base_url = base, rate_limit = 10 }))
      assert.matches("integrations%.lua: api%.rate_limit%.requests: required",
                     load_error({ base_url = base, rate_limit = { per_ms = 1000 } }))
      assert.matches("integrations%.lua: api%.rate_limit%.per_ms: expected an integer >= 1, got 0",
                     load_error({ base_url = base, rate_limit = { requests = 1, per_ms = 0 } }))
      assert.matches("integrations%.lua: api%.rate_limit%.requests: at most 100000",
                     load_error({ base_url = base, rate_limit = { requests = 100001, per_ms = 1 } }))
      assert.matches("integrations%.lua: api%.rate_limit: unknown key 'burst'",
                     load_error({ base_url = base, rate_limit = { requests = 1, per_ms = 1, burst = 2 } }))
    end)

    it("is shown by the REPL's .integrations, with deadline_ms", function()
      local d = helper.tmpdir()
      local ig = helper.integrations({ api = { base_url = mock.url, deadline_ms = 2500,
                                               rate_limit = { requests = 10, per_ms = 1000 } } }, d)
      local r = helper.cli{ args = { "repl", "-I", ig }, stdin = ".integrations\n" }
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("\n  rate_limit: 10 requests per 1000 ms\n", r.stdout, 1, true)
      assert.matches("\n  deadline_ms 2500\n", r.stdout, 1, true)
    end)
  end)

  describe("traces per attempt", function()
    local function run_traced(source, ig)
      local d = helper.tmpdir()
      local ifile = helper.integrations({ shop = ig }, d)
      local tj = d .. "/t.jsonl"
      local r = helper.cli{ args = { "run", "-I", ifile, "--trace", "--trace-json", tj, helper.flow(source, d) } }
      assert.are.equal(0, r.code, r.stderr)
      local recs = {}
      for _, line in ipairs(helper.lines(helper.read(tj) or "")) do recs[#recs + 1] = cjson.decode(line) end
      return r, recs
    end

    it("a 409 after a timed-out first attempt shows both, in --trace and --trace-json", function()
      local r, recs = run_traced([[
        local label, res = api_node{ integration = "shop", method = "PUT", path = "/late-then-conflict",
                                     body = { id = 7 }, results = { "200", "409" } }
        say(label .. " " .. res.attempts)
      ]], { base_url = mock.url, timeout_ms = 200, retry = { attempts = 2, backoff_ms = 10 } })
      assert.are.equal("409 2\n", r.stdout)
      local lines = helper.lines(r.stderr)
      assert.are.equal(2, #lines)
      assert.matches("^trace session=1 integration=shop method=PUT url=" .. mock.url:gsub("%p", "%%%0")
                     .. "/late%-then%-conflict label=timeout elapsed_ms=%d+ attempts=1 reason=timeout"
                     .. " attempt=1 hop=0 final=0$", lines[1])
      assert.matches(" label=409 status=409 elapsed_ms=%d+ attempts=2$", lines[2])
      assert.are.equal(2, #recs)
      assert.are.same({ 1, false, "timeout", "timeout", cjson.null },
                      { recs[1].attempt, recs[1].final, recs[1].label, recs[1].reason, recs[1].status })
      assert.are.same({ 2, true, "409", 409, 2 },
                      { recs[2].attempt, recs[2].final, recs[2].label, recs[2].status, recs[2].attempts })
      assert.are.equal('{"id":7}', recs[2].request_body)
      local ct = false
      for _, h in ipairs(recs[2].request_headers) do ct = ct or h == "Content-Type: application/json" end
      assert.is_true(ct, table.concat(recs[2].request_headers, " | "))
      assert.matches("^HTTP/1%.1 409", recs[2].response_headers)
      assert.are.equal('{"error":"exists"}', recs[2].response_body)
    end)

    it("a redirect hop has its own record; bodies past 8192 bytes are cut, their size given", function()
      local _, recs = run_traced([[
        api_node{ integration = "shop", path = "/hop", results = { "200" } }
        api_node{ integration = "shop", method = "POST", path = "/echo", body = string.rep("a", 10000),
                  headers = { ["Content-Type"] = "text/plain" }, results = { "200" } }
      ]], { base_url = mock.url, follow_redirects = true })
      assert.are.equal(3, #recs)
      assert.are.same({ 1, 0, false, 302, mock.url .. "/hop" },
                      { recs[1].attempt, recs[1].hop, recs[1].final, recs[1].status, recs[1].url })
      assert.are.same({ 1, 1, true, 200, mock.url .. "/echo?hop=1" },
                      { recs[2].attempt, recs[2].hop, recs[2].final, recs[2].status, recs[2].url })
      assert.are.equal(8192, #recs[3].request_body)
      assert.are.equal(10000, recs[3].request_body_bytes)
      assert.are.equal(8192, #recs[3].response_body)
      assert.is_true(recs[3].response_body_bytes > 10000)
    end)

    it("--trace-json writes any body as JSON: quotes, controls, UTF-8 kept, bad bytes as U+FFFD, at any length", function()
      -- the writer escapes into a 1 KB buffer: every kind of byte lands on
      -- its edge in one of these bodies
      local unit = 'ab"c\\d\r\n\te\1f\127g\xc3\xa9h\xe2\x82\xaci\xff' -- 25 bytes
      local bodies, flow = {}, {}
      for n = 1000, 1030 do
        local b = string.rep(unit, n // #unit + 1):sub(1, n)
        bodies[#bodies + 1] = b
        flow[#flow + 1] = ("api_node{ integration = 'shop', method = 'POST', path = '/echo', body = %q,"
                           .. " headers = { ['Content-Type'] = 'text/plain' }, results = { '200' } }"):format(b)
      end
      local _, recs = run_traced(table.concat(flow, "\n"), { base_url = mock.url })
      assert.are.equal(#bodies, #recs)
      for i, b in ipairs(bodies) do
        -- what the flow sent, as valid UTF-8: a byte that starts no valid
        -- sequence (0xff, the start of a cut one) is U+FFFD
        local want, j = {}, 1
        while j <= #b do
          local c, cont = b:byte(j), function(k) local x = b:byte(k) return x and x >= 0x80 and x < 0xc0 end
          local n = c < 0x80 and 1 or (c >= 0xc2 and c < 0xe0 and cont(j + 1)) and 2
                    or (c >= 0xe0 and c < 0xf0 and cont(j + 1) and cont(j + 2)) and 3 or 0
          want[#want + 1] = n > 0 and b:sub(j, j + n - 1) or "\xef\xbf\xbd"
          j = j + math.max(n, 1)
        end
        want = table.concat(want)
        assert.are.equal(want, recs[i].request_body, "body of " .. #b .. " bytes")
      end
    end)

    it("the Lua module's trace events say attempt and final; flowrun test counts calls by the final one", function()
      local rt = helper.runtime({ shop = { base_url = mock.url, timeout_ms = 200,
                                           retry = { attempts = 2, backoff_ms = 10 } } })
      helper.start(rt, "t", [[
        local label = api_node{ integration = "shop", method = "PUT", path = "/late-then-conflict2",
                                body = { id = 8 }, results = { "200", "409" } }
        say(label)
      ]])
      local traces, said = {}, nil
      helper.wait_for(function()
        rt:step(20)
        for _, e in ipairs(rt:events()) do
          if e.type == "trace" then traces[#traces + 1] = e end
          if e.type == "say" then said = e.text end
        end
        return said
      end, 5000)
      assert.are.equal(2, #traces)
      assert.are.same({ 1, false, "timeout" }, { traces[1].attempt, traces[1].final, traces[1].label })
      assert.are.same({ 2, true, "409" }, { traces[2].attempt, traces[2].final, traces[2].label })
      assert.are.equal("timeout", traces[1].reason)
      assert.is_nil(traces[2].error)          -- not the first attempt's
      assert.is_nil(traces[2].reason)
    end)

    it("flowrun test: a retried call is one call (label); deadline_ms and rate_limit hold with stubs", function()
      local d = helper.tmpdir()
      helper.integrations({ shop = { base_url = "http://127.0.0.1:9", timeout_ms = 200,
                                     retry = { attempts = 3, backoff_ms = 10 } },
                            lim = { base_url = "http://127.0.0.1:9", rate_limit = { requests = 1, per_ms = 1000 },
                                    queue_timeout_ms = 5000 } }, d)
      helper.flow([[
local label = api_node{ integration = "shop", method = "PUT", path = "/t", body = { id = 1 },
                        results = { "200", "409" } }
say(label)
local label2, res = api_node{ integration = "shop", path = "/slow", deadline_ms = 300, results = { "200" } }
say(label2 .. " " .. tostring(res.reason) .. " " .. res.attempts)
api_node{ integration = "lim", path = "/a", results = { "200" } }
local _, res3 = api_node{ integration = "lim", path = "/a", results = { "200" } }
say(("%.0f"):format(res3.elapsed_ms))
]], d)
      helper.write(d .. "/flow_test.lua", [[
return {
  flow = "flow.lua", integrations = "integrations.lua",
  stubs = {
    stub { method = "PUT", path = "/t", replies = { { fault = "timeout" }, { status = 409 } } },
    stub { path = "/slow", reply = { status = 200, delay_ms = 250 } },
    stub { integration = "lim", path = "/a", reply = { status = 200 } },
  },
  test "a timeout, then a conflict; a deadline" {
    label "409", bot "409",
    label "timeout", bot "timeout deadline 2",
    label "200", label "200", bot "1000",
    done(),
  },
}
]])
      local r = helper.cli({ args = { "test", "flow_test.lua" }, cwd = d })
      assert.are.equal(0, r.code, r.stdout .. r.stderr)
      assert.matches("ok 1 - flow_test.lua: a timeout, then a conflict; a deadline\n", r.stdout, 1, true)
    end)
  end)
end)
