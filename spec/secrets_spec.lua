-- Secrets (values read through env()) never show, whatever spelling the
-- output gives them: percent-encoded in either hex case or with '+' for a
-- space, escaped in JSON (lua-cjson writes '/' as "\/"), quoted by the
-- REPL's printer, or cut short by it.
local helper = require "spec.helper"

-- A secret with every character that some encoding rewrites.
local SECRET = [[p/w"d\x y'z+Q]]

-- Every spelling of SECRET a test could find in output.
local function spellings(s)
  local function pct(upper)
    return (s:gsub("[^%w]", function(c)
      return (upper and "%%%02X" or "%%%02x"):format(c:byte())
    end))
  end
  local json = s:gsub('[\\"/]', { ["\\"] = "\\\\", ['"'] = '\\"', ["/"] = "\\/" })
  local lua = ("%q"):format(s):sub(2, -2)
  return {
    s, pct(true), pct(false), (pct(true):gsub("%%20", "+")), json,
    (json:gsub("\\/", "/")), lua,
    s:sub(1, 6), s:sub(-6),            -- a piece of it, as a cut string leaves
  }
end

local function assert_hidden(text, what)
  for _, form in ipairs(spellings(SECRET)) do
    local at = text:find(form, 1, true)
    assert.is_nil(at, ("%s shows the secret as %s:\n%s"):format(what, form, text))
  end
end

describe("secrets", function()
  local mock, other, dir

  setup(function()
    other = helper.mock({ { path = "/x", body = "x" } })
    mock = helper.mock({
      { path = "/echo", echo = true },
      { path = "/away-lower", status = 302,
        headers = { Location = other.url .. "/x?t=p%2fw%22d%5cx%20y%27z%2bQ" } },
      { path = "/away-plus", status = 302,
        headers = { Location = other.url .. "/x?t=p%2Fw%22d%5Cx+y%27z%2BQ" } },
    })
    dir = helper.tmpdir()
    helper.integrations(helper.lua_source({
      shop = {
        base_url = mock.url, follow_redirects = true,
        headers = { ["X-Key"] = helper.code('env("SPEC_SECRET")') },
      },
    }), dir)
  end)

  teardown(helper.cleanup)

  it("are hidden in every spelling on the command line: say, traces, res.url, res.error", function()
    local flow = helper.flow([[
      local secret = os.getenv("SPEC_SECRET")
      local label, res = api_node{ integration = "shop", method = "POST", path = "/echo",
        body = { token = secret }, results = { "200" } }
      say("echoed " .. res.body)
      say("as JSON " .. json.encode({ token = secret }))
      say("as Lua " .. ("%q"):format(secret))
      say("sent " .. tostring(res.json.headers["x-key"] == secret))
      for _, p in ipairs { "/away-lower", "/away-plus" } do
        label, res = api_node{ integration = "shop", path = p, results = { "200" } }
        say(p .. " " .. label .. " " .. res.reason .. " " .. res.error)
      end
    ]], dir)
    local tj = dir .. "/trace.jsonl"
    local r = helper.cli{ args = { "--trace", "--trace-json", tj, "--allow", "os", flow },
                          env = { SPEC_SECRET = SECRET } }
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("sent true", r.stdout, 1, true)
    assert.matches("/away-lower error redirect", r.stdout, 1, true)
    assert.matches("/away-plus error redirect", r.stdout, 1, true)
    assert.matches('"token":"***"', r.stdout, 1, true)
    assert_hidden(r.stdout, "stdout")
    assert_hidden(r.stderr, "stderr")
    assert_hidden(helper.read(tj) or "", "--trace-json")
  end)

  it("with backslashes of their own are hidden as written and escaped; 5000 backslashes that hold none are left alone", function()
    local flow = helper.flow([[
      local secret = os.getenv("SPEC_SECRET")
      say("raw " .. secret)
      say("json " .. json.encode({ secret }))
      say("json in json " .. json.encode({ json.encode({ secret }) }))
      say(("\\"):rep(5000) .. "y")          -- no secret, but every position could start one
    ]], dir)
    local secret = ("\\"):rep(12) .. "x\\\\y"
    local r = helper.cli{ args = { "--allow", "os", flow }, env = { SPEC_SECRET = secret }, timeout = 30 }
    assert.are.equal(0, r.code, r.stderr)
    local out = helper.lines(r.stdout)
    assert.are.equal("raw ***", out[1])
    assert.are.equal('json ["***"]', out[2])
    assert.are.equal('json in json ["[\\"***\\"]"]', out[3])
    assert.are.equal(("\\"):rep(5000) .. "y", out[4])
  end)

  it("are hidden in JSON that writes '/' as \\/ and a quote as \\u0027, escapes mixed as a server may", function()
    local flow = helper.flow([[
      local s = os.getenv("SPEC_SECRET")
      s = s:gsub("\\", "\\\\"):gsub('"', '\\"'):gsub("/", "\\/"):gsub("'", "\\u0027")
      say("mixed " .. s)
      say("slash only " .. os.getenv("SPEC_SECRET"):gsub("/", "\\/"))
    ]], dir)
    local r = helper.cli{ args = { "--allow", "os", flow }, env = { SPEC_SECRET = SECRET } }
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ "mixed ***", "slash only ***" }, helper.lines(r.stdout))
  end)

  it("are hidden through two levels of encoding, readings mixed: JSON in JSON, a URL in a URL, \\u escapes", function()
    local flow = helper.flow([[
      local s = os.getenv("SPEC_SECRET")
      local function pct(x) return (x:gsub("[^%w]", function(c) return ("%%%02X"):format(c:byte()) end)) end
      local function uesc(x)                 -- JSON as most writers do it: non-ASCII as \uXXXX
        local out = {}
        for _, cp in utf8.codes(x) do
          out[#out + 1] = cp < 0x80 and string.char(cp) or ("\\u%04x"):format(cp)
        end
        return table.concat(out)
      end
      say("1 " .. json.encode({ json.encode({ s }) }))
      say("2 " .. json.encode({ ("%q"):format(s) }))
      say("3 " .. pct(pct(s)))
      say("4 " .. uesc(s))
      say("5 " .. json.encode({ uesc(s) }))
    ]], dir)
    local secret = "C:\\Users\\%25x/pässwörd"
    local r = helper.cli{ args = { "--allow", "os", flow }, env = { SPEC_SECRET = secret } }
    assert.are.equal(0, r.code, r.stderr)
    local out = helper.lines(r.stdout)
    assert.are.equal(5, #out, r.stdout)
    for i, line in ipairs(out) do
      assert.is_nil(line:find("Users", 1, true), "line " .. i .. " shows the secret: " .. line)
      assert.is_nil(line:find("rd", 1, true), "line " .. i .. " shows the secret: " .. line)
    end
  end)

  it("are hidden in \\u escapes of non-ASCII in either hex case (Jackson writes \\u00E4)", function()
    local flow = helper.flow([[
      local s = os.getenv("SPEC_SECRET")
      local function uesc(x, fmt)            -- non-ASCII as \uXXXX, above U+FFFF as a pair
        local out = {}
        for _, cp in utf8.codes(x) do
          if cp < 0x80 then out[#out + 1] = string.char(cp)
          elseif cp < 0x10000 then out[#out + 1] = fmt:format(cp)
          else
            cp = cp - 0x10000
            out[#out + 1] = fmt:format(0xD800 + (cp >> 10)) .. fmt:format(0xDC00 + (cp & 0x3FF))
          end
        end
        return table.concat(out)
      end
      say("1 " .. uesc(s, "\\u%04X"))
      say("2 " .. json.encode({ uesc(s, "\\u%04X") }))
      say("3 " .. uesc(s, "\\u%04x"))
      say("4 " .. uesc(s, "\\u%04X"):gsub("E4", "e4"))
      say("5 " .. uesc("ä ÄBC", "\\u%04X"))  -- not the secret: stays as it is
    ]], dir)
    local r = helper.cli{ args = { "--allow", "os", flow }, env = { SPEC_SECRET = "pässwörd-\u{1F600}" } }
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ "1 ***", '2 ["***"]', "3 ***", "4 ***", "5 \\u00E4 \\u00C4BC" },
                    helper.lines(r.stdout))
  end)

  it("are hidden by the REPL's printer before it escapes or cuts a string, and by .last", function()
    local r = helper.cli{ args = { "repl", "-I", dir .. "/integrations.lua" },
                          env = { SPEC_SECRET = SECRET }, stdin = table.concat({
      'env("SPEC_SECRET")',
      'string.rep("x", 190) .. env("SPEC_SECRET")',
      '{ key = env("SPEC_SECRET"), [env("SPEC_SECRET")] = 1 }',
      'api_node{integration="shop", method="POST", path="/echo", body={token=env("SPEC_SECRET")}, results={"200"}}',
      '.last',
    }, "\n") .. "\n" }
    assert.are.equal(0, r.code, r.stderr)
    assert.matches('"***"', r.stdout, 1, true)
    assert.matches('"' .. ("x"):rep(190) .. '***"', r.stdout, 1, true)
    assert.matches("curl", r.stdout, 1, true)
    assert_hidden(r.stdout, "stdout")
    assert_hidden(r.stderr, "stderr")
  end)
end)
