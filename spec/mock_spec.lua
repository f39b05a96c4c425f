-- README: The mock server (`flowrun mock`).
local helper = require "spec.helper"

describe("The mock server", function()
  local mock, rt

  setup(function()
    mock = helper.mock({
      { method = "GET", path = "/v1/product/{id}", status = 200, json = { id = "{id}", name = "Widget" } },
      { method = "POST", path = "/v1/product/{id}", status = 201, json = { created = "{id}" } },
      { path = "/v1/any", body = "any method" },
      { path = "/v1/first", body = "first" },
      { path = "/v1/first", body = "second" },
      { path = "/v1/{a}/and/{b}", body = "{b} and {a}", headers = { ["X-A"] = "{a}" } },
      { path = "/v1/status", status = 418, headers = { ["X-Custom"] = "yes" }, body = "teapot" },
      { path = "/v1/typed", headers = { ["Content-Type"] = "application/xml" }, body = "<a/>" },
      { path = "/v1/slow", delay_ms = 1000, body = "slow" },
      { path = "/v1/half", delay_ms = 500, body = "half" },
      { path = "/v1/hang", fault = "no_response" },
      { path = "/v1/cut", fault = "reset", body = helper.code('string.rep("x", 100000)') },
      { path = "/v1/echo", echo = true },
      { path = "/v1/twice", status = 503, times = 2, body = "not yet" },
      { path = "/v1/twice", body = "now" },
      { path = "/v1/chunked", chunked = true, body = "in pieces" },
      { path = "/v1/tags", headers = { ["X-Tag"] = { "a", "b" } }, body = "tagged" },
    })
    rt = helper.runtime({
      mock = { base_url = mock.url, timeout_ms = 5000, max_connections = 400 },
    })
  end)

  teardown(helper.cleanup)

  local function call(spec)
    spec.integration = "mock"
    spec.results = spec.results or { "2xx", "4xx", "5xx" }
    return rt:api_node(spec)
  end

  it("--port 0 picks a free port and says so once ready", function()
    assert.is_true(mock.port > 0)
    assert.matches("^listening on http://127%.0%.0%.1:%d+\n$", helper.read(mock.out))
  end)

  it("--port N listens on N", function()
    local port = helper.closed_port()
    local m = helper.mock({ { path = "/", body = "here" } }, { port = port })
    assert.are.equal(port, m.port)
    local r = helper.runtime({ n = { base_url = "http://127.0.0.1:" .. port } })
    local label, res = r:api_node{ integration = "n", path = "/", results = { "200" } }
    assert.are.equal("200", label, res.error)
    assert.are.equal("here", res.body)
  end)

  it("matches method and path; method absent matches any", function()
    local label, res = call { path = "/v1/product/7" }
    assert.are.equal("2xx", label)
    assert.are.same({ id = "7", name = "Widget" }, res.json)
    label, res = call { method = "POST", path = "/v1/product/7", body = {} }
    assert.are.equal(201, res.status)
    assert.are.same({ created = "7" }, res.json)
    for _, method in ipairs { "GET", "PUT", "DELETE" } do
      local _, r = call { method = method, path = "/v1/any" }
      assert.are.equal("any method", r.body)
    end
  end)

  it("status defaults to 200", function()
    local _, res = call { path = "/v1/any" }
    assert.are.equal(200, res.status)
  end)

  it("first match wins", function()
    local _, res = call { path = "/v1/first" }
    assert.are.equal("first", res.body)
  end)

  it("{name} captures fill {name} in json, body and header values", function()
    local _, res = call { path = "/v1/product/{id}", params = { id = "a b\"c" } }
    assert.are.equal('a b"c', res.json.id)
    _, res = call { path = "/v1/x/and/y" }
    assert.are.equal("y and x", res.body)
    assert.are.equal("x", res.headers["x-a"])
  end)

  it("a capture matches one whole segment", function()
    local label, res = call { path = "/v1/product/7/extra" }
    assert.are.equal(404, res.status)
    label, res = call { path = "/v1/product/" }
    assert.are.equal(404, res.status)
  end)

  it("status, headers and body are sent as given", function()
    local _, res = call { path = "/v1/status" }
    assert.are.equal(418, res.status)
    assert.are.equal("yes", res.headers["x-custom"])
    assert.are.equal("teapot", res.body)
  end)

  it("json is sent as application/json, body as text/plain unless a Content-Type is given", function()
    local _, res = call { path = "/v1/product/1" }
    assert.matches("^application/json", res.headers["content-type"])
    _, res = call { path = "/v1/any" }
    assert.matches("^text/plain", res.headers["content-type"])
    _, res = call { path = "/v1/typed" }
    assert.are.equal("application/xml", res.headers["content-type"])
  end)

  it("no match is a JSON 404", function()
    local label, res = call { path = "/nowhere", results = { "200", "404" } }
    assert.are.equal("404", label)
    assert.matches("^application/json", res.headers["content-type"])
    assert.are.equal("table", type(res.json))
    label, res = call { method = "DELETE", path = "/v1/product/7", results = { "200", "404" } }
    assert.are.equal("404", label)
  end)

  it("echo answers the request itself as JSON", function()
    local _, res = call {
      method = "POST", path = "/v1/echo", query = { { "a", "1" }, { "b", "x y" } },
      headers = { ["X-Hello"] = "World" }, body = { k = "v" },
    }
    local req = res.json
    assert.are.equal("POST", req.method)
    assert.are.equal("/v1/echo", req.path)
    assert.are.equal("a=1&b=x%20y", req.query)
    assert.are.same({ a = "1", b = "x y" }, req.args)
    assert.are.equal("World", req.headers["x-hello"])
    for name in pairs(req.headers) do assert.are.equal(name:lower(), name) end
    assert.are.equal('{"k":"v"}', req.body)
  end)

  it("delay_ms answers after the delay", function()
    local _, res = call { path = "/v1/half" }
    assert.are.equal("half", res.body)
    assert.is_true(res.elapsed_ms >= 500, "elapsed_ms " .. res.elapsed_ms)
  end)

  it("a delay holds only its own connection", function()
    helper.start(rt, "slow", [[
      local label, res = api_node{ integration = "mock", path = "/v1/slow", results = { "200" } }
      say("slow " .. res.body)
    ]])
    helper.start(rt, "fast", [[
      sleep(50)
      for i = 1, 3 do
        local label, res = api_node{ integration = "mock", path = "/v1/any", results = { "200" } }
        say("fast " .. i)
      end
    ]])
    assert.is_true(rt:run(5000))
    local said = {}
    for _, e in ipairs(rt:events()) do if e.type == "say" then said[#said + 1] = e.text end end
    assert.are.same({ "fast 1", "fast 2", "fast 3", "slow slow" }, said)
  end)

  it("serves hundreds of delayed connections at once", function()
    for i = 1, 300 do
      helper.start(rt, "c" .. i, [[
        local label = api_node{ integration = "mock", path = "/v1/slow", results = { "200" } }
        say(label)
      ]])
    end
    assert.is_true(rt:run(10000))
    local n = 0
    for _, e in ipairs(rt:events()) do
      if e.type == "say" then
        assert.are.equal("200", e.text)
        n = n + 1
      end
    end
    assert.are.equal(300, n)
  end)

  it("serves 10 000 concurrent delayed requests: every one answered, none refused or timed out", function()
    -- the README's number; each session holds its own connection (max_connections 10000)
    local m = helper.mock({ { path = "/slow", delay_ms = 2000, body = "slow" } })
    local r = helper.runtime({ m = { base_url = m.url, max_connections = 10000, queue_timeout_ms = 0,
                                     timeout_ms = 60000, connect_timeout_ms = 60000 } })
    local flow = helper.flow([[
      local label, res = api_node{ integration = "m", path = "/slow", results = { "200" } }
      say(label == "200" and res.body or label .. " " .. tostring(res.reason))
    ]])
    for i = 1, 10000 do r:start("s" .. i, flow) end
    assert.is_true(r:run(120000))
    local got = {}
    for _, text in ipairs(helper.says(r:events())) do got[text] = (got[text] or 0) + 1 end
    assert.are.same({ slow = 10000 }, got)
    assert.are.equal(10000, m:count("GET /slow -> 200"))
  end)

  it("a hang holds only its own connection", function()
    helper.start(rt, "hang", [[
      local label = api_node{ integration = "mock", path = "/v1/hang", timeout_ms = 800, results = { "200" } }
      say("hang " .. label)
    ]])
    helper.start(rt, "fast", [[
      sleep(50)
      local label = api_node{ integration = "mock", path = "/v1/any", results = { "200" } }
      say("fast " .. label)
    ]])
    assert.is_true(rt:run(5000))
    local said = {}
    for _, e in ipairs(rt:events()) do if e.type == "say" then said[#said + 1] = e.text end end
    assert.are.same({ "fast 200", "hang timeout" }, said)
  end)

  it("fault = \"reset\" closes the connection mid-body", function()
    local label, res = call { path = "/v1/cut" }
    assert.are.equal("error", label)
    assert.are.equal("reset", res.reason)
  end)

  it("times = N: a route answers N requests, then the next match does", function()
    local got = {}
    for i = 1, 3 do
      local _, res = call { path = "/v1/twice" }
      got[i] = res.status .. " " .. res.body
    end
    assert.are.same({ "503 not yet", "503 not yet", "200 now" }, got)
  end)

  it("chunked = true sends the body without a Content-Length", function()
    local _, res = call { path = "/v1/chunked" }
    assert.are.equal("in pieces", res.body)
    assert.are.equal("chunked", res.headers["transfer-encoding"])
    assert.is_nil(res.headers["content-length"])
  end)

  it("a header given as an array is sent once per value", function()
    local _, res = call { path = "/v1/tags" }
    assert.are.equal("a, b", res.headers["x-tag"])
  end)

  it("echo tells the client's port, the same on a kept-alive connection", function()
    local _, a = call { path = "/v1/echo" }
    local _, b = call { path = "/v1/echo" }
    assert.is_number(a.json.peer_port)
    assert.are.equal(a.json.peer_port, b.json.peer_port)
  end)

  it("logs each request on stderr", function()
    call { path = "/v1/product/logged" }
    call { method = "DELETE", path = "/v1/nothing-here" }
    local log = mock:log()
    assert.matches("GET /v1/product/logged", log, 1, true)
    assert.matches("DELETE /v1/nothing-here", log, 1, true)
  end)

  it("stops on SIGTERM", function()
    local m = helper.mock({ { path = "/", body = "x" } })
    m:stop()
    local r = helper.runtime({ gone = { base_url = m.url } })
    local label, res = r:api_node{ integration = "gone", path = "/", results = { "200" } }
    assert.are.equal("error", label)
    assert.are.equal("refused", res.reason)
  end)

  describe("a bad routes file", function()
    local function refused(routes)
      local file = helper.write(helper.tmpdir() .. "/routes.lua", helper.lua_source(routes))
      local r = helper.cli{ args = { "mock", file, "--port", "0" }, timeout = 10 }
      assert.are.equal(2, r.code)
      assert.are.equal("", r.stdout)
      assert.matches(file, r.stderr, 1, true)
      return r.stderr
    end

    it("an unknown key", function()
      assert.matches("route 1: unknown key 'stauts'", refused({ { path = "/", stauts = 200 } }), 1, true)
    end)

    it("a route without a path", function()
      assert.matches("route 2: 'path' is required", refused({ { path = "/" }, { body = "x" } }), 1, true)
    end)

    it("an unknown fault", function()
      assert.matches("route 1: 'fault' must be", refused({ { path = "/", fault = "explode" } }), 1, true)
    end)

    it("a syntax error", function()
      refused("return {")
    end)

    it("a file that never ends its loop is stopped after 5 s, naming file and line, even under pcall", function()
      local file = helper.write(helper.tmpdir() .. "/routes.lua",
        "local n = 0\nwhile true do pcall(function() for i = 1, 1e8 do n = n + i end end) end\n")
      local r = helper.cli{ args = { "mock", file, "--port", "0" }, timeout = 30 }
      assert.are.equal(2, r.code)
      assert.are.equal("", r.stdout)
      assert.are.equal(file .. ":2: still running after 5 s: a loop that never ends?\n", r.stderr)
    end)
  end)

  it("without a routes file, prints usage and exits 2", function()
    local r = helper.cli{ args = { "mock" }, timeout = 10 }
    assert.are.equal(2, r.code)
    assert.matches("usage", r.stderr)
  end)

  it("on a port in use, says so and exits 2", function()
    local first = helper.mock({ { path = "/x", body = "x" } })
    local port = first.url:match(":(%d+)$")
    local d = helper.tmpdir()
    helper.write(d .. "/routes.lua", 'return { { path = "/x", body = "x" } }')
    local r = helper.cli{ args = { "mock", d .. "/routes.lua", "--port", port }, timeout = 10 }
    assert.are.equal(2, r.code)
    assert.matches("cannot listen on 127.0.0.1:" .. port .. ": Address already in use", r.stderr, 1, true)
  end)
end)
