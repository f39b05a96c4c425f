-- Durable sessions under SIGKILL: `flowrun host --store` runs 200
-- conversations with calls in flight and sessions waiting in ask and sleep,
-- is killed at random moments (at least 20 times) and restarted on the same
-- store each time. Every conversation must end with the transcript of an
-- uninterrupted run (duplicate sequence numbers dropped): no answer lost,
-- no session lost, no output changed on its way again. At most 50 sessions
-- stay in memory (--resident 50): the others wait in the store for their
-- next line.
local helper = require "spec.helper"
local cjson = require "cjson"
local system = require "system"

local N = 200
local KILLS = 20

local FLOW = [[
local t0, r = os.time(), math.random(1000000000)
say("early " .. t0 .. " " .. r)
local name = ask("name?")
local label, res = api_node{ integration = "shop", path = "/order/{id}",
                             params = { id = name }, results = { "200" } }
say(name .. " " .. label .. " " .. res.json.status)
sleep(700)
local more = ask("more?")
sleep(900)
local l2, r2 = api_node{ integration = "shop", path = "/order/{id}",
                         params = { id = more }, results = { "200" } }
say("late " .. t0 .. " " .. r .. " " .. more .. " " .. l2 .. " " .. math.random(1000))
]]

-- The same conversation as a declarative flow: its state kept as a
-- snapshot at each step that waits instead of a journal of every effect.
local DECLARATIVE = [[
local flow = require "flowrun.flow"
return flow.define { start = "early",
  defaults = { other = flow.END, error = flow.END, timeout = flow.END, ["max-connection"] = flow.END },
  steps = {
  early = function(s) s.t0, s.r = os.time(), math.random(1000000000) return "hello" end,
  hello = flow.say { text = function(s) return "early " .. s.t0 .. " " .. s.r end, next = "name" },
  name = flow.ask { prompt = "name?", save = "name", next = "look" },
  look = flow.api { integration = "shop", path = "/order/{id}", params = function(s) return { id = s.name } end,
                    save = "res", on = { ["200"] = "told" } },
  told = flow.say { text = function(s) return s.name .. " 200 " .. s.res.json.status end, next = "nap" },
  nap = flow.sleep { ms = 700, next = "more" },
  more = flow.ask { prompt = "more?", save = "more", next = "nap2" },
  nap2 = flow.sleep { ms = 900, next = "look2" },
  look2 = flow.api { integration = "shop", path = "/order/{id}", params = function(s) return { id = s.more } end,
                     on = { ["200"] = "late" } },
  late = flow.say { text = function(s)
    return "late " .. s.t0 .. " " .. s.r .. " " .. s.more .. " 200 " .. math.random(1000)
  end, next = flow.END },
} }
]]

-- What session i says, uninterrupted (t0 and r: what its first line said).
local function transcript(i, early, late)
  local t0, r = early:match("^early (%d+) (%d+)$")
  return { early, "name?", "n" .. i .. " 200 shipped", "more?",
           "late " .. t0 .. " " .. r .. " m" .. i .. " 200 " .. (late or ""):match("%d+$"), "end done" }
end

-- A `flowrun host --store` that can be killed: its own pid (exec), stdin a
-- fifo held open read-write here (a write never meets SIGPIPE), stdout a file.
local function start_host(dir, k, args, crash)
  local fifo = dir .. "/in" .. k
  assert(os.execute("mkfifo " .. fifo))
  local out, err, status = dir .. "/out" .. k, dir .. "/err" .. k, dir .. "/status" .. k
  local env = helper.san and ("env -u LD_PRELOAD ASAN_OPTIONS=" .. os.getenv("SPEC_CHILD_ASAN_OPTIONS") .. " ") or ""
  if crash then env = "env FLOWRUN_STORE_CRASH=" .. crash .. " " .. env end
  local cmd = env .. helper.quote(helper.flowrun) .. " host " .. args
    .. " <" .. fifo .. " >" .. out .. " 2>" .. err .. " & echo $! >" .. dir .. "/pid" .. k
    .. "; wait $!; echo $? >" .. status
  os.execute("sh -c " .. helper.quote(cmd) .. " >/dev/null 2>&1 &")
  local input = assert(io.open(fifo, "r+"))
  local pid = helper.wait_for(function() return tonumber(helper.read(dir .. "/pid" .. k) or "") end, 10000)
  return { pid = pid, input = input, out = out, err = err, status = status, offset = 0 }
end

local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local s = f:read("a")
  f:close()
  return s ~= nil and not s:match("^%d+ %b() Z")   -- nil: it went while read
end

local function kill(h)
  os.execute("kill -KILL " .. h.pid .. " 2>/dev/null")
  assert(helper.wait_for(function() return not alive(h.pid) end, 10000))
  h.input:close()
  h.closed = true
end

-- The complete lines h wrote since the last call.
local function new_lines(h)
  local f = io.open(h.out)
  if not f then return {} end
  f:seek("set", h.offset)
  local s = f:read("a")
  f:close()
  local lines = {}
  local last = 0
  for line, e in s:gmatch("([^\n]*)\n()") do
    lines[#lines + 1] = line
    last = e - 1
  end
  h.offset = h.offset + last
  return lines
end

describe("durable sessions: flowrun host --store under SIGKILL", function()
  teardown(helper.cleanup)

  for _, case in ipairs({ { "an imperative flow", FLOW }, { "a declarative flow", DECLARATIVE } }) do
  it("200 conversations of " .. case[1] .. " killed 20 times end with the transcript of an uninterrupted run", function()
    local mock = helper.mock({ { path = "/v1/order/{id}", delay_ms = 250, json = { status = "shipped" } } })
    local dir = helper.tmpdir()
    helper.integrations({ shop = { base_url = mock.url .. "/v1", max_connections = 50 } }, dir)
    local flow = helper.flow(case[2], dir)
    local store = dir .. "/s.db"
    local args = "--store " .. helper.quote(store) .. " --resident 50 -I " .. helper.quote(dir .. "/integrations.lua")
      .. " " .. helper.quote(flow)
    local seed = tonumber(os.getenv("CRASH_SEED") or "") or os.time()
    math.randomseed(seed)

    local S = {}                        -- per session: lines sent, acked, outputs by seq
    for i = 1, N do
      S["c" .. i] = { i = i, sent = {}, acked = 0, out = {}, asks = 0 }
    end
    local lines_of = function(s) return { "x" .. s.i, "n" .. s.i, "m" .. s.i } end
    local function send(h, id, n)
      local s = S[id]
      s.sent[n] = true
      h.input:write(cjson.encode({ session = id, text = lines_of(s)[n], n = n }), "\n")
    end
    local problems, ended, kills, runs, later = {}, 0, 0, 0, {}
    local function answer(h)
      local now, keep = helper.now(), {}
      for _, a in ipairs(later) do
        if a.at > now then keep[#keep + 1] = a
        elseif not S[a.id].sent[a.n] then send(h, a.id, a.n) end
      end
      later = keep
    end
    local function take(h)
      for _, line in ipairs(new_lines(h)) do
        local ok, ev = pcall(cjson.decode, line)
        if not ok or not ev.session then
          problems[#problems + 1] = "a line that is not an output: " .. line
        else
          local s = S[ev.session]
          if ev.stored then
            if ev.stored > s.acked then s.acked = ev.stored end
          else
            local text = ev.say or ev.ask or ("end " .. ev["end"] .. (ev.error and (" " .. ev.error) or ""))
            local seen = s.out[ev.seq]
            if seen and seen ~= text then
              problems[#problems + 1] = ("%s seq %d said %q, then %q"):format(ev.session, ev.seq, seen, text)
            elseif not seen then
              s.out[ev.seq] = text
              if ev["end"] then ended = ended + 1 end
              if text == "name?" or text == "more?" then  -- its next line, a user's while later
                s.asks = s.asks + 1
                later[#later + 1] = { at = helper.now() + (kills < KILLS and math.random(0, 1500) or 0),
                                      id = ev.session, n = s.asks + 1 }
              end
            end
          end
        end
      end
      if not h.closed then h.input:flush() end
    end

    -- each run is killed: at a random moment by this spec, or by itself at a
    -- chosen commit (before it, after it); the last run is not
    local h, mode
    local function restart()
      runs = runs + 1
      local r = math.random(3)
      mode = kills >= KILLS and "none" or r == 1 and "random"
        or (r == 2 and "before-commit:" or "after-commit:") .. math.random(2, 8)
      h = start_host(dir, runs, args, mode:find(":") and mode)
      for id, s in pairs(S) do          -- what was sent and not acknowledged, again
        for n = s.acked + 1, 3 do
          if s.sent[n] then send(h, id, n) end
        end
      end
      if not h.closed then h.input:flush() end
    end
    restart()
    for id in pairs(S) do send(h, id, 1) end
    h.input:flush()
    local deadline = helper.now() + (helper.san and 600000 or 180000)
    local next_kill = helper.now() + math.random(30, 120)
    local progress, last_ended = helper.now(), 0
    while ended < N and helper.now() < deadline do
      system.sleep(0.01)
      take(h)
      answer(h)
      if ended ~= last_ended then progress, last_ended = helper.now(), ended end
      local up = alive(h.pid)
      if mode == "random" and helper.now() >= next_kill then
        kill(h)
        take(h)
        kills = kills + 1
        restart()
        next_kill = helper.now() + math.random(30, 120)
      elseif not up and mode:find(":") then   -- killed itself where told
        kill(h)
        take(h)
        kills = kills + 1
        restart()
      elseif not up then
        problems[#problems + 1] = ("run %d (%s) of the host died by itself (status %s): %s"):format(
          runs, mode, helper.read(h.status) or "?", helper.read(h.err) or "")
        break
      elseif mode == "none" and helper.now() - progress > (helper.san and 60000 or 15000) then
        problems[#problems + 1] = ("no session ended in %d s: %d of %d ended"):format(
          helper.san and 60 or 15, ended, N)
        break
      end
    end
    h.input:close()                     -- end of input: the host exits
    h.closed = true
    assert(helper.wait_for(function() return not alive(h.pid) end, 30000))
    take(h)

    assert.are.same({}, problems, "seed " .. seed)
    assert.are.equal(KILLS, kills)
    assert.are.equal(N, ended, "seed " .. seed)
    for id, s in pairs(S) do
      local got = {}
      local seqs = {}
      for seq in pairs(s.out) do seqs[#seqs + 1] = seq end
      table.sort(seqs)
      for _, seq in ipairs(seqs) do got[#got + 1] = s.out[seq] end
      assert.are.same(transcript(s.i, got[1] or "", got[5]), got, id .. " (seed " .. seed .. ")")
    end
    -- every session ended: the store has none left to run
    local q = io.popen("sqlite3 " .. helper.quote(store) .. " 'SELECT count(*) FROM sessions WHERE ended = 0; SELECT count(*) FROM journal; SELECT count(*) FROM inbox'")
    assert.are.equal("0\n0\n0\n", q:read("a"))
    q:close()
  end)
  end
end)
