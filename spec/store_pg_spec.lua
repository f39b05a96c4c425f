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

  it("splits the 256 partitions between two hosts once both heartbeat; each restores and purges its own", function()
    expect("split", [[
a alone: took 256
b joins: took 0
a: took 0, lost 0, holds 128
b: took 128, lost 0, holds 128
held by both: 0, by none: 0
a's sessions to restore: a's a's; all unfinished: 4
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

  it("gives a host restarted under its name its partitions back at once, at the next epoch", function()
    expect("restart", [[
r restarted: took 256, lost 0; epochs 2..2
ok restart
]])
  end)

  it("numbers messages from two hosts at once without a gap or a duplicate; one start makes a session", function()
    expect("race", [[
starts that made the session: 20 of 40; failed calls: 0
messages: 200 stored, numbers missing 0, twice 0; inbox rows 200
ok race
]])
  end)

  it("fences the old owner out: a host paused past its lease loses its turn and its partitions", function()
    expect("fence", [[
b's takeover: took 256, partition 7 at epoch 2
b restores 1 record, "d"
a's commit: store URL: the connection to PostgreSQL was lost: terminating connection due to idle-in-transaction timeout (PostgreSQL ends the transaction of a host paused past its lease: this host is fenced out)
journal rows by node and epoch: 1:a@1 3:b@2
ok fence
]])
  end)

  it("a takeover leaves a partition a live host's turn holds, and takes it after its commit", function()
    expect("skiplocked", [[
b's takeover during a's turn: took 255, partition 7 left
b's next heartbeat: took 1 (partition 7: yes)
a fenced: store URL: partition 7 was taken over by another host (epoch 2, this host had 1): this host is fenced out
ok skiplocked
]])
  end)

  it("stores messages from any host, numbered, wakes the owner, and addresses outputs to the sender", function()
    expect("inbox", [[
a woken: 1, i c1
send 0: stored as 1
a woken: 2, i c1
b woken by its messages sent again: 2, o c1
inbox: 1 "hi\0you", 2 "two"
c1 to restore: 2 times; silent: 0
put_output: 1
b woken: 1, o c1
b's outputs: 1, c1 1 6 bytes
b's outputs again: 0
b after sending 2 again: 1 outputs
put_output to itself: 0
outbox: 2:a
store URL: leases: called inside a turn's transaction
before the commit: 3; after: 4
put_output without a node: 0
ok inbox
]])
  end)

  -- libpq's own messages may quote the URL or a token of it: the password
  -- is taken out of them too (a one-letter one garbles the message).
  it("never prints a password of the URL", function()
    expect("redact", [[
store postgresql://flowrun:***@/db?host=/nonexistent-dir: could not connect: connection to server on socket "/nonexistent-dir/.s.PGSQL.5432" failed: No such file or directory
store postgres:///db?host=/nonexistent-dir&password=***&user=flowrun: could not connect: connection to server on socket "/nonexistent-dir/.s.PGSQL.5432" failed: No such file or directory
store postgresql://flowrun:***@/db?host=/nonexistent-dir: could not connect: invalid percent-encoded token: "***"
store postgresql://flowrun:***@[::1/db: could not connect: end of string reached when looking for matching "]" in IPv6 host address in URI: "postgresql://flowrun:***@[::1/db"
store postgresql://flowrun:***@[::1/db: could not connect: end of ***tring reached when looking for matching "]" in IPv6 ho***t addre****** in URI: "po***tgre***ql://flowrun:***@[::1/db"
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

  it("refuses a database without the store to read, a newer format, a node name in use, too long or empty, and no lease", function()
    expect("format", [[
read only, no store: store URL: not a flowrun store
store URL: written by a newer flowrun (store format 2; this one reads 1)
store URL: node n1 is in use by another process (each host needs a name of its own)
store URL: node name a-host-name-of-fifty-two-bytes-0123456789-0123456789 has 52 bytes: at most 51 (it names a PostgreSQL notification channel)
store URL: an empty node name
store URL: a lease of 0 ms: it must be 1 ms or more
ok format
]])
  end)

  it("commits a turn of one journal record (fenced) in well under a millisecond or so", function()
    local out, code = run("perf")
    assert.are.equal(0, code, out)
    local ms = tonumber(out:match("commit of one journal record: ([%d.]+) ms"))
    assert.is_truthy(ms, out)
    for line in out:gmatch("[^\n]+") do
      if not line:match("^ok") then print("# store_pg: " .. line) end
    end
    assert.is_truthy(out:match("send: [%d.]+ ms; the owner woken after [%d.]+ ms"), out)
    assert.is_true(ms < 20, out)      -- a bound for a loaded machine, not a benchmark
  end)
end)
