-- One source of truth for api_node's rules (runtime/lib/rules.c): every
-- misuse `flowrun check` finds in a literal api_node{} is the one api_node
-- raises when the flow runs, in the same words at the same line. Each case
-- runs through both paths: `flowrun run` and `flowrun check` on one file.
local helper = require "spec.helper"

describe("api_node's rules, one table for the runtime and flowrun check", function()
  local dir, ig_file

  setup(function()
    dir = helper.tmpdir()
    ig_file = helper.integrations({       -- nothing is ever sent: port 9 is never reached
      shop = {
        base_url = "http://127.0.0.1:9/v1",
        headers = { Accept = "application/json" },
        endpoints = {
          get = { method = "GET", path = "/orders/{id}" },
          up = { method = "GET", path = "/orders/../admin" },
        },
      },
    }, dir)
  end)

  teardown(helper.cleanup)

  -- { what, the fields of api_node{...} as Lua source, the message after "api_node: " }
  local S = 'integration = "shop", '
  local R = ', results = { "200" }'
  local cases = {
    { "an unknown field", S .. 'path = "/x", colour = "red"' .. R, "unknown field 'colour'" },
    { "integration not a string", 'integration = 1, path = "/x"' .. R,
      "integration: expected a string, got number" },
    { "endpoint not a string", "endpoint = true" .. R,
      'endpoint: expected "integration.endpoint", got boolean' },
    { "method not a string", S .. 'method = 1, path = "/x"' .. R, "method: expected a string, got number" },
    { "path not a string", S .. "path = 1" .. R, "path: expected a string, got number" },
    { "params not a table", S .. 'path = "/x", params = "id=1"' .. R, "params: expected a table, got string" },
    { "query not a table", S .. 'path = "/x", query = "a=1"' .. R, "query: expected a table, got string" },
    { "query_separator not a string", S .. 'path = "/x", query_separator = 1' .. R,
      'query_separator: expected "&" or ";", got number' },
    { "headers not a table", S .. 'path = "/x", headers = "Accept: */*"' .. R,
      "headers: expected a table, got string" },
    { "form not a table", S .. 'method = "POST", path = "/x", form = "a=1"' .. R,
      "form: expected a table, got string" },
    { "results not a table", S .. 'path = "/x", results = "200"', 'results: expected an array like {"200", "404"}, got string' },
    { "an endpoint without a dot", 'endpoint = "shop"' .. R, 'endpoint: expected "integration.endpoint", got "shop"' },
    { "an unknown integration", 'integration = "nope", path = "/x"' .. R, "unknown integration 'nope'" },
    { "an endpoint of an unknown integration", 'endpoint = "nope.get"' .. R, "unknown integration 'nope'" },
    { "an unknown endpoint", 'endpoint = "shop.nope"' .. R, "integration 'shop' has no endpoint 'nope'" },
    { "integration and endpoint disagree", 'integration = "other", endpoint = "shop.get", params = { id = 1 }' .. R,
      "integration 'other' and endpoint 'shop.get' disagree" },
    { "no integration nor endpoint", 'path = "/x"' .. R, "integration (or endpoint) is required" },
    { "an unknown method", S .. 'method = "FETCH", path = "/x"' .. R,
      'method: expected GET, POST, PUT, PATCH, DELETE or HEAD, got "FETCH"' },
    { "a method in lower case", S .. 'method = "get", path = "/x"' .. R,
      'method: expected GET, POST, PUT, PATCH, DELETE or HEAD, got "get"' },
    { "a method other than the endpoint's", 'endpoint = "shop.get", method = "POST", params = { id = 1 }' .. R,
      "method POST differs from endpoint 'get' (GET)" },
    { "path and endpoint", 'endpoint = "shop.get", path = "/x", params = { id = 1 }' .. R,
      "give path or endpoint, not both" },
    { "a .. segment in the path", S .. 'path = "/a/../b"' .. R,
      'path: "." and ".." segments are not allowed (a path stays under base_url)' },
    { "a space in the path", S .. 'path = "/a b"' .. R,
      "path: spaces, control characters and '#' are not allowed (percent-encode them, or give the value in params)" },
    { "a .. segment in the endpoint's path", 'endpoint = "shop.up"' .. R,
      "endpoint 'shop.up' path: \".\" and \"..\" segments are not allowed (a path stays under base_url)" },
    { "no results", S .. 'path = "/x"',
      'results is required and must include a success: a 2xx status like "200" or "201", or "2xx"' },
    { "a result that is not a string", S .. 'path = "/x", results = { "200", 404 }',
      'results[2]: expected a string like "200", got number' },
    { "a result label in upper case", S .. 'path = "/x", results = { "200", "Timeout" }',
      'results: result labels must be lower case: "Timeout"' },
    { "a status class in upper case", S .. 'path = "/x", results = { "200", "4XX" }',
      'results: result labels must be lower case: "4XX"' },
    { "an unknown result", S .. 'path = "/x", results = { "200", "gone" }',
      'results: unknown result "gone" (use a status like "404", a class like "4xx", or other, error, timeout, max-connection)' },
    { "results without a success", S .. 'path = "/x", results = { "404", "timeout" }',
      'results: must include a success: a 2xx status like "200" or "201", or "2xx"' },
    { "a zero timeout_ms", S .. 'path = "/x", timeout_ms = 0' .. R, "timeout_ms: expected a positive integer" },
    { "a fractional timeout_ms", S .. 'path = "/x", timeout_ms = 1.5' .. R, "timeout_ms: expected a positive integer" },
    { "a string timeout_ms", S .. 'path = "/x", timeout_ms = "300"' .. R, "timeout_ms: expected a positive integer" },
    { "a zero deadline_ms", S .. 'path = "/x", deadline_ms = 0' .. R, "deadline_ms: expected a positive integer" },
    { "a string deadline_ms", S .. 'path = "/x", deadline_ms = "300"' .. R, "deadline_ms: expected a positive integer" },
    { "a params key that is not a string", S .. 'path = "/x", params = { "a" }' .. R, "params: keys must be strings" },
    { "a table as a param", S .. 'path = "/orders/{id}", params = { id = {} }' .. R,
      "params.id: expected a string, number or boolean, got table" },
    { "an unknown query_separator", S .. 'path = "/x", query_separator = ","' .. R,
      'query_separator: expected "&" or ";", got ","' },
    { "a placeholder without a value", S .. 'path = "/orders/{id}"' .. R, "path placeholder {id} has no value in params" },
    { "a placeholder of the endpoint without a value", 'endpoint = "shop.get"' .. R,
      "path placeholder {id} has no value in params" },
    { "a header name that is not a string", S .. 'path = "/x", headers = { "Accept" }' .. R,
      "headers: names must be strings" },
    { "a header value that is a table", S .. 'path = "/x", headers = { ["X-A"] = {} }' .. R,
      "headers.X-A: expected a string, got table" },
    { "a space in a header name", S .. 'path = "/x", headers = { ["X A"] = "1" }' .. R,
      "headers.X A: header names are letters, digits and !#$%&'*+-.^_`|~" },
    { "an empty header name", S .. 'path = "/x", headers = { [""] = "1" }' .. R, "headers.: empty header name" },
    { "a Host header", S .. 'path = "/x", headers = { host = "elsewhere.invalid" }' .. R,
      "headers.host: flowrun sets it from base_url" },
    { "a Content-Length header", S .. 'method = "POST", path = "/x", body = { a = 1 }, headers = { ["Content-Length"] = "3" }' .. R,
      "headers.Content-Length: flowrun sets it from the body" },
    { "a Transfer-Encoding header", S .. 'path = "/x", headers = { ["Transfer-Encoding"] = "chunked" }' .. R,
      "headers.Transfer-Encoding: flowrun sets it from the body" },
    { "a Connection header", S .. 'path = "/x", headers = { Connection = "close" }' .. R,
      "headers.Connection: flowrun manages the connections (keep-alive, pool)" },
    { "a line break in a header value", S .. 'path = "/x", headers = { ["X-A"] = "a\\r\\nX-Evil: 1" }' .. R,
      "headers.X-A: CR, LF or NUL in a header value" },
    { "body and form", S .. 'method = "POST", path = "/x", body = { a = 1 }, form = { b = 2 }' .. R,
      "give body or form, not both" },
    { "a body on GET", S .. 'path = "/x", body = { a = 1 }' .. R, "a GET request cannot have a body" },
    { "a form on HEAD", S .. 'method = "HEAD", path = "/x", form = { a = 1 }' .. R, "a HEAD request cannot have a form" },
    { "a string body without a Content-Type", S .. 'method = "POST", path = "/x", body = "<a/>"' .. R,
      "a string body needs a Content-Type header (for example application/xml)" },
    { "a body that is a number", S .. 'method = "POST", path = "/x", body = 5' .. R,
      "body: expected a table or a string, got number" },
    -- not raised but a label: the call fails with error, reason header_conflict
    { "a header the integration sets otherwise", S .. 'path = "/x", headers = { accept = "text/plain" }' .. R,
      "header 'Accept' differs between the node and integration 'shop'", conflict = true },
  }

  -- The first line of what `flowrun run` says of the flow, and its exit code.
  local function run(path)
    local r = helper.cli{ args = { "run", "-I", ig_file, path } }
    return r.stderr:match("^[^\n]*") .. (r.stdout ~= "" and "|" .. r.stdout or ""), r.code
  end

  for i, case in ipairs(cases) do
    it(case[1], function()
      local node = "api_node{ " .. case[2] .. " }"
      local src = case.conflict
        and "local label, res = " .. node .. "\nsay(label .. ' ' .. res.reason .. ': ' .. res.error)\n"
        or node .. "\nsay('not reached')\n"
      local path = helper.flow(src, dir, ("case%d.lua"):format(i))
      local line = path .. ":1: api_node: " .. case[3]
      local checked = helper.cli{ args = { "check", "-I", ig_file, path } }
      assert.are.equal(line .. "\n1 file checked: 1 problem\n", checked.stdout)
      assert.are.equal(1, checked.code)
      local said, code = run(path)
      if case.conflict then
        assert.are.equal("|error header_conflict: " .. case[3] .. "\n", said)
        assert.are.equal(0, code)
      else
        assert.are.equal(line, said)
        assert.are.equal(1, code)
      end
    end)
  end

  it("a spec with none of these problems is checked clean and sent", function()
    local path = helper.flow('local label = api_node{ ' .. S .. 'path = "/x", results = { "200", "error" } }\nsay(label)\n',
                             dir, "clean.lua")
    local checked = helper.cli{ args = { "check", "-I", ig_file, path } }
    assert.are.equal("1 file checked: no problems\n", checked.stdout)
    local r = helper.cli{ args = { "run", "-I", ig_file, path } }
    assert.are.equal("error\n", r.stdout)   -- port 9 refuses the connection
  end)

  it("gives the table to tools: fields, methods, labels, messages and the sandbox allow-lists", function()
    local path = helper.flow([[
local rules = require("flowrun.runtime").rules()
local names = {}
for _, f in ipairs(rules.fields) do names[#names + 1] = f.name .. ":" .. (f.type or "-") end
say(table.concat(names, " "))
say(table.concat(rules.methods, " ") .. " / " .. rules.methods_text)
say(table.concat(rules.labels, " "))
local kinds = {}
for _, s in ipairs({ "404", "4xx", "timeout", "Timeout", "4XX", "40", "gone" }) do
  kinds[#kinds + 1] = s .. "=" .. tostring(rules.result_kind(s))
end
say(table.concat(kinds, " "))
say(rules.messages.unknown_field:format("x"))
say(table.concat(rules.sandbox.flows.primitives, " "))
say(table.concat(rules.sandbox.flows.libs, " ") .. " / " .. table.concat(rules.sandbox.flows.os, " "))
say(tostring(rules.path_problem("/a/./b")) .. " / " .. tostring(rules.header_problem("X-A", "1")))
-- each name of the allow-lists is what a flow has
local missing = {}
for _, k in ipairs(rules.sandbox.flows.primitives) do if _G[k] == nil then missing[#missing + 1] = k end end
for _, k in ipairs(rules.sandbox.flows.base) do if _G[k] == nil then missing[#missing + 1] = k end end
for _, k in ipairs(rules.sandbox.flows.libs) do if type(_G[k]) ~= "table" then missing[#missing + 1] = k end end
for _, k in ipairs(rules.sandbox.flows.os) do if type(os[k]) ~= "function" then missing[#missing + 1] = "os." .. k end end
say("missing: " .. table.concat(missing, " "))
]], dir, "rules.lua")
    local r = helper.cli{ args = { "run", "--allow", "package", path } }
    assert.are.equal(0, r.code, r.stderr)
    local said = {}
    for l in r.stdout:gmatch("[^\n]+") do said[#said + 1] = l end
    assert.are.same({
      "integration:string endpoint:string method:string path:string params:table query:table "
        .. "query_separator:string headers:table body:- form:table results:table timeout_ms:- "
        .. "deadline_ms:- multipart:table",
      "GET POST PUT PATCH DELETE HEAD / GET, POST, PUT, PATCH, DELETE or HEAD",
      "other error timeout max-connection",
      "404=code 4xx=class timeout=default Timeout=upper 4XX=upper 40=nil gone=nil",
      "unknown field 'x'",
      "api_node api_pages say ask sleep run_flow continue_as_new log json",
      "string table math utf8 coroutine / time clock date difftime",
      '"." and ".." segments are not allowed (a path stays under base_url) / nil',
      "missing: ",
    }, said)
  end)

  it("gives integrations files the globals of the allow-list, and no others", function()
    local igs = helper.integrations([[
local names = {}
for k in pairs(_ENV) do names[#names + 1] = k end
table.sort(names)
return { shop = { base_url = "http://127.0.0.1:9/" .. table.concat(names, "/") } }
]], helper.tmpdir())
    local path = helper.flow([[
local r = require("flowrun.runtime")
local list = { "env" }
for _, k in ipairs(r.rules().sandbox.integrations) do list[#list + 1] = k end
table.sort(list)
say(r.integrations().shop.base_url == "http://127.0.0.1:9/" .. table.concat(list, "/") and "same" or r.integrations().shop.base_url)
]], dir, "ig_globals.lua")
    local r = helper.cli{ args = { "run", "--allow", "package", "-I", igs, path } }
    assert.are.equal("same\n", r.stdout, r.stderr)
  end)
end)
