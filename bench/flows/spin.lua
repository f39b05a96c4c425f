-- The flow-code row of make bench: N iterations of arithmetic, as a flow
-- (flowrun run --limit instructions=0 spin.lua N) or under lua5.4.
local n = math.tointeger(tonumber((args or arg)[1]))
assert(n and n >= 0, "spin.lua: expected an iteration count")
local x = 0
for i = 1, n do x = x + i % 7 end
return x
