-- flowrun.nodespec -- what can be known about an api_node spec before it
-- is sent (README: A flow that branches on labels), for `flowrun check` and declarative flows.
--
-- The fields, their types, the methods, the labels, every message and the
-- checks of a path, a header and a result name are the runtime's own
-- (runtime/lib/rules.c, through require("flowrun.runtime").rules()), so
-- that a problem reads the same whether check finds it or api_node raises
-- it; the difference is that every problem is listed, not only the first.
-- A field may be unknown statically (a function of the session in a flow
-- step, or an expression `flowrun check` cannot evaluate): it is skipped,
-- and so is every rule that needs its value.

local nodespec = { _VERSION = "flowrun.nodespec 0.1.0" }

-- The value of a field that `flowrun check` could not evaluate.
nodespec.UNKNOWN = setmetatable({}, {
  __name = "flowrun.unknown",
  __tostring = function() return "(not a literal)" end,
})
local UNKNOWN = nodespec.UNKNOWN

local RULES = require("flowrun.runtime").rules()
local M = RULES.messages
nodespec.RULES = RULES

-- The fields of a spec, in the runtime's order, and each by name:
-- { name, type (absent: a rule of its own), want }.
nodespec.FIELDS = {}
local FIELD = {}
for i, f in ipairs(RULES.fields) do
  nodespec.FIELDS[i] = f.name
  FIELD[f.name] = f
end

local METHODS = {}
for _, m in ipairs(RULES.methods) do METHODS[m] = true end

-- The four labels every call may get, the last decided first (README: The labels).
nodespec.DEFAULT_LABELS = RULES.labels
local DEFAULT = {}
for _, k in ipairs(nodespec.DEFAULT_LABELS) do DEFAULT[k] = true end
nodespec.DEFAULT = DEFAULT

-- Is v known only when the flow runs?
local function dynamic(v) return v == UNKNOWN or type(v) == "function" end
nodespec.dynamic = dynamic

-- What a result name is: "code" ("404"), "class" ("4xx"), "default"
-- (other, error, timeout, max-connection), "upper" (one of those in the
-- wrong case), or nil (not a result name).
function nodespec.result_kind(s)
  if type(s) ~= "string" then return nil end
  return RULES.result_kind(s)           -- as api_node reads it
end

function nodespec.lower_case_problem(s)
  return M.lower_case:format(s)
end

function nodespec.unknown_result_problem(s)
  return M.unknown_result:format(s)
end

-- The optimal-string-alignment distance of a and b, capped: more than
-- `cap` edits is cap + 1.
local function distance(a, b, cap)
  if math.abs(#a - #b) > cap then return cap + 1 end
  local prev2, prev, cur = {}, {}, {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        cur[j] = math.min(cur[j], prev2[j - 2] + 1)
      end
    end
    prev2, prev = prev, cur
  end
  return prev[#b]
end

-- What is wrong with s as a switch label when it looks like a result label
-- spelt wrong, or nil: a status that is not three digits ("2000", "20x"), a
-- default label one edit away ("timout", "eror") or with other separators
-- ("max_connection", "time_out"). A switch label may be any other word.
function nodespec.misspelt_result(s)
  if type(s) ~= "string" or nodespec.result_kind(s) then return nil end
  if s:match("^[1-5][%dxX]+$") and #s <= 4 then
    return ('"%s" is not a status: a status is three digits like "404", a class like "4xx"'):format(s)
  end
  local low = s:lower()
  local squeezed = low:gsub("[%s_%-]", "")
  for _, label in ipairs(nodespec.DEFAULT_LABELS) do
    if squeezed == label:gsub("%-", "") or distance(low, label, 1) <= 1 then
      return ('"%s" looks like the result label "%s" misspelt'):format(s, label)
    end
  end
  return nil
end

nodespec.MISSING_200 = M.missing_success

local function typename(v)
  if v == UNKNOWN then return "an expression" end
  return type(v)
end

-- Problems of a results array, each prefixed with what ("results").
function nodespec.results_problems(list, what, out)
  out = out or {}
  if type(list) ~= "table" then
    out[#out + 1] = M.results_array:format(what, typename(list))
    return out
  end
  local has200 = false
  for i, s in ipairs(list) do
    if s == UNKNOWN then
      has200 = true                     -- cannot tell: say nothing
    elseif type(s) ~= "string" then
      out[#out + 1] = M.result_type:format(what, i, typename(s))
    else
      local kind = nodespec.result_kind(s)
      if kind == "upper" then
        out[#out + 1] = what .. ": " .. nodespec.lower_case_problem(s)
      elseif not kind then
        out[#out + 1] = what .. ": " .. nodespec.unknown_result_problem(s)
      end
      if s == "2xx" or (kind == "code" and s:match("^2%d%d$")) then has200 = true end
    end
  end
  if not has200 then out[#out + 1] = what .. ": " .. nodespec.MISSING_200 end
  return out
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  return keys
end
nodespec.sorted_keys = sorted_keys

local function is_scalar(v)
  local t = type(v)
  return t == "string" or t == "number" or t == "boolean"
end

-- Why api_node refuses a header or a literal path, or nil: the runtime's
-- own checks.
local header_problem, path_problem = RULES.header_problem, RULES.path_problem

-- Does the literal headers table name header `name` (any case)? true, false,
-- or nil when it cannot be told.
local function has_header(headers, name)
  if headers == nil then return false end
  if type(headers) ~= "table" or headers == UNKNOWN then return nil end
  for k in pairs(headers) do
    if type(k) == "string" and k:lower() == name:lower() then return true end
  end
  return false
end

-- problems(spec, opts) -> an array of messages in api_node's words (without
-- its "api_node: " prefix). opts:
--   integrations     the table of flowrun.runtime's integrations(); absent:
--                    nothing that needs an integration is checked
--   header_conflict  flowrun.runtime's header_conflict(ig, name, value)
--   no_results       the spec's results are checked elsewhere (flow steps)
--   no_fields        its unknown fields are checked elsewhere (flow steps)
--   hint             appended to "unknown integration" (none are loaded)
-- Also returns what it learnt: { ig = the integration table, method, path }.
function nodespec.problems(spec, opts)
  opts = opts or {}
  local out, igs = {}, opts.integrations
  local function add(fmt, ...) out[#out + 1] = fmt:format(...) end
  local function want(k)
    local v, f = spec[k], FIELD[k]
    if v ~= nil and not dynamic(v) and type(v) ~= f.type then
      add(M.field_type, k, f.want, typename(v))
      return false
    end
    return v ~= nil and not dynamic(v)
  end
  if not opts.no_fields then
    for _, k in ipairs(sorted_keys(spec)) do
      if not FIELD[k] then add(M.unknown_field, tostring(k)) end
    end
  end

  -- the integration, endpoint, method and path
  local ig, ep, ig_name
  local learnt = {}
  if want("endpoint") then
    local s = spec.endpoint
    local name, epname = s:match("^([^.]*)%.(.*)$")
    if not name then
      add(M.endpoint_form, s)
    elseif igs then
      ig_name = name
      ig = igs[name]
      if not ig then
        add(M.unknown_integration, name, "")
      else
        ep = ig.endpoints and ig.endpoints[epname]
        if not ep then add(M.no_endpoint, name, epname) end
      end
    else
      ig_name = name
    end
  end
  if want("integration") then
    local s = spec.integration
    if ig_name and ig_name ~= s then
      add(M.disagree, s, spec.endpoint)
    elseif not ig_name and igs then
      ig = igs[s]
      if not ig then add(M.unknown_integration, s, opts.hint or "") end
    end
  end
  if spec.integration == nil and spec.endpoint == nil then
    add(M.target_required)
  end
  local method = ep and ep.method or (spec.endpoint == nil and "GET" or nil)
  if dynamic(spec.endpoint) then method = nil end
  if want("method") then
    local m = spec.method
    if not METHODS[m] then
      add(M.bad_method, RULES.methods_text, m)
      method = nil
    elseif ep and ep.method ~= m then
      add(M.method_differs, m, spec.endpoint:match("%.(.*)$"), ep.method)
    else
      method = m
    end
  elseif spec.method ~= nil then
    method = nil
  end
  local path = ep and ep.path or nil
  if want("path") then path = spec.path end
  if spec.path ~= nil and spec.endpoint ~= nil then add(M.path_and_endpoint) end
  if dynamic(spec.path) then path = nil end
  local why = path and path_problem(path)
  if why and spec.path ~= nil then
    add(M.path_problem, why)
  elseif why then
    add(M.endpoint_path_problem, spec.endpoint, why)
  end
  learnt.ig, learnt.method, learnt.path = ig, method, path

  -- results and timeout
  if not opts.no_results then
    if spec.results == nil then
      add(M.results_required, M.missing_success)
    elseif not dynamic(spec.results) then
      if type(spec.results) ~= FIELD.results.type then
        add(M.field_type, "results", FIELD.results.want, typename(spec.results))
      else
        nodespec.results_problems(spec.results, "results", out)
      end
    end
  end
  local ms = spec.timeout_ms
  if ms ~= nil and not dynamic(ms)
     and not (type(ms) == "number" and math.tointeger(ms) and ms >= 1 and ms <= 0x7fffffff) then
    add(M.timeout_ms)
  end
  ms = spec.deadline_ms
  if ms ~= nil and not dynamic(ms)
     and not (type(ms) == "number" and math.tointeger(ms) and ms >= 1 and ms <= 0x7fffffff) then
    add(M.deadline_ms)
  end

  -- params and the path's placeholders
  local params = spec.params
  if want("params") then
    for _, k in ipairs(sorted_keys(params)) do
      local v = params[k]
      if type(k) ~= "string" then
        add(M.keys_strings, "params")
      elseif not dynamic(v) and not is_scalar(v) then
        add(M.scalar, "params", k, typename(v))
      end
    end
  end
  if want("query_separator") then
    local q = spec.query_separator
    if q ~= "&" and q ~= ";" then add(M.query_separator, q) end
  end
  if path and (params == nil or type(params) == "table" and params ~= UNKNOWN) then
    local seen = {}
    for name in path:gmatch("{([^}]*)}") do
      if not seen[name] and (params == nil or params[name] == nil) then
        add(M.placeholder, name)
      end
      seen[name] = true
    end
  end
  want("query")

  -- headers, and their conflicts with the integration's
  local headers = spec.headers
  if want("headers") then
    for _, k in ipairs(sorted_keys(headers)) do
      local v = headers[k]
      if type(k) ~= "string" then
        add(M.header_names)
      elseif not dynamic(v) and type(v) ~= "string" and type(v) ~= "number" then
        add(M.header_type, k, typename(v))
      else
        local why = header_problem(k, v)
        if why then
          add(M.header_problem, k, why)
        elseif ig and type(v) ~= "table" and v ~= UNKNOWN and type(v) ~= "function"
               and opts.header_conflict then
          local ig_header = opts.header_conflict(ig.name, k, tostring(v))
          if ig_header then
            add(M.header_conflict, ig_header, ig.name)
          end
        end
      end
    end
  end

  -- body and form
  local body, form = spec.body, spec.form
  if body ~= nil and form ~= nil then add(M.body_and_form) end
  if method == "GET" or method == "HEAD" then
    if body ~= nil then add(M.no_body, method, "body")
    elseif form ~= nil then add(M.no_body, method, "form") end
  end
  if body ~= nil and not dynamic(body) then
    if type(body) == "string" then
      local node = has_header(headers, "Content-Type")
      local of_ig = ig and has_header(ig.headers, "Content-Type")
      if node == false and of_ig == false then
        add(M.string_body)
      end
    elseif type(body) ~= "table" then
      add(M.body_type, typename(body))
    end
  end
  want("form")

  -- multipart (rules.c's part_problem for each part known statically)
  local mp = spec.multipart
  if mp ~= nil then
    if body ~= nil then add(M.multipart_and_body, "body")
    elseif form ~= nil then add(M.multipart_and_body, "form") end
    if method == "GET" or method == "HEAD" then add(M.no_body, method, "multipart") end
    if type(headers) == "table" and headers ~= UNKNOWN then
      for _, k in ipairs(sorted_keys(headers)) do
        if type(k) == "string" and k:lower() == "content-type" then add(M.multipart_content_type, k) end
      end
    end
  end
  if want("multipart") and mp ~= UNKNOWN then
    local n = 0
    for _ in pairs(mp) do n = n + 1 end
    if n == 0 or n ~= #mp then
      add(M.multipart_array)
    else
      for i, part in ipairs(mp) do
        local known = not dynamic(part)
        if known and type(part) == "table" then
          for _, v in pairs(part) do if dynamic(v) then known = false end end
        end
        local why = known and RULES.part_problem(part)
        if why then add(M.multipart_part, i, why) end
      end
    end
  end
  return out, learnt
end

-- pages_problems(pages) -> an array of messages in api_pages's words
-- (without its "api_pages: " prefix) about the pages table of an
-- api_pages spec or of a paged flow.api step (README: Pagination): the
-- rules of runtime/lib/pages.c, which raises the first of them.
local PAGES_KEYS = { cursor = true, next_url = true, link = true, max_pages = true }
local CURSOR_KEYS = { param = true, from = true, start = true }
local JSON_PATH_WANT = 'a string (a path of keys like "meta.next_cursor")'

local function what(v)
  if type(v) == "boolean" then return tostring(v) end
  return typename(v)
end

function nodespec.pages_problems(pages)
  local out = {}
  local function add(fmt, ...) out[#out + 1] = fmt:format(...) end
  local function json_path(v, field)
    if dynamic(v) then return end
    if type(v) ~= "string" then
      add(M.field_type, field, JSON_PATH_WANT, what(v))
    elseif v == "" or v:find("^%.") or v:find("%.%.") or v:find("%.$") then
      add(M.pages_json_path, field, v)
    end
  end
  if pages == nil then
    add(M.pages_required)
    return out
  end
  if dynamic(pages) then return out end
  if type(pages) ~= "table" then
    add(M.field_type, "pages", "a table", what(pages))
    return out
  end
  for _, k in ipairs(sorted_keys(pages)) do
    if not PAGES_KEYS[k] then add(M.pages_unknown, "pages", tostring(k), "cursor, next_url, link, max_pages") end
  end
  local modes = 0
  local c = pages.cursor
  if c ~= nil then
    modes = modes + 1
    if dynamic(c) then
      -- known when the flow runs
    elseif type(c) ~= "table" then
      add(M.field_type, "pages.cursor", "a table { param = ..., from = ... }", what(c))
    else
      for _, k in ipairs(sorted_keys(c)) do
        if not CURSOR_KEYS[k] then add(M.pages_unknown, "pages.cursor", tostring(k), "param, from, start") end
      end
      if not dynamic(c.param) and (type(c.param) ~= "string" or c.param == "") then
        add(M.field_type, "pages.cursor.param", "a query parameter's name (a string)",
            c.param == "" and '""' or what(c.param))
      end
      json_path(c.from, "pages.cursor.from")
      local t = c.start
      if t ~= nil and not dynamic(t) and type(t) ~= "string" and type(t) ~= "number" then
        add(M.field_type, "pages.cursor.start", "a string or a number", what(t))
      end
    end
  end
  if pages.next_url ~= nil then
    modes = modes + 1
    json_path(pages.next_url, "pages.next_url")
  end
  if pages.link ~= nil then
    modes = modes + 1
    if pages.link ~= true and not dynamic(pages.link) then
      add(M.field_type, "pages.link", "true", what(pages.link))
    end
  end
  if modes ~= 1 then add(M.pages_one) end
  local max = pages.max_pages
  if max ~= nil and not dynamic(max) then
    local n = type(max) == "number" and math.tointeger(max)
    if not n or n < 1 or n > 100000 then
      add(M.field_type, "pages.max_pages", "an integer from 1 to 100000", what(max))
    end
  end
  return out
end

return nodespec
