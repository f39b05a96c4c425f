-- The README is the reference (its first paragraph says so): code, specs and
-- scripts cite its sections as "README: Section", and never a document that
-- is not in the repository a user clones.
local helper = require "spec.helper"

local root = helper.root

-- The text files of the repository that may cite, by path from the root.
local function files()
  local list = {}
  local p = io.popen("cd " .. helper.quote(root) .. " && find runtime lua spec scripts"
    .. " bench docs .ci Makefile README.md CHANGELOG.md -type f"
    .. " \\( -name '*.[ch]' -o -name '*.lua' -o -name '*.md' -o -name '*.sh'"
    .. " -o -name '*.mjs' -o -name Makefile -o -name run \\) | sort")
  for path in p:lines() do
    if path ~= "spec/docs_spec.lua" then list[#list + 1] = path end
  end
  p:close()
  return list
end

-- The README's section names: the text of each heading outside code blocks,
-- and its part before a colon ("flowrun host: many end-users ..." is cited
-- as "flowrun host").
local function sections()
  local names, fenced = {}, false
  for line in helper.read(root .. "/README.md"):gmatch("[^\n]*") do
    if line:match("^```") then fenced = not fenced
    elseif not fenced and line:match("^#+ ") then
      local name = line:gsub("^#+ ", "")
      names[#names + 1] = name
      if name:find(":", 1, true) then names[#names + 1] = name:match("^(.-):") end
    end
  end
  return names
end

describe("README: the reference", function()
  it("the tree finds its files and the README its sections", function()
    assert.is_true(#files() > 50)
    local names = sections()
    assert.is_true(#names > 20)
    for _, want in ipairs { "The labels", "flowrun host", "Sandbox and limits", "Embedding" } do
      local found = false
      for _, n in ipairs(names) do found = found or n == want end
      assert(found, "README has no section " .. want)
    end
  end)

  it("nothing cites a contract outside the repository (a section sign, SPEC N, SPEC.md)", function()
    local bad = {}
    local section_sign = "\194\167"
    for _, path in ipairs(files()) do
      local n = 0
      for line in helper.read(root .. "/" .. path):gmatch("[^\n]*") do
        n = n + 1
        if line:find(section_sign, 1, true) or line:find("SPEC %d") or line:find("SPEC%.md")
            or line:find("shared/SPEC", 1, true) then
          bad[#bad + 1] = ("%s:%d: %s"):format(path, n, line)
        end
      end
    end
    assert.are.same({}, bad)
  end)

  it('each "README: Section" names a section the README has', function()
    local names, bad, count = sections(), {}, 0
    for _, path in ipairs(files()) do
      local lines = {}
      for line in helper.read(root .. "/" .. path):gmatch("[^\n]*") do lines[#lines + 1] = line end
      for i, line in ipairs(lines) do
        local cited = line:match("README: (.*)")
        if cited then
          count = count + 1
          -- a citation may go on in the next comment line
          local next_line = (lines[i + 1] or ""):gsub("^%s*[-*#/]*%s*", "")
          cited = cited .. " " .. next_line
          local ok = false
          for _, name in ipairs(names) do ok = ok or cited:sub(1, #name) == name end
          if not ok then bad[#bad + 1] = ("%s:%d: README: %s"):format(path, i, line:match("README: (.*)")) end
        end
      end
    end
    assert.is_true(count > 20)
    assert.are.same({}, bad)
  end)
end)
