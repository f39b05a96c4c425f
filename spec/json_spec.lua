-- The `json` module: exact numbers, [] that survives, a nesting limit no
-- flow can change; through the module, a real call, flows and the host.
local helper = require "spec.helper"
local cjson = require "cjson"

describe("json", function()
  local mock, rt, json, dir

  setup(function()
    mock = helper.mock({
      { path = "/echo", echo = true },
      { path = "/ids", headers = { ["Content-Type"] = "application/json" },
        body = '{"player_id":76561198000000001,"beyond":9223372036854775808,"score":0.1}' },
    })
    rt = helper.runtime({ bare = { base_url = mock.url } })
    json = require "json"
    dir = helper.tmpdir()
    helper.integrations({ bare = { base_url = mock.url } }, dir)
  end)

  teardown(helper.cleanup)

  -- Runs source as a flow on the command line; returns its result.
  local function cli(source, args)
    local flow = helper.flow(source, dir, "flow_" .. tostring(math.random(1e9)) .. ".lua")
    local argv = { flow }
    for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
    return helper.cli{ args = argv }
  end

  describe("integers", function()
    it("a 64-bit id goes out with all its digits and comes back the same integer", function()
      local label, res = rt:api_node{ integration = "bare", method = "POST", path = "/echo",
                                      body = { player_id = 76561198000000001 }, results = { "200" } }
      assert.are.equal("200", label, res.error)
      assert.are.equal('{"player_id":76561198000000001}', res.json.body)
      local back = json.decode(res.json.body).player_id
      assert.are.equal("integer", math.type(back))
      assert.are.equal(76561198000000001, back)
    end)

    it("a response's 64-bit id is that integer; one beyond 64 bits is a float", function()
      local _, res = rt:api_node{ integration = "bare", path = "/ids", results = { "200" } }
      assert.are.equal("integer", math.type(res.json.player_id))
      assert.are.equal(76561198000000001, res.json.player_id)
      assert.are.equal("float", math.type(res.json.beyond))
      assert.are.equal(2^63, res.json.beyond)
      assert.are.equal(0.1, res.json.score)
    end)

    it("the mock server's json routes are exact too, and know json.empty_array", function()
      local m = helper.mock({ { path = "/mocked",
        json = helper.code("{ player_id = 76561198000000001, items = json.empty_array }") } })
      local _, res = helper.runtime({ m = { base_url = m.url } }):api_node{
        integration = "m", path = "/mocked", results = { "200" } }
      assert.matches('"player_id":76561198000000001', res.body, 1, true)
      assert.matches('"items":[]', res.body, 1, true)
      assert.are.equal(76561198000000001, res.json.player_id)
    end)

    it("keeps the ends of the 64-bit range, and tells integers from floats by '.' and 'e'", function()
      assert.are.equal("[9223372036854775807,-9223372036854775808]",
                       json.encode({ math.maxinteger, math.mininteger }))
      local t = json.decode("[9223372036854775807,-9223372036854775808,-9223372036854775809,42,-0,1.0,1e2,9.5]")
      local types = {}
      for i, v in ipairs(t) do types[i] = math.type(v) end
      assert.are.same({ "integer", "integer", "float", "integer", "integer", "float", "float", "float" }, types)
      assert.are.equal(math.maxinteger, t[1])
      assert.are.equal(math.mininteger, t[2])
      assert.are.equal(100.0, t[7])
    end)
  end)

  describe("floats", function()
    it("are written in the fewest digits that read back as the same double", function()
      assert.are.equal("[0.1,0.3333333333333333,1e+300,0.30000000000000004,100.0,-0.0]",
                       json.encode({ 0.1, 1 / 3, 1e300, 0.1 + 0.2, 100.0, -0.0 }))
    end)

    it("round-trip exactly, each still a float", function()
      local tricky = { 0.1, 0.2, 0.3, 1 / 3, 2 / 3, 0.1 + 0.2, 1e300, 1e-300, 5e-324,
                       2.2250738585072014e-308, 1.7976931348623157e308, 123456.789, 1e21, 1e22,
                       2^53, 2^53 + 2, 2^63, -2^63, -1.5, math.pi, 100.0, 1e15, 1e16, 1e-7,
                       0.1 * 3, 4.35, 5e-7, 1 / 7 }
      local back = json.decode(json.encode(tricky))
      for i, x in ipairs(tricky) do
        assert.are.equal("float", math.type(back[i]), tostring(x))
        assert.is_true(back[i] == x, ("%.17g came back as %.17g"):format(x, back[i]))
      end
      assert.are.equal(-math.huge, 1 / json.decode(json.encode(-0.0)))
    end)

    it("NaN and infinity are refused with a clear error", function()
      for _, x in ipairs({ 0 / 0, math.huge, -math.huge }) do
        local ok, err = pcall(json.encode, { x = x })
        assert.is_false(ok)
        assert.matches("json.encode: cannot encode %-?%a+ %(JSON has no NaN or infinity%)", err)
      end
    end)
  end)

  describe("empty arrays", function()
    it("json.empty_array and a table with json.array_mt encode as []", function()
      assert.are.equal("[]", json.encode(json.empty_array))
      assert.are.equal('{"items":[]}', json.encode({ items = json.empty_array }))
      assert.are.equal("[]", json.encode(setmetatable({}, json.array_mt)))
      assert.are.equal("[1,2]", json.encode(setmetatable({ 1, 2, x = 3 }, json.array_mt)))
      assert.are.equal("{}", json.encode({}))
    end)

    it("a decoded [] encodes as [] again, a decoded {} as {}", function()
      assert.are.equal("[]", json.encode(json.decode("[]")))
      local t = json.decode('{"a":[],"b":{},"c":[1,[]]}')
      assert.are.equal(json.array_mt, getmetatable(t.a))
      assert.is_nil(getmetatable(t.b))
      assert.are.equal("[1,[]]", json.encode(t.c))
      assert.are.same({ a = {}, b = {}, c = { 1, {} } }, t)
    end)

    it("json.array_mt cannot be changed by a flow", function()
      local r = cli([[json.array_mt.__index = function() return "x" end]])
      assert.are.equal(1, r.code)
      assert.matches(":1: cannot set json.array_mt.__index: json.array_mt is read-only", r.stderr, 1, true)
      r = cli([[say(tostring(pcall(rawset, json.array_mt, "__index", print)))]])
      assert.are.equal("false\n", r.stdout)
    end)
  end)

  describe("strings", function()
    it("escapes control characters and '/'; \\u escapes decode to UTF-8", function()
      assert.are.equal('"a\\/b\\"\\\\\\u0001\\u007f\\n\\t"', json.encode("a/b\"\\\1\127\n\t"))
      assert.are.equal("😀 é \u{FFFD}x", json.decode('"\\ud83d\\ude00 \\u00e9 \\ud800x"'))
      assert.are.equal("\255 raw", json.decode('"\255 raw"'))
    end)
  end)

  describe("errors", function()
    it("a decoding error says what was expected, what came and where", function()
      local function err(text) return select(2, pcall(json.decode, text)) end
      assert.are.equal("Expected value but found invalid token at character 1", err("not json"))
      assert.are.equal("Expected comma or array end but found '2' at character 4", err("[1 2]"))
      assert.are.equal("Expected comma or array end but found byte 0x01 at character 3", err("[1\1]"))
      assert.are.equal("Expected value but found the end at character 4", err("[1,"))
      assert.are.equal("Expected colon but found the end at character 5", err('{"a"'))
      assert.are.equal("Unterminated string at character 2", err('["abc'))
      assert.are.equal("Invalid escape in string at character 2", err('"\\x"'))
      assert.are.equal("Expected the end but found 'x' at character 3", err("1 x"))
    end)

    it("an encoding error names what cannot be written", function()
      local function err(v) return select(2, pcall(json.encode, v)) end
      assert.are.equal("json.encode: cannot encode a function", err({ f = print }))
      assert.are.equal("json.encode: a table key must be a string or a number, not a boolean", err({ [true] = 1 }))
      assert.are.equal("json.encode: an excessively sparse array (index 20 with 1 values); "
                       .. "fill its holes with json.null", err({ [20] = 1 }))
      assert.are.equal("[1,2,null,4]", json.encode({ 1, 2, nil, 4 }))
      assert.are.equal('{"1":1,"x":2}', json.encode({ 1, x = 2 }))
    end)
  end)

  describe("nesting", function()
    it("100000 '[' are a clean error at a fixed limit of 1000", function()
      local ok, err = pcall(json.decode, ("["):rep(100000))
      assert.is_false(ok)
      assert.are.equal("Too deep: more than 1000 nested arrays and objects at character 1001", err)
      assert.is_true(pcall(json.decode, ("["):rep(1000) .. ("]"):rep(1000)))
    end)

    it("a cyclic or too deep table is an encoding error", function()
      local c = {}
      c.c = c
      local ok, err = pcall(json.encode, c)
      assert.is_false(ok)
      assert.are.equal("json.encode: tables nested deeper than 1000 (a table that contains itself?)", err)
    end)

    it("a flow cannot raise the limit: json has encode, decode, null, empty_array, array_mt, _VERSION", function()
      local r = cli([[
        local keys = {}
        for k in pairs(json) do keys[#keys + 1] = k end
        table.sort(keys)
        say(table.concat(keys, " "))
        pcall(function() json.decode_max_depth(1000000000) end)
        local ok, err = pcall(json.decode, ("["):rep(100000))
        say(tostring(ok) .. " " .. err)
      ]])
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("_VERSION array_mt decode empty_array encode null\n"
        .. "false Too deep: more than 1000 nested arrays and objects at character 1001\n", r.stdout)
    end)

    it("flowrun host answers a line of 1000000 '[' with an error and serves the next line", function()
      helper.flow([[
        local ok = pcall(function() json.decode_max_depth(1000000000) end)
        say("raised the limit: " .. tostring(ok))
      ]], dir, "deep.lua")
      local proc = helper.cli_piped({ "host", dir .. "/deep.lua" })
      proc:send('{"session":"a","text":"x"}')
      -- the deep line only once session a has tried to raise the limit
      assert.is_truthy(helper.wait_for(function() return proc:stdout():find('"say":"raised the limit', 1, true) end, 30000),
                       "no say of session a: " .. proc:stdout())
      proc:send(("["):rep(1000000))
      proc:send('{"session":"b","text":"y"}')
      local r = proc:finish()
      assert.are.equal(0, r.code, r.stderr)
      local events = {}
      for _, line in ipairs(helper.lines(r.stdout)) do events[#events + 1] = cjson.decode(line) end
      local errors, says = {}, {}
      for _, e in ipairs(events) do
        if e.error then errors[#errors + 1] = e.error end
        if e.say then says[#says + 1] = e.session .. ": " .. e.say end
      end
      assert.are.same({ "line 2: not JSON: Too deep: more than 1000 nested arrays and objects at character 1001" },
                      errors)
      assert.are.same({ "a: raised the limit: false", "b: raised the limit: false" }, says)
    end)
  end)
end)
