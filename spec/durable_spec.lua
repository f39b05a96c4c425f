-- Durable sessions, one restart at a time (README: Durable sessions):
-- `flowrun host --store PATH` ends its input with the sessions waiting in
-- the store, and the next run on the same store goes on from there.
local helper = require "spec.helper"
local cjson = require "cjson"

local FLOW = [[
local t, r, c = os.time(), math.random(1000000), os.clock()
local d = os.date("%Y-%m-%d %H:%M:%S")
say("hello " .. args[1])
local name = ask("name?")
local label, res = api_node{ integration = "shop", path = "/order/{id}",
                             params = { id = name }, results = { "200" } }
say(name .. " " .. label .. " " .. res.json.status .. " " .. res.status)
local more = ask("more?")
say(table.concat({ t, r, c, d, more }, "|"))
]]

-- Output events of a run, decoded; the stored acks apart.
local function events(stdout)
  local out, stored = {}, {}
  for line in stdout:gmatch("[^\n]+") do
    local ev = cjson.decode(line)
    if ev.stored then stored[#stored + 1] = ("%s:%d"):format(ev.session, ev.stored)
    else out[#out + 1] = ev end
  end
  return out, stored
end

local function line(t) return cjson.encode(t) .. "\n" end

describe("durable sessions: flowrun host --store", function()
  local mock, dir, ifile, store
  before_each(function() mock, dir, ifile, store = helper.shop_and_store() end)
  after_each(function() mock:stop() end)
  teardown(helper.cleanup)

  local function host(flow, input, extra) return helper.store_host(store, ifile, flow, input, extra) end

  -- u1 runs to its second ask; FLOW is edited (gsub); u1's next line comes:
  -- the run's result, its events and the flow's path.
  local function after_edit(pattern, replacement)
    local flow = helper.flow(FLOW, dir)
    host(flow, line{ session = "u1", text = "x", n = 1 } .. line{ session = "u1", text = "ada", n = 2 })
    helper.write(flow, (FLOW:gsub(pattern, replacement)))
    local r = host(flow, line{ session = "u1", text = "bob", n = 3 })
    return r, events(r.stdout), flow
  end

  it("goes on after a restart: effects replayed, not made again; outputs numbered", function()
    local flow = helper.flow(FLOW, dir)
    local r1 = host(flow, line{ session = "u1", text = "x", n = 1 } .. line{ session = "u1", text = "ada", n = 2 })
    assert.are.equal(0, r1.code, r1.stderr)
    local out1, stored1 = events(r1.stdout)
    assert.are.same({ "u1:1", "u1:2" }, stored1)
    -- "ada" was there before the ask: its prompt comes as a say
    assert.are.same({ "hello x", "name?", "ada 200 shipped 200", "more?" },
                    { out1[1].say, out1[2].say, out1[3].say, out1[4].ask })
    assert.are.equal(1, mock:count("/v1/order/ada"))
    local r2 = host(flow, line{ session = "u1", text = "bob", n = 3 })
    assert.are.equal(0, r2.code, r2.stderr)
    local out2, stored2 = events(r2.stdout)
    assert.are.same({ "u1:3" }, stored2)
    assert.are.equal(1, mock:count("/v1/order/ada"))   -- the call was not sent again
    assert.are.equal(2, #out2)                         -- nothing said again
    local t, r, c, d, more = out2[1].say:match("^(%d+)|(%d+)|([%d.e-]+)|([^|]+)|(%a+)$")
    assert.truthy(t, out2[1].say)
    assert.are.equal("bob", more)
    assert.are.equal("done", out2[2]["end"])
    -- numbers go on from the first run's
    assert.are.same({ out1[4].seq + 1, out1[4].seq + 2 }, { out2[1].seq, out2[2].seq })
  end)

  it("gives os.time, os.clock, os.date and math.random their first values on replay", function()
    local flow = helper.flow([[
local t, r, f, c, d = os.time(), math.random(1000000), math.random(), os.clock(), os.date("%c")
say(table.concat({ t, r, f, c, d }, "|"))
ask()
say(table.concat({ t, r, f, c, d }, "|"))
]], dir)
    local r1 = host(flow, line{ session = "u1", text = "x", n = 1 })
    local out1 = events(r1.stdout)
    os.execute("sleep 1.1")             -- the clock moves on; the journal does not
    local r2 = host(flow, line{ session = "u1", text = "again", n = 2 })
    local out2 = events(r2.stdout)
    assert.are.equal(out1[1].say, out2[1].say, r2.stderr)
  end)

  it("runs the README's example; the store is the user's alone (0600)", function()
    local flow = helper.flow('local name = ask("your name?")\nsay("hello " .. name)\n', dir, "chat.lua")
    local r1 = host(flow, '{"session":"u1","text":"hi","n":1}\n')
    assert.are.equal('{"session":"u1","ask":"your name?","seq":1}\n{"session":"u1","stored":1}\n', r1.stdout)
    local r2 = host(flow, '{"session":"u1","text":"Ada","n":2}\n')
    assert.are.equal('{"session":"u1","say":"hello Ada","seq":2}\n{"session":"u1","end":"done","seq":3}\n'
                     .. '{"session":"u1","stored":2}\n', r2.stdout)
    assert.are.equal("600\n", helper.sh("stat -c %a " .. helper.quote(store)))
  end)

  it("replays a flow whose query changed (the journal knows a call by integration, method and path)", function()
    local r, out = after_edit('params = { id = name }', 'params = { id = name }, query = { v = "2" }')
    assert.are.equal("done", out[#out]["end"], r.stdout)
    assert.are.equal(1, mock:count("/v1/order/ada"))
  end)

  it("works from the Lua module: new{ store }, numbered events, stored events, send's n", function()
    local flowrun = helper.module()
    local flow = helper.flow(FLOW, dir)
    local rt = flowrun.new{ integrations = ifile, store = store }
    rt:start("u1", flow, "x")
    rt:send("u1", "ada", 1)
    assert.is_true(rt:run())
    local got = {}
    for _, e in ipairs(rt:events()) do
      if e.type ~= "trace" then got[#got + 1] = ("%s %s %s"):format(e.type, e.text or e.n, e.seq or "-") end
    end
    assert.are.same({ "say hello x 5", "say name? 6", "stored 0 -", "stored 1 -",
                      "say ada 200 shipped 200 8", "ask more? 9" }, got)
    assert.has_error(function() flowrun.new{ store = store } end,
      "flowrun.new: store " .. store .. ": in use by another runtime of this process")
    rt:close()
    rt = flowrun.new{ integrations = ifile, store = store }   -- u1 waits in the store
    assert.are.equal(0, rt:sessions())
    rt:send("u1", "ada", 1)                                  -- stored already
    rt:send("u1", "bob", 2)
    assert.is_true(rt:run())
    local evs = rt:events()
    local stored, last = {}, nil       -- after a commit: its outputs, then its acknowledgements
    for _, e in ipairs(evs) do
      if e.type == "stored" then stored[#stored + 1] = e.n elseif e.type ~= "trace" then last = e end
    end
    assert.are.same({ 1, 2 }, stored)
    assert.are.same({ "end", true, 11 }, { last.type, last.ok, last.seq })
    assert.are.equal(1, mock:count("/v1/order/ada"))
    rt:close()
  end)

  it("sends a call made again after a crash with the same Idempotency-Key (idempotency_key = true)", function()
    local echo = helper.mock({ { path = "/v1/pay", method = "POST", echo = true } })
    helper.integrations({ pay = { base_url = echo.url .. "/v1", idempotency_key = true },
                          shop = { base_url = mock.url .. "/v1" } }, dir)
    local flow = helper.flow([[
local label, res = api_node{ integration = "pay", method = "POST", path = "/pay",
                             body = { amount = 5 }, results = { "200" } }
say(res.json.headers["idempotency-key"] or "none")
ask()
]], dir)
    local r1 = host(flow, line{ session = "u1", text = "x", n = 1 } .. line{ session = "u2", text = "x", n = 1 })
    local k = {}
    for _, ev in ipairs((events(r1.stdout))) do if ev.say then k[ev.session] = ev.say end end
    assert.matches("^flowrun%-%x+%-1$", k.u1)
    assert.matches("^flowrun%-%x+%-1$", k.u2)
    assert.are_not.equal(k.u1, k.u2)
    -- the state a crash leaves when the call's record was not committed
    os.execute("sqlite3 " .. helper.quote(store) .. " \"DELETE FROM journal WHERE session = 'u1';"
               .. " UPDATE sessions SET waiting = 0 WHERE id = 'u1'\"")
    local r2 = host(flow, "")
    local out2 = events(r2.stdout)
    assert.are.same({ "u1", k.u1 }, { out2[1].session, out2[1].say })
    assert.are.equal(3, echo:count("POST /v1/pay"))
    -- without a store there is no journal number: no key
    local r3 = helper.cli({ args = { "host", "-I", dir .. "/integrations.lua", flow },
                            stdin = line{ session = "u3", text = "x" } })
    assert.are.equal("none", events(r3.stdout)[1].say, r3.stdout)
    echo:stop()
  end)

  it("flowrun run --store goes on with the unfinished sessions after a SIGKILL, starting none", function()
    local flow = helper.flow('say("a " .. session.id)\nsleep(1500)\nsay("b " .. session.id)\n', dir)
    local out = dir .. "/run1.out"
    local env = helper.san and ("env -u LD_PRELOAD ASAN_OPTIONS=" .. os.getenv("SPEC_CHILD_ASAN_OPTIONS") .. " ") or ""
    os.execute("sh -c " .. helper.quote(env .. helper.quote(helper.flowrun) .. " run --sessions 3 --store "
               .. helper.quote(store) .. " -I " .. helper.quote(ifile) .. " " .. helper.quote(flow)
               .. " </dev/null >" .. out .. " 2>&1 & echo $! >" .. dir .. "/run1.pid") .. " >/dev/null 2>&1")
    local pid = helper.wait_for(function() return tonumber(helper.read(dir .. "/run1.pid") or "") end, 10000)
    assert(helper.wait_for(function() local o = helper.read(out) or "" return select(2, o:gsub("%[%d%] a", "")) == 3 end, 30000))
    os.execute("kill -KILL " .. pid)
    helper.wait_for(function() return not io.open("/proc/" .. pid .. "/stat") end, 10000)
    local r = helper.cli({ args = { "run", "--sessions", "3", "--store", store, "-I", ifile, flow } })
    assert.are.equal(0, r.code, r.stderr)
    local lines = helper.lines(r.stdout)
    table.sort(lines)
    assert.are.same({ "[1] b 1", "[2] b 2", "[3] b 3" }, lines)
  end)

  it("keeps at most `resident` sessions in memory; the others come back at their next message", function()
    local flowrun = helper.module()
    local flow = helper.flow(FLOW, dir)
    local rt = flowrun.new{ integrations = ifile, store = { path = store, resident = 10 } }
    for i = 1, 100 do rt:start("u" .. i, flow, "x") end
    assert.is_true(rt:run())
    assert.is_true(rt:sessions() <= 10, rt:sessions())
    for i = 1, 100 do rt:send("u" .. i, "n" .. i) end      -- each comes back, calls, asks again
    assert.is_true(rt:run())
    assert.is_true(rt:sessions() <= 10, rt:sessions())
    for i = 1, 100 do rt:send("u" .. i, "m" .. i) end
    assert.is_true(rt:run())
    assert.are.equal(0, rt:sessions())
    local said, ended = {}, 0
    for _, e in ipairs(rt:events()) do
      if e.type == "say" and e.text:match("^n%d+ ") then said[#said + 1] = e.session .. " " .. e.text end
      if e.type == "end" then ended = ended + (e.ok and 1 or 0) end
    end
    assert.are.equal(100, ended)
    assert.are.equal(100, #said)
    for _, l in ipairs(said) do
      local id, n = l:match("^u(%d+) n(%d+) 200 shipped 200$")
      assert.are.equal(id, n, l)
    end
    for i = 1, 100 do assert.are.equal(1, mock:count("/v1/order/n" .. i .. " ")) end
    rt:close()
  end)

  it("lets a session waiting longer than idle_ms leave memory", function()
    local flowrun = helper.module()
    local flow = helper.flow(FLOW, dir)
    local rt = flowrun.new{ integrations = ifile, store = { path = store, idle_ms = 500 } }
    rt:start("u1", flow, "x")
    assert.is_true(rt:run())
    assert.are.equal(1, rt:sessions())  -- waiting, not yet for 500 ms
    rt:step(1600)                       -- a turn a second on: idle ones are looked for
    assert.are.equal(0, rt:sessions())
    rt:send("u1", "ada")
    assert.is_true(rt:run())
    assert.are.equal(1, rt:sessions())
    rt:close()
    assert.has_error(function() flowrun.new{ store = { path = store, resident = -1 } } end,
      "flowrun.new: store.resident: expected a whole number >= 0")
    assert.has_error(function() flowrun.new{ store = { file = store } } end,
      "flowrun.new: store: unknown key 'file' (path, resident, idle_ms, ttl_s, keep_ended_s, lease_ms, park, node)")
  end)

  it("flowrun sessions lists what a store holds, also while a host runs it, and ends one", function()
    local flow = helper.flow(FLOW, dir)
    host(flow, line{ session = "u1", text = "x", n = 1 } .. line{ session = "u2", text = "x", n = 1 }
               .. line{ session = "u2", text = "ada", n = 2 })
    local first = helper.cli_piped({ "host", "--store", store, "-I", ifile, flow })
    first:send(line{ session = "u3", text = "x", n = 1 }:sub(1, -2))
    assert(helper.wait_for(function() return first:stdout():find('"stored":1', 1, true) end, 30000))
    local r = helper.cli({ args = { "sessions", "--store", store, "--json" } })
    assert.are.equal(0, r.code, r.stderr)
    local got = {}
    for l in r.stdout:gmatch("[^\n]+") do
      local e = cjson.decode(l)
      got[e.session] = ("%s %d %d %s"):format(e.state, e.journal, e.messages, e.flow)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", e.active)
    end
    assert.are.same({ u1 = "waiting 5 0 " .. flow, u2 = "waiting 8 1 " .. flow,
                      u3 = "waiting 5 0 " .. flow }, got)
    local refused = helper.cli({ args = { "sessions", "--store", store, "--end", "u1" } })
    assert.are.equal(2, refused.code)
    assert.matches("in use by another flowrun (pid ", refused.stderr, 1, true)
    assert.are.equal(0, first:finish().code)
    local ended = helper.cli({ args = { "sessions", "--store", store, "--end", "u1" } })
    assert.are.equal(0, ended.code, ended.stderr)
    local again = helper.cli({ args = { "sessions", "--store", store, "--end", "u1" } })
    assert.are.equal(1, again.code)
    assert.are.equal("flowrun sessions: store " .. store .. ": no session u1 to end\n", again.stderr)
    local table_ = helper.cli({ args = { "sessions", "--store", store } }).stdout
    assert.matches("^SESSION +STATE +LAST ACTIVE +JOURNAL MESSAGES  FLOW\n", table_)
    assert.matches("\nu1 +ended +%S+ +0 +0  ", table_)
    -- u1 ended: its next line is not an answer
    local r2 = host(flow, line{ session = "u1", text = "bob", n = 2 })
    assert.matches('"error":"line 1: no session u1"', r2.stdout, 1, true)
    local bad = helper.cli({ args = { "sessions" } })
    assert.are.equal(2, bad.code)
    assert.matches("--store PATH is required", bad.stderr, 1, true)
  end)

  it("keeps secrets out of the store's records of calls (a key in a query string)", function()
    local d2 = helper.tmpdir()
    local ig = helper.write(d2 .. "/integrations.lua", ([[
return { shop = { base_url = "%s/v1", query = { key = env("SHOP_KEY") } } }
]]):format(mock.url))
    local flow = helper.flow([[
local label, res = api_node{ integration = "shop", path = "/order/{id}", params = { id = "k1" },
                             results = { "200" } }
say(res.url)
ask()
]], d2)
    local r = helper.cli({ args = { "host", "--store", store, "-I", ig, flow },
                           stdin = line{ session = "u1", text = "x", n = 1 },
                           env = { SHOP_KEY = "s3cr3t-k3y-value" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("key=***", r.stdout, 1, true)
    assert.are.equal(1, mock:count("key=s3cr3t-k3y-value"))
    local dump = helper.sh("sqlite3 " .. helper.quote(store) .. " 'SELECT hex(result) FROM journal'")
    assert.is_nil(dump:find(("s3cr3t-k3y-value"):gsub(".", function(ch) return ("%02X"):format(ch:byte()) end), 1, true))
    assert.is_truthy(dump:find(("key=***"):gsub(".", function(ch) return ("%02X"):format(ch:byte()) end), 1, true))
  end)

  it("closes the channel of a session silent longer than --ttl: its ask returns nil, it says goodbye", function()
    local flow = helper.flow('local a = ask("name?")\nif a == nil then say("bye") return end\nsay(a)\n', dir)
    local h = helper.cli_piped({ "host", "--store", store, "--ttl", "1", "-I", ifile, flow })
    h:send(line{ session = "u1", text = "x", n = 1 }:sub(1, -2))
    h:send(line{ session = "u2", text = "x", n = 1 }:sub(1, -2))
    h:send(line{ session = "u2", text = "ada", n = 2 }:sub(1, -2))
    assert(helper.wait_for(function() return h:stdout():find('"say":"bye"', 1, true) end, 15000),
           h:stdout())
    local r = h:finish()
    local out = events(r.stdout)
    local said = {}
    for _, e in ipairs(out) do if e.say then said[#said + 1] = e.session .. " " .. e.say end end
    table.sort(said)
    assert.are.same({ "u1 bye", "u2 ada", "u2 name?" }, said)
  end)

  it("takes a line sent again with its number once, and acknowledges it again", function()
    local flow = helper.flow(FLOW, dir)
    local input = line{ session = "u1", text = "x", n = 1 } .. line{ session = "u1", text = "x", n = 1 }
      .. line{ session = "u1", text = "ada", n = 2 } .. line{ session = "u1", text = "ada", n = 2 }
    local r = host(flow, input)
    local out, stored = events(r.stdout)
    table.sort(stored)
    assert.are.same({ "u1:1", "u1:1", "u1:2", "u1:2" }, stored)
    assert.are.equal(1, mock:count("/v1/order/ada"))
    assert.are.equal("more?", out[#out].ask)      -- "ada" answered one ask, not two
    local r2 = host(flow, line{ session = "u1", text = "ada", n = 2 } .. line{ session = "u1", text = "x", n = 5 })
    local _, stored2 = events(r2.stdout)
    assert.are.same({ "u1:2" }, stored2)
    assert.matches('"line":2', r2.stdout, 1, true)
    assert.matches("session u1: line 5 comes after line 2: 3 is missing", r2.stdout, 1, true)
  end)

  it("fails a session whose flow changed under it, naming both effects (mismatch)", function()
    local r, out, flow = after_edit('path = "/order/{id}"', 'path = "/orders/{id}"')
    assert.are.equal(1, r.code)
    assert.are.equal("error", out[#out]["end"])
    assert.matches("flow.lua:5: replay of session u1 does not match its journal: entry 7 is "
                   .. "api_node shop GET /order/{id} (made at " .. flow .. ":5), but the flow now does "
                   .. "api_node shop GET /orders/{id} here", out[#out].error, 1, true)
    -- the session has ended: the store holds nothing for it to run
    local again = host(flow, line{ session = "u1", text = "bob", n = 3 })
    assert.are.same({}, (events(again.stdout)))
  end)

  it("parks a session whose flow changed (--on-mismatch park): kept, listed, its messages stored, run again after --retry", function()
    local flow = helper.flow(FLOW, dir)
    host(flow, line{ session = "u1", text = "x", n = 1 } .. line{ session = "u1", text = "ada", n = 2 })
    helper.write(flow, (FLOW:gsub('path = "/order/{id}"', 'path = "/orders/{id}"')))
    local r = host(flow, line{ session = "u1", text = "bob", n = 3 }, { "--on-mismatch", "park" })
    local out, stored = events(r.stdout)
    assert.are.same({ "u1:3" }, stored)                -- the message is kept
    assert.are.equal("parked", out[#out]["end"], r.stdout)
    assert.matches("entry 7 is api_node shop GET /order/{id}", out[#out].error, 1, true)
    local l = helper.cli({ args = { "sessions", "--store", store, "--json" } })
    local e = cjson.decode(l.stdout)
    assert.are.same({ "u1", "parked" }, { e.session, e.state })
    assert.matches("but the flow now does api_node shop GET /orders/{id}", e.note, 1, true)
    -- still parked: a line sent meanwhile is stored for it, nothing runs
    local r2 = host(flow, line{ session = "u1", text = "carl", n = 4 }, { "--on-mismatch", "park" })
    assert.are.equal('{"session":"u1","stored":4}\n', r2.stdout)
    helper.write(flow, FLOW)                           -- put back
    local retry = helper.cli({ args = { "sessions", "--store", store, "--retry", "u1" } })
    assert.are.equal(0, retry.code, retry.stderr)
    local r3 = host(flow, "")
    local out3 = events(r3.stdout)
    assert.matches("|bob$", out3[1].say)
    assert.are.equal("done", out3[2]["end"])
    assert.are.equal(1, mock:count("/v1/order/ada"))
    local again = helper.cli({ args = { "sessions", "--store", store, "--retry", "u1" } })
    assert.are.equal(1, again.code)
    assert.are.equal("flowrun sessions: store " .. store .. ": no parked session u1\n", again.stderr)
  end)

  it("fails a session whose flow now ends before its journal does", function()
    local flow = helper.flow(FLOW, dir)
    host(flow, line{ session = "u1", text = "x", n = 1 } .. line{ session = "u1", text = "ada", n = 2 })
    helper.write(flow, FLOW:match("^(.-say%b())"))   -- the effects up to its first say
    local r = host(flow, line{ session = "u1", text = "bob", n = 3 })
    local out = events(r.stdout)
    assert.are.equal("error", out[1]["end"])
    assert.matches('replay of session u1 does not match its journal: entry 6 is ask "name?" (made at '
                   .. flow .. ":4), but the flow now ends before it", out[1].error, 1, true)
  end)

  it("replays a flow whose say text changed (a fixed typo reaches nobody twice)", function()
    local r, out = after_edit('say%("hello "', 'say("Hello, "')
    assert.are.equal(0, r.code, r.stdout)
    assert.are.equal("done", out[#out]["end"])
  end)

  describe("a store it cannot use: a message naming it, exit 2, nothing run", function()
    local function refused(prepare, pattern)
      local flow = helper.flow('say("hi")\n', dir)
      prepare()
      local r = host(flow, line{ session = "u1", text = "x", n = 1 })
      assert.are.equal(2, r.code, r.stderr)
      assert.are.equal("", r.stdout)
      assert.matches("flowrun host: store " .. store .. ": " .. pattern, r.stderr, 1, true)
    end
    it("not SQLite", function()
      refused(function() helper.write(store, string.rep("not a database ", 100)) end,
              "not a flowrun store")
    end)
    it("another application's SQLite file", function()
      refused(function() os.execute("sqlite3 " .. helper.quote(store) .. " 'CREATE TABLE t(x)'") end,
              "not a flowrun store (a SQLite file of another application)")
    end)
    it("a store from a newer flowrun", function()
      refused(function()
        os.execute("sqlite3 " .. helper.quote(store)
                   .. " 'PRAGMA application_id=1718382455; PRAGMA user_version=2; CREATE TABLE t(x)'")
      end, "written by a newer flowrun (store format 2; this one reads 1)")
    end)
    it("a read-only store (as a user file modes bind: root runs it as nobody)", function()
      local flow = helper.flow('say("hi")\n', dir)
      os.execute("sqlite3 " .. helper.quote(store) .. " 'PRAGMA user_version=0'")
      os.execute("chmod 0444 " .. helper.quote(store) .. " && chmod 0777 " .. helper.quote(dir)
                 .. " && chmod 0755 " .. helper.quote(flow))
      local as = "env -u LD_PRELOAD " .. (helper.sh("id -u") == "0\n" and "setpriv --reuid=nobody --regid=nogroup --clear-groups " or "")
      local out, code = helper.sh("echo '{\"session\":\"u1\",\"text\":\"x\",\"n\":1}' | " .. as
                                  .. helper.quote(helper.flowrun) .. " host --store " .. helper.quote(store)
                                  .. " " .. helper.quote(flow))
      assert.are.equal(2, code, out)
      assert.are.equal("flowrun host: store " .. store .. ": Permission denied (a store is written "
                       .. "at every turn: it cannot be read-only)\n", out)
    end)
    it("a store another flowrun runs", function()
      local flow = helper.flow('ask()\n', dir)
      local first = helper.cli_piped({ "host", "--store", store, "-I", ifile, flow })
      first:send(line{ session = "u1", text = "x", n = 1 }:sub(1, -2))
      assert(helper.wait_for(function() return first:stdout():find('"stored":1', 1, true) end, 30000))
      refused(function() end, "in use by another flowrun (pid ")
      local r = first:finish()
      assert.are.equal(0, r.code, r.stderr)
    end)
  end)

  describe("a full disk: exit 3, nothing acknowledged that was not stored, nothing lost", function()
    -- Each answer is counted: "k 4000" for the k-th, so a message taken
    -- twice or lost shows in the count.
    local COUNT = [[
local k = 0
while true do
  local a = ask("more?")
  if a == nil then return end
  k = k + 1
  say(("%d %d"):format(k, #a))
end
]]
    -- what a write past the limit makes of a commit (EFBIG is an I/O error
    -- to SQLite; a full disk's ENOSPC says "database or disk is full")
    local function failed()
      return "store " .. store .. ": disk I/O error: nothing after the last commit is stored or acknowledged"
    end

    -- A script running flowrun (or program) with its files limited to
    -- `blocks` (ulimit -f; SIGXFSZ ignored, so a write past the limit
    -- fails with EFBIG, as on a full disk); argv after it; its pid in
    -- dir/limited.pid.
    local function limited(blocks, program)
      return helper.write(dir .. "/limited.sh", ("#!/bin/sh\necho $$ >%s\nulimit -f %d\ntrap '' XFSZ\nexec %s \"$@\"\n")
        :format(helper.quote(dir .. "/limited.pid"), blocks, program or helper.quote(helper.flowrun)))
    end

    -- `flowrun host --store` under the limit, its input the lines appended
    -- to dir/in (tail -f: a host gone never breaks the spec's pipe).
    local function limited_host(blocks, flow)
      local sh = limited(blocks)
      helper.write(dir .. "/in", "")
      local env = helper.san and ("env -u LD_PRELOAD ASAN_OPTIONS=" .. os.getenv("SPEC_CHILD_ASAN_OPTIONS") .. " ") or ""
      os.execute("(tail -n +1 -f " .. helper.quote(dir .. "/in") .. " | (" .. env .. "sh " .. helper.quote(sh)
                 .. " host --store " .. helper.quote(store) .. " -I " .. helper.quote(ifile) .. " " .. helper.quote(flow)
                 .. " >" .. helper.quote(dir .. "/out") .. " 2>" .. helper.quote(dir .. "/err")
                 .. "; echo $? >" .. helper.quote(dir .. "/code") .. ")) >/dev/null 2>&1 &")
      local h = {}
      function h.send(l) local f = assert(io.open(dir .. "/in", "a")) f:write(l) f:close() end
      function h.stdout() return helper.read(dir .. "/out") or "" end
      function h.code() return tonumber(helper.read(dir .. "/code") or "") end
      function h.kill()                 -- a host that never exits (the spec fails)
        local pid = tonumber(helper.read(dir .. "/limited.pid") or "")
        if pid and not h.code() then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
        helper.wait_for(h.code, 10000)
      end
      return h
    end

    -- `flowrun ARGS...` under the limit, stdin the text given: its output
    -- (stdout and stderr) and exit code.
    local function limited_run(blocks, stdin, ...)
      local sh = limited(blocks)
      local args = {}
      for i, a in ipairs({ ... }) do args[i] = helper.quote(a) end
      helper.write(dir .. "/stdin", stdin)
      local env = helper.san and ("env -u LD_PRELOAD ASAN_OPTIONS=" .. os.getenv("SPEC_CHILD_ASAN_OPTIONS") .. " ") or ""
      return helper.sh(env .. "timeout -k 5 60 sh " .. helper.quote(sh) .. " " .. table.concat(args, " ")
                       .. " <" .. helper.quote(dir .. "/stdin"))
    end

    it("a store with no room when it opens (a new one; one whose WAL index cannot grow): exit 2, naming it, nothing run", function()
      local flow = helper.flow(COUNT, dir)
      local out, code = limited_run(8, line{ session = "u1", text = "x", n = 1 }, "host", "--store", store, flow)
      assert.are.equal(2, code, out)
      assert.are.equal("flowrun host: store " .. store .. ": disk I/O error\n", out)
      os.remove(store)
      local r = host(flow, line{ session = "u1", text = "x", n = 1 })
      assert.are.equal('{"session":"u1","ask":"more?","seq":1}\n{"session":"u1","stored":1}\n', r.stdout)
      out, code = limited_run(8, line{ session = "u1", text = "ada", n = 2 }, "host", "--store", store, flow)
      assert.are.equal(2, code, out)
      assert.are.equal("flowrun host: store " .. store .. ": disk I/O error\n", out)
      -- with room again, nothing was lost: the line is taken
      local r2 = host(flow, line{ session = "u1", text = "ada", n = 2 })
      assert.are.equal('{"session":"u1","say":"1 3","seq":2}\n{"session":"u1","ask":"more?","seq":3}\n'
                       .. '{"session":"u1","stored":2}\n', r2.stdout)
    end)

    it("flowrun run --store: exits 3 with the message once; run again, its sessions go on", function()
      local flow = helper.flow('for i = 1, 1000 do say(i) sleep(1) end\n', dir)
      local out, code = limited_run(4096, "", "run", "--sessions", "3", "--store", store, flow)
      assert.are.equal(3, code, out:sub(-500))
      local lines = helper.lines(out)
      assert.are.equal("flowrun: " .. failed(), lines[#lines])
      local r = helper.cli({ args = { "run", "--sessions", "3", "--store", store, flow } })
      assert.are.equal(0, r.code, r.stderr)
      local last = {}                   -- each session's numbers: 1 to 1000, in order, none missing
      for _, l in ipairs(lines) do
        local id, i = l:match("^%[(%d)%] (%d+)$")
        if id then assert.is_true(tonumber(i) <= (last[id] or 0) + 1, l) last[id] = tonumber(i) end
      end
      for _, l in ipairs(helper.lines(r.stdout)) do
        local id, i = l:match("^%[(%d)%] (%d+)$")
        assert.is_true(tonumber(i) <= (last[id] or 0) + 1, l)
        last[id] = tonumber(i)
      end
      assert.are.same({ ["1"] = 1000, ["2"] = 1000, ["3"] = 1000 }, last)
      assert.are.equal(#lines - 1, select(2, out:gsub("%[%d%] %d+\n", "")))   -- one line of stderr
    end)

    it("the Lua module: rt:api_node turning the loop raises naming the store, and so do rt:run, rt:step and rt:api_node after; nothing lost", function()
      local flow = helper.flow(COUNT, dir)
      local slow = helper.mock({ { path = "/v1/slow", delay_ms = 100, body = "ok" } })
      helper.integrations({ shop = { base_url = mock.url .. "/v1" }, slow = { base_url = slow.url .. "/v1" } }, dir)
      local script = helper.write(dir .. "/mod.lua", ([[
package.cpath = %q .. "/build/?.so;" .. package.cpath
local flowrun = require "flowrun"
local rt = flowrun.new{ integrations = %q, store = %q }
local function try(f, ...)
  local ok, e = pcall(f, ...)
  if not ok then return e end
  if f == rt.run and not e then return "run: not there in time" end
end
for i = 1, 3 do rt:start("u" .. i, %q, "x") end
local err = try(rt.run, rt, 10000)
for k = 1, 300 do                       -- the sessions run while api_node waits
  if err then break end
  for i = 1, 3 do err = err or try(rt.send, rt, "u" .. i, ("u" .. i):rep(2000), k) end
  err = err or try(rt.api_node, rt, { integration = "slow", path = "/slow", results = { "200" } })
end
print(err)
print(try(rt.run, rt, 10000))
print(try(rt.step, rt))
print(try(rt.api_node, rt, { integration = "shop", path = "/order/m", results = { "200" } }))
for _, e in ipairs(rt:events()) do
  if e.type == "stored" then print(e.session .. " " .. e.n) end
end
rt:close()
]]):format(helper.root, ifile, store, flow))
      local out, code = helper.sh("timeout -k 5 60 sh " .. helper.quote(limited(4096, "lua5.4")) .. " " .. helper.quote(script))
      assert.are.equal(0, code, out)
      local lines = helper.lines(out)
      assert.are.same({ failed(), failed(), failed(), failed() }, { lines[1], lines[2], lines[3], lines[4] })
      assert.are.equal(0, mock:count("/v1/order/m"))  -- not sent
      slow:stop()
      local acked = {}
      for i = 5, #lines do
        local id, n = lines[i]:match("^(u%d) (%d+)$")
        assert.are.equal((acked[id] or -1) + 1, tonumber(n), out)   -- in order, each once
        acked[id] = tonumber(n)
      end
      assert.is_true((acked.u1 or 0) + (acked.u2 or 0) + (acked.u3 or 0) >= 6, out)
      -- on the store again, with room: each goes on from its last acknowledged message
      local flowrun = helper.module()
      local rt = flowrun.new{ integrations = ifile, store = store }
      for _, id in ipairs({ "u1", "u2", "u3" }) do rt:send(id, "again", acked[id] + 1) end
      assert.is_true(rt:run())
      local said, stored = {}, {}
      for _, e in ipairs(rt:events()) do
        if e.type == "say" then said[e.session] = e.text end
        if e.type == "stored" then stored[#stored + 1] = e.session .. " " .. e.n end
      end
      table.sort(stored)
      assert.are.same({ "u1 " .. acked.u1 + 1, "u2 " .. acked.u2 + 1, "u3 " .. acked.u3 + 1 }, stored)
      assert.are.same({ u1 = acked.u1 + 1 .. " 5", u2 = acked.u2 + 1 .. " 5", u3 = acked.u3 + 1 .. " 5" }, said)
      rt:close()
    end)

    -- Where the commits in a WAL file end (bytes from its start).
    local function commits(wal)
      local d, ends = helper.read(wal) or "", {}
      if #d < 32 then return ends end
      local frame = 24 + string.unpack(">I4", d, 9)   -- a frame: its header and a page
      for off = 33, #d - frame + 1, frame do
        if string.unpack(">I4", d, off + 4) ~= 0 then ends[#ends + 1] = off - 1 + frame end
      end
      return ends
    end

    it("a host whose disk fills up at a turn's second commit (its outputs given, leaving the outbox): they come again, the same", function()
      local flow = helper.flow(COUNT, dir)
      local ids, m = { "u1", "u2", "u3" }, 7
      local function message(i, sent)     -- the i-th line: u2, u3, u1, u2, ...
        local id = ids[i % 3 + 1]
        sent[id] = (sent[id] or 0) + 1
        return id, sent[id], line{ session = id, text = sent[id] == 1 and "x" or id:rep(2000), n = sent[id] }
      end
      -- without a limit, on another store: where the two commits of line
      -- m's turn end in the WAL (the first stores the line, the second
      -- takes the given outputs out of the outbox)
      local probe, sent, before = dir .. "/probe.db", {}, nil
      local p = helper.cli_piped({ "host", "--store", probe, "-I", ifile, flow })
      for i = 1, m do
        local _, _, l = message(i, sent)
        before = #commits(probe .. "-wal")
        p:send(l:sub(1, -2))
        assert(helper.wait_for(function() return #commits(probe .. "-wal") >= before + 2 end, 20000), "no commit")
      end
      local ends = commits(probe .. "-wal")
      assert.are.equal(0, p:finish().code)
      assert.are.equal(before + 2, #ends)
      -- the same lines with the files limited to the end of line m's first commit
      local h = limited_host(math.ceil(ends[#ends - 1] / 512), flow)
      local id, n
      sent = {}
      local ok, err = pcall(function()
        for i = 1, m do
          local l
          id, n, l = message(i, sent)
          h.send(l)
          local ack = ('{"session":"%s","stored":%d}'):format(id, n)
          assert(helper.wait_for(function() return h.stdout():find(ack, 1, true) end, 20000), h.stdout())
        end
        assert(helper.wait_for(h.code, 20000), "the host did not exit")
      end)
      h.kill()
      assert(ok, err)
      assert.are.equal(3, h.code())
      assert.are.equal("flowrun: " .. failed() .. "\n", helper.read(dir .. "/err"))
      local out1 = events(h.stdout())
      local given = { out1[#out1 - 1], out1[#out1] }   -- line m's say and the ask after it
      assert.are.same({ id, ("%d 4000"):format(n - 1), id, "more?" },
                      { given[1].session, given[1].say, given[2].session, given[2].ask })
      -- with room: they come again, with their numbers; then the next line is taken
      local r = host(flow, line{ session = id, text = "again", n = n + 1 })
      assert.are.equal(0, r.code, r.stderr)
      local out2, stored2 = events(r.stdout)
      assert.are.same({ id .. ":" .. n + 1 }, stored2)
      assert.are.same(given, { out2[1], out2[2] })    -- the outbox's, first
      local texts = {}                  -- the replay may give one again: its number, its text
      for _, e in ipairs(out2) do
        assert.are.equal(texts[e.seq] or e.say or e.ask, e.say or e.ask)
        texts[e.seq] = e.say or e.ask
      end
      assert.are.same({ [given[1].seq] = given[1].say, [given[2].seq] = "more?",
                        [given[2].seq + 1] = ("%d 5"):format(n), [given[2].seq + 2] = "more?" }, texts)
    end)

    it("a host whose store fills up while it runs: exits 3 naming the store; a restart goes on from the last acknowledged message", function()
      local flow = helper.flow(COUNT, dir)
      local h = limited_host(4096, flow)
      local sent, acked, ids = {}, {}, { "u1", "u2", "u3" }
      local ok, err = pcall(function()
        for i = 1, 600 do               -- one line at a time, each acknowledged before the next
          local id = ids[i % 3 + 1]
          local n = (sent[id] or 0) + 1
          if h.code() then break end
          h.send(line{ session = id, text = n == 1 and "x" or id:rep(2000), n = n })
          sent[id] = n
          local ack = ('{"session":"%s","stored":%d}'):format(id, n)
          assert(helper.wait_for(function() return h.stdout():find(ack, 1, true) or h.code() end, 20000),
                 "neither an acknowledgement nor an exit: " .. h.stdout())
          if not h.stdout():find(ack, 1, true) then break end
          acked[id] = n
        end
        assert(helper.wait_for(h.code, 20000), "the host did not exit")
      end)
      h.kill()
      assert(ok, err)
      local r = { code = h.code(), stdout = h.stdout(), stderr = helper.read(dir .. "/err") or "" }
      assert.is_nil(helper.sanitizer_report(r.stderr))
      assert.are.equal(3, r.code, r.stderr)
      assert.are.equal("flowrun: " .. failed() .. "\n", r.stderr)
      local out1, stored1 = events(r.stdout)
      local n_acked = 0
      for _, id in ipairs(ids) do n_acked = n_acked + (acked[id] or 0) end
      assert.is_true(n_acked >= 6, "only " .. n_acked .. " acknowledged: raise the limit")
      assert.are.equal(n_acked, #stored1)             -- each acknowledged once, in order, none more
      -- the store holds exactly the messages acknowledged
      local l = helper.cli({ args = { "sessions", "--store", store, "--json" } })
      assert.are.equal(0, l.code, l.stderr)
      local held = {}
      for s in l.stdout:gmatch("[^\n]+") do local e = cjson.decode(s) held[e.session] = e.messages + 1 end
      assert.are.same(acked, held)
      -- restarted without the limit: the lines not acknowledged are sent
      -- again with their numbers, and one more for each session
      local input = ""
      for _, id in ipairs(ids) do
        for n = (acked[id] or 0) + 1, sent[id] + 1 do
          input = input .. line{ session = id, text = n == 1 and "x" or id:rep(2000), n = n }
        end
      end
      local r2 = host(flow, input)
      assert.are.equal(0, r2.code, r2.stderr)
      local out2, stored2 = events(r2.stdout)
      local want, said = {}, {}
      for _, id in ipairs(ids) do
        for n = (acked[id] or 0) + 1, sent[id] + 1 do want[#want + 1] = id .. ":" .. n end
      end
      table.sort(want)
      table.sort(stored2)
      assert.are.same(want, stored2)
      -- an output given before may come again (with its number, the same);
      -- each answer was counted once
      local seen = {}
      for _, e in ipairs(out1) do seen[e.session .. "#" .. e.seq] = e.say or e.ask end
      for _, e in ipairs(out2) do
        local before = seen[e.session .. "#" .. e.seq]
        if before then assert.are.equal(before, e.say or e.ask) end
        if e.say then said[e.session] = e.say end
      end
      for _, id in ipairs(ids) do assert.are.equal(("%d 4000"):format(sent[id]), said[id], r2.stdout) end
    end)
  end)

  it('refuses "n" without a store, and a session\'s first line that is not text', function()
    local flow = helper.flow('say("hi")\n', dir)
    local r = helper.cli({ args = { "host", "-I", ifile, flow }, stdin = line{ session = "u1", text = "x", n = 1 } })
    assert.matches('\\"n\\" numbers lines for a store: run with --store PATH', r.stdout, 1, true)
    local r2 = host(flow, line{ session = "u1", close = true, n = 1 } .. line{ session = "u1", text = "x", n = 0 })
    assert.matches('line 1 of a session starts it: \\"text\\", not \\"close\\"', r2.stdout, 1, true)
    assert.matches('\\"n\\": expected a whole number from 1', r2.stdout, 1, true)
  end)
end)
