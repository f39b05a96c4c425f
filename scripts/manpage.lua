-- scripts/manpage.lua -- flowrun(1) from the one source of the usage: what
-- `flowrun --help` and `flowrun SUBCOMMAND --help` print.
-- usage: lua5.4 scripts/manpage.lua build/flowrun > build/flowrun.1
local exe = assert(arg[1], "usage: manpage.lua FLOWRUN")

local function help(args)
  local p = assert(io.popen(("%q %s 2>&1"):format(exe, args)))
  local text = p:read("a")
  assert(p:close(), exe .. " " .. args .. " failed")
  return text
end

-- roff: backslashes and hyphens escaped, no line read as a request
local function roff(text)
  local out = {}
  for line in text:gmatch("([^\n]*)\n") do
    line = line:gsub("\\", "\\e"):gsub("%-", "\\-")
    if line:match("^[.']") then line = "\\&" .. line end
    out[#out + 1] = line
  end
  return table.concat(out, "\n")
end

local version = help("--version"):match("^flowrun (%S+)")
local main = help("--help")
local usage, options = main:match("^(.-)\noptions:\n(.-)\nexit status:")
assert(usage and options, "flowrun --help changed its shape")
local page = {
  ('.TH FLOWRUN 1 "" "flowrun %s" "User Commands"'):format(version),
  ".SH NAME",
  "flowrun \\- run chat, game and automation flows in Lua that call HTTP APIs",
  ".SH SYNOPSIS", ".nf", roff(usage .. "\n"), ".fi",
  ".SH DESCRIPTION",
  "flowrun runs flows written in Lua 5.4. A flow calls HTTP APIs through api_node and",
  "branches on the result label it returns. Many end-users' sessions run at once, each in",
  "a sandbox with limits. The README of the project is the full reference.",
  ".SH OPTIONS", ".nf", roff(options .. "\n"), ".fi",
  ".SH SUBCOMMANDS",
}
for _, sub in ipairs { "run", "host", "serve", "repl", "check", "graph", "mock" } do
  page[#page + 1] = ".SS " .. sub
  page[#page + 1] = ".nf"
  page[#page + 1] = roff(help(sub .. " --help"))
  page[#page + 1] = ".fi"
end
page[#page + 1] = ".SH EXIT STATUS"
page[#page + 1] = "0 done, 1 a session raised an error (or output could not be written),"
page[#page + 1] = "2 usage or configuration error, 3 the store failed while it ran (a full disk)."
page[#page + 1] = ".SH SEE ALSO"
page[#page + 1] = "lua(1), curl(1)"
io.write(table.concat(page, "\n"), "\n")
