-- Durable sessions of long-lived flows (README: Durable sessions): a
-- declarative flow keeps a snapshot at each step that waits instead of a
-- journal, so a fix to a later step reaches live sessions; an imperative
-- flow starts afresh with continue_as_new; a journal that grows long is
-- warned of.
local helper = require "spec.helper"
local cjson = require "cjson"

local function line(t) return cjson.encode(t) .. "\n" end

-- The output events of a run (acks apart), as "kind text" strings.
local function said(stdout)
  local out = {}
  for l in stdout:gmatch("[^\n]+") do
    local ev = cjson.decode(l)
    if ev.say then out[#out + 1] = "say " .. ev.say
    elseif ev.ask then out[#out + 1] = "ask " .. ev.ask
    elseif ev["end"] then out[#out + 1] = "end " .. ev["end"]
    elseif ev.error then out[#out + 1] = "error " .. ev.error end
  end
  return out
end

local ORDER = [[
local flow = require "flowrun.flow"
return flow.define {
  start = "ask_name",
  steps = {
    ask_name = flow.ask { prompt = "name?", save = "name", next = "lookup" },
    lookup = flow.api { integration = "shop", path = "/order/{id}",
                        params = function(s) return { id = s.name } end,
                        save = "order", on = { ["200"] = "note", other = flow.END, error = flow.END,
                                               timeout = flow.END, ["max-connection"] = flow.END } },
    note = function(s)
      s.n = (s.n or 0) + 1
      s.list = { 1, 2.5, "x", json.null, deep = { true, { "y" } } }
      s.list.again = s.list.deep
      return "noted"
    end,
    noted = flow.say { text = "noted", next = "ask_more" },
    ask_more = flow.ask { prompt = function(s) return "more, " .. s.name .. "?" end,
                          save = "more", next = "bye" },
    bye = flow.say { text = function(s)
      return table.concat({ s.name, s.more, s.n, s.order.json.status, s.order.status,
                            s.order.headers["content-type"], s.list[2], tostring(s.list[4] == json.null),
                            math.type(s.list[1]), s.list.deep[2][1], s.list.again[2][1],
                            tostring(s.list.again == s.list.deep) }, "/")
    end, next = flow.END },
  },
}
]]

describe("durable sessions of long-lived flows", function()
  local mock, dir, ifile, store
  before_each(function() mock, dir, ifile, store = helper.shop_and_store() end)
  after_each(function() mock:stop() end)
  teardown(helper.cleanup)

  local function host(flow, input, extra) return helper.store_host(store, ifile, flow, input, extra) end

  -- flowrun sessions --json: id -> { state, journal length }
  local function sessions()
    local r = helper.cli({ args = { "sessions", "--store", store, "--json" } })
    assert.are.equal(0, r.code, r.stderr)
    local got = {}
    for l in r.stdout:gmatch("[^\n]+") do
      local e = cjson.decode(l)
      got[e.session] = { state = e.state, journal = e.journal, note = e.note }
    end
    return got
  end

  describe("a declarative flow", function()
    it("goes on from its snapshot, the session table as it was; a fix to a later step reaches it", function()
      local flow = helper.flow(ORDER, dir, "order.lua")
      local r = host(flow, line{ session = "u1", text = "x" } .. line{ session = "u1", text = "ada" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "say name?", "say noted", "ask more, ada?" }, said(r.stdout))
      -- its journal is the snapshot taken at "ask_more", not a record per effect
      assert.are.same({ state = "waiting", journal = 1 }, sessions().u1)
      helper.write(flow, (ORDER:gsub('return table.concat', 'return "fixed " .. table.concat')))
      local r2 = host(flow, line{ session = "u1", text = "more!" })
      assert.are.equal(0, r2.code, r2.stderr)
      assert.are.same({ "say fixed ada/more!/1/shipped/200/application/json/2.5/true/integer/y/y/false",
                        "end done" }, said(r2.stdout))
      assert.are.equal(1, mock:count("/v1/order/ada"), "the call is not made again")
    end)

    it("goes on from its last snapshot when its top level made effects (stored with the first, in one row)", function()
      local flow = helper.flow([[
local flow = require "flowrun.flow"
local started = os.time()
return flow.define { start = "one", steps = {
  one = flow.ask { prompt = "one?", save = "a", next = "two" },
  two = flow.ask { prompt = "two?", save = "b", next = "three" },
  three = flow.ask { prompt = "three?", save = "c", next = "bye" },
  bye = flow.say { text = function(s) return s.a .. s.b .. s.c end, next = flow.END },
} }
]], dir, "top.lua")
      host(flow, line{ session = "u1", text = "x" })
      host(flow, line{ session = "u1", text = "A" })
      host(flow, line{ session = "u1", text = "B" })
      assert.are.same({ state = "waiting", journal = 2 }, sessions().u1)   -- os.time and the snapshot
      local r = host(flow, line{ session = "u1", text = "C" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "say ABC", "end done" }, said(r.stdout))
    end)

    it("keeps its journal short however long the conversation", function()
      local flow = helper.flow([[
local flow = require "flowrun.flow"
return flow.define { start = "ask", steps = {
  ask = flow.ask { prompt = "n?", save = "last", next = function(s) return s.last == "stop" and "bye" or "look" end },
  look = flow.api { integration = "shop", path = "/order/{id}", params = function(s) return { id = s.last } end,
                    on = { ["200"] = function(s) s.count = (s.count or 0) + 1 return "ask" end,
                           other = flow.END, error = flow.END, timeout = flow.END, ["max-connection"] = flow.END } },
  bye = flow.say { text = function(s) return "count " .. s.count end, next = flow.END },
} }
]], dir, "loop.lua")
      local input = {}
      for i = 1, 30 do input[#input + 1] = line{ session = "u1", text = tostring(i) } end
      local r = host(flow, table.concat(input))
      assert.are.equal(0, r.code, r.stderr)
      assert.is_true(sessions().u1.journal <= 2, "journal " .. sessions().u1.journal)
      local r2 = host(flow, line{ session = "u1", text = "stop" })
      assert.are.same({ "say count 29", "end done" }, said(r2.stdout))
    end)

    it("goes on in the file it was handed over to (\"flow:PATH\")", function()
      helper.flow([[
local flow = require "flowrun.flow"
return flow.define { start = "q", steps = {
  q = flow.ask { prompt = "second?", save = "b", next = "done" },
  done = flow.say { text = function(s) return s.a .. "+" .. s.b end, next = flow.END },
} }
]], dir, "second.lua")
      local first = helper.flow([[
local flow = require "flowrun.flow"
return flow.define { start = "q", steps = {
  q = flow.ask { prompt = "first?", save = "a", next = "flow:second.lua" },
} }
]], dir, "first.lua")
      host(first, line{ session = "u1", text = "x" } .. line{ session = "u1", text = "A" })
      local r = host(first, line{ session = "u1", text = "B" })
      assert.are.same({ "say A+B", "end done" }, said(r.stdout))
    end)

    for _, case in ipairs({
      { "a function", "s.cb = print", "session.cb is a function" },
      { "a coroutine", "s.co = coroutine.create(print)", "session.co is a thread" },
      { "a table with a metatable", "s.t = { x = setmetatable({}, {}) }", "session.t.x is a table with a metatable" },
      { "a cycle", "s.a = { b = {} }; s.a.b.c = s.a", "session.a.b.c refers back to session.a (a cycle)" },
      { "a table as a key", "s.k = { [{}] = 1 }", "session.k has a table as a key" },
    }) do
      it("fails a session whose table holds " .. case[1] .. ", naming the step and the key", function()
        local flow = helper.flow(([[
local flow = require "flowrun.flow"
return flow.define { start = "set", steps = {
  set = function(s) %s return "wait" end,
  wait = flow.ask { prompt = "?", next = flow.END },
} }
]]):format(case[2]), dir, "bad.lua")
        local r = host(flow, line{ session = "u1", text = "x" })
        local ends = {}
        for l in r.stdout:gmatch("[^\n]+") do
          local ev = cjson.decode(l)
          if ev["end"] then ends[#ends + 1] = ev.error end
        end
        assert.are.equal(1, #ends, r.stdout)
        assert.matches(flow .. ':4: step "wait": ' .. case[3] .. ": session can hold only nil, booleans,"
                       .. " numbers, strings, json.null and tables of them", ends[1], 1, true)
      end)
    end

    it("fails (or with --on-mismatch park, parks) a session whose step is gone from the flow", function()
      local flow = helper.flow(ORDER, dir, "order.lua")
      host(flow, line{ session = "u1", text = "x" } .. line{ session = "u1", text = "ada" })
      host(flow, line{ session = "u2", text = "x" } .. line{ session = "u2", text = "bob" })
      helper.write(flow, (ORDER:gsub("ask_more", "ask_again")))
      local parked = host(flow, line{ session = "u2", text = "more" }, { "--on-mismatch", "park" })
      assert.matches('"end":"parked"', parked.stdout, 1, true)
      assert.are.equal("parked", sessions().u2.state)
      local msg = flow .. ': a session waits at step "ask_more", which is gone from the flow'
      assert.matches(msg, sessions().u2.note, 1, true)
      local r = host(flow, line{ session = "u1", text = "more" })
      local ev = cjson.decode(r.stdout:match("[^\n]+"))
      assert.are.equal("error", ev["end"])
      assert.matches(msg, ev.error, 1, true)
    end)
  end)

  it("restores a session started with 70 arguments, and a declarative one, from the Lua module", function()
    local flowrun = helper.module()
    local many = helper.flow('local a = ask("?") say(select("#", ...) .. " " .. select(70, ...) .. " " .. a)',
                             dir, "many.lua")
    local order = helper.flow(ORDER, dir, "order.lua")
    local rt = flowrun.new{ integrations = ifile, store = store }
    local args = {}
    for i = 1, 70 do args[i] = "a" .. i end
    rt:start("m", many, table.unpack(args))
    rt:start("d", order, "x")
    rt:send("d", "ada", 1)
    assert.is_true(rt:run())
    rt:close()
    rt = flowrun.new{ integrations = ifile, store = store }
    rt:send("m", "x", 1)
    rt:send("d", "more", 2)
    assert.is_true(rt:run())
    local got = {}
    for _, e in ipairs(rt:events()) do
      if e.type == "say" then got[e.session] = e.text end
    end
    rt:close()
    assert.are.same({ m = "70 a70 x", d = "ada/more/1/shipped/200/application/json/2.5/true/integer/y/y/false" }, got)
  end)

  it("stops a session that waits in the store only (stop reaches it there too)", function()
    local flowrun = helper.module()
    local flow = helper.flow('ask("?") say("never")', dir, "w.lua")
    local rt = flowrun.new{ store = store }
    rt:start("u1", flow)
    rt:start("u2", flow)
    assert.is_true(rt:run())
    rt:close()
    rt = flowrun.new{ store = store }
    assert.are.equal(0, rt:sessions())
    rt:stop("u1")
    assert.has_error(function() rt:stop("u3") end)
    assert.is_true(rt:run())
    rt:close()
    assert.are.same({ u2 = { state = "waiting", journal = 0 } }, sessions())
  end)

  it("takes the store's limits from the Lua module: ttl_s closes a silent session's channel", function()
    local flowrun = helper.module()
    local flow = helper.flow('local a = ask("name?") if a == nil then say("bye") return end say(a)', dir, "t.lua")
    assert.has_error(function() flowrun.new{ store = { path = store, ttl = 1 } } end,
      "flowrun.new: store: unknown key 'ttl' (path, resident, idle_ms, ttl_s, keep_ended_s, lease_ms, park, node)")
    assert.has_error(function() flowrun.new{ store = { path = store, ttl_s = -1 } } end,
      "flowrun.new: store.ttl_s: expected a whole number >= 0")
    local rt = flowrun.new{ store = { path = store, ttl_s = 1, resident = 10, idle_ms = 60000, park = true } }
    rt:start("u1", flow)
    local bye
    for _ = 1, 60 do
      rt:step(100)
      for _, e in ipairs(rt:events()) do
        if e.type == "say" and e.text == "bye" then bye = e.session end
      end
      if bye then break end
    end
    rt:close()
    assert.are.equal("u1", bye)
  end)

  it("lets the row of a session ended longer than --keep-ended go (kept 7 days by default)", function()
    local flow = helper.flow('say("hi")', dir, "hi.lua")
    host(flow, line{ session = "old", text = "x", n = 1 })
    assert.are.same({ old = { state = "ended", journal = 0 } }, sessions())
    local h = helper.cli_piped({ "host", "--store", store, "--keep-ended", "1", flow })
    h:send(line{ session = "new", text = "x", n = 1 }:sub(1, -2))
    assert(helper.wait_for(function() return next(sessions()) == nil end, 15000), "rows left")
    h:send(line{ session = "old", text = "x", n = 1 }:sub(1, -2))   -- unknown now: it starts anew
    assert(helper.wait_for(function() return h:stdout():find('"session":"old","say":"hi"', 1, true) end, 15000))
    local r = h:finish()
    assert.are.equal(0, r.code, r.stderr)
    local bad = helper.cli({ args = { "host", "--store", store, "--keep-ended", "-1", flow } })
    assert.are.equal(2, bad.code)
    assert.matches("--keep-ended: expected a whole number >= 0, got '-1'", bad.stderr, 1, true)
  end)

  it("does not run a flow's <close> variables when its session leaves memory, only when it ends", function()
    local flowrun = helper.module()
    local flow = helper.flow([[
local t <close> = setmetatable({}, { __close = function() log.info("closed") end })
local a = ask("?")
say("got " .. a)
]], dir, "close.lua")
    local rt = flowrun.new{ store = { path = store, idle_ms = 300 } }
    rt:start("u1", flow)
    assert.is_true(rt:run())
    rt:step(1600)                       -- idle: it leaves memory
    assert.are.equal(0, rt:sessions())
    local function said()
      local got = {}
      for _, e in ipairs(rt:events()) do
        if e.type == "log" or e.type == "say" then got[#got + 1] = e.text or e.message end
      end
      table.sort(got)
      return got
    end
    assert.are.same({}, said())
    rt:send("u1", "x")
    assert.is_true(rt:run())
    assert.are.same({ "closed", "got x" }, said())
    rt:close()
  end)

  describe("continue_as_new", function()
    local COUNTER = [[
local total = tonumber(... or "0")
local a = ask("number?")
if a == nil then say("bye " .. total) return end
total = total + tonumber(a)
say("total " .. total)
continue_as_new(total)
]]

    it("starts the flow afresh with new arguments; the journal holds one record; restarts go on", function()
      local flow = helper.flow(COUNTER, dir, "counter.lua")
      local r = host(flow, line{ session = "u1", text = "5" } .. line{ session = "u1", text = "7" })
      assert.are.same({ "say number?", "say total 12", "ask number?" }, said(r.stdout))
      assert.are.same({ state = "waiting", journal = 1 }, sessions().u1)
      for i = 1, 3 do host(flow, line{ session = "u1", text = tostring(i) }) end
      assert.are.same({ state = "waiting", journal = 1 }, sessions().u1)
      local r2 = host(flow, line{ session = "u1", close = true })
      assert.are.same({ "say bye 18", "end done" }, said(r2.stdout))
    end)

    it("restarts without a store too, its <close> variables closed, with new globals", function()
      local flow = helper.flow([[
local n = tonumber(... or "0")
local t <close> = setmetatable({}, { __close = function() log.info("closed " .. n) end })
say(n .. " " .. tostring(seen))
seen = true
if n < 2 then continue_as_new(n + 1) end
]], dir, "restart.lua")
      local r = helper.cli({ args = { "run", flow, "0" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("0 nil\n1 nil\n2 nil\n", r.stdout)
      assert.are.equal("info: closed 0\ninfo: closed 1\ninfo: closed 2\n", r.stderr)
    end)

    it("refuses arguments a store cannot hold, and is not for declarative flows or coroutines", function()
      local flow = helper.flow("ask('?') continue_as_new(1, { f = print })", dir, "args.lua")
      local r = host(flow, line{ session = "u1", text = "x" } .. line{ session = "u1", text = "y" })
      assert.matches(flow .. ":1: continue_as_new's arguments[2].f is a function", r.stdout, 1, true)
      local co = helper.flow("coroutine.wrap(function() continue_as_new() end)()", dir, "co.lua")
      local r2 = helper.cli({ args = { "run", co } })
      assert.matches("continue_as_new: call it from the flow, not from a coroutine it made", r2.stderr, 1, true)
      local decl = helper.flow([[
local flow = require "flowrun.flow"
return flow.define { start = "a", steps = { a = function() continue_as_new() end } }
]], dir, "decl.lua")
      local r3 = helper.cli({ args = { "run", decl } })
      assert.matches("continue_as_new: a declarative flow needs none", r3.stderr, 1, true)
    end)

    it("warns once when a journal passes 10 000 records", function()
      local flow = helper.flow([[
ask("go?")
for i = 1, 10005 do os.time() end
ask("again?")
]], dir, "long.lua")
      local r = host(flow, line{ session = "u1", text = "x" } .. line{ session = "u1", text = "go" })
      assert.are.equal(0, r.code, r.stderr)
      local _, n = r.stderr:gsub("holds 10000 records", "")
      assert.are.equal(1, n, r.stderr)
      assert.matches("[u1] warn: the journal of session u1 holds 10000 records: a restart replays them all;"
                     .. " a long-lived flow starts afresh with continue_as_new", r.stderr, 1, true)
    end)
  end)

  describe("review findings", function()
    it("fails only the session whose journal row is damaged; the others go on", function()
      local flow = helper.flow('local a = os.time() local b = math.random(9) local n = ask("n?") say("got " .. n)', dir, "d.lua")
      host(flow, line{ session = "u1", text = "x" } .. line{ session = "u2", text = "x" })
      assert(os.execute("sqlite3 " .. helper.quote(store) .. " \"UPDATE journal SET result = x'0102' WHERE session = 'u1' AND kind < 0\""))
      local r = host(flow, line{ session = "u1", text = "1" } .. line{ session = "u2", text = "2" })
      local ends, says = {}, {}
      for l in r.stdout:gmatch("[^\n]+") do
        local ev = cjson.decode(l)
        if ev["end"] then ends[ev.session] = ev["end"] .. " " .. (ev.error or "") end
        if ev.say then says[#says + 1] = ev.session .. " " .. ev.say end
      end
      assert.matches("^error store .*: session u1: a damaged journal row", ends.u1)
      assert.are.same({ "u2 got 2" }, says)
      assert.are.equal("done ", ends.u2)
    end)

    it("fails a flow that starts afresh 1000 times without a wait, and one that gives session a new table", function()
      local flow = helper.flow("local a = ask() continue_as_new(a)", dir, "loop.lua")
      local r = helper.cli({ args = { "host", flow }, stdin = line{ session = "u1", text = "x" }, timeout = 30 })
      assert.matches('"end":"error","error":"continue_as_new: 1000 fresh starts without a wait (ask, sleep or api_node)'
                     .. ' between them: the flow loops without end', r.stdout, 1, true)
      local decl = helper.flow([[
local flow = require "flowrun.flow"
return flow.define { start = "a", steps = {
  a = function() session = { name = "new" } return "b" end,
  b = flow.say { text = "hi", next = flow.END },
} }
]], dir, "replaced.lua")
      local r2 = helper.cli({ args = { "run", decl } })
      assert.are.equal(1, r2.code)
      assert.matches(decl .. ':4: step "b": the global session was given a new table; a step changes its fields'
                     .. ' (session.x = ...) and keeps the table', r2.stderr, 1, true)
    end)

    -- sqlite3 on the store: the way a damaged row is made
    local function sql(q)
      local ok = os.execute("sqlite3 " .. helper.quote(store) .. " " .. helper.quote(q))
      assert(ok, q)
    end

    it("refuses continue_as_new where the flow cannot yield (a table.sort comparator); the session goes on", function()
      local flow = helper.flow([[
local n = tonumber((...)) or 0
local ok, err = pcall(table.sort, { 3, 1, 2 }, function() continue_as_new(n + 1) end)
say(tostring(ok) .. " " .. err)
local a = ask("next?")
say("got " .. a)
]], dir, "sort.lua")
      local r = host(flow, line{ session = "u1", text = "x", n = 1 })
      assert.are.equal(0, r.code, r.stderr)
      local out = said(r.stdout)
      assert.are.equal(2, #out, r.stdout)
      assert.matches("^say false .*sort.lua:2: continue_as_new: cannot start afresh here %(inside a metamethod"
                     .. " or a C function that cannot yield%)$", out[1])
      assert.are.equal("ask next?", out[2])
      local r2 = host(flow, line{ session = "u1", text = "y", n = 2 })
      assert.are.equal(0, r2.code, r2.stderr)
      assert.are.same({ "say got y", "end done" }, said(r2.stdout))
    end)

    it("closes continue_as_new's <close> variables within the session's limits; an error there fails it", function()
      local boom = helper.flow([[
local n = tonumber((...)) or 0
local t <close> = setmetatable({}, { __close = function() if n == 1 then error("close boom") end end })
say("n " .. n)
if n < 3 then continue_as_new(n + 1) end
]], dir, "boom.lua")
      local r = helper.cli({ args = { "run", boom, "0" } })
      assert.are.equal(1, r.code, r.stderr)
      assert.are.equal("n 0\nn 1\n", r.stdout)
      assert.matches("boom.lua:2: close boom", r.stderr, 1, true)
      local loop = helper.flow([[
local n = tonumber((...)) or 0
local t <close> = setmetatable({}, { __close = function() if n == 1 then while true do end end end })
say("n " .. n)
continue_as_new(n + 1)
]], dir, "loop.lua")
      local r2 = helper.cli({ args = { "run", "--limit", "instructions=1000000", loop, "0" }, timeout = 20 })
      assert.are.equal(1, r2.code, r2.stderr)
      assert.are.equal("n 0\nn 1\n", r2.stdout)
      assert.matches("instruction limit: 1000000 instructions without waiting", r2.stderr, 1, true)
    end)

    it("journals what continue_as_new's <close> variables do before the fresh start: a restart replays the new run",
       function()
      local flow = helper.flow([[
local total = tonumber((...)) or 0
local c <close> = setmetatable({}, { __close = function() say("closing " .. total) end })
local a = ask("number?")
total = total + tonumber(a)
continue_as_new(total)
]], dir, "closing.lua")
      local r = host(flow, line{ session = "u1", text = "x", n = 1 })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "ask number?" }, said(r.stdout))
      r = host(flow, line{ session = "u1", text = "5", n = 2 })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "say closing 5", "ask number?" }, said(r.stdout))
      assert.are.same({ state = "waiting", journal = 1 }, sessions().u1)
      r = host(flow, line{ session = "u1", text = "6", n = 3 })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "say closing 11", "ask number?" }, said(r.stdout))
    end)

    it("leaves a waiting session's <close> variables alone when the host exits (it goes on from the store)", function()
      local flow = helper.flow([[
local t <close> = setmetatable({}, { __close = function() say("closed") end })
local a = ask("?")
say("got " .. a)
]], dir, "exit.lua")
      local r = host(flow, line{ session = "u1", text = "x", n = 1 })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "ask ?" }, said(r.stdout))
      r = host(flow, line{ session = "u1", text = "y", n = 2 })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "say got y", "say closed", "end done" }, said(r.stdout))
    end)

    it("fails a session whose stored fresh start is damaged with a clear message (no crash)", function()
      local flow = helper.flow([[
local n = tonumber((...)) or 0
local a = ask("n " .. n)
continue_as_new(n + 1)
]], dir, "again.lua")
      -- the arguments' table with only n: huge, over 2^31, negative
      for i, n in ipairs({ "FFFFFF7F00000000", "FFFFFFFF00000000", "FBFFFFFFFFFFFFFF" }) do
        local id = "u" .. i
        host(flow, line{ session = id, text = "x", n = 1 } .. line{ session = id, text = "go", n = 2 })
        assert.are.same({ state = "waiting", journal = 1 }, sessions()[id])
        sql("UPDATE journal SET result = X'7B53010000006E49" .. n .. "7D' WHERE session = '" .. id .. "'")
        local r = host(flow, line{ session = id, text = "y", n = 3 })
        assert.are.equal(1, r.code, r.stderr)
        assert.are.same({ "end error", "error line 1: no session " .. id }, said(r.stdout))
        assert.matches('"error":"the stored state is damaged (not a snapshot of this flowrun)"', r.stdout, 1, true)
      end
    end)

    it("goes on at the step a session waits at when a step before it, without effects, is renamed", function()
      local src = [[
local flow = require "flowrun.flow"
return flow.define {
  start = "hello",
  steps = {
    hello = flow.say { text = "hello", next = "prepare" },
    prepare = function(s) s.greeting = "hi" return "name" end,
    name = flow.ask { prompt = "name?", save = "name", next = "bye" },
    bye = flow.say { text = function(s) return s.greeting .. " " .. s.name end, next = flow.END },
  },
}
]]
      local flow = helper.flow(src, dir, "renamed.lua")
      local r = host(flow, line{ session = "u1", text = "x", n = 1 })
      assert.are.same({ "say hello", "ask name?" }, said(r.stdout))
      helper.flow(src:gsub('"prepare"', '"prep"'):gsub("prepare =", "prep ="), dir, "renamed.lua")
      r = host(flow, line{ session = "u1", text = "ada", n = 2 })
      assert.are.equal(0, r.code, r.stdout)
      assert.are.same({ "say hi ada", "end done" }, said(r.stdout))
    end)

    it("fails a session whose snapshot is not a table with a clear message", function()
      local flow = helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "hello",
  steps = {
    hello = flow.say { text = "hello", next = "name" },
    name = flow.ask { prompt = "name?", save = "name", next = "bye" },
    bye = flow.say { text = function(s) return "bye " .. s.name end, next = flow.END },
  },
}
]], dir, "snap.lua")
      local r = host(flow, line{ session = "u1", text = "x", n = 1 })
      assert.are.same({ "say hello", "ask name?" }, said(r.stdout))
      sql("UPDATE journal SET result = CAST(substr(result, 1, instr(result, X'00')) AS BLOB) || X'490100000000000000'"
          .. " WHERE kind = 10")
      r = host(flow, line{ session = "u1", text = "ada", n = 2 })
      assert.are.equal(1, r.code, r.stderr)
      assert.are.same({ "end error" }, said(r.stdout))
      assert.matches('"error":"the stored state is damaged (not a snapshot of this flowrun)', r.stdout, 1, true)
    end)
  end)
end)
