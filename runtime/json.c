/*
** json.c -- the `json` module of flows: lua-cjson with integers.
**
** lua-cjson 2.1.0 (Debian's) decodes every number as a float, so an id 42
** would print as "42.0". json.decode here turns each integral number that
** a double holds exactly (|n| <= 2^53) back into a Lua integer; the rest of
** the module is lua-cjson's own (encode, null, the cfg functions).
*/
#include "internal.h"
#include <lua-cjson.h>

#define EXACT 9007199254740992.0        /* 2^53 */

/* Replaces integral floats in the value at idx (a table tree) in place. */
static void integers(lua_State *L, int idx, int depth) {
  if (depth > 1000 || !lua_checkstack(L, 4)) return;  /* cjson's own limit */
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -1) == LUA_TTABLE)
      integers(L, lua_gettop(L), depth + 1);
    else if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
      lua_Number n = lua_tonumber(L, -1);
      if (n == (lua_Number)(lua_Integer)n && n <= EXACT && n >= -EXACT) {
        lua_pushvalue(L, -2);
        lua_pushinteger(L, (lua_Integer)n);
        lua_rawset(L, idx);
      }
    }
    lua_pop(L, 1);
  }
}

/* json.decode(text) -> value */
static int l_decode(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  if (lua_type(L, -1) == LUA_TTABLE) integers(L, lua_gettop(L), 0);
  else if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
    lua_Number n = lua_tonumber(L, -1);
    if (n == (lua_Number)(lua_Integer)n && n <= EXACT && n >= -EXACT)
      lua_pushinteger(L, (lua_Integer)n);
  }
  return 1;
}

/* Opens the module; also what require "json" returns. */
int fr_open_json(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "flowrun.json") == LUA_TTABLE) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, luaopen_cjson);   /* a fresh instance: our config */
  lua_call(L, 0, 1);
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, -3)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_getfield(L, -2, "decode");
  lua_pushcclosure(L, l_decode, 1);
  lua_setfield(L, -2, "decode");
  lua_remove(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "flowrun.json");
  lua_remove(L, -2);
  return 1;
}
