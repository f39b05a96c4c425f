-- `flowrun test` and require "flowrun.test" (README: Testing flows):
-- conversations against stubs on a virtual clock, a readable failure,
-- mistakes at file:line, the same result every time, coverage.
local helper = require "spec.helper"
local cjson = require "cjson"

local function test(args, cwd) return helper.cli({ args = { "test", table.unpack(args) }, cwd = cwd }) end

local function copy_demo(dir)
  for _, f in ipairs({ "order_status.lua", "integrations.lua", "order_status_test.lua", "greeting_test_lines.lua" }) do
    helper.write(dir .. "/" .. f, helper.read("scripts/demo/" .. f))
  end
end

describe("flowrun test", function()
  teardown(helper.cleanup)

  it("runs the tests of every flow under scripts/: ok per test, the closing count, exit 0, coverage 100 %, the same each time", function()
    local dir = helper.tmpdir()
    local r = test({ "--coverage", dir .. "/cov.json", "scripts" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("^ok 1 %- scripts/demo/order_status_imperative_test.lua: an order that shipped", r.stdout)
    assert.is_nil(r.stdout:find("not ok", 1, true))
    assert.matches("\n1..43\n", r.stdout, 1, true)
    assert.matches("\n43 passed, 0 failed\n$", r.stdout)
    assert.matches("\ncoverage of scripts/demo/order_status.lua\n"
                   .. "  lookup:                100%  200 404 other error timeout max-connection\n", r.stdout, 1, true)
    assert.matches("labels 40 of 40 (100 %), steps 31 of 31 (100 %), edges 48 of 48 (100 %)", r.stdout, 1, true)
    local cov = cjson.decode(helper.read(dir .. "/cov.json"))
    assert.are.same({ 40, 40 }, cov.labels)
    assert.are.same({ 28, 28 }, cov.lines)
    assert.matches("edges 48 of 48 (100 %), lines 28 of 28 (100 %)", r.stdout, 1, true)
    assert.are.equal("scripts/demo/order_status_imperative.lua", cov.flows[1].flow)
    assert.are.equal("scripts/demo/order_status_imperative.lua:9", cov.flows[1].nodes[1].at)
    for _ = 1, 5 do assert.are.equal(r.stdout, test({ "--coverage", "scripts" }).stdout) end
  end)

  it("shows the labels a node never took", function()
    local dir = helper.tmpdir()
    copy_demo(dir)
    helper.write(dir .. "/one_test.lua", [[
return {
  flow = "order_status.lua", integrations = "integrations.lua",
  stubs = { stub { path = "/orders/.*", reply = { status = 200, json = { status = "s", eta = "e" } } } },
  test "one" { include "greeting_test_lines.lua", user "1", label "200" },
}
]])
    local r = test({ "--coverage", "one_test.lua" }, dir)
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("  lookup:                 16%  200 [404] [other] [error] [timeout] [max-connection]\n", r.stdout, 1, true)
    assert.matches("  steps never reached: not_found, slow, sorry\n", r.stdout, 1, true)
  end)

  it("counts the lines of a script its tests run, and names those never run", function()
    local dir = helper.tmpdir()
    copy_demo(dir)
    helper.write(dir .. "/order_status_imperative.lua", helper.read("scripts/demo/order_status_imperative.lua"))
    helper.write(dir .. "/one_test.lua", [[
return {
  flow = "order_status_imperative.lua", integrations = "integrations.lua",
  stubs = { stub { path = "/orders/.*", reply = { status = 200, json = { status = "s", eta = "e" } } } },
  test "one" { include "greeting_test_lines.lua", user "1", label "200" },
}
]])
    local r = test({ "--coverage", "c.json", "one_test.lua" }, dir)
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    -- 17 lines hold code; the 404, timeout and other branches (and the jump after the last) never ran
    assert.matches("  lines:                  64%  11 of 17; never run: 17, 18, 19, 20, 22, 23\n", r.stdout, 1, true)
    local cov = cjson.decode(helper.read(dir .. "/c.json"))
    assert.are.same({ 11, 17 }, cov.lines)
    assert.are.same({ 17, 18, 19, 20, 22, 23 }, cov.flows[1].lines_never_run)
    assert.are.same({ 5, 7, 8, 9, 10, 11, 12, 13, 15, 16, 25 }, cov.flows[1].lines_run)
  end)

  it("fails a test when a route is swapped, with what was expected, what was said and the calls", function()
    local dir = helper.tmpdir()
    copy_demo(dir)
    local flow = helper.read(dir .. "/order_status.lua")
    local swapped = flow:gsub('%["200"%] = "found", %["404"%] = "not_found"', '["200"] = "not_found", ["404"] = "found"')
    assert.are_not.equal(flow, swapped)
    helper.write(dir .. "/order_status.lua", swapped)
    local r = test({ "--junit", "junit.xml", "order_status_test.lua" }, dir)
    assert.are.equal(1, r.code, r.stderr)
    local junit = helper.read(dir .. "/junit.xml")
    assert.matches('<testsuites name="flowrun test" tests="6" failures="2">', junit, 1, true)
    assert.matches('<testcase classname="order_status_test.lua" name="an order that shipped">\n'
      .. '      <failure message="order_status_test.lua:17: expected the bot to say &quot;Order 42 is shipped; it arrives tomorrow.&quot;, '
      .. 'it said &quot;I found no order 42. Check the number and try again.&quot;">', junit, 1, true)
    assert.matches('    <testcase classname="order_status_test.lua" name="the shop when it is slow, broken, busy or odd: slow"/>\n', junit, 1, true)
    assert.matches("not ok 1 %- order_status_test.lua: an order that shipped\n"
      .. "# order_status_test.lua:17: expected the bot to say \"Order 42 is shipped; it arrives tomorrow.\", "
      .. "it said \"I found no order 42. Check the number and try again.\"\n# what happened:\n"
      .. "#   bot:  Hi! I can tell you where your order is.\n"
      .. "#   bot:  Your order number%? %(empty line to leave%)\n#   user: 42\n"
      .. "#   call: GET http://127.0.0.1:8080/v1/orders/42 %-> 200 %(step lookup%)\n"
      .. "#   bot:  I found no order 42. Check the number and try again.\n", r.stdout)
    assert.matches("\n1..6\n4 passed, 2 failed\n$", r.stdout)
  end)

  it("says which stubs a call did not match and why; plays replies in sequence; waits on the clock", function()
    local dir = helper.tmpdir()
    helper.write(dir .. "/integrations.lua", 'return { shop = { base_url = "http://127.0.0.1:9/v1", timeout_ms = 2000 } }')
    helper.write(dir .. "/flow.lua", [[
local n = 0
for i = 1, 3 do
  local label, res = api_node{ integration = "shop", method = "POST", path = "/tickets", body = "hi",
                               headers = { ["Content-Type"] = "text/plain" }, results = { "201" } }
  say(i .. " " .. label .. " " .. res.elapsed_ms)
end
ask("more?")
say(os.date("!%H:%M:%S"))
local label, res = api_node{ integration = "shop", path = "/users/ada", results = { "200" } }
say(label .. " " .. (res.error or ""))
]])
    helper.write(dir .. "/flow_test.lua", [[
return {
  flow = "flow.lua", integrations = "integrations.lua",
  stubs = {
    stub { method = "POST", path = "/tickets", body = "hi",
           replies = { { status = 503, delay_ms = 10 }, { status = 201, delay_ms = 20 } } },
    stub { path = "/users/%d+", reply = { status = 200 } },
    stub { integration = "shop", method = "POST", path = "/users/ada", reply = { status = 200 } },
  },
  test "tickets, a wait, a user no stub has" {
    bot "1 other 10", bot "2 201 20", bot "3 201 20", bot "more?",
    wait(90 * 60 * 1000), user "yes",
    bot "01:30:00",
    bot { match = "^error no stub answers GET shop /users/ada" },
    done(),
  },
}
]])
    -- the call no stub answers fails the test, naming each stub at its line
    -- and why it did not match; the flow got label error with that message
    local r3 = test({ "flow_test.lua" }, dir)
    assert.are.equal(1, r3.code)
    assert.matches("\n#   bot:  01:30:00\n", r3.stdout, 1, true)
    assert.matches("\n#   call: GET http://127.0.0.1:9/v1/users/ada -> error (./flow.lua:9)\n", r3.stdout, 1, true)
    assert.are.equal(r3.stdout, test({ "flow_test.lua" }, dir).stdout)
    assert.matches("not ok 1 - flow_test.lua: tickets, a wait, a user no stub has\n"
      .. "# no stub answers GET shop /users/ada:\n"
      .. "#   flow_test.lua:4: method POST, not GET\n"
      .. "#   flow_test.lua:6: path /users/%d+ does not match /users/ada\n"
      .. "#   flow_test.lua:7: method POST, not GET\n"
      .. "# what happened:\n", r3.stdout, 1, true)   -- the replies in sequence: no other failure
  end)

  it("reports the mistakes of a test file at file:line, exit 2, running nothing", function()
    local dir = helper.tmpdir()
    copy_demo(dir)
    helper.write(dir .. "/bad_test.lua", [[
return {
  flow = "order_status.lua", integrations = "integrations.lua",
  stubs = { stub { path = "/orders/1", reply = { stauts = 200 } } },
  test "x" { bogus = 1, bot "Hi" },
  test "y" { label { "200", at = "lokup" }, state { step = "ask_ordr" } },
}
]])
    local r = test({ "bad_test.lua" }, dir)
    assert.are.equal(2, r.code)
    assert.are.equal("", r.stdout)
    assert.matches("bad_test.lua:3: reply: unknown key 'stauts' (status, headers, json, body, delay_ms, fault, message)\n",
                   r.stderr, 1, true)
    assert.matches('bad_test.lua:4: test "x": unknown key \'bogus\' (args, stubs, rows, session, id)', r.stderr, 1, true)
    helper.write(dir .. "/bad_test.lua", (helper.read(dir .. "/bad_test.lua"):gsub("stauts", "status"):gsub("bogus = 1, ", "")))
    local r2 = test({ "bad_test.lua" }, dir)
    assert.are.equal(2, r2.code)
    assert.matches('bad_test.lua:5: label: no step "lokup" in ./order_status.lua', r2.stderr, 1, true)
    assert.matches('bad_test.lua:5: state: no step "ask_ordr" in ./order_status.lua', r2.stderr, 1, true)
    local none = test({ helper.tmpdir() })
    assert.are.equal(2, none.code)
    assert.matches("no test files", none.stderr, 1, true)
  end)

  it("takes bot lines as functions, stubs by query, a flow expected to fail; a file that does not load", function()
    local dir = helper.tmpdir()
    helper.write(dir .. "/integrations.lua", 'return { shop = { base_url = "http://127.0.0.1:9/v1" } }')
    helper.write(dir .. "/f.lua", [[
local label = api_node{ integration = "shop", path = "/find", query = { q = "red shoes", page = 2 }, results = { "200" } }
say("found " .. label)
error("out of stock")
]])
    helper.write(dir .. "/f_test.lua", [[
return {
  flow = "f.lua", integrations = "integrations.lua",
  stubs = { stub { path = "/find", query = { q = "red shoes", page = 2 }, reply = { status = 200 } } },
  test "found, then it fails" {
    bot(function(text) return text:upper() == "FOUND 200" end),
    fails "out of stock",
  },
  test "it was to end well" { bot "found 200", done() },
}
]])
    local r = test({ "f_test.lua" }, dir)
    assert.are.equal(1, r.code)
    assert.matches("ok 1 - f_test.lua: found, then it fails\n", r.stdout, 1, true)
    assert.matches("not ok 2 - f_test.lua: it was to end well\n# f_test.lua:8: expected the flow to end done,"
                   .. " it failed: ./f.lua:3: out of stock\n", r.stdout, 1, true)
    helper.write(dir .. "/f_test.lua", "return { flow = ")
    local bad = test({ "f_test.lua" }, dir)
    assert.are.equal(2, bad.code)
    assert.matches("f_test.lua:1: unexpected symbol near <eof>", bad.stderr, 1, true)
  end)

  it("checks state where the flow waits, and a flow that fails", function()
    local dir = helper.tmpdir()
    copy_demo(dir)
    helper.write(dir .. "/state_test.lua", [[
return {
  flow = "order_status.lua", integrations = "integrations.lua",
  stubs = { stub { path = "/orders/42", reply = { status = 200, json = { status = "shipped", eta = "now" } } } },
  test "state" {
    include "greeting_test_lines.lua", user "42",
    state { step = "ask_order", session = { order_id = "43" } },
  },
}
]])
    local r = test({ "state_test.lua" }, dir)
    assert.are.equal(1, r.code)
    assert.matches('state_test.lua:6: state: session.order_id is "42", expected "43"', r.stdout, 1, true)
  end)

  it("--live: the same conversations against the real API (here the mock), stubs unused", function()
    local dir = helper.tmpdir()
    copy_demo(dir)
    local mock = helper.mock(dofile("scripts/demo/routes.lua"))
    helper.write(dir .. "/integrations.lua", ('return { shop = { base_url = %q, timeout_ms = 1000 } }'):format(mock.url .. "/v1"))
    local r = test({ "--live", "order_status_test.lua" }, dir)
    mock:stop()
    assert.are.equal(1, r.code)
    assert.matches("ok 1 - order_status_test.lua: an order that shipped\nok 2 - ", r.stdout, 1, true)
    assert.matches("not ok 3 - order_status_test.lua: the shop when it is slow, broken, busy or odd: slow\n"
      .. "# order_status_test.lua:50: the call at lookup (GET " .. mock.url .. "/v1/orders/9) has label 404,"
      .. " expected timeout\n", r.stdout, 1, true)
    assert.matches("\n2 passed, 4 failed\n$", r.stdout)
  end)

  it("--record FILE writes what the real API answered as stubs an offline run takes (no cookies)", function()
    local dir = helper.tmpdir()
    copy_demo(dir)
    local mock = helper.mock({
      { method = "GET", path = "/v1/orders/42", status = 200, headers = { ["Set-Cookie"] = "sid=s3cret" },
        json = { status = "shipped", eta = "tomorrow" } },
      { method = "GET", path = "/v1/orders/{id}", status = 404, json = { error = "no such order" } },
    })
    helper.write(dir .. "/integrations.lua", ('return { shop = { base_url = %q, timeout_ms = 1000 } }'):format(mock.url .. "/v1"))
    local r = test({ "--live", "--record", "shop_recorded.lua", "order_status_test.lua" }, dir)
    mock:stop()
    assert.are.equal(1, r.code)
    local rec = helper.read(dir .. "/shop_recorded.lua")
    assert.matches('stub { integration = "shop", method = "GET", path = "/orders/42",', rec, 1, true)
    assert.is_nil(rec:find("s3cret", 1, true))
    assert.is_nil(rec:lower():find("set-cookie", 1, true))
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
    local offline = test({ "rec_test.lua" }, dir)
    assert.are.equal(0, offline.code, offline.stdout)
    local bad = test({ "--record", "x.lua", "rec_test.lua" }, dir)
    assert.are.equal(2, bad.code)
    assert.matches("--record FILE records the real APIs' answers: give --live too", bad.stderr, 1, true)
  end)

  it("runs from busted through require \"flowrun.test\"", function()
    local dir = helper.tmpdir()
    copy_demo(dir)
    local code = ([[
package.cpath = %q .. ";" .. package.cpath
local t = require "flowrun.test"
local suite = assert(t.load(%q))
local results = t.run({ suite })
local n = 0
for _, r in ipairs(results) do if r.ok then n = n + 1 end end
io.write(#results, " ", n)
]]):format(helper.root .. "/build/?.so", dir .. "/order_status_test.lua")
    local r = helper.sh("lua5.4 -e " .. helper.quote(code))
    assert.are.equal("6 6", r)
  end)
end)

-- flowrun test --replay STORE (flowrun_replay_store): a store's sessions
-- replayed against the flows as they are now, the check before a deploy.
describe("flowrun test --replay", function()
  local flowrun
  setup(function() flowrun = helper.module() end)
  teardown(helper.cleanup)

  local ORDER = { status = 200, json = { status = "shipped", eta = "tomorrow" } }
  local function answer(rq)
    if rq.url:match("/orders/404$") then return { status = 404, json = {} } end
    return ORDER
  end

  -- A store at DIR/st.db: imperative i1 (one lookup done) and i2 (none),
  -- declarative d1 (200) and d2 (404), each waiting for its next message.
  -- Returns the runtime still open on it when keep is set.
  local function make_store(dir, keep)
    copy_demo(dir)
    helper.write(dir .. "/order_status_imperative.lua", helper.read("scripts/demo/order_status_imperative.lua"))
    local rt = flowrun.new{ integrations = dir .. "/integrations.lua", store = dir .. "/st.db", transport = answer }
    rt:start("i1", dir .. "/order_status_imperative.lua")
    rt:start("i2", dir .. "/order_status_imperative.lua")
    rt:start("d1", dir .. "/order_status.lua")
    rt:start("d2", dir .. "/order_status.lua")
    for _ = 1, 20 do rt:step(5) end
    rt:send("i1", "7") rt:send("d1", "7") rt:send("d2", "404")
    for _ = 1, 20 do rt:step(5) end
    rt:events()
    if keep then return rt end
    rt:close()
  end

  local function replay(dir, ...) return test({ "--replay", "st.db", ... }, dir) end

  it("replays every waiting session to the end of its journal, reading the store only, also while a host runs it", function()
    local dir = helper.tmpdir()
    local rt <close> = make_store(dir, true)
    local list = helper.cli({ args = { "sessions", "--store", "st.db" }, cwd = dir }).stdout
    local db = helper.read(dir .. "/st.db")
    local r = replay(dir)
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    local ask = 'next it does ask "Your order number? (empty line to leave)"'
    assert.matches("^ok 1 %- session d1 %(" .. dir:gsub("%p", "%%%0") .. "/order_status.lua%): replays to the end"
                   .. " of its journal %(%d+ entries%); " .. ask:gsub("%p", "%%%0") .. " at step ask_order\n", r.stdout)
    assert.matches("ok 3 - session i1 (" .. dir .. "/order_status_imperative.lua): replays to the end of its journal"
                   .. " (4 entries); " .. ask .. " at " .. dir .. "/order_status_imperative.lua:7\n", r.stdout, 1, true)
    assert.matches("ok 4 - session i2 (" .. dir .. "/order_status_imperative.lua): replays to the end of its journal"
                   .. " (1 entry); " .. ask, r.stdout, 1, true)
    assert.matches("\n1..4\n4 passed, 0 failed\n$", r.stdout)
    -- the same from the module: an end event with replayed = true; nothing new starts
    local check <close> = flowrun.new{ integrations = dir .. "/integrations.lua", replay = dir .. "/st.db" }
    local ok, err = pcall(check.start, check, "x", dir .. "/order_status.lua")
    assert.is_false(ok)
    assert.matches("this runtime replays a store (flowrun_replay_store): it starts no session", err, 1, true)
    for _ = 1, 10 do check:step(5) end
    local ends = {}
    for _, ev in ipairs(check:events()) do
      if ev.type == "end" then ends[ev.session] = ev end
      assert.is_nil(({ say = 1, ask = 1, trace = 1 })[ev.type])   -- the ends (and steps) only
    end
    assert.is_true(ends.i2.ok and ends.i2.replayed)
    assert.matches("^replays to the end of its journal %(1 entry%); next it does ask", ends.i2.text)
    -- nothing written: the host goes on as if no replay had looked
    assert.are.equal(list, helper.cli({ args = { "sessions", "--store", "st.db" }, cwd = dir }).stdout)
    assert.are.equal(db, helper.read(dir .. "/st.db"))
    rt:send("i1", "8")
    for _ = 1, 20 do rt:step(5) end
    local said = {}
    for _, ev in ipairs(rt:events()) do if ev.type == "say" then said[#said + 1] = ev.text end end
    assert.are.same({ "Order 8 is shipped; it arrives tomorrow." }, said)
  end)

  it("names each session the changed flow no longer replays, with the entry and both effects, exit 1", function()
    local dir = helper.tmpdir()
    make_store(dir)
    local imp = helper.read(dir .. "/order_status_imperative.lua")
    local changed = imp:gsub('path = "/orders/{id}"', 'path = "/orders/{id}/status"')
    assert.are_not.equal(imp, changed)
    helper.write(dir .. "/order_status_imperative.lua", changed)
    local decl = helper.read(dir .. "/order_status.lua")
    helper.write(dir .. "/order_status.lua", (decl:gsub("ask_order", "ask_number")))
    local r = replay(dir, "--junit", "j.xml")
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("not ok 1 - session d1 (" .. dir .. "/order_status.lua): does not replay\n# ", r.stdout, 1, true)
    assert.matches('a session waits at step "ask_order", which is gone from the flow', r.stdout, 1, true)
    assert.matches("not ok 3 - session i1 (" .. dir .. "/order_status_imperative.lua): does not replay\n", r.stdout, 1, true)
    assert.matches("replay of session i1 does not match its journal: entry 3 is api_node shop GET /orders/{id}"
                   .. " (made at " .. dir .. "/order_status_imperative.lua:9), but the flow now does"
                   .. " api_node shop GET /orders/{id}/status here", r.stdout, 1, true)
    assert.matches("ok 4 - session i2 ", r.stdout, 1, true)   -- it has made no call yet
    assert.matches("\n1 passed, 3 failed\n$", r.stdout)
    assert.matches('<testsuites name="flowrun test" tests="4" failures="3">', helper.read(dir .. "/j.xml"), 1, true)
  end)

  it("tells a call by another endpoint of the same method from the one journaled", function()
    local dir = helper.tmpdir()
    helper.write(dir .. "/integrations.lua", [[
return { shop = { base_url = "http://127.0.0.1:9/v1", endpoints = {
  order = { method = "GET", path = "/orders/{id}" }, refund = { method = "GET", path = "/refunds/{id}" } } } }
]])
    helper.write(dir .. "/f.lua", [[
local id = ask("Order?")
local label = api_node{ endpoint = "shop.order", params = { id = id }, results = { "200" } }
ask("More?")
]])
    local rt = flowrun.new{ integrations = dir .. "/integrations.lua", store = dir .. "/st.db", transport = answer }
    rt:start("e1", dir .. "/f.lua")
    for _ = 1, 10 do rt:step(5) end
    rt:send("e1", "7")
    for _ = 1, 10 do rt:step(5) end
    rt:close()
    assert.are.equal(0, replay(dir).code)
    helper.write(dir .. "/f.lua", (helper.read(dir .. "/f.lua"):gsub("shop.order", "shop.refund")))
    local r = replay(dir)
    assert.are.equal(1, r.code, r.stdout)
    assert.matches("entry 2 is api_node shop.order GET (made at " .. dir .. "/f.lua:2), but the flow now does"
                   .. " api_node shop.refund GET here", r.stdout, 1, true)
  end)

  it("replays parked sessions too: the check that a flow put back matches them", function()
    local dir = helper.tmpdir()
    make_store(dir)
    local imp = helper.read(dir .. "/order_status_imperative.lua")
    helper.write(dir .. "/order_status_imperative.lua", (imp:gsub("results = ", "headers = { x = 'y' }, results = "):gsub('"/orders/{id}"', '"/o/{id}"')))
    local rt = flowrun.new{ integrations = dir .. "/integrations.lua", store = { path = dir .. "/st.db", park = true },
                            transport = answer }
    rt:send("i1", "9")
    for _ = 1, 20 do rt:step(5) end
    rt:close()
    assert.matches("i1 +parked", helper.cli({ args = { "sessions", "--store", "st.db" }, cwd = dir }).stdout)
    assert.are.equal(1, replay(dir).code)
    helper.write(dir .. "/order_status_imperative.lua", imp)
    local r = replay(dir)
    assert.are.equal(0, r.code, r.stdout)
    assert.matches("ok 3 - session i1 (" .. dir .. "/order_status_imperative.lua, parked): replays to the end", r.stdout, 1, true)
  end)

  it("refuses test files with --replay, a missing store and a file that is not one, exit 2", function()
    local dir = helper.tmpdir()
    make_store(dir)
    local r = replay(dir, "order_status_test.lua")
    assert.are.equal(2, r.code)
    assert.matches("--replay STORE checks a store's sessions: no test files", r.stderr, 1, true)
    r = test({ "--replay", "nope.db" }, dir)
    assert.are.equal(2, r.code)
    assert.matches("flowrun test: --replay: store nope.db: No such file or directory\n", r.stderr, 1, true)
    r = test({ "--replay", "order_status.lua" }, dir)
    assert.are.equal(2, r.code)
    assert.matches("order_status.lua: .*not a", r.stderr)
    assert.are.equal(2, test({ "--replay" }, dir).code)
  end)
end)
