-- make mutate: does the suite notice when a promise breaks?
--
-- spec/mutations/*.lua each return a list of mutations:
--   { name = "pool-queue-timer",                    -- unique
--     promise = "queue_timeout_ms: a queued call gives up after it",
--     file = "runtime/lib/call.c",
--     find = "exact text, found exactly once in file",
--     replace = "the bug",
--     spec = "spec/api_node_spec.lua",              -- or "embed": build/embed_test
--     filter = "queue",                             -- optional: busted --filter;
--                                                   -- for embed, EMBED_ONLY (its functions)
--   }
-- Each is applied alone to a copy of the work tree, which is rebuilt and
-- run against its spec: the mutation is killed when the spec fails. One
-- that survives, whose text is no longer in its file, or that does not
-- build is a failure. Prints one line per mutation and ends with
-- "N passed, N failed" (a passed mutation is a killed one).
--
-- lua5.4 scripts/mutate.lua [--jobs N] [NAME-or-part-of-one ...]
-- --jobs N (make mutate: 2) runs N shards at once, each in its own copy
-- (--shard K/N: the K-th of every N mutations), and prints their lines
-- shard after shard: the specs mostly wait (servers, timeouts), so two
-- take about the time of one on two cores.

local root = arg[0]:match("^(.*)/scripts/[^/]*$") or "."

local function sh(cmd)
  local ok, _, code = os.execute(cmd)
  return ok and 0 or code
end

local function quote(s) return "'" .. s:gsub("'", [['\'']]) .. "'" end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- the mutations, checked for the fields they need
local mutations, names = {}, {}
local p = io.popen("ls " .. quote(root .. "/spec/mutations") .. "/*.lua 2>/dev/null")
for file in p:lines() do
  for i, m in ipairs(dofile(file)) do
    local where = ("%s: mutation %d"):format(file:match("spec/.*"), i)
    for _, k in ipairs { "name", "promise", "file", "find", "replace", "spec" } do
      if type(m[k]) ~= "string" or m[k] == "" then error(where .. ": " .. k .. " must be a string", 0) end
    end
    if m.find == m.replace then error(where .. " (" .. m.name .. "): replace is the same as find", 0) end
    if names[m.name] then error(where .. ": the name " .. m.name .. " is taken", 0) end
    names[m.name] = true
    m.from = file:match("spec/.*")
    mutations[#mutations + 1] = m
  end
end
p:close()

local jobs, shard, of, names = 1, nil, nil, {}
do
  local i = 1
  while i <= #arg do
    if arg[i] == "--jobs" then
      jobs = math.tointeger(tonumber(arg[i + 1] or ""))
      if not jobs or jobs < 1 then io.stderr:write("mutate: --jobs wants a whole number from 1\n") os.exit(2) end
      i = i + 1
    elseif arg[i] == "--shard" then
      shard, of = (arg[i + 1] or ""):match("^(%d+)/(%d+)$")
      shard, of = tonumber(shard), tonumber(of)
      if not shard or shard < 1 or shard > of then io.stderr:write("mutate: --shard K/N\n") os.exit(2) end
      i = i + 1
    else
      names[#names + 1] = arg[i]
    end
    i = i + 1
  end
end

local wanted = mutations
if #names > 0 then
  wanted = {}
  for _, m in ipairs(mutations) do
    for _, a in ipairs(names) do
      if m.name:find(a, 1, true) then wanted[#wanted + 1] = m break end
    end
  end
  if #wanted == 0 then io.stderr:write("mutate: no mutation matches\n") os.exit(2) end
end
if shard then
  local mine = {}
  for i, m in ipairs(wanted) do if (i - 1) % of == shard - 1 then mine[#mine + 1] = m end end
  wanted = mine
end

-- --jobs N: N shards of this script at once, their lines printed in turn
if jobs > 1 and not shard then
  jobs = math.min(jobs, #wanted)
  local d = io.popen("mktemp -d /tmp/flowrun-mutate-jobs.XXXXXX"):read("l")
  local q = {}
  for i, a in ipairs(names) do q[i] = quote(a) end
  for k = 1, jobs do
    sh(("(env -u MUTATE_DIR lua5.4 %s --shard %d/%d %s >%s/out%d 2>&1; echo $? >%s/done%d) &")
      :format(quote(arg[0]), k, jobs, table.concat(q, " "), d, k, d, k))
  end
  local killed, failed = 0, 0
  for k = 1, jobs do
    while not io.open(d .. "/done" .. k) do sh("sleep 1") end
    local out = read(d .. "/out" .. k)
    local k1, f1 = out:match("(%d+) passed, (%d+) failed\n$")
    for line in out:gmatch("[^\n]*\n") do
      if not line:find("^# mutation score") and not line:find("^%d+ passed, %d+ failed\n$") then
        io.stdout:write(line)
      end
    end
    if not k1 then
      print(("not ok - mutation shard %d/%d ended without its total"):format(k, jobs))
      f1 = 1
    end
    killed, failed = killed + (tonumber(k1) or 0), failed + tonumber(f1)
    io.stdout:flush()
  end
  sh("rm -rf " .. quote(d))
  print(("# mutation score: %d of %d killed"):format(killed, #wanted))
  print(("%d passed, %d failed"):format(killed, failed))
  os.exit(failed == 0 and 0 or 1)
end

-- a copy of the work tree (tracked and new files), built once
local work = os.getenv("MUTATE_DIR") or io.popen("mktemp -d /tmp/flowrun-mutate.XXXXXX"):read("l")
assert(sh(("cd %s && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t %s")
  :format(quote(root), quote(work))) == 0, "mutate: cannot copy the work tree")
-- make and spec/helper.lua must not see a parent make's or SAN's settings
local clean = "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u SAN -u LD_PRELOAD "
local make = clean .. "make -C " .. quote(work) .. " -j2 all >/dev/null 2>&1"
if sh(make) ~= 0 then
  io.stderr:write("mutate: the unmutated tree does not build\n")
  os.exit(1)
end

local killed, failed = 0, 0
for _, m in ipairs(wanted) do
  local path = work .. "/" .. m.file
  local ok, text = pcall(read, path)
  local _, count = (ok and text or ""):gsub(m.find:gsub("%W", "%%%0"), "")
  local verdict
  if not ok then
    verdict = "its file " .. m.file .. " is missing"
  elseif count ~= 1 then
    verdict = ("its text is in %s %d times, not once: update the mutation"):format(m.file, count)
  else
    local s, e = text:find(m.find, 1, true)
    write(path, text:sub(1, s - 1) .. m.replace .. text:sub(e + 1))
    if sh(make) ~= 0 then
      verdict = "it does not build: a mutation must be a bug, not a syntax error"
    else
      local log = work .. "/mutate.log"
      local run
      if m.spec == "embed" then
        run = ("cd %s && %sbuild/embed_test >%s 2>&1"):format(quote(work),
          m.filter and "EMBED_ONLY=" .. quote(m.filter) .. " " or "", quote(log))
      else
        run = ("cd %s && %s lua5.4 /usr/bin/busted -o TAP %s %s >%s 2>&1"):format(quote(work), clean,
          m.filter and "--filter=" .. quote(m.filter) or "", quote(m.spec), quote(log))
      end
      local status = sh(run)
      local out = read(log)
      if status ~= 0 then
        verdict = "killed"
      elseif m.spec ~= "embed" and not out:find("\nok %d+ ") and not out:find("^ok %d+ ") then
        verdict = "its spec ran no test: check spec and filter"
      else
        verdict = "SURVIVED"
      end
    end
    write(path, text)
  end
  if verdict == "killed" then
    killed = killed + 1
    print(("ok - mutation %s killed by %s%s"):format(m.name, m.spec, m.filter and " (" .. m.filter .. ")" or ""))
  else
    failed = failed + 1
    print(("not ok - mutation %s (%s): %s\n#   promise: %s\n#   %s: replace %q with %q")
      :format(m.name, m.from, verdict, m.promise, m.file, m.find, m.replace))
  end
  io.stdout:flush()
end
sh(make)                                -- leave the copy as it was
if not os.getenv("MUTATE_DIR") then sh("rm -rf " .. quote(work)) end

print(("# mutation score: %d of %d killed"):format(killed, #wanted))
print(("%d passed, %d failed"):format(killed, failed))
os.exit(failed == 0 and 0 or 1)
