-- Request building alone (README: Layout and dependencies): runtime/lib/request.c
-- turns an api_node spec into a request that a call then sends. Through
-- require("flowrun.runtime").request(spec) a tool sees that request, as
-- api_node would send it, and nothing is sent: the mock the integration
-- points at is asked nothing.
local helper = require "spec.helper"

describe("request building alone", function()
  local dir, ig_file, mock

  setup(function()
    dir = helper.tmpdir()
    mock = helper.mock({ { path = "/v1/orders/1", body = "{}" } })
    ig_file = helper.write(dir .. "/integrations.lua", ([[
return { shop = { base_url = %q, timeout_ms = 7000,
  headers = { Authorization = "Bearer " .. env("SHOP_TOKEN") },
  endpoints = { get = { method = "GET", path = "/orders/{id}" } } } }
]]):format(mock.url .. "/v1?k=1"))
  end)

  teardown(function()
    mock:stop()
    helper.cleanup()
  end)

  -- runs body (Lua that builds requests and says lines) as a flow
  local function run(body)
    local path = helper.flow([[
local request = require("flowrun.runtime").request
local function line(q)
  say(q.integration .. " " .. q.method .. " " .. q.url)
  for _, h in ipairs(q.headers) do say("  " .. h) end
  say("  body=" .. tostring(q.body) .. " timeout_ms=" .. q.timeout_ms .. " retry_ok=" .. tostring(q.retry_ok)
      .. (q.fail and (" fail=" .. q.fail .. ": " .. q.fail_message) or ""))
end
]] .. body, dir, "req_" .. math.random(1e9) .. ".lua")
    return helper.cli{ args = { "run", "--allow", "package", "-I", ig_file, path },
                       env = { SHOP_TOKEN = "s3cr3t-token" } }
  end

  it("gives the URL, headers, body, timeout and retry policy api_node would send, and sends nothing", function()
    local r = run([[
line(request{ endpoint = "shop.get", params = { id = "a b" }, query = { z = "1", a = { "x", "y" } },
              results = { "200" } })
line(request{ integration = "shop", method = "POST", path = "/orders", body = { n = 1 },
              timeout_ms = 500, results = { "201" } })
line(request{ integration = "shop", method = "PATCH", path = "orders/1", body = "<a/>",
              headers = { ["Content-Type"] = "application/xml", ["Idempotency-Key"] = "k1" },
              results = { "200" } })
]])
    assert.are.equal(0, r.code, r.stderr)
    local u = mock.url
    assert.are.equal(table.concat({
      "shop GET " .. u .. "/v1/orders/a%20b?k=1&a=x&a=y&z=1",
      "  Authorization: Bearer ***",
      "  Expect:",
      "  body=nil timeout_ms=7000 retry_ok=true",
      "shop POST " .. u .. "/v1/orders?k=1",
      "  Authorization: Bearer ***",
      "  Expect:",
      "  Content-Type: application/json",
      '  body={"n":1} timeout_ms=500 retry_ok=false',
      "shop PATCH " .. u .. "/v1/orders/1?k=1",
    }, "\n"), table.concat(helper.lines(r.stdout), "\n", 1, 10))
    local rest = table.concat(helper.lines(r.stdout), "\n", 11)
    assert.matches("  Content%-Type: application/xml", rest)
    assert.matches("  Idempotency%-Key: k1", rest)
    assert.matches("  body=<a/> timeout_ms=7000 retry_ok=true$", rest)   -- a key makes PATCH safe to retry
    assert.is_nil(r.stdout:find("s3cr3t", 1, true))
    assert.are.equal(0, mock:count("-> "))
  end)

  it("says when the request would not be sent, and raises on a misuse as api_node does", function()
    local r = run([[
line(request{ integration = "shop", path = "/x", headers = { Authorization = "Basic eA==" }, results = { "200" } })
local big = request{ integration = "shop", path = "/x?" .. string.rep("q", 900001), results = { "200" } }
say(big.fail .. ": " .. big.fail_message .. " (" .. #big.url .. " bytes of URL)")
say(select(2, pcall(request, { integration = "shop", path = "/x", colour = "red", results = { "200" } })))
say(select(2, pcall(request, { integration = "nope", path = "/x", results = { "200" } })))
say(select(2, pcall(request, { integration = "shop", method = "GET", path = "/x", body = "b", results = { "200" } })))
]])
    assert.are.equal(0, r.code, r.stderr)
    local lines = helper.lines(r.stdout)
    assert.are.equal("  body=nil timeout_ms=7000 retry_ok=true fail=header_conflict: "
                     .. "header 'Authorization' differs between the node and integration 'shop'", lines[4])
    assert.matches("^too_large: the URL and headers take more than 900000 bytes, .* %(9000%d%d bytes of URL%)$",
                   lines[5])
    assert.are.same({ "api_node: unknown field 'colour'", "api_node: unknown integration 'nope'",
                      "api_node: a GET request cannot have a body" },
                    { lines[#lines - 2], lines[#lines - 1], lines[#lines] })
    assert.are.equal(0, mock:count("-> "))
  end)
end)
