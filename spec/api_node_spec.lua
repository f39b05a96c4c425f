-- README: A flow that branches on labels, and The labels: api_node(spec) ->
-- label, response; README: Behaviour in detail: the retry policy.
local helper = require "spec.helper"

describe("A flow that branches on labels: api_node", function()
  local mock, rt

  setup(function()
    mock = helper.mock({
      { path = "/v1/echo", echo = true },
      { path = "/v1/items/{id}", echo = true },
      { path = "/v1/items/{id}/parts/{part}", echo = true },
      { path = "/v1/created", status = 201, json = { id = 1 } },
      { path = "/v1/empty", status = 204 },
      { path = "/v1/missing", status = 404, json = { error = "not found" } },
      { path = "/v1/teapot", status = 418, body = "short and stout" },
      { path = "/v1/broken", status = 500, body = "oops" },
      { path = "/v1/unavailable", status = 503, body = "down" },
      { path = "/v1/json", json = { name = "Widget", count = 42, price = 2.5, tags = { "a", "b" } } },
      { path = "/v1/null", headers = { ["Content-Type"] = "application/json" }, body = '{"a":null,"b":[1,null]}' },
      { path = "/v1/problem", status = 404, headers = { ["Content-Type"] = "application/problem+json" },
        body = '{"title":"Not here"}' },
      { path = "/v1/charset", headers = { ["Content-Type"] = "application/json; charset=utf-8" }, body = '{"ok":true}' },
      { path = "/v1/badjson", headers = { ["Content-Type"] = "application/json" }, body = '{"a": nope' },
      { path = "/v1/text", headers = { ["Content-Type"] = "text/plain" }, body = '{"looks":"like json"}' },
      { path = "/v1/repeated", headers = { ["X-Tag"] = { "a", "b" }, ["X-Single"] = "one" }, body = "ok" },
      { path = "/v1/slow", delay_ms = 300, body = "slow" },
      { path = "/v1/hang", fault = "no_response" },
      { path = "/v1/cut", fault = "reset", body = helper.code('string.rep("x", 100000)') },
      { path = "/v1/redirect", status = 302, headers = { Location = "/v1/echo?from=redirect" }, body = "moved" },
      { path = "/v1/retry-after", status = 503, headers = { ["Retry-After"] = "1" }, body = "later" },
      { path = "/v1/retry-after-long", status = 503, headers = { ["Retry-After"] = "10" }, body = "later" },
      { path = "/v1/retry-after-huge", status = 503, headers = { ["Retry-After"] = "99999999999999999999999" } },
    })
    rt = helper.runtime({
      shop = { base_url = mock.url .. "/v1", headers = { Accept = "application/json" },
               endpoints = { get_item = { path = "/items/{id}" }, add_item = { method = "POST", path = "/echo" },
                             up = { path = "/items/../echo" } } },
      bare = { base_url = mock.url .. "/v1" },
      redirects = { base_url = mock.url .. "/v1", follow_redirects = true },
    })
  end)

  teardown(helper.cleanup)

  -- api_node against the echo route: label, response, the request as seen.
  local function call(spec)
    spec.integration = spec.integration or (not spec.endpoint and "bare" or nil)
    spec.results = spec.results or { "200" }
    local label, res = rt:api_node(spec)
    return label, res, res.json
  end

  local function echoed(spec)
    spec.path = spec.path or "/echo"
    local label, res, req = call(spec)
    assert.are.equal("200", label, res.error)
    return req, res
  end

  -- The error api_node raises for spec (sent to a path the mock would log).
  local function misuse(spec)
    spec.integration = spec.integration == nil and "bare" or spec.integration or nil
    if spec.path == nil and not spec.endpoint then spec.path = "/echo?never-sent" end
    local before = mock:log()
    local ok, err = pcall(rt.api_node, rt, spec)
    assert.is_false(ok, "api_node did not raise")
    assert.are.equal(before, mock:log(), "a request was sent")
    return err
  end

  -- README: Performance. One integration's easy handles and call objects
  -- are reused, and a transfer sets only the options its handle does not
  -- hold already; a response keeps what it needs when the call goes on.
  describe("calls that reuse one integration's handles", function()
    it("each request is the one its spec asks for, whatever the call before it set", function()
      local steps = {
        { want = "GET" },
        { method = "POST", body = { n = 1 }, want = "POST", body_is = '{"n":1}' },
        { want = "GET" },
        { method = "HEAD", want = "HEAD" },
        { want = "GET" },
        { method = "DELETE", want = "DELETE" },
        { want = "GET", headers = { ["X-Once"] = "1" }, header = "1" },
        { want = "GET" },
        { method = "PUT", form = { a = "b" }, want = "PUT", body_is = "a=b" },
        { want = "GET", path = "/echo?second=1", q = "second=1" },
        { want = "GET" },
        { want = "GET", query = { x = "1" }, q = "x=1" },
        { want = "GET" },
        { want = "GET", params = { id = "7" }, path = "/items/{id}", at = "/v1/items/7" },
        { want = "GET" },
      }
      for i, st in ipairs(steps) do
        local at = st.want .. " " .. (st.at or "/v1/echo")
        local before = mock:count(at)
        local label, res = rt:api_node { integration = "bare", path = st.path or "/echo",
                                         method = st.method, body = st.body, form = st.form,
                                         headers = st.headers, query = st.query, params = st.params,
                                         results = { "200" } }
        assert.are.equal("200", label, ("step %d: %s"):format(i, tostring(res.error)))
        assert.are.equal(before + 1, mock:count(at), "step " .. i)
        if st.want ~= "HEAD" then
          local req = res.json
          assert.are.equal(st.want, req.method, "step " .. i)
          assert.are.equal(st.body_is or "", req.body or "", "step " .. i)
          assert.are.equal(st.header, req.headers["x-once"], "step " .. i)
          assert.are.equal(st.q or "", req.query, "step " .. i)
          assert.are.equal(st.at or "/v1/echo", req.path, "step " .. i)
        end
      end
    end)

    it("a response read after later calls is still its own", function()
      local _, first = rt:api_node { integration = "bare", path = "/echo?first=1", results = { "200" } }
      local label, second = rt:api_node { integration = "bare", path = "/json", results = { "200" } }
      assert.are.equal("200", label)
      local _, third = rt:api_node { integration = "bare", path = "/teapot", results = { "200", "418" } }
      assert.are.equal(418, third.status)
      -- nothing of `first` was read until now
      assert.are.equal(mock.url .. "/v1/echo?first=1", first.url)
      assert.are.equal("first=1", first.json.query)
      assert.are.equal(1, first.attempts)
      assert.is_number(first.elapsed_ms)
      assert.are.equal("application/json", first.headers["content-type"]:match("^[^;]+"))
      assert.are.equal("Widget", second.json.name)
      assert.are.equal("short and stout", third.body)
      assert.is_nil(third.json)
    end)

    it("a flow that puts its own userdata under a response's private key reads nothing from it", function()
      local d = helper.tmpdir()
      local ifile = helper.integrations({ bare = { base_url = mock.url .. "/v1" } }, d)
      local r = helper.cli{ args = { "run", "--allow", "io", "-I", ifile, helper.flow([[
        local _, res = api_node{ integration = "bare", path = "/json", results = { "200" } }
        local key
        for k in next, res do if type(k) == "userdata" then key = k end end
        rawset(res, key, io.stdout)     -- a file's bytes are no blob
        local n = 0
        for _ in pairs(res) do n = n + 1 end
        say(tostring(res.body) .. " " .. tostring(res.headers) .. " " .. res.label .. " " .. n)
      ]], d) } }
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("nil nil 200 3\n", r.stdout)
    end)

    it("a response outlives its runtime, keeps what the flow set, and encodes whole", function()
      local r = helper.runtime({ bare = { base_url = mock.url .. "/v1", timeout_ms = 100 } })
      local _, res = r:api_node { integration = "bare", path = "/json", results = { "200" } }
      local _, late = r:api_node { integration = "bare", path = "/hang", results = { "200" } }
      r:close()
      collectgarbage()
      -- nothing was read before the runtime went
      assert.are.equal(mock.url .. "/v1/json", res.url)
      assert.are.equal("Widget", res.json.name)
      assert.are.equal("timeout", late.reason)
      assert.is_string(late.error)
      -- rawget sees a field once a read has set it
      local _, raw = rt:api_node { integration = "bare", path = "/json", results = { "200" } }
      assert.is_nil(rawget(raw, "body"))
      assert.is_string(raw.url)
      assert.are.equal(raw.body, rawget(raw, "body"))
      -- what a flow sets before its first read stays
      local _, mine = rt:api_node { integration = "bare", path = "/json", results = { "200" } }
      mine.attempts, mine.body = 0, "mine"
      assert.are.equal(1, #mine.url > 0 and 1 or 0)
      assert.are.same({ 0, "mine", "Widget" }, { mine.attempts, mine.body, mine.json.name })
      -- json.encode in a flow sees every field and no private key, read or not
      local r2 = helper.runtime({ bare = { base_url = mock.url .. "/v1", timeout_ms = 100 } })
      helper.start(r2, "j", [[
        local _, ok = api_node{ integration = "bare", path = "/json", results = { "200" } }
        local _, bad = api_node{ integration = "bare", path = "/hang", results = { "200" } }
        local a, b = json.decode(json.encode(ok)), json.decode(json.encode(bad))
        say(a.label .. " " .. a.url .. " " .. a.json.name .. " " .. tostring(a.attempts))
        say(b.label .. " " .. b.reason .. " " .. tostring(b.status))
      ]])
      assert.is_true(r2:run(5000))
      assert.are.same({ "200 " .. mock.url .. "/v1/json Widget 1", "timeout timeout nil" },
                      helper.says(r2:events(), "j"))
    end)
  end)

  describe("fields", function()
    it("integration and path: the path is appended to base_url", function()
      local req, res = echoed { path = "/echo" }
      assert.are.equal("/v1/echo", req.path)
      assert.are.equal(mock.url .. "/v1/echo", res.url)
    end)

    it("endpoint supplies the method and the path", function()
      local label, res = rt:api_node{ endpoint = "shop.get_item", params = { id = "9" }, results = { "200" } }
      assert.are.equal("200", label)
      assert.are.equal("GET", res.json.method)
      assert.are.equal("/v1/items/9", res.json.path)
      label, res = rt:api_node{ endpoint = "shop.add_item", body = { n = 1 }, results = { "200" } }
      assert.are.equal("200", label)
      assert.are.equal("POST", res.json.method)
    end)

    it("method defaults to GET", function()
      assert.are.equal("GET", echoed({}).method)
    end)

    it("never sends Expect: 100-continue, not even with a 2 MB body", function()
      -- a server of one connection (the mock keeps bodies up to 1 MiB only):
      -- it reads the request and answers with the header block it got
      local server = io.popen("lua5.4 -e " .. helper.quote([[
        local socket = require "socket"
        local s = assert(socket.bind("127.0.0.1", 0))
        local _, port = s:getsockname()
        print(port) io.stdout:flush()
        s:settimeout(30)
        local c = assert(s:accept())
        c:settimeout(30)
        local head, len = {}, 0
        repeat
          local l = assert(c:receive("*l"))
          head[#head + 1] = l
          len = tonumber(l:lower():match("^content%-length: *(%d+)")) or len
        until l == ""
        local body = table.concat(head, "\n")
        if head[1]:find("^POST") then assert(c:receive(len)) end
        c:send("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " .. #body
          .. "\r\nConnection: close\r\n\r\n" .. body)
        c:close()
      ]]))
      local port = assert(tonumber(server:read("l")))
      local raw = helper.runtime({ raw = { base_url = "http://127.0.0.1:" .. port } })
      local label, res = raw:api_node{ integration = "raw", path = "/", results = { "200" }, method = "POST",
        headers = { ["Content-Type"] = "text/plain" }, body = ("x"):rep(2 * 1024 * 1024) }
      server:close()
      assert.are.equal("200", label, res.error)
      assert.matches("^POST / HTTP/1.1\n", res.body)
      assert.matches("\nContent%-Length: 2097152\n", res.body)
      assert.is_nil(res.body:lower():find("expect", 1, true), res.body)
    end)

    for _, method in ipairs { "GET", "POST", "PUT", "PATCH", "DELETE" } do
      it("method " .. method .. " is sent as " .. method, function()
        assert.are.equal(method, echoed({ method = method }).method)
      end)
    end

    it("method HEAD is sent as HEAD and gets no body", function()
      local label, res = call { method = "HEAD", path = "/echo?head=1" }
      assert.are.equal("200", label)
      assert.are.equal("", res.body)
      assert.are.equal(1, mock:count("HEAD /v1/echo?head=1"))
    end)

    it("params fill {name} placeholders", function()
      local req = echoed { path = "/items/{id}/parts/{part}", params = { id = "abc", part = 7 } }
      assert.are.equal("/v1/items/abc/parts/7", req.path)
    end)

    it("params accept numbers and booleans", function()
      assert.are.equal("/v1/items/true", echoed({ path = "/items/{id}", params = { id = true } }).path)
      assert.are.equal("/v1/items/2.5", echoed({ path = "/items/{id}", params = { id = 2.5 } }).path)
    end)

    it("params are percent-encoded: a / becomes %2F", function()
      local req, res = echoed { path = "/items/{id}", params = { id = "a/b" } }
      assert.are.equal("/v1/items/a%2Fb", req.path)
      assert.are.equal(mock.url .. "/v1/items/a%2Fb", res.url)
    end)

    it("params are percent-encoded: spaces, ?, #, & and non-ASCII never leak into the URL", function()
      local req = echoed { path = "/items/{id}", params = { id = "a b?c#d&é" } }
      assert.are.equal("/v1/items/a%20b%3Fc%23d%26%C3%A9", req.path:gsub("%%%x%x", string.upper))
      assert.are.equal("", req.query)
    end)

    it("params \".\" and \"..\" are percent-encoded: the request keeps its segment", function()
      for value, enc in pairs { ["."] = "%2E", [".."] = "%2E%2E" } do
        local req, res = echoed { path = "/items/{id}", params = { id = value } }
        assert.are.equal("/v1/items/" .. enc, req.path)
        assert.are.equal(mock.url .. "/v1/items/" .. enc, res.url)
      end
    end)

    it("query as a map: keys sorted, an array repeats its key", function()
      local req = echoed { query = { tag = { "a", "b" }, page = 2, active = true } }
      assert.are.equal("active=true&page=2&tag=a&tag=b", req.query)
    end)

    it("query as a list of pairs keeps its order", function()
      local req = echoed { query = { { "tag", "a" }, { "page", 2 }, { "tag", "b" } } }
      assert.are.equal("tag=a&page=2&tag=b", req.query)
    end)

    it("query_separator \";\" joins with semicolons, for both forms", function()
      assert.are.equal("tag=a;page=2;tag=b",
        echoed({ query = { { "tag", "a" }, { "page", 2 }, { "tag", "b" } }, query_separator = ";" }).query)
      assert.are.equal("page=2;tag=a;tag=b",
        echoed({ query = { tag = { "a", "b" }, page = 2 }, query_separator = ";" }).query)
    end)

    it("query_separator \"&\" is the default", function()
      assert.are.equal("a=1&b=2", echoed({ query = { a = 1, b = 2 }, query_separator = "&" }).query)
    end)

    it("query keys and values are percent-encoded", function()
      local req = echoed { query = { ["a b"] = "x&y=z/;" } }
      assert.are.same({ ["a b"] = "x&y=z/;" }, req.args)
    end)

    it("headers are sent", function()
      local req = echoed { headers = { ["X-Request-Id"] = "r1", ["X-Num"] = 5 } }
      assert.are.equal("r1", req.headers["x-request-id"])
      assert.are.equal("5", req.headers["x-num"])
    end)

    it("headers are merged over the integration's", function()
      local req = echoed { integration = "shop", headers = { ["X-Node"] = "n" } }
      assert.are.equal("n", req.headers["x-node"])
      assert.are.equal("application/json", req.headers.accept)
    end)

    it("a header the integration sets too with the same value is no conflict (names in any case)", function()
      local req = echoed { integration = "shop", headers = { ACCEPT = "application/json" } }
      assert.are.equal("application/json", req.headers.accept)
    end)

    it("body as a table is sent as JSON with Content-Type: application/json", function()
      local req = echoed { method = "POST", body = { name = "Widget", qty = 2 } }
      assert.are.equal("application/json", req.headers["content-type"])
      assert.are.same({ name = "Widget", qty = 2 }, require("cjson").decode(req.body))
    end)

    it("body as a table keeps a Content-Type the node sets", function()
      local req = echoed { method = "PUT", body = { a = 1 }, headers = { ["Content-Type"] = "application/vnd.api+json" } }
      assert.are.equal("application/vnd.api+json", req.headers["content-type"])
      assert.are.equal('{"a":1}', req.body)
    end)

    it("body as a string is sent as is with its Content-Type", function()
      local xml = "<order><id>1</id></order>"
      local req = echoed { method = "POST", body = xml, headers = { ["Content-Type"] = "application/xml" } }
      assert.are.equal("application/xml", req.headers["content-type"])
      assert.are.equal(xml, req.body)
    end)

    it("form is sent urlencoded", function()
      local req = echoed { method = "POST", form = { name = "a b&c", tag = { "x", "y" } } }
      assert.are.equal("application/x-www-form-urlencoded", req.headers["content-type"])
      local seen = {}
      for pair in req.body:gmatch("[^&]+") do
        local k, v = pair:match("^([^=]*)=(.*)$")
        v = v:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
        seen[#seen + 1] = k .. "=" .. v
      end
      assert.are.same({ "name=a b&c", "tag=x", "tag=y" }, seen)
    end)

    it("timeout_ms overrides the integration's: the call ends before a 3 s clock of the loop", function()
      -- the integration's timeout_ms is 10 000; a session of the same
      -- runtime says "3 s" after 3000 ms of the loop's own time
      local r = helper.runtime({ bare = { base_url = mock.url .. "/v1" } })
      helper.start(r, "clock", [[ sleep(3000) say("3 s") ]])
      local label, res = r:api_node{ integration = "bare", path = "/hang", timeout_ms = 300, results = { "200" } }
      assert.are.equal("timeout", label)
      assert.are.equal("timeout", res.reason)
      assert.is_true(res.elapsed_ms >= 290, "elapsed_ms " .. res.elapsed_ms)
      assert.are.same({}, helper.says(r:events(), "clock"))
    end)
  end)

  describe("programming errors raise and send nothing", function()
    local cases = {
      { "an unknown integration", { integration = "nope" }, "api_node: unknown integration 'nope'" },
      { "an unknown endpoint", { integration = false, endpoint = "shop.nope" },
        "api_node: integration 'shop' has no endpoint 'nope'" },
      { "an endpoint of an unknown integration", { integration = false, endpoint = "nope.get" },
        "api_node: unknown integration 'nope'" },
      { "an unknown field", { foo = 1, results = { "200" } }, "api_node: unknown field 'foo'" },
      { "a placeholder without a value", { path = "/items/{id}", results = { "200" } },
        "api_node: path placeholder {id} has no value in params" },
      { "a placeholder whose params lack it", { path = "/items/{id}", params = { other = 1 }, results = { "200" } },
        "api_node: path placeholder {id} has no value in params" },
      { "a table as a param value", { path = "/items/{id}", params = { id = { 1 } }, results = { "200" } },
        "api_node: params.id: expected a string, number or boolean, got table" },
      { "a function as a query value", { query = { q = print }, results = { "200" } },
        "api_node: query.q: expected a string, number or boolean, got function" },
      { "a body on GET", { body = { a = 1 }, results = { "200" } }, "api_node: a GET request cannot have a body" },
      { "a body on HEAD", { method = "HEAD", body = { a = 1 }, results = { "200" } },
        "api_node: a HEAD request cannot have a body" },
      { "both body and form", { method = "POST", body = { a = 1 }, form = { b = 2 }, results = { "200" } },
        "api_node: give body or form, not both" },
      { "a string body without a Content-Type", { method = "POST", body = "<a/>", results = { "200" } },
        "api_node: a string body needs a Content-Type header (for example application/xml)" },
      { "results missing", {}, 'api_node: results is required and must include a success: a 2xx status like "200" or "201", or "2xx"' },
      { "results without a success", { results = { "404", "timeout" } }, 'api_node: results: must include a success: a 2xx status like "200" or "201", or "2xx"' },
      { "an unknown result name", { results = { "200", "foo" } }, "api_node: results: unknown result \"foo\"" },
      { "\"Timeout\" instead of \"timeout\"", { results = { "200", "Timeout" } },
        "api_node: results: result labels must be lower case: \"Timeout\"" },
      { "\"OTHER\" instead of \"other\"", { results = { "200", "OTHER" } },
        "api_node: results: result labels must be lower case: \"OTHER\"" },
      { "\"Max-Connection\" instead of \"max-connection\"", { results = { "200", "Max-Connection" } },
        "api_node: results: result labels must be lower case: \"Max-Connection\"" },
      { "a CR or LF in a header value", { headers = { ["X-A"] = "a\r\nX-Evil: 1" }, results = { "200" } },
        "api_node: headers.X-A: CR, LF or NUL in a header value" },
      { "an unknown method", { method = "FETCH", results = { "200" } }, "api_node: method: expected GET, POST, PUT, PATCH, DELETE or HEAD" },
      { "a table that is not an array as a query value", { query = { a = { b = 1 }, c = 2 }, results = { "200" } },
        "api_node: query.a: expected a string, number, boolean or an array of them, got a table that is not an array" },
      { "a list of query pairs with map keys too", { query = { { "a", 1 }, b = 2 }, results = { "200" } },
        "api_node: query: a list of pairs {{\"k\", v}, ...} cannot have other keys (use either a list of pairs or a map {k = v})" },
      { "a query pair with three values", { query = { { "a", 1, 2 } }, results = { "200" } },
        "api_node: query[1]: expected a pair like {\"tag\", \"a\"}" },
      { "a list of form pairs with map keys too", { method = "POST", form = { { "a", 1 }, b = 2 }, results = { "200" } },
        "api_node: form: a list of pairs {{\"k\", v}, ...} cannot have other keys" },
      { "a table that is not an array as a form value", { method = "POST", form = { a = { b = 1 } }, results = { "200" } },
        "api_node: form.a: expected a string, number, boolean or an array of them, got a table that is not an array" },
      { "a Content-Length header", { method = "POST", body = "abcdef",
          headers = { ["Content-Type"] = "text/plain", ["Content-Length"] = "3" }, results = { "200" } },
        "api_node: headers.Content-Length: flowrun sets it from the body" },
      { "a Transfer-Encoding header", { method = "POST", body = { a = 1 },
          headers = { ["transfer-encoding"] = "chunked" }, results = { "200" } },
        "api_node: headers.transfer-encoding: flowrun sets it from the body" },
      { "a Host header", { headers = { Host = "elsewhere.invalid" }, results = { "200" } },
        "api_node: headers.Host: flowrun sets it from base_url" },
      { "a Connection header", { headers = { Connection = "close" }, results = { "200" } },
        "api_node: headers.Connection: flowrun manages the connections" },
      { "a \"..\" segment in the path", { path = "/items/../echo", results = { "200" } },
        "api_node: path: \".\" and \"..\" segments are not allowed (a path stays under base_url)" },
      { "a \".\" segment in the path", { path = "/./echo", results = { "200" } },
        "api_node: path: \".\" and \"..\" segments are not allowed" },
      { "a \"..\" segment made by an empty param", { path = "/..{a}/{b}", params = { a = "", b = "echo" },
          results = { "200" } },
        "api_node: path: \".\" and \"..\" segments are not allowed, also once params are filled in (/../echo)" },
      { "a \"..\" segment in an endpoint's path", { integration = false, endpoint = "shop.up", results = { "200" } },
        "api_node: endpoint 'shop.up' path: \".\" and \"..\" segments are not allowed" },
      { "a space in the path", { path = "/x y", results = { "200" } },
        "api_node: path: spaces, control characters and '#' are not allowed (percent-encode them, or give the value in params)" },
      { "a control character in the path", { path = "/x\ty", results = { "200" } },
        "api_node: path: spaces, control characters and '#' are not allowed" },
      { "a # in the path", { path = "/echo#top", results = { "200" } },
        "api_node: path: spaces, control characters and '#' are not allowed" },
      { "a NUL in the path", { path = "/echo\0cut", results = { "200" } }, "api_node: path: NUL in the path" },
      { "a bad query_separator", { query = { a = 1 }, query_separator = ",", results = { "200" } },
        "api_node: query_separator: expected \"&\" or \";\"" },
      { "a zero timeout_ms", { timeout_ms = 0, results = { "200" } }, "api_node: timeout_ms: expected a positive integer" },
      { "a string timeout_ms", { timeout_ms = "300", results = { "200" } }, "api_node: timeout_ms: expected a positive integer" },
    }

    for _, case in ipairs(cases) do
      it(case[1], function()
        local err = misuse(case[2])
        assert.are.equal(case[3], err:sub(1, #case[3]))
      end)
    end

    it("2xx instead of 200 is enough", function()
      local label = rt:api_node{ integration = "bare", path = "/created", results = { "2xx" } }
      assert.are.equal("2xx", label)
    end)

    it("any 2xx status is a success: a POST may declare only 201", function()
      local label = rt:api_node{ integration = "bare", path = "/created", results = { "201", "409" } }
      assert.are.equal("201", label)
      assert.has_error(function() rt:api_node{ integration = "bare", path = "/created", results = { "301", "409" } } end,
        'api_node: results: must include a success: a 2xx status like "200" or "201", or "2xx"')
    end)

    it("is reported at the flow's line that called api_node", function()
      local r = helper.runtime({ bare = { base_url = mock.url .. "/v1" } })
      local path = helper.start(r, "s1", [[
local x = 1

local label = api_node{ integration = "bare", path = "/echo?from-flow", results = { "200", "Timeout" } }
say("not reached")
]])
      assert.is_true(r:run(5000))
      local ends = helper.events(r:events(), "end", "s1")
      assert.are.equal(1, #ends)
      assert.is_false(ends[1].ok)
      local first = ends[1].error:match("^[^\n]*")
      assert.are.equal(path .. ':3: api_node: results: result labels must be lower case: "Timeout"', first)
      assert.are.equal(0, mock:count("from-flow"))
    end)
  end)

  describe("header conflicts", function()
    it("fail the call with label error, reason header_conflict, and send nothing", function()
      local label, res = rt:api_node{ integration = "shop", path = "/echo?conflict",
                                       headers = { accept = "text/plain" }, results = { "200" } }
      assert.are.equal("error", label)
      assert.are.equal("error", res.label)
      assert.are.equal("header_conflict", res.reason)
      assert.are.equal(0, res.attempts)
      assert.is_nil(res.status)
      assert.matches("Accept", res.error, 1, true)
      assert.matches("shop", res.error, 1, true)
      assert.are.equal(0, mock:count("conflict"))
    end)

    it("with an integration of many headers: one the node repeats is sent once, a different value conflicts", function()
      local t = {}
      for i = 1, 20 do t["X-I" .. i] = "v" .. i end
      local file = helper.integrations({ many = { base_url = mock.url .. "/v1", headers = t } })
      local r = helper.cli{ args = { "repl", "-I", file }, stdin =
        'api_node{integration="many", path="/echo", headers={["x-i17"]="v17", ["X-N"]="n"}, results={"200"}}\n'
        .. '.last\n'
        .. 'l, res = api_node{integration="many", path="/echo", headers={["x-i18"]="other"}, results={"200"}}\n'
        .. 'res.error\n' }
      assert.are.equal(0, r.code, r.stderr)
      local _, n17 = r.stdout:gsub("%-H '[xX]%-[iI]17: v17'", "")
      assert.are.equal(1, n17, r.stdout)
      for i = 1, 20 do assert.matches("%-H '[xX]%-[iI]" .. i .. ": v" .. i .. "'", r.stdout) end
      assert.matches("-H 'X-N: n'", r.stdout, 1, true)
      assert.matches("header 'X-I18' differs between the node and integration 'many'", r.stdout, 1, true)
    end)

    it("give a trace its call as curl, an env() secret as its shell variable", function()
      local r2 = helper.runtime({ sec = { base_url = mock.url .. "/v1", headers = { ["X-Note"] = "it's" },
                                          auth = { bearer = helper.code('env("HOME")') } } })
      r2:api_node{ integration = "sec", method = "POST", path = "/echo", body = { a = 1 }, results = { "200" } }
      local t = helper.events(r2:events(), "trace")[1]
      assert.are.equal("curl " .. mock.url .. "/v1/echo \\\n"
        .. "  -H 'X-Note: it'\\''s' \\\n"
        .. '  -H "Authorization: Bearer $HOME" \\\n'
        .. "  -H Expect: \\\n"
        .. "  -H 'Content-Type: application/json' \\\n"
        .. "  --data-raw '{\"a\":1}'", t.curl)
    end)

    it("appear in the trace like any other call", function()
      rt:events()
      rt:api_node{ integration = "shop", path = "/echo", headers = { Accept = "text/xml" }, results = { "200" } }
      local traces = helper.events(rt:events(), "trace")
      assert.are.equal(1, #traces)
      assert.are.equal("error", traces[1].label)
      assert.are.equal("header_conflict", traces[1].reason)
    end)
  end)

  describe("a request too large to send", function()
    local TOO_LARGE = "the URL and headers take more than 900000 bytes, more than libcurl can send: "
      .. "send large data in the body"

    it("a path param of 1 MiB or 8 MB: label error, reason too_large, nothing sent", function()
      for _, n in ipairs { 1024 * 1024, 8 * 1000 * 1000 + 1 } do
        local label, res = rt:api_node{ integration = "bare", path = "/items/{id}",
                                         params = { id = ("a"):rep(n) }, results = { "200" } }
        assert.are.equal("error", label, n)
        assert.are.equal("too_large", res.reason)
        assert.are.equal(TOO_LARGE, res.error)
        assert.are.equal(mock.url .. "/v1/items/{id}", res.url)   -- the path as written
        assert.are.equal(0, res.attempts)
      end
    end)

    it("a URL under the limit is sent as it is (the server may refuse it)", function()
      local label, res = rt:api_node{ integration = "bare", path = "/items/{id}",
                                       params = { id = ("a"):rep(800000) }, results = { "200" } }
      assert.are.equal("other", label, res.error)
      assert.are.equal(414, res.status)
    end)

    it("200 000 headers: too_large, built in linear time (CPU under 40 x that of 20 000; 100 x when quadratic)", function()
      local function headers(n)
        local h = {}
        for i = 1, n do h["X-H" .. i] = "v" .. i end
        local t0 = os.clock()
        local label, res = rt:api_node{ integration = "shop", path = "/echo", headers = h, results = { "200" } }
        return os.clock() - t0, label, res
      end
      local small = headers(20000)
      local cpu, label, res = headers(200000)
      assert.is_true(cpu < 40 * math.max(small, 0.005), ("%.3f s of CPU for 200 000, %.3f s for 20 000"):format(cpu, small))
      assert.are.equal("error", label)
      assert.are.equal("too_large", res.reason)
      assert.are.equal(TOO_LARGE, res.error)
    end)
  end)

  describe("the label", function()
    it("is the status when results declares it", function()
      assert.are.equal("404", (rt:api_node{ integration = "bare", path = "/missing", results = { "200", "404", "4xx" } }))
    end)

    it("is the declared class when the status is not declared", function()
      assert.are.equal("4xx", (rt:api_node{ integration = "bare", path = "/teapot", results = { "200", "404", "4xx" } }))
      assert.are.equal("2xx", (rt:api_node{ integration = "bare", path = "/created", results = { "200", "2xx" } }))
    end)

    it("is other for a status neither declared nor in a declared class", function()
      local label, res = rt:api_node{ integration = "bare", path = "/broken", results = { "200", "4xx" } }
      assert.are.equal("other", label)
      assert.are.equal(500, res.status)
      assert.is_nil(res.error)
      assert.is_nil(res.reason)
      label = rt:api_node{ integration = "bare", path = "/created", results = { "200" } }
      assert.are.equal("other", label)
    end)

    it("is one of the defaults whether declared or not", function()
      local label, res = rt:api_node{ integration = "bare", path = "/hang", timeout_ms = 100, results = { "200" } }
      assert.are.equal("timeout", label)
      label, res = rt:api_node{ integration = "bare", path = "/cut", results = { "200", "timeout", "error", "other", "max-connection" } }
      assert.are.equal("error", label)
      assert.are.equal("reset", res.reason)
    end)

    it("max-connection comes before timeout: time in the queue is not counted in timeout_ms", function()
      local r = helper.runtime({ pool = { base_url = mock.url .. "/v1", max_connections = 1, queue_timeout_ms = 2000 } })
      helper.start(r, "holder", [[
        local label = api_node{ integration = "pool", path = "/slow", results = { "200" } }
        say(label)
      ]])
      helper.start(r, "queued", [[
        sleep(50)
        local label, res = api_node{ integration = "pool", path = "/slow", timeout_ms = 450, results = { "200" } }
        say(label .. " " .. res.elapsed_ms)
      ]])
      assert.is_true(r:run(10000))
      local events = r:events()
      assert.are.same({ "200" }, helper.says(events, "holder"))
      local label, elapsed = helper.says(events, "queued")[1]:match("^(%S+) (%d+)$")
      assert.are.equal("200", label)
      -- it waited for the slot (~250 ms) and then for its own answer (300 ms)
      assert.is_true(tonumber(elapsed) >= 450, "elapsed_ms " .. elapsed)
    end)
  end)

  describe("the response", function()
    it("has label, status, headers, body, elapsed_ms, url and attempts", function()
      local label, res = rt:api_node{ integration = "bare", path = "/json", results = { "200" } }
      assert.are.equal("200", label)
      assert.are.equal("200", res.label)
      assert.are.equal(200, res.status)
      assert.are.equal("number", math.type(res.status) and "number")
      assert.are.equal("application/json", res.headers["content-type"])
      assert.are.equal("string", type(res.body))
      assert.are.equal("number", type(res.elapsed_ms))
      assert.are.equal(mock.url .. "/v1/json", res.url)
      assert.are.equal(1, res.attempts)
      assert.is_nil(res.error)
      assert.is_nil(res.reason)
    end)

    it("status is an integer", function()
      local _, res = rt:api_node{ integration = "bare", path = "/missing", results = { "200" } }
      assert.are.equal("integer", math.type(res.status))
      assert.are.equal(404, res.status)
    end)

    it("headers have lower-case names", function()
      local _, res = rt:api_node{ integration = "bare", path = "/repeated", results = { "200" } }
      assert.are.equal("one", res.headers["x-single"])
      assert.is_nil(res.headers["X-Single"])
      for name in pairs(res.headers) do assert.are.equal(name:lower(), name) end
    end)

    it("headers join a repeated header with \", \"", function()
      local _, res = rt:api_node{ integration = "bare", path = "/repeated", results = { "200" } }
      assert.are.equal("a, b", res.headers["x-tag"])
    end)

    it("calls reuse one kept-alive connection", function()
      local ports = {}
      for i = 1, 3 do
        local _, res = rt:api_node{ integration = "bare", path = "/echo", results = { "200" } }
        ports[i] = res.json.peer_port
      end
      assert.is_number(ports[1])
      assert.are.same({ ports[1], ports[1], ports[1] }, ports)
    end)

    it("body is the raw body, \"\" when there is none", function()
      local _, res = rt:api_node{ integration = "bare", path = "/teapot", results = { "200" } }
      assert.are.equal("short and stout", res.body)
      _, res = rt:api_node{ integration = "bare", path = "/empty", results = { "200", "204" } }
      assert.are.equal(204, res.status)
      assert.are.equal("", res.body)
      _, res = rt:api_node{ integration = "bare", path = "/hang", timeout_ms = 100, results = { "200" } }
      assert.are.equal("", res.body)
      assert.is_nil(res.status)
    end)

    it("json is the decoded body of an application/json response", function()
      local _, res = rt:api_node{ integration = "bare", path = "/json", results = { "200" } }
      assert.are.same({ name = "Widget", count = 42, price = 2.5, tags = { "a", "b" } }, res.json)
      assert.are.equal("integer", math.type(res.json.count))
    end)

    it("json is decoded for +json types and with parameters", function()
      local label, res = rt:api_node{ integration = "bare", path = "/problem", results = { "200", "404" } }
      assert.are.equal("404", label)
      assert.are.same({ title = "Not here" }, res.json)
      _, res = rt:api_node{ integration = "bare", path = "/charset", results = { "200" } }
      assert.are.same({ ok = true }, res.json)
    end)

    it("json is absent for other content types", function()
      local _, res = rt:api_node{ integration = "bare", path = "/text", results = { "200" } }
      assert.is_nil(res.json)
      assert.is_nil(res.json_error)
      assert.are.equal('{"looks":"like json"}', res.body)
    end)

    it("json turns JSON null into json.null", function()
      local r = helper.runtime({ bare = { base_url = mock.url .. "/v1" } })
      helper.start(r, "s", [[
        local label, res = api_node{ integration = "bare", path = "/null", results = { "200" } }
        say(tostring(res.json.a == json.null))
        say(tostring(res.json.b[2] == json.null))
        say(tostring(#res.json.b))
      ]])
      assert.is_true(r:run(5000))
      assert.are.same({ "true", "true", "2" }, helper.says(r:events(), "s"))
    end)

    it("json_error says why a JSON body did not parse, and the label stays the status's", function()
      local label, res = rt:api_node{ integration = "bare", path = "/badjson", results = { "200" } }
      assert.are.equal("200", label)
      assert.is_nil(res.json)
      assert.are.equal("string", type(res.json_error))
      assert.is_true(#res.json_error > 0)
      assert.are.equal('{"a": nope', res.body)
    end)

    it("error and reason explain a default label", function()
      local label, res = rt:api_node{ integration = "bare", path = "/hang", timeout_ms = 100, results = { "200" } }
      assert.are.equal("timeout", label)
      assert.are.equal("timeout", res.label)
      assert.are.equal("timeout", res.reason)
      assert.are.equal("string", type(res.error))
      assert.is_true(#res.error > 0)
    end)

    it("elapsed_ms covers the whole call", function()
      local _, res = rt:api_node{ integration = "bare", path = "/slow", results = { "200" } }
      assert.is_true(res.elapsed_ms >= 300, "elapsed_ms " .. res.elapsed_ms)
    end)

    it("url is the last URL requested, after redirects", function()
      local label, res = rt:api_node{ integration = "redirects", path = "/redirect", results = { "200" } }
      assert.are.equal("200", label)
      assert.are.equal(mock.url .. "/v1/echo?from=redirect", res.url)
      assert.are.equal("/v1/echo", res.json.path)
    end)

    it("url includes the query", function()
      local _, res = rt:api_node{ integration = "bare", path = "/echo", query = { a = 1 }, results = { "200" } }
      assert.are.equal(mock.url .. "/v1/echo?a=1", res.url)
    end)
  end)

  describe("retries", function()
    local function retrying(retry, extra)
      local ig = { base_url = mock.url .. "/v1", retry = retry }
      for k, v in pairs(extra or {}) do ig[k] = v end
      return helper.runtime({ shop = ig })
    end

    it("attempts = 1 sends once", function()
      local r = retrying({ attempts = 1, on = { "503" } })
      local label, res = r:api_node{ integration = "shop", path = "/unavailable?once", results = { "200", "503" } }
      assert.are.equal("503", label)
      assert.are.equal(1, res.attempts)
      assert.are.equal(1, mock:count("unavailable?once"))
    end)

    it("retries a label in on up to attempts, with exponential backoff", function()
      local r = retrying({ attempts = 3, on = { "503" }, backoff_ms = 100, max_backoff_ms = 5000 })
      local label, res = r:api_node{ integration = "shop", path = "/unavailable?thrice", results = { "200", "503" } }
      assert.are.equal("503", label)
      assert.are.equal(3, res.attempts)
      assert.are.equal(3, mock:count("unavailable?thrice"))
      -- 100 ms, then 200 ms
      assert.is_true(res.elapsed_ms >= 300, "elapsed_ms " .. res.elapsed_ms)
    end)

    it("does not retry a label that is not in on", function()
      local r = retrying({ attempts = 3, on = { "503" }, backoff_ms = 10 })
      local label, res = r:api_node{ integration = "shop", path = "/broken?not-on", results = { "200", "500" } }
      assert.are.equal("500", label)
      assert.are.equal(1, res.attempts)
    end)

    it("matches the status against on even when results does not declare it", function()
      local r = retrying({ attempts = 2, on = { "5xx" }, backoff_ms = 10 })
      local label, res = r:api_node{ integration = "shop", path = "/broken?class", results = { "200" } }
      assert.are.equal("other", label)
      assert.are.equal(500, res.status)
      assert.are.equal(2, res.attempts)
    end)

    it("retries the default labels named in on", function()
      local r = retrying({ attempts = 2, on = { "timeout", "error" }, backoff_ms = 10 })
      local label, res = r:api_node{ integration = "shop", path = "/hang", timeout_ms = 150, results = { "200" } }
      assert.are.equal("timeout", label)
      assert.are.equal(2, res.attempts)
      label, res = r:api_node{ integration = "shop", path = "/cut?twice", results = { "200" } }
      assert.are.equal("error", label)
      assert.are.equal("reset", res.reason)
      assert.are.equal(2, res.attempts)
    end)

    it("a Retry-After in seconds replaces the backoff", function()
      local r = retrying({ attempts = 2, on = { "503" }, backoff_ms = 10, max_backoff_ms = 5000 })
      local label, res = r:api_node{ integration = "shop", path = "/retry-after", results = { "200", "503" } }
      assert.are.equal("503", label)
      assert.are.equal(2, res.attempts)
      assert.is_true(res.elapsed_ms >= 1000, "elapsed_ms " .. res.elapsed_ms)
    end)

    it("a Retry-After longer than max_backoff_ms means no retry", function()
      local r = retrying({ attempts = 3, on = { "503" }, backoff_ms = 10, max_backoff_ms = 2000 })
      local label, res = r:api_node{ integration = "shop", path = "/retry-after-long", results = { "200", "503" } }
      assert.are.equal("503", label)
      assert.are.equal(1, res.attempts)
    end)

    it("a Retry-After too large for any clock is longer than max_backoff_ms: no retry", function()
      local r = retrying({ attempts = 3, on = { "503" }, backoff_ms = 10, max_backoff_ms = 2000 })
      local label, res = r:api_node{ integration = "shop", path = "/retry-after-huge", results = { "200", "503" } }
      assert.are.equal("503", label)
      assert.are.equal(1, res.attempts)
      assert.are.equal(1, mock:count("retry-after-huge"))
    end)

    it("the backoff doubles after each attempt", function()
      -- 150 + 300 + 600 ms; a constant backoff would wait 450 ms, a linear one 900
      local r = retrying({ attempts = 4, on = { "503" }, backoff_ms = 150, max_backoff_ms = 5000 })
      local _, res = r:api_node{ integration = "shop", path = "/unavailable?doubles", results = { "200" } }
      assert.are.equal(4, res.attempts)
      assert.is_true(res.elapsed_ms >= 1000, "elapsed_ms " .. res.elapsed_ms)
    end)

    it("max_backoff_ms caps the backoff", function()
      -- 4 waits of 150 ms; without the cap 150 + 300 + 600 + 1200 ms
      -- (2250 ms), which a session saying "2 s" after 2000 ms of the loop's time would beat
      local r = retrying({ attempts = 5, on = { "503" }, backoff_ms = 150, max_backoff_ms = 150 })
      helper.start(r, "clock", [[ sleep(2000) say("2 s") ]])
      local _, res = r:api_node{ integration = "shop", path = "/unavailable?capped", results = { "200" } }
      assert.are.equal(5, res.attempts)
      assert.is_true(res.elapsed_ms >= 580, "elapsed_ms " .. res.elapsed_ms)
      assert.are.same({}, helper.says(r:events(), "clock"))
    end)

    it("a Retry-After as an HTTP date replaces the backoff", function()
      -- 4 s on: the mock may take a while to start on a loaded machine (under SAN)
      local soon = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 4)
      local later = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 3600)
      local m = helper.mock({
        { path = "/soon", status = 503, headers = { ["Retry-After"] = soon } },
        { path = "/later", status = 503, headers = { ["Retry-After"] = later } },
      })
      local r = helper.runtime({ shop = { base_url = m.url, retry = { attempts = 2, on = { "503" }, backoff_ms = 10, max_backoff_ms = 5000 } } })
      local label, res = r:api_node{ integration = "shop", path = "/soon", results = { "200" } }
      assert.are.equal("other", label)
      assert.are.equal(2, res.attempts)
      assert.is_true(res.elapsed_ms >= 900, "elapsed_ms " .. res.elapsed_ms)
      label, res = r:api_node{ integration = "shop", path = "/later", results = { "200" } }
      assert.are.equal(1, res.attempts)
    end)

    it("a Retry-After date in the past retries at once, not after the backoff", function()
      local m = helper.mock({
        { path = "/past", status = 503, times = 1, headers = { ["Retry-After"] = "Thu, 01 Jan 2015 00:00:00 GMT" } },
        { path = "/past", body = "ok" },
      })
      local r = helper.runtime({ shop = { base_url = m.url,
        retry = { attempts = 2, on = { "503" }, backoff_ms = 5000, max_backoff_ms = 5000 } } })
      -- the retry comes before a clock of 2 500 ms (the backoff would be 5 000)
      helper.start(r, "retries", [[
        local label, res = api_node{ integration = "shop", path = "/past", results = { "200" } }
        say(label .. " " .. res.attempts)
      ]])
      helper.start(r, "clock", [[ sleep(2500) say("2500 ms") ]])
      assert.is_true(r:run(10000))
      assert.are.same({ "200 2", "2500 ms" }, helper.says(r:events()))
      assert.are.equal(2, m:count("GET /past"))
    end)

    for _, method in ipairs { "POST", "PATCH" } do
      it(method .. " is not retried without an Idempotency-Key header", function()
        local r = retrying({ attempts = 3, on = { "503" }, backoff_ms = 10 })
        local tag = "unavailable?" .. method .. "-no-key"
        local label, res = r:api_node{ integration = "shop", method = method, path = "/" .. tag,
                                        body = { a = 1 }, results = { "200" } }
        assert.are.equal("other", label)
        assert.are.equal(1, res.attempts)
        assert.are.equal(1, mock:count(tag))
      end)

      it(method .. " is retried with an Idempotency-Key header", function()
        local r = retrying({ attempts = 3, on = { "503" }, backoff_ms = 10 })
        local tag = "unavailable?" .. method .. "-key"
        local label, res = r:api_node{ integration = "shop", method = method, path = "/" .. tag,
                                        headers = { ["Idempotency-Key"] = "k-1" }, body = { a = 1 }, results = { "200" } }
        assert.are.equal("other", label)
        assert.are.equal(3, res.attempts)
        assert.are.equal(3, mock:count(tag))
      end)
    end

    it("POST is retried when the integration sets the Idempotency-Key header", function()
      local r = retrying({ attempts = 2, on = { "503" }, backoff_ms = 10 }, { headers = { ["idempotency-key"] = "fixed" } })
      local _, res = r:api_node{ integration = "shop", method = "POST", path = "/unavailable?ig-key", body = { a = 1 }, results = { "200" } }
      assert.are.equal(2, res.attempts)
    end)

    for _, method in ipairs { "PUT", "DELETE", "GET" } do
      it(method .. " is retried without an Idempotency-Key header", function()
        local r = retrying({ attempts = 2, on = { "503" }, backoff_ms = 10 })
        local _, res = r:api_node{ integration = "shop", method = method, path = "/unavailable", results = { "200" } }
        assert.are.equal(2, res.attempts)
      end)
    end

    it("waiting between attempts suspends only that session", function()
      local r = retrying({ attempts = 2, on = { "503" }, backoff_ms = 10, max_backoff_ms = 5000 })
      helper.start(r, "waits", [[
        local label, res = api_node{ integration = "shop", path = "/retry-after", results = { "200" } }
        say("waits done " .. res.attempts)
      ]])
      helper.start(r, "busy", [[
        sleep(100)
        for i = 1, 3 do
          local label = api_node{ integration = "shop", path = "/echo", results = { "200" } }
          say("busy " .. i .. " " .. label)
        end
      ]])
      assert.is_true(r:run(10000))
      local order = {}
      for _, e in ipairs(r:events()) do
        if e.type == "say" then order[#order + 1] = e.text end
      end
      assert.are.same({ "busy 1 200", "busy 2 200", "busy 3 200", "waits done 2" }, order)
    end)
  end)
end)
