-- bench/run.lua -- `make bench`: flowrun against libcurl and Node on one
-- machine, in one run.
--
-- Starts nginx on 127.0.0.1 (one worker, pinned to the last core; the
-- clients get the others), runs every row once per round with the rows
-- interleaved, prints the medians and their ratios, writes
-- bench/results.json and stops nginx, also on failure. Wall time and peak
-- RSS of a flowrun run are taken from outside by build/bench/timeit.
--
-- The machine may be shared: before each round it waits up to
-- BENCH_QUIET_WAIT seconds for the cores to be under 10% busy, and every
-- sample records the CPU that other processes took meanwhile ("others", in
-- cores), shown per row as the worst sample.
--
-- Environment: BENCH_ROUNDS (3), BENCH_SCALE (1: multiplies every call and
-- session count), BENCH_NODE_N (20000 calls), BENCH_WRK_SECONDS (3),
-- BENCH_STARTUP_RUNS (30), BENCH_TIMEOUT (600 s per command),
-- BENCH_QUIET_WAIT (30 s), BENCH_STRICT (1: exit 1 when a target is missed,
-- not only when a measurement fails), BENCH_SOAK_S (300: the soak row's
-- duration, run once, in the last round), BENCH_SOAK_SESSIONS (500),
-- BENCH_SOAK_PAUSE_MS (250: each soak session's pause between calls),
-- BENCH_TAKEOVER_RUNS (3: kills the takeover row's median is of),
-- BENCH_LEASE_MS (2000: the takeover row's --lease-ms),
-- BENCH_FRAME_S (10: each frame row's run, with and without the budget),
-- BENCH_ONLY (row names separated by commas: run only those; nginx is not
-- started when none of them needs it, e.g. BENCH_ONLY=soak).
-- Run from the repository root after `make` (the Makefile does both).

local function env_number(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return tonumber(v) or error(name .. ": expected a number, got '" .. v .. "'")
end

local ROUNDS = math.max(1, math.floor(env_number("BENCH_ROUNDS", 3)))
local SCALE = env_number("BENCH_SCALE", 1)
local NODE_N = env_number("BENCH_NODE_N", 20000)
local WRK_SECONDS = math.max(1, math.floor(env_number("BENCH_WRK_SECONDS", 3)))
local STARTUP_RUNS = math.max(1, math.floor(env_number("BENCH_STARTUP_RUNS", 30)))
local TIMEOUT = math.floor(env_number("BENCH_TIMEOUT", 600))
local STRICT = os.getenv("BENCH_STRICT") == "1"
local QUIET_WAIT = env_number("BENCH_QUIET_WAIT", 30)
local QUIET_BUSY = 0.10
local SOAK_S = math.max(1, math.floor(env_number("BENCH_SOAK_S", 300)))
local SOAK_SESSIONS = math.max(1, math.floor(env_number("BENCH_SOAK_SESSIONS", 500)))
local SOAK_PAUSE_MS = math.max(0, math.floor(env_number("BENCH_SOAK_PAUSE_MS", 250)))
local ONLY = os.getenv("BENCH_ONLY")
local FRAME_S = math.max(2, math.floor(env_number("BENCH_FRAME_S", 10)))

local FLOWRUN = "build/flowrun"
local BIN = "build/bench/"
local RESULTS = "bench/results.json"

local function scaled(n) return math.max(1, math.floor(n * SCALE + 0.5)) end

-- ---- shell helpers ----

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs a shell command; returns its output (stdout and stderr) and whether
-- it exited 0.
local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = p:read("a")
  local ok = p:close()
  return out, ok == true
end

local function first_line(cmd)
  local out = sh(cmd)
  return (out:match("^[^\n]*"))
end

local function have(cmd)
  local _, ok = sh("command -v " .. quote(cmd) .. " >/dev/null")
  return ok
end

local function sleep(seconds) os.execute("sleep " .. seconds) end

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  assert(f:write(text))
  assert(f:close())
end

-- The "key value key value" fields of the lines our tools print.
local function fields(out)
  local t = {}
  for line in out:gmatch("[^\n]+") do
    if line:match("^wall ") or line:match("^requests ") or line:match("^sessions ")
       or line:match("^calls ") then
      for k, v in line:gmatch("(%S+) (%S+)") do t[k] = tonumber(v) or v end
    end
  end
  return t
end

-- A short excerpt of a failed command's output.
local function excerpt(out)
  local lines, n = {}, 0
  for line in out:gmatch("[^\n]+") do
    n = n + 1
    if n <= 5 then lines[#lines + 1] = "    " .. line end
  end
  if n > 5 then lines[#lines + 1] = ("    ... (%d more lines)"):format(n - 5) end
  return table.concat(lines, "\n")
end

-- ---- statistics and JSON ----

local function median(xs)
  local s = {}
  for _, x in ipairs(xs) do s[#s + 1] = x end
  if #s == 0 then return nil end
  table.sort(s)
  local m = #s // 2
  if #s % 2 == 1 then return s[m + 1] end
  return (s[m] + s[m + 1]) / 2
end

-- (max - min) / median, the spread of one row over the rounds.
local function spread(xs)
  if #xs < 2 then return nil end
  local lo, hi = math.huge, -math.huge
  for _, x in ipairs(xs) do lo, hi = math.min(lo, x), math.max(hi, x) end
  local m = median(xs)
  return m ~= 0 and (hi - lo) / m or nil
end

local encode

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local named = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\t'] = '\\t' }
    return named[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

-- JSON for a Lua value: objects with sorted keys, arrays of scalars on one line.
function encode(v, indent)
  indent = indent or ""
  local ty = type(v)
  if v == nil then return "null"
  elseif ty == "boolean" then return tostring(v)
  elseif ty == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if math.type(v) == "integer" then return tostring(v) end
    return (("%.6f"):format(v):gsub("0+$", ""):gsub("%.$", ""))
  elseif ty == "string" then return encode_string(v)
  end
  local inner, parts = indent .. "  ", {}
  if is_array(v) then
    local flat = true
    for _, x in ipairs(v) do flat = flat and type(x) ~= "table" end
    for _, x in ipairs(v) do parts[#parts + 1] = encode(x, inner) end
    if flat then return "[" .. table.concat(parts, ", ") .. "]" end
    return "[\n" .. inner .. table.concat(parts, ",\n" .. inner) .. "\n" .. indent .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do
    parts[#parts + 1] = encode_string(k) .. ": " .. encode(v[k], inner)
  end
  return "{\n" .. inner .. table.concat(parts, ",\n" .. inner) .. "\n" .. indent .. "}"
end

-- ---- the machine ----

local NPROC = tonumber(first_line("nproc")) or 1
local PIN = NPROC >= 2 and have("taskset")
-- nginx gets the last core, every client the others.
local SERVER_CPU = tostring(NPROC - 1)
local CLIENT_CPUS = NPROC == 2 and "0" or ("0-" .. (NPROC - 2))
local SERVER_PIN = PIN and ("taskset -c " .. SERVER_CPU .. " ") or ""
local CLIENT_PIN = PIN and ("taskset -c " .. CLIENT_CPUS .. " ") or ""

local function my_pid()
  return tonumber((read_file("/proc/self/stat") or ""):match("^(%d+)"))
end

-- ---- nginx ----

local BODY = '{"id":1234,"name":"Widget","price":9.99,"tags":["a","b"],'
          .. '"stock":true,"note":"flowrun bench"}'

local function nginx_conf(dir, port, tls_port)
  local conf = ([[
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 8192;
pid DIR/nginx.pid;
error_log DIR/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path DIR/body;
  proxy_temp_path DIR/proxy;
  fastcgi_temp_path DIR/fastcgi;
  uwsgi_temp_path DIR/uwsgi;
  scgi_temp_path DIR/scgi;
  server {
    listen 127.0.0.1:PORT backlog=4096;
    location = /json { default_type application/json; return 200 'BODY'; }
  }
  # the http2 row: TLS and HTTP/2 (ALPN); each request's connection logged
  log_format conns '$connection $server_protocol';
  server {
    listen 127.0.0.1:TLSPORT ssl http2 backlog=4096;
    ssl_certificate DIR/cert.pem;
    ssl_certificate_key DIR/key.pem;
    access_log DIR/tls.log conns;
    location = /json { default_type application/json; return 200 'BODY'; }
  }
}
]]):gsub("DIR", dir):gsub("TLSPORT", tostring(tls_port)):gsub("PORT", tostring(port))
   :gsub("BODY", BODY)
  return conf
end

local function probe(url)
  local _, ok = sh(BIN .. "curl_easy " .. quote(url) .. " 1")
  return ok
end

local function alive(pid)
  local _, ok = sh("kill -0 " .. pid)
  return ok
end

local nginx = { dir = nil, pid = nil, url = nil, tls_url = nil }

-- Stops our nginx (by the pid we started) and removes its directory.
local function stop_nginx()
  if nginx.pid then
    sh("kill -TERM " .. nginx.pid)
    for _ = 1, 50 do
      if not alive(nginx.pid) then break end
      sleep(0.1)
    end
    if alive(nginx.pid) then sh("kill -KILL " .. nginx.pid) end
    nginx.pid = nil
  end
  if nginx.dir then
    sh("rm -rf " .. quote(nginx.dir))
    nginx.dir = nil
  end
end

-- Starts nginx on a free loopback port; a watchdog shell stops it should
-- this script die without stopping it.
local function start_nginx()
  local exe = have("nginx") and "nginx" or "/usr/sbin/nginx"
  local lua_pid = assert(my_pid(), "cannot read /proc/self/stat")
  nginx.dir = first_line("mktemp -d /tmp/flowrun-bench-XXXXXX")
  local dir = nginx.dir
  local _, made = sh(("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1"
    .. " -addext subjectAltName=IP:127.0.0.1 -days 2 -keyout %s -out %s")
    :format(quote(dir .. "/key.pem"), quote(dir .. "/cert.pem")))
  if not made then error("bench: openssl could not make the TLS server's certificate") end
  for _ = 1, 8 do
    local port = math.random(20000, 32000)
    local tls_port = port + 1
    local url = ("http://127.0.0.1:%d/json"):format(port)
    if not probe(url) then            -- nobody answers there: try it
      write_file(dir .. "/nginx.conf", nginx_conf(dir, port, tls_port))
      os.remove(dir .. "/nginx.pid")
      os.remove(dir .. "/started.pid")
      local script = ("%s%s -p %s -c %s -e %s & n=$!; echo $n > %s; "
        .. "while kill -0 %d 2>/dev/null && kill -0 $n 2>/dev/null; do sleep 0.5; done; "
        .. "kill $n 2>/dev/null")
        :format(SERVER_PIN, exe, quote(dir .. "/"), quote(dir .. "/nginx.conf"),
                quote(dir .. "/error.log"), quote(dir .. "/started.pid"), lua_pid)
      os.execute("sh -c " .. quote(script) .. " </dev/null >" .. quote(dir .. "/nginx.out")
                 .. " 2>&1 &")
      for _ = 1, 50 do
        nginx.pid = nginx.pid or tonumber(read_file(dir .. "/started.pid") or "")
        if nginx.pid and probe(url) then
          nginx.url = url
          nginx.tls_url = ("https://127.0.0.1:%d"):format(tls_port)
          return url
        end
        if nginx.pid and not alive(nginx.pid) then break end
        sleep(0.1)
      end
      io.stderr:write("bench: nginx did not start on port " .. port .. ":\n"
                      .. excerpt((read_file(dir .. "/error.log") or "")
                                 .. (read_file(dir .. "/nginx.out") or "")) .. "\n")
      if nginx.pid and alive(nginx.pid) then sh("kill -KILL " .. nginx.pid) end
      nginx.pid = nil
    end
  end
  error("cannot start nginx on 127.0.0.1")
end

-- ---- one measurement each ----

local CLK_TCK = tonumber(first_line("getconf CLK_TCK")) or 100

-- All cores' process time (user, nice, system) and total ticks since boot,
-- from /proc/stat. Interrupt time is left out: on loopback it is mostly our
-- own sockets' work, and no process is charged with it.
local function machine_ticks()
  local t, total = {}, 0
  for n in ((read_file("/proc/stat") or ""):match("^cpu%s+([^\n]+)") or ""):gmatch("%d+") do
    t[#t + 1] = tonumber(n)
  end
  for i = 1, math.min(#t, 8) do total = total + t[i] end   -- guest time is in user
  return (t[1] or 0) + (t[2] or 0) + (t[3] or 0), total
end

-- User and system ticks of a process, from /proc/PID/stat.
local function process_ticks(pid)
  local rest = (read_file("/proc/" .. pid .. "/stat") or ""):match("%) (.*)$")
  if not rest then return 0 end
  local f = {}
  for x in rest:gmatch("%S+") do f[#f + 1] = x end
  return (tonumber(f[12]) or 0) + (tonumber(f[13]) or 0)
end

-- Ticks of our nginx: its master and workers.
local function nginx_ticks()
  if not nginx.pid then return 0 end
  local ticks = process_ticks(nginx.pid)
  local children = read_file(("/proc/%d/task/%d/children"):format(nginx.pid, nginx.pid)) or ""
  for pid in children:gmatch("%d+") do ticks = ticks + process_ticks(pid) end
  return ticks
end

-- Runs CMD under timeit (with a time limit); returns the fields it printed,
-- or nil and an error; and the output. Field `others` is the CPU that the
-- rest of the machine used meanwhile, in cores: all process time less the
-- command's and nginx's (and so also what timeit and the shell took: a few
-- ms, which shows only on short samples).
local function timed(cmd, quiet)
  local busy0, n0 = machine_ticks(), nginx_ticks()
  local out, ok = sh(("timeout -k 5 %d %s%s %s"):format(TIMEOUT, BIN .. "timeit",
                                                         quiet and " -q" or "", cmd))
  local busy1, n1 = machine_ticks(), nginx_ticks()
  local f = fields(out)
  if not ok or not f.wall then
    return nil, ("`%s` failed (status %s):\n%s"):format(cmd, tostring(f.status or "?"),
                                                       excerpt(out)), out
  end
  local others = ((busy1 - busy0) - (n1 - n0)) / CLK_TCK - (f.cpu or 0)
  f.others = math.max(0, others) / f.wall
  return f, nil, out
end

local flows = {}

-- flowrun run: SESSIONS sessions, TOTAL calls between them; with STORE, a
-- new store at that path (every call's response journaled).
local function flowrun_calls(sessions, total, store, ifile)
  local per = total // sessions
  if store then os.remove(store) os.remove(store .. "-wal") os.remove(store .. "-shm") end
  local f, err = timed(("%s%s run --sessions %d%s -I %s bench/flows/calls.lua %d")
                       :format(CLIENT_PIN, FLOWRUN, sessions,
                               store and " --store " .. quote(store) or "",
                               quote(ifile or flows.integrations), per),
                       true)
  if not f then return nil, err end
  local calls = per * sessions
  return { value = calls / f.wall, calls = calls, wall = f.wall, cpu = f.cpu,
           maxrss_kb = f.maxrss_kb, others = f.others }
end

-- The http2 row: SESSIONS sessions, TOTAL calls over TLS to nginx with
-- http_version VERSION ("2" or "1.1"); the connections they used, from
-- nginx's log of the TLS server (each request's connection number).
local function tls_calls(sessions, total, version)
  local ifile = ("%s/tls%s.lua"):format(flows.dir, version)
  -- max_connections 100 on both sides: HTTP/2 keeps its calls on one
  -- connection up to libcurl's 100 streams (README: HTTP/2); the sessions
  -- beyond wait in the pool's queue. TLS handshakes on nginx's one core
  -- take a while: the timeouts are not what is measured.
  write_file(ifile, ("return { bench = { base_url = %q, ca_file = %q, http_version = %q,"
                     .. " max_connections = 100, queue_timeout_ms = 60000,"
                     .. " connect_timeout_ms = 60000, timeout_ms = 60000 } }\n")
                    :format(nginx.tls_url, nginx.dir .. "/cert.pem", version))
  local log = nginx.dir .. "/tls.log"
  write_file(log, "")                   -- nginx appends: emptied in place
  local m, err = flowrun_calls(sessions, total, nil, ifile)
  if not m then return nil, err end
  local conns, n, protos = {}, 0, {}
  for line in (read_file(log) or ""):gmatch("[^\n]+") do
    local c, proto = line:match("^(%d+) (%S+)")
    if c and not conns[c] then conns[c], n = true, n + 1 end
    if proto then protos[proto] = (protos[proto] or 0) + 1 end
  end
  local want = version == "2" and "HTTP/2.0" or "HTTP/1.1"
  if protos[want] ~= m.calls then
    return nil, ("http_version %s: %s of %d requests in nginx's log were %s")
                :format(version, tostring(protos[want] or 0), m.calls, want)
  end
  m.connections = n
  return m
end

-- A baseline program that prints "requests N ok N seconds S rps R".
local function baseline(cmd)
  local f, err = timed(CLIENT_PIN .. cmd)
  if not f then return nil, err end
  if f.ok ~= f.requests then
    return nil, ("`%s`: %s of %s requests ok"):format(cmd, f.ok, f.requests)
  end
  return { value = f.rps, calls = f.requests, seconds = f.seconds, wall = f.wall,
           cpu = f.cpu, maxrss_kb = f.maxrss_kb, others = f.others }
end

local function curl_easy(n) return baseline(("%scurl_easy %s %d"):format(BIN, nginx.url, n)) end

local function curl_multi(n, c)
  return baseline(("%scurl_multi %s %d %d"):format(BIN, nginx.url, n, c))
end

-- ---- instructions per call (callgrind) ----
--
-- Wall-clock ratios swing with the machine; instruction counts do not.
-- Each command runs under `valgrind --tool=callgrind` twice, with INSTR_N1
-- and INSTR_N2 calls in all: (I2 - I1) / (N2 - N1) is what one call costs,
-- start-up and exit cancelled out. What is left to chance is how many
-- responses one loop turn finds ready (a turn costs the same for one or
-- ten), so each count is the smallest of INSTR_REPEATS such pairs (the
-- largest is kept as its spread).

local INSTR_N1, INSTR_N2 = 1000, 4000
local INSTR_REPEATS = math.max(1, math.floor(env_number("BENCH_INSTR_REPEATS", 3)))
local HAVE_VALGRIND = have("valgrind")

-- Instructions that CMD ran (every library, user space), and when OUT is
-- given callgrind's profile there; nil and an error when it failed.
local function instructions(cmd, out)
  local text, ok = sh(("timeout -k 5 %d %svalgrind --tool=callgrind --callgrind-out-file=%s %s")
                      :format(TIMEOUT, CLIENT_PIN, out or "/dev/null", cmd))
  local n = text:match("Collected : (%d+)")
  if not ok or not n then
    return nil, ("`%s` under callgrind failed:\n%s"):format(cmd, excerpt(text))
  end
  return tonumber(n)
end

-- Inclusive instructions of the functions named in FNS (a set), from a
-- profile, summed.
local function inclusive(out, fns)
  local text = sh("callgrind_annotate --inclusive=yes --threshold=100 " .. quote(out))
  local sum = 0
  for line in text:gmatch("[^\n]+") do
    local n, fn = line:match("^%s*([%d,]+)%s+%b()%s+[^:]*:(%S+)%s+%[")
    if n and fns[fn] then sum = sum + tonumber((n:gsub(",", ""))) end
  end
  return sum
end

-- Instructions per call of MAKE(n) (a command making n calls in all):
-- { value = the smallest of the repeats, max = the largest }. With FNS,
-- also `parts`: the inclusive instructions per call of each named set of
-- functions (FNS: name -> set), from the repeat counted.
local function per_call(make, fns)
  local best, worst, parts
  for r = 1, INSTR_REPEATS do
    local p1, p2 = fns and flows.dir .. "/cg.1" or nil, fns and flows.dir .. "/cg.2" or nil
    local i1, err = instructions(make(INSTR_N1), p1)
    if not i1 then return nil, err end
    local i2, err2 = instructions(make(INSTR_N2), p2)
    if not i2 then return nil, err2 end
    local v = (i2 - i1) / (INSTR_N2 - INSTR_N1)
    if not best or v < best then
      best = v
      if fns then
        parts = {}
        for name, set in pairs(fns) do
          parts[name] = (inclusive(p2, set) - inclusive(p1, set)) / (INSTR_N2 - INSTR_N1)
        end
      end
    end
    worst = math.max(worst or v, v)
  end
  return { value = best, max = worst, parts = parts }
end

-- The runtime's accounting for the limits: the counting allocator less
-- the block lists it calls, and the count hook.
local LIMIT_FNS = {
  alloc = { fr_alloc = true }, blocks = { fr_blocks_resize = true }, hook = { hook = true },
}

local function flowrun_cmd(sessions, extra)
  return function(n)
    return ("%s run --sessions %d%s -I %s bench/flows/calls.lua %d")
           :format(FLOWRUN, sessions, extra or "", quote(flows.integrations), n // sessions)
  end
end

local function socket_cmd(c, bare)
  return function(n)
    return ("%scurl_socket %s %d %d%s"):format(BIN, nginx.url, n, c, bare and " bare" or "")
  end
end

-- The instruction rows: flowrun at SESSIONS sessions against libcurl
-- driven as flowrun drives it, doing what flowrun does with each request;
-- the bare loops (curl_multi.c, curl_socket.c bare) are shown beside.
local function instr_pair(sessions)
  local f, err = per_call(flowrun_cmd(sessions), LIMIT_FNS)
  if not f then return nil, err end
  local b, err2 = per_call(socket_cmd(sessions))
  if not b then return nil, err2 end
  local poll, err3 = per_call(function(n)
    return ("%scurl_multi %s %d %d"):format(BIN, nginx.url, n, sessions)
  end)
  if not poll then return nil, err3 end
  local bare, err4 = per_call(socket_cmd(sessions, true))
  if not bare then return nil, err4 end
  f.limits = f.parts.alloc - f.parts.blocks + f.parts.hook
  b.poll, b.bare = poll.value, bare.value
  return f, b
end

-- A capability's cost per call: flowrun at 100 sessions with EXTRA
-- (--store, --trace-json) against the same without.
local function instr_cost(extra, fresh)
  return function()
    local f, err = per_call(function(n)
      if fresh then os.remove(fresh) os.remove(fresh .. "-wal") os.remove(fresh .. "-shm") end
      return flowrun_cmd(100, extra)(n)
    end)
    if not f then return nil, err end
    local b, err2 = per_call(flowrun_cmd(100))
    if not b then return nil, err2 end
    return f, b
  end
end

local function node_fetch(n, c)
  return baseline(("node bench/node_fetch.mjs %s %d %d"):format(nginx.url, n, c))
end

local function idle(n)
  local f, err = timed(CLIENT_PIN .. BIN .. "idle " .. n)
  if not f then return nil, err end
  return { value = f.bytes_per_session, asked = f.asked, sessions = f.sessions,
           after_gc = f.after_gc_bytes_per_session, seconds = f.seconds,
           rss_before_kb = f.rss_before_kb, rss_after_kb = f.rss_after_kb,
           others = f.others }
end

-- Not pinned: the mock server it starts needs a core of its own.
local function inflight(n)
  local f, err, out = timed(BIN .. "inflight " .. FLOWRUN .. " " .. n)
  if not f and fields(out or "").calls then  -- it ran, but not every call got a 200
    f = fields(out)
    io.stderr:write("bench: in flight: " .. err .. "\n")
  end
  if not f then return nil, err end
  return { value = f.bytes_per_call, ok = f.ok, calls = f.calls, seconds = f.seconds,
           start_seconds = f.start_seconds, rss_peak_kb = f.rss_peak_kb,
           rss_before_kb = f.rss_before_kb, others = f.others }
end

-- The frame rows (bench/frame.c): a game host stepping every 1 ms for
-- FRAME_S seconds, N players each calling nginx once a second, all started
-- at once; its steps' times with a budget of BUDGET ms (0: flowrun_step).
local function frame_run(n, budget)
  local f, err = timed(("%s%sframe %s %d %d %g"):format(CLIENT_PIN, BIN, (nginx.url:gsub("/json$", "")),
                                                        n, FRAME_S, budget))
  if not f then return nil, err end
  if f.wrong ~= 0 then return nil, ("%d calls did not end \"200\""):format(f.wrong) end
  return { value = f.max_us / 1000, p50 = f.p50_us / 1000, p99 = f.p99_us / 1000,
           first = f.first_max_us / 1000, cpu_max = f.cpu_max_us / 1000, cpu_p99 = f.cpu_p99_us / 1000,
           calls = f.calls, calls_per_s = f.calls_per_s, start_ms = f.start_ms, steps = f.steps,
           others = f.others }
end

local function frame_pair(n)
  return function()
    local a, err = frame_run(n, 2)
    if not a then return nil, err end
    local b, err2 = frame_run(n, 0)
    if not b then return nil, err2 end
    return a, b
  end
end

local function wrk(c)
  local f, err, out = timed(("%swrk -t1 -c%d -d%ds %s")
                            :format(CLIENT_PIN, c, WRK_SECONDS, nginx.url))
  if not f then return nil, err end
  local rps = tonumber(out:match("Requests/sec:%s*([%d%.]+)"))
  if not rps then return nil, "wrk printed no Requests/sec:\n" .. excerpt(out) end
  local errors = out:match("Non%-2xx or 3xx responses: (%d+)") or out:match("Socket errors: ([^\n]+)")
  if errors then return nil, "wrk: errors: " .. errors end
  return { value = rps, wall = f.wall, others = f.others }
end

-- Median wall ms of STARTUP_RUNS runs each of two commands, alternated,
-- and of `true`: the cost of fork and exec alone on this machine.
local function startup_pair(a, b)
  local wa, wb, wt = {}, {}, {}
  for _ = 1, STARTUP_RUNS do
    for _, c in ipairs({ { a, wa }, { b, wb }, { "true", wt } }) do
      local f, err = timed(c[1])
      if not f then return nil, err end
      c[2][#c[2] + 1] = f.wall * 1000
    end
  end
  return { value = median(wa), runs_ms = wa },
         { value = median(wb), runs_ms = wb, true_ms = median(wt) }
end

-- Median wall ms of N_CODE_RUNS runs each of the same Lua loop as a flow
-- (the sandbox's count hook on every instruction) and under lua5.4.
local N_CODE_RUNS, N_SPIN = 5, scaled(30000000)
local function flow_code_pair()
  local wa, wb = {}, {}
  for _ = 1, N_CODE_RUNS do
    for _, c in ipairs({
      { ("%s run --limit instructions=0 bench/flows/spin.lua %d"):format(FLOWRUN, N_SPIN), wa },
      { ("lua5.4 bench/flows/spin.lua %d"):format(N_SPIN), wb } }) do
      local f, err = timed(c[1])
      if not f then return nil, err end
      c[2][#c[2] + 1] = f.wall * 1000
    end
  end
  return { value = median(wa), runs_ms = wa }, { value = median(wb), runs_ms = wb }
end

-- ---- flowrun test ----

-- "tested": median wall ms of `flowrun test` running N_TESTED conversations
-- of the demo flow (bench/flows/conversations_test.lua: one call each, a
-- stub's 20 ms of virtual delay) against it running one; the difference
-- over N_TESTED - 1 gives conversations tested per second.
local N_TESTED, N_TESTED_RUNS = scaled(1000), 5
local function tested_pair()
  local wa, wb = {}, {}
  for _ = 1, N_TESTED_RUNS do
    for _, c in ipairs({ { N_TESTED, wa }, { 1, wb } }) do
      local f, err = timed(("env N=%d %s test bench/flows/conversations_test.lua"):format(c[1], FLOWRUN))
      if not f then return nil, err end
      c[2][#c[2] + 1] = f.wall * 1000
    end
  end
  local a, b = median(wa), median(wb)
  return { value = a, runs_ms = wa, per_s = (N_TESTED - 1) / ((a - b) / 1000) },
         { value = b, runs_ms = wb }
end

-- ---- durable sessions: restore and the resident cap ----

-- A store with n sessions of a flow that asks once, all waiting in the
-- store (--resident 1000 while they start); returns the start run's
-- measure and the path of the answers (one line for each session).
local function waiting_store(n, name)
  local d = flows.dir
  local store = d .. "/" .. name .. ".db"
  os.remove(store) os.remove(store .. "-wal") os.remove(store .. "-shm")
  write_file(d .. "/asks.lua", 'local a = ask("?")\nsay(a)\n')
  write_file(d .. "/none.lua", "return {}\n")
  local starts, answers = d .. "/" .. name .. ".starts", d .. "/" .. name .. ".answers"
  local fs, fa = assert(io.open(starts, "w")), assert(io.open(answers, "w"))
  for i = 1, n do
    fs:write(('{"session":"s%d","text":"x","n":1}\n'):format(i))
    fa:write(('{"session":"s%d","text":"y","n":2}\n'):format(i))
  end
  fs:close() fa:close()
  local f, err = timed("sh -c " .. quote(("exec %s host --store %s --resident 1000 -I %s %s <%s >/dev/null")
                       :format(FLOWRUN, quote(store), quote(d .. "/none.lua"), quote(d .. "/asks.lua"),
                               quote(starts))), true)
  return f, err, store, answers
end

-- Every session of the store answered by a host started on it (the
-- sessions come back from the store as their answers arrive).
local function answer_all(store, answers, resident)
  local d = flows.dir
  return timed("sh -c " .. quote(("exec %s host --store %s --resident %d -I %s %s <%s >/dev/null")
               :format(FLOWRUN, quote(store), resident, quote(d .. "/none.lua"),
                       quote(d .. "/asks.lua"), quote(answers))), true)
end

-- "restore": N_RESTORE sessions waiting in the store, the host restarted on
-- it and each answered, against starting them: wall ms of each.
local N_RESTORE = scaled(100000)
local function restore_pair()
  local s, err, store, answers = waiting_store(N_RESTORE, "restore")
  if not s then return nil, err end
  local a, err2 = answer_all(store, answers, 1000)
  if not a then return nil, err2 end
  return { value = a.wall * 1000, sessions = N_RESTORE, maxrss_kb = a.maxrss_kb },
         { value = s.wall * 1000, sessions = N_RESTORE }
end

-- "resident cap": peak RSS answering N_CAP_BIG sessions waiting in the
-- store with --resident 10000, against N_CAP_SMALL the same way.
local N_CAP_BIG, N_CAP_SMALL = scaled(1000000), scaled(100000)
local function resident_pair()
  local out = {}
  for _, n in ipairs({ N_CAP_BIG, N_CAP_SMALL }) do
    local _, err, store, answers = waiting_store(n, "cap" .. n)
    if err then return nil, err end
    local a, err2 = answer_all(store, answers, 10000)
    if not a then return nil, err2 end
    out[#out + 1] = { value = a.maxrss_kb, sessions = n, wall = a.wall }
    os.remove(store)
  end
  return out[1], out[2]
end

-- ---- the soak ----

-- The soak row: SOAK_SESSIONS sessions of bench/flows/soak.lua for SOAK_S
-- seconds against `faultsrv mix` (200, 503, slow, hang, reset and a close
-- without answer, by path), with retry on 503 and timeout; each session
-- pauses SOAK_PAUSE_MS between calls, so that a 2-core machine keeps up
-- (overloaded, calls to /ok time out, and a request sent on a connection
-- the server has not yet accepted is counted by flowrun but never read by
-- the server: the first 5-minute run without a pause had both). Passes when the
-- server received exactly the requests that the flows' res.attempts and
-- the --trace-json lines add up to (in all and per path), every call got
-- the label, reason and attempts its case expects, and flowrun's RSS at the
-- end is within 10 % (+ 2 MiB) of its RSS a tenth of the way in.
local SOAK_PATHS = { "/ok", "/busy", "/slow", "/hang", "/reset", "/close" }
local soak_server = { pid = nil }

local function stop_soak_server()
  if soak_server.pid then
    sh("kill -TERM " .. soak_server.pid)
    soak_server.pid = nil
  end
end

-- VmRSS of a process in kB, or nil once it has gone.
local function rss_kb(pid)
  return tonumber((read_file("/proc/" .. pid .. "/status") or ""):match("VmRSS:%s*(%d+)"))
end

-- "key N key N ..." pairs of a line into t, added.
local function add_pairs(t, line)
  for k, v in line:gmatch("(%S+) (%d+)") do t[k] = (t[k] or 0) + tonumber(v) end
end

local function soak()
  local dir = first_line("mktemp -d /tmp/flowrun-soak-XXXXXX")
  local function fail(msg)
    stop_soak_server()
    return nil, msg
  end
  -- the server, on nginx's core
  local srv_out = dir .. "/server.out"
  soak_server.pid = tonumber(first_line(("%s%s mix >%s 2>&1 & echo $!")
                                        :format(SERVER_PIN, "build/faultsrv", quote(srv_out))))
  local port
  for _ = 1, 50 do
    port = (read_file(srv_out) or ""):match("listening on http://127%.0%.0%.1:(%d+)")
    if port then break end
    sleep(0.1)
  end
  if not port then return fail("faultsrv mix did not start: " .. (read_file(srv_out) or "")) end
  local ig = dir .. "/integrations.lua"
  write_file(ig, ([[
return { soak = { base_url = "http://127.0.0.1:%s", max_connections = 2000, timeout_ms = 2000,
  retry = { attempts = 2, on = { "503", "timeout" }, backoff_ms = 20, max_backoff_ms = 100 } } }
]]):format(port))
  -- the trace goes through a FIFO to awk, which adds the attempts up per
  -- path: of each call's last record ("final":true; one per attempt comes before)
  local fifo, sums = dir .. "/trace", dir .. "/trace.sums"
  sh("mkfifo " .. quote(fifo))
  os.execute(("awk '/\"final\":true/ { p = $0; sub(/.*\"url\":\"http:\\/\\/[^\\/]*/, \"\", p); sub(/\".*/, \"\", p);"
              .. " a = $0; sub(/.*\"attempts\":/, \"\", a); n[p] += a + 0; t += a + 0 }"
              .. " END { printf \"total %%d\", t; for (k in n) printf \" %%s %%d\", k, n[k];"
              .. " print \"\" }' <%s >%s 2>&1 &"):format(quote(fifo), quote(sums)))
  local out = dir .. "/flowrun.out"
  local tpid = tonumber(first_line(("%s%s %s run --sessions %d -I %s --trace-json %s %s %d %d"
                                    .. " >%s 2>&1 & echo $!")
    :format(CLIENT_PIN, BIN .. "timeit", FLOWRUN, SOAK_SESSIONS, quote(ig), quote(fifo),
            "bench/flows/soak.lua", SOAK_S, SOAK_PAUSE_MS, quote(out))))
  local fpid
  for _ = 1, 50 do
    fpid = tonumber((read_file(("/proc/%d/task/%d/children"):format(tpid, tpid)) or "")
                    :match("%d+"))
    if fpid then break end
    sleep(0.1)
  end
  if not fpid then return fail("flowrun did not start:\n" .. excerpt(read_file(out) or "")) end
  -- RSS every few seconds while it runs
  local step = math.max(1, math.min(5, SOAK_S // 20))
  local t0, samples = os.time(), {}
  while alive(tpid) do
    local kb = rss_kb(fpid)
    if kb then samples[#samples + 1] = { t = os.time() - t0, kb = kb } end
    if os.time() - t0 > SOAK_S + TIMEOUT then
      sh("kill -TERM " .. tpid)
      return fail("flowrun did not end within BENCH_TIMEOUT after the soak")
    end
    sleep(step)
  end
  for _ = 1, 100 do                     -- awk ends when flowrun closes the FIFO
    if (read_file(sums) or ""):find("\n") then break end
    sleep(0.1)
  end
  -- the server's count, asked for by flowrun itself
  local count_flow = dir .. "/count.lua"
  write_file(count_flow, 'local label, res = api_node{ integration = "soak", path = "/count",'
             .. ' results = { "200" } }\nsay(res.body)\n')
  local counted = sh(("%s run -I %s %s"):format(FLOWRUN, quote(ig), quote(count_flow)))
  stop_soak_server()
  local server, flow, trace = {}, {}, {}
  for line in counted:gmatch("[^\n]+") do add_pairs(server, line) end
  add_pairs(trace, read_file(sums) or "")
  local text, wrongs = read_file(out) or "", {}
  local f = fields(text)
  for line in text:gmatch("[^\n]+") do
    local rest = line:match("^%[%d+%] soak (calls .*)")
    if rest then add_pairs(flow, rest) end
    local n, what = line:match("^%[%d+%] soak wrong: (%d+) x (.*)")
    if n then wrongs[what] = (wrongs[what] or 0) + tonumber(n) end
  end
  local wrong_list = {}
  for what, n in pairs(wrongs) do wrong_list[#wrong_list + 1] = ("%d x %s"):format(n, what) end
  table.sort(wrong_list)
  sh("rm -rf " .. quote(dir))
  if f.status ~= 0 then
    return nil, ("flowrun exited %s:\n%s"):format(tostring(f.status), excerpt(text))
  end
  local m = { calls = flow.calls or 0, wrong = flow.wrong or 0, attempts = flow.attempts or 0,
              trace_attempts = trace.total or 0, server_requests = server.total or 0,
              sessions = SOAK_SESSIONS, seconds = SOAK_S, wall = f.wall, cpu = f.cpu,
              maxrss_kb = f.maxrss_kb, rss_samples_kb = {}, by_path = {},
              wrong_kinds = wrong_list, server_partial = server.partial or 0,
              server_unserved = server.unserved or 0 }
  m.counts_equal = m.server_requests == m.attempts and m.attempts == m.trace_attempts
  for _, p in ipairs(SOAK_PATHS) do
    local row = { server = server[p] or 0, flow = flow[p] or 0, trace = trace[p] or 0 }
    m.by_path[p] = row
    m.counts_equal = m.counts_equal and row.server == row.flow and row.flow == row.trace
  end
  for _, sample in ipairs(samples) do
    m.rss_samples_kb[#m.rss_samples_kb + 1] = sample.kb
    m.rss_max_kb = math.max(m.rss_max_kb or 0, sample.kb)
    if not m.rss_start_kb and sample.t >= SOAK_S / 10 then m.rss_start_kb = sample.kb end
    m.rss_end_kb = sample.kb
  end
  m.rss_start_kb = m.rss_start_kb or m.rss_end_kb
  m.rss_flat = m.rss_end_kb ~= nil and m.rss_end_kb <= m.rss_start_kb * 1.10 + 2048
  m.value = m.calls
  return m
end

-- ---- flowrun serve: conversations over webhooks, and takeover ----

local SERVE_N = scaled(2000)
local SERVE_C = 50
local TAKEOVER_RUNS = math.max(1, math.floor(env_number("BENCH_TAKEOVER_RUNS", 3)))
local LEASE_MS = math.max(100, math.floor(env_number("BENCH_LEASE_MS", 2000)))
local PYTHON = "env -u LD_PRELOAD /usr/bin/python3"

-- Starts a program in the background (its output in OUT); returns its pid.
local function start_bg(cmd, out)
  return tonumber(first_line(("%s >%s 2>&1 </dev/null & echo $!"):format(cmd, quote(out))))
end

-- Waits for "listening on http://127.0.0.1:PORT" in OUT; the port, or nil.
local function listening(out, pid)
  for _ = 1, 300 do
    local port = (read_file(out) or ""):match("listening on http://127%.0%.0%.1:(%d+)")
    if port then return tonumber(port) end
    if not alive(pid) then return nil end
    sleep(0.1)
  end
end

local function stop_pid(pid)
  if not pid then return end
  sh("kill -TERM " .. pid)
  for _ = 1, 50 do
    if not alive(pid) then return end
    sleep(0.1)
  end
  sh("kill -KILL " .. pid)
end

-- SERVE_N conversations of bench/flows/converse.lua (3 messages each):
-- the JSON lines `flowrun host` reads, one turn of every conversation
-- after the other, and the driver's input.
local function serve_inputs(dir)
  local lines, convs = {}, {}
  for turn = 1, 3 do
    for i = 1, SERVE_N do
      local text = ({ "c" .. i, "red" .. i, tostring(i) })[turn]
      lines[#lines + 1] = ('{"session":"c%d","text":"%s"}'):format(i, text)
    end
  end
  for i = 1, SERVE_N do
    convs[i] = ('{"sender":"c%d","messages":["c%d","red%d","%d"]}'):format(i, i, i, i)
  end
  write_file(dir .. "/host.jsonl", table.concat(lines, "\n") .. "\n")
  write_file(dir .. "/convs.jsonl", table.concat(convs, "\n") .. "\n")
end

-- "serve": conversations a second through `flowrun serve` on one host with
-- a SQLite store (scripts/converse.py, SERVE_C at a time, each message
-- waiting for its answer; the server started beforehand, not timed)
-- against the same conversations as JSON lines on a pipe to `flowrun host`
-- with a SQLite store (its whole run timed). flowrun gets the server core
-- either way, the driver the client cores.
local function serve_pair()
  local d = flows.dir
  serve_inputs(d)
  write_file(d .. "/none.lua", "return {}\n")
  for _, f in ipairs({ "serve.db", "host.db" }) do
    os.remove(d .. "/" .. f) os.remove(d .. "/" .. f .. "-wal") os.remove(d .. "/" .. f .. "-shm")
  end
  local out = d .. "/serve.out"
  local pid = start_bg(("exec %s%s serve -I %s --store %s bench/flows/converse.lua --port 0")
                       :format(SERVER_PIN, FLOWRUN, quote(d .. "/none.lua"), quote(d .. "/serve.db")), out)
  local port = pid and listening(out, pid)
  if not port then
    stop_pid(pid)
    return nil, "flowrun serve did not start:\n" .. excerpt(read_file(out) or "")
  end
  -- numbers left out: nothing fails here, so nothing is sent twice
  local ticks0 = process_ticks(pid)
  local text, ok = sh(("timeout -k 5 %d %s%s scripts/converse.py http://127.0.0.1:%d --no-number"
                       .. " --concurrency %d --deadline 120 <%s")
                      :format(TIMEOUT, CLIENT_PIN, PYTHON, port, SERVE_C, quote(d .. "/convs.jsonl")))
  local server_cpu = (process_ticks(pid) - ticks0) / CLK_TCK
  stop_pid(pid)
  local done = tonumber(text:match('"completed": (%d+), "seconds"'))
  local secs = tonumber(text:match('"seconds": ([%d%.]+), "conversations_per_s"'))
  if not ok or done ~= SERVE_N or not secs then
    return nil, ("scripts/converse.py: %s of %d conversations completed:\n%s")
                :format(tostring(done), SERVE_N, excerpt(text:match("[^\n]*$") or text))
  end
  local h, err = timed(("sh -c %s"):format(quote(("exec %s%s host -I %s --store %s bench/flows/converse.lua <%s >%s")
    :format(SERVER_PIN, FLOWRUN, quote(d .. "/none.lua"), quote(d .. "/host.db"),
            quote(d .. "/host.jsonl"), quote(d .. "/host.out")))), true)
  if not h then return nil, err end
  local ended = select(2, (read_file(d .. "/host.out") or ""):gsub('"end":"done"', ""))
  if ended ~= SERVE_N then
    return nil, ("flowrun host: %d of %d conversations ended"):format(ended, SERVE_N)
  end
  -- server_busy: the share of its core the server used (below 1: the
  -- driver, not the server, set the pace)
  return { value = SERVE_N / secs, conversations = SERVE_N, seconds = secs, concurrency = SERVE_C,
           cpu = server_cpu, server_busy = server_cpu / secs },
         { value = SERVE_N / h.wall, conversations = SERVE_N, wall = h.wall, cpu = h.cpu,
           others = h.others }
end

-- PostgreSQL's programs (Debian's postgresql), or nil.
local function pg_bin()
  for _, v in ipairs({ "17", "16", "15", "14", "13" }) do
    if read_file("/usr/lib/postgresql/" .. v .. "/bin/initdb") then
      return "/usr/lib/postgresql/" .. v .. "/bin"
    end
  end
end

local pg = { pid = nil }

local function stop_pg()
  stop_pid(pg.pid)
  pg.pid = nil
end

-- A PostgreSQL server of the bench's own in DIR, on a Unix socket only,
-- run as the postgres user when we are root (it refuses root); returns
-- psql(sql) -> output and the store URL, or nil and an error.
local function start_pg(dir)
  local bin = pg_bin()
  local as = ""
  if first_line("id -u") == "0" then
    sh("chown postgres " .. quote(dir))
    as = "runuser -u postgres -- "
  end
  local out, ok = sh(as .. bin .. "/initdb -A trust -U postgres -E UTF8 --no-sync -D " .. quote(dir .. "/data"))
  if not ok then return nil, "initdb failed:\n" .. excerpt(out) end
  pg.pid = start_bg(("exec %s%s/postgres -D %s -c listen_addresses='' -c unix_socket_directories=%s"
                     .. " -c fsync=off -c max_connections=100"):format(as, bin, quote(dir .. "/data"), quote(dir)),
                    dir .. "/pg.out")
  local function psql(sql, db)
    return sh(("%s/psql -X -q -A -t -h %s -U postgres -d %s -c %s"):format(bin, quote(dir), db or "flowrun", quote(sql)))
  end
  for _ = 1, 200 do
    if psql("SELECT 1", "postgres"):match("^%s*1%s*$") then
      psql("CREATE DATABASE flowrun", "postgres")
      return psql, "postgresql:///flowrun?host=" .. dir .. "&user=postgres"
    end
    if not alive(pg.pid) then break end
    sleep(0.1)
  end
  return nil, "postgres did not start:\n" .. excerpt(read_file(dir .. "/pg.out") or "")
end

-- A session's partition (runtime/lib/store.h: FNV-1a 32 bits, modulo 256).
local function partition(id)
  local h = 2166136261
  for i = 1, #id do h = ((h ~ id:byte(i)) * 16777619) & 0xffffffff end
  return h % 256
end

-- A webhook to port (sent once: no number needed), through Python's
-- http.client: the HTTP status and the body.
local function webhook(port, sender, message)
  local body = ('{"sender":"%s","message":"%s"}'):format(sender, message)
  local out = sh(("%s -c %s %d %s"):format(PYTHON, quote([[
import sys, http.client
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=60)
c.request("POST", "/webhooks/rest", sys.argv[2], {"Content-Type": "application/json"})
r = c.getresponse()
print(r.status)
sys.stdout.write(r.read().decode())
]]), port, quote(body)))
  local code, text = out:match("^(%d+)\n(.*)$")
  return tonumber(code), text or out
end

-- "takeover": two `flowrun serve` hosts on one PostgreSQL (--lease-ms
-- LEASE_MS); a conversation started on the host that owns its partition,
-- that host killed (SIGKILL), the conversation's next message sent at once
-- to the other host: the time from the kill to its answer, TAKEOVER_RUNS
-- times (the killed host restarted in between), against the lease.
local function takeover_pair()
  local dir = first_line("mktemp -d /tmp/flowrun-bench-pg-XXXXXX")
  local hosts = {}
  local function finish(a, b)
    for _, h in pairs(hosts) do stop_pid(h.pid) end
    stop_pg()
    sh("rm -rf " .. quote(dir))
    return a, b
  end
  local psql, url = start_pg(dir)
  if not psql then return finish(nil, url) end
  write_file(dir .. "/none.lua", "return {}\n")
  local function start_host(i)
    local out = ("%s/h%d.out"):format(dir, i)
    local pid = start_bg(("exec %s serve -I %s --store %s --node h%d --lease-ms %d --reply-timeout 60"
                          .. " bench/flows/converse.lua --port %d")
                         :format(FLOWRUN, quote(dir .. "/none.lua"), quote(url), i, LEASE_MS,
                                 hosts[i] and hosts[i].port or 0), out)
    local port = pid and listening(out, pid)
    if not port then return nil, ("host h%d did not start:\n%s"):format(i, excerpt(read_file(out) or "")) end
    hosts[i] = { pid = pid, port = port, url = "http://127.0.0.1:" .. port }
    return true
  end
  -- the partitions each host holds now
  local function owners()
    local t = {}
    for line in psql("SELECT part, node FROM flowrun_leases WHERE node IS NOT NULL AND expires >"
                     .. " (extract(epoch from clock_timestamp()) * 1000)::bigint"):gmatch("[^\n]+") do
      local part, node = line:match("^(%d+)|(.*)$")
      if part then t[tonumber(part)] = node end
    end
    return t
  end
  local function shared()
    for _ = 1, 300 do
      local n = {}
      for _, node in pairs(owners()) do n[node] = (n[node] or 0) + 1 end
      if (n.h1 or 0) > 0 and (n.h2 or 0) > 0 and n.h1 + n.h2 == 256 then return true end
      sleep(0.1)
    end
  end
  for i = 1, 2 do
    local ok, err = start_host(i)
    if not ok then return finish(nil, err) end
  end
  local runs = {}
  for run = 1, TAKEOVER_RUNS do
    if not shared() then return finish(nil, "the two hosts did not share the partitions") end
    -- a session of a partition h1 holds, started on h1
    local own, id = owners(), nil
    for k = 1, 10000 do
      if own[partition(("t%d-%d"):format(run, k))] == "h1" then id = ("t%d-%d"):format(run, k) break end
    end
    if not id then return finish(nil, "no session id of h1's partitions") end
    local code, body = webhook(hosts[1].port, id, id)
    if code ~= 200 or not body:find('"colour?"', 1, true) then
      return finish(nil, ("h1 did not start %s: %s %s"):format(id, tostring(code), body))
    end
    local t0 = tonumber(first_line("date +%s%N"))
    sh("kill -KILL " .. hosts[1].pid)
    code, body = webhook(hosts[2].port, id, "red")
    local t1 = tonumber(first_line("date +%s%N"))
    if code ~= 200 or not body:find('"number?"', 1, true) then
      return finish(nil, ("h2 did not answer %s: %s %s"):format(id, tostring(code), body))
    end
    runs[#runs + 1] = (t1 - t0) / 1e6
    local ok, err = start_host(1)      -- the same node name, as a supervisor restarts it
    if not ok then return finish(nil, err) end
  end
  return finish({ value = median(runs), runs_ms = runs, lease_ms = LEASE_MS },
                { value = LEASE_MS })
end

-- ---- the rows ----

local N_SEQ, N_CALLS = scaled(20000), scaled(200000)
local N_IDLE, N_INFLIGHT = scaled(100000), scaled(10000)
local N_TLS_SESSIONS, N_TLS = scaled(1000), scaled(50000)
local N_NODE = scaled(NODE_N)
local HAVE_NODE = have("node")
  and select(2, sh("node -e \"process.exit(typeof fetch === 'function' ? 0 : 1)\""))

-- kind: "rps" (ratio flowrun / baseline >= target), "bytes" (flowrun <=
-- target), "all200", "report", "conv" (conversations/s, reported), "ref".
local rows = {
  { name = "sequential", kind = "rps", target = 0.85,
    what = ("1 session, %d calls vs libcurl easy loop"):format(N_SEQ),
    flowrun = function() return flowrun_calls(1, N_SEQ) end,
    baseline = function() return curl_easy(N_SEQ) end },
  { name = "concurrent", kind = "rps", target = 0.80,
    what = ("10 sessions, %d calls vs libcurl multi, 10 in flight"):format(N_CALLS),
    flowrun = function() return flowrun_calls(10, N_CALLS) end,
    baseline = function() return curl_multi(N_CALLS, 10) end },
  { name = "wide", kind = "rps", target = 0.90,
    what = ("100 sessions, %d calls vs libcurl multi, 100 in flight"):format(N_CALLS),
    flowrun = function() return flowrun_calls(100, N_CALLS) end,
    baseline = function() return curl_multi(N_CALLS, 100) end },
  { name = "very wide", kind = "rps", target = 1.00,
    what = ("1000 sessions, %d calls vs libcurl multi, 1000 in flight"):format(N_CALLS),
    flowrun = function() return flowrun_calls(1000, N_CALLS) end,
    baseline = function() return curl_multi(N_CALLS, 1000) end },
  { name = "instructions 10", kind = "instr", target = 1.10, once = true,
    what = ("instructions per call (callgrind, smallest of %d pairs of %d and %d calls): 10"
            .. " sessions vs libcurl socket_action + epoll, 10 in flight, each request's URL"
            .. " and timeout set and its response kept"):format(INSTR_REPEATS, INSTR_N1, INSTR_N2),
    skip = not HAVE_VALGRIND and "valgrind not found: row skipped",
    pair = function() return instr_pair(10) end },
  { name = "instructions 100", kind = "instr", target = 1.10, once = true,
    what = "the same, 100 sessions vs 100 in flight",
    skip = not HAVE_VALGRIND and "valgrind not found: row skipped",
    pair = function() return instr_pair(100) end },
  { name = "store per call", kind = "cost", once = true,
    what = "instructions per call, 100 sessions: --store (SQLite, a new file) vs without",
    skip = not HAVE_VALGRIND and "valgrind not found: row skipped",
    pair = function() return instr_cost(" --store " .. quote(flows.dir .. "/cost.db"),
                                        flows.dir .. "/cost.db")() end },
  { name = "traces per call", kind = "cost", once = true,
    what = "instructions per call, 100 sessions: --trace-json /dev/null vs without",
    skip = not HAVE_VALGRIND and "valgrind not found: row skipped",
    pair = function() return instr_cost(" --trace-json /dev/null")() end },
  { name = "frame 1000", kind = "frame", target = 3, once = true,
    what = ("1 000 players each calling nginx once a second, a host stepping every 1 ms for"
            .. " %d s: its longest step with a 2 ms budget (flowrun_step_budget) vs without;"
            .. " calls/s at least 0.90 x"):format(FRAME_S),
    pair = frame_pair(1000) },
  { name = "frame 10000", kind = "frame", target = 5, once = true,
    what = "the same, 10 000 players",
    pair = frame_pair(10000) },
  { name = "http2", kind = "rps", target = 1.00,
    what = ("%d sessions, %d calls to nginx over TLS, max_connections 100: http_version \"2\""
            .. " vs \"1.1\" (connections used: below the table)"):format(N_TLS_SESSIONS, N_TLS),
    flowrun = function() return tls_calls(N_TLS_SESSIONS, N_TLS, "2") end,
    baseline = function() return tls_calls(N_TLS_SESSIONS, N_TLS, "1.1") end },
  { name = "stored", kind = "rps", target = 0.70,
    what = ("100 sessions, %d calls with --store (SQLite, commits grouped) vs the same"
            .. " without"):format(N_CALLS),
    flowrun = function() return flowrun_calls(100, N_CALLS, flows.dir .. "/bench.db") end,
    baseline = function() return flowrun_calls(100, N_CALLS) end },
  { name = "tested", kind = "report", no_nginx = true, once = true,
    what = ("wall ms of `flowrun test` on %d conversations of the demo flow vs on 1"
            .. " (virtual clock, stubbed calls)"):format(N_TESTED),
    pair = tested_pair },
  { name = "restore", kind = "report", no_nginx = true, once = true,
    what = ("%d sessions waiting in the store: a host restarted on it answers each (wall ms)"
            .. " vs starting them"):format(N_RESTORE),
    pair = restore_pair },
  { name = "resident cap", kind = "rss", target = 1.2, no_nginx = true, once = true,
    what = ("peak RSS answering %d sessions waiting in the store with --resident 10000 vs %d")
           :format(N_CAP_BIG, N_CAP_SMALL),
    pair = resident_pair },
  { name = "vs Node", kind = "rps", target = 8,
    what = ("flowrun: the wide row's run (100 sessions); Node fetch: %d calls, 100 in flight")
           :format(N_NODE),
    same_as = "wide",
    skip = not HAVE_NODE and "node (with a global fetch) not found: row skipped",
    baseline = function() return node_fetch(N_NODE, 100) end },
  { name = "idle sessions", kind = "bytes", target = 2048,
    what = ("%d sessions waiting in ask(), RSS growth per session"):format(N_IDLE),
    flowrun = function() return idle(N_IDLE) end },
  { name = "in flight", kind = "all200",
    what = ("%d sessions each in a call to a 1 s mock route, peak RSS growth per call")
           :format(N_INFLIGHT),
    flowrun = function() return inflight(N_INFLIGHT) end },
  { name = "start-up", kind = "report",
    what = ("median wall ms of %d runs: `flowrun run` of an empty flow vs `lua5.4 -e ''`")
           :format(STARTUP_RUNS),
    pair = function()
      return startup_pair(FLOWRUN .. " run bench/flows/empty.lua", "lua5.4 -e ''")
    end },
  { name = "flow code", kind = "report", no_nginx = true,
    what = ("median wall ms of %d runs: %d iterations of arithmetic as a flow (the sandbox's"
            .. " count hook on) vs lua5.4"):format(N_CODE_RUNS, N_SPIN),
    pair = flow_code_pair },
  { name = "soak", kind = "soak", once = true, no_nginx = true,
    what = ("%d sessions for %d s (%d ms between calls) against faultsrv mix: server count"
            .. " = attempts, labels, RSS"):format(SOAK_SESSIONS, SOAK_S, SOAK_PAUSE_MS),
    flowrun = function() return soak() end },
  { name = "serve", kind = "conv", no_nginx = true, once = true,
    what = ("conversations/s: %d conversations (3 messages, 2 questions) through `flowrun serve`"
            .. " --store (SQLite), %d at once over HTTP, vs the same through `flowrun host` --store"
            .. " on a pipe"):format(SERVE_N, SERVE_C),
    pair = serve_pair },
  { name = "takeover", kind = "report", no_nginx = true, once = true,
    what = ("ms from SIGKILL of the host owning a session to its answer through another host"
            .. " (2 hosts on PostgreSQL, median of %d) vs --lease-ms"):format(TAKEOVER_RUNS),
    skip = not pg_bin() and "PostgreSQL (Debian's postgresql) not found: row skipped",
    pair = takeover_pair },
  { name = "wrk -c100 (server ceiling)", kind = "ref",
    what = ("wrk -t1 -c100 -d%ds on the client core: what nginx can serve"):format(WRK_SECONDS),
    baseline = function() return wrk(100) end },
}

if ONLY and ONLY ~= "" then               -- BENCH_ONLY: the rows named there
  local keep = {}
  for name in ONLY:gmatch("[^,]+") do keep[name] = true end
  local kept = {}
  for _, row in ipairs(rows) do
    if keep[row.name] then kept[#kept + 1] = row end
    if keep[row.name] and row.same_as and not keep[row.same_as] then
      error("BENCH_ONLY: row '" .. row.name .. "' needs row '" .. row.same_as .. "'")
    end
  end
  if #kept == 0 then error("BENCH_ONLY: no row named " .. ONLY) end
  rows = kept
end

local by_name = {}
for _, row in ipairs(rows) do
  row.runs = { flowrun = {}, baseline = {} }
  row.errors = {}
  by_name[row.name] = row
end

local function record(row, side, round, m, err)
  if m then
    m.round = round
    table.insert(row.runs[side], m)
  else
    table.insert(row.errors, ("round %d, %s: %s"):format(round, side, err))
    io.stderr:write(("bench: %s: round %d, %s: %s\n"):format(row.name, round, side, err))
  end
end

local function progress(text)
  io.stdout:write(text)
  io.stdout:flush()
end

-- The share of all cores busy during one second in which we run nothing:
-- what other work on the machine takes from the measurements.
local function cpu_busy()
  local busy0, total0 = machine_ticks()
  sleep(1)
  local busy1, total1 = machine_ticks()
  return total1 > total0 and (busy1 - busy0) / (total1 - total0) or 0
end

local round_load = {}

local function run_round(round)
  -- wait (a little) for other work on the machine to end
  local busy, waited = cpu_busy(), 0
  while busy > QUIET_BUSY and waited < QUIET_WAIT do
    if waited == 0 then progress(("waiting for the machine to go quiet (%.0f%% busy)... ")
                                  :format(busy * 100)) end
    busy, waited = cpu_busy(), waited + 1
  end
  round_load[round] = { loadavg = first_line("cat /proc/loadavg"), cpu_busy = busy,
                        waited_s = waited }
  progress(("round %d/%d:"):format(round, ROUNDS))
  for _, row in ipairs(rows) do
    if not row.skip and (not row.once or round == ROUNDS) then
      progress(" " .. row.name .. ",")
      if row.pair then
        local a, b = row.pair()
        if a then
          record(row, "flowrun", round, a)
          record(row, "baseline", round, b)
        else
          record(row, "flowrun", round, nil, b)
        end
      else
        -- alternate which side goes first, so that neither always runs on
        -- a server the other has just warmed
        local sides = {}
        if row.flowrun then sides[#sides + 1] = "flowrun" end
        if row.baseline then
          if round % 2 == 0 then table.insert(sides, 1, "baseline")
          else sides[#sides + 1] = "baseline" end
        end
        for _, side in ipairs(sides) do record(row, side, round, row[side]()) end
      end
    end
  end
  progress("\n")
end

-- ---- the table ----

local function values(list)
  local t = {}
  for _, m in ipairs(list) do t[#t + 1] = m.value end
  return t
end

local function fmt_int(x)
  local s = ("%d"):format(math.floor(x + 0.5))
  return (s:reverse():gsub("(%d%d%d)", "%1 "):reverse():gsub("^ ", ""))
end

local function summarize(row)
  local f, b = values(row.runs.flowrun), values(row.runs.baseline)
  if row.same_as then f = values(by_name[row.same_as].runs.flowrun) end
  row.flowrun_median, row.baseline_median = median(f), median(b)
  row.flowrun_spread, row.baseline_spread = spread(f), spread(b)
  for _, list in ipairs({ row.same_as and by_name[row.same_as].runs.flowrun or row.runs.flowrun,
                          row.runs.baseline }) do
    for _, m in ipairs(list) do
      if m.others then row.others_max = math.max(row.others_max or 0, m.others) end
    end
  end
  local fm, bm = row.flowrun_median, row.baseline_median
  if row.skip then
    row.result = "SKIP"
  elseif #row.errors > 0 then
    row.result = "FAIL"
  elseif row.kind == "rps" then
    row.ratio = fm and bm and bm > 0 and fm / bm or nil
    row.result = row.ratio and (row.ratio >= row.target and "PASS" or "MISS") or "FAIL"
    -- the ratio within each round too: its two sides ran minutes apart at most
    local by_round = {}
    for _, m in ipairs(row.same_as and by_name[row.same_as].runs.flowrun or row.runs.flowrun) do
      by_round[m.round] = m.value
    end
    row.round_ratios = {}
    for _, m in ipairs(row.runs.baseline) do
      if by_round[m.round] and m.value > 0 then
        row.round_ratios[#row.round_ratios + 1] = by_round[m.round] / m.value
      end
    end
  elseif row.kind == "bytes" then
    local all = true
    for _, m in ipairs(row.runs.flowrun) do all = all and m.asked == m.sessions end
    row.result = fm and all and (fm <= row.target and "PASS" or "MISS") or "FAIL"
  elseif row.kind == "all200" then
    local all = #row.runs.flowrun > 0
    for _, m in ipairs(row.runs.flowrun) do all = all and m.ok == m.calls end
    row.result = all and "PASS" or "MISS"
  elseif row.kind == "report" or row.kind == "conv" then
    row.ratio = fm and bm and bm > 0 and fm / bm or nil
    row.result = #row.runs.flowrun > 0 and "-" or "FAIL"
  elseif row.kind == "rss" or row.kind == "instr" then
    row.ratio = fm and bm and bm > 0 and fm / bm or nil
    row.result = row.ratio and (row.ratio <= row.target and "PASS" or "MISS") or "FAIL"
  elseif row.kind == "cost" then
    row.ratio = fm and bm and bm > 0 and fm / bm or nil
    row.result = #row.runs.flowrun > 0 and "-" or "FAIL"
  elseif row.kind == "frame" then
    local f, b = row.runs.flowrun[1], row.runs.baseline[1]
    row.ratio = f and b and b.calls_per_s > 0 and f.calls_per_s / b.calls_per_s or nil
    row.result = row.ratio and (f.value <= row.target and row.ratio >= 0.90 and "PASS" or "MISS")
                 or "FAIL"
  elseif row.kind == "soak" then
    local m = row.runs.flowrun[1]
    row.result = m and m.counts_equal and m.wrong == 0 and m.rss_flat and m.calls > 0
                 and "PASS" or "MISS"
  else
    row.result = "-"
  end
end

local function cells(row)
  local fm, bm = row.flowrun_median, row.baseline_median
  local c = { row.name, "-", "-", "-", "-", row.result, "",
              row.others_max and ("%.2f"):format(row.others_max) or "-" }
  local function pct(x) return x and ("%.0f%%"):format(x * 100) or "-" end
  if row.kind == "rps" then
    if fm then c[2] = fmt_int(fm) .. " req/s" end
    if bm then c[3] = fmt_int(bm) .. " req/s" end
    if row.ratio then c[4] = ("%.2f x"):format(row.ratio) end
    c[5] = (">= %.2f x"):format(row.target)
    c[7] = ("%s / %s"):format(pct(row.flowrun_spread), pct(row.baseline_spread))
  elseif row.kind == "bytes" then
    if fm then c[2] = fmt_int(fm) .. " B/session" end
    c[5] = "<= " .. fmt_int(row.target) .. " B"
    c[7] = pct(row.flowrun_spread)
  elseif row.kind == "all200" then
    local ok, n, secs = 0, 0, {}
    for _, m in ipairs(row.runs.flowrun) do
      ok, n, secs[#secs + 1] = ok + m.ok, n + m.calls, m.seconds
    end
    if fm then
      c[2] = ("%s B/call"):format(fmt_int(fm))
      c[3] = ("%d/%d \"200\", %.2f s"):format(ok, n, median(secs))
    end
    c[5] = "all 200"
    c[7] = pct(row.flowrun_spread)
  elseif row.kind == "report" then
    if fm then c[2] = ("%.1f ms"):format(fm) end
    if bm then c[3] = ("%.1f ms"):format(bm) end
    if row.ratio then c[4] = ("%.2f x"):format(row.ratio) end
    c[5] = "report"
    local floor = {}
    for _, m in ipairs(row.runs.baseline) do floor[#floor + 1] = m.true_ms end
    c[7] = ("%s / %s"):format(pct(row.flowrun_spread), pct(row.baseline_spread))
    if #floor > 0 then c[7] = c[7] .. (" (`true`: %.1f ms)"):format(median(floor)) end
    local rates = {}                    -- "tested": conversations a second
    for _, m in ipairs(row.runs.flowrun) do rates[#rates + 1] = m.per_s end
    if #rates > 0 then c[5] = ("%s conv/s"):format(fmt_int(median(rates))) end
  elseif row.kind == "conv" then
    if fm then c[2] = fmt_int(fm) .. " conv/s" end
    if bm then c[3] = fmt_int(bm) .. " conv/s" end
    if row.ratio then c[4] = ("%.2f x"):format(row.ratio) end
    c[5] = "report"
    local busy = {}
    for _, m in ipairs(row.runs.flowrun) do busy[#busy + 1] = m.server_busy end
    if #busy > 0 then c[7] = ("server %.0f%% busy"):format(median(busy) * 100) end
  elseif row.kind == "rss" then
    if fm then c[2] = ("%.1f MiB"):format(fm / 1024) end
    if bm then c[3] = ("%.1f MiB"):format(bm / 1024) end
    if row.ratio then c[4] = ("%.2f x"):format(row.ratio) end
    c[5] = ("<= %.2f x"):format(row.target)
  elseif row.kind == "instr" or row.kind == "cost" then
    local f, b = row.runs.flowrun[1], row.runs.baseline[1]
    if f then c[2] = fmt_int(f.value) .. " instr/call" end
    if b then c[3] = fmt_int(b.value) .. " instr/call" end
    if row.ratio then c[4] = ("%.2f x"):format(row.ratio) end
    if row.kind == "instr" then
      c[5] = ("<= %.2f x"):format(row.target)
      if f and b then
        c[7] = ("max %s / %s; bare loops: poll %.2f x, socket %.2f x; limits %s/call")
               :format(fmt_int(f.max), fmt_int(b.max), f.value / b.poll, f.value / b.bare,
                       fmt_int(f.limits))
      end
    else
      c[5] = "report"
      if f and b then c[7] = ("+%s instr/call"):format(fmt_int(f.value - b.value)) end
    end
  elseif row.kind == "frame" then
    local f, b = row.runs.flowrun[1], row.runs.baseline[1]
    local function step(m)
      return ("max %.1f ms, p99 %.2f, p50 %.3f, %s calls/s"):format(m.value, m.p99, m.p50,
                                                                   fmt_int(m.calls_per_s))
    end
    if f then c[2] = step(f) end
    if b then c[3] = step(b) end
    if row.ratio then c[4] = ("%.2f x calls"):format(row.ratio) end
    c[5] = ("max <= %d ms, >= 0.90 x"):format(row.target)
    if f and b then
      c[7] = ("CPU max %.1f / %.1f ms; first second max %.1f / %.1f ms; starting them %.0f ms")
             :format(f.cpu_max, b.cpu_max, f.first, b.first, f.start_ms)
    end
  elseif row.kind == "soak" then
    local m = row.runs.flowrun[1]
    if m then
      c[2] = ("%s calls, %s wrong"):format(fmt_int(m.calls), fmt_int(m.wrong))
      c[3] = ("%s sent, %s received"):format(fmt_int(m.attempts), fmt_int(m.server_requests))
      if m.rss_end_kb then
        c[7] = ("RSS %.1f / %.1f / %.1f MiB (start/end/max)")
               :format(m.rss_start_kb / 1024, m.rss_end_kb / 1024, m.rss_max_kb / 1024)
      end
    end
    c[5] = "sent = received, 0 wrong, RSS flat"
  elseif row.kind == "ref" then
    if bm then c[3] = fmt_int(bm) .. " req/s" end
    c[5] = "reference"
    c[7] = pct(row.baseline_spread)
  end
  return c
end

local function print_table()
  local head = { "row", "flowrun", "baseline", "ratio", "target", "result", "spread f/b",
                 "others" }
  local lines = { head }
  for _, row in ipairs(rows) do lines[#lines + 1] = cells(row) end
  local width = {}
  for _, l in ipairs(lines) do
    for i, s in ipairs(l) do width[i] = math.max(width[i] or 0, #s) end
  end
  local out = {}
  for n, l in ipairs(lines) do
    local parts = {}
    for i, s in ipairs(l) do
      local right = i >= 2 and i <= 4
      parts[i] = right and (" "):rep(width[i] - #s) .. s or s .. (" "):rep(width[i] - #s)
    end
    out[#out + 1] = table.concat(parts, "  "):gsub("%s+$", "")
    if n == 1 then
      local rule = {}
      for i = 1, #head do rule[i] = ("-"):rep(width[i]) end
      out[#out + 1] = table.concat(rule, "  ")
    end
  end
  print(table.concat(out, "\n"))
end

-- ---- main ----

local function machine()
  local cpu = (read_file("/proc/cpuinfo") or ""):match("model name%s*:%s*([^\n]+)")
  local version = first_line(FLOWRUN .. " --version")
  return {
    nproc = NPROC,
    cpu = cpu,
    kernel = first_line("uname -r"),
    flowrun = version,
    libcurl = version and version:match("libcurl ([%w%.%-]+)"),
    lua = first_line("lua5.4 -v"),
    node = HAVE_NODE and first_line("node --version") or nil,
    nginx = first_line("nginx -v 2>&1 || /usr/sbin/nginx -v"),
    wrk = first_line("wrk -v"),
    date = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    loadavg_before = first_line("cat /proc/loadavg"),
    pinning = PIN and { server_cpu = SERVER_CPU, client_cpus = CLIENT_CPUS } or "none",
  }
end

local function main()
  local dir = first_line("mktemp -d /tmp/flowrun-bench-flows-XXXXXX")
  flows.dir = dir
  local info = machine()
  print(("flowrun bench: %d round(s), scale %g, %d cores (nginx on cpu %s, clients on %s)")
        :format(ROUNDS, SCALE, NPROC, PIN and SERVER_CPU or "any", PIN and CLIENT_CPUS or "any"))
  local need_nginx = false
  for _, row in ipairs(rows) do need_nginx = need_nginx or not row.no_nginx end
  if need_nginx then
    local url = start_nginx()
    print("nginx on " .. url)
    flows.integrations = dir .. "/integrations.lua"
    write_file(flows.integrations, ("return { bench = { base_url = %q, max_connections = 2000 } }\n")
               :format((url:gsub("/json$", ""))))
  end
  local t0 = os.time()
  for round = 1, ROUNDS do run_round(round) end
  stop_nginx()
  sh("rm -rf " .. quote(dir))
  info.loadavg_after = first_line("cat /proc/loadavg")
  info.load_per_round = round_load
  info.seconds = os.time() - t0

  local out_rows = {}
  for _, row in ipairs(rows) do
    summarize(row)
    out_rows[#out_rows + 1] = {
      name = row.name, what = row.what, kind = row.kind, target = row.target,
      skipped = row.skip or nil, flowrun_from = row.same_as,
      flowrun = row.same_as and by_name[row.same_as].runs.flowrun or row.runs.flowrun,
      baseline = row.runs.baseline,
      flowrun_median = row.flowrun_median, baseline_median = row.baseline_median,
      flowrun_spread = row.flowrun_spread, baseline_spread = row.baseline_spread,
      ratio = row.ratio, result = row.result, others_max = row.others_max,
      round_ratios = row.round_ratios,
      errors = #row.errors > 0 and row.errors or nil,
    }
  end
  print()
  print_table()
  print()
  local soaked = by_name.soak and by_name.soak.runs.flowrun[1]
  if soaked then
    local parts = {}
    for _, p in ipairs(SOAK_PATHS) do
      local c = soaked.by_path[p]
      parts[#parts + 1] = ("%s %d/%d/%d"):format(p, c.server, c.flow, c.trace)
    end
    print(("soak: requests received/attempts in res/attempts in the trace: total %d/%d/%d, %s;"
           .. " %d RSS samples, %.0f s wall"):format(soaked.server_requests, soaked.attempts,
           soaked.trace_attempts, table.concat(parts, ", "), #soaked.rss_samples_kb, soaked.wall))
    print(("soak: the server saw %d connection(s) end inside a request and closed %d unread")
          :format(soaked.server_partial, soaked.server_unserved))
    for _, w in ipairs(soaked.wrong_kinds) do print("soak: wrong: " .. w) end
  end
  local tls = by_name.http2
  if tls and #tls.runs.flowrun > 0 and #tls.runs.baseline > 0 then
    local function conns(list)
      local t = {}
      for _, m in ipairs(list) do t[#t + 1] = m.connections end
      return table.concat(t, "/")
    end
    print(("http2: connections used in each round: %s with HTTP/2, %s with HTTP/1.1")
          :format(conns(tls.runs.flowrun), conns(tls.runs.baseline)))
  end
  local counts = { PASS = 0, MISS = 0, FAIL = 0 }
  for _, row in ipairs(rows) do
    counts[row.result] = (counts[row.result] or 0) + 1
    if row.skip then print("note: " .. row.name .. ": " .. row.skip) end
  end
  print(("medians of %d round(s); spread = (max - min) / median over the rounds; others ="
         .. " the most CPU (in cores) that\nother processes took during one of the row's"
         .. " samples. vs Node uses the wide row's flowrun runs."):format(ROUNDS))
  local noisy = {}
  for _, row in ipairs(rows) do
    if (row.others_max or 0) > 0.15 then noisy[#noisy + 1] = row.name end
  end
  if #noisy > 0 then
    print("warning: other processes took CPU during samples of: " .. table.concat(noisy, ", ")
          .. "; their numbers are noisy (raw samples in " .. RESULTS .. ")")
  end
  print(("targets: %d met, %d missed, %d failed to measure; %d s"):format(
        counts.PASS, counts.MISS, counts.FAIL, info.seconds))
  write_file(RESULTS, encode({
    machine = info,
    config = { rounds = ROUNDS, scale = SCALE, node_calls = N_NODE, wrk_seconds = WRK_SECONDS,
               startup_runs = STARTUP_RUNS, nginx_body_bytes = #BODY },
    rows = out_rows,
  }) .. "\n")
  print("wrote " .. RESULTS)
  if counts.FAIL > 0 then return 1 end
  if STRICT and counts.MISS > 0 then return 1 end
  return 0
end

local ok, status = xpcall(main, debug.traceback)
stop_nginx()
stop_soak_server()
stop_pg()
if flows.dir then sh("rm -rf " .. quote(flows.dir)) end
if not ok then
  io.stderr:write("bench: " .. tostring(status) .. "\n")
  os.exit(2)
end
os.exit(status)
