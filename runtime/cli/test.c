/*
** test.c -- `flowrun test`: conversation tests of flows (README: Testing
** flows). The command is lua/flowrun/test.lua run in a plain Lua state
** with the Lua module, as a busted spec would run it: the tests are
** sessions of runtimes made with flowrun.new, on a virtual clock.
*/
#include <stdio.h>

#include <lauxlib.h>
#include <lualib.h>

#include "common.h"

int luaopen_flowrun(lua_State *L);
int luaopen_flowrun_test(lua_State *L);

int flowrun_test_main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  int status = 2;
  if (!L) {
    fprintf(stderr, "flowrun test: out of memory\n");
    return 2;
  }
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_flowrun);
  lua_setfield(L, -2, "flowrun");
  lua_pushcfunction(L, luaopen_flowrun_test);
  lua_setfield(L, -2, "flowrun.test");
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "flowrun.test");
  if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc, 0);
    for (int i = 0; i < argc; i++) {
      lua_pushstring(L, argv[i]);
      lua_rawseti(L, -2, i + 1);
    }
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) status = (int)luaL_optinteger(L, -1, 2);
  }
  if (status == 2 && lua_type(L, -1) == LUA_TSTRING)
    fprintf(stderr, "flowrun test: %s\n", lua_tostring(L, -1));
  fflush(stdout);
  lua_close(L);
  return status;
}
