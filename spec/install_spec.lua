-- make install and what it gives a C host or a packager: the shared
-- library with its soname, flowrun.pc for pkg-config, DESTDIR staging and
-- make uninstall. spec/embed_test.c is built exactly as the README says,
-- `cc host.c $(pkg-config --cflags --libs flowrun)`, against an installed
-- prefix, and run.
local helper = require "spec.helper"

local sh = helper.sh

local function make(args)
  return sh("make -s -C " .. helper.quote(helper.root) .. " " .. args)
end

describe("make install", function()
  teardown(helper.cleanup)

  it("installs a library a C host builds against with pkg-config, and make uninstall removes it", function()
    local prefix = helper.tmpdir()
    local out, code = make("install PREFIX=" .. helper.quote(prefix))
    assert.are.equal(0, code, out)
    local pc = helper.read(prefix .. "/lib/pkgconfig/flowrun.pc")
    assert.matches("prefix=" .. prefix:gsub("%p", "%%%0") .. "\n", pc)
    out = sh("readelf -d " .. helper.quote(prefix .. "/lib/libflowrun.so.0"))
    assert.matches("SONAME%)%s+Library soname: %[libflowrun%.so%.0%]", out)
    local flags
    flags, code = sh("PKG_CONFIG_PATH=" .. helper.quote(prefix .. "/lib/pkgconfig")
                     .. " pkg-config --cflags --libs flowrun")
    assert.are.equal(0, code, flags)
    local exe = prefix .. "/embed_test"
    local san = helper.san and " -fsanitize=address,undefined" or ""
    out, code = sh("cc -o " .. helper.quote(exe) .. " " .. helper.quote(helper.root .. "/spec/embed_test.c")
                   .. " " .. flags:gsub("\n", "") .. san .. " -Wl,-rpath," .. helper.quote(prefix .. "/lib"))
    assert.are.equal(0, code, out)
    out = sh("ldd " .. helper.quote(exe))
    assert.matches(prefix:gsub("%p", "%%%0") .. "/lib/libflowrun%.so%.0", out)
    out, code = sh("cd " .. helper.quote(helper.root) .. " && " .. (helper.san and "env -u LD_PRELOAD " or "")
                   .. helper.quote(exe) .. " " .. helper.quote(prefix .. "/bin/flowrun"))
    assert.are.equal(0, code, out)
    assert.matches("\n%d+ passed, 0 failed\n", out)
    out, code = make("uninstall PREFIX=" .. helper.quote(prefix))
    assert.are.equal(0, code, out)
    out = sh("cd " .. helper.quote(prefix) .. " && find . -type f -o -type l | grep -v '^./embed_test$' | sort")
    assert.are.equal("", out)
  end)

  it("stages into DESTDIR for a packager, with the final PREFIX in flowrun.pc", function()
    local dest = helper.tmpdir()
    local out, code = make("install DESTDIR=" .. helper.quote(dest) .. " PREFIX=/usr")
    assert.are.equal(0, code, out)
    out = sh("cd " .. helper.quote(dest) .. " && find . -type f -o -type l | sort")
    assert.are.equal(table.concat({
      "./usr/bin/flowrun", "./usr/include/flowrun.h", "./usr/lib/libflowrun.a",
      "./usr/lib/libflowrun.so", "./usr/lib/libflowrun.so.0", "./usr/lib/lua/5.4/flowrun.so",
      "./usr/lib/pkgconfig/flowrun.pc", "./usr/share/flowrun/meta/flow_globals.lua",
      "./usr/share/flowrun/meta/flowrun.lua", "./usr/share/flowrun/meta/flowrun/flow.lua",
      "./usr/share/man/man1/flowrun.1", "" }, "\n"), out)
    for _, f in ipairs { "flow_globals.lua", "flowrun.lua", "flowrun/flow.lua" } do   -- the editor annotations
      assert.are.equal(helper.read(helper.root .. "/lua/meta/" .. f), helper.read(dest .. "/usr/share/flowrun/meta/" .. f))
    end
    local man = helper.read(dest .. "/usr/share/man/man1/flowrun.1")
    assert.matches('^%.TH FLOWRUN 1 "" "flowrun ', man)
    for _, sub in ipairs { "run", "host", "repl", "check", "graph", "mock" } do
      assert.matches("\n.SS " .. sub .. "\n.nf\nusage: flowrun ", man, 1, true)
    end
    assert.matches("\\-\\-limit NAME=N", man, 1, true)    -- what --help says, escaped for roff
    assert.matches("^prefix=/usr\nlibdir=${prefix}/lib\n", helper.read(dest .. "/usr/lib/pkgconfig/flowrun.pc"))
    out, code = make("uninstall DESTDIR=" .. helper.quote(dest) .. " PREFIX=/usr")
    assert.are.equal(0, code, out)
    assert.are.equal("", (sh("cd " .. helper.quote(dest) .. " && find . -type f -o -type l")))
    assert.are.equal(1, select(2, sh("test -d " .. helper.quote(dest .. "/usr/share/flowrun"))))
  end)
end)
