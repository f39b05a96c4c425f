-- What the shared objects export: libflowrun.so the functions flowrun.h
-- declares, flowrun.so only luaopen_flowrun. The library's internal
-- symbols (fr_*, LABEL_*) are hidden, so a host cannot come to depend on
-- them and they cannot clash with a host's own.
local helper = require "spec.helper"

local function exported(lib)
  local out, code = helper.sh("nm -D --defined-only " .. helper.quote(helper.root .. "/build/" .. lib))
  assert.are.equal(0, code, out)
  local names = {}
  for name in out:gmatch("%x+ [TDBRV] ([%w_]+)") do names[#names + 1] = name end
  table.sort(names)
  return names
end

-- every function flowrun.h declares, and whether each is marked FLOWRUN_API
local function declared()
  local names, unmarked = {}, {}
  local header = helper.read(helper.root .. "/runtime/flowrun.h")
  for line in header:gmatch("[^\n]+") do
    local name = line:match("^[%a_][%w_ %*]-%f[%w_](flowrun_[%w_]+)%(")
    if name then
      names[#names + 1] = name
      if not line:match("^FLOWRUN_API ") then unmarked[#unmarked + 1] = name end
    end
  end
  table.sort(names)
  return names, unmarked
end

describe("exports", function()
  it("flowrun.h marks every function it declares FLOWRUN_API", function()
    local names, unmarked = declared()
    assert.is_true(#names >= 25, "found " .. #names .. " declarations")
    assert.are.same({}, unmarked)
  end)

  it("libflowrun.so exports the functions of flowrun.h and nothing else", function()
    assert.are.same((declared()), exported("libflowrun.so.0"))
  end)

  it("flowrun.so, the Lua module, exports its two loaders only: flowrun and flowrun.test", function()
    assert.are.same({ "luaopen_flowrun", "luaopen_flowrun_test" }, exported("flowrun.so"))
  end)
end)
