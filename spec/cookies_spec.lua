-- Cookies (README: Cookies): `cookies = true` on an integration gives each
-- session a cookie jar of its own, against `flowrun mock` routes that set
-- cookies and an echo route that reports the Cookie header it got.
local helper = require "spec.helper"
local cjson = require "cjson"

local ROUTES = {
  { path = "/v1/login/{u}", headers = { ["Set-Cookie"] = "sid={u}; Path=/" }, json = { ok = true } },
  { path = "/v1/logout", headers = { ["Set-Cookie"] = "sid=; Max-Age=0; Path=/" }, json = { ok = true } },
  { path = "/v1/hop", status = 302,
    headers = { Location = "/v1/landing", ["Set-Cookie"] = "hop=yes; Path=/" }, body = "" },
  { path = "/v1/landing", echo = true },
  { path = "/v1/echo", echo = true },
}

-- A host's input line; a session's first line starts it (args[1]).
local function line(t) return cjson.encode(t) .. "\n" end

-- The says of a host run as "session: text" lines, session by session
-- (sessions run at once: their lines interleave), each in its order.
local function says(stdout)
  local by, order, out = {}, {}, {}
  for l in stdout:gmatch("[^\n]+") do
    local ev = cjson.decode(l)
    local text = ev.say or (ev["end"] == "error" and "error " .. ev.error)
    if text then
      if not by[ev.session] then by[ev.session] = {} order[#order + 1] = ev.session end
      table.insert(by[ev.session], ev.session .. ": " .. text)
    end
  end
  table.sort(order)
  for _, id in ipairs(order) do
    for _, t in ipairs(by[id]) do out[#out + 1] = t end
  end
  return out
end

describe("cookies = true", function()
  local mock, dir, ifile
  setup(function()
    mock = helper.mock(ROUTES)
    dir = helper.tmpdir()
    ifile = helper.integrations({
      shop = { base_url = mock.url .. "/v1", cookies = true, follow_redirects = true },
      plain = { base_url = mock.url .. "/v1", follow_redirects = true },
      other = { base_url = mock.url .. "/v1", cookies = true },
      solo = { base_url = mock.url .. "/v1", cookies = true, max_connections = 1,
               queue_timeout_ms = 10000 },
    }, dir)
  end)
  teardown(function()
    mock:stop()
    helper.cleanup()
  end)

  local function host(flow, input, extra)
    local args = { "host", "-I", ifile }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    args[#args + 1] = helper.flow(flow, dir)
    local r = helper.cli({ args = args, stdin = input })
    assert.are.equal(0, r.code, r.stderr)
    return says(r.stdout)
  end

  it("keeps a session's cookies for its next calls, never another session's (easy handles are shared)", function()
    local out = host([[
local who = args[1]
local function cookie(ig)
  local _, r = api_node{ integration = ig, path = "/echo", results = { "200" } }
  return tostring(r.json.headers.cookie)
end
say("before " .. cookie("shop"))
if who ~= "cy" then      -- cy never logs in
  api_node{ integration = "shop", path = "/login/" .. who, results = { "200" } }
end
ask()
say("after " .. cookie("shop"))
say("again " .. cookie("shop"))
api_node{ integration = "shop", path = "/logout", results = { "200" } }
say("out " .. cookie("shop"))
]], line{ session = "a", text = "ann" } .. line{ session = "b", text = "bob" }
     .. line{ session = "c", text = "cy" } .. line{ session = "a", text = "" }
     .. line{ session = "b", text = "" } .. line{ session = "c", text = "" })
    assert.are.same({
      "a: before nil", "a: after sid=ann", "a: again sid=ann", "a: out nil",
      "b: before nil", "b: after sid=bob", "b: again sid=bob", "b: out nil",
      "c: before nil", "c: after nil", "c: again nil", "c: out nil",
    }, out)
  end)

  it("a jar holds at most 200 cookies and 64 KiB: a server setting cookie after cookie grows neither the session nor its journal", function()
    local routes = {}                   -- 40 new cookies a response (libcurl takes fewer than 50)
    for k = 1, 12 do
      local many = {}
      for i = 1, 40 do many[i] = ("c%d_%02d=%s; Path=/"):format(k, i, string.rep("v", 100)) end
      routes[k] = { path = "/v1/many/" .. k, headers = { ["Set-Cookie"] = many }, json = { ok = true } }
    end
    local m = helper.mock(routes)
    local d = helper.tmpdir()
    local ig = helper.integrations({ shop = { base_url = m.url .. "/v1", cookies = true } }, d)
    local flow = helper.flow([[
      for k = 1, 12 do
        local label = api_node{ integration = "shop", path = "/many/" .. k, results = { "200" } }
        if label ~= "200" then error(label) end
      end
      ask()
    ]], d)
    local r = helper.cli({ args = { "host", "-I", ig, "--store", d .. "/s.db", flow },
                           stdin = line{ session = "s", text = "go", n = 1 } })
    assert.are.equal(0, r.code, r.stderr)
    -- each call record carries the jar after it (lines of about 150 bytes) and the
    -- response: 366 KB with the jar capped at 200 cookies; uncapped (480 at the end), 552 KB
    local p = io.popen("sqlite3 " .. helper.quote(d .. "/s.db") .. " 'SELECT sum(length(result)) FROM journal'")
    local bytes = tonumber(p:read("a"))
    p:close()
    assert.is_true(bytes > 300000 and bytes < 430000, tostring(bytes))
  end)

  it("one easy handle for every session (max_connections = 1): still never another session's", function()
    local out = host([[
local who = args[1]
if who == "ann" then api_node{ integration = "solo", path = "/login/ann", results = { "200" } } end
ask()
local _, r = api_node{ integration = "solo", path = "/echo", results = { "200" } }
say(tostring(r.json.headers.cookie))
]], line{ session = "a", text = "ann" } .. line{ session = "c", text = "cy" }
     .. line{ session = "a", text = "" } .. line{ session = "c", text = "" })
    assert.are.same({ "a: sid=ann", "c: nil" }, out)
  end)

  it("keeps cookies across a redirect: the target gets the cookie the redirect set", function()
    local out = host([[
local who = args[1]
api_node{ integration = "shop", path = "/login/" .. who, results = { "200" } }
local _, r = api_node{ integration = "shop", path = "/hop", results = { "200" } }
say(r.json.path .. " " .. tostring(r.json.headers.cookie))
local _, r2 = api_node{ integration = "shop", path = "/echo", results = { "200" } }
say(tostring(r2.json.headers.cookie))
]], line{ session = "a", text = "ann" })
    assert.are.same({ "a: /v1/landing hop=yes; sid=ann", "a: hop=yes; sid=ann" }, out)
  end)

  it("without it: no cookie engine, nothing kept or sent (the same session, the same server)", function()
    local out = host([[
api_node{ integration = "plain", path = "/login/ann", results = { "200" } }
local _, r = api_node{ integration = "plain", path = "/hop", results = { "200" } }
say(r.json.path .. " " .. tostring(r.json.headers.cookie))
api_node{ integration = "shop", path = "/login/ann", results = { "200" } }
local _, r2 = api_node{ integration = "plain", path = "/echo", results = { "200" } }
say(tostring(r2.json.headers.cookie))
]], line{ session = "a", text = "x" })
    assert.are.same({ "a: /v1/landing nil", "a: nil" }, out)
  end)

  it("keeps a jar for each integration: another one with cookies = true does not send it", function()
    local out = host([[
api_node{ integration = "shop", path = "/login/ann", results = { "200" } }
local _, r = api_node{ integration = "other", path = "/echo", results = { "200" } }
local _, r2 = api_node{ integration = "shop", path = "/echo", results = { "200" } }
say(tostring(r.json.headers.cookie) .. " " .. tostring(r2.json.headers.cookie))
]], line{ session = "a", text = "x" })
    assert.are.same({ "a: nil sid=ann" }, out)
  end)

  it("outside a session (the REPL) a call keeps its cookies across its own redirects only", function()
    local r = helper.cli{ args = { "repl", "-I", ifile }, stdin = table.concat({
      'select(2, api_node{integration="shop", path="/hop", results={"200"}}).json.headers.cookie',
      'select(2, api_node{integration="shop", path="/echo", results={"200"}}).json.headers.cookie',
    }, "\n") .. "\n" }
    assert.are.equal(0, r.code, r.stderr)
    assert.matches('"hop=yes"\nnil\n', r.stdout)
  end)

  it("with flowrun test's stubs no cookie engine runs: a stub's Set-Cookie is not sent back", function()
    local d = helper.tmpdir()
    helper.flow([[
api_node{ integration = "shop", path = "/login/ann", results = { "200" } }
local label = api_node{ integration = "shop", path = "/echo", results = { "200", "204" } }
say(label)
]], d, "flow.lua")
    local t = helper.write(d .. "/flow_test.lua", [[
return {
  flow = "flow.lua",
  integrations = { shop = { base_url = "http://127.0.0.1:9/v1", cookies = true } },
  stubs = {
    stub { path = "/login/ann", reply = { status = 200, headers = { ["Set-Cookie"] = "sid=ann; Path=/" } } },
    stub { path = "/echo", headers = { Cookie = "sid=ann" }, reply = { status = 200 } },
    stub { path = "/echo", reply = { status = 204 } },
  },
  test "login then echo" { bot "204", done() },
}
]])
    local r = helper.cli{ args = { "test", t } }
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("1 passed, 0 failed", r.stdout, 1, true)
  end)

  it("a durable session restarted on its store still sends its cookies", function()
    local store = dir .. "/s.db"
    local flow = [[
local who = args[1]
api_node{ integration = "shop", path = "/login/" .. who, results = { "200" } }
ask()
local _, r = api_node{ integration = "shop", path = "/echo", results = { "200" } }
say(who .. " " .. tostring(r.json.headers.cookie))
]]
    local logins = mock:count("/v1/login/ann")
    assert.are.same({}, host(flow, line{ session = "a", text = "ann", n = 1 }
                                  .. line{ session = "b", text = "bob", n = 1 }, { "--store", store }))
    assert.are.same({ "a: ann sid=ann", "b: bob sid=bob" },
                    host(flow, line{ session = "a", text = "", n = 2 }
                               .. line{ session = "b", text = "", n = 2 }, { "--store", store }))
    assert.are.equal(logins + 1, mock:count("/v1/login/ann"))   -- replayed, not sent again
  end)

  -- a fresh start lets the journal's records go, and the jars their calls
  -- carried: the jars are stored with the fresh start's record
  it("a declarative flow restarted after a step's snapshot still sends its cookies", function()
    local store = dir .. "/d.db"
    local flow = [[
local flow = require "flowrun.flow"
return flow.define {
  name = "d", start = "login",
  defaults = { other = "bye", error = "bye", timeout = "bye", ["max-connection"] = "bye" },
  steps = {
    login = flow.api { integration = "shop", path = function(s) return "/login/" .. s.id end,
                       on = { ["200"] = "wait" } },
    wait = flow.ask { save = "x", next = "echo" },
    echo = flow.api { integration = "shop", path = "/echo", save = "r", on = { ["200"] = "show" } },
    show = function(s) say(s.id .. " " .. tostring(s.r.json.headers.cookie)) end,
    bye = flow.say "bye",
  },
}
]]
    assert.are.same({}, host(flow, line{ session = "ann", text = "x", n = 1 }, { "--store", store }))
    assert.are.same({ "ann: ann sid=ann" },
                    host(flow, line{ session = "ann", text = "go", n = 2 }, { "--store", store }))
  end)

  it("continue_as_new keeps the session's cookies, also across a restart", function()
    local store = dir .. "/c.db"
    local flow = [[
local phase = ...
if phase ~= "again" then
  api_node{ integration = "shop", path = "/login/" .. phase, results = { "200" } }
  continue_as_new("again")
end
ask()
local _, r = api_node{ integration = "shop", path = "/echo", results = { "200" } }
say(tostring(r.json.headers.cookie))
]]
    assert.are.same({ "b: sid=bob" }, host(flow, line{ session = "b", text = "bob" }
                                                 .. line{ session = "b", text = "" }))
    assert.are.same({}, host(flow, line{ session = "a", text = "ann", n = 1 }, { "--store", store }))
    assert.are.same({ "a: sid=ann" }, host(flow, line{ session = "a", text = "", n = 2 }, { "--store", store }))
  end)
end)
