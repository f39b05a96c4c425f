-- README: Testing. What make mutate relies on: build/embed_test runs only the
-- test functions EMBED_ONLY names, so an "embed" mutation with a filter
-- runs the tests that show its promise.
local helper = require "spec.helper"

describe("build/embed_test with EMBED_ONLY", function()
  local function run(only)
    return helper.sh("cd " .. helper.quote(helper.root) .. " && EMBED_ONLY=" .. helper.quote(only)
                     .. " build/embed_test")
  end

  it("runs just the functions it names, each whole", function()
    local out, code = run("busy_fd,stop_traced")
    assert.are.equal(0, code, out)
    assert.matches("\n3 passed, 0 failed\n$", out)
    assert.matches("two host fds that stay readable", out, 1, true)
    assert.matches("a trace callback cannot stop the session its call is of", out, 1, true)
  end)

  it("runs nothing for a name that is no function's, nor for a part of one", function()
    for _, only in ipairs({ "nope", "busy", "fd" }) do
      local out = run(only)
      assert.matches("^0 passed, 0 failed\n$", out)
    end
  end)
end)
