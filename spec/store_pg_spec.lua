-- The PostgreSQL store (runtime/lib/store_pg.c), method by method, through
-- build/store_pg_test: two or three handles in one process act as hosts on
-- a real PostgreSQL (helper.postgres), a database of its own for each test.
-- The program checks the values itself and prints what it saw; the exact
-- lines are asserted here (URL stands for the database's URL).
local helper = require "spec.helper"

local child_env = ""
if os.getenv("SPEC_CHILD_ASAN_OPTIONS") then
  child_env = "env -u LD_PRELOAD ASAN_OPTIONS=" .. os.getenv("SPEC_CHILD_ASAN_OPTIONS") .. " "
end

describe("the PostgreSQL store", function()
  local pg
  setup(function() pg = helper.postgres() end)
  teardown(function()
    if pg then pg.stop() end
    helper.cleanup()
  end)

  -- Runs TEST against a new database; its output with the URL as "URL",
  -- and its exit code.
  local function run(test)
    pg.psql("CREATE DATABASE t_" .. test, "postgres")
    local url = pg.url:gsub("/flowrun%?", "/t_" .. test .. "?")
    local out, code = helper.sh(child_env .. "timeout -k 5 60 " .. helper.quote(helper.root .. "/build/store_pg_test")
                                .. " " .. helper.quote(url) .. " " .. test)
    local plain = url:gsub("%p", "%%%0")
    return (out:gsub(plain, "URL")), code
  end

  local function expect(test, want)
    local out, code = run(test)
    assert.are.equal(want, out)
    assert.are.equal(0, code)
  end

  it("keeps sessions, journals, inboxes and outboxes byte for byte (NULs), as SQLite's does", function()
    expect("roundtrip", [[
identity: 16 hex digits, the same for both handles
session, journal, inbox, outbox: round trip with NUL bytes
waiting, silent, listed, parked and run again
cut: records 1 and 3 gone, 2 and 4 kept
output given (said 1), message 1 taken
commit: store URL: duplicate key value violates unique constraint "flowrun_journal_pkey"
ended: row kept, journal and inbox gone; purged; dropped
read only: store URL: cannot execute INSERT in a read-only transaction
ok roundtrip
]])
  end)

  it("splits the 256 partitions between two hosts once both heartbeat", function()
    expect("split", [[
a alone: took 256
b joins: took 0
a: took 0, lost 0, holds 128
b: took 128, lost 0, holds 128
held by both: 0, by none: 0
a purges: a's gone a's gone b's kept b's kept
leases: 2 nodes, 256 rows, epochs 1..2
ok split
]])
  end)

  it("takes a silent host's partitions when their leases expire, at the next epoch, logged", function()
    expect("takeover", [[
b while a lives: took 0
b after a's leases expired: took 256, holds 256
takeovers by b: 256 at epoch 2..2
takeovers by a: 256 at epoch 1..1
a comes back: lost 256, took 0, holds 0
ok takeover
]])
  end)

  it("fences the old owner out: the takeover waits for its transaction, then its writes fail", function()
    expect("fence", [[
b's takeover: took 256, waited for a's transaction: yes
b restores 2 records, the last "by a, last"
a fenced: store URL: partition 7 was taken over by another host (epoch 2, this host had 1): this host is fenced out
a fenced: store URL: partition 7 was taken over by another host (epoch 2, this host had 1): this host is fenced out
journal rows by node and epoch: 1:a@1 2:a@1 3:b@2
ok fence
]])
  end)

  it("stores messages from any host, numbered, wakes the owner, and addresses outputs to the sender", function()
    expect("inbox", [[
a woken: 1, i c1
send 0: stored as 1
a woken: 2, i c1
b woken by its messages sent again: 2, o c1
inbox: 1 "hi\0you", 2 "two"
put_output: 1
b woken: 1, o c1
b's outputs: 1, c1 1 6 bytes
b's outputs again: 0
b after sending 2 again: 1 outputs
put_output to itself: 0
outbox: 2:a
put_output without a node: 0
ok inbox
]])
  end)

  it("never prints a password of the URL", function()
    expect("redact", [[
store postgresql://flowrun:***@/db?host=/nonexistent-dir: could not connect: connection to server on socket "/nonexistent-dir/.s.PGSQL.5432" failed: No such file or directory
store postgres:///db?host=/nonexistent-dir&password=***&user=flowrun: could not connect: connection to server on socket "/nonexistent-dir/.s.PGSQL.5432" failed: No such file or directory
ok redact
]])
  end)

  it("says the connection was lost, and does not crash", function()
    expect("lost", [[
begin: store URL: the connection to PostgreSQL was lost: terminating connection due to administrator command
wakes: store URL: the connection to PostgreSQL was lost: server closed the connection unexpectedly
ok lost
]])
  end)

  it("refuses a database without the store to read, a newer format, and a node name in use", function()
    expect("format", [[
read only, no store: store URL: not a flowrun store
store URL: written by a newer flowrun (store format 2; this one reads 1)
store URL: node n1 is in use by another process (each host needs a name of its own)
ok format
]])
  end)

  it("commits a turn of one journal record (fenced) in well under a millisecond or so", function()
    local out, code = run("perf")
    assert.are.equal(0, code, out)
    local ms = tonumber(out:match("commit of one journal record: ([%d.]+) ms"))
    assert.is_truthy(ms, out)
    print(("# store_pg: %.3f ms a commit of one journal record"):format(ms))
    assert.is_true(ms < 20, out)      -- a bound for a loaded machine, not a benchmark
  end)
end)
