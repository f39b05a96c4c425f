-- scripts/layers.lua OBJ... : which object file calls which, and the circles.
--
-- The edges come from the linker's view (nm): an object that leaves a
-- symbol undefined calls the object among OBJ... that defines it. Prints
-- one line "a -> b: sym sym ..." per edge, then one line "circle: a b c"
-- per set of files that reach each other (Tarjan's strongly connected
-- components), and exits 1 when there is a circle. Used by
-- spec/layers_spec.lua on build/lib/*.o (no circle among the library's
-- files) and on build/cli (no command reaches into another).
--
-- lua5.4 scripts/layers.lua build/lib/*.o

local function lines(cmd)
  local p = assert(io.popen(cmd))
  local t = {}
  for l in p:lines() do t[#t + 1] = l end
  p:close()
  return t
end

local function name(obj)        -- build/lib/call.o -> lib/call
  return (obj:gsub("^.-build/", ""):gsub("%.o$", ""))
end

local objs, defs, undefs = {}, {}, {}
for _, obj in ipairs(arg) do
  local n = name(obj)
  objs[#objs + 1] = n
  undefs[n] = {}
  for _, l in ipairs(lines("nm -g --defined-only '" .. obj .. "'")) do
    local sym = l:match("^%x+ %a (%S+)$")
    if sym then defs[sym] = n end
  end
  for _, l in ipairs(lines("nm -u '" .. obj .. "'")) do
    local sym = l:match("^%s+U (%S+)$")
    if sym then table.insert(undefs[n], sym) end
  end
end

-- edges[a][b] = { sym, ... }
local edges = {}
for _, a in ipairs(objs) do
  edges[a] = {}
  for _, sym in ipairs(undefs[a]) do
    local b = defs[sym]
    if b and b ~= a then
      edges[a][b] = edges[a][b] or {}
      table.insert(edges[a][b], sym)
    end
  end
end

for _, a in ipairs(objs) do
  local to = {}
  for b in pairs(edges[a]) do to[#to + 1] = b end
  table.sort(to)
  for _, b in ipairs(to) do
    table.sort(edges[a][b])
    print(a .. " -> " .. b .. ": " .. table.concat(edges[a][b], " "))
  end
end

-- Tarjan's strongly connected components
local index, low, onstack, stack, n, circles = {}, {}, {}, {}, 0, {}
local function visit(v)
  n = n + 1
  index[v], low[v] = n, n
  stack[#stack + 1] = v
  onstack[v] = true
  for w in pairs(edges[v]) do
    if not index[w] then
      visit(w)
      low[v] = math.min(low[v], low[w])
    elseif onstack[w] then
      low[v] = math.min(low[v], index[w])
    end
  end
  if low[v] == index[v] then
    local comp = {}
    repeat
      local w = table.remove(stack)
      onstack[w] = nil
      comp[#comp + 1] = w
    until w == v
    if #comp > 1 then
      table.sort(comp)
      circles[#circles + 1] = table.concat(comp, " ")
    end
  end
end
for _, v in ipairs(objs) do
  if not index[v] then visit(v) end
end
table.sort(circles)
for _, c in ipairs(circles) do print("circle: " .. c) end
os.exit(#circles == 0 and 0 or 1)
