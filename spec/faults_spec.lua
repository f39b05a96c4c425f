-- README: The labels. The fault matrix: each failure a real server can
-- produce, with the exact label and reason the flow branches on.
local helper = require "spec.helper"

describe("The labels: faults", function()
  local mock

  setup(function()
    mock = helper.mock({
      { path = "/echo", echo = true },
      { path = "/slow", delay_ms = 300, body = "slow" },
      { path = "/hold", delay_ms = 600, body = "held" },
      { path = "/hang", fault = "no_response" },
      { path = "/cut", fault = "reset", body = helper.code('string.rep("x", 200000)') },
      { path = "/huge", body = helper.code('string.rep("x", 100 * 1024 * 1024)') },
      { path = "/kilo", body = helper.code('string.rep("x", 1024)') },
      { path = "/same", status = 302, headers = { Location = "/echo?hop=1" } },
      { path = "/see-other", status = 303, headers = { Location = "/echo?after=post" } },
      { path = "/moved", status = 301, headers = { Location = "/echo?after=301" } },
      { path = "/chunked5000", chunked = true, body = helper.code('string.rep("x", 5000)') },
      { path = "/loop", status = 302, headers = { Location = "/loop" } },
      { path = "/r1", status = 301, headers = { Location = "/r2" } },
      { path = "/r2", status = 302, headers = { Location = "/r3" } },
      { path = "/r3", status = 307, headers = { Location = "/r4" } },
      { path = "/r4", status = 308, headers = { Location = "/r5" } },
      { path = "/r5", status = 302, headers = { Location = "/echo?hops=5" } },
    })
  end)

  teardown(helper.cleanup)

  local function runtime(ig)
    ig.base_url = ig.base_url or mock.url
    return helper.runtime({ shop = ig })
  end

  local function get(rt, path, extra)
    local spec = { integration = "shop", path = path, results = { "200" } }
    for k, v in pairs(extra or {}) do spec[k] = v end
    return rt:api_node(spec)
  end

  describe("connections", function()
    it("a refused port: error / refused", function()
      local rt = runtime({ base_url = "http://127.0.0.1:" .. helper.closed_port() })
      local label, res = get(rt, "/")
      assert.are.equal("error", label)
      assert.are.equal("refused", res.reason)
      assert.is_nil(res.status)
      assert.are.equal(1, res.attempts)
      assert.are.equal("string", type(res.error))
    end)

    it("a server that never answers: timeout / timeout after timeout_ms, before a clock of three times it", function()
      local rt = runtime({ timeout_ms = 500 })
      helper.start(rt, "clock", [[ sleep(1500) say("1.5 s") ]])   -- the loop's own clock
      local t0 = helper.now()
      local label, res = get(rt, "/hang")
      local took = helper.now() - t0
      assert.are.equal("timeout", label)
      assert.are.equal("timeout", res.reason)
      assert.is_true(took >= 500 - 5, "gave up early, after " .. took .. " ms")
      assert.are.same({}, helper.says(rt:events(), "clock"))
    end)

    it("a connect that never completes: timeout / connect_timeout", function()
      local stall = helper.faultsrv("stall")
      local rt = runtime({ base_url = stall.url, connect_timeout_ms = 300, timeout_ms = 5000 })
      helper.start(rt, "clock", [[ sleep(2500) say("2.5 s") ]])   -- the loop's own clock
      local label, res = get(rt, "/")
      assert.are.equal("timeout", label)
      assert.are.equal("connect_timeout", res.reason)
      assert.is_true(res.elapsed_ms >= 290, "elapsed_ms " .. res.elapsed_ms)
      assert.are.same({}, helper.says(rt:events(), "clock"))
    end)

    it("a body that arrives too slowly: timeout / timeout", function()
      local slow = helper.faultsrv("slowbody")
      local rt = runtime({ base_url = slow.url, timeout_ms = 500 })
      local label, res = get(rt, "/")
      assert.are.equal("timeout", label)
      assert.are.equal("timeout", res.reason)
      assert.is_nil(res.status)
      assert.are.equal("", res.body)
    end)

    it("a connection reset mid-body: error / reset", function()
      local rt = runtime({})
      local label, res = get(rt, "/cut")
      assert.are.equal("error", label)
      assert.are.equal("reset", res.reason)
      assert.is_nil(res.status)
      assert.are.equal("", res.body)
    end)

    it("a response that is not HTTP: error / protocol", function()
      local bad = helper.faultsrv("malformed")
      local rt = runtime({ base_url = bad.url })
      local label, res = get(rt, "/")
      assert.are.equal("error", label)
      assert.are.equal("protocol", res.reason)
      assert.is_nil(res.status)
    end)

    it("a status line whose code is not a number: error / protocol", function()
      local bad = helper.faultsrv("badstatus")
      local rt = runtime({ base_url = bad.url })
      local label, res = get(rt, "/")
      assert.are.equal("error", label)
      assert.are.equal("protocol", res.reason)
    end)
  end)

  describe("names", function()
    -- A host name nobody can resolve, asked of a resolver on 127.0.0.1 where
    -- nothing listens: flowrun runs in a mount namespace whose resolv.conf
    -- says so, so no query leaves loopback. Needs root (CI runs as root).
    it("an unknown host: error / dns", function()
      local d = helper.tmpdir()
      helper.write(d .. "/resolv.conf", "nameserver 127.0.0.1\n")
      helper.write(d .. "/nsswitch.conf", "hosts: files dns\n")
      helper.write(d .. "/integrations.lua",
        'return { shop = { base_url = "http://no-such-host.invalid", timeout_ms = 5000 } }')
      local flow = helper.flow([[
        local label, res = api_node{ integration = "shop", path = "/x", results = { "200" } }
        say(label .. " " .. res.reason .. " " .. res.attempts)
      ]], d)
      if not os.execute("unshare -m true 2>/dev/null") then
        pending("unshare -m needs root: the resolver cannot be kept on loopback")
        return
      end
      local cmd = ("unshare -m sh -c 'mount --bind %s/resolv.conf /etc/resolv.conf"
        .. " && mount --bind %s/nsswitch.conf /etc/nsswitch.conf && exec %s -I %s/integrations.lua %s'"
        .. " >%s/out 2>%s/err"):format(d, d, helper.flowrun, d, flow, d, d)
      os.execute(cmd)
      assert.are.equal("error dns 1\n", helper.read(d .. "/out"), helper.read(d .. "/err"))
    end)
  end)

  describe("max_response_bytes", function()
    it("a body over the limit: error / too_large", function()
      local rt = runtime({ max_response_bytes = 1023 })
      local label, res = get(rt, "/kilo")
      assert.are.equal("error", label)
      assert.are.equal("too_large", res.reason)
      assert.are.equal("", res.body)
      rt = runtime({ max_response_bytes = 1024 })
      label, res = get(rt, "/kilo")
      assert.are.equal("200", label)
      assert.are.equal(1024, #res.body)
    end)

    it("a chunked body just over the limit (5 000 bytes, cap 4 096): error / too_large; at the limit: 200", function()
      -- no Content-Length: libcurl's own size check cannot see it coming
      local rt = runtime({ max_response_bytes = 4096 })
      local label, res = get(rt, "/chunked5000")
      assert.are.equal("error", label)
      assert.are.equal("too_large", res.reason)
      assert.are.equal("response body larger than max_response_bytes (4096) of integration 'shop'", res.error)
      rt = runtime({ max_response_bytes = 5000 })
      label, res = get(rt, "/chunked5000")
      assert.are.equal("200", label, res.error)
      assert.are.equal(5000, #res.body)
    end)

    it("a 100 MB body to a 1 KB cap: error / too_large, no body kept, the message naming the cap", function()
      local rt = runtime({ max_response_bytes = 1024, timeout_ms = 20000 })
      local label, res = get(rt, "/huge")
      assert.are.equal("error", label)
      assert.are.equal("too_large", res.reason)
      assert.are.equal("", res.body)
      assert.are.equal(1, res.attempts)
      assert.matches("response body larger than max_response_bytes (1024) of integration 'shop'", res.error, 1, true)
    end)

    it("is enforced while a chunked body (no Content-Length) arrives", function()
      local chunked = helper.mock({
        { path = "/stream", chunked = true, body = helper.code('string.rep("x", 50 * 1024 * 1024)') },
      })
      local rt = runtime({ base_url = chunked.url, max_response_bytes = 4096, timeout_ms = 20000 })
      local label, res = get(rt, "/stream")
      assert.are.equal("error", label)
      assert.are.equal("too_large", res.reason)
      rt = runtime({ base_url = chunked.url, max_response_bytes = 64 * 1024 * 1024, timeout_ms = 20000 })
      label, res = get(rt, "/stream")
      assert.are.equal("200", label)
      assert.are.equal(50 * 1024 * 1024, #res.body)
    end)

    it("is enforced before the body has arrived", function()
      -- faultsrv slowbody announces 10 bytes and sends one a second
      local slow = helper.faultsrv("slowbody")
      local rt = runtime({ base_url = slow.url, max_response_bytes = 5, timeout_ms = 5000 })
      local label, res = get(rt, "/")
      assert.are.equal("error", label)
      assert.are.equal("too_large", res.reason)
    end)
  end)

  describe("response headers", function()
    -- An HTTPS server (openssl s_server -HTTP) that answers GET /NAME with
    -- files[NAME] sent as is, status line and headers included.
    local function raw_server(files)
      local d = helper.tmpdir()
      for name, text in pairs(files) do helper.write(d .. "/" .. name, text) end
      assert(os.execute("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1"
        .. " -addext subjectAltName=IP:127.0.0.1 -days 2 -keyout " .. d .. "/key.pem -out "
        .. d .. "/cert.pem >/dev/null 2>&1"), "openssl req failed")
      local p = io.popen("cd " .. d .. " && openssl s_server -accept 127.0.0.1:0 -HTTP"
        .. " -cert cert.pem -key key.pem </dev/null >out 2>&1 & echo $!")
      local pid = p:read("l")
      p:close()
      finally(function() os.execute("kill " .. pid .. " 2>/dev/null") end)
      local port = helper.wait_for(function()
        return tonumber((helper.read(d .. "/out") or ""):match("ACCEPT 127%.0%.0%.1:(%d+)"))
      end, 10000)
      assert(port, "openssl s_server did not start")
      return { url = "https://127.0.0.1:" .. port, ca_file = d .. "/cert.pem" }
    end

    local function response(headers)
      return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" .. table.concat(headers, "\r\n") .. "\r\n\r\nok"
    end

    it("too large for libcurl: error / too_large", function()
      if not helper.have_openssl() then pending("needs the openssl command") return end
      local many = {}
      for i = 1, 8 do many[i] = "X-Many-" .. i .. ": " .. string.rep("y", 50000) end
      local srv = raw_server({
        small = response { "X-Small: 1" },
        line = response { "X-Big: " .. string.rep("x", 2 * 1024 * 1024) },   -- one 2 MB line
        many = response(many),                                               -- 400 KB in all
      })
      local rt = runtime({ base_url = srv.url, ca_file = srv.ca_file })
      assert.are.equal("200", (get(rt, "/small")))
      for _, path in ipairs { "/line", "/many" } do
        local label, res = get(rt, path)
        assert.are.equal("error", label, path)
        assert.are.equal("too_large", res.reason, path)
        assert.matches("response headers too large", res.error, 1, true)
      end
    end)
  end)

  describe("redirects (follow_redirects = true)", function()
    it("a same-origin redirect is followed", function()
      local rt = runtime({ follow_redirects = true })
      local label, res = get(rt, "/same")
      assert.are.equal("200", label)
      assert.are.equal(200, res.status)
      assert.are.equal(mock.url .. "/echo?hop=1", res.url)
      assert.are.equal(1, res.attempts)
    end)

    it("a same-origin absolute Location is followed", function()
      local port = helper.closed_port()
      local m = helper.mock({
        { path = "/abs", status = 302, headers = { Location = "http://127.0.0.1:" .. port .. "/echo?abs=1" } },
        { path = "/echo", echo = true },
      }, { port = port })
      local rt = runtime({ base_url = m.url, follow_redirects = true })
      local label, res = get(rt, "/abs")
      assert.are.equal("200", label)
      assert.are.equal("abs=1", res.json.query)
    end)

    it("five hops are followed", function()
      local rt = runtime({ follow_redirects = true })
      local label, res = get(rt, "/r1")
      assert.are.equal("200", label)
      assert.are.equal(mock.url .. "/echo?hops=5", res.url)
    end)

    it("a sixth hop is refused: error / redirect", function()
      local before = mock:count("GET /loop ")
      local rt = runtime({ follow_redirects = true })
      local label, res = get(rt, "/loop")
      assert.are.equal("error", label)
      assert.are.equal("redirect", res.reason)
      assert.are.equal(302, res.status)
      assert.are.equal(6, mock:count("GET /loop ") - before)
    end)

    it("a redirect to another port is refused and not followed: error / redirect", function()
      local other = helper.mock({ { path = "/stolen", body = "x" } })
      local m = helper.mock({ { path = "/away", status = 302, headers = { Location = other.url .. "/stolen" } } })
      local rt = runtime({ base_url = m.url, follow_redirects = true })
      local label, res = get(rt, "/away")
      assert.are.equal("error", label)
      assert.are.equal("redirect", res.reason)
      assert.are.equal(0, other:count("/stolen"))
    end)

    it("a redirect to another host or scheme is refused: error / redirect", function()
      local m = helper.mock({
        { path = "/host", status = 302, headers = { Location = "http://flowrun.invalid/x" } },
        { path = "/scheme", status = 302, headers = { Location = "https://127.0.0.1/x" } },
      })
      local rt = runtime({ base_url = m.url, follow_redirects = true })
      for _, path in ipairs { "/host", "/scheme" } do
        local label, res = get(rt, path)
        assert.are.equal("error", label)
        assert.are.equal("redirect", res.reason)
      end
    end)

    it("a redirect to https on the same host and port is refused: error / redirect", function()
      local port = helper.closed_port()
      local m = helper.mock({
        { path = "/tls", status = 302, headers = { Location = "https://127.0.0.1:" .. port .. "/echo" } },
      }, { port = port })
      local rt = runtime({ base_url = m.url, follow_redirects = true })
      local label, res = get(rt, "/tls")
      assert.are.equal("error", label)
      assert.are.equal("redirect", res.reason)
      assert.are.equal("redirect to another origin refused: https://127.0.0.1:" .. port .. "/echo", res.error)
      assert.are.equal(302, res.status)
    end)

    it("a 301 or 302 after a POST continues as a GET without the body", function()
      local rt = runtime({ follow_redirects = true })
      for _, path in ipairs { "/moved", "/same" } do
        local label, res = get(rt, path, { method = "POST", body = { a = 1 } })
        assert.are.equal("200", label, path)
        assert.are.equal("GET", res.json.method, path)
        assert.are.equal("", res.json.body, path)
      end
    end)

    it("a 302 after a PUT keeps the method and the body (only a POST becomes a GET)", function()
      local rt = runtime({ follow_redirects = true })
      local label, res = get(rt, "/same", { method = "PUT", body = { a = 1 } })
      assert.are.equal("200", label)
      assert.are.equal("PUT", res.json.method)
      assert.are.equal('{"a":1}', res.json.body)
    end)

    it("a 303 after a POST continues as a GET without the body", function()
      local rt = runtime({ follow_redirects = true })
      local label, res = get(rt, "/see-other", { method = "POST", body = { a = 1 } })
      assert.are.equal("200", label)
      assert.are.equal("GET", res.json.method)
      assert.are.equal("", res.json.body)
    end)

    it("without follow_redirects the 3xx is the answer", function()
      local rt = runtime({})
      local label, res = get(rt, "/same", { results = { "200", "3xx" } })
      assert.are.equal("3xx", label)
      assert.are.equal(302, res.status)
    end)
  end)

  describe("TLS", function()
    local tls

    -- The TLS server, started by the first spec that needs it; nil without
    -- openssl (each spec then skips itself: pending() in before_each would
    -- count as a failure).
    local function tls_server()
      if helper.have_openssl() then tls = tls or helper.tls_server() end
      return tls
    end

    it("an untrusted certificate: error / tls", function()
      if not tls_server() then pending("needs the openssl command") return end
      local rt = runtime({ base_url = tls.url })
      local label, res = get(rt, "/")
      assert.are.equal("error", label)
      assert.are.equal("tls", res.reason)
    end)

    it("ca_file makes the certificate trusted", function()
      if not tls_server() then pending("needs the openssl command") return end
      local rt = runtime({ base_url = tls.url, ca_file = tls.ca_file })
      assert.are.equal("200", (get(rt, "/")))
    end)

    it("tls_verify = false accepts it", function()
      if not tls_server() then pending("needs the openssl command") return end
      local rt = runtime({ base_url = tls.url, tls_verify = false })
      assert.are.equal("200", (get(rt, "/")))
    end)
  end)

  describe("the pool (max_connections)", function()
    -- Runs flows (id -> source) on one runtime; returns what they said, in order.
    local function run(ig, flows)
      local rt = runtime(ig)
      local ids = {}
      for id in pairs(flows) do ids[#ids + 1] = id end
      table.sort(ids)
      for _, id in ipairs(ids) do helper.start(rt, id, flows[id]) end
      assert.is_true(rt:run(15000))
      local said = {}
      for _, e in ipairs(rt:events()) do
        if e.type == "say" then said[#said + 1] = e.session .. ": " .. e.text end
        if e.type == "end" then assert.is_true(e.ok, e.error) end
      end
      return said
    end

    local holder = [[
      local label = api_node{ integration = "shop", path = "/hold", results = { "200" } }
      say(label)
    ]]

    it("full with queue_timeout_ms = 0: max-connection / pool_full at once", function()
      local said = run({ max_connections = 1, queue_timeout_ms = 0 }, {
        a = holder,
        b = [[
          sleep(50)
          local label, res = api_node{ integration = "shop", path = "/echo?b", results = { "200" } }
          say(label .. " " .. res.reason .. " " .. res.attempts)
        ]],
      })
      assert.are.same({ "b: max-connection pool_full 0", "a: 200" }, said)
      assert.are.equal(0, mock:count("/echo?b"))
    end)

    it("full with queueing: the call waits for a slot and succeeds", function()
      local said = run({ max_connections = 1, queue_timeout_ms = 3000 }, {
        a = holder,
        b = [[
          sleep(50)
          local label, res = api_node{ integration = "shop", path = "/echo", results = { "200" } }
          say(label .. " " .. res.attempts)
        ]],
      })
      assert.are.same({ "a: 200", "b: 200 1" }, said)
    end)

    it("full with queueing: no slot within queue_timeout_ms is max-connection / pool_full, before the holder ends", function()
      -- the holder's answer takes 600 ms; b gives up 250 ms after it asked
      -- (a queue timer four times longer would see the slot free at 600 ms)
      local said = run({ max_connections = 1, queue_timeout_ms = 250 }, {
        a = holder,
        b = [[
          sleep(50)
          local label, res = api_node{ integration = "shop", path = "/echo?gave-up", results = { "200" } }
          say(label .. " " .. res.reason .. " " .. res.attempts .. " " .. (res.elapsed_ms >= 250 and "waited" or res.elapsed_ms))
        ]],
      })
      assert.are.same({ "b: max-connection pool_full 0 waited", "a: 200" }, said)
      assert.are.equal(0, mock:count("/echo?gave-up"))
    end)

    it("a call that gave up waiting is never sent", function()
      local rt = runtime({ max_connections = 1, queue_timeout_ms = 100 })
      helper.start(rt, "a", holder)
      helper.start(rt, "b", [[
        sleep(50)
        local label = api_node{ integration = "shop", path = "/echo?never-sent", results = { "200" } }
        say(label)
        sleep(1000)
      ]])
      assert.is_true(rt:run(5000))
      assert.are.same({ "max-connection", "200" }, helper.says(rt:events()))
      assert.are.equal(0, mock:count("/echo?never-sent"))
    end)

    it("queued calls get the slot in the order they asked (FIFO)", function()
      local flows = { a = [[
        local label = api_node{ integration = "shop", path = "/slow", results = { "200" } }
        say(label)
      ]] }
      for i, id in ipairs { "b", "c", "d", "e" } do
        flows[id] = ([[
          sleep(%d)
          local label = api_node{ integration = "shop", path = "/echo?%s", results = { "200" } }
          say(label)
        ]]):format(20 * i, id)
      end
      local said = run({ max_connections = 1, queue_timeout_ms = 5000 }, flows)
      assert.are.same({ "a: 200", "b: 200", "c: 200", "d: 200", "e: 200" }, said)
    end)

    it("a call keeps its slot between its attempts: another call meanwhile is max-connection", function()
      local flaky = helper.mock({
        { path = "/flaky", status = 503, times = 1, body = "down" },
        { path = "/flaky", body = "healed" },
        { path = "/echo", echo = true },
      })
      local said = run({ base_url = flaky.url, max_connections = 1, queue_timeout_ms = 0,
                         retry = { attempts = 2, on = { "503" }, backoff_ms = 2000, max_backoff_ms = 2000 } }, {
        a = [[
          local label, res = api_node{ integration = "shop", path = "/flaky", results = { "200" } }
          say(label .. " " .. res.attempts)
        ]],
        b = [[
          sleep(300)
          local label, res = api_node{ integration = "shop", path = "/echo?between", results = { "200" } }
          say(label .. " " .. res.reason)
        ]],
      })
      assert.are.same({ "b: max-connection pool_full", "a: 200 2" }, said)
      assert.are.equal(0, flaky:count("/echo?between"))
      assert.are.equal(2, flaky:count("GET /flaky"))
    end)

    it("is per integration", function()
      local rt = helper.runtime({
        one = { base_url = mock.url, max_connections = 1 },
        two = { base_url = mock.url, max_connections = 1 },
      })
      helper.start(rt, "a", [[ say((api_node{ integration = "one", path = "/slow", results = { "200" } })) ]])
      helper.start(rt, "b", [[ say((api_node{ integration = "two", path = "/slow", results = { "200" } })) ]])
      assert.is_true(rt:run(5000))
      assert.are.same({ "200", "200" }, helper.says(rt:events()))
    end)
  end)

  describe("retry", function()
    it("heals a flaky 503", function()
      -- the first two requests get 503, the third one 200
      local flaky = helper.mock({
        { path = "/flaky", status = 503, times = 2, body = "down" },
        { path = "/flaky", body = "healed" },
      })
      local rt = runtime({ base_url = flaky.url,
                           retry = { attempts = 3, on = { "503" }, backoff_ms = 10, max_backoff_ms = 5000 } })
      local label, res = get(rt, "/flaky")
      assert.are.equal("200", label)
      assert.are.equal("healed", res.body)
      assert.are.equal(3, res.attempts)
      assert.are.equal(3, flaky:count("GET /flaky"))
    end)

    it("each attempt gets the full timeout_ms: a slow 503 then a slow 200 is 200", function()
      -- each answer takes 1 200 ms of a 2 000 ms timeout_ms: the second
      -- attempt would time out on the first attempt's clock
      local slow = helper.mock({
        { path = "/slow503", status = 503, times = 1, delay_ms = 1200, body = "down" },
        { path = "/slow503", delay_ms = 1200, body = "late" },
      })
      local rt = runtime({ base_url = slow.url, timeout_ms = 2000,
                           retry = { attempts = 2, on = { "503" }, backoff_ms = 10, max_backoff_ms = 10 } })
      local label, res = get(rt, "/slow503")
      assert.are.equal("200", label, res.error)
      assert.are.equal("late", res.body)
      assert.are.equal(2, res.attempts)
      assert.is_true(res.elapsed_ms >= 2400, "elapsed_ms " .. res.elapsed_ms)
    end)

    it("gives up after attempts and answers with the last response", function()
      local flaky = helper.mock({ { path = "/flaky", status = 503, times = 5, body = "down" } })
      local rt = runtime({ base_url = flaky.url,
                           retry = { attempts = 2, on = { "503" }, backoff_ms = 10, max_backoff_ms = 5000 } })
      local label, res = get(rt, "/flaky")
      assert.are.equal("other", label)
      assert.are.equal(503, res.status)
      assert.are.equal(2, res.attempts)
    end)
  end)

  describe("secrets", function()
    -- Runs a flow that shows a secret (from env) every way it can; returns
    -- the command's result, the --trace-json text and the mock's URL.
    local function leak_attempts(secret)
      local other = helper.mock({ { path = "/x", body = "x" } })
      local m = helper.mock({
        { path = "/echo", echo = true },
        { path = "/away", status = 302, headers = { Location = other.url .. "/x?token=" .. secret } },
      })
      local dir = helper.tmpdir()
      helper.integrations(helper.lua_source({
        shop = {
          base_url = m.url, follow_redirects = true,
          auth = { bearer = helper.code('env("SPEC_SECRET")') },
          query = { token = helper.code('env("SPEC_SECRET")') },
        },
        down = { base_url = "http://127.0.0.1:" .. helper.closed_port(), query = { token = helper.code('env("SPEC_SECRET")') } },
      }), dir)
      local flow = helper.flow([[
        local label, res = api_node{ integration = "shop", path = "/echo", results = { "200" } }
        say("url " .. res.url)
        -- what say() prints is redacted anyway: these look at res itself
        say("sent " .. tostring(res.json.args.token == os.getenv("SPEC_SECRET"))
            .. " url-hidden " .. tostring(res.url:match("token=(.*)$") == "***"))
        label, res = api_node{ integration = "shop", path = "/away", results = { "200" } }
        say("redirect " .. label .. " " .. res.reason .. " " .. res.error
            .. " error-hidden " .. tostring(res.error:match("token=(.*)$") == "***"))
        label, res = api_node{ integration = "down", path = "/", results = { "200" } }
        say("down " .. label .. " " .. res.url .. " " .. res.error)
        log.info("the token is", os.getenv("SPEC_SECRET"))
        error("giving up with " .. os.getenv("SPEC_SECRET"))
      ]], dir)
      local tj = dir .. "/trace.jsonl"
      local r = helper.cli{ args = { "--trace", "--trace-json", tj, "--allow", "os", flow }, env = { SPEC_SECRET = secret } }
      return r, helper.read(tj) or "", m.url
    end

    local function assert_hidden(secret, r, trace)
      local encoded = secret:gsub("[^%w]", function(c) return ("%%%02X"):format(c:byte()) end)
      for what, text in pairs { stdout = r.stdout, stderr = r.stderr, ["trace-json"] = trace } do
        for _, form in ipairs { secret, encoded, encoded:lower() } do
          assert.is_nil(text:find(form, 1, true), what .. " shows the secret as " .. form .. ":\n" .. text)
        end
      end
    end

    it("never appear in --trace, --trace-json, res.url, res.error, logs or uncaught errors", function()
      local r, trace, url = leak_attempts("hunter2xyz")
      assert.are.equal(1, r.code)
      local out = helper.lines(r.stdout)
      assert.are.equal("url " .. url .. "/echo?token=***", out[1])
      assert.are.equal("sent true url-hidden true", out[2])
      assert.matches("^redirect error redirect .*%*%*%* error%-hidden true$", out[3])
      assert.matches("^down error http://127%.0%.0%.1:%d+/%?token=%*%*%*", out[4])
      assert.are.equal(4, #out)
      assert.are.equal(3, #helper.lines(trace))
      assert.matches("url=" .. url .. "/echo?token=*** ", r.stderr, 1, true)
      assert.matches("info: the token is ***", r.stderr, 1, true)
      assert.matches("giving up with ***", r.stderr, 1, true)
      assert.matches("stack traceback:", r.stderr, 1, true)
      assert_hidden("hunter2xyz", r, trace)
    end)

    it("are hidden in their percent-encoded form too", function()
      local secret = "s3cr3t/t0k+n"
      local r, trace, url = leak_attempts(secret)
      assert.are.equal(1, r.code)
      local out = helper.lines(r.stdout)
      assert.are.equal("url " .. url .. "/echo?token=***", out[1])
      assert.are.equal("sent true url-hidden true", out[2])
      assert.matches(" error%-hidden true$", out[3])
      assert_hidden(secret, r, trace)
    end)

    it("are hidden in an uncaught api_node error", function()
      local dir = helper.tmpdir()
      helper.integrations(helper.lua_source({ shop = { base_url = mock.url } }), dir)
      local flow = helper.flow([[
        api_node{ integration = "shop", path = "/echo", results = { "200", os.getenv("SPEC_SECRET") } }
      ]], dir)
      helper.integrations([[
        local s = env("SPEC_SECRET")
        return { shop = { base_url = "]] .. mock.url .. [[" } }
      ]], dir)
      local r = helper.cli{ args = { "--allow", "os", flow }, env = { SPEC_SECRET = "hunter2x" } }
      assert.are.equal(1, r.code)
      assert.matches('api_node: results: unknown result "***"', r.stderr, 1, true)
      assert.is_nil(r.stderr:find("hunter2x", 1, true))
    end)
  end)
end)
