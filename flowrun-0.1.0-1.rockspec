-- flowrun's Lua module (flowrun.so) for LuaRocks, built by the Makefile:
--   luarocks --lua-version 5.4 make flowrun-0.1.0-1.rockspec
-- from a checkout (offline: nothing is downloaded). The version is that of
-- `flowrun --version` and CHANGELOG.md (spec/rockspec_spec.lua checks it).
rockspec_format = "3.0"
package = "flowrun"
version = "0.1.0-1"

source = {
  url = "git+https://example.invalid/flowrun.git",   -- the project's repository
  tag = "v0.1.0",
}

description = {
  summary = "Chat, game and automation flows in Lua that call HTTP APIs",
  detailed = [[
A runtime for flows written in Lua: api_node{...} calls a configured HTTP API
through libcurl and returns a result label ("200", "404", other, error,
timeout, max-connection) and the response; each end-user's session is a
coroutine, and many run at once on one event loop. This rock installs the
Lua module: require "flowrun" gives flowrun.new{...}, a runtime on the
caller's Lua state. See README.md.
]],
  license = "MIT",
  labels = { "http", "curl", "chatbot", "workflow" },
}

dependencies = {
  "lua >= 5.4, < 5.5",
}

-- lua-cjson's library and headers come with Lua's (Debian: lua-cjson-dev).
external_dependencies = {
  CURL = { library = "curl" },   -- its header may be in a multiarch directory LuaRocks does not search
}

build = {
  type = "make",
  build_target = "build/flowrun.so",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    CURL_INCDIR = "$(CURL_INCDIR)",
    CURL_LIBDIR = "$(CURL_LIBDIR)",
  },
  install_target = "install-rock",
  install_variables = {
    INST_LIBDIR = "$(LIBDIR)",
  },
}
