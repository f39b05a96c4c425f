-- README: Multipart bodies, Compressed responses, Proxies, Client certificates.
-- Against real servers on 127.0.0.1: `flowrun mock` (its echo
-- parses a multipart body with libmicrohttpd's post processor; a gzip route
-- serves a gzip-encoded body), Debian's tinyproxy, and `openssl s_server
-- -Verify 1` for mutual TLS.
local helper = require "spec.helper"

describe("the wire", function()
  local mock, dir

  -- 1 000 bytes that gzip cannot shrink (no '{': the mock renders bodies)
  local noise = {}
  local x = 12345
  for i = 1, 1000 do
    x = (x * 1103515245 + 12345) % 2147483648
    local b = (x >> 16) % 256
    noise[i] = string.char(b == 123 and 124 or b)
  end
  noise = table.concat(noise)

  setup(function()
    mock = helper.mock({
      { path = "/echo", echo = true },
      { path = "/moved", status = 307, headers = { Location = "/echo" } },
      { path = "/flaky", status = 503, times = 1 },
      { path = "/flaky", echo = true },
      { path = "/gz", gzip = true, body = "hello, compressed world" },
      { path = "/exact", gzip = true, body = string.rep("b", 5000) },
      { path = "/noise", gzip = true, body = noise },
      { path = "/bomb", gzip = true, body = string.rep("a", 10 * 1024 * 1024) },
    })
    dir = helper.tmpdir()
  end)

  teardown(function() helper.cleanup() end)

  local function rt_with(ig)
    ig.base_url = ig.base_url or mock.url
    return helper.runtime({ api = ig })
  end

  local function call(rt, spec)
    spec.integration = spec.integration or "api"
    spec.results = spec.results or { "200" }
    return rt:api_node(spec)
  end

  describe("multipart", function()
    local parts = {
      { name = "title", value = "Quarterly report" },
      { name = "count", value = 42 },
      { name = "file", filename = "a.txt", content_type = "text/plain", data = "line 1\r\nline 2\0bytes\255" },
      { name = "blob", data = "no file name" },
    }
    local parsed = {
      { name = "title", data = "Quarterly report" },
      { name = "count", data = "42" },
      { name = "file", filename = "a.txt", content_type = "text/plain", data = "line 1\r\nline 2\0bytes\255" },
      { name = "blob", data = "no file name" },
    }

    it("sends fields and files that the server's multipart parser reads back", function()
      local rt = rt_with({})
      local label, res = call(rt, { method = "POST", path = "/echo", multipart = parts })
      assert.are.equal("200", label, res.error)
      assert.is_nil(res.json.multipart_error)
      assert.are.same(parsed, res.json.multipart)
      assert.matches("^multipart/form%-data; boundary=", res.json.headers["content-type"])
      assert.are.equal("POST", res.json.method)
      -- the kept connection and handle serve plain calls after it as before
      label, res = call(rt, { path = "/echo" })
      assert.are.same({ "200", "GET", "" }, { label, res.json.method, res.json.body })
      assert.is_nil(res.json.multipart)
      label, res = call(rt, { method = "POST", path = "/echo", body = { a = 1 } })
      assert.are.same({ "200", "POST", '{"a":1}', "application/json" },
                      { label, res.json.method, res.json.body, res.json.headers["content-type"] })
    end)

    it("a trace gives the call as a curl command line with -F, which curl sends alike", function()
      local rt = rt_with({})
      local mp = { { name = "title", value = 'say "hi"; \\o/' },
                   { name = "file", filename = 'a "b".txt', content_type = "text/plain", data = "x;y" } }
      call(rt, { method = "POST", path = "/echo", multipart = mp })
      local t = helper.events(rt:events(), "trace")[1]
      assert.are.equal("curl " .. mock.url .. "/echo \\\n"
        .. "  -H Expect: \\\n"
        .. [[  -F 'title="say \"hi\"; \\o/"' \]] .. "\n"
        .. [[  -F 'file="x;y";filename="a \"b\".txt";type=text/plain']], t.curl)
      if os.execute("command -v curl >/dev/null 2>&1") ~= true then return end
      local out = helper.sh("env -u LD_PRELOAD " .. t.curl .. " -s")   -- curl as a user runs it (not under SAN)
      local _, res = call(rt, { method = "POST", path = "/echo", multipart = mp })
      assert.are.same(res.json.multipart, require("cjson").decode(out).multipart)
    end)

    it("with PUT, and an integration's Content-Type left out (the boundary is libcurl's)", function()
      local rt = rt_with({ headers = { ["Content-Type"] = "application/json", ["X-Team"] = "a" } })
      local label, res = call(rt, { method = "PUT", path = "/echo", multipart = { parts[1] } })
      assert.are.equal("200", label, res.error)
      assert.are.equal("PUT", res.json.method)
      assert.are.equal("a", res.json.headers["x-team"])
      assert.matches("^multipart/form%-data; boundary=", res.json.headers["content-type"])
      assert.are.same({ parsed[1] }, res.json.multipart)
    end)

    it("sends the parts again after a 307 redirect and on a retry", function()
      local rt = rt_with({ follow_redirects = true })
      local label, res = call(rt, { method = "POST", path = "/moved", multipart = parts })
      assert.are.equal("200", label, res.error)
      assert.are.same(parsed, res.json.multipart)
      rt = rt_with({ retry = { attempts = 2, on = { "503" }, backoff_ms = 1 } })
      label, res = call(rt, { method = "POST", path = "/flaky", multipart = parts,
                              headers = { ["Idempotency-Key"] = "k-1" } })
      assert.are.equal("200", label, res.error)
      assert.are.equal(2, res.attempts)
      assert.are.same(parsed, res.json.multipart)
    end)

    it("a declarative flow's api step takes multipart, also as a function of the session", function()
      local ig_file = helper.integrations({ api = { base_url = mock.url } }, helper.tmpdir())
      local path = helper.flow([[
local flow = require("flowrun.flow")
return flow.define{ start = "send", steps = {
  send = flow.api{ integration = "api", method = "POST", path = "/echo", save = "res",
                   multipart = function(s) return { { name = "who", value = "s-" .. #s } } end,
                   on = { ["200"] = "done", other = "done", error = "done", timeout = "done",
                          ["max-connection"] = "done" } },
  done = flow.say{ text = function(s) return s.res.json.multipart[1].name .. "=" .. s.res.json.multipart[1].data end },
} }
]], helper.tmpdir())
      local r = helper.cli{ args = { "run", "-I", ig_file, path } }
      assert.are.equal("who=s-0\n", r.stdout, r.stderr)
      assert.are.equal(0, r.code)
    end)

    it("a host's transport (flowrun test) gets the call without a body", function()
      local seen
      local rt = helper.module().new{ integrations = { api = { base_url = "http://127.0.0.1:9" } }, virtual_clock = 0,
                                      transport = function(req) seen = req return { status = 201 } end }
      rt:start("s1", helper.flow([[
local label = api_node{ integration = "api", method = "POST", path = "/up", results = { "201" },
                        multipart = { { name = "f", filename = "a.txt", data = "abc" } } }
say(label)
]], helper.tmpdir()))
      assert.is_true(rt:run())
      local said
      for _, e in ipairs(rt:events()) do if e.type == "say" then said = e.text end end
      rt:close()
      assert.are.equal("201", said)
      assert.are.equal("POST", seen.method)
      assert.is_nil(seen.body)
    end)

    local S = 'integration = "api", results = { "200" }, '
    local cases = {
      { "multipart and body", 'method = "POST", path = "/echo", body = { a = 1 }, multipart = { { name = "a", value = "1" } }',
        "give multipart or body, not both" },
      { "multipart and form", 'method = "POST", path = "/echo", form = { a = 1 }, multipart = { { name = "a", value = "1" } }',
        "give multipart or form, not both" },
      { "multipart on GET", 'path = "/echo", multipart = { { name = "a", value = "1" } }',
        "a GET request cannot have a multipart" },
      { "a Content-Type header", 'method = "POST", path = "/echo", headers = { ["content-type"] = "text/plain" }, multipart = { { name = "a", value = "1" } }',
        "multipart sends its own Content-Type (multipart/form-data and its boundary): remove headers.content-type" },
      { "an empty array", 'method = "POST", path = "/echo", multipart = {}', "multipart: expected a non-empty array of parts" },
      { "a map", 'method = "POST", path = "/echo", multipart = { a = { name = "a", value = "1" } }',
        "multipart: expected a non-empty array of parts" },
      { "a string", 'method = "POST", path = "/echo", multipart = "a=1"',
        'multipart: expected an array of parts like { { name = "title", value = "x" } }, got string' },
      { "a part that is a string", 'method = "POST", path = "/echo", multipart = { "a" }',
        'multipart[1]: expected a table like { name = "file", filename = "a.txt", data = "..." }, got string' },
      { "a part without a name", 'method = "POST", path = "/echo", multipart = { { name = "a", value = "1" }, { value = "2" } }',
        "multipart[2]: name: a non-empty string is required" },
      { "value and data", 'method = "POST", path = "/echo", multipart = { { name = "a", value = "1", data = "2" } }',
        "multipart[1]: give value (a field) or data (a file), not both" },
      { "neither value nor data", 'method = "POST", path = "/echo", multipart = { { name = "a" } }',
        "multipart[1]: value (a field) or data (a file) is required" },
      { "a filename with value", 'method = "POST", path = "/echo", multipart = { { name = "a", value = "1", filename = "a.txt" } }',
        "multipart[1]: filename goes with data (a file), not value" },
      { "data that is a table", 'method = "POST", path = "/echo", multipart = { { name = "a", data = { 1 } } }',
        "multipart[1]: data: expected a string, got table" },
      { "an unknown key", 'method = "POST", path = "/echo", multipart = { { name = "a", value = "1", type = "x" } }',
        "multipart[1]: unknown key 'type' (a part has name, value or data, filename, content_type)" },
      { "a line break in content_type", 'method = "POST", path = "/echo", multipart = { { name = "a", data = "1", content_type = "text/plain\\r\\nX-Evil: 1" } }',
        "multipart[1]: content_type: control characters are not allowed" },
    }
    local ig_file
    for i, case in ipairs(cases) do
      it("refuses " .. case[1] .. ", and flowrun check finds it first", function()
        ig_file = ig_file or helper.integrations({ api = { base_url = mock.url } }, dir)
        local path = helper.flow("api_node{ " .. S .. case[2] .. " }\nsay('not reached')\n", dir, ("mp%d.lua"):format(i))
        local line = path .. ":1: api_node: " .. case[3]
        local checked = helper.cli{ args = { "check", "-I", ig_file, path } }
        assert.are.equal(line .. "\n1 file checked: 1 problem\n", checked.stdout)
        local r = helper.cli{ args = { "run", "-I", ig_file, path } }
        assert.are.equal(line, r.stderr:match("^[^\n]*"))
        assert.are.equal(1, r.code)
      end)
    end

    it("a part known only when the flow runs is not checked statically", function()
      ig_file = ig_file or helper.integrations({ api = { base_url = mock.url } }, dir)
      local path = helper.flow('local f = "x"\nlocal label, res = api_node{ ' .. S
        .. 'method = "POST", path = "/echo", multipart = { { name = "f", data = f } } }\nsay(label .. " " .. res.json.multipart[1].data)\n',
        dir, "mp-dynamic.lua")
      local checked = helper.cli{ args = { "check", "-I", ig_file, path } }
      assert.are.equal("1 file checked: no problems\n", checked.stdout)
      local r = helper.cli{ args = { "run", "-I", ig_file, path } }
      assert.are.equal("200 x\n", r.stdout, r.stderr)
    end)
  end)

  describe("compressed", function()
    it("without it, no Accept-Encoding is sent and a gzip body is left as it came", function()
      local rt = rt_with({})
      local _, res = call(rt, { path = "/echo" })
      assert.is_nil(res.json.headers["accept-encoding"])
      local label, gz = call(rt, { path = "/gz" })
      assert.are.equal("200", label)
      assert.are.equal("\31\139", gz.body:sub(1, 2))
    end)

    it("compressed = true asks for gzip and friends and decodes the body", function()
      local rt = rt_with({ compressed = true })
      local _, res = call(rt, { path = "/echo" })
      assert.matches("gzip", res.json.headers["accept-encoding"], 1, true)
      assert.matches("deflate", res.json.headers["accept-encoding"], 1, true)
      local label, gz = call(rt, { path = "/gz" })
      assert.are.equal("200", label, gz.error)
      assert.are.equal("hello, compressed world", gz.body)
      assert.are.equal("gzip", gz.headers["content-encoding"])
    end)

    it("max_response_bytes counts decoded bytes: a gzip bomb is error / too_large", function()
      local rt = rt_with({ compressed = true, max_response_bytes = 1024 * 1024 })
      local label, res = call(rt, { path = "/bomb" })
      assert.are.equal("error", label)
      assert.are.equal("too_large", res.reason)
      assert.are.equal("response body larger than max_response_bytes (1048576) of integration 'api'", res.error)
      assert.are.equal("", res.body)
    end)

    it("the cap is exact on the decoded size, whatever the encoded size", function()
      -- 5 000 bytes sent as ~40: at the cap it passes, one byte under it does not
      local label, res = call(rt_with({ compressed = true, max_response_bytes = 5000 }), { path = "/exact" })
      assert.are.equal("200", label, res.error)
      assert.are.equal(5000, #res.body)
      label, res = call(rt_with({ compressed = true, max_response_bytes = 4999 }), { path = "/exact" })
      assert.are.equal("error", label)
      assert.are.equal("too_large", res.reason)
      -- 1 000 bytes sent as more than 1 000 (Content-Length): the decoded 1 000 fit
      label, res = call(rt_with({ compressed = true, max_response_bytes = 1000 }), { path = "/noise" })
      assert.are.equal("200", label, res.error)
      assert.are.equal(noise, res.body)
      assert.is_true(tonumber(res.headers["content-length"]) > 1000)
    end)
  end)

  describe("proxies", function()
    local proxy
    local function through() return proxy:count("Request (file descriptor") end

    it("proxy sends every call through the proxy (its log shows them)", function()
      proxy = helper.tinyproxy()
      local rt = rt_with({ proxy = proxy.url })
      local before = through()
      for _ = 1, 2 do
        local label, res = call(rt, { path = "/echo" })
        assert.are.equal("200", label, res.error)
      end
      assert.are.equal(before + 2, through())
      assert.are.equal(2, proxy:count("GET " .. mock.url .. "/echo HTTP/1.1"))
    end)

    it("no_proxy lists the hosts reached directly", function()
      proxy = proxy or helper.tinyproxy()
      local before = through()
      local label, res = call(rt_with({ proxy = proxy.url, no_proxy = "localhost,127.0.0.1" }), { path = "/echo" })
      assert.are.equal("200", label, res.error)
      assert.are.equal(before, through())
    end)

    it("an https base_url goes through the proxy's CONNECT tunnel, TLS checked end to end", function()
      if not helper.have_openssl() then pending("needs the openssl command") return end
      proxy = proxy or helper.tinyproxy()
      local tls = helper.tls_server()
      local label, res = call(rt_with({ base_url = tls.url, ca_file = tls.ca_file, proxy = proxy.url }), { path = "/" })
      assert.are.equal("200", label, res.error)
      assert.are.equal(1, proxy:count("CONNECT 127.0.0.1:" .. tls.port .. " HTTP/1.1"))
      label, res = call(rt_with({ base_url = tls.url, proxy = proxy.url }), { path = "/" })   -- not trusted
      assert.are.same({ "error", "tls" }, { label, res.reason })
    end)

    it("a proxy that is down: error / refused", function()
      local label, res = call(rt_with({ proxy = "http://127.0.0.1:" .. helper.closed_port() }), { path = "/echo" })
      assert.are.equal("error", label)
      assert.are.equal("refused", res.reason)
    end)

    local flow = 'local label, res = api_node{ integration = "api", path = "/echo", results = { "200" } }\n'
      .. 'say(label .. " " .. tostring(res.reason))\n'

    it("the environment's http_proxy is ignored unless the integration says proxy = \"env\"", function()
      proxy = proxy or helper.tinyproxy()
      local down = "http://127.0.0.1:" .. helper.closed_port()
      local f = helper.flow(flow, dir, "env-proxy.lua")
      local plain = helper.integrations({ api = { base_url = mock.url } }, helper.tmpdir())
      local r = helper.cli{ args = { "run", "-I", plain, f },
                            env = { http_proxy = down, HTTPS_PROXY = down, ALL_PROXY = down, all_proxy = down } }
      assert.are.equal("200 nil\n", r.stdout, r.stderr)
      local before = through()
      local env = helper.integrations({ api = { base_url = mock.url, proxy = "env" } }, helper.tmpdir())
      r = helper.cli{ args = { "run", "-I", env, f }, env = { http_proxy = proxy.url, no_proxy = false, NO_PROXY = false } }
      assert.are.equal("200 nil\n", r.stdout, r.stderr)
      assert.are.equal(before + 1, through())
      r = helper.cli{ args = { "run", "-I", env, f }, env = { http_proxy = proxy.url, no_proxy = "127.0.0.1" } }
      assert.are.equal("200 nil\n", r.stdout, r.stderr)
      assert.are.equal(before + 1, through())
    end)
  end)

  describe("client certificates", function()
    local tls
    local function ask(ig)
      ig.base_url, ig.ca_file = tls.url, tls.ca_file
      return call(rt_with(ig), { path = "/" })
    end

    it("a server that asks for one: without cert_file error / tls, with it 200", function()
      if not helper.have_openssl() then pending("needs the openssl command") return end
      tls = helper.mtls_server()
      local label, res = ask({})
      assert.are.equal("error", label)
      assert.are.equal("tls", res.reason)
      label, res = ask({ cert_file = tls.client.cert, key_file = tls.client.key })
      assert.are.equal("200", label, res.error)
      assert.matches("Client certificate", res.body, 1, true)
    end)

    it("key_password opens an encrypted key; a wrong one is error / tls", function()
      if not helper.have_openssl() then pending("needs the openssl command") return end
      tls = tls or helper.mtls_server()
      local label, res = ask({ cert_file = tls.client.cert, key_file = tls.client.key_enc, key_password = tls.client.password })
      assert.are.equal("200", label, res.error)
      label, res = ask({ cert_file = tls.client.cert, key_file = tls.client.key_enc, key_password = "wrong" })
      assert.are.equal("error", label)
      assert.are.equal("tls", res.reason)
      label, res = ask({ cert_file = tls.client.cert, key_file = tls.client.key_enc })   -- no prompt
      assert.are.equal("error", label)
      assert.are.equal("tls", res.reason)
      label, res = ask({ cert_file = tls.client.cert .. ".missing", key_file = tls.client.key })
      assert.are.equal("error", label)
      assert.are.equal("tls", res.reason)
    end)
  end)

  describe("the integrations keys", function()
    local function load_error(ig)
      ig.base_url = ig.base_url or mock.url
      local file = helper.integrations({ api = ig })
      local ok, err = pcall(helper.module().new, { integrations = file })
      assert.is_false(ok, "the file loaded")
      return err, file
    end
    local cases = {
      { { compressed = "yes" }, "api.compressed: expected true or false, got string" },
      { { proxy = 8080 }, "api.proxy: expected a string, got number" },
      { { proxy = "ftp://127.0.0.1:21" }, 'api.proxy: expected a proxy URL like "http://HOST:PORT" (http, https, socks4, socks4a, socks5, socks5h) or "env"' },
      { { proxy = "not a url" }, 'api.proxy: expected a proxy URL like "http://HOST:PORT" (http, https, socks4, socks4a, socks5, socks5h) or "env"' },
      { { no_proxy = "127.0.0.1" }, "api.no_proxy: no proxy is set: give proxy too" },
      { { cert_file = true }, "api.cert_file: expected a string, got boolean" },
      { { key_file = "k.pem" }, "api.key_file: a key without its certificate: give cert_file too" },
      { { key_password = "p" }, "api.key_password: a password without a certificate: give cert_file too" },
    }
    for _, case in ipairs(cases) do
      it("names the file and key: " .. case[2], function()
        local err, file = load_error(case[1])
        assert.are.equal(file .. ": " .. case[2], err)
      end)
    end

    it("flowrun check takes a proxy from an env() it does not have", function()
      local file = helper.integrations([[
return { api = { base_url = "http://127.0.0.1:9", proxy = env("WIRE_SPEC_UNSET_PROXY") } }
]])
      local f = helper.flow('local label = api_node{ integration = "api", path = "/x", results = { "200" } }\nsay(label)\n')
      local r = helper.cli{ args = { "check", "-I", file, f }, env = { WIRE_SPEC_UNSET_PROXY = false } }
      assert.are.equal("1 file checked: no problems\n", r.stdout, r.stderr)
      assert.are.equal(0, r.code)
    end)

    it("shows in integrations() (the REPL's .integrations), the proxy's secrets hidden", function()
      local file = helper.integrations([[
return { api = { base_url = "http://127.0.0.1:9", compressed = true,
  proxy = "http://u:" .. env("WIRE_SPEC_PW", "pw-default") .. "@127.0.0.1:3128", no_proxy = "localhost",
  cert_file = "/c.pem", key_file = "/k.pem", key_password = "kp" } }
]])
      local r = helper.cli{ args = { "repl", "-I", file }, stdin = ".integrations\n", env = { WIRE_SPEC_PW = "hunter2" } }
      assert.matches("  wire: compressed; proxy http://u:***@127.0.0.1:3128 (no_proxy localhost); client certificate /c.pem (key /k.pem, with a password)",
                     r.stdout, 1, true)
      assert.is_nil(r.stdout:find("hunter2", 1, true))
    end)
  end)
end)
