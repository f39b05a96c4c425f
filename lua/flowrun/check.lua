-- flowrun.check -- `flowrun check FLOW.lua...`: validate without calling
-- anything.
--
-- A declarative flow (a file returning flow.define{}) is checked whole:
-- every routing rule (README: Declarative flows), its api steps against the integrations,
-- its "flow:" targets (which are checked in turn), and the warnings
-- (unreachable steps, cycles that would spin, in one file or across the
-- files of "flow:" targets). An imperative script is
-- checked for syntax, and each api_node{} (or api_pages{}) table written
-- literally in it is checked field by field: what is not a literal is skipped.
--
-- One line per problem on stdout, then a summary. Exit status: 0 no
-- problems (warnings allowed), 1 problems, 2 a file could not be read.

local flow = require "flowrun.flow"
local lex = require "flowrun.lex"
local loader = require "flowrun.loader"
local nodespec = require "flowrun.nodespec"
local validate = require "flowrun.validate"

local check = { _VERSION = "flowrun.check 0.1.0" }

local UNKNOWN = nodespec.UNKNOWN

-- ---- literal api_node{} tables in a script ----

local LITERAL_WORDS = { ["true"] = true, ["false"] = true, ["nil"] = true,
                        ["and"] = true, ["or"] = true, ["not"] = true }

-- Is the expression in toks[i..j] made of literals only?
local function literal(toks, i, j)
  for k = i, j do
    local t = toks[k]
    if t.type == "keyword" and not LITERAL_WORDS[t.text] then return false end
    if t.text == "..." then return false end
    if t.type == "name" then
      local nxt = toks[k + 1]
      -- a key in a nested table constructor: { name = ... }
      local is_key = nxt and nxt.text == "=" and k > i
        and (toks[k - 1].text == "{" or toks[k - 1].text == "," or toks[k - 1].text == ";")
      if not is_key then return false end
    end
  end
  return true
end

-- The value of the literal expression toks[i..j] of src, or UNKNOWN.
local function evaluate(src, toks, i, j)
  if j < i or not literal(toks, i, j) then return UNKNOWN end
  local f = load("return " .. src:sub(toks[i].s, toks[j].e), "=literal", "t", {})
  if not f then return UNKNOWN end
  local ok, v = pcall(f)
  if ok then return v end
  return UNKNOWN
end

local OPEN = { ["{"] = "}", ["("] = ")", ["["] = "]" }

-- The index of the token closing the bracket at toks[i].
local function closing(toks, i)
  local depth = 0
  for k = i, #toks do
    local t = toks[k].text
    if toks[k].type == "op" then
      if OPEN[t] then depth = depth + 1
      elseif t == "}" or t == ")" or t == "]" then
        depth = depth - 1
        if depth == 0 then return k end
      end
    end
  end
  return nil
end

-- The spec of the table constructor toks[i] ("{") .. toks[j] ("}"): its
-- literal fields with their values, the others UNKNOWN.
local function table_spec(src, toks, i, j)
  local spec, n, k = {}, 0, i + 1
  while k < j do
    -- one field: up to the next "," or ";" at this depth
    local e, depth = k, 0
    while e < j do
      local t = toks[e]
      if t.type == "op" and OPEN[t.text] then depth = depth + 1
      elseif t.type == "op" and (t.text == "}" or t.text == ")" or t.text == "]") then depth = depth - 1
      elseif depth == 0 and t.type == "op" and (t.text == "," or t.text == ";") then break end
      e = e + 1
    end
    local last = e - 1
    if last >= k then
      local t1, t2 = toks[k], toks[k + 1]
      if t1.type == "name" and t2 and t2.text == "=" then
        spec[t1.text] = evaluate(src, toks, k + 2, last)
      elseif t1.text == "[" then
        local close = closing(toks, k)
        local key = close and evaluate(src, toks, k + 1, close - 1)
        if key ~= nil and key ~= UNKNOWN and toks[close + 1] and toks[close + 1].text == "=" then
          spec[key] = evaluate(src, toks, close + 2, last)
        end
      else
        n = n + 1
        spec[n] = evaluate(src, toks, k, last)
      end
    end
    k = e + 1
  end
  return spec
end

-- The api_node{} and api_node({}) calls of src whose argument is a table
-- constructor, and those of api_pages: { line, spec, name }.
local CALLS = { api_node = true, api_pages = true }
function check.literal_calls(src)
  local toks, calls = lex.tokens(src), {}
  for i, t in ipairs(toks) do
    local prev = toks[i - 1]
    if t.type == "name" and CALLS[t.text] and not (prev and prev.text == ".") then
      local a, b = toks[i + 1], toks[i + 2]
      local open
      if a and a.text == "{" then open = i + 1
      elseif a and a.text == "(" and b and b.text == "{" then open = i + 2 end
      local close = open and closing(toks, open)
      if close and (a.text == "{" or (toks[close + 1] and toks[close + 1].text == ")")) then
        calls[#calls + 1] = { line = t.line, spec = table_spec(src, toks, open, close), name = t.text }
      end
    end
  end
  return calls
end

-- ---- the command ----

local USAGE = "usage: flowrun check [-I FILE] FLOW.lua...\n"

local function plural(n, word)
  return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end

-- check.files(paths, opts) -> lines, errors, warnings, unreadable, nfiles.
-- opts: integrations, header_conflict, hint (as validate.problems).
function check.files(paths, opts)
  local lines, errors, warnings, unreadable = {}, 0, 0, {}
  -- files are queued once by their normalized name (flow.normalize), so
  -- that flows reaching each other through "flow:" targets end
  local queue, queued, sources, defs, flows = {}, {}, {}, {}, {}
  local function enqueue(p)
    local key = flow.normalize(p)
    if not queued[key] then
      queued[key] = true
      queue[#queue + 1] = p
    end
  end
  for _, p in ipairs(paths) do enqueue(p) end
  local function source(file)
    if sources[file] == nil then
      local f = io.open(file, "rb")
      sources[file] = f and f:read("a") or false
      if f then f:close() end
    end
    return sources[file] or nil
  end
  local function report(text, warning)
    lines[#lines + 1] = text
    if warning then warnings = warnings + 1 else errors = errors + 1 end
  end
  local i = 1
  while queue[i] do
    local path = queue[i]
    i = i + 1
    local r = loader.load(path)
    if r.source then sources[path] = r.source end
    if r.kind == "unreadable" then
      unreadable[#unreadable + 1] = r.msg
    elseif r.kind == "error" then
      report(r.msg)
    elseif r.kind == "flow" then
      local key = flow.normalize(path)
      defs[key] = r.def
      flows[#flows + 1] = key
      local popts = {
        integrations = opts.integrations, header_conflict = opts.header_conflict,
        hint = opts.hint, warnings = true, source = source,
        flow_target = function(file, target)
          local other = loader.load(file)
          if other.kind ~= "flow" then return loader.not_a_flow(other, target, file) end
          enqueue(file)
        end,
      }
      for _, p in ipairs(validate.problems(r.def, popts)) do report(flow.format(p), p.warning) end
    else
      for _, call in ipairs(check.literal_calls(r.source)) do
        local spec = call.spec
        if call.name == "api_pages" then  -- its pages, then its api_node fields
          for _, msg in ipairs(nodespec.pages_problems(spec.pages)) do
            report(("%s:%d: api_pages: %s"):format(path, call.line, msg))
          end
          spec = {}
          for k, v in pairs(call.spec) do if k ~= "pages" then spec[k] = v end end
        end
        for _, msg in ipairs((nodespec.problems(spec, opts))) do
          report(("%s:%d: api_node: %s"):format(path, call.line, msg))
        end
      end
    end
  end
  for _, p in ipairs(validate.spin_across(flows, defs, source)) do report(flow.format(p), true) end
  return lines, errors, warnings, unreadable, #queue
end

-- main(args) -> exit status
function check.main(args)
  local paths = {}
  for _, a in ipairs(args) do
    if a == "-h" or a == "--help" then
      io.write(USAGE)
      return 0
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      io.stderr:write(("flowrun check: unknown option '%s'\n%s"):format(a, USAGE))
      return 2
    end
    paths[#paths + 1] = a
  end
  if #paths == 0 then
    io.stderr:write("flowrun check: no flow file given\n" .. USAGE)
    return 2
  end
  local rt = require "flowrun.runtime"
  local igs = rt.integrations()
  local lines, errors, warnings, unreadable, n = check.files(paths, {
    integrations = igs,
    header_conflict = rt.header_conflict,
    hint = next(igs) == nil and " (no integrations are loaded: use -I FILE)" or nil,
  })
  for _, l in ipairs(lines) do io.write(l, "\n") end
  for _, msg in ipairs(unreadable) do io.stderr:write("flowrun check: cannot read ", msg, "\n") end
  if n == #unreadable then return 2 end        -- nothing was checked: the errors say all
  local summary = ("%s checked: "):format(plural(n - #unreadable, "file"))
  if errors == 0 and warnings == 0 then
    summary = summary .. "no problems"
  else
    summary = summary .. plural(errors, "problem")
    if warnings > 0 then summary = summary .. ", " .. plural(warnings, "warning") end
  end
  io.write(summary, "\n")
  io.stdout:flush()
  if #unreadable > 0 then return 2 end
  return errors > 0 and 1 or 0
end

return check
