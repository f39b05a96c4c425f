-- README: An integrations file.
local helper = require "spec.helper"

describe("An integrations file", function()
  local mock

  setup(function()
    mock = helper.mock({
      { path = "/v1/echo", echo = true },
      { path = "/v1/echo/{rest}", echo = true },
      { path = "/v1/slow", delay_ms = 400, body = "slow" },
      { path = "/v1/slower", delay_ms = 1600, body = "slower" },
      { path = "/v1/redirect", status = 302, headers = { Location = "/v1/echo" }, body = "moved" },
      { path = "/v1/unavailable", status = 503, body = "down" },
      { method = "POST", path = "/v1/orders", status = 201, json = { ok = true } },
      { path = "/v1/product/{productId}", json = { id = "{productId}" } },
      { path = "/v1/big", body = helper.code('string.rep("x", 10485760 + 1)') },
      { path = "/v1/exact", body = helper.code('string.rep("x", 10485760)') },
    })
  end)

  teardown(helper.cleanup)

  local function shop(extra)
    local t = { base_url = mock.url .. "/v1" }
    for k, v in pairs(extra or {}) do t[k] = v end
    return { shop = t }
  end

  -- The request as the echo route saw it.
  local function echoed(rt, spec)
    spec.integration = spec.integration or "shop"
    spec.path = spec.path or "/echo"
    spec.results = spec.results or { "200" }
    local label, res = rt:api_node(spec)
    assert.are.equal("200", label, res.error)
    return res.json
  end

  -- The message flowrun.new raises for an integrations file with this source.
  local function load_error(source)
    local file = helper.integrations(source)
    local ok, err = pcall(helper.module().new, { integrations = file })
    assert.is_false(ok, "the file loaded")
    return err, file
  end

  describe("keys", function()
    it("accepts every key of the contract", function()
      local rt = helper.runtime(shop {
        headers = { Accept = "application/json" },
        auth = { bearer = "tok" },
        query = { api_version = "2" },
        endpoints = {
          get_product = { method = "GET", path = "/product/{productId}" },
          create_order = { method = "POST", path = "/orders" },
        },
        timeout_ms = 10000, connect_timeout_ms = 3000, max_connections = 16,
        queue_timeout_ms = 1000, max_response_bytes = 10485760, follow_redirects = false,
        tls_verify = true, ca_file = helper.code("nil"),
        retry = { attempts = 1, on = { "503", "timeout" }, backoff_ms = 200, max_backoff_ms = 5000 },
      })
      local label, res = rt:api_node{ endpoint = "shop.get_product", params = { productId = "7" }, results = { "200" } }
      assert.are.equal("200", label)
      assert.are.equal("7", res.json.id)
    end)

    it("sends headers on every call", function()
      local rt = helper.runtime(shop { headers = { Accept = "application/json", ["X-Api-Key"] = "k1" } })
      for _ = 1, 2 do
        local req = echoed(rt, {})
        assert.are.equal("application/json", req.headers.accept)
        assert.are.equal("k1", req.headers["x-api-key"])
      end
    end)

    it("adds query to every call, before the node's own query", function()
      local rt = helper.runtime(shop { query = { api_version = "2" } })
      local req = echoed(rt, {})
      assert.are.equal("api_version=2", req.query)
      req = echoed(rt, { query = { page = 3 } })
      assert.are.equal("api_version=2&page=3", req.query)
    end)

    it("keeps the path of base_url in front of the node's path", function()
      local rt = helper.runtime(shop {})
      assert.are.equal("/v1/echo/x", echoed(rt, { path = "/echo/x" }).path)
    end)

    it("joins base_url and path with one slash", function()
      local rt = helper.runtime({ shop = { base_url = mock.url .. "/v1/" } })
      assert.are.equal("/v1/echo/x", echoed(rt, { path = "/echo/x" }).path)
    end)

    it("sends auth.bearer as an Authorization: Bearer header", function()
      local rt = helper.runtime(shop { auth = { bearer = "t0ken-123" } })
      assert.are.equal("Bearer t0ken-123", echoed(rt, {}).headers.authorization)
    end)

    it("sends auth.basic as an Authorization: Basic header (base64 of user:password)", function()
      local cases = {
        { { "alice", "s3cret" }, "YWxpY2U6czNjcmV0" },
        { { "ab", "c" }, "YWI6Yw==" },
        { { "a", "b" }, "YTpi" },
        { { "bob", "p@ss:w0rd" }, "Ym9iOnBAc3M6dzByZA==" },
      }
      for _, c in ipairs(cases) do
        local rt = helper.runtime(shop { auth = { basic = c[1] } })
        assert.are.equal("Basic " .. c[2], echoed(rt, {}).headers.authorization)
      end
    end)

    it("calls an endpoint with its method and path", function()
      local rt = helper.runtime(shop { endpoints = {
        get_product = { method = "GET", path = "/product/{productId}" },
        create_order = { method = "POST", path = "/orders" },
      } })
      local label, res = rt:api_node{ endpoint = "shop.get_product", params = { productId = "42" }, results = { "200" } }
      assert.are.equal("200", label)
      assert.are.equal("42", res.json.id)
      label, res = rt:api_node{ endpoint = "shop.create_order", body = { item = 1 }, results = { "200", "201" } }
      assert.are.equal("201", label)
      assert.are.equal(true, res.json.ok)
    end)

    it("defaults an endpoint's method to GET", function()
      local rt = helper.runtime(shop { endpoints = { look = { path = "/echo" } } })
      local label, res = rt:api_node{ endpoint = "shop.look", results = { "200" } }
      assert.are.equal("200", label)
      assert.are.equal("GET", res.json.method)
    end)

    it("runs the file in a sandbox whose only extra global is env", function()
      local rt = helper.runtime([[
        assert(io == nil and os == nil and require == nil and load == nil and dofile == nil,
               "a dangerous global is reachable")
        assert(type(env) == "function")
        return { shop = { base_url = "]] .. mock.url .. [[/v1" } }
      ]])
      assert.are.equal("200", (rt:api_node{ integration = "shop", path = "/echo", results = { "200" } }))
    end)

    it("replaces the loaded set when another file is loaded", function()
      local rt = helper.runtime(shop {})
      rt:load_integrations(helper.integrations({ other = { base_url = mock.url .. "/v1" } }))
      assert.are.equal("200", (rt:api_node{ integration = "other", path = "/echo", results = { "200" } }))
      local ok, err = pcall(rt.api_node, rt, { integration = "shop", path = "/echo", results = { "200" } })
      assert.is_false(ok)
      assert.matches("api_node: unknown integration 'shop'", err, 1, true)
    end)

    it("keeps the loaded set when a broken file is loaded", function()
      local rt = helper.runtime(shop {})
      local broken = helper.integrations({ shop = { base_url = mock.url, timeout_ms = "x" } })
      assert.has_error(function() rt:load_integrations(broken) end,
        broken .. ": shop.timeout_ms: expected an integer >= 1, got string")
      assert.are.equal("200", (rt:api_node{ integration = "shop", path = "/echo", results = { "200" } }))
    end)
  end)

  describe("defaults", function()
    it("max_connections is 16 and queue_timeout_ms is 1000", function()
      local rt = helper.runtime(shop {})
      for i = 1, 17 do                  -- the 17th queues 1 s, then gives up: the others take 1.6 s
        helper.start(rt, tostring(i), [[
          local label, res = api_node{ integration = "shop", path = "/slower", results = { "200" } }
          say(label .. " " .. tostring(res.reason) .. " " .. (label == "200" and "" or
              tostring(res.elapsed_ms >= 1000)))
        ]])
      end
      assert.is_true(rt:run(30000))
      local said = helper.says(rt:events())
      local labels = {}
      for _, text in ipairs(said) do labels[text] = (labels[text] or 0) + 1 end
      assert.are.same({ ["200 nil "] = 16, ["max-connection pool_full true"] = 1 }, labels)
      assert.are.equal("max-connection pool_full true", said[1])   -- it gave up before the 1.6 s calls ended
    end)

    it("follow_redirects is false: a redirect is the response", function()
      local rt = helper.runtime(shop {})
      local label, res = rt:api_node{ integration = "shop", path = "/redirect", results = { "200", "302" } }
      assert.are.equal("302", label)
      assert.are.equal(302, res.status)
      assert.are.equal("/v1/echo", res.headers.location)
    end)

    it("retry.attempts is 1: no retry", function()
      local rt = helper.runtime(shop {})
      local label, res = rt:api_node{ integration = "shop", path = "/unavailable", results = { "200", "503" } }
      assert.are.equal("503", label)
      assert.are.equal(1, res.attempts)
    end)

    it("retry.on is { \"503\", \"timeout\" } once attempts > 1", function()
      local rt = helper.runtime(shop { retry = { attempts = 2, backoff_ms = 10 } })
      local label, res = rt:api_node{ integration = "shop", path = "/unavailable", results = { "200", "503" } }
      assert.are.equal("503", label)
      assert.are.equal(2, res.attempts)
      label, res = rt:api_node{ integration = "shop", path = "/slow", timeout_ms = 100, results = { "200" } }
      assert.are.equal("timeout", label)
      assert.are.equal(2, res.attempts)
    end)

    it("max_response_bytes is 10485760", function()
      local rt = helper.runtime(shop {})
      local label, res = rt:api_node{ integration = "shop", path = "/exact", results = { "200" } }
      assert.are.equal("200", label)
      assert.are.equal(10485760, #res.body)
      label, res = rt:api_node{ integration = "shop", path = "/big", results = { "200" } }
      assert.are.equal("error", label)
      assert.are.equal("too_large", res.reason)
    end)

    it("connect_timeout_ms is 3000", function()
      local stall = helper.faultsrv("stall")
      local rt = helper.runtime({ shop = { base_url = stall.url } })
      local t0 = helper.now()
      local label, res = rt:api_node{ integration = "shop", path = "/", results = { "200" } }
      assert.are.equal("timeout", label)
      assert.are.equal("connect_timeout", res.reason)
      assert.is_true(helper.now() - t0 >= 2900, "gave up after " .. (helper.now() - t0) .. " ms")
      -- and no later: the value the integration loaded, the one libcurl is given
      local dir = helper.tmpdir()
      helper.integrations({ shop = { base_url = stall.url } }, dir)
      local flow = helper.flow([[
        say(require("flowrun.runtime").integrations().shop.connect_timeout_ms)
      ]], dir)
      local r = helper.cli{ args = { "--allow", "package", flow } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("3000\n", r.stdout)
    end)

    it("timeout_ms is 10000, retry.backoff_ms 200 and retry.max_backoff_ms 5000", function()
      local dir = helper.tmpdir()
      helper.integrations(shop {}, dir)
      local flow = helper.flow([[
        local shop = require("flowrun.runtime").integrations().shop
        say(shop.timeout_ms .. " " .. shop.retry.backoff_ms .. " " .. shop.retry.max_backoff_ms)
      ]], dir)
      local r = helper.cli{ args = { "--allow", "package", flow } }   -- flowrun.runtime: a tool's module
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("10000 200 5000\n", r.stdout)
    end)

    it("retry.backoff_ms is 200: the second attempt waits 200 ms, and ends before a 2 s clock of the loop", function()
      local rt = helper.runtime(shop { retry = { attempts = 2 } })
      helper.start(rt, "clock", [[ sleep(2000) say("2 s") ]])
      local _, res = rt:api_node{ integration = "shop", path = "/unavailable?default-backoff", results = { "200" } }
      assert.are.equal(2, res.attempts)
      assert.is_true(res.elapsed_ms >= 190, "elapsed_ms " .. res.elapsed_ms)
      assert.are.same({}, helper.says(rt:events(), "clock"))
    end)

    it("retry.max_backoff_ms is 5000: a Retry-After of 6 s is not waited for", function()
      local m = helper.mock({ { path = "/later", status = 503, headers = { ["Retry-After"] = "6" } } })
      local rt = helper.runtime({ shop = { base_url = m.url, retry = { attempts = 2 } } })
      local _, res = rt:api_node{ integration = "shop", path = "/later", results = { "200" } }
      assert.are.equal(1, res.attempts)
    end)

    it("tls_verify is true: a self-signed certificate is refused", function()
      if not helper.have_openssl() then pending("needs the openssl command") return end
      local tls = helper.tls_server()
      local rt = helper.runtime({ shop = { base_url = tls.url } })
      local label, res = rt:api_node{ integration = "shop", path = "/", results = { "200" } }
      assert.are.equal("error", label)
      assert.are.equal("tls", res.reason)
    end)
  end)

  describe("env()", function()
    it("reads an environment variable", function()
      local dir = helper.tmpdir()
      helper.integrations(helper.lua_source({ shop = {
        base_url = mock.url .. "/v1", headers = { ["X-Key"] = helper.code('env("SPEC_KEY")') } } }), dir)
      local flow = helper.flow([[
        local label, res = api_node{ integration = "shop", path = "/echo", results = { "200" } }
        say(tostring(res.json.headers["x-key"] == os.getenv("SPEC_KEY")))
      ]], dir)
      local r = helper.cli{ args = { "--allow", "os", flow }, env = { SPEC_KEY = "k-from-env" } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("true\n", r.stdout)
    end)

    it("uses the default of an unset variable, and that default is no secret", function()
      local dir = helper.tmpdir()
      helper.integrations(helper.lua_source({ shop = {
        base_url = mock.url .. "/v1", query = { key = helper.code('env("SPEC_UNSET", "plain-default")') } } }), dir)
      local flow = helper.flow([[
        local label, res = api_node{ integration = "shop", path = "/echo", results = { "200" } }
        say(res.url)
      ]], dir)
      local r = helper.cli{ args = { "--trace", flow }, env = { SPEC_UNSET = false } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(mock.url .. "/v1/echo?key=plain-default\n", r.stdout)
      assert.matches("url=" .. mock.url .. "/v1/echo?key=plain-default", r.stderr, 1, true)
    end)

    it("hides a value from the environment as *** (it is a secret)", function()
      local dir = helper.tmpdir()
      helper.integrations(helper.lua_source({ shop = {
        base_url = mock.url .. "/v1", query = { key = helper.code('env("SPEC_KEY", "plain-default")') } } }), dir)
      local flow = helper.flow([[
        local label, res = api_node{ integration = "shop", path = "/echo", results = { "200" } }
        say(res.url)
        say(res.json.args.key)
        say(tostring(res.json.args.key == os.getenv("SPEC_KEY")))
      ]], dir)
      local r = helper.cli{ args = { "--trace", "--allow", "os", flow }, env = { SPEC_KEY = "hunter2x" } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ mock.url .. "/v1/echo?key=***", "***", "true" }, helper.lines(r.stdout))
      assert.not_matches("hunter2x", r.stderr, 1, true)
    end)

    it("hides Basic credentials built from a secret password", function()
      local dir = helper.tmpdir()
      helper.integrations(helper.lua_source({ shop = {
        base_url = mock.url .. "/v1", auth = { basic = { "alice", helper.code('env("SPEC_PW")') } } } }), dir)
      local flow = helper.flow([[
        local described = require("flowrun.runtime").integrations()
        say(described.shop.headers.Authorization)
        local label, res = api_node{ integration = "shop", path = "/echo", results = { "200" } }
        error("giving up with " .. res.json.headers.authorization)
      ]], dir)
      local r = helper.cli{ args = { "--allow", "package", flow }, env = { SPEC_PW = "sesame" } }
      assert.are.equal(1, r.code)
      assert.are.same({ "Basic ***" }, helper.lines(r.stdout))
      assert.matches("giving up with Basic ***", r.stderr, 1, true)
      assert.not_matches("YWxpY2U6c2VzYW1l", r.stdout .. r.stderr, 1, true)
    end)

    it("fails the load naming the file, line and variable when it is unset", function()
      local err, file = load_error('\nreturn { shop = { base_url = env("FLOWRUN_SPEC_SURELY_UNSET") } }\n')
      assert.are.equal(file .. ":2: environment variable FLOWRUN_SPEC_SURELY_UNSET is not set", err)
    end)

    it("hides a secret in the error message of a failed load", function()
      local file = helper.integrations([[
        local key = env("SPEC_KEY")
        error("cannot use key " .. key)
      ]])
      local r = helper.cli{ args = { "-I", file, helper.flow("say('x')") }, env = { SPEC_KEY = "hunter2x" } }
      assert.are.equal(2, r.code)
      assert.matches("cannot use key ***", r.stderr, 1, true)
      assert.not_matches("hunter2x", r.stderr, 1, true)
    end)
  end)

  describe("load errors name the file and the key", function()
    local function base() return mock.url .. "/v1" end

    local cases = {
      { "a missing base_url", function() return { shop = { headers = {} } } end,
        "shop.base_url: required" },
      { "an unknown key", function() return { shop = { base_url = base(), foo = 1 } } end,
        "shop: unknown key 'foo'" },
      { "a string timeout_ms, even one that looks like a number", function() return { shop = { base_url = base(), timeout_ms = "10" } } end,
        "shop.timeout_ms: expected an integer >= 1, got string" },
      { "a zero timeout_ms", function() return { shop = { base_url = base(), timeout_ms = 0 } } end,
        "shop.timeout_ms: expected an integer >= 1, got 0" },
      { "a fractional connect_timeout_ms", function() return { shop = { base_url = base(), connect_timeout_ms = 1.5 } } end,
        "shop.connect_timeout_ms: expected an integer >= 1, got 1.5" },
      { "a zero max_connections", function() return { shop = { base_url = base(), max_connections = 0 } } end,
        "shop.max_connections: expected an integer >= 1, got 0" },
      { "a negative queue_timeout_ms", function() return { shop = { base_url = base(), queue_timeout_ms = -1 } } end,
        "shop.queue_timeout_ms: expected an integer >= 0, got -1" },
      { "a string max_response_bytes", function() return { shop = { base_url = base(), max_response_bytes = "1k" } } end,
        "shop.max_response_bytes: expected an integer >= 1, got string" },
      { "a string follow_redirects", function() return { shop = { base_url = base(), follow_redirects = "yes" } } end,
        "shop.follow_redirects: expected true or false, got string" },
      { "a number tls_verify", function() return { shop = { base_url = base(), tls_verify = 0 } } end,
        "shop.tls_verify: expected true or false, got number" },
      { "a number ca_file", function() return { shop = { base_url = base(), ca_file = 1 } } end,
        "shop.ca_file: expected a string, got number" },
      { "a string headers", function() return { shop = { base_url = base(), headers = "Accept: */*" } } end,
        "shop.headers: expected a table, got string" },
      { "a header value with a line break", function() return { shop = { base_url = base(), headers = { ["X-A"] = "a\r\nX-B: b" } } } end,
        "shop.headers.X-A: CR, LF or NUL in a header value" },
      { "a number base_url", function() return { shop = { base_url = 8080 } } end,
        "shop.base_url: expected a string, got number" },
      { "an ftp base_url", function() return { shop = { base_url = "ftp://127.0.0.1/v1" } } end,
        "shop.base_url: only http:// and https:// URLs are allowed" },
      { "a base_url with a user and password (they would show in res.url and traces)", function()
          return { shop = { base_url = "http://alice:pw@127.0.0.1/v1" } } end,
        "shop.base_url: a user or password in the URL would show in res.url and traces: "
        .. "credentials belong in auth = { basic = { USER, PASSWORD } }" },
      { "a base_url with a user only, or an empty one", function()
          return { shop = { base_url = "https://@127.0.0.1:8443/" } } end,
        "shop.base_url: a user or password in the URL would show in res.url and traces" },
      { "a base_url with no host: three slashes", function() return { shop = { base_url = "http:///echo" } } end,
        "shop.base_url: no host: expected http://HOST[:PORT][/PATH]" },
      { "a base_url with no host: one slash", function() return { shop = { base_url = "http:/127.0.0.1/v1" } } end,
        "shop.base_url: no host: expected http://HOST[:PORT][/PATH]" },
      { "a base_url with no host: a port only", function() return { shop = { base_url = "http://:80/" } } end,
        "shop.base_url: malformed URL: No host part in the URL" },
      { "a base_url with no host: a query only", function() return { shop = { base_url = "http://?a=1" } } end,
        "shop.base_url: malformed URL: No host part in the URL" },
      { "a base_url with an unclosed IPv6 address", function() return { shop = { base_url = "http://[::1/v1" } } end,
        "shop.base_url: malformed URL: " },
      { "a basic auth user with ':' (RFC 7617: the first ':' ends the user)", function()
          return { shop = { base_url = base(), auth = { basic = { "ali:ce", "pw" } } } } end,
        "shop.auth.basic[1]: a user name cannot hold ':' (the server would split it there)" },
      { "a basic auth password with a control character", function()
          return { shop = { base_url = base(), auth = { basic = { "alice", "p\tw" } } } } end,
        "shop.auth.basic[2]: a control character in the password" },
      { "an unknown auth key", function() return { shop = { base_url = base(), auth = { token = "x" } } } end,
        "shop.auth: unknown key 'token'" },
      { "a basic auth without a password", function() return { shop = { base_url = base(), auth = { basic = { "alice" } } } } end,
        "shop.auth.basic[2]: expected a string, got nil" },
      { "auth and an Authorization header", function()
          return { shop = { base_url = base(), headers = { authorization = "x" }, auth = { bearer = "y" } } } end,
        "shop.auth: both auth and an Authorization header are set" },
      { "a string query", function() return { shop = { base_url = base(), query = "a=1" } } end,
        "shop.query: expected a table, got string" },
      { "a string endpoints", function() return { shop = { base_url = base(), endpoints = "x" } } end,
        "shop.endpoints: expected a table, got string" },
      { "an endpoint without a path", function() return { shop = { base_url = base(), endpoints = { e = { method = "GET" } } } } end,
        "shop.endpoints.e.path: expected a string, got nil" },
      { "an endpoint with an unknown method", function()
          return { shop = { base_url = base(), endpoints = { e = { method = "FETCH", path = "/" } } } } end,
        "shop.endpoints.e.method: expected GET, POST, PUT, PATCH, DELETE or HEAD" },
      { "an endpoint with an unknown key", function()
          return { shop = { base_url = base(), endpoints = { e = { path = "/", verb = "GET" } } } } end,
        "shop.endpoints.e: unknown key 'verb'" },
      { "an unknown retry key", function() return { shop = { base_url = base(), retry = { tries = 3 } } } end,
        "shop.retry: unknown key 'tries'" },
      { "a zero retry.attempts", function() return { shop = { base_url = base(), retry = { attempts = 0 } } } end,
        "shop.retry.attempts: expected an integer >= 1, got 0" },
      { "a string retry.backoff_ms", function() return { shop = { base_url = base(), retry = { backoff_ms = "1s" } } } end,
        "shop.retry.backoff_ms: expected an integer >= 0, got string" },
      { "an upper-case default label in retry.on", function()
          return { shop = { base_url = base(), retry = { on = { "Timeout" } } } } end,
        "shop.retry.on: result labels must be lower case: \"Timeout\"" },
      { "an unknown result in retry.on", function()
          return { shop = { base_url = base(), retry = { on = { "slow" } } } } end,
        "shop.retry.on: unknown result \"slow\"" },
      { "an integration that is not a table", function() return { shop = "http://127.0.0.1" } end,
        "shop: expected a table, got string" },
      { "a Content-Length header", function() return { shop = { base_url = base(), headers = { ["Content-Length"] = "3" } } } end,
        "shop.headers.Content-Length: flowrun sets it from the body" },
      { "a Transfer-Encoding header", function()
          return { shop = { base_url = base(), headers = { ["Transfer-Encoding"] = "chunked" } } } end,
        "shop.headers.Transfer-Encoding: flowrun sets it from the body" },
      { "a Host header", function() return { shop = { base_url = base(), headers = { host = "other.invalid" } } } end,
        "shop.headers.host: flowrun sets it from base_url" },
      { "a Connection header", function() return { shop = { base_url = base(), headers = { Connection = "close" } } } end,
        "shop.headers.Connection: flowrun manages the connections (keep-alive, pool)" },
      { "auth with both bearer and basic", function()
          return { shop = { base_url = base(), auth = { bearer = "t", basic = { "alice", "pw" } } } } end,
        "shop.auth: give bearer or basic, not both" },
      { "a retry.attempts beyond the largest integer it takes", function()
          return { shop = { base_url = base(), retry = { attempts = 1e10 } } } end,
        "shop.retry.attempts: expected an integer from 1 to 2147483647, got 10000000000.0" },
      { "a timeout_ms beyond the largest integer it takes", function()
          return { shop = { base_url = base(), timeout_ms = 2 ^ 31 } } end,
        "shop.timeout_ms: expected an integer from 1 to 2147483647, got 2147483648.0" },
      { "a query that mixes a list of pairs with map keys", function()
          return { shop = { base_url = base(), query = { { "a", "1" }, b = "2" } } } end,
        "shop.query: a list of pairs {{\"k\", v}, ...} cannot have other keys" },
      { "a NUL in an endpoint's path", function()
          return { shop = { base_url = base(), endpoints = { e = { path = "/a\0b" } } } } end,
        "shop.endpoints.e.path: NUL in the path" },
      { "an empty integration name", function() return { [""] = { base_url = base() } } end,
        "integration name \"\": use letters, digits, '_' and '-' (it is empty)" },
      { "a dot in an integration name (endpoint = \"integration.endpoint\")", function()
          return { ["shop.v2"] = { base_url = base() } } end,
        "integration name \"shop.v2\": use letters, digits, '_' and '-'" },
      { "a line break in an integration name", function() return { ["sh\nop"] = { base_url = base() } } end,
        "integration name \"sh\\10op\": use letters, digits, '_' and '-'" },
      { "a space in an integration name", function() return { ["my shop"] = { base_url = base() } } end,
        "integration name \"my shop\": use letters, digits, '_' and '-'" },
      { "error() with no message", function() return "error()" end,
        "raised an error with a nil value instead of a message" },
      { "error() with a table", function() return "error({})" end,
        "raised an error with a table value instead of a message" },
    }

    for _, case in ipairs(cases) do
      it(case[1], function()
        local err, file = load_error(case[2]())
        assert.are.equal(file .. ": " .. case[3], err:sub(1, #file + 2 + #case[3]))
      end)
    end

    it("a timeout_ms that is a float with an integral value is accepted", function()
      local dir = helper.tmpdir()
      helper.integrations(shop { timeout_ms = 10.0 }, dir)
      local flow = helper.flow('say(require("flowrun.runtime").integrations().shop.timeout_ms)', dir)
      local r = helper.cli{ args = { "--allow", "package", flow } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("10\n", r.stdout)
    end)

    it("the REPL's integration() refuses auth with both bearer and basic", function()
      local r = helper.cli{ args = { "repl" }, stdin = 'integration("x", { base_url = "' .. base()
        .. '", auth = { bearer = "t", basic = { "alice", "pw" } } })\n' }
      assert.are.equal(1, r.code)
      assert.matches("integration(): x.auth: give bearer or basic, not both", r.stderr, 1, true)
    end)

    it("error({}) in the file names the file on the command line", function()
      local file = helper.integrations("error({})")
      local r = helper.cli{ args = { "-I", file, helper.flow("say('never')") } }
      assert.are.equal(2, r.code)
      assert.matches(file .. ": raised an error with a table value instead of a message", r.stderr, 1, true)
    end)

    it("a file that never ends its loop is stopped, naming file and line, even under pcall", function()
      local file = helper.integrations(
        "local n = 0\nwhile true do pcall(function() for i = 1, 1e8 do n = n + i end end) end\n")
      local r = helper.cli{ args = { "-I", file, helper.flow("say('never')") }, timeout = 60 }
      assert.are.equal(2, r.code)
      assert.matches(file .. ":2: still running after 5 s: a loop that never ends?", r.stderr, 1, true)
      assert.are.equal("", r.stdout)
    end)

    it("a malformed base_url", function()
      local err, file = load_error({ shop = { base_url = "http://" } })
      assert.matches(file .. ": shop.base_url: malformed URL: ", err, 1, true)
    end)

    it("a file that does not return a table", function()
      local err, file = load_error("return 42")
      assert.matches(file, err, 1, true)
      assert.matches("must return a table", err, 1, true)
    end)

    it("a syntax error, with its line", function()
      local err, file = load_error("return {\n shop = { base_url = }\n}")
      assert.matches(file .. ":2:", err, 1, true)
    end)

    it("a missing file", function()
      local missing = helper.tmpdir() .. "/nope.lua"
      local ok, err = pcall(helper.module().new, { integrations = missing })
      assert.is_false(ok)
      assert.matches(missing, err, 1, true)
    end)

    it("a broken file stops the command line with exit 2 and the message", function()
      local file = helper.integrations({ shop = { base_url = base(), timeout_ms = "ten" } })
      local r = helper.cli{ args = { "-I", file, helper.flow("say('never')") } }
      assert.are.equal(2, r.code)
      assert.are.equal("", r.stdout)
      assert.matches(file .. ": shop.timeout_ms: expected an integer >= 1, got string", r.stderr, 1, true)
    end)
  end)
end)
