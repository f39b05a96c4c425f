-- The benchmark's flow: N GETs to the `bench` integration, one after the
-- other; any label but "200" ends the run with an error.
-- usage: flowrun run --sessions S -I INTEGRATIONS calls.lua N
local n = math.tointeger(tonumber(args[1]))
assert(n and n >= 0, "calls.lua: expected a call count")
for i = 1, n do
  local label, res = api_node{ integration = "bench", path = "/json", results = { "200" } }
  if label ~= "200" then
    error(("call %d: label %s (%s)"):format(i, label, res.reason or res.status))
  end
end
