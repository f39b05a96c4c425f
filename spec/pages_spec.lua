-- api_pages{...} and paged flow.api steps (README: Pagination), against
-- `flowrun mock` on 127.0.0.1: a cursor in the body, a next URL, the Link
-- header, the page cap, a failing page, a next URL on another origin, a
-- declarative flow, flowrun check, and a durable replay of a paged loop.
local helper = require "spec.helper"
local cjson = require "cjson"

-- The listing the cursor specs walk: three pages, cursors c2 and c3.
local CURSOR_ROUTES = {
  { path = "/v1/items", query = { cursor = "c2" }, json = { items = { 3, 4 }, meta = { next_cursor = "c2b" } } },
  { path = "/v1/items", query = { cursor = "c2b" }, json = { items = { 5 }, meta = { next_cursor = "" } } },
  { path = "/v1/items", json = { items = { 1, 2 }, meta = { next_cursor = "c2" } } },
}

local CURSOR = 'pages = { cursor = { param = "cursor", from = "meta.next_cursor" } }'

-- Runs flow source against routes; returns the run, the mock's log and
-- the mock (stopped).
local function run(routes, source, ig, opts)
  opts = opts or {}
  local mock = helper.mock(routes, { port = opts.port })
  local dir = helper.tmpdir()
  ig = ig or {}
  ig.base_url = mock.url .. "/v1"
  local ifile = helper.integrations({ shop = ig }, dir)
  local args = { "run", "-I", ifile, helper.flow(source, dir) }
  if opts.trace then table.insert(args, 2, "--trace") end
  local r = helper.cli({ args = args })
  local log = mock:stop()
  return r, log, mock
end

-- The requests the mock logged, in order ("GET /v1/items?cursor=c2 -> 200").
local function requests(log)
  local out = {}
  for l in log:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

-- A loop that says each page: label, items, number, last, next and the rest.
local SAY_PAGES = [[
  say(("%s %s #%d last=%s next=%s capped=%s refused=%s"):format(label, json.encode(res.json and res.json.items or json.null),
      page.number, tostring(page.last), tostring(page.next), tostring(page.capped), tostring(page.refused)))
end
say("after")
]]

describe("api_pages", function()
  teardown(helper.cleanup)

  it("follows a cursor in the body as a query parameter, keeping the node's own query", function()
    local r, log = run(CURSOR_ROUTES, [[
for label, res, page in api_pages{ integration = "shop", path = "/items", query = { limit = 2 },
    results = { "200" }, ]] .. CURSOR .. [[ } do
]] .. SAY_PAGES)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(table.concat({
      '200 [1,2] #1 last=false next=c2 capped=nil refused=nil',
      '200 [3,4] #2 last=false next=c2b capped=nil refused=nil',
      '200 [5] #3 last=true next=nil capped=nil refused=nil',
      'after', '' }, "\n"), r.stdout)
    assert.are.same({ "GET /v1/items?limit=2 -> 200", "GET /v1/items?cursor=c2&limit=2 -> 200",
                      "GET /v1/items?cursor=c2b&limit=2 -> 200" }, requests(log))
  end)

  it("adds the cursor to a query given as a list of pairs, after them", function()
    local r, log = run(CURSOR_ROUTES, [[
for label, res, page in api_pages{ integration = "shop", path = "/items", query = { { "z", "1" } },
    results = { "200" }, ]] .. CURSOR .. [[ } do end
]])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ "GET /v1/items?z=1 -> 200", "GET /v1/items?z=1&cursor=c2 -> 200",
                      "GET /v1/items?z=1&cursor=c2b -> 200" }, requests(log))
  end)

  it("reads a number as a cursor, a key of digits as an array index; null and false end; the node's query is not sent again", function()
    local r, log = run({
      { path = "/v1/num", query = { p = "2" }, json = { items = { "b" }, next = helper.code("json.null") } },
      { path = "/v1/num", json = { items = { "a" }, next = 2 } },
      { path = "/v1/arr", query = { page = "2" }, json = { items = { "d" }, links = { { href = false } } } },
      { path = "/v1/arr", json = { items = { "c" }, links = { { href = "/v1/arr?page=2" } } } },
    }, [[
for label, res, page in api_pages{ integration = "shop", path = "/num", results = { "200" },
    pages = { cursor = { param = "p", from = "next" } } } do
]] .. SAY_PAGES .. [[
for label, res, page in api_pages{ integration = "shop", path = "/arr", query = { k = "x" }, results = { "200" },
    pages = { next_url = "links.1.href" } } do
]] .. SAY_PAGES, { query = { v = "1" } })
    assert.are.equal(0, r.code, r.stderr)
    local port = r.stdout:match("127%.0%.0%.1:(%d+)")
    assert.are.equal(table.concat({
      '200 ["a"] #1 last=false next=2 capped=nil refused=nil',
      '200 ["b"] #2 last=true next=nil capped=nil refused=nil',
      'after',
      '200 ["c"] #1 last=false next=http://127.0.0.1:' .. port .. '/v1/arr?page=2 capped=nil refused=nil',
      '200 ["d"] #2 last=true next=nil capped=nil refused=nil',
      'after', '' }, "\n"), r.stdout)
    assert.are.same({ "GET /v1/num?v=1 -> 200", "GET /v1/num?v=1&p=2 -> 200",
                      "GET /v1/arr?v=1&k=x -> 200", "GET /v1/arr?page=2&v=1 -> 200" }, requests(log))
  end)

  it("follows a next URL in the body: relative to base_url, or absolute on its origin", function()
    local port = helper.closed_port()
    local base = "http://127.0.0.1:" .. port
    local r, log = run({
      { path = "/v1/urls", query = { page = "2" }, json = { items = { "b" }, links = { next = base .. "/v1/urls?page=3&x=%2F" } } },
      { path = "/v1/urls", query = { page = "3" }, json = { items = { "c" }, links = { } } },
      { path = "/v1/urls", json = { items = { "a" }, links = { next = "/v1/urls?page=2" } } },
    }, [[
for label, res, page in api_pages{ integration = "shop", path = "/urls", results = { "200" },
    pages = { next_url = "links.next" } } do
]] .. SAY_PAGES, nil, { port = port })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(table.concat({
      '200 ["a"] #1 last=false next=' .. base .. '/v1/urls?page=2 capped=nil refused=nil',
      '200 ["b"] #2 last=false next=' .. base .. '/v1/urls?page=3&x=%2F capped=nil refused=nil',
      '200 ["c"] #3 last=true next=nil capped=nil refused=nil',
      'after', '' }, "\n"), r.stdout)
    assert.are.same({ "GET /v1/urls -> 200", "GET /v1/urls?page=2 -> 200", "GET /v1/urls?page=3&x=%2F -> 200" },
                    requests(log))
  end)

  it("refuses a next URL that is not under the integration's base URL, and says why", function()
    local r, log = run({
      { path = "/v1/urls", query = { page = "2" }, json = { items = { "b" }, links = { next = "http://127.0.0.2:9/v1/urls?page=3" } } },
      { path = "/v1/urls", query = { page = "3" }, json = { items = { "c" } } },
      { path = "/v1/urls", json = { items = { "a" }, links = { next = "/v1/urls?page=2" } } },
      { path = "/v2/other", json = { items = { "z" } } },
      { path = "/v1/up", json = { items = { "u" }, links = { next = "/v2/other" } } },
    }, [[
for label, res, page in api_pages{ integration = "shop", path = "/urls", results = { "200" },
    pages = { next_url = "links.next" } } do
]] .. SAY_PAGES .. [[
for label, res, page in api_pages{ integration = "shop", path = "/up", results = { "200" },
    pages = { next_url = "links.next" } } do
  say(page.refused)
end
]])
    assert.are.equal(0, r.code, r.stderr)
    local port = r.stdout:match("127%.0%.0%.1:(%d+)")
    local why = 'next URL "http://127.0.0.2:9/v1/urls?page=3" is not under the base URL of integration'
      .. " 'shop' (http://127.0.0.1:" .. port .. "/v1): not followed"
    assert.are.equal(table.concat({
      '200 ["a"] #1 last=false next=http://127.0.0.1:' .. port .. '/v1/urls?page=2 capped=nil refused=nil',
      '200 ["b"] #2 last=true next=nil capped=nil refused=' .. why,
      'after',
      'next URL "/v2/other" is not under the base URL of integration \'shop\' (http://127.0.0.1:' .. port
        .. '/v1): not followed', '' }, "\n"), r.stdout)
    assert.matches("flow.lua:1: api_pages: " .. why, r.stderr, 1, true)   -- a warning too
    assert.are.same({ "GET /v1/urls -> 200", "GET /v1/urls?page=2 -> 200", "GET /v1/up -> 200" }, requests(log))
  end)

  it("follows the Link header's rel=\"next\" (not the first link), relative or absolute", function()
    local port = helper.closed_port()
    local base = "http://127.0.0.1:" .. port
    local r, log = run({
      { path = "/v1/links", query = { page = "2" }, json = { items = { "b" } },
        headers = { Link = '<' .. base .. '/v1/links?page=1>; rel="first", <' .. base .. '/v1/links?page=3>; rel="next"' } },
      { path = "/v1/links", query = { page = "3" }, json = { items = { "c" } },
        headers = { Link = '</v1/links?page=1>; rel="first prev"' } },
      { path = "/v1/links", json = { items = { "a" } }, headers = { Link = '</v1/links?page=2>; rel=next' } },
    }, [[
for label, res, page in api_pages{ integration = "shop", path = "/links", results = { "200" },
    pages = { link = true } } do
]] .. SAY_PAGES, nil, { port = port })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(table.concat({
      '200 ["a"] #1 last=false next=' .. base .. '/v1/links?page=2 capped=nil refused=nil',
      '200 ["b"] #2 last=false next=' .. base .. '/v1/links?page=3 capped=nil refused=nil',
      '200 ["c"] #3 last=true next=nil capped=nil refused=nil',
      'after', '' }, "\n"), r.stdout)
    assert.are.same({ "GET /v1/links -> 200", "GET /v1/links?page=2 -> 200", "GET /v1/links?page=3 -> 200" },
                    requests(log))
  end)

  it("stops at max_pages (default 100): the last page says capped, and its next cursor starts the rest", function()
    local r, log = run({
      { path = "/v1/loop", json = { items = { 1 }, next = "again" } },
      { path = "/v1/items", query = { cursor = "c2" }, json = { items = { 3, 4 }, meta = { next_cursor = "c2b" } } },
      { path = "/v1/items", query = { cursor = "c2b" }, json = { items = { 5 }, meta = { } } },
      { path = "/v1/items", json = { items = { 1, 2 }, meta = { next_cursor = "c2" } } },
    }, [[
local n, last
for label, res, page in api_pages{ integration = "shop", path = "/loop", results = { "200" },
    pages = { cursor = { param = "c", from = "next" } } } do
  n, last = page.number, page
end
say(("%d pages, capped=%s last=%s next=%s"):format(n, tostring(last.capped), tostring(last.last), last.next))
local cursor
for label, res, page in api_pages{ integration = "shop", path = "/items", results = { "200" },
    pages = { cursor = { param = "cursor", from = "meta.next_cursor" }, max_pages = 1 } } do
  cursor = page.next
]] .. SAY_PAGES:gsub('say%("after"%)', '') .. [[
for label, res, page in api_pages{ integration = "shop", path = "/items", results = { "200" },
    pages = { cursor = { param = "cursor", from = "meta.next_cursor", start = cursor } } } do
]] .. SAY_PAGES)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(table.concat({
      "100 pages, capped=true last=true next=again",
      '200 [1,2] #1 last=true next=c2 capped=true refused=nil',
      '200 [3,4] #1 last=false next=c2b capped=nil refused=nil',
      '200 [5] #2 last=true next=nil capped=nil refused=nil',
      'after', '' }, "\n"), r.stdout)
    local n = 0
    for _, l in ipairs(requests(log)) do if l:find("/v1/loop", 1, true) then n = n + 1 end end
    assert.are.equal(100, n)
  end)

  it("ends after a page whose label is not a declared success, which it still gives; pages are retried as calls", function()
    local r, log = run({
      { path = "/v1/items", query = { cursor = "c2" }, status = 503, times = 1, json = { error = "busy" } },
      { path = "/v1/items", query = { cursor = "c2" }, json = { items = { 3 }, meta = { next_cursor = "c3" } } },
      { path = "/v1/items", query = { cursor = "c3" }, status = 500, json = { error = "boom", meta = { next_cursor = "c4" } } },
      { path = "/v1/items", query = { cursor = "c4" }, json = { items = { 9 } } },
      { path = "/v1/items", json = { items = { 1, 2 }, meta = { next_cursor = "c2" } } },
    }, [[
for label, res, page in api_pages{ integration = "shop", path = "/items", results = { "200", "5xx" },
    ]] .. CURSOR .. [[ } do
  say(("%s %d attempts=%d #%d last=%s"):format(label, res.status, res.attempts, page.number, tostring(page.last)))
end
for label, res, page in api_pages{ integration = "shop", path = "/gone", results = { "200" }, ]] .. CURSOR .. [[ } do
  say(("%s %d #%d last=%s"):format(label, res.status, page.number, tostring(page.last)))
end
]], { retry = { attempts = 2, on = { "503" }, backoff_ms = 10 } }, { trace = true })
    assert.are.equal(0, r.code, r.stderr)
    local traced = {}                   -- one call's trace line per page, as for any call
    for l in r.stderr:gmatch("trace [^\n]*") do
      if not l:find(" final=0", 1, true) then   -- not a retried attempt's own line
        traced[#traced + 1] = l:match("label=(%S+)") .. " " .. l:match("attempts=(%d+)")
      end
    end
    assert.are.same({ "200 1", "200 2", "5xx 1", "other 1" }, traced)
    assert.are.equal(table.concat({
      "200 200 attempts=1 #1 last=false",
      "200 200 attempts=2 #2 last=false",
      "5xx 500 attempts=1 #3 last=true",
      "other 404 #1 last=true", "" }, "\n"), r.stdout)
    assert.are.same({ "GET /v1/items -> 200", "GET /v1/items?cursor=c2 -> 503", "GET /v1/items?cursor=c2 -> 200",
                      "GET /v1/items?cursor=c3 -> 500", "GET /v1/gone -> 404" }, requests(log))
  end)

  it("raises a misused pages table at the flow's line, and api_node's own mistakes at the loop's, sending nothing", function()
    local cases = {
      { "{}", "api_pages: pages: give one of cursor, next_url or link" },
      { "{ link = true, next_url = \"a\" }", "api_pages: pages: give one of cursor, next_url or link" },
      { "{ links = true }", "api_pages: pages: unknown key 'links' (cursor, next_url, link, max_pages)" },
      { "{ link = false }", "api_pages: pages.link: expected true, got false" },
      { "{ next_url = \"a..b\" }", 'api_pages: pages.next_url: expected a path of keys like "meta.next_cursor", got "a..b"' },
      { "{ cursor = { param = \"c\" } }", 'api_pages: pages.cursor.from: expected a string (a path of keys like "meta.next_cursor"), got nil' },
      { "{ cursor = { param = \"\", from = \"a\" } }", "api_pages: pages.cursor.param: expected a query parameter's name (a string), got \"\"" },
      { "{ cursor = { param = \"c\", from = \"a\", stop = 1 } }", "api_pages: pages.cursor: unknown key 'stop' (param, from, start)" },
      { "{ link = true, max_pages = 0 }", "api_pages: pages.max_pages: expected an integer from 1 to 100000, got number" },
      { "nil", "api_pages: pages is required: { cursor = { param = ..., from = ... } }, { next_url = ... } or { link = true }" },
      { "\"x\"", "api_pages: pages: expected a table, got string" },
    }
    cases[#cases + 1] = { "{ link = true }", 'api_node: results: result labels must be lower case: "Timeout"', "Timeout" }
    local mock = helper.mock(CURSOR_ROUTES)
    local dir = helper.tmpdir()
    local ifile = helper.integrations({ shop = { base_url = mock.url .. "/v1" } }, dir)
    for _, c in ipairs(cases) do
      local flow = helper.flow("\nfor l, r, p in api_pages{ integration = 'shop', path = '/items', results = { '"
        .. (c[3] or "200") .. "' },\n  pages = " .. c[1] .. " } do end\n", dir)
      local r = helper.cli({ args = { "run", "-I", ifile, flow } })
      assert.are.equal(1, r.code, c[1])
      assert.matches("flow.lua:2: " .. c[2] .. "\n", r.stderr, 1, true)
    end
    assert.are.same({}, requests(mock:stop()))
  end)
end)

describe("flowrun check and api_pages", function()
  teardown(helper.cleanup)

  it("checks a literal api_pages{} spec: its pages and its api_node fields; a file that pages is a script", function()
    local dir = helper.tmpdir()
    helper.integrations({ shop = { base_url = "http://127.0.0.1:9/v1" } }, dir)
    helper.flow([[
for l, r, p in api_pages{ integration = "shop", path = "/items", results = { "200" }, pages = { link = true } } do end
for l, r, p in api_pages{ integration = "shpo", path = "/items", results = { "200" },
  pages = { cursor = { param = "c", from = ".x" }, max_pages = 1.5, link = true } } do end
for l, r, p in api_pages{ integration = "shop", path = "/items", results = { "200" } } do end
]], dir, "paged.lua")
    local r = helper.cli{ args = { "check", "paged.lua" }, cwd = dir }
    assert.are.equal(1, r.code, r.stderr)
    assert.are.equal(table.concat({
      'paged.lua:2: api_pages: pages.cursor.from: expected a path of keys like "meta.next_cursor", got ".x"',
      "paged.lua:2: api_pages: pages: give one of cursor, next_url or link",
      "paged.lua:2: api_pages: pages.max_pages: expected an integer from 1 to 100000, got number",
      "paged.lua:2: api_node: unknown integration 'shpo'",
      "paged.lua:4: api_pages: pages is required: { cursor = { param = ..., from = ... } }, { next_url = ... } or { link = true }",
      "1 file checked: 5 problems", "" }, "\n"), r.stdout)
  end)

  it("checks the pages and each of a declarative api step", function()
    local dir = helper.tmpdir()
    helper.integrations({ shop = { base_url = "http://127.0.0.1:9/v1" } }, dir)
    helper.flow([[
local flow = require "flowrun.flow"
return flow.define {
  start = "list",
  defaults = { other = flow.END, error = flow.END, timeout = flow.END, ["max-connection"] = flow.END },
  steps = {
    list = flow.api { integration = "shop", path = "/items", pages = { next_url = "links..next" },
                      each = "collect", on = { ["200"] = "more" } },
    more = flow.api { integration = "shop", path = "/more", each = function() end, on = { ["200"] = "list" } },
  },
}
]], dir, "paged.lua")
    local r = helper.cli{ args = { "check", "paged.lua" }, cwd = dir }
    assert.are.equal(1, r.code, r.stderr)
    assert.are.equal(table.concat({
      'paged.lua:6: step "list": pages.next_url: expected a path of keys like "meta.next_cursor", got "links..next"',
      'paged.lua:6: step "list": each: expected a function of a page\'s response, got string',
      'paged.lua:8: step "more": each: a step without pages has no pages to go through (add pages = {...})',
      "1 file checked: 3 problems", "" }, "\n"), r.stdout)
  end)
end)

-- A declarative flow that collects every page's items in session.items.
local DECLARATIVE = [[
local flow = require "flowrun.flow"
return flow.define {
  start = "list",
  defaults = { other = "sorry", error = "sorry", timeout = "sorry", ["max-connection"] = "sorry" },
  steps = {
    list = flow.api {
      integration = "shop", path = "/items",
      pages = { cursor = { param = "cursor", from = "meta.next_cursor" } },
      each = function(res, s, page)
        s.items = s.items or {}
        for _, it in ipairs(res.json.items) do s.items[#s.items + 1] = it end
        s.pages = page.number
      end,
      save = "last",
      on = { ["200"] = "done", ["5xx"] = "sorry" },
    },
    done = flow.say { text = function(s) return ("%d items in %d pages: %s (last %d)"):format(#s.items, s.pages,
      table.concat(s.items, ","), s.last.status) end },
    sorry = flow.say { text = function(s) return ("sorry: %s after %d pages"):format(s.last.status, s.pages or 0) end },
  },
}
]]

describe("a paged flow.api step", function()
  teardown(helper.cleanup)

  it("goes through the pages, calls each for every page and routes on the last page's label", function()
    local r, log = run(CURSOR_ROUTES, DECLARATIVE)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("5 items in 3 pages: 1,2,3,4,5 (last 200)\n", r.stdout)
    assert.are.equal(3, #requests(log))
    r = run({
      { path = "/v1/items", query = { cursor = "c2" }, status = 502 },
      { path = "/v1/items", json = { items = { 1, 2 }, meta = { next_cursor = "c2" } } },
    }, DECLARATIVE)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("sorry: 502 after 1 pages\n", r.stdout)   -- each is not called for the failing page
  end)

  it("is drawn by flowrun graph and covered by flowrun test --coverage (stubs answer each page)", function()
    local dir = helper.tmpdir()
    helper.integrations({ shop = { base_url = "http://127.0.0.1:9/v1" } }, dir)
    helper.flow(DECLARATIVE, dir, "paged.lua")
    local g = helper.cli{ args = { "graph", "paged.lua" }, cwd = dir }
    assert.are.equal(0, g.code, g.stderr)
    assert.matches('label="list\\nGET /items (pages)"', g.stdout, 1, true)
    assert.matches('"list" -> "done" [label="200"]', g.stdout, 1, true)
    helper.write(dir .. "/paged_test.lua", [[
return {
  flow = "paged.lua",
  integrations = "integrations.lua",
  stubs = {
    stub { integration = "shop", path = "/items", query = { cursor = "c2" },
           reply = { status = 200, json = { items = { 3 }, meta = { } } } },
    stub { integration = "shop", path = "/items", reply = { status = 200, json = { items = { 1, 2 }, meta = { next_cursor = "c2" } } } },
  },
  test "two pages" {
    label { "200", at = "list" },
    label { "200", at = "list" },
    bot "3 items in 2 pages: 1,2,3 (last 200)",
    done(),
  },
}
]])
    local r = helper.cli{ args = { "test", "--coverage", "paged_test.lua" }, cwd = dir }
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("ok 1 - paged_test.lua: two pages", r.stdout, 1, true)
    assert.matches("steps 2 of 3", r.stdout, 1, true)
  end)
end)

describe("api_pages with a store", function()
  teardown(helper.cleanup)

  local function events(stdout)
    local out = {}
    for line in stdout:gmatch("[^\n]+") do
      local ev = cjson.decode(line)
      if not ev.stored then out[#out + 1] = ev.say or ev.ask or ev["end"] end
    end
    return out
  end

  it("replays the pages already fetched from the journal and fetches only the rest", function()
    local mock = helper.mock(CURSOR_ROUTES)
    local dir = helper.tmpdir()
    local ifile = helper.integrations({ shop = { base_url = mock.url .. "/v1" } }, dir)
    local flow = helper.flow([[
local seen = {}
for label, res, page in api_pages{ integration = "shop", path = "/items", results = { "200" },
    pages = { cursor = { param = "cursor", from = "meta.next_cursor" } } } do
  seen[#seen + 1] = label .. ":" .. table.concat(res.json.items, ",")
  if page.number == 2 then ask("go on?") end
end
say("items " .. table.concat(seen, " "))
]], dir)
    local store = dir .. "/s.db"
    local r1 = helper.store_host(store, ifile, flow, '{"session":"u1","text":"x","n":1}\n')
    assert.are.equal(0, r1.code, r1.stderr)
    assert.are.same({ "go on?" }, events(r1.stdout))
    local r2 = helper.store_host(store, ifile, flow, '{"session":"u1","text":"yes","n":2}\n')
    assert.are.equal(0, r2.code, r2.stderr)
    assert.are.same({ "items 200:1,2 200:3,4 200:5", "done" }, events(r2.stdout))
    assert.are.same({ "GET /v1/items -> 200", "GET /v1/items?cursor=c2 -> 200", "GET /v1/items?cursor=c2b -> 200" },
                    requests(mock:stop()))
  end)
end)

describe("api_pages with a store, killed mid-loop", function()
  teardown(helper.cleanup)

  it("replays the pages it had and sends the one in flight again", function()
    local routes = { { path = "/v1/items", query = { cursor = "c2" }, times = 1, delay_ms = 5000,
                       json = { items = { 3, 4 }, meta = { next_cursor = "c2b" } } } }
    for _, r in ipairs(CURSOR_ROUTES) do routes[#routes + 1] = r end
    local mock = helper.mock(routes)
    local dir = helper.tmpdir()
    local ifile = helper.integrations({ shop = { base_url = mock.url .. "/v1" } }, dir)
    local flow = helper.flow([[
local seen = {}
for label, res, page in api_pages{ integration = "shop", path = "/items", results = { "200" },
    pages = { cursor = { param = "cursor", from = "meta.next_cursor" } } } do
  seen[#seen + 1] = table.concat(res.json.items, ",")
end
say("items " .. table.concat(seen, " "))
]], dir)
    local store = dir .. "/s.db"
    helper.write(dir .. "/in", '{"session":"u1","text":"x","n":1}\n')
    local env = helper.san and ("env -u LD_PRELOAD ASAN_OPTIONS=" .. os.getenv("SPEC_CHILD_ASAN_OPTIONS") .. " ") or ""
    local p = io.popen(env .. helper.quote(helper.flowrun) .. " host --store " .. helper.quote(store)
      .. " -I " .. helper.quote(ifile) .. " " .. helper.quote(flow) .. " <" .. dir .. "/in >" .. dir .. "/out1 2>&1 & echo $!")
    local pid = assert(tonumber(p:read("l")))
    p:close()
    -- page 1 has come (its journal entry is written as it comes), page 2 is held 5 s: kill
    assert.truthy(helper.wait_for(function() return mock:count("GET /v1/items -> 200") == 1 end, 20000))
    os.execute("sleep 0.5; kill -KILL " .. pid)
    helper.wait_for(function() return not io.open("/proc/" .. pid .. "/stat") end, 5000)
    assert.is_nil(helper.read(dir .. "/out1"):find('"say"'))     -- killed before page 2 came
    local r = helper.store_host(store, ifile, flow, "")
    assert.are.equal(0, r.code, r.stderr)
    local said = {}
    for line in r.stdout:gmatch("[^\n]+") do
      local ev = cjson.decode(line)
      said[#said + 1] = ev.say or ev["end"]
    end
    assert.are.same({ "items 1,2 3,4 5", "done" }, said)
    local log = mock:stop()
    local function count(needle) local n = 0 for l in log:gmatch("[^\n]+") do if l == needle then n = n + 1 end end return n end
    assert.are.equal(1, count("GET /v1/items -> 200"))           -- page 1: from the journal
    assert.are.equal(1, count("GET /v1/items?cursor=c2b -> 200"))
  end)
end)

describe("flowrun mock: a route's query", function()
  teardown(helper.cleanup)

  it("matches only a request whose query has those parameters with those values, compared decoded", function()
    local mock = helper.mock({
      { path = "/v1/q", query = { a = "x/y z", n = 2 }, body = "hit" },
      { path = "/v1/q", body = "miss" },
    })
    local rt = helper.runtime({ m = { base_url = mock.url .. "/v1" } })
    local function body(query)
      local _, res = rt:api_node{ integration = "m", path = "/q", query = query, results = { "200" } }
      return res.body
    end
    assert.are.equal("hit", body({ a = "x/y z", n = 2 }))            -- ?a=x%2Fy%20z&n=2
    assert.are.equal("hit", body({ { "n", "2" }, { "b", "1" }, { "a", "x/y z" } }))
    assert.are.equal("miss", body({ a = "x/y z" }))
    assert.are.equal("miss", body({ a = "x/y", n = 2 }))
    assert.are.equal("miss", body(nil))
    mock:stop()
    local file = helper.write(helper.tmpdir() .. "/routes.lua", helper.lua_source({ { path = "/", query = { a = {} } } }))
    local r = helper.cli{ args = { "mock", file, "--port", "0" }, timeout = 10 }
    assert.are.equal(2, r.code)
    assert.matches(file .. ": route 1: 'query' must map parameter names to strings", r.stderr, 1, true)
  end)
end)
