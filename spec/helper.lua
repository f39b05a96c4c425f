-- spec/helper.lua -- real servers on 127.0.0.1 for the specs, started and
-- stopped here: the mock API (`flowrun mock`), the raw fault server
-- (`faultsrv MODE`), integrations and flow files in temporary directories,
-- the command line with its stdout, stderr and exit code, and runtimes of
-- the Lua module. Everything started is stopped by helper.cleanup(), which
-- every spec file calls in teardown (and a finalizer calls at exit).

local system = require "system"

local helper = {}

local function abspath(p)
  if p:sub(1, 1) == "/" then return p end
  local pwd = os.getenv("PWD")
  if not pwd then
    local f = io.popen("pwd")
    pwd = f:read("l")
    f:close()
  end
  return pwd .. "/" .. p
end

-- the repository: this file is spec/helper.lua in it
helper.root = abspath(debug.getinfo(1, "S").source:sub(2))
  :gsub("/%./", "/"):gsub("/spec/helper%.lua$", "")
helper.flowrun = helper.root .. "/build/flowrun"
helper.faultsrv_bin = helper.root .. "/build/faultsrv"
package.cpath = helper.root .. "/build/?.so;" .. package.cpath

-- Under SAN=1 the busted process preloads the ASan runtime (for flowrun.so);
-- the programs started here link it themselves and check for leaks.
local child_env = ""
if os.getenv("SPEC_CHILD_ASAN_OPTIONS") then
  child_env = "env -u LD_PRELOAD ASAN_OPTIONS=" .. os.getenv("SPEC_CHILD_ASAN_OPTIONS") .. " "
end
helper.san = os.getenv("SPEC_CHILD_ASAN_OPTIONS") ~= nil

-- ---- files ----

function helper.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function helper.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function helper.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

local dirs = {}

-- A new empty directory, removed by cleanup().
function helper.tmpdir()
  local p = io.popen("mktemp -d /tmp/flowrun-spec.XXXXXX")
  local d = p:read("l")
  p:close()
  assert(d and d ~= "", "mktemp -d failed")
  dirs[#dirs + 1] = d
  return d
end

function helper.now() return system.monotime() * 1000 end

-- Waits until fn() is truthy, polling; returns its value or nil after ms.
function helper.wait_for(fn, ms)
  local until_ = helper.now() + (ms or 10000)
  repeat
    local v = fn()
    if v then return v end
    system.sleep(0.01)
  until helper.now() > until_
  return nil
end

-- ---- Lua source from tables ----

local code_mt = {}

-- A piece of Lua source to put as is into a serialized table: env("X").
function helper.code(src) return setmetatable({ src = src }, code_mt) end

local function ser(v, indent)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  if getmetatable(v) == code_mt then return v.src end
  assert(t == "table", "cannot serialize a " .. t)
  local keys, n = {}, #v
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local inner, parts = indent .. "  ", {}
  for i = 1, n do parts[#parts + 1] = inner .. ser(v[i], inner) end
  for _, k in ipairs(keys) do
    local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. ser(k, inner) .. "]"
    parts[#parts + 1] = inner .. key .. " = " .. ser(v[k], inner)
  end
  if #parts == 0 then return "{}" end
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
end

-- "return <v>" as Lua source.
function helper.lua_source(v)
  if type(v) == "string" then return v end
  return "return " .. ser(v, "") .. "\n"
end

-- ---- processes ----

local procs = {}

local function state_of(pid)
  local s = helper.read("/proc/" .. pid .. "/stat")
  if not s then return nil end
  return s:match("^%d+ %b() (%a)")
end

local function alive(pid)
  local st = state_of(pid)
  return st ~= nil and st ~= "Z" and st ~= "X"
end

local SANITIZER = { "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:" }

-- The first sanitizer report in text, if any.
function helper.sanitizer_report(text)
  for _, marker in ipairs(SANITIZER) do
    local i = text and text:find(marker, 1, true)
    if i then return text:sub(math.max(1, i - 200), i + 1500) end
  end
end

-- Starts argv (an array, already quoted where needed) in the background with
-- stdout and stderr in files; returns { pid, out, err, dir }.
local function spawn(cmd)
  local d = helper.tmpdir()
  local out, err = d .. "/stdout", d .. "/stderr"
  local p = io.popen(child_env .. cmd .. " </dev/null >" .. out .. " 2>" .. err .. " & echo $!")
  local pid = tonumber(p:read("l"))
  p:close()
  assert(pid, "could not start: " .. cmd)
  local proc = { pid = pid, out = out, err = err, dir = d, cmd = cmd }
  procs[#procs + 1] = proc
  return proc
end

-- Stops a process started by spawn: SIGTERM, then SIGKILL if it lingers.
-- Returns its stderr.
local function stop(proc)
  if not proc.stopped then
    proc.stopped = true
    if alive(proc.pid) then
      -- cli_piped's pid is a shell's: flowrun is its child, and would outlive it
      -- (pkill without the ASan of SAN=1's lua5.4: preloaded, it hangs on a lock)
      os.execute("env -u LD_PRELOAD pkill -TERM -P " .. proc.pid .. " 2>/dev/null; kill -TERM " .. proc.pid
                 .. " 2>/dev/null")
      if not helper.wait_for(function() return not alive(proc.pid) end, 5000) then
        os.execute("kill -KILL " .. proc.pid .. " 2>/dev/null")
        helper.wait_for(function() return not alive(proc.pid) end, 2000)
      end
    end
  end
  return helper.read(proc.err) or ""
end

-- Waits for "listening on http://127.0.0.1:PORT" on proc's stdout.
local function await_listening(proc, what)
  local port = helper.wait_for(function()
    local s = helper.read(proc.out)
    local p = s and s:match("listening on http://127%.0%.0%.1:(%d+)")
    if p then return tonumber(p) end
    if not alive(proc.pid) then return false end
  end, helper.san and 60000 or 30000)   -- a liveness guard, not a speed limit: a loaded machine
  if not port then
    local err = stop(proc)
    error(what .. " did not start listening: " .. (helper.read(proc.out) or "") .. err, 3)
  end
  proc.port = port
  proc.url = "http://127.0.0.1:" .. port
  return proc
end

local server_mt = {}
server_mt.__index = server_mt

-- Stops the server; raises when it wrote a sanitizer report.
function server_mt:stop()
  local err = stop(self)
  local report = self.what and helper.sanitizer_report(err)
  if report then error(self.what .. " reported:\n" .. report, 2) end
  return err
end

-- What the server has logged on stderr so far.
function server_mt:log() return helper.read(self.err) or "" end

-- How many logged lines contain needle (plain text).
function server_mt:count(needle)
  local n = 0
  for line in self:log():gmatch("[^\n]+") do
    if line:find(needle, 1, true) then n = n + 1 end
  end
  return n
end

-- Starts `flowrun mock` on routes: a table (serialized) or Lua source, or a
-- file when opts.file is set. opts.port picks the port (default 0).
function helper.mock(routes, opts)
  opts = opts or {}
  local file = opts.file
  if not file then
    file = helper.write(helper.tmpdir() .. "/routes.lua", helper.lua_source(routes))
  end
  local proc = spawn(helper.quote(helper.flowrun) .. " mock " .. helper.quote(file)
                     .. " --port " .. (opts.port or 0))
  proc.what = "flowrun mock"
  return setmetatable(await_listening(proc, "flowrun mock"), server_mt)
end

-- Starts `flowrun serve ARGS... --port 0` (each arg quoted here) with the
-- variables of env set (FLOWRUN_INTEGRATIONS unset); returns the server
-- once it listens (url, port, pid, stop, log). opts: port (instead of 0),
-- status (true: its exit status is kept, :status() reads it; nil while it
-- runs; pid is flowrun's own, so that it can be stopped or killed).
function helper.serve(args, env, opts)
  opts = opts or {}
  local cmd = { "env -u FLOWRUN_INTEGRATIONS" }
  for k, v in pairs(env or {}) do cmd[#cmd + 1] = k .. "=" .. helper.quote(v) end
  cmd[#cmd + 1] = helper.quote(helper.flowrun) .. " serve"
  for _, a in ipairs(args) do cmd[#cmd + 1] = helper.quote(a) end
  cmd[#cmd + 1] = "--port " .. (opts.port or 0)
  local proc
  if opts.status then                   -- a shell waits for it and writes its status
    local f = helper.tmpdir() .. "/status"
    proc = spawn("sh -c " .. helper.quote(table.concat(cmd, " ") .. "; echo $? >" .. f))
    local sh = proc.pid
    proc.pid = helper.wait_for(function()
      return tonumber((helper.read(("/proc/%d/task/%d/children"):format(sh, sh)) or ""):match("%d+"))
    end, 5000) or error("flowrun serve did not start: " .. proc.cmd, 2)
    proc.status_file = f
  else
    proc = spawn(table.concat(cmd, " "))
  end
  proc.what = "flowrun serve"
  return setmetatable(await_listening(proc, "flowrun serve"), server_mt)
end

-- The exit status of a server started with opts.status, once it has exited
-- (nil while it runs; once it is gone, its shell's line is waited for).
function server_mt:status()
  if not self.status_file then return nil end
  local function read() return tonumber(helper.read(self.status_file) or "") end
  if alive(self.pid) then return read() end
  return helper.wait_for(read, 5000)
end

-- Is process pid still running?
function helper.alive(pid) return alive(pid) end

-- Starts `faultsrv MODE`.
function helper.faultsrv(mode)
  local f = io.open(helper.faultsrv_bin)
  if not f then error("build/faultsrv is missing (make all builds it)", 2) end
  f:close()
  local proc = spawn(helper.quote(helper.faultsrv_bin) .. " " .. helper.quote(mode))
  proc.what = "faultsrv " .. mode
  return setmetatable(await_listening(proc, "faultsrv " .. mode), server_mt)
end

-- Is `openssl` (the command) there? The TLS specs need it.
function helper.have_openssl()
  return os.execute("command -v openssl >/dev/null 2>&1") == true
end

-- Starts `openssl s_server -www` with a fresh self-signed certificate for
-- 127.0.0.1; the server's .ca_file is that certificate.
function helper.tls_server()
  local d = helper.tmpdir()
  local cert, key = d .. "/cert.pem", d .. "/key.pem"
  assert(os.execute("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1"
    .. " -addext subjectAltName=IP:127.0.0.1 -days 2 -keyout " .. key .. " -out " .. cert
    .. " >/dev/null 2>&1"), "openssl req failed")
  local proc = spawn("openssl s_server -accept 127.0.0.1:0 -www -cert " .. cert .. " -key " .. key)
  proc.what = nil                       -- not ours to check for sanitizer reports
  local port = helper.wait_for(function()
    local s = helper.read(proc.out)
    return s and tonumber(s:match("ACCEPT 127%.0%.0%.1:(%d+)"))
  end, 10000)
  if not port then error("openssl s_server did not start: " .. (helper.read(proc.out) or ""), 2) end
  proc.port, proc.url, proc.ca_file = port, "https://127.0.0.1:" .. port, cert
  return setmetatable(proc, server_mt)
end

-- Starts `openssl s_server -www -Verify 1` (mutual TLS: a client must show
-- a certificate the server trusts), with fresh self-signed certificates
-- for the server (127.0.0.1) and a client. Returns the server with
-- .ca_file (the server's certificate) and .client = { cert, key,
-- key_enc (the key encrypted with .client.password) }.
function helper.mtls_server()
  local d = helper.tmpdir()
  local function self_signed(name, cn, ext)
    assert(os.execute("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=" .. cn .. ext
      .. " -days 2 -keyout " .. d .. "/" .. name .. ".key -out " .. d .. "/" .. name .. ".pem"
      .. " >/dev/null 2>&1"), "openssl req failed")
  end
  self_signed("server", "127.0.0.1", " -addext subjectAltName=IP:127.0.0.1")
  self_signed("client", "flowrun-client", "")
  local client = { cert = d .. "/client.pem", key = d .. "/client.key",
                   key_enc = d .. "/client-enc.key", password = "s3cret pass" }
  assert(os.execute("openssl pkey -in " .. client.key .. " -aes256 -passout 'pass:" .. client.password
    .. "' -out " .. client.key_enc .. " >/dev/null 2>&1"), "openssl pkey failed")
  local proc = spawn("openssl s_server -accept 127.0.0.1:0 -www -Verify 1 -verify_return_error"
    .. " -CAfile " .. client.cert .. " -cert " .. d .. "/server.pem -key " .. d .. "/server.key")
  proc.what = nil                       -- not ours to check for sanitizer reports
  local port = helper.wait_for(function()
    local s = helper.read(proc.out)
    return s and tonumber(s:match("ACCEPT 127%.0%.0%.1:(%d+)"))
  end, 10000)
  if not port then error("openssl s_server did not start: " .. (helper.read(proc.out) or ""), 2) end
  proc.port, proc.url, proc.ca_file, proc.client = port, "https://127.0.0.1:" .. port, d .. "/server.pem", client
  return setmetatable(proc, server_mt)
end

-- Starts tinyproxy (Debian's) on 127.0.0.1 as the current user, in the
-- foreground, logging each request it forwards; :log() reads that log
-- ("Request (file descriptor 5): GET http://127.0.0.1:PORT/x HTTP/1.1").
function helper.tinyproxy()
  local d = helper.tmpdir()
  local port = helper.closed_port()
  helper.write(d .. "/tinyproxy.conf", table.concat({
    "Port " .. port, "Listen 127.0.0.1", "Timeout 30", "MaxClients 100",
    "LogFile \"" .. d .. "/tinyproxy.log\"", "LogLevel Connect", "Allow 127.0.0.1", "",
  }, "\n"))
  local proc = spawn("tinyproxy -d -c " .. d .. "/tinyproxy.conf")
  proc.what = nil
  proc.err = d .. "/tinyproxy.log"      -- :log() and :count() read it
  local up = helper.wait_for(function()
    local ok = os.execute("bash -c 'exec 3<>/dev/tcp/127.0.0.1/" .. port .. "' 2>/dev/null")
    return ok == true
  end, 10000)
  if not up then error("tinyproxy did not start: " .. (helper.read(proc.out) or ""), 2) end
  proc.port, proc.url = port, "http://127.0.0.1:" .. port
  return setmetatable(proc, server_mt)
end

-- Starts nginx on 127.0.0.1, in a folder of its own (opts.dir, or a new
-- one), as whoever runs the spec, root or not (master_process off: one
-- process): http { log_format main <opts.log>; access_log; <opts.servers> },
-- where DIR in opts.servers is the folder and PORT1, PORT2, ... free ports.
-- Returns { pid, dir, ports, log() -> the access log's lines so far,
-- clear() (empties it), stop() }; cleanup() stops it too.
function helper.nginx(opts)
  local exe
  for _, p in ipairs { "/usr/sbin/nginx", "/usr/bin/nginx" } do
    local f = io.open(p)
    if f then f:close() exe = exe or p end
  end
  if not exe then error("nginx is missing (make deps installs nginx-light)", 2) end
  local dir = opts.dir or helper.tmpdir()
  for _ = 1, 5 do
    local ports = {}
    local servers = opts.servers:gsub("PORT(%d)", function(i)
      i = tonumber(i)
      ports[i] = ports[i] or helper.closed_port()
      return tostring(ports[i])
    end):gsub("DIR", dir)
    helper.write(dir .. "/nginx.conf", table.concat({
      "daemon off;", "master_process off;", "worker_processes 1;", "pid " .. dir .. "/nginx.pid;",
      "error_log " .. dir .. "/error.log warn;", "events { worker_connections 1024; }", "http {",
      "  log_format main '" .. opts.log .. "';", "  access_log " .. dir .. "/access.log main;",
      "  client_body_temp_path " .. dir .. "/body;", "  proxy_temp_path " .. dir .. "/proxy;",
      "  fastcgi_temp_path " .. dir .. "/fastcgi;", "  uwsgi_temp_path " .. dir .. "/uwsgi;",
      "  scgi_temp_path " .. dir .. "/scgi;", servers, "}", "",
    }, "\n"))
    os.remove(dir .. "/nginx.pid")
    os.remove(dir .. "/error.log")
    local proc = spawn(("%s -p %s/ -c %s/nginx.conf -e %s/error.log"):format(exe, dir, dir, dir))
    proc.what = nil                     -- not ours: no sanitizer report
    local up = helper.wait_for(function()   -- the pid file is written once it listens
      if (helper.read(dir .. "/error.log") or ""):find("emerg") or not alive(proc.pid) then return "dead" end
      return helper.read(dir .. "/nginx.pid") ~= nil
    end, 10000)
    if up == true then
      os.execute(": > " .. dir .. "/access.log")
      return {
        pid = proc.pid, dir = dir, ports = ports,
        log = function()
          local lines = {}
          for line in (helper.read(dir .. "/access.log") or ""):gmatch("[^\n]+") do lines[#lines + 1] = line end
          return lines
        end,
        clear = function() os.execute(": > " .. dir .. "/access.log") end,
        stop = function() stop(proc) end,
      }
    end
    stop(proc)
  end
  error("nginx did not start: " .. (helper.read(dir .. "/error.log") or ""), 2)
end

-- A PostgreSQL server of its own, in a new directory on a Unix socket only
-- (listen_addresses ''): initdb and postgres run as the `postgres` user the
-- Debian package makes (PostgreSQL refuses root), or as ourselves when we
-- are not root. Returns { dir, url = "postgresql:///flowrun?host=DIR",
-- psql(sql) -> output, stop() }.
function helper.postgres()
  local bin
  for _, v in ipairs { "17", "16", "15", "14", "13" } do
    local f = io.open("/usr/lib/postgresql/" .. v .. "/bin/initdb")
    if f then f:close() bin = bin or "/usr/lib/postgresql/" .. v .. "/bin" end
  end
  if not bin then error("PostgreSQL is missing (make deps installs postgresql)", 2) end
  local dir = helper.tmpdir()
  local as = "env -u LD_PRELOAD "       -- not ours: no sanitizer of ours in them
  if helper.sh("id -u"):match("%d+") == "0" then
    os.execute("chown postgres " .. helper.quote(dir))
    as = as .. "runuser -u postgres -- "
  end
  local data = dir .. "/data"
  local out = helper.sh(as .. bin .. "/initdb -A trust -U postgres -E UTF8 --no-sync -D " .. data .. " 2>&1")
  if not out:find("Success") then error("initdb failed: " .. out, 2) end
  local opts = "-c listen_addresses='' -c unix_socket_directories=" .. dir
    .. " -c fsync=off -c max_connections=200 -c shared_buffers=32MB"
  local proc = spawn(as .. bin .. "/postgres -D " .. data .. " " .. opts)
  proc.what = nil                       -- not ours: no sanitizer report
  local psql = function(sql, db)
    return helper.sh(("env -u LD_PRELOAD %s/psql -X -q -A -t -h %s -U postgres -d %s -c %s 2>&1"):format(
      bin, dir, db or "flowrun", helper.quote(sql)))
  end
  local up = helper.wait_for(function()
    if not alive(proc.pid) then return "dead" end
    return psql("SELECT 1", "postgres"):match("^%s*(.-)%s*$") == "1"
  end, 20000)
  if up ~= true then
    stop(proc)
    error("postgres did not start: " .. (helper.read(proc.err) or ""), 2)
  end
  psql("CREATE DATABASE flowrun", "postgres")
  return {
    dir = dir, bin = bin, pid = proc.pid,
    url = "postgresql:///flowrun?host=" .. dir .. "&user=postgres",
    psql = psql,
    log = function() return helper.read(proc.err) or "" end,   -- the server's log
    stop = function() stop(proc) end,
  }
end

-- A port on 127.0.0.1 where nothing listens: one a mock had, now closed.
function helper.closed_port()
  local m = helper.mock({ { path = "/", body = "x" } })
  m:stop()
  return m.port
end

-- ---- integrations and flows ----

-- The durable specs' world: a mock shop API (GET /v1/order/{id} answers
-- {"status":"shipped"}), a new folder, an integrations file `shop` for the
-- mock, and a store's path in the folder. Returns mock, dir, ifile, store.
function helper.shop_and_store()
  local mock = helper.mock({ { path = "/v1/order/{id}", json = { status = "shipped" } } })
  local dir = helper.tmpdir()
  return mock, dir, helper.integrations({ shop = { base_url = mock.url .. "/v1" } }, dir), dir .. "/s.db"
end

-- `flowrun host --store STORE -I IFILE [extra...] FLOW` with input on stdin:
-- the durable specs' host. Returns what helper.cli does.
function helper.store_host(store, ifile, flow, input, extra)
  local args = { "host", "--store", store, "-I", ifile }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  args[#args + 1] = flow
  return helper.cli({ args = args, stdin = input })
end

-- Writes an integrations file (a table, serialized, or Lua source) into dir
-- (a new one by default); returns its path.
function helper.integrations(spec, dir)
  dir = dir or helper.tmpdir()
  return helper.write(dir .. "/integrations.lua", helper.lua_source(spec))
end

-- Writes a flow file; returns its path.
function helper.flow(source, dir, name)
  dir = dir or helper.tmpdir()
  return helper.write(dir .. "/" .. (name or "flow.lua"), source)
end

-- ---- the command line ----

-- Runs build/flowrun. opts: args (array), stdin (string; stdin_pipe: sent
-- through a pipe, not a file), stdin_cmd (a shell command piped in), env
-- (table; a value false unsets), cwd, timeout (s). FLOWRUN_INTEGRATIONS is unset unless
-- given. Returns { code, stdout, stderr }; raises on a sanitizer report.
function helper.cli(opts)
  local d = helper.tmpdir()
  local env, set = { "env -u FLOWRUN_INTEGRATIONS" }, {}
  for k, v in pairs(opts.env or {}) do  -- env takes its -u options before NAME=VALUE
    if v == false then env[#env + 1] = "-u " .. k
    else set[#set + 1] = k .. "=" .. helper.quote(v) end
  end
  for _, kv in ipairs(set) do env[#env + 1] = kv end
  local args = {}
  for i, a in ipairs(opts.args or {}) do args[i] = helper.quote(a) end
  helper.write(d .. "/stdin", opts.stdin or "")
  local stdin = d .. "/stdin"
  if opts.stdin_pipe or opts.stdin_cmd then stdin = nil end
  local cmd = (opts.cwd and "cd " .. helper.quote(opts.cwd) .. " && " or "")
    .. child_env .. table.concat(env, " ") .. " timeout -k 5 " .. (opts.timeout or 60) .. " "
    .. helper.quote(helper.flowrun) .. " " .. table.concat(args, " ")
    .. (stdin and " <" .. stdin or "")
    .. " >" .. d .. "/stdout 2>" .. d .. "/stderr"
  if opts.stdin_pipe then               -- a subshell, so that cd applies to flowrun
    cmd = "cat " .. d .. "/stdin | (" .. cmd .. ")"
  elseif opts.stdin_cmd then
    cmd = "(" .. opts.stdin_cmd .. ") | (" .. cmd .. ")"
  end
  local _, how, code = os.execute(cmd)
  local r = {
    code = how == "exit" and code or 128 + code,
    stdout = helper.read(d .. "/stdout") or "",
    stderr = helper.read(d .. "/stderr") or "",
  }
  local report = helper.sanitizer_report(r.stderr)
  if report then error("flowrun reported:\n" .. report, 2) end
  if r.code == 124 then error("flowrun did not finish in time: " .. cmd .. "\n" .. r.stderr, 2) end
  return r
end

-- Starts build/flowrun with args (an array) in the background, its stdin a
-- pipe the spec writes to, so that a spec can wait for what flowrun says
-- before it answers (an order, not a sleep). opts: env (a table). Returns
-- a proc: proc:send(line) writes line and a line break; proc:stdout() and
-- proc:stderr() are what it wrote so far (`flowrun run` buffers stdout
-- until an ask; a --trace line on stderr comes at once); proc:finish([ms])
-- closes its stdin, waits for it to exit (60 s, or ms: then it raises) and
-- returns { code, stdout, stderr } as helper.cli does.
local piped_mt = {}
piped_mt.__index = piped_mt

function helper.cli_piped(args, opts)
  opts = opts or {}
  local d = helper.tmpdir()
  local fifo = d .. "/stdin"
  assert(os.execute("mkfifo " .. fifo), "mkfifo failed")
  local env = { "env -u FLOWRUN_INTEGRATIONS" }
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. helper.quote(v) end
  local q = {}
  for i, a in ipairs(args) do q[i] = helper.quote(a) end
  local cmd = child_env .. table.concat(env, " ") .. " " .. helper.quote(helper.flowrun) .. " "
    .. table.concat(q, " ") .. " <" .. fifo .. " >" .. d .. "/stdout 2>" .. d .. "/stderr; echo $? >" .. d .. "/code"
  local p = io.popen("(" .. cmd .. ") >/dev/null 2>&1 & echo $!")
  local pid = tonumber(p:read("l"))
  p:close()
  assert(pid, "could not start: " .. cmd)
  local proc = setmetatable({ pid = pid, out = d .. "/stdout", err = d .. "/stderr", dir = d, cmd = cmd },
                            piped_mt)
  procs[#procs + 1] = proc
  proc.input = assert(io.open(fifo, "w"))   -- opens once flowrun has it open for reading
  return proc
end

function piped_mt:send(line)
  self.input:write(line, "\n")
  self.input:flush()
end

function piped_mt:stdout() return helper.read(self.out) or "" end
function piped_mt:stderr() return helper.read(self.err) or "" end

function piped_mt:finish(ms)
  if self.input then self.input:close() self.input = nil end
  local code = helper.wait_for(function() return tonumber(helper.read(self.dir .. "/code") or "") end, ms or 60000)
  if not code then error("flowrun did not finish in time: " .. self.cmd, 2) end
  local r = { code = code, stdout = self:stdout(), stderr = helper.read(self.err) or "" }
  local report = helper.sanitizer_report(r.stderr)
  if report then error("flowrun reported:\n" .. report, 2) end
  return r
end

-- The lines of a string, as an array.
function helper.lines(s)
  local t = {}
  for line in s:gmatch("([^\n]*)\n") do t[#t + 1] = line end
  local last = s:match("([^\n]+)$")
  if last then t[#t + 1] = last end
  return t
end

-- ---- the Lua module ----

local runtimes = setmetatable({}, { __mode = "k" })

-- Runs a shell command; returns its output (stdout and stderr) and exit code.
function helper.sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

function helper.module()
  return require "flowrun"
end

-- A runtime of the module, with integrations if given: a table, Lua source
-- (a string with a line break) or a path. Closed by cleanup().
function helper.runtime(integrations)
  local flowrun = require "flowrun"
  local opts = {}
  if type(integrations) == "table" or (type(integrations) == "string" and integrations:find("\n")) then
    opts.integrations = helper.integrations(integrations)
  elseif integrations then
    opts.integrations = integrations
  end
  local rt = flowrun.new(opts)
  runtimes[rt] = true
  return rt
end

local flow_files = {}                   -- source -> path, so 300 sessions of one flow write one file

-- Starts session id of rt running the flow source with args; returns the
-- flow's path.
function helper.start(rt, id, source, ...)
  local path = flow_files[source]
  if not path or not helper.read(path) then
    path = helper.flow(source, nil, "flow_" .. id:gsub("%W", "_") .. ".lua")
    flow_files[source] = path
  end
  rt:start(id, path, ...)
  return path
end

-- Events of the given type (and session) from a list of events.
function helper.events(list, type_, session)
  local t = {}
  for _, e in ipairs(list) do
    if (not type_ or e.type == type_) and (not session or e.session == session) then
      t[#t + 1] = e
    end
  end
  return t
end

-- The texts said by session (in order) in a list of events.
function helper.says(list, session)
  local t = {}
  for _, e in ipairs(helper.events(list, "say", session)) do t[#t + 1] = e.text end
  return t
end

-- ---- cleanup ----

function helper.cleanup()
  local reports = {}
  for rt in pairs(runtimes) do
    pcall(rt.close, rt)
    runtimes[rt] = nil
  end
  for i = #procs, 1, -1 do
    local p = procs[i]
    if p.input then pcall(p.input.close, p.input) p.input = nil end   -- cli_piped: its stdin ends
    local err = stop(p)
    local report = p.what and helper.sanitizer_report(err)
    if report then reports[#reports + 1] = p.what .. " reported:\n" .. report end
    procs[i] = nil
  end
  for i = #dirs, 1, -1 do
    os.execute("rm -rf " .. helper.quote(dirs[i]))
    dirs[i] = nil
  end
  if #reports > 0 then error(table.concat(reports, "\n"), 2) end
end

-- At exit, whatever a spec forgot.
helper._sentinel = setmetatable({}, { __gc = function() pcall(helper.cleanup) end })

return helper
