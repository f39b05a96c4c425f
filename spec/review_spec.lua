-- Review findings (issues 13 and 14): each a defect found by probing.
local helper = require "spec.helper"
local socket_ok, socket = pcall(require, "socket")

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
end)
