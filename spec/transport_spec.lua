-- Calls answered by the host (flowrun_set_transport; the Lua module's
-- transport) on a virtual clock (flowrun_virtual_clock; virtual_clock =
-- true): everything a call does but the network, exact and instant.
local helper = require "spec.helper"

local SHOP = { shop = { base_url = "http://127.0.0.1:9/v1", timeout_ms = 1000, max_connections = 2,
                        queue_timeout_ms = 500, max_response_bytes = 100, follow_redirects = true,
                        endpoints = { order = { method = "GET", path = "/orders/{id}" } },
                        retry = { attempts = 3, on = { "503", "timeout" }, backoff_ms = 200 } } }

describe("a transport on a virtual clock", function()
  local flowrun, dir
  setup(function() flowrun = helper.module() dir = helper.tmpdir() end)
  teardown(helper.cleanup)

  -- Runs FLOW (its says joined by newlines) with the transport answer(req);
  -- returns what it said, the requests, the virtual and the real ms it took.
  local function run(flow, answer, opts)
    local seen = {}
    local rt = flowrun.new{ integrations = opts and opts.integrations or SHOP, virtual_clock = 1767225600000,
                            transport = function(req)
                              seen[#seen + 1] = req
                              return answer(req)
                            end }
    local c0, t0 = rt:clock(), helper.now()
    for i = 1, opts and opts.sessions or 1 do rt:start("s" .. i, helper.flow(flow, dir)) end
    assert.is_true(rt:run())
    local said = {}
    for _, e in ipairs(rt:events()) do
      if e.type == "say" then said[#said + 1] = e.text
      elseif e.type == "end" and not e.ok then said[#said + 1] = "failed: " .. e.error end
    end
    local virtual = rt:clock() - c0
    rt:close()
    return table.concat(said, "\n"), seen, virtual, helper.now() - t0
  end

  it("gives the flow the answer: status, headers, json, the elapsed time of its delay", function()
    local said, seen, virtual = run([[
local label, res = api_node{ endpoint = "shop.order", params = { id = 42 }, query = { x = "1" },
                             headers = { ["X-Trace"] = "t1" }, results = { "200" } }
say(label .. " " .. res.status .. " " .. res.json.id .. " " .. res.headers["x-answer"] .. " " .. res.elapsed_ms)
]], function() return { status = 200, headers = { ["X-Answer"] = "yes" }, json = { id = 42 }, delay_ms = 30 } end)
    assert.are.equal("200 200 42 yes 30", said)
    assert.are.equal(1, #seen)
    local r = seen[1]
    assert.are.same({ "GET", "shop", "order", "s1", "/v1/orders/42", "x=1", "t1", 1 },
                    { r.method, r.integration, r.endpoint, r.session, r.path, r.query, r.headers["x-trace"], r.attempt })
    assert.are.equal("http://127.0.0.1:9/v1/orders/42?x=1", r.url)
    assert.are.equal(30, virtual // 1)
  end)

  it("makes sleeps, timeouts, backoff and Retry-After instant and exact", function()
    local said, seen, virtual, real = run([[
local t0 = os.time()
local l1, r1 = api_node{ integration = "shop", path = "/slow", results = { "200" } }
local l2, r2 = api_node{ integration = "shop", path = "/flaky", results = { "200" } }
sleep(86400 * 1000)
say(table.concat({ l1, r1.reason, r1.elapsed_ms, r1.attempts, l2, r2.attempts, r2.elapsed_ms, os.time() - t0 }, " "))
]], function(req)
      if req.path == "/v1/slow" then return { status = 200, delay_ms = 5000 } end
      if req.attempt < 3 then return { status = 503, headers = { ["Retry-After"] = "2" } } end
      return { status = 200 }
    end)
    -- the slow one times out at 1000 ms, three times, with 200 and 400 ms of backoff
    assert.are.equal("timeout timeout 3600 3 200 3 4000 " .. (86400 + 7), said)   -- 7.6 s
    assert.are.equal(6, #seen)
    assert.are.equal(86400000 + 7600, virtual // 1)
    assert.is_true(real < 5000, "real ms " .. real)
  end)

  it("gives each fault its label and reason, and a transport's own mistakes as error/internal", function()
    local said = run([[
for _, p in ipairs({ "/refused", "/reset", "/dns", "/tls", "/ct", "/bogus", "/raise", "/nothing", "/status" }) do
  local label, res = api_node{ integration = "shop", path = p, results = { "200" } }
  say(p .. " " .. label .. " " .. res.reason .. " " .. res.error)
end
]], function(req)
      local p = req.path:sub(4)
      if p == "/refused" then return { fault = "refused", message = "no one there" } end
      if p == "/reset" then return { fault = "reset" } end
      if p == "/dns" then return { fault = "dns", message = "no such host" } end
      if p == "/tls" then return { fault = "tls", message = "bad certificate" } end
      if p == "/ct" then return { fault = "connect_timeout" } end
      if p == "/bogus" then return { fault = "gremlins" } end
      if p == "/raise" then error("the stub broke") end
      if p == "/nothing" then return nil end
      return { status = 42 }
    end)
    local lines = {}
    for l in said:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal("/refused error refused no one there", lines[1])
    assert.are.equal("/reset error reset reset", lines[2])
    assert.are.equal("/dns error dns no such host", lines[3])
    assert.are.equal("/tls error tls bad certificate", lines[4])
    assert.matches("^/ct timeout connect_timeout", lines[5])
    assert.are.equal("/bogus error internal the transport's fault 'gremlins' is none a call can have", lines[6])
    assert.matches("^/raise error internal .*the stub broke", lines[7])
    assert.matches("^/nothing error internal .*the transport returned nil, not a table", lines[8])
    assert.are.equal("/status error internal the transport's status 42 is not an HTTP status", lines[9])
  end)

  it("follows redirects, caps the body, and holds max_connections through the delays", function()
    local said, seen = run([[
local l1, r1 = api_node{ integration = "shop", path = "/old", results = { "200" } }
local l2, r2 = api_node{ integration = "shop", path = "/big", results = { "200" } }
say(l1 .. " " .. r1.url .. " " .. l2 .. " " .. r2.reason)
]], function(req)
      if req.path == "/v1/old" then return { status = 301, headers = { Location = "/v1/new" } } end
      if req.path == "/v1/big" then return { status = 200, body = ("x"):rep(101) } end
      return { status = 200 }
    end)
    assert.are.equal("200 http://127.0.0.1:9/v1/new error too_large", said)
    assert.are.equal(3, #seen)
    -- five sessions, two slots: the third waits for a slot, the fifth gives up after 500 ms
    local said2 = run([[
local label, res = api_node{ integration = "shop", path = "/x", results = { "200" } }
say(session.id .. " " .. label .. " " .. res.elapsed_ms)
]], function() return { status = 200, delay_ms = 400 } end, { sessions = 5 })
    local got = {}
    for l in said2:gmatch("[^\n]+") do got[#got + 1] = l end
    table.sort(got)
    assert.are.same({ "s1 200 400", "s2 200 400", "s3 200 800", "s4 200 800", "s5 max-connection 500" }, got)
  end)

  it("gives the same result every time (200 runs)", function()
    local flow = [[
local label, res = api_node{ integration = "shop", path = "/r", results = { "200" } }
sleep(10)
say(session.id .. " " .. label .. " " .. res.elapsed_ms .. " " .. os.time() .. " " .. os.date("!%H:%M:%S"))
]]
    local first
    for _ = 1, 200 do
      local said = run(flow, function(req) return { status = req.session == "s2" and 503 or 200, delay_ms = 7 } end,
                       { sessions = 3 })
      first = first or said
      assert.are.equal(first, said)
    end
    assert.are.equal("s1 200 7 1767225600 00:00:00\ns3 200 14 1767225600 00:00:00\n"
                     .. "s2 other 621 1767225600 00:00:00", first)
  end)

  it("refuses network calls on a virtual clock without a transport, and a clock made too late", function()
    local rt = flowrun.new{ integrations = SHOP, virtual_clock = true }
    rt:start("a", helper.flow('local l, r = api_node{ integration = "shop", path = "/x", results = { "200" } } say(l .. " " .. r.reason .. " " .. r.error)', dir))
    assert.is_true(rt:run())
    local said
    for _, e in ipairs(rt:events()) do if e.type == "say" then said = e.text end end
    rt:close()
    assert.are.equal("error internal a runtime on a virtual clock makes no calls over the network"
                     .. " (flowrun_set_transport)", said)
    assert.has_error(function() flowrun.new{ virtual_clock = "yes" } end,
      "flowrun.new: virtual_clock: expected true or a start time (ms since 1970)")
    assert.has_error(function() flowrun.new{ transport = 42 } end,
      "flowrun.new: transport: expected a function(request) -> answer, got number")
  end)
end)
