-- The soak row's flow: calls to `faultsrv mix` (integration `soak`) for
-- SECONDS, cycling through the cases below from a point that depends on the
-- session, PAUSE ms apart (default 0), and checks each call's label, reason
-- and attempts. Ends with one
-- line: "soak calls N wrong W attempts A" and the attempts per path, then
-- a line for each of the first 5 kinds of wrong call, if any.
-- usage: flowrun run --sessions S -I INTEGRATIONS soak.lua SECONDS [PAUSE]
-- The integration retries 503 and timeout (attempts = 2).
local seconds = tonumber(args[1])
assert(seconds and seconds > 0, "soak.lua: expected a duration in seconds")
local pause = math.tointeger(tonumber(args[2] or 0))
assert(pause and pause >= 0, "soak.lua: expected a pause in ms")

local KEY = { ["Idempotency-Key"] = "soak" }
-- path, method, headers, label, reason, attempts (a list: any of them).
-- libcurl sends a request that may be repeated (a GET, or a POST with the
-- key) again when the kept-alive connection it used closes without an
-- answer, up to 5 times, each counted: such a case takes its attempts plus
-- up to 5.
local cases = {
  { "/ok", "GET", nil, "200", nil, { 1 } },
  { "/ok", "POST", nil, "200", nil, { 1 } },
  { "/ok", "GET", nil, "200", nil, { 1 } },
  { "/ok", "POST", KEY, "200", nil, { 1 } },
  { "/busy", "GET", nil, "503", nil, { 2 } },
  { "/ok", "GET", nil, "200", nil, { 1 } },
  { "/busy", "POST", nil, "503", nil, { 1 } },
  { "/busy", "POST", KEY, "503", nil, { 2 } },
  { "/slow", "GET", nil, "200", nil, { 1 } },
  { "/ok", "POST", nil, "200", nil, { 1 } },
  { "/slow", "POST", nil, "200", nil, { 1 } },
  { "/close", "POST", nil, "error", "reset", { 1 } },
  { "/ok", "GET", nil, "200", nil, { 1 } },
  { "/close", "POST", KEY, "error", "reset", { 1 } },
  { "/ok", "POST", nil, "200", nil, { 1 } },
  { "/close", "GET", nil, "error", "reset", { 1 } },
  { "/reset", "GET", nil, "error", "reset", { 1 } },
  { "/ok", "GET", nil, "200", nil, { 1 } },
  { "/reset", "POST", nil, "error", "reset", { 1 } },
  { "/hang", "GET", nil, "timeout", "timeout", { 2 } },
  { "/ok", "POST", KEY, "200", nil, { 1 } },
  { "/hang", "POST", nil, "timeout", "timeout", { 1 } },
  { "/hang", "POST", KEY, "timeout", "timeout", { 2 } },
}

for _, c in ipairs(cases) do
  if c[2] == "GET" or c[3] then
    local n = c[6][#c[6]]
    c[6] = {}
    for k = 0, 5 do c[6][#c[6] + 1] = n + k end
  end
end

local by_path, calls, wrong, attempts, wrongs, nwrongs = {}, 0, 0, 0, {}, 0
local i = tonumber(session.id) or 0
local stop = os.time() + seconds
while os.time() < stop do
  local c = cases[i % #cases + 1]
  i = i + 1
  local label, res = api_node{ integration = "soak", method = c[2], path = c[1],
                               headers = c[3], body = c[2] == "POST" and { n = i } or nil,
                               results = { "200", "503" } }
  local ok_attempts = false
  for _, n in ipairs(c[6]) do ok_attempts = ok_attempts or n == res.attempts end
  -- sent again on connection after connection that the server closes, a /close
  -- call can run out of time: timeout / timeout is right then too
  local timed_out = c[1] == "/close" and res.attempts > 1 and label == "timeout"
                    and res.reason == "timeout"
  if (label ~= c[4] or res.reason ~= c[5]) and not timed_out or not ok_attempts then
    wrong = wrong + 1
    local what = ("%s %s%s: label %s reason %s attempts %d")
      :format(c[2], c[1], c[3] and " (key)" or "", label, tostring(res.reason), res.attempts)
    if not wrongs[what] then
      nwrongs = nwrongs + 1
      wrongs[what] = { n = 0, order = nwrongs, error = tostring(res.error) }
    end
    wrongs[what].n = wrongs[what].n + 1
  end
  calls = calls + 1
  attempts = attempts + res.attempts
  by_path[c[1]] = (by_path[c[1]] or 0) + res.attempts
  if pause > 0 then sleep(pause) end
end

local parts = { ("soak calls %d wrong %d attempts %d"):format(calls, wrong, attempts) }
for _, p in ipairs({ "/ok", "/busy", "/slow", "/hang", "/reset", "/close" }) do
  parts[#parts + 1] = ("%s %d"):format(p, by_path[p] or 0)
end
say(table.concat(parts, " "))
for what, w in pairs(wrongs) do
  if w.order <= 5 then say(("soak wrong: %d x %s (%s)"):format(w.n, what, w.error)) end
end
