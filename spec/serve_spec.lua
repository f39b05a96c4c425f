-- README: flowrun serve. Conversations over HTTP webhooks, a long poll,
-- /health and /metrics, against the real server and curl.
local helper = require "spec.helper"
local cjson = require "cjson"

describe("flowrun serve", function()
  local mock, dir, flow, ifile

  setup(function()
    mock = helper.mock({ { path = "/hello", json = { ok = true } },
                         { path = "/slow", delay_ms = 2000, json = { ok = true } } })
    dir = helper.tmpdir()
    ifile = helper.integrations({ shop = { base_url = mock.url } }, dir)
    flow = helper.flow([[
      local name = ...
      local label = api_node{ integration = "shop", path = "/hello", results = { "200" } }
      say("hello " .. name .. " " .. label)
      local age = ask("how old?")
      if age == "slow" then sleep(2000) say("later") end
      say("you are " .. tostring(age))
      local b = ask("bye?")
      say("ok " .. tostring(b))
    ]], dir)
  end)

  teardown(helper.cleanup)

  -- curl: returns the status, the body and the response headers.
  local function http(method, url, body, headers)
    local d = helper.tmpdir()
    local cmd = { "env -u LD_PRELOAD curl -s -X", method, "-o", d .. "/body", "-D", d .. "/head", "-w '%{http_code}'" }
    if body then
      helper.write(d .. "/in", body)
      cmd[#cmd + 1] = "--data-binary @" .. helper.quote(d .. "/in")
    end
    for _, h in ipairs(headers or {}) do cmd[#cmd + 1] = "-H " .. helper.quote(h) end
    cmd[#cmd + 1] = helper.quote(url)
    local p = io.popen(table.concat(cmd, " "))
    local code = tonumber(p:read("a"))
    p:close()
    return code, helper.read(d .. "/body") or "", helper.read(d .. "/head") or ""
  end

  local function post(srv, sender, message, headers)
    return http("POST", srv.url .. "/webhooks/rest",
                cjson.encode({ sender = sender, message = message }), headers)
  end

  -- The texts of a Rasa answer, each checked to be for sender.
  local function texts(body, sender)
    local out = {}
    for _, m in ipairs(cjson.decode(body)) do
      assert.are.equal(sender, m.recipient_id)
      out[#out + 1] = m.text
    end
    return out
  end

  it("holds a conversation over several webhooks, one session per sender", function()
    local srv = helper.serve({ "-I", ifile, flow })
    local code, body, head = post(srv, "u1", "bob")
    assert.are.equal(200, code)
    assert.truthy(head:lower():find("content-type: application/json", 1, true))
    assert.are.same({ "hello bob 200", "how old?" }, texts(body, "u1"))
    code, body = post(srv, "u2", "ann")
    assert.are.same({ "hello ann 200", "how old?" }, texts(body, "u2"))
    code, body = post(srv, "u1", "42")
    assert.are.equal(200, code)
    assert.are.same({ "you are 42", "bye?" }, texts(body, "u1"))
    code, body = post(srv, "u1", "yes")
    assert.are.same({ "ok yes" }, texts(body, "u1"))
    code, body = post(srv, "u2", "7")
    assert.are.same({ "you are 7", "bye?" }, texts(body, "u2"))
    assert.are.equal("", srv:stop())
  end)

  it("gives messages that come after --reply-timeout through the long poll", function()
    local srv = helper.serve({ "-I", ifile, "--reply-timeout", "1", flow })
    post(srv, "u1", "bob")
    local t0 = helper.now()
    local code, body = post(srv, "u1", "slow")     -- sleeps 2 s: the webhook answers at 1 s
    assert.are.equal(200, code)
    assert.are.same({}, texts(body, "u1"))
    assert.is_true(helper.now() - t0 < 1900)
    code, body = http("GET", srv.url .. "/webhooks/rest/messages?sender=u1&wait=10")
    assert.are.equal(200, code)
    assert.are.same({ "later", "you are slow", "bye?" }, texts(body, "u1"))
    -- nothing queued: an empty array after the wait
    t0 = helper.now()
    code, body = http("GET", srv.url .. "/webhooks/rest/messages?sender=u1&wait=1")
    assert.are.equal(200, code)
    assert.are.equal("[]", body)
    assert.is_true(helper.now() - t0 >= 900)
    code, body = post(srv, "u1", "yes")
    assert.are.same({ "ok yes" }, texts(body, "u1"))
    assert.are.equal("", srv:stop())
  end)

  it("starts a webhook's answer with the messages no poll took; a second message meanwhile is a 409", function()
    local srv = helper.serve({ "-I", ifile, "--reply-timeout", "1", flow })
    post(srv, "u1", "bob")
    local d = helper.tmpdir()
    os.execute("env -u LD_PRELOAD curl -s -o " .. d .. "/first -d '{\"sender\":\"u1\",\"message\":\"slow\"}' "
               .. srv.url .. "/webhooks/rest &")
    assert.truthy(helper.wait_for(function()    -- until the first is being answered
      local _, m = http("GET", srv.url .. "/metrics")
      return m:find("\nflowrun_webhooks_total 2\n", 1, true)
    end, 5000))
    local code, body = post(srv, "u1", "again")
    assert.are.equal(409, code)
    assert.are.same({ error = "the sender's previous message is still being answered" }, cjson.decode(body))
    assert.truthy(helper.wait_for(function() return helper.read(d .. "/first") == "[]" end, 5000))
    -- the sleep ends, nobody polls: the next webhook's answer starts with what came
    assert.truthy(helper.wait_for(function()
      local _, m = http("GET", srv.url .. "/metrics")
      return m:find("\nflowrun_sessions_waiting 1\n", 1, true)
    end, 5000))
    code, body = post(srv, "u1", "yes")
    assert.are.equal(200, code)
    assert.are.same({ "later", "you are slow", "bye?", "ok yes" }, texts(body, "u1"))
    assert.are.equal("", srv:stop())
  end)

  it("exits 0 on SIGTERM", function()
    local d = helper.tmpdir()
    local p = io.popen("cd " .. d .. "; " .. helper.quote(helper.flowrun) .. " serve -I "
      .. helper.quote(ifile) .. " " .. helper.quote(flow) .. " --port 0 >out 2>err & p=$!;"
      .. " for i in $(seq 200); do grep -q listening out && break; sleep 0.05; done;"
      .. " kill -TERM $p; for i in $(seq 100); do kill -0 $p 2>/dev/null || break; sleep 0.05; done;"
      .. " kill -KILL $p 2>/dev/null; wait $p; echo $?")
    local rc = p:read("a")
    p:close()
    assert.are.equal("0\n", rc)
    assert.are.equal("", helper.read(d .. "/err"))
  end)

  it("serves 1 000 senders at once", function()
    local srv = helper.serve({ "-I", ifile, flow })
    local d = helper.tmpdir()
    local cmds = {}
    for k = 0, 3 do                     -- curl runs at most 300 at once: 4 of them
      local cfg = {}
      for i = k * 250 + 1, k * 250 + 250 do
        cfg[#cfg + 1] = ('url = "%s/webhooks/rest"\ndata = "{\\"sender\\":\\"s%d\\",\\"message\\":\\"n%d\\"}"\noutput = "%s/r%d"\n')
                        :format(srv.url, i, i, d, i)
      end
      helper.write(d .. "/cfg" .. k, table.concat(cfg, "next\n"))
      cmds[#cmds + 1] = "env -u LD_PRELOAD curl -s -Z --parallel-immediate --parallel-max 250 -K " .. d .. "/cfg" .. k .. " 2>/dev/null &"
    end
    os.execute(table.concat(cmds, " ") .. " wait")
    for i = 1, 1000 do
      local body = helper.read(d .. "/r" .. i)
      assert.are.same({ "hello n" .. i .. " 200", "how old?" }, texts(body, "s" .. i))
    end
    local _, metrics = http("GET", srv.url .. "/metrics")
    assert.truthy(metrics:find("\nflowrun_sessions_waiting 1000\n", 1, true))
    assert.truthy(metrics:find('\nflowrun_calls_total{integration="shop",label="200"} 1000\n', 1, true))
    assert.are.equal("", srv:stop())
  end)

  it("answers bad input with a 4xx and a JSON error, and nothing else is affected", function()
    local srv = helper.serve({ "-I", ifile, flow })
    post(srv, "u1", "bob")
    local url = srv.url .. "/webhooks/rest"
    local cases = {
      { "POST", url, "not json", 400, "not JSON" },
      { "POST", url, "[1,2]", 400, "expected a JSON object" },
      { "POST", url, '{"sender":1,"message":"x"}', 400, '"sender": expected a non-empty string' },
      { "POST", url, '{"sender":"u9","message":3}', 400, '"message": expected a string' },
      { "POST", url, '{"sender":"u9"}', 400, '"message" is missing' },
      { "POST", url, '{"message":"x"}', 400, '"sender" is missing' },
      { "POST", url, '{"sender":"u9","message":"x","x":1}', 400,
        'unknown key "x" (expected sender, message and number)' },
      { "POST", url, '{"sender":"u9","message":"x","number":"1"}', 400, '"number": expected a whole number from 1' },
      { "POST", url, '{"sender":"u9","message":"x","number":1.5}', 400, '"number": expected a whole number from 1' },
      { "POST", url, '{"sender":"u9","message":"x","number":0}', 400, '"number": expected a whole number from 1' },
      { "POST", url, '{"sender":"u9","message":"' .. ("x"):rep(65537) .. '"}', 413,
        "the body is over 64 KiB" },
      { "GET", srv.url .. "/nowhere", nil, 404, "no such route" },
      { "GET", url, nil, 405, "method not allowed", "POST" },
      { "POST", srv.url .. "/health", "{}", 405, "method not allowed", "GET" },
      { "GET", url .. "/messages", nil, 400, "expected ?sender=ID" },
      { "GET", url .. "/messages?sender=u1&wait=99", nil, 400, "wait: expected whole seconds from 0 to 60" },
    }
    for _, c in ipairs(cases) do
      local code, body, head = http(c[1], c[2], c[3])
      assert.are.equal(c[4], code, c[3])
      assert.are.same({ error = c[5] }, cjson.decode(body))
      if c[6] then assert.truthy(head:find("\nAllow: " .. c[6] .. "\r", 1, true), head) end
    end
    local code, body = post(srv, "u1", "42")    -- u1 goes on; u9 never started
    assert.are.equal(200, code)
    assert.are.same({ "you are 42", "bye?" }, texts(body, "u1"))
    local _, health = http("GET", srv.url .. "/health")
    assert.are.same({ status = "ok", sessions = 1 }, cjson.decode(health))
    assert.are.equal("", srv:stop())
  end)

  it("asks for the bearer token of --token-env when given", function()
    local srv = helper.serve({ "-I", ifile, "--token-env", "SERVE_TOKEN", flow },
                             { SERVE_TOKEN = "s3cret-token" })
    local code, body, head = post(srv, "u1", "bob")
    assert.are.equal(401, code)
    assert.are.same({ error = "a bearer token is needed" }, cjson.decode(body))
    assert.truthy(head:find("WWW-Authenticate: Bearer", 1, true))
    code = post(srv, "u1", "bob", { "Authorization: Bearer s3cret-tokeN" })
    assert.are.equal(401, code)
    code = post(srv, "u1", "bob", { "Authorization: Bearer s3cret-token-and-more" })
    assert.are.equal(401, code)
    code = http("GET", srv.url .. "/webhooks/rest/messages?sender=u1&wait=0")
    assert.are.equal(401, code)
    code, body = post(srv, "u1", "bob", { "Authorization: Bearer s3cret-token" })
    assert.are.equal(200, code)
    assert.are.same({ "hello bob 200", "how old?" }, texts(body, "u1"))
    code = http("GET", srv.url .. "/health")      -- for the load balancer: no token
    assert.are.equal(200, code)
    assert.are.equal("", srv:stop())
  end)

  it("refuses --token-env of an unset variable", function()
    local r = helper.cli({ args = { "serve", "--token-env", "SERVE_NO_SUCH_TOKEN", "--port", "0", flow } })
    assert.are.equal(2, r.code)
    assert.are.equal("flowrun serve: --token-env SERVE_NO_SUCH_TOKEN: the variable is not set\n", r.stderr)
  end)

  -- /metrics read by the real parser (python3's prometheus_client): a set of
  -- "type name{k=v,...} value" lines, and those lines as text.
  local function parse_metrics(text)
    local f = helper.write(helper.tmpdir() .. "/m.txt", text)
    local p = io.popen("env -u LD_PRELOAD /usr/bin/python3 -c " .. helper.quote([[
import sys
from prometheus_client.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
        print("%s %s{%s} %g" % (fam.type, s.name, labels, s.value))
]]) .. " " .. f .. " 2>&1")
    local out = p:read("a")
    p:close()
    local got = {}
    for line in out:gmatch("[^\n]+") do got[line] = true end
    return got, out
  end

  it("exposes /metrics in the Prometheus text format", function()
    local srv = helper.serve({ "-I", ifile, flow })
    post(srv, "u1", "bob")
    post(srv, "u2", "ann")
    post(srv, "u2", "5")
    post(srv, "u2", "no")                 -- u2 ends
    http("POST", srv.url .. "/webhooks/rest", "nope")
    local code, text, head = http("GET", srv.url .. "/metrics")
    assert.are.equal(200, code)
    assert.truthy(head:find("Content-Type: text/plain; version=0.0.4", 1, true))
    local got, out = parse_metrics(text)
    for _, want in ipairs{
      "gauge flowrun_sessions_live{} 1",
      "gauge flowrun_sessions_waiting{} 1",
      "counter flowrun_webhooks_total{} 4",
      "counter flowrun_bad_requests_total{} 1",
      "counter flowrun_calls_total{integration=shop,label=200} 2",
      "histogram flowrun_call_duration_seconds_count{integration=shop} 2",
      "histogram flowrun_call_duration_seconds_bucket{integration=shop,le=+Inf} 2",
      "histogram flowrun_call_duration_seconds_bucket{integration=shop,le=10} 2",
      "gauge flowrun_pool_in_flight{integration=shop} 0",
      "gauge flowrun_pool_queued{integration=shop} 0",
    } do
      assert.is_true(got[want] == true, want .. " not in:\n" .. out)
    end
    assert.is_nil(out:find("flowrun_store_commit", 1, true))    -- no store, no such family
    assert.are.equal("", srv:stop())
  end)

  it("exposes each pool's calls in flight and queued, and the store's commits and their time", function()
    local d = helper.tmpdir()
    local ifile2 = helper.integrations({ slow = { base_url = mock.url, max_connections = 1,
                                                       queue_timeout_ms = 20000 } }, d)
    local f = helper.flow([[
      api_node{ integration = "slow", path = "/slow", results = { "200" } }
      say("done")
    ]], d, "slow.lua")
    local srv = helper.serve({ "-I", ifile2, "--store", d .. "/s.db", "--reply-timeout", "0", f })
    local function scrape()
      local code, text = http("GET", srv.url .. "/metrics")
      assert.are.equal(200, code)
      return parse_metrics(text)
    end
    for _, u in ipairs{ "a", "b", "c" } do assert.are.equal(200, (post(srv, u, "x"))) end
    -- each call takes 2 s, one at a time: one in flight, two queued
    local got, out = scrape()
    assert.is_true(got["gauge flowrun_pool_in_flight{integration=slow} 1"], out)
    assert.is_true(got["gauge flowrun_pool_queued{integration=slow} 2"], out)
    assert.truthy(helper.wait_for(function()
      got, out = scrape()
      return got["gauge flowrun_pool_in_flight{integration=slow} 0"]
        and got["gauge flowrun_pool_queued{integration=slow} 0"]
        and got["counter flowrun_calls_total{integration=slow,label=200} 3"]
    end, 20000), out)
    -- the commits: counted, each once in the histogram
    local n = tonumber(out:match("\ncounter flowrun_store_commits_total{} (%d+)\n"))
    assert.is_true(n ~= nil and n >= 3, out)        -- at least the three starts and the three calls' ends
    assert.is_true(got["histogram flowrun_store_commit_seconds_count{} " .. n], out)
    assert.is_true(got["histogram flowrun_store_commit_seconds_bucket{le=+Inf} " .. n], out)
    local sum = tonumber(out:match("\nhistogram flowrun_store_commit_seconds_sum{} (%S+)\n"))
    assert.is_true(sum > 0 and sum < n, out)
    local last = 0                        -- buckets: cumulative, up to the count
    for le, c in out:gmatch("\nhistogram flowrun_store_commit_seconds_bucket{le=([%d.e+-]+)} (%d+)") do
      assert.is_true(tonumber(c) >= last, le .. " " .. out)
      last = tonumber(c)
    end
    assert.are.equal(n, last)             -- le=1: every commit took less than a second
    assert.are.equal("", srv:stop())
  end)

  -- The "seq" of each message of a Rasa answer (nil where it has none).
  local function seqs(body)
    local out = {}
    for i, m in ipairs(cjson.decode(body)) do out[i] = m.seq or false end
    return out
  end

  it("with --store keeps a conversation across a restart, its messages numbered in the session (seq)", function()
    local store = helper.tmpdir() .. "/s.db"
    local srv = helper.serve({ "-I", ifile, "--store", store, flow })
    local _, body = post(srv, "u1", "bob")
    assert.are.same({ "hello bob 200", "how old?" }, texts(body, "u1"))
    local first = seqs(body)
    assert.is_true(first[1] >= 1 and first[1] % 1 == 0 and first[2] > first[1], body)
    assert.are.equal("", srv:stop())
    srv = helper.serve({ "-I", ifile, "--store", store, flow })
    local code
    code, body = post(srv, "u1", "42")
    assert.are.equal(200, code)
    assert.are.same({ "you are 42", "bye?" }, texts(body, "u1"))
    local later = seqs(body)
    assert.is_true(later[1] > first[2] and later[2] > later[1], body)
    assert.are.equal("", srv:stop())
    -- without a store, no numbers
    srv = helper.serve({ "-I", ifile, flow })
    _, body = post(srv, "u1", "bob")
    assert.are.same({ false, false }, seqs(body))
    assert.are.equal("", srv:stop())
  end)

  it("scripts/converse.py drops a bot message whose seq the conversation has seen, and counts it", function()
    -- a server that gives message 1's answer again at the start of message 2's
    local m = helper.mock({
      { method = "POST", path = "/webhooks/rest", times = 1,
        json = { { recipient_id = "s1", seq = 1, text = "name?" } } },
      { method = "POST", path = "/webhooks/rest",
        json = { { recipient_id = "s1", seq = 1, text = "name?" }, { recipient_id = "s1", seq = 2, text = "hi Al" } } },
    })
    local d = helper.tmpdir()
    helper.write(d .. "/in.jsonl", '{"sender":"s1","messages":["hi","Al"]}\n')
    local out = helper.sh(("env -u LD_PRELOAD /usr/bin/python3 %s %s < %s")
      :format(helper.quote(helper.root .. "/scripts/converse.py"), m.url, helper.quote(d .. "/in.jsonl")))
    local rec = cjson.decode(out:match("^[^\n]+"))
    assert.are.same({ { "name?" }, { "hi Al" } }, rec.turns, out)
    assert.are.equal(1, rec.again, out)
    assert.are.equal(1, cjson.decode(out:match("\n([^\n]+)\n$")).again, out)
  end)

  it("gives a Lua host the same figures: rt:stats()", function()
    local flowrun = helper.module()
    local d = helper.tmpdir()
    local f = helper.flow([[
      api_node{ integration = "slow", path = "/slow", results = { "200" } }
    ]], d, "slow.lua")
    local rt = flowrun.new{ integrations = { slow = { base_url = mock.url, max_connections = 1,
                                                      queue_timeout_ms = 20000 } },
                            store = { path = d .. "/s.db" } }
    for _, id in ipairs{ "a", "b", "c" } do rt:start(id, f) end
    local st
    for _ = 1, 20 do
      rt:step(50)
      st = rt:stats()
      if st.pools.slow.queued == 2 then break end
    end
    assert.are.same({ slow = { in_flight = 1, queued = 2 } }, st.pools)
    assert.is_true(rt:run(20000))
    st = rt:stats()
    assert.are.same({ slow = { in_flight = 0, queued = 0 } }, st.pools)
    assert.is_true(st.store.commits >= 3 and st.store.seconds > 0)
    assert.are.same({ 1, st.store.commits }, st.store.le[10])
    assert.are.same({ 0.0001 }, { st.store.le[1][1] })
    rt:close()
    rt = flowrun.new{}
    assert.is_nil(rt:stats().store)
    rt:close()
  end)

  -- flowrun sessions --store PATH --json: { id = { state, messages } }
  local function rows(store)
    local r = helper.cli({ args = { "sessions", "--store", store, "--json" } })
    assert.are.equal(0, r.code, r.stderr)
    local out = {}
    for l in r.stdout:gmatch("[^\n]+") do
      local e = cjson.decode(l)
      out[e.session] = { state = e.state, messages = e.messages }
    end
    return out
  end

  -- A numbered webhook: status and body (decoded).
  local function send(srv, sender, message, number)
    local code, body = http("POST", srv.url .. "/webhooks/rest",
                            cjson.encode({ sender = sender, message = message, number = number }))
    return code, cjson.decode(body)
  end

  local function said(list)
    local out = {}
    for _, m in ipairs(list) do out[#out + 1] = m.text end
    return out
  end

  it("takes a numbered message once: sent again, the same answer; a gap or an old number, 409", function()
    local srv = helper.serve({ "-I", ifile, flow })
    local code, got = send(srv, "u1", "bob", 1)
    assert.are.equal(200, code)
    assert.are.same({ "hello bob 200", "how old?" }, said(got))
    code, got = send(srv, "u1", "bob", 1)        -- its answer was lost: sent again
    assert.are.equal(200, code)
    assert.are.same({ "hello bob 200", "how old?" }, said(got))
    code, got = send(srv, "u1", "42", 3)
    assert.are.equal(409, code)
    assert.are.same({ error = "number 3 leaves a gap: the next is 2", expected = 2 }, got)
    code, got = send(srv, "u1", "42", 2)
    assert.are.same({ "you are 42", "bye?" }, said(got))
    code, got = send(srv, "u1", "42", 2)
    assert.are.equal(200, code)
    assert.are.same({ "you are 42", "bye?" }, said(got))
    code, got = send(srv, "u1", "bob", 1)
    assert.are.equal(409, code)
    assert.are.same({ error = "number 1 was taken already: the next is 3", expected = 3 }, got)
    code, got = send(srv, "u1", "yes", 3)        -- "42" went to the flow once: bye? gets "yes"
    assert.are.same({ "ok yes" }, said(got))
    code, got = send(srv, "u1", "yes", 3)        -- the last message of an ended conversation
    assert.are.equal(200, code)
    assert.are.same({ "ok yes" }, said(got))
    local _, m = http("GET", srv.url .. "/metrics")
    assert.truthy(m:find("\nflowrun_webhooks_total 3\n", 1, true), m)
    assert.truthy(m:find('\nflowrun_calls_total{integration="shop",label="200"} 1\n', 1, true), m)
    assert.are.equal("", srv:stop())
  end)

  it("with --store knows the numbers taken across a restart (flowrun_send_n)", function()
    local store = helper.tmpdir() .. "/n.db"
    local srv = helper.serve({ "-I", ifile, "--store", store, flow })
    local code, got = send(srv, "u1", "bob", 1)
    assert.are.same({ "hello bob 200", "how old?" }, said(got))
    assert.are.equal("", srv:stop())
    srv = helper.serve({ "-I", ifile, "--store", store, flow })
    code, got = send(srv, "u1", "bob", 1)        -- taken before the restart: not again
    assert.are.equal(200, code)
    assert.are.same({}, got)
    code, got = send(srv, "u1", "42", 4)
    assert.are.equal(409, code)
    assert.are.same({ error = "number 4 leaves a gap: the next is 2", expected = 2 }, got)
    code, got = send(srv, "u1", "42", 2)
    assert.are.same({ "you are 42", "bye?" }, said(got))
    assert.are.equal("", srv:stop())
    srv = helper.serve({ "-I", ifile, "--store", store, flow })
    code, got = send(srv, "u1", "42", 2)
    assert.are.equal(200, code)
    assert.are.same({}, got)
    code, got = send(srv, "u1", "yes", 3)
    assert.are.same({ "ok yes" }, said(got))
    assert.are.same({ u1 = { state = "ended", messages = 2 } }, rows(store))
    -- ended: its numbers stay taken (--keep-ended); a message without one starts anew
    code, got = send(srv, "u1", "bob", 1)
    assert.are.equal(409, code)
    assert.are.same({ error = "number 1 was taken already: the next is 4", expected = 4 }, got)
    code, got = send(srv, "u1", "more", 4)
    assert.are.equal(409, code)
    assert.are.same({ error = 'the conversation has ended: a message without "number" starts another' }, got)
    code, got = send(srv, "u1", "ann")
    assert.are.same({ "hello ann 200", "how old?" }, said(got))
    assert.are.equal("", srv:stop())
  end)

  it("with --on-mismatch park parks a session whose flow changed, as host does (else it fails)", function()
    local d = helper.tmpdir()
    local src = [[
      api_node{ integration = "shop", path = "/hello", results = { "200" } }
      local age = ask("how old?")
      say("you are " .. age)
    ]]
    local f = helper.flow(src, d, "changing.lua")
    for _, park in ipairs{ true, false } do
      local store = d .. (park and "/park.db" or "/fail.db")
      helper.write(f, src)
      local srv = helper.serve({ "-I", ifile, "--store", store, f })
      local _, body = post(srv, "u1", "bob")
      assert.are.same({ "how old?" }, texts(body, "u1"))
      assert.are.equal("", srv:stop())
      helper.write(f, (src:gsub("/hello", "/nowhere")))
      srv = helper.serve({ "-I", ifile, "--store", store, "--on-mismatch",
                           park and "park" or "fail", f })
      local code
      code, body = post(srv, "u1", "42")
      assert.are.equal(200, code)
      assert.are.same({}, texts(body, "u1"))
      local err = srv:stop()
      assert.matches("^%[u1%] " .. (park and "parked" or "error") .. ": [^\n]*changing.lua:1: replay of "
                     .. "session u1 does not match its journal: entry 1 is api_node shop GET /hello", err)
      assert.are.same({ u1 = park and { state = "parked", messages = 1 } or { state = "ended", messages = 1 } },
                      rows(store))
    end
  end)

  it("with --keep-ended lets an ended session's row go after that long", function()
    local d = helper.tmpdir()
    local f = helper.flow('say("hi " .. ...)', d, "hi.lua")
    local store = d .. "/s.db"
    local srv = helper.serve({ "-I", ifile, "--store", store, f })
    post(srv, "u1", "a")
    assert.are.equal("", srv:stop())
    assert.are.same({ u1 = { state = "ended", messages = 0 } }, rows(store))
    srv = helper.serve({ "-I", ifile, "--store", store, "--keep-ended", "1", f })
    local _, body = post(srv, "u2", "b")
    assert.are.same({ "hi b" }, texts(body, "u2"))
    assert.truthy(helper.wait_for(function() return next(rows(store)) == nil end, 15000))
    assert.are.equal("", srv:stop())
    local bad = helper.cli({ args = { "serve", "--store", store, "--keep-ended", "x", "--port", "0", f } })
    assert.are.equal(2, bad.code)
    assert.are.equal("flowrun serve: --keep-ended: expected a whole number >= 0, got 'x'\n", bad.stderr)
    bad = helper.cli({ args = { "serve", "--on-mismatch", "skip", "--port", "0", f } })
    assert.are.equal(2, bad.code)
    assert.are.equal("flowrun serve: --on-mismatch: expected park or fail, got 'skip'\n", bad.stderr)
  end)

  it("shuts down cleanly on SIGTERM: a waiting poll gets its answer", function()
    local srv = helper.serve({ "-I", ifile, flow })
    local d = helper.tmpdir()
    os.execute("env -u LD_PRELOAD curl -s -o " .. d .. "/poll -w '%{http_code}' '" .. srv.url
               .. "/webhooks/rest/messages?sender=u7&wait=30' > " .. d .. "/code &")
    assert.truthy(helper.wait_for(function()
      local _, m = http("GET", srv.url .. "/health")
      return m ~= ""
    end, 5000))
    os.execute("sleep 0.3")
    local t0 = helper.now()
    os.execute("kill -TERM " .. srv.pid)
    assert.truthy(helper.wait_for(function() return not helper.alive(srv.pid) end, 5000))
    assert.is_true(helper.now() - t0 < 2000)
    assert.truthy(helper.wait_for(function() return helper.read(d .. "/code") == "200" end, 5000))
    assert.are.equal("[]", helper.read(d .. "/poll"))
    assert.are.equal("", srv:stop())
  end)
end)
