-- README: flowrun host. Many sessions over JSON lines.
local helper = require "spec.helper"
local cjson = require "cjson"

describe("flowrun host", function()
  local mock, dir
  local ENV = { HOST_SECRET = "hunter2-xyz" }

  setup(function()
    mock = helper.mock({
      { path = "/slow", delay_ms = 1000, json = { ok = true } },
      { path = "/fast", json = { ok = true } },
      { path = "/clock", delay_ms = 6000, json = { ok = true } },
    })
    dir = helper.tmpdir()
    helper.integrations(helper.lua_source({
      shop = { base_url = mock.url, headers = { ["X-Key"] = helper.code('env("HOST_SECRET")') } },
    }), dir)
    helper.flow([[
      say("hello, you said " .. tostring(args[1]))
      local name = ask("your name?")
      if name == "boom" then error("boom") end
      say("bye " .. tostring(name))
    ]], dir, "chat.lua")
    helper.flow([[
      local label = api_node{ integration = "shop", path = args[1], results = { "200" } }
      say(args[1] .. " " .. label)
    ]], dir, "call.lua")
  end)

  teardown(helper.cleanup)

  -- The events of a host's stdout, decoded; partial: while it still writes
  -- (its last line may be cut).
  local function decode(stdout, partial)
    local events = {}
    for _, line in ipairs(helper.lines(stdout)) do
      local ok, v = pcall(cjson.decode, line)
      assert.is_true(ok or partial, "not a JSON line: " .. line)
      events[#events + 1] = ok and v or nil
    end
    return events
  end

  -- How many events of kind ("ask", "say", "end") session has in events.
  local function count(events, kind, session)
    local n = 0
    for _, e in ipairs(events) do if e.session == session and e[kind] ~= nil then n = n + 1 end end
    return n
  end

  -- Runs the host on flow with these input lines. A line is written at
  -- once, or given as { after = "ask u1", line } once the host has written
  -- one more ask (or say, or end) of session u1 than the entries before
  -- waited for: an answer comes after its ask as a person's would, with no
  -- sleeping (a line of nil only waits).
  local function host(flow, lines, opts)
    opts = opts or {}
    local args = opts.allow and { "host", "--allow", opts.allow, dir .. "/" .. flow }
                 or { "host", dir .. "/" .. flow }
    local ordered = false
    for _, l in ipairs(lines) do ordered = ordered or type(l) == "table" end
    local r
    if ordered then
      local proc, waited = helper.cli_piped(args, { env = opts.env or ENV }), {}
      for _, l in ipairs(lines) do
        if type(l) == "table" then
          local kind, session = l.after:match("^(%S+) (%S+)$")
          local key = l.after
          waited[key] = (waited[key] or 0) + 1
          local seen = helper.wait_for(function()
            return count(decode(proc:stdout(), true), kind, session) >= waited[key]
          end, helper.san and 60000 or 20000)
          assert(seen, "no " .. l.after .. " number " .. waited[key] .. " in:\n" .. proc:stdout())
          l = l[1]
        end
        if l then proc:send(l) end
      end
      r = proc:finish(opts.finish_ms)
    else
      local cmd = {}
      for _, l in ipairs(lines) do cmd[#cmd + 1] = "printf '%s\\n' " .. helper.quote(l) end
      r = helper.cli{ args = args, env = opts.env or ENV,
                      stdin_cmd = #cmd > 0 and table.concat(cmd, "; ") or "true" }
    end
    r.events = decode(r.stdout)
    return r
  end

  local function of(events, session)
    local t = {}
    for _, e in ipairs(events) do
      if e.session == session then
        local copy = {}
        for k, v in pairs(e) do if k ~= "session" then copy[k] = v end end
        t[#t + 1] = copy
      end
    end
    return t
  end

  it("starts a session on its first text (its args[1]) and answers its ask with the next", function()
    local r = host("chat.lua", { '{"session":"u1","text":"hi"}', { after = "ask u1", '{"session":"u1","text":"Ann"}' } })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({
      { say = "hello, you said hi" }, { ask = "your name?" }, { say = "bye Ann" }, { ["end"] = "done" },
    }, of(r.events, "u1"))
  end)

  it("keeps each session's messages apart, and starts an ended id again", function()
    local r = host("chat.lua", {
      '{"session":"a","text":"1"}', '{"session":"b","text":"2"}',
      { after = "ask b", '{"session":"b","text":"Bea"}' }, { after = "ask a", '{"session":"a","text":"Al"}' },
      { after = "end a", '{"session":"a","text":"again"}' }, { after = "ask a", '{"session":"a","text":"Al2"}' },
    })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ { say = "hello, you said 2" }, { ask = "your name?" }, { say = "bye Bea" }, { ["end"] = "done" } },
                    of(r.events, "b"))
    local a = of(r.events, "a")
    assert.are.same({ say = "bye Al" }, a[3])
    assert.are.same({ say = "hello, you said again" }, a[5])
    assert.are.same({ say = "bye Al2" }, a[7])
  end)

  it("queues an answer that comes before the ask: the prompt is said, the ask takes it", function()
    local r = host("chat.lua", { '{"session":"u1","text":"hi"}', '{"session":"u1","text":"Ann"}' })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({
      { say = "hello, you said hi" }, { say = "your name?" }, { say = "bye Ann" }, { ["end"] = "done" },
    }, of(r.events, "u1"))
  end)

  it("close ends the channel: the pending ask returns nil", function()
    local r = host("chat.lua", { '{"session":"u1","text":"hi"}', { after = "ask u1", '{"session":"u1","close":true}' } })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ say = "bye nil" }, of(r.events, "u1")[3])
  end)

  it("closes every channel at the end of input and waits for the last session", function()
    local r = host("chat.lua", { '{"session":"u1","text":"hi"}', '{"session":"u2","text":"yo"}',
                                 { after = "ask u1" }, { after = "ask u2" } })   -- then the input ends
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ say = "bye nil" }, of(r.events, "u1")[3])
    assert.are.same({ ["end"] = "done" }, of(r.events, "u2")[4])
  end)

  it("never lets one session wait for another: a fast call ends while a slow one is in flight", function()
    local r = host("call.lua", { '{"session":"slow","text":"/slow"}', '{"session":"fast","text":"/fast"}' })
    assert.are.equal(0, r.code, r.stderr)
    local order = {}
    for _, e in ipairs(r.events) do if e["end"] then order[#order + 1] = e.session end end
    assert.are.same({ "fast", "slow" }, order)
    assert.are.same({ say = "/slow 200" }, of(r.events, "slow")[1])
  end)

  it("runs 100 sessions that each wait on a 1 s route at once: all end before a 6 s call started first", function()
    local lines = { '{"session":"clock","text":"/clock"}' }
    for i = 1, 100 do lines[i + 1] = ('{"session":"s%d","text":"/slow"}'):format(i) end
    local r = host("call.lua", lines)
    assert.are.equal(0, r.code, r.stderr)
    local ends = {}
    for _, e in ipairs(r.events) do if e["end"] == "done" then ends[#ends + 1] = e.session end end
    assert.are.equal(101, #ends)
    assert.are.equal("clock", ends[101], "100 one-second calls ran one after another")
  end)

  it("answers a malformed line with an error naming the line, skips it and goes on", function()
    local r = host("chat.lua", {
      '{"session":"u1","text":"hi"}',
      'not json',
      '[1, 2]',
      '{"text":"x"}',
      '{"session":"u1"}',
      '{"session":"u1","txt":"x"}',
      '{"session":7,"text":"x"}',
      '{"session":"u1\\u0000x","text":"x"}',
      '{"session":"u1","text":42}',
      '{"session":"nobody","close":true}',
      '{"session":"u1","text":"x","close":true}',
      '',
      '{"session":"u1","text\\u0000":"x"}',
      '{"session":"u1","text":"a\\u0000b"}',
      '{"session":"u1","text":"Ann"}',
    })
    assert.are.equal(0, r.code, r.stderr)
    local errors = {}
    for _, e in ipairs(r.events) do if e.error and not e.session then errors[#errors + 1] = e.error end end
    assert.are.same({
      "line 2: not JSON: Expected value but found invalid token at character 1",
      "line 3: expected a JSON object",
      'line 4: "session" is missing',
      'line 5: expected one of "text" or "close"',
      'line 6: unknown key "txt" (expected session, text, close or n)',
      'line 7: "session": expected a non-empty string without NUL',
      'line 8: "session": expected a non-empty string without NUL',
      'line 9: "text": expected a string without NUL',
      "line 10: no session nobody",
      'line 11: expected one of "text" or "close"',
      "line 13: a key with a NUL byte",
      'line 14: "text": expected a string without NUL',
    }, errors)
    assert.are.same({ say = "bye Ann" }, of(r.events, "u1")[3])
  end)

  it("refuses a session id that is not valid UTF-8: such ids would all print as \"\\ufffd\"", function()
    local r = helper.cli{ args = { "host", dir .. "/chat.lua" }, env = ENV,
      stdin = '{"session":"\255","text":"a"}\n{"session":"\254","text":"b"}\n'
        .. '{"session":"u\237\160\128","text":"c"}\n{"session":"\195\169","text":"d"}\n' }
    assert.are.equal(0, r.code, r.stderr)
    local out = helper.lines(r.stdout)
    assert.are.same({ error = 'line 1: "session": not valid UTF-8', line = 1 }, cjson.decode(out[1]))
    assert.are.same({ error = 'line 2: "session": not valid UTF-8', line = 2 }, cjson.decode(out[2]))
    assert.are.same({ error = 'line 3: "session": not valid UTF-8', line = 3 }, cjson.decode(out[3]))
    assert.are.same({ session = "\195\169", say = "hello, you said d" }, cjson.decode(out[4]))
  end)

  it("drops a message to a session that already holds 1000 it has not asked for", function()
    helper.flow([[ sleep(300) say("woke") ]], dir, "sleeper.lua")
    local lines = { '{"session":"s","text":"start"}' }
    for i = 1, 1001 do lines[#lines + 1] = ('{"session":"s","text":"m%d"}'):format(i) end
    local r = helper.cli{ args = { "host", dir .. "/sleeper.lua" }, env = ENV,
                          stdin = table.concat(lines, "\n") .. "\n" }
    assert.are.equal(0, r.code, r.stderr)
    local out = helper.lines(r.stdout)
    assert.are.same({ error = "line 1002: session s has 1000 messages it has not asked for: this one is dropped",
                      line = 1002 }, cjson.decode(out[1]))
    assert.are.equal(3, #out)
  end)

  it("refuses a line longer than 1 MiB from a file too, where it comes in one read", function()
    helper.write(dir .. "/long.jsonl", ("x"):rep(1200 * 1000) .. "\n" .. '{"session":"u1","text":"after"}\n')
    local r = helper.cli{ args = { "host", dir .. "/chat.lua" }, env = ENV, stdin = helper.read(dir .. "/long.jsonl") }
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("line 1: longer than 1048576 bytes", cjson.decode(helper.lines(r.stdout)[1]).error)
    assert.matches('"say":"hello, you said after"', r.stdout, 1, true)
  end)

  it("refuses a 3 MiB line that arrives over many reads, and reads the next", function()
    helper.write(dir .. "/long.lua", [[io.write(("x"):rep(3 * 1024 * 1024), "\n", '{"session":"u1","text":"after"}', "\n")]])
    local r = helper.cli{ args = { "host", dir .. "/chat.lua" }, env = ENV,
                          stdin_cmd = "lua5.4 " .. dir .. "/long.lua" }
    assert.are.equal(0, r.code, r.stderr)
    local first = cjson.decode(helper.lines(r.stdout)[1])
    assert.are.equal("line 1: longer than 1048576 bytes", first.error)
    assert.matches('"say":"hello, you said after"', r.stdout, 1, true)
  end)

  it("after a line over 1 MiB split across reads, the next lines keep their numbers", function()
    -- through a pipe the 3 MiB line comes in many reads
    helper.write(dir .. "/long3.lua", [[io.write(("x"):rep(3 * 1024 * 1024), "\n", '{"session":"u1","text":"after"}', "\n", "{}\n", '"x"', "\n")]])
    local r = helper.cli{ args = { "host", dir .. "/chat.lua" }, env = ENV,
                          stdin_cmd = "lua5.4 " .. dir .. "/long3.lua" }
    assert.are.equal(0, r.code, r.stderr)
    local errors = {}
    for _, line in ipairs(helper.lines(r.stdout)) do
      local e = cjson.decode(line)
      if e.error and e.line then errors[#errors + 1] = ("%d %s"):format(e.line, e.error) end
    end
    assert.are.same({ "1 line 1: longer than 1048576 bytes", '3 line 3: "session" is missing',
                      "4 line 4: expected a JSON object" }, errors)
    assert.matches('"say":"hello, you said after"', r.stdout, 1, true)
  end)

  it("reports a session that raises as its end, with file:line, and exits 1", function()
    local r = host("chat.lua", { '{"session":"u1","text":"hi"}', { after = "ask u1", '{"session":"u1","text":"boom"}' },
                                 '{"session":"u2","text":"hi"}', { after = "ask u2", '{"session":"u2","text":"Bo"}' } })
    assert.are.equal(1, r.code)
    local e = of(r.events, "u1")[3]
    assert.are.equal("error", e["end"])
    assert.matches("chat.lua:3: boom", e.error, 1, true)
    assert.are.same({ say = "bye Bo" }, of(r.events, "u2")[3])
  end)

  it("writes valid JSON whatever a flow says: control characters, invalid UTF-8", function()
    helper.flow([[
      say("tab\there \"q\" \\ é € 𝄞 \255\254 end")
      say("overlong \xC0\xAF \xE0\x80\xAF \xF0\x80\x80\xAF")
      say("surrogate \xED\xA0\x80, too high \xF4\x90\x80\x80 \xF7\xBF\xBF\xBF, cut \xE2\x82")
    ]], dir, "odd.lua")
    local r = host("odd.lua", { '{"session":"u1","text":"x"}' })
    assert.are.equal(0, r.code, r.stderr)
    local said = of(r.events, "u1")
    assert.are.equal('tab\there "q" \\ é € 𝄞 \u{FFFD}\u{FFFD} end', said[1].say)
    for i = 2, 3 do
      assert.is_truthy(utf8.len(said[i].say), "not valid UTF-8: " .. said[i].say)
      assert.is_nil(said[i].say:find("[\xC0\xE0\xED\xF0\xF4\xF7]"), said[i].say)
    end
    assert.are.equal("overlong \u{FFFD}\u{FFFD} " .. ("\u{FFFD}"):rep(3) .. " " .. ("\u{FFFD}"):rep(4), said[2].say)
  end)

  it("closes the channels at the end of input in their turn: a call in flight ends, then its ask waits and gets nil", function()
    helper.flow([[
      local label = api_node{ integration = "shop", path = "/slow", results = { "200" } }
      local more = ask("more? " .. label)
      say(tostring(more))
    ]], dir, "call_ask.lua")
    local r = host("call_ask.lua", { '{"session":"c1","text":"go"}' })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ { ask = "more? 200" }, { say = "nil" }, { ["end"] = "done" } }, of(r.events, "c1"))
  end)

  it("reads stdin only while fewer than 1000 sessions wait to run: 20 000 lines take no more memory than 2 000", function()
    -- each line starts a session that builds a table; read at once, most of
    -- 20 000 would be in memory together (over 2x the peak of 2 000); read as
    -- they run, about as many.
    -- (Not under AddressSanitizer, whose quarantine holds freed memory.)
    if helper.san then return end
    helper.flow('local t = {}\nfor i = 1, 500 do t[i] = { i } end\nsay("ok")\n', dir, "ok.lua")
    local function peak_kb(n, pipe)       -- stdin a file, or a pipe written at once
      local lines = {}
      for i = 1, n do lines[i] = ('{"session":"s%d","text":"x"}'):format(i) end
      helper.write(dir .. "/many.jsonl", table.concat(lines, "\n") .. "\n")
      local run = pipe and "r = subprocess.run(sys.argv[2:], input=open(sys.argv[1], 'rb').read(),"
                           .. " stdout=subprocess.DEVNULL)\n"
                  or "r = subprocess.run(sys.argv[2:], stdin=open(sys.argv[1]), stdout=subprocess.DEVNULL)\n"
      local out = helper.sh("env -u LD_PRELOAD HOST_SECRET=x /usr/bin/python3 -c " .. helper.quote(
        "import resource, subprocess, sys\n" .. run
        .. "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
        .. " " .. helper.quote(dir .. "/many.jsonl") .. " " .. helper.quote(helper.flowrun)
        .. " host " .. helper.quote(dir .. "/ok.lua"))
      local code, kb = out:match("^(%d+) (%d+)")
      assert.are.equal("0", code, out)
      return tonumber(kb)
    end
    for _, pipe in ipairs({ false, true }) do
      local small, big = peak_kb(2000, pipe), peak_kb(20000, pipe)
      assert.is_true(big < small * 1.5, ("stdin a %s: peak RSS %d KB for 20 000 lines, %d KB for 2 000")
                                        :format(pipe and "pipe" or "file", big, small))
    end
  end)

  it("closes each channel in its own turn: a session that keeps calling or yielding does not hold another's nil", function()
    -- a asks at once; p calls 50 times, y yields 100 000 times (always ready
    -- to run), each then makes a 1 s call: a's nil comes while they still
    -- run, not when all is quiet (a's line first, their 1 s calls last: a
    -- slow writer between the lines cannot make them end first)
    helper.flow([[
      if args[1] == "poll" then
        for _ = 1, 50 do api_node{ integration = "shop", path = "/fast", results = { "200" } } end
        api_node{ integration = "shop", path = "/slow", results = { "200" } }
        say("polled")
        return
      elseif args[1] == "spin" then
        for _ = 1, 100000 do coroutine.yield() end
        api_node{ integration = "shop", path = "/slow", results = { "200" } }
        say("spun")
        return
      end
      say(tostring(ask("more?")))
    ]], dir, "poll_ask.lua")
    local r = host("poll_ask.lua", { '{"session":"a","text":"ask"}', '{"session":"p","text":"poll"}',
                                     '{"session":"y","text":"spin"}' })
    assert.are.equal(0, r.code, r.stderr)
    local ended, got_nil = {}, nil
    for i, e in ipairs(r.events) do
      if e["end"] then ended[e.session] = i end
      if e.session == "a" and e.say == "nil" then got_nil = i end
    end
    assert.is_truthy(ended.p and ended.y and got_nil, r.stdout)
    assert.is_true(got_nil < ended.p and got_nil < ended.y, r.stdout)
  end)

  it("closes at the end of input the channel of a session that waits, and of one that waits later", function()
    -- w waits in ask; its second line comes, then the end of input while w
    -- makes a 1 s call: w asks again (an ask line) and gets nil. n, started
    -- by the last line, is in a 1 s call at the end: it asks, gets nil, and
    -- its next ask does not wait (its prompt comes as a say).
    helper.flow([[
      if args[1] == "late" then api_node{ integration = "shop", path = "/slow", results = { "200" } } end
      local got = ask("first?")
      say("got " .. tostring(got))
      if got then api_node{ integration = "shop", path = "/slow", results = { "200" } } end
      say("then " .. tostring(ask("second?")))
    ]], dir, "two_asks.lua")
    local r = host("two_asks.lua", { '{"session":"w","text":"go"}',
                                     { after = "ask w", '{"session":"w","text":"one"}' },
                                     '{"session":"n","text":"late"}' },
                   { finish_ms = helper.san and 60000 or 15000 })   -- a session left waiting: a hang
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ { ask = "first?" }, { say = "got one" }, { ask = "second?" }, { say = "then nil" },
                      { ["end"] = "done" } }, of(r.events, "w"))
    assert.are.same({ { ask = "first?" }, { say = "got nil" }, { say = "second?" }, { say = "then nil" },
                      { ["end"] = "done" } }, of(r.events, "n"))
  end)

  it("works in slices: what the first sessions of a burst said is out before the last ones run", function()
    -- 100 sessions, each about 10 ms of Lua, all started by one write: the host
    -- resumes them in slices of 5 ms and writes out what they said after each,
    -- so the first reply is there while most sessions have not run yet. Without
    -- slices all 100 replies (under 4 KB: one buffer) come out together at the end.
    helper.flow([[
      local n = 0
      for i = 1, 3e6 do n = n + i end
      say(args[1])
    ]], dir, "hog.lua")
    local proc = helper.cli_piped({ "host", dir .. "/hog.lua" }, { env = ENV })
    local lines = {}
    for i = 1, 100 do lines[i] = ('{"session":"h%d","text":"%d"}'):format(i, i) end
    proc:send(table.concat(lines, "\n"))
    local function says(events)
      local n = 0
      for _, e in ipairs(events) do if e.say then n = n + 1 end end
      return n
    end
    local first = helper.wait_for(function()
      local n = says(decode(proc:stdout(), true))
      return n > 0 and n
    end, helper.san and 120000 or 60000)
    local r = proc:finish()
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(100, says(decode(r.stdout)))
    assert.is_truthy(first and first < 50, "replies seen when the first came out: " .. tostring(first))
  end)

  it("hides secrets in what sessions say and in errors", function()
    helper.flow([[ say("key " .. os.getenv("HOST_SECRET")) error("with " .. os.getenv("HOST_SECRET")) ]],
                dir, "leak.lua")
    local r = host("leak.lua", { '{"session":"u1","text":"x"}' }, { allow = "os" })
    assert.are.equal(1, r.code)
    assert.matches('"say":"key ***"', r.stdout, 1, true)
    assert.is_nil(r.stdout:find("hunter2-xyz", 1, true))
  end)

  it("reads a regular file as input too", function()
    local input = dir .. "/input.jsonl"
    helper.write(input, '{"session":"u1","text":"hi"}\n{"session":"u1","text":"Ann"}')   -- no last \n
    local r = helper.cli{ args = { "host", dir .. "/chat.lua" }, stdin = helper.read(input), env = ENV }
    assert.are.equal(0, r.code, r.stderr)
    assert.matches('{"session":"u1","say":"bye Ann"}', r.stdout, 1, true)
  end)

  it("is 2 for a missing flow, a broken integrations file or no flow", function()
    assert.are.equal(2, helper.cli{ args = { "host", dir .. "/nope.lua" } }.code)
    assert.are.equal(2, helper.cli{ args = { "host" } }.code)
    local bad = helper.tmpdir()
    helper.integrations("return { shop = { base_url = 42 } }", bad)
    helper.flow([[ say("x") ]], bad, "f.lua")
    local r = helper.cli{ args = { "host", bad .. "/f.lua" } }
    assert.are.equal(2, r.code)
    assert.matches("integrations.lua", r.stderr, 1, true)
  end)
end)
