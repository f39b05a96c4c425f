-- The rockspec: `luarocks make` from a copy of the work tree installs the
-- Lua module into a tree of its own (offline: the Makefile builds it), and a
-- plain lua5.4 that looks only in that tree runs a flow with it against a
-- mock server on 127.0.0.1. Its version is flowrun's (--version, CHANGELOG).
-- Needs luarocks (Debian's package; `make deps` installs it): outside CI a
-- machine without it skips, in CI (CI=true) its absence is a failure.
local helper = require "spec.helper"

local ROCKSPEC = "flowrun-0.1.0-1.rockspec"

local sh = helper.sh

-- A plain build and a plain lua5.4, whatever started the specs: no
-- sanitizer runtime preloaded, no SAN=1 or make's own variables from
-- `make test` reaching the Makefile that luarocks runs.
local plain = "env -u LD_PRELOAD -u SAN -u MAKEFLAGS -u MFLAGS -u MAKELEVEL "

local function have_luarocks()
  return select(2, sh("command -v luarocks")) == 0
end

describe("the rockspec", function()
  teardown(helper.cleanup)

  it("has flowrun's version: flowrun --version and CHANGELOG.md's newest release", function()
    local files = sh("cd " .. helper.quote(helper.root) .. " && ls *.rockspec")
    assert.are.equal(ROCKSPEC .. "\n", files)
    local spec = {}
    assert(loadfile(helper.root .. "/" .. ROCKSPEC, "t", spec))()
    assert.are.equal("flowrun", spec.package)
    assert.are.equal(ROCKSPEC, spec.package .. "-" .. spec.version .. ".rockspec")
    local version = spec.version:match("^(.-)%-%d+$")
    assert.are.equal("v" .. version, spec.source.tag)
    local out = sh(helper.quote(helper.flowrun) .. " --version")
    assert.are.equal("flowrun " .. version .. " ", out:match("^flowrun %S+ "))
    local changelog = helper.read(helper.root .. "/CHANGELOG.md")
    assert.are.equal(version, changelog:match("\n## (%d+%.%d+%.%d+)"))
    assert.are.equal("make", spec.build.type)
    assert.is_table(spec.external_dependencies.CURL)
  end)

  it("luarocks make installs the module, and a flow runs with it from that tree alone", function()
    if not have_luarocks() then
      if os.getenv("CI") == "true" then
        error("luarocks is not installed, and CI must run this spec (make deps installs it)")
      end
      pending("luarocks is not installed (apt-get install luarocks, or make deps)")
      return
    end
    local d = helper.tmpdir()
    local src, tree = d .. "/src", d .. "/tree"
    -- the work tree as git sees it (tracked and new files, not build/)
    local out, code = sh("mkdir " .. helper.quote(src) .. " && cd " .. helper.quote(helper.root)
      .. " && git ls-files -z --cached --others --exclude-standard | xargs -0 tar cf - | tar xf - -C "
      .. helper.quote(src))
    assert.are.equal(0, code, out)
    out, code = sh("cd " .. helper.quote(src) .. " && " .. plain .. "luarocks --lua-version 5.4 --tree "
      .. helper.quote(tree) .. " make " .. ROCKSPEC)
    assert.are.equal(0, code, out)
    assert.matches("flowrun 0.1.0-1 is now installed in " .. tree, out, 1, true)
    assert.truthy(helper.read(tree .. "/lib/lua/5.4/flowrun.so"), "no lib/lua/5.4/flowrun.so in the tree")

    local mock = helper.mock({ { path = "/v1/hello", json = { greeting = "hi" } } })
    helper.write(d .. "/hello.lua", [[
      local label, res = api_node{ integration = "shop", path = "/hello", results = { "200" } }
      say(label .. " " .. res.status .. " " .. res.json.greeting)
    ]])
    local host = helper.write(d .. "/host.lua", ([[
      package.path = ""
      package.cpath = %q
      local flowrun = require "flowrun"
      local rt = flowrun.new{ integrations = { shop = { base_url = %q } } }
      rt:start("u1", %q)
      assert(rt:run(10000), "the session did not end")
      for _, e in ipairs(rt:events()) do
        if e.type == "say" then print("say: " .. e.text) end
        if e.type == "end" then print("end: " .. tostring(e.ok) .. " " .. tostring(e.error)) end
      end
      print(package.searchpath("flowrun", package.cpath))
      rt:close()
    ]]):format(tree .. "/lib/lua/5.4/?.so", mock.url .. "/v1", d .. "/hello.lua"))
    out, code = sh(plain .. "lua5.4 " .. helper.quote(host))
    assert.are.equal(0, code, out)
    assert.are.equal("say: 200 200 hi\nend: true nil\n" .. tree .. "/lib/lua/5.4/flowrun.so\n", out)
    assert.are.equal(1, mock:count("GET /v1/hello"))
  end)
end)
