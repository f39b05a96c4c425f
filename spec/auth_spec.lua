-- README: Integrations for real APIs: OAuth2 and API keys. Token endpoints
-- and APIs are `flowrun mock` routes on 127.0.0.1; the mock logs each
-- request on stderr ("POST /token -> 200"), which the specs count.
local helper = require "spec.helper"

local TOKEN = { access_token = "tok-AAA-1", token_type = "Bearer", expires_in = 3600 }

-- The Authorization header an echo route saw (any case of its name).
local FLOW = [[
local label, res = api_node{ integration = "api", path = "/me", results = { "200" } }
local auth = "-"
for k, v in pairs(res.json and res.json.headers or {}) do
  if k:lower() == "authorization" then auth = v end
end
say(label .. " " .. tostring(res.reason) .. " " .. tostring(auth == "Bearer tok-AAA-1"))
]]

-- An integrations table: api on mock's /v1, its oauth2 keys o (over the
-- defaults: mock's /token, client app / s3cret-client).
local function oauth(mock, o, extra)
  local t = { token_url = mock.url .. "/token", client_id = "app", client_secret = "s3cret-client" }
  for k, v in pairs(o or {}) do t[k] = v end
  local ig = { base_url = mock.url .. "/v1", auth = { oauth2 = t }, max_connections = 200 }
  for k, v in pairs(extra or {}) do ig[k] = v end
  return { api = ig }
end

-- The Authorization header of the echoed request in res.
local function authorization(res)
  for k, v in pairs(res.json and res.json.headers or {}) do
    if k:lower() == "authorization" then return v end
  end
end

local function me(rt, results)
  return rt:api_node{ integration = "api", path = "/me", results = results or { "200" } }
end

describe("auth: OAuth2 client credentials", function()
  teardown(helper.cleanup)

  it("100 sessions needing a token at once cause one token request; all carry it as Bearer", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", delay_ms = 300, json = TOKEN },
      { path = "/v1/me", echo = true },
    })
    local rt = helper.runtime(oauth(mock))
    for i = 1, 100 do helper.start(rt, "s" .. i, FLOW) end
    assert.is_true(rt:run(20000))
    local said = helper.says(rt:events())
    assert.are.equal(100, #said)
    for _, s in ipairs(said) do assert.are.equal("200 nil true", s) end
    assert.are.equal(1, mock:count("POST /token -> 200"))
    assert.are.equal(100, mock:count("GET /v1/me -> 200"))
    -- later calls use the token the runtime holds: no new request
    local label, res = me(rt)
    assert.are.equal("200", label)
    assert.are.equal("Bearer tok-AAA-1", authorization(res))
    assert.are.equal(1, mock:count("POST /token"))
  end)

  it("refreshes a token once its expires_in runs out, once for all the calls that need it", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", times = 1, json = { access_token = "tok-one", expires_in = 1 } },
      { method = "POST", path = "/token", json = { access_token = "tok-AAA-1", expires_in = 1 } },
      { path = "/v1/me", echo = true },
    })
    local rt = helper.runtime(oauth(mock))
    local _, res = me(rt)
    assert.are.equal("Bearer tok-one", authorization(res))
    _, res = me(rt)                     -- well within its second
    assert.are.equal("Bearer tok-one", authorization(res))
    assert.are.equal(1, mock:count("POST /token"))
    os.execute("sleep 1.1")
    for i = 1, 10 do helper.start(rt, "late" .. i, FLOW) end
    assert.is_true(rt:run(10000))
    local said = helper.says(rt:events())
    assert.are.equal(10, #said)
    for _, s in ipairs(said) do assert.are.equal("200 nil true", s) end
    assert.are.equal(2, mock:count("POST /token -> 200"))
  end)

  it("refreshes before the end: a token of expires_in 1 is not used in its last tenth", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", json = { access_token = "tok-AAA-1", expires_in = 1 } },
      { path = "/v1/me", echo = true },
    })
    local rt = helper.runtime(oauth(mock))
    me(rt)
    os.execute("sleep 0.93")            -- 930 ms of 1000: past 900
    me(rt)
    assert.are.equal(2, mock:count("POST /token"))
  end)

  it("a 401 from the API: one refresh, the call sent again once with the new token", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", times = 1, json = { access_token = "tok-revoked", expires_in = 3600 } },
      { method = "POST", path = "/token", json = TOKEN },
      { path = "/v1/me", status = 401, times = 1, json = { error = "invalid_token" } },
      { path = "/v1/me", echo = true },
    })
    local rt = helper.runtime(oauth(mock))
    local label, res = me(rt)
    assert.are.equal("200", label, res.error)
    assert.are.equal("Bearer tok-AAA-1", authorization(res))
    assert.are.equal(2, res.attempts)
    assert.are.equal(2, mock:count("POST /token -> 200"))
    assert.are.equal(1, mock:count("GET /v1/me -> 401"))
    assert.are.equal(1, mock:count("GET /v1/me -> 200"))
  end)

  it("401s to many calls at once: one token request, each call sent again once", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", times = 1, json = { access_token = "tok-revoked" } },
      { method = "POST", path = "/token", json = TOKEN },
      { path = "/v1/me", status = 401, times = 10, json = { error = "invalid_token" } },
      { path = "/v1/me", echo = true },
    })
    local rt = helper.runtime(oauth(mock))
    for i = 1, 10 do helper.start(rt, "s" .. i, FLOW) end
    assert.is_true(rt:run(10000))
    local said = helper.says(rt:events())
    assert.are.equal(10, #said)
    for _, s in ipairs(said) do assert.are.equal("200 nil true", s) end
    assert.are.equal(2, mock:count("POST /token -> 200"))
    assert.are.equal(10, mock:count("GET /v1/me -> 401"))
    assert.are.equal(10, mock:count("GET /v1/me -> 200"))
  end)

  it("calls queued for a slot when the token is replaced are sent with the new one", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", times = 1, json = { access_token = "tok-revoked" } },
      { method = "POST", path = "/token", json = TOKEN },
      { path = "/v1/me", status = 401, times = 1, delay_ms = 100, json = { error = "invalid_token" } },
      { path = "/v1/me", echo = true },
    })
    local rt = helper.runtime(oauth(mock, nil, { max_connections = 1, queue_timeout_ms = 5000 }))
    for i = 1, 3 do helper.start(rt, "s" .. i, FLOW) end
    assert.is_true(rt:run(10000))
    assert.are.same({ "200 nil true", "200 nil true", "200 nil true" }, helper.says(rt:events()))
    assert.are.equal(2, mock:count("POST /token -> 200"))
    assert.are.equal(1, mock:count("GET /v1/me -> 401"))
    assert.are.equal(3, mock:count("GET /v1/me -> 200"))
  end)

  it("a second 401 is the call's label: one refresh and one resend, no more", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", json = TOKEN },
      { path = "/v1/me", status = 401, json = { error = "invalid_token" } },
    })
    local rt = helper.runtime(oauth(mock, nil, { retry = { attempts = 3, on = { "401" }, backoff_ms = 0 } }))
    local label, res = me(rt, { "200", "401" })
    assert.are.equal("401", label)
    assert.are.equal(4, res.attempts)   -- the resend does not take one of retry.attempts
    assert.are.equal(2, mock:count("POST /token -> 200"))
    assert.are.equal(4, mock:count("GET /v1/me -> 401"))
  end)

  it("a token endpoint that refuses: label error, reason auth, its status and error in res.error", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", status = 401, json = { error = "invalid_client" } },
      { path = "/v1/me", echo = true },
    })
    local rt = helper.runtime(oauth(mock))
    for i = 1, 5 do helper.start(rt, "s" .. i, FLOW) end
    assert.is_true(rt:run(10000))
    local said = helper.says(rt:events())
    assert.are.same({ "error auth false", "error auth false", "error auth false", "error auth false",
                      "error auth false" }, said)
    assert.are.equal(1, mock:count("POST /token -> 401"))
    local label, res = me(rt)         -- a failure is not kept: the next call asks again
    assert.are.equal("error", label)
    assert.are.equal("auth", res.reason)
    assert.is_nil(res.status)
    assert.are.equal("OAuth2 token request to " .. mock.url .. "/token failed: status 401 (invalid_client)",
                     res.error)
    assert.are.equal(2, mock:count("POST /token -> 401"))
    assert.are.equal(0, mock:count("/v1/me"))
  end)

  it("the token request has the integration's timeout_ms and is not retried", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", times = 1, delay_ms = 1500, json = TOKEN },
      { method = "POST", path = "/token", status = 503, json = { error = "temporarily_unavailable" } },
      { path = "/v1/me", echo = true },
    })
    local rt = helper.runtime(oauth(mock, nil, { timeout_ms = 300, retry = { attempts = 3, on = { "503", "timeout" },
                                                                            backoff_ms = 0 } }))
    local label, res = me(rt)
    assert.are.equal("error", label)
    assert.are.equal("auth", res.reason)
    assert.matches("^OAuth2 token request to .*/token failed: Operation timed out after", res.error)
    label, res = me(rt)
    assert.are.equal("OAuth2 token request to " .. mock.url .. "/token failed: status 503 (temporarily_unavailable)",
                     res.error)
    assert.are.equal(1, mock:count("POST /token -> 503"))
  end)

  it("the token request has the integration's TLS settings (ca_file)", function()
    if not helper.have_openssl() then pending("needs the openssl command") return end
    local tls = helper.tls_server()
    local mock = helper.mock({ { path = "/v1/me", echo = true } })
    local rt = helper.runtime(oauth(mock, { token_url = tls.url .. "/token" }))
    local label, res = me(rt)
    assert.are.equal("auth", res.reason)
    assert.matches("^OAuth2 token request to https://[%d.]+:%d+/token failed: .*certificate", res.error)
    rt = helper.runtime(oauth(mock, { token_url = tls.url .. "/token" }, { ca_file = tls.ca_file, timeout_ms = 800 }))
    label, res = me(rt)                 -- through TLS now: s_server -www never answers a POST
    assert.are.equal("error", label)
    assert.matches("^OAuth2 token request to https://[%d.]+:%d+/token failed: Operation timed out after", res.error)
    assert.not_matches("certificate", res.error)
  end)

  it("a token endpoint that is down, or answers without a token: error / auth", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", json = { token_type = "Bearer" } },
      { path = "/v1/me", echo = true },
    })
    local rt = helper.runtime(oauth(mock, { token_url = "http://127.0.0.1:" .. helper.closed_port() .. "/token" }))
    local label, res = me(rt)
    assert.are.equal("error", label)
    assert.are.equal("auth", res.reason)
    assert.matches("^OAuth2 token request to http://[%d.]+:%d+/token failed: .*onnect", res.error)
    rt = helper.runtime(oauth(mock))
    label, res = me(rt)
    assert.are.equal("auth", res.reason)
    assert.are.equal("OAuth2 token request to " .. mock.url .. "/token failed: status 200 without an "
                     .. "access_token a header can carry", res.error)
  end)

  it("a node that sets Authorization itself: header_conflict, nothing sent", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", json = TOKEN },
      { path = "/v1/me", echo = true },
    })
    local rt = helper.runtime(oauth(mock))
    local label, res = rt:api_node{ integration = "api", path = "/me", headers = { Authorization = "Bearer mine" },
                                    results = { "200" } }
    assert.are.equal("error", label)
    assert.are.equal("header_conflict", res.reason)
    assert.are.equal(0, mock:count("POST /token"))
    assert.are.equal(0, mock:count("/v1/me"))
  end)
end)

describe("auth: the token request", function()
  local flowrun
  setup(function() flowrun = helper.module() end)
  teardown(helper.cleanup)

  -- Runs one call on a virtual clock; the transport answers the token
  -- request with token(req) and the API with 200 or 401 (api(req)).
  local function run(o, token, api, calls)
    local seen = {}
    local ig = { api = { base_url = "http://127.0.0.1:9/v1",
                         auth = { oauth2 = o } } }
    local rt = flowrun.new{ integrations = helper.integrations(ig), virtual_clock = 1767225600000,
                            transport = function(req)
                              seen[#seen + 1] = req
                              if req.url:find("/token", 1, true) then return token(req) end
                              return api and api(req) or { status = 200, json = { ok = true } }
                            end }
    for i = 1, calls or 1 do
      helper.start(rt, "s" .. i, [[
        local label, res = api_node{ integration = "api", path = "/me", results = { "200" } }
        say(label .. " " .. tostring(res.reason) .. " " .. tostring(res.attempts))
      ]])
    end
    assert.is_true(rt:run())
    local said = helper.says(rt:events())
    rt:close()
    return seen, said
  end

  it("goes through the host's transport: client credentials, scope, audience, Basic client auth", function()
    local seen, said = run({ token_url = "http://127.0.0.1:9/oauth/token", client_id = "my app",
                             client_secret = "s3cret:x", scope = "read write", audience = "https://127.0.0.1/api" },
                           function() return { status = 200, json = TOKEN } end, nil, 3)
    assert.are.same({ "200 nil 1", "200 nil 1", "200 nil 1" }, said)
    assert.are.equal(4, #seen)
    local t = seen[1]
    assert.are.equal("POST", t.method)
    assert.are.equal("http://127.0.0.1:9/oauth/token", t.url)
    assert.is_nil(t.session)
    assert.are.equal("application/x-www-form-urlencoded", t.headers["content-type"])
    -- RFC 6749 2.3.1: "my%20app:s3cret%3Ax", base64
    assert.are.equal("Basic bXklMjBhcHA6czNjcmV0JTNBeA==", t.headers.authorization)
    assert.are.equal("grant_type=client_credentials&scope=read%20write&audience=https%3A%2F%2F127.0.0.1%2Fapi", t.body)
    for i = 2, 4 do assert.are.equal("Bearer tok-AAA-1", seen[i].headers.authorization) end
  end)

  it("client_auth = \"body\" puts client_id and client_secret in the form", function()
    local seen = run({ token_url = "http://127.0.0.1:9/token", client_id = "app", client_secret = "pw",
                       client_auth = "body" },
                     function() return { status = 200, json = TOKEN } end)
    assert.is_nil(seen[1].headers.authorization)
    assert.are.equal("grant_type=client_credentials&client_id=app&client_secret=pw", seen[1].body)
  end)

  it("refresh_token: the refresh_token grant, and a rotated refresh token is used next", function()
    local n = 0
    local seen, said = run({ token_url = "http://127.0.0.1:9/token", client_id = "app", refresh_token = "r-first" },
                           function()
                             n = n + 1
                             return { status = 200, json = { access_token = "tok-" .. n, refresh_token = "r-next" .. n } }
                           end,
                           function(req)
                             return { status = req.headers.authorization == "Bearer tok-1" and 401 or 200 }
                           end)
    assert.are.same({ "200 nil 2" }, said)
    assert.are.equal("grant_type=refresh_token&refresh_token=r-first&client_id=app", seen[1].body)
    assert.are.equal("grant_type=refresh_token&refresh_token=r-next1&client_id=app", seen[3].body)
    assert.are.equal("Bearer tok-2", seen[4].headers.authorization)
  end)

  it("a token of expires_in 0 is used by the calls that waited for it, then fetched again", function()
    local n = 0
    local seen, said = run({ token_url = "http://127.0.0.1:9/token", client_id = "app", client_secret = "pw-1234" },
                           function()
                             n = n + 1
                             return { status = 200, json = { access_token = "t-" .. n, expires_in = 0 } }
                           end, nil, 2)
    assert.are.same({ "200 nil 1", "200 nil 1" }, said)
    assert.are.equal(1, n)              -- both sessions waited for the one request
    assert.are.same({ "Bearer t-1", "Bearer t-1" }, { seen[2].headers.authorization, seen[3].headers.authorization })
    local ig = { api = { base_url = "http://127.0.0.1:9/v1", auth = { oauth2 = {
      token_url = "http://127.0.0.1:9/token", client_id = "app", client_secret = "pw-1234" } } } }
    local rt = flowrun.new{ integrations = helper.integrations(ig), virtual_clock = 1767225600000,
                            transport = function(req)
                              if not req.url:find("/token", 1, true) then return { status = 200 } end
                              n = n + 1
                              return { status = 200, json = { access_token = "t-" .. n, expires_in = "0" } }
                            end }
    helper.start(rt, "s", [[
      api_node{ integration = "api", path = "/me", results = { "200" } }
      api_node{ integration = "api", path = "/me", results = { "200" } }
    ]])
    assert.is_true(rt:run())
    rt:close()
    assert.are.equal(3, n)              -- the next call fetches again
  end)

  it("hides the token in use and the one given up last, not every token it ever had", function()
    local n = 0
    local ig = { api = { base_url = "http://127.0.0.1:9/v1", auth = { oauth2 = {
      token_url = "http://127.0.0.1:9/token", client_id = "app", client_secret = "pw-1234" } } } }
    local rt = flowrun.new{ integrations = helper.integrations(ig), virtual_clock = 1767225600000,
                            transport = function(req)
                              if not req.url:find("/token", 1, true) then return { status = 200 } end
                              n = n + 1
                              return { status = 200, json = { access_token = "token-number-" .. n, expires_in = 0 } }
                            end }
    -- four calls, four tokens (expires_in 0); then what the flow says of each
    helper.start(rt, "s", [[
      for _ = 1, 4 do api_node{ integration = "api", path = "/me", results = { "200" } } end
      say("token-number-1 token-number-2 token-number-3 token-number-4")
    ]])
    assert.is_true(rt:run())
    assert.are.equal(4, n)
    assert.are.same({ "token-number-1 token-number-2 *** ***" }, helper.says(rt:events()))
    rt:close()
  end)

  it("a token_type other than Bearer: error / auth", function()
    local _, said = run({ token_url = "http://127.0.0.1:9/token", client_id = "app", client_secret = "pw-1234" },
                        function() return { status = 200, json = { access_token = "t-9", token_type = "mac" } } end)
    assert.are.same({ "error auth 0" }, said)   -- nothing sent: no attempt
  end)

  it("expires_in counts on the runtime's clock (the virtual one here)", function()
    local n, sent = 0, {}
    local ig = { api = { base_url = "http://127.0.0.1:9/v1", auth = { oauth2 = {
      token_url = "http://127.0.0.1:9/token", client_id = "app", client_secret = "pw" } } } }
    local rt = flowrun.new{ integrations = helper.integrations(ig), virtual_clock = 1767225600000,
                            transport = function(req)
                              if req.url:find("/token", 1, true) then
                                n = n + 1
                                return { status = 200, json = { access_token = "tok-" .. n, expires_in = "60" } }
                              end
                              sent[#sent + 1] = req.headers.authorization
                              return { status = 200 }
                            end }
    helper.start(rt, "s", [[
      local ok = api_node{ integration = "api", path = "/me", results = { "200" } }
      sleep(53900)
      api_node{ integration = "api", path = "/me", results = { "200" } }
      sleep(200)
      api_node{ integration = "api", path = "/me", results = { "200" } }
    ]])
    assert.is_true(rt:run())
    rt:close()
    assert.are.equal(2, n)              -- 60 s, replaced in its last 6: after 54 s
    assert.are.same({ "Bearer tok-1", "Bearer tok-1", "Bearer tok-2" }, sent)
  end)
end)

describe("auth: durable sessions", function()
  teardown(helper.cleanup)

  it("a replayed call sends nothing and needs no token; a new process fetches its own", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", json = TOKEN },
      { path = "/v1/me", echo = true },
    })
    local dir = helper.tmpdir()
    local ifile = helper.integrations(oauth(mock), dir)
    local flow = helper.flow([[
      local label = api_node{ integration = "api", path = "/me", results = { "200" } }
      local more = ask("more?")
      local label2 = api_node{ integration = "api", path = "/me", results = { "200" } }
      say(label .. " " .. label2 .. " " .. more)
    ]], dir)
    local store = dir .. "/s.db"
    local r1 = helper.store_host(store, ifile, flow, '{"session":"u1","text":"x","n":1}\n')
    assert.are.equal(0, r1.code, r1.stderr)
    assert.matches('"ask":"more?"', r1.stdout, 1, true)
    assert.are.equal(1, mock:count("POST /token"))
    assert.are.equal(1, mock:count("GET /v1/me"))
    local r2 = helper.store_host(store, ifile, flow, '{"session":"u1","text":"go","n":2}\n')
    assert.are.equal(0, r2.code, r2.stderr)
    assert.matches('"say":"200 200 go"', r2.stdout, 1, true)
    assert.are.equal(2, mock:count("GET /v1/me"))      -- the first call replayed, not sent
    assert.are.equal(2, mock:count("POST /token"))     -- a new process: a new token, for the live call
  end)
end)

describe("auth: flowrun test", function()
  teardown(helper.cleanup)

  it("a suite's stub answers the token request, by the token URL's path", function()
    local dir = helper.tmpdir()
    helper.integrations({ crm = { base_url = "http://127.0.0.1:9/v2", auth = { oauth2 = {
      token_url = "http://127.0.0.1:9/oauth/token", client_id = "app", client_secret = "pw-123456" } } } }, dir)
    helper.flow([[
      local label, res = api_node{ integration = "crm", path = "/me", results = { "200" } }
      say(label .. " " .. tostring(res.reason))
    ]], dir)
    local test = [[
      return {
        flow = "flow.lua", integrations = "integrations.lua",
        stubs = {
          TOKEN
          stub { integration = "crm", path = "/me", headers = { Authorization = "Bearer t-1" },
                 reply = { status = 200 } },
        },
        test "a call with a token" { bot "200 nil", done() },
      }
    ]]
    local stub = [[stub { method = "POST", path = "/oauth/token",
                          reply = { status = 200, json = { access_token = "t-1", expires_in = 3600 } } },]]
    local file = helper.write(dir .. "/flow_test.lua", (test:gsub("TOKEN", stub)))
    local r = helper.cli{ args = { "test", file } }
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("1 passed, 0 failed", r.stdout, 1, true)
    helper.write(file, (test:gsub("TOKEN", "")))
    r = helper.cli{ args = { "test", file } }
    assert.are.equal(1, r.code)
    assert.matches('expected the bot to say "200 nil", it said "error auth"', r.stdout, 1, true)
  end)
end)

describe("auth: the token is a secret", function()
  teardown(helper.cleanup)

  it("never shows in --trace, --trace-json, res.url, res.error or say()", function()
    local mock = helper.mock({
      { method = "POST", path = "/token", json = TOKEN },
      { path = "/v1/me", echo = true },
      { path = "/v1/denied", status = 403, json = { error = "no" } },
    })
    local dir = helper.tmpdir()
    local ig = helper.integrations(oauth(mock, { client_secret = helper.code('env("CLIENT_SECRET")') }), dir)
    local flow = helper.flow([[
      local label, res = api_node{ integration = "api", path = "/me", results = { "200" } }
      say(res.json.body)
      for k, v in pairs(res.json.headers) do if k:lower() == "authorization" then say("auth: " .. v) end end
      say(res.url)
      label, res = api_node{ integration = "api", path = "/denied", results = { "200" } }
      say(label .. " " .. tostring(res.status))
    ]], dir)
    local r = helper.cli{ args = { "run", "-I", ig, "--trace", "--trace-json", dir .. "/trace.jsonl", flow },
                          env = { CLIENT_SECRET = "s3cret-client" } }
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("auth: Bearer ***", r.stdout, 1, true)
    assert.matches("other 403", r.stdout, 1, true)
    local json = helper.read(dir .. "/trace.jsonl")
    for _, text in ipairs({ r.stdout, r.stderr, json }) do
      assert.not_matches("tok-AAA", text, 1, true)
      assert.not_matches("s3cret", text, 1, true)
    end
    assert.are.equal(2, #helper.lines(r.stderr))   -- a trace line per call; none for the token request
  end)

  it("the REPL's .integrations shows the oauth2 keys, never the secrets", function()
    local mock = helper.mock({ { method = "POST", path = "/token", json = TOKEN }, { path = "/v1/me", echo = true } })
    local ig = helper.integrations(oauth(mock, { scope = "read", refresh_token = "r-secret-1" }))
    local r = helper.cli{ args = { "repl", "-I", ig },
                          stdin = ".integrations\napi_node{ integration = 'api', path = '/me', results = { '200' } }\n.integrations\n" }
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("auth: oauth2 " .. mock.url .. "/token, client_id app, refresh_token grant, scope read; token: none",
                   r.stdout, 1, true)
    assert.matches("refresh_token grant, scope read; token: fresh", r.stdout, 1, true)
    assert.not_matches("r-secret", r.stdout, 1, true)
    assert.not_matches("s3cret", r.stdout, 1, true)
    assert.not_matches("tok-AAA", r.stdout, 1, true)
  end)

  it("the REPL's .integrations says when the token is due", function()
    local mock = helper.mock({ { method = "POST", path = "/token", json = { access_token = "tok-x", expires_in = 1 } },
                               { path = "/v1/me", echo = true } })
    local ig = helper.integrations(oauth(mock))
    local r = helper.cli{ args = { "repl", "-I", ig },
                          stdin = "api_node{ integration = 'api', path = '/me', results = { '200' } }\n"
                                  .. ".integrations\nsleep(1000)\n.integrations\n" }
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("client credentials; token: fresh\n.*client credentials; token: expiring\n", r.stdout)
  end)
end)

describe("auth: API keys", function()
  local mock
  setup(function()
    mock = helper.mock({ { path = "/v1/me", echo = true } })
  end)
  teardown(helper.cleanup)

  it("in a header: sent on every call, a secret", function()
    local rt = helper.runtime({ api = { base_url = mock.url .. "/v1",
                                        auth = { api_key = { header = "X-Api-Key", value = "key-2468-abcd" } } } })
    local label, res = me(rt)
    assert.are.equal("200", label)
    local got
    for k, v in pairs(res.json.headers) do if k:lower() == "x-api-key" then got = v end end
    assert.are.equal("key-2468-abcd", got)
    label, res = rt:api_node{ integration = "api", path = "/me", headers = { ["X-Api-Key"] = "other" },
                              results = { "200" } }
    assert.are.equal("header_conflict", res.reason)
  end)

  it("in the query, not read through env(): a secret all the same", function()
    local rt = helper.runtime({ api = { base_url = mock.url .. "/v1",
                                        auth = { api_key = { query = "key", value = "lit-key-5555" } } } })
    local label, res = me(rt)
    assert.are.equal("200", label)
    assert.are.equal("lit-key-5555", res.json.args.key)
    assert.are.equal(mock.url .. "/v1/me?key=***", res.url)
  end)

  it("in the query: sent on every call, *** in res.url, traces and say()", function()
    local dir = helper.tmpdir()
    local ig = helper.integrations({ api = { base_url = mock.url .. "/v1", query = { v = "2" },
      auth = { api_key = { query = "api key", value = helper.code('env("API_KEY")') } } } }, dir)
    local flow = helper.flow([[
      local label, res = api_node{ integration = "api", path = "/me", query = { x = "1" }, results = { "200" } }
      say(res.json.query)
      say(res.url)
      say(tostring(res.json.args["api key"] == "k/13579+x"))
    ]], dir)
    local r = helper.cli{ args = { "run", "-I", ig, "--trace", flow }, env = { API_KEY = "k/13579+x" } }
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("v=2&api%20key=***&x=1\n" .. mock.url .. "/v1/me?v=2&api%20key=***&x=1\ntrue\n", r.stdout)
    assert.matches("url=" .. mock.url .. "/v1/me?v=2&api%20key=***&x=1 label=200", r.stderr, 1, true)
    assert.not_matches("13579", r.stderr, 1, true)
  end)

  it("the REPL's .integrations says where the key goes", function()
    local ig = helper.integrations({ api = { base_url = mock.url .. "/v1",
                                             auth = { api_key = { query = "key", value = "k-secret-99" } } } })
    local r = helper.cli{ args = { "repl", "-I", ig }, stdin = ".integrations\n" }
    assert.matches("  auth: api_key in query key", r.stdout, 1, true)
    assert.not_matches("k-secret-99", r.stdout, 1, true)
  end)
end)

describe("auth: load errors name the file and the key", function()
  local cases = {
    { { oauth2 = { client_id = "a", client_secret = "secret-b" } }, "api.auth.oauth2.token_url: required" },
    { { oauth2 = { token_url = "ftp://127.0.0.1/t", client_id = "a", client_secret = "secret-b" } },
      "api.auth.oauth2.token_url: expected an http:// or https:// URL with a host" },
    { { oauth2 = { token_url = "http://u:p@127.0.0.1:9/t", client_id = "a", client_secret = "secret-b" } },
      "api.auth.oauth2.token_url: a user or password in the URL: give client_id and client_secret" },
    { { oauth2 = { token_url = "http://127.0.0.1:9/t", client_secret = "secret-b" } }, "api.auth.oauth2.client_id: required" },
    { { oauth2 = { token_url = "http://127.0.0.1:9/t", client_id = "a" } }, "api.auth.oauth2.client_secret: required" },
    { { oauth2 = { token_url = "http://127.0.0.1:9/t", client_id = "a", client_secret = 7 } },
      "api.auth.oauth2.client_secret: expected a string, got number" },
    { { oauth2 = { token_url = "http://127.0.0.1:9/t", client_id = "a", client_secret = "" } },
      "api.auth.oauth2.client_secret: expected a non-empty string without NUL" },
    { { oauth2 = { token_url = "http://127.0.0.1:9/t", client_id = "a", client_secret = "secret-b", client_auth = "post" } },
      "api.auth.oauth2.client_auth: expected \"basic\" or \"body\"" },
    { { oauth2 = { token_url = "http://127.0.0.1:9/t", client_id = "a", client_secret = "secret-b", scopes = "x" } },
      "api.auth.oauth2: unknown key 'scopes'" },
    { { oauth2 = "http://127.0.0.1:9/t" }, "api.auth.oauth2: expected a table, got string" },
    { { oauth2 = { token_url = "http://127.0.0.1:9/t", client_id = "a", client_secret = "secret-b" }, bearer = "x" },
      "api.auth: give one of bearer, basic, oauth2 and api_key" },
    { { api_key = { header = "X-Key" } }, "api.auth.api_key.value: required" },
    { { api_key = { value = "key-1234" } },
      "api.auth.api_key: expected { header = NAME, value = KEY } or { query = NAME, value = KEY }" },
    { { api_key = { header = "X-Key", query = "key", value = "key-1234" } }, "api.auth.api_key: give header or query, not both" },
    { { api_key = { header = "X Key", value = "key-1234" } }, "api.auth.api_key: header names are letters, digits and !#$%&'*+-.^_`|~" },
    { { api_key = { header = "X-Key", value = 12 } }, "api.auth.api_key.value: expected a string, got number" },
    { { api_key = { header = "X-Key", value = "key-1234", name = "n" } }, "api.auth.api_key: unknown key 'name'" },
  }
  for _, case in ipairs(cases) do
    it(case[2], function()
      local file = helper.integrations({ api = { base_url = "http://127.0.0.1:9", auth = case[1] } })
      local ok, err = pcall(helper.module().new, { integrations = file })
      assert.is_false(ok)
      assert.matches(file .. ": " .. case[2], err, 1, true)
    end)
  end

  it("an api_key header the headers set too", function()
    local file = helper.integrations({ api = { base_url = "http://127.0.0.1:9", headers = { ["x-key"] = "a" },
                                               auth = { api_key = { header = "X-Key", value = "key-1234" } } } })
    local ok, err = pcall(helper.module().new, { integrations = file })
    assert.is_false(ok)
    assert.matches(file .. ": api.auth.api_key: both auth.api_key and headers.x-key are set", err, 1, true)
  end)
end)
