-- A call object is reused once its response is handed over (README: Layout
-- and dependencies: call.c). Handing it over allocates, so a finalizer may
-- run meanwhile; one that calls api_node itself (outside a session: the
-- Lua module's rt:api_node, the REPL) must get a call of its own, never the
-- one being handed over.
local helper = require "spec.helper"

describe("a call handed over while a finalizer calls api_node", function()
  local mock

  setup(function()
    mock = helper.mock({ { path = "/v1/big", body = string.rep("x", 3000000) },
                         { path = "/v1/ok", body = "ok" } })
  end)

  teardown(function()
    mock:stop()
    helper.cleanup()
  end)

  it("keeps its own response, and both calls end", function()
    local dir = helper.tmpdir()
    -- the reproducer as it was reported (its allocations put a finalizer in
    -- the handing over: Lua 5.4.6, generational mode); the URL is the mock's
    local h6 = helper.read(helper.root .. "/spec/fixtures/finalizer_api_node.lua")
    local script = helper.write(dir .. "/h6.lua", (h6:gsub("PORT", mock.port):gsub("BUILD", helper.root .. "/build")))
    local out, code = helper.sh("lua5.4 " .. helper.quote(script) .. " 2>&1")
    assert.are.equal(0, code, out)
    assert.matches("inner call inside a finalizer: 200 " .. mock.url:gsub("%p", "%%%0") .. "/v1/ok\n", out)
    assert.matches("outer:\t200\turl:\t" .. mock.url:gsub("%p", "%%%0") .. "/v1/big\t#body:\t3000000\n", out)
  end)
end)
