-- Durable sessions: the store keeps a commit's records of one session
-- together (store_sqlite.c: a group row, several records), and a long
-- turn's records are written as it goes. Replay must read them back whole
-- and in order, and `flowrun sessions` count records, not rows.
local helper = require "spec.helper"
local cjson = require "cjson"

local FLOW = [[
local sum, n = 0, tonumber(args[1]) or 5000
for i = 1, n do sum = (sum * 31 + math.random(1000000)) % 2147483647 end   -- in order
say("sum " .. sum)
local more = ask("more?")
say("again " .. sum .. " " .. more)
]]

local function line(t) return cjson.encode(t) .. "\n" end

local function says(stdout)
  local out = {}
  for l in stdout:gmatch("[^\n]+") do
    local ev = cjson.decode(l)
    if ev.say then out[#out + 1] = ev.say end
  end
  return out
end

describe("durable sessions: a turn's records", function()
  local dir, store
  before_each(function()
    dir = helper.tmpdir()
    store = dir .. "/s.db"
  end)
  teardown(helper.cleanup)

  local function host(flow, input)
    return helper.cli({ args = { "host", "--store", store, flow }, stdin = input })
  end

  local function journal(id)
    local r = helper.cli({ args = { "sessions", "--store", store, "--json" } })
    assert.are.equal(0, r.code, r.stderr)
    for l in r.stdout:gmatch("[^\n]+") do
      local e = cjson.decode(l)
      if e.session == id then return e.journal end
    end
  end

  it("5000 effects in one turn are stored, counted and replayed whole", function()
    local flow = helper.flow(FLOW, dir)
    local r1 = host(flow, line{ session = "u1", text = "x", n = 1 })
    assert.are.equal(0, r1.code, r1.stderr)
    local first = says(r1.stdout)
    assert.are.equal(1, #first)
    local sum = first[1]:match("^sum (%d+)$")
    assert.is_truthy(sum, first[1])
    assert.are.equal(5001, journal("u1"))   -- 5000 math.random and the say
    local r2 = host(flow, line{ session = "u1", text = "ok", n = 2 })
    assert.are.equal(0, r2.code, r2.stderr)
    assert.are.same({ "again " .. sum .. " ok" }, says(r2.stdout))
  end)

  it("sessions whose turns interleave keep their own records", function()
    local flow = helper.flow(FLOW, dir)
    local input = ""
    for i = 1, 20 do input = input .. line{ session = "s" .. i, text = "x", n = 1 } end
    local r1 = host(flow, input)
    assert.are.equal(0, r1.code, r1.stderr)
    local sums = {}
    for l in r1.stdout:gmatch("[^\n]+") do
      local ev = cjson.decode(l)
      if ev.say then sums[ev.session] = ev.say:match("^sum (%d+)$") end
    end
    input = ""
    for i = 1, 20 do
      assert.are.equal(5001, journal("s" .. i))
      input = input .. line{ session = "s" .. i, text = "t" .. i, n = 2 }
    end
    local r2 = host(flow, input)
    assert.are.equal(0, r2.code, r2.stderr)
    local got = {}
    for l in r2.stdout:gmatch("[^\n]+") do
      local ev = cjson.decode(l)
      if ev.say then got[ev.session] = ev.say end
    end
    for i = 1, 20 do
      assert.are.equal("again " .. sums["s" .. i] .. " t" .. i, got["s" .. i])
    end
  end)
end)
