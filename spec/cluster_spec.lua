-- README: Many hosts on PostgreSQL. `flowrun serve` hosts sharing their sessions on
-- PostgreSQL behind nginx as a round-robin load balancer, all on loopback:
-- 1 000 conversations driven by scripts/converse.py (webhooks with message
-- numbers, a failed or empty answer sent again with the same number), one
-- host killed with SIGKILL a third of the way through and restarted two
-- thirds through; a host stopped longer than its lease is fenced out. What
-- is checked: every conversation's exact transcript (a message lost or
-- taken twice changes it), the API calls (at least once each, repeated only
-- for sessions the dead host owned) and, in PostgreSQL, that no two hosts
-- ever ran one session at once (epochs of takeovers and journal rows).
local helper = require "spec.helper"
local cjson = require "cjson"

local DRIVER = helper.root .. "/scripts/converse.py"
local PYTHON = "/usr/bin/python3"         -- Debian's, as CI installs it
local LEASE_MS = 2000
local N = helper.san and 300 or 1000     -- conversations of the big run (fewer under ASan)

-- A session's partition, as fr_partition (runtime/lib/store.h) computes it:
-- FNV-1a (32 bits) of its id, modulo 256.
local function partition(id)
  local h = 2166136261
  for i = 1, #id do h = ((h ~ id:byte(i)) * 16777619) & 0xffffffff end
  return h % 256
end

-- The flow: one API call, two questions, a summary of both answers, then a
-- last question that keeps the session (and its journal) for the checks.
local FLOW = [[
local name = ...
local label = api_node{ integration = "count", path = "/count/" .. name, results = { "200" } }
local colour = ask("colour?")
local number = ask("number?")
say(name .. " likes " .. tostring(colour) .. " " .. tostring(number) .. " (" .. label .. ")")
ask("bye?")
]]

-- conversations prefix1..prefixN, each with the transcript it must have
local function conversations(n, prefix)
  local list = {}
  for i = 1, n do
    local id = prefix .. i
    list[i] = { sender = id, messages = { id, "red" .. i, tostring(i * 7) },
                expect = { "colour?", "number?", id .. " likes red" .. i .. " " .. i * 7 .. " (200)",
                           "bye?" } }
  end
  return list
end

-- The world of a run: a mock API whose log counts the calls per
-- conversation (slow ids: their first call hangs, logged as it arrives),
-- the integrations file and the flow.
local function world(slow, timeout_ms)
  local routes = {}
  for _, id in ipairs(slow or {}) do
    routes[#routes + 1] = { path = "/count/" .. id, fault = "no_response", times = 1 }
  end
  routes[#routes + 1] = { path = "/count/{id}", json = { ok = true } }
  local mock = helper.mock(routes)
  local dir = helper.tmpdir()
  helper.integrations({ count = { base_url = mock.url, timeout_ms = timeout_ms or 30000 } }, dir)
  return mock, helper.flow(FLOW, dir), dir
end

-- API calls per conversation, from the mock's log ("GET /count/c1 -> 200").
local function calls(mock)
  local n = {}
  for line in mock:log():gmatch("[^\n]+") do
    local id = line:match("^GET /count/(%S+) %-> ")
    if id then n[id] = (n[id] or 0) + 1 end
  end
  return n
end

-- nginx on PORT1, round robin over the hosts' ports. A host that refuses
-- the connection is skipped for 1 s (the request goes to the next); a POST
-- that reached a host is never sent again by nginx (the driver does that).
local function balancer(ports)
  local up = {}
  for _, p in ipairs(ports) do
    up[#up + 1] = ("    server 127.0.0.1:%d max_fails=1 fail_timeout=1s;"):format(p)
  end
  local lb = helper.nginx({ log = "$upstream_addr $status", servers = table.concat({
    "  upstream flowrun {", table.concat(up, "\n"), "  }",
    "  server {",
    "    listen 127.0.0.1:PORT1;",
    "    location / {",
    "      proxy_pass http://flowrun;",
    "      proxy_connect_timeout 1s;",
    "      proxy_read_timeout 15s;",
    "    }",
    "  }",
  }, "\n") })
  lb.url = "http://127.0.0.1:" .. lb.ports[1]
  return lb
end

-- Starts the driver on convs against url; :finish(on_done) reads what it
-- prints, calling on_done(k) after the k-th conversation has ended (the
-- spec kills and restarts hosts there), and returns { [sender] = record },
-- the summary and the driver's exit status.
local function drive_start(url, convs, opts)
  opts = opts or {}
  local d = helper.tmpdir()
  local f = assert(io.open(d .. "/in.jsonl", "w"))
  for _, c in ipairs(convs) do f:write(cjson.encode({ sender = c.sender, messages = c.messages }), "\n") end
  f:close()
  local p = io.popen(("env -u LD_PRELOAD %s %s %s --concurrency %d --deadline %d --total 150 --timeout 10 <%s 2>%s")
    :format(PYTHON, helper.quote(DRIVER), url, opts.concurrency or 40, opts.deadline or 45,
            d .. "/in.jsonl", d .. "/err"))
  return {
    finish = function(_, on_done)
      local results, summary, k = {}, nil, 0
      for line in p:lines() do
        local rec = cjson.decode(line)
        if rec.summary then summary = rec
        else
          results[rec.sender] = rec
          k = k + 1
          if on_done then on_done(k) end
        end
      end
      local _, _, code = p:close()
      assert(summary, "the driver printed no summary: " .. (helper.read(d .. "/err") or ""))
      return results, summary, code
    end,
  }
end

local function drive(url, convs, opts, on_done)
  return drive_start(url, convs, opts):finish(on_done)
end

-- The conversations whose transcript is not the expected one (at most 5
-- shown) and how many there are.
local function wrong(convs, results)
  local bad, n = {}, 0
  for _, c in ipairs(convs) do
    local r = results[c.sender]
    local ok = r and r.completed
    for i = 1, #c.expect do ok = ok and r.transcript[i] == c.expect[i] end
    ok = ok and #r.transcript == #c.expect
    if not ok then
      n = n + 1
      if #bad < 5 then bad[#bad + 1] = c.sender .. ": " .. (r and cjson.encode(r) or "no record") end
    end
  end
  return n, table.concat(bad, "\n")
end

-- Rows of a query, each an array of its fields (psql -A -t: "|" between).
local function rows(pg, sql)
  local out = {}
  for line in pg.psql(sql):gmatch("[^\n]+") do
    local r = {}
    for v in (line .. "|"):gmatch("([^|]*)|") do r[#r + 1] = v end
    out[#out + 1] = r
  end
  return out
end

local function pg_now(pg)
  return tonumber(pg.psql("SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint"):match("%d+"))
end

-- Partitions held (unexpired) per node.
local function held(pg)
  local t = {}
  for _, r in ipairs(rows(pg, "SELECT node, part FROM flowrun_leases WHERE node IS NOT NULL"
                          .. " AND expires > (extract(epoch from clock_timestamp()) * 1000)::bigint")) do
    t[r[1]] = t[r[1]] or {}
    t[r[1]][tonumber(r[2])] = true
  end
  return t
end

local function count(set)
  local n = 0
  for _ in pairs(set or {}) do n = n + 1 end
  return n
end

-- "h1 85, h2 86, h3 85": partitions held per node, for messages.
local function shares(pg)
  local t = {}
  for node, parts in pairs(held(pg)) do t[#t + 1] = node .. " " .. count(parts) end
  table.sort(t)
  return table.concat(t, ", ")
end

-- Until every partition is held and each of the n hosts holds some.
local function settled(pg, n)
  return helper.wait_for(function()
    local h, all = held(pg), 0
    for i = 1, n do
      if count(h["h" .. i]) == 0 then return false end
      all = all + count(h["h" .. i])
    end
    return all == 256
  end, helper.san and 90000 or 30000)   -- a liveness guard: ASan on 2 busy cores is slow
end

-- The store's own record says no two hosts ever ran a session at once:
-- per partition, the epochs of its takeovers strictly increase; every
-- journal row was written by the node that had taken its partition at the
-- row's epoch; a session's rows, in order, never go back to an older
-- epoch. Returns the number of journal rows and of sessions checked.
local function check_epochs(pg)
  local took, last, bad = {}, {}, {}
  local function wrong_(msg) if #bad < 5 then bad[#bad + 1] = msg end end
  for _, r in ipairs(rows(pg, "SELECT part, epoch, node FROM flowrun_takeovers ORDER BY part, at, epoch")) do
    local part, epoch = tonumber(r[1]), tonumber(r[2])
    if last[part] and epoch <= last[part] then
      wrong_(("partition %d: epoch %d taken after epoch %d"):format(part, epoch, last[part]))
    end
    last[part] = epoch
    took[part .. ":" .. epoch] = r[3]
  end
  local cols = {}
  for _, r in ipairs(rows(pg, "SELECT column_name FROM information_schema.columns"
                          .. " WHERE table_name = 'flowrun_journal'")) do cols[r[1]] = true end
  local sid = (cols.id and "id") or (cols.session and "session") or (cols.session_id and "session_id")
  assert(sid and cols.seq and cols.node and cols.epoch,
         "flowrun_journal: expected a session id column, seq, node and epoch; has: " .. cjson.encode(cols))
  local n, sessions, prev = 0, 0, {}
  for _, r in ipairs(rows(pg, ("SELECT %s, node, epoch FROM flowrun_journal ORDER BY %s, seq"):format(sid, sid))) do
    local id, node, epoch = r[1], r[2], tonumber(r[3])
    local part = partition(id)
    n = n + 1
    if took[part .. ":" .. epoch] ~= node then
      wrong_(("journal of %s: written by %s at epoch %d of partition %d, taken by %s"):format(
        id, node, epoch, part, tostring(took[part .. ":" .. epoch])))
    end
    if prev[id] == nil then sessions = sessions + 1
    elseif epoch < prev[id] then
      wrong_(("journal of %s: epoch %d after epoch %d"):format(id, epoch, prev[id]))
    end
    prev[id] = epoch
  end
  assert.are.equal("", table.concat(bad, "\n"))
  return n, sessions
end

describe("flowrun serve hosts behind nginx", function()
  teardown(helper.cleanup)

  it("one host with a SQLite store, restarted (SIGTERM) mid-run: every conversation completes exactly", function()
    local mock, flow, dir = world()
    local store = dir .. "/s.db"
    local port = helper.closed_port()
    local args = { "-I", dir .. "/integrations.lua", "--store", store, "--reply-timeout", "5", flow }
    local h = helper.serve(args, nil, { port = port, status = true })
    local lb = balancer({ port })
    local convs = conversations(300, "s")
    local stopped
    local results, summary, code = drive(lb.url, convs, { concurrency = 20 }, function(k)
      if k == 100 then                    -- down for half a second: tries get 502 from nginx
        stopped = h
        h:stop()
        os.execute("sleep 0.5")
        h = helper.serve(args, nil, { port = port, status = true })
      end
    end)
    print(("# one host: 300 conversations in %.1f s, %d retries %s")
          :format(summary.seconds, summary.retries, cjson.encode(summary.statuses)))
    local n, first = wrong(convs, results)
    assert.are.equal(0, n, first)
    assert.are.equal(0, code)
    assert.are.equal(300, summary.completed)
    assert.are.equal(0, stopped:status(), stopped:log())
    assert.is_true((summary.statuses["502"] or 0) > 0)   -- the driver did send webhooks again
    local c = calls(mock)
    for _, conv in ipairs(convs) do assert.is_true((c[conv.sender] or 0) >= 1, conv.sender) end
    assert.are.equal("", h:stop())
    assert.are.equal(0, h:status())
  end)

  it("three hosts on PostgreSQL: 1 000 conversations, one host killed and restarted, each conversation whole", function()
    local pg = helper.postgres()
    local mock, flow, dir = world()
    local ports = { helper.closed_port(), helper.closed_port(), helper.closed_port() }
    local function host(i)
      return helper.serve({ "-I", dir .. "/integrations.lua", "--store", pg.url, "--node", "h" .. i,
                            "--lease-ms", tostring(LEASE_MS), "--reply-timeout", "5", flow },
                          nil, { port = ports[i], status = true })
    end
    local hosts = { host(1), host(2), host(3) }
    assert.truthy(settled(pg, 3), "the hosts did not share the partitions: " .. shares(pg))
    local lb = balancer(ports)
    local convs = conversations(N, "c")
    local killed, kill_at, h1_parts
    local results, summary, code = drive(lb.url, convs, { concurrency = 40 }, function(k)
      if k == N // 3 then
        h1_parts = held(pg).h1 or {}
        kill_at = pg_now(pg)
        os.execute("kill -KILL " .. hosts[1].pid)
        killed = hosts[1]
      elseif k == 2 * N // 3 then
        hosts[1] = host(1)                -- the same node name, as a supervisor restarts it
      end
    end)
    print(("# cluster: %d conversations in %.1f s (%.0f/s), %d retries %s")
          :format(N, summary.seconds, summary.conversations_per_s, summary.retries,
                  cjson.encode(summary.statuses)))
    local n, first = wrong(convs, results)
    assert.are.equal(0, n, first)
    assert.are.equal(0, code)
    assert.are.equal(N, summary.completed)
    assert.truthy(helper.wait_for(function() return killed:status() end, 5000))
    assert.are.equal(137, killed:status())
    -- every partition of the killed host was taken again, at a higher epoch
    assert.is_true(count(h1_parts) > 0)
    for part in pairs(h1_parts) do
      local r = rows(pg, ("SELECT count(*) FROM flowrun_takeovers WHERE part = %d AND at >= %d"):format(part, kill_at))
      assert.is_true(tonumber(r[1][1]) >= 1, "partition " .. part .. " of h1 was not taken over")
    end
    -- the API: each conversation's call at least once; repeated only for
    -- sessions of the killed host's partitions (at least once, documented)
    local c, repeats, on_h1 = calls(mock), 0, 0
    for _, conv in ipairs(convs) do
      local k = c[conv.sender] or 0
      assert.is_true(k >= 1, conv.sender .. ": no API call")
      if h1_parts[partition(conv.sender)] then on_h1 = on_h1 + 1
      else assert.are.equal(1, k, conv.sender .. ": its call repeated, though its host lived") end
      repeats = repeats + k - 1
    end
    local rows_n, sessions = check_epochs(pg)
    assert.is_true(rows_n > 0 and sessions > 0)
    print(("# cluster: %d on the killed host's partitions, %d API calls repeated; %d journal rows"
           .. " of %d sessions checked"):format(on_h1, repeats, rows_n, sessions))
    -- nginx sent webhooks to all three
    local seen = {}
    for _, line in ipairs(lb.log()) do seen[line:match("^127%.0%.0%.1:(%d+)") or ""] = true end
    for i = 1, 3 do assert.truthy(seen[tostring(ports[i])], "no webhook reached h" .. i) end
    for i = 1, 3 do
      hosts[i]:stop()
      assert.are.equal(0, hosts[i]:status(), "h" .. i .. ": " .. hosts[i]:log())
    end
  end)

  it("fences out a host stopped longer than its lease: its next write is refused, it exits 3, its conversations complete on the others", function()
    local pg = helper.postgres()
    -- slow1..slow200: the first call of each hangs (logged as it comes);
    -- the flow's call times out after 2.5 s
    local candidates = {}
    for i = 1, 200 do candidates[i] = "slow" .. i end
    local mock, flow, dir = world(candidates, 2500)
    local ports = { helper.closed_port(), helper.closed_port(), helper.closed_port() }
    local function host(i)
      return helper.serve({ "-I", dir .. "/integrations.lua", "--store", pg.url, "--node", "h" .. i,
                            "--lease-ms", tostring(LEASE_MS), "--reply-timeout", "5", flow },
                          nil, { port = ports[i], status = true })
    end
    local hosts = { host(1), host(2), host(3) }
    assert.truthy(settled(pg, 3), "the hosts did not share the partitions: " .. shares(pg))
    local lb = balancer(ports)
    -- 60 conversations, 3 of them slow ones of h1's partitions
    local h1 = held(pg).h1
    local convs, slow = conversations(57, "f"), {}
    for _, id in ipairs(candidates) do
      if h1[partition(id)] and #slow < 3 then
        slow[#slow + 1] = id
        local c = conversations(1, id)[1]
        c.sender, c.messages[1] = id, id
        c.expect[3] = id .. " likes red1 7 (200)"
        convs[#convs + 1] = c
      end
    end
    assert.are.equal(3, #slow)
    local run = drive_start(lb.url, convs, { concurrency = 60 })
    -- h1 is in the three calls: stop it there, until h2 and h3 hold every partition
    assert.truthy(helper.wait_for(function()
      return select(2, mock:log():gsub("%-> fault no_response", "")) == 3
    end, 20000), mock:log())
    local t0 = helper.now()
    os.execute("kill -STOP " .. hosts[1].pid)
    local ok, err = pcall(function()
      assert.truthy(helper.wait_for(function()
        local h = held(pg)
        return h.h1 == nil and count(h.h2) + count(h.h3) == 256
      end, 20000), "h2 and h3 did not take h1's partitions: " .. shares(pg))
    end)
    -- resumed after its calls' timeout: its first act is to write their label
    helper.wait_for(function() return helper.now() - t0 > 3000 end, 5000)
    os.execute("kill -CONT " .. hosts[1].pid)
    assert(ok, err)
    assert.truthy(helper.wait_for(function() return hosts[1]:status() end, 10000), "h1 did not exit")
    assert.are.equal(3, hosts[1]:status(), hosts[1]:log())
    assert.truthy(hosts[1]:log():find("fenced", 1, true), hosts[1]:log())
    local results, summary, code = run:finish()
    local n, first = wrong(convs, results)
    assert.are.equal(0, n, first)
    assert.are.equal(0, code)
    assert.are.equal(#convs, summary.completed)
    local c = calls(mock)
    for _, id in ipairs(slow) do assert.are.equal(2, c[id], id) end   -- the hung call, then the new owner's
    local rows_n, sessions = check_epochs(pg)
    assert.is_true(rows_n > 0 and sessions > 0)
    for i = 2, 3 do
      hosts[i]:stop()
      assert.are.equal(0, hosts[i]:status(), "h" .. i .. ": " .. hosts[i]:log())
    end
  end)
end)
