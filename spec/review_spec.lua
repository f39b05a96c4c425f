-- Review findings (issues 13 and 14): each a defect found by probing.
local helper = require "spec.helper"
local socket_ok, socket = pcall(require, "socket")
local function test_cli(args, cwd) return helper.cli({ args = { "test", table.unpack(args) }, cwd = cwd }) end

local function now_ms()
  if socket_ok then return socket.gettime() * 1000 end
  return os.time() * 1000
end

describe("review", function()
  teardown(helper.cleanup)

  it("deadline_ms bounds a call's wait for its OAuth2 token too", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", delay_ms = 1500, json = { access_token = "tok-1", expires_in = 3600 } },
      { path = "/v1/me", json = { ok = true } },
    })
    local rt = helper.runtime({ api = { base_url = mock.url .. "/v1", deadline_ms = 300,
      auth = { oauth2 = { token_url = mock.url .. "/token", client_id = "app", client_secret = "s3cret" } } } })
    local t0 = now_ms()
    local label, res = rt:api_node{ integration = "api", path = "/me", results = { "200" } }
    local took = now_ms() - t0
    assert.are.equal("timeout", label)
    assert.are.equal("deadline", res.reason)
    assert.are.equal("deadline_ms (300) of the call passed while it waited for the OAuth2 token of integration 'api'", res.error)
    assert.is_true(took < 1000, "took " .. took)
  end)

  it("refuses an access_token with an escaped NUL rather than sending the part before it", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", headers = { ["Content-Type"] = "application/json" },
        body = '{"access_token":"tok\\u0000-rest","expires_in":3600}' },
      { path = "/v1/me", echo = true },
    })
    local rt = helper.runtime({ api = { base_url = mock.url .. "/v1",
      auth = { oauth2 = { token_url = mock.url .. "/token", client_id = "app", client_secret = "s3cret" } } } })
    local label, res = rt:api_node{ integration = "api", path = "/me", results = { "200" } }
    assert.are.equal("error", label)
    assert.are.equal("auth", res.reason)
    assert.are.equal("OAuth2 token request to " .. mock.url .. "/token failed: status 200 without an "
                     .. "access_token a header can carry", res.error)
    assert.are.equal(0, mock:count("GET /v1/me"))
  end)

  it("the resend after a 401 takes its turn under rate_limit like any attempt", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", json = { access_token = "tok-1", expires_in = 3600 } },
      { path = "/v1/me", status = 401, times = 1, json = { error = "invalid_token" } },
      { path = "/v1/me", json = { ok = true } },
    })
    local rt = helper.runtime({ api = { base_url = mock.url .. "/v1", queue_timeout_ms = 5000,
      rate_limit = { requests = 1, per_ms = 1500 },
      auth = { oauth2 = { token_url = mock.url .. "/token", client_id = "app", client_secret = "s3cret" } } } })
    local t0 = now_ms()
    local label = rt:api_node{ integration = "api", path = "/me", results = { "200" } }
    local took = now_ms() - t0
    assert.are.equal("200", label)
    assert.are.equal(1, mock:count("GET /v1/me -> 401"))
    assert.are.equal(1, mock:count("GET /v1/me -> 200"))
    assert.is_true(took >= 1400, "the second request went " .. took .. " ms after the first")
  end)

  it("the 401 that is sent again with a new token has its own trace record", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", json = { access_token = "tok-1", expires_in = 3600 } },
      { path = "/v1/me", status = 401, times = 1, json = { error = "invalid_token" } },
      { path = "/v1/me", json = { ok = true } },
    })
    local rt = helper.runtime({ api = { base_url = mock.url .. "/v1",
      auth = { oauth2 = { token_url = mock.url .. "/token", client_id = "app", client_secret = "s3cret" } } } })
    helper.start(rt, "s", [[ say((api_node{ integration = "api", path = "/me", results = { "200" } })) ]])
    assert.is_true(rt:run(5000))
    local got = {}
    for _, e in ipairs(helper.events(rt:events(), "trace")) do
      got[#got + 1] = ("%s %s %d %s"):format(e.status, e.label, e.attempt, tostring(e.final))
    end
    assert.are.same({ "401 other 1 false", "200 200 2 true" }, got)
  end)

  it("a retry paused by another call's 429 waits within queue_timeout_ms, not for the whole Retry-After", function()
    local mock = helper.mock({
      { path = "/v1/a", status = 503, times = 1, json = { busy = true } },
      { path = "/v1/a", json = { ok = true } },
      { path = "/v1/b", status = 429, delay_ms = 100, headers = { ["Retry-After"] = "30" }, json = { slow = "down" } },
    })
    local rt = helper.runtime({ api = { base_url = mock.url .. "/v1", queue_timeout_ms = 500,
      retry = { attempts = 2, backoff_ms = 400, on = { "503" } } } })
    local flow = [[
      local path = ...
      local label, res = api_node{ integration = "api", path = path, results = { "200" } }
      say(path .. " " .. label .. " " .. tostring(res.reason) .. " " .. tostring(res.error))
    ]]
    local t0 = now_ms()
    helper.start(rt, "a", flow, "/a")
    helper.start(rt, "b", flow, "/b")
    assert.is_true(rt:run(10000))
    local took = now_ms() - t0
    local said = helper.says(rt:events())
    table.sort(said)
    assert.are.equal("/a max-connection rate_limit integration 'api' is paused by a 429's Retry-After for", said[1]:sub(1, 83))
    assert.matches("ms more, past queue_timeout_ms$", said[1])
    assert.are.equal("/b other nil nil", said[2])
    assert.is_true(took < 3000, "took " .. took)
  end)
end)

describe("review: flowrun test --record", function()
  teardown(helper.cleanup)

  it("keeps an api_key sent in the query out of the recorded stubs", function()
    local dir = helper.tmpdir()
    for _, f in ipairs({ "order_status.lua", "order_status_test.lua", "greeting_test_lines.lua" }) do
      helper.write(dir .. "/" .. f, helper.read("scripts/demo/" .. f))
    end
    local mock = helper.mock({
      { method = "GET", path = "/v1/orders/42", status = 200, json = { status = "shipped", eta = "tomorrow" } },
      { method = "GET", path = "/v1/orders/{id}", status = 404, json = { error = "no such order" } },
    })
    helper.write(dir .. "/integrations.lua", ([[return { shop = { base_url = %q, timeout_ms = 1000,
      auth = { api_key = { query = "key", value = "k3y-V4LUE-77" } } } }]]):format(mock.url .. "/v1"))
    local r = test_cli({ "--live", "--record", "shop_recorded.lua", "order_status_test.lua" }, dir)
    mock:stop()
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    local rec = helper.read(dir .. "/shop_recorded.lua")
    assert.matches('stub { integration = "shop", method = "GET", path = "/orders/42",', rec, 1, true)
    assert.is_nil(rec:find("k3y-V4LUE-77", 1, true), rec)
    assert.is_nil(rec:find("query =", 1, true), rec)
    helper.write(dir .. "/rec_test.lua", [[
return {
  flow = "order_status.lua", integrations = "integrations.lua",
  stubs = recorded "shop_recorded.lua",
  test "shipped, from the recording" {
    include "greeting_test_lines.lua", user "42", label "200",
    bot "Order 42 is shipped; it arrives tomorrow.", bot "Your order number? (empty line to leave)",
    close(), bot "Bye!", done(),
  },
}
]])
    local offline = test_cli({ "rec_test.lua" }, dir)
    assert.are.equal(0, offline.code, offline.stdout)
  end)
end)
