/*
** query.c -- query strings from Lua tables, for api_node's query, params
** and form and for an integration's query. Two forms: a map (keys sorted,
** arrays repeat the key) or a list of pairs (order kept).
*/
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <lauxlib.h>

#include "query.h"
#include "rules.h"

/* Pushes the string form of a query or params value; raises otherwise. */
const char *fr_query_value(lua_State *L, int idx, const char *what, const char *key) {
  int t = lua_type(L, idx);
  if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
    luaL_error(L, fr_messages[M_SCALAR], what, key, luaL_typename(L, idx));
  return luaL_tolstring(L, idx, NULL);
}

/* The length of the table at idx when its keys are exactly 1..n, else -1:
** what is not an array would be dropped without a word. */
static lua_Integer array_len(lua_State *L, int idx) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx), count = 0;
  bool ok = true;
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    count++;
    if (ok && (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1
               || lua_tointeger(L, -1) > n))
      ok = false;
  }
  return ok && count == n ? n : -1;
}

/* Appends "k=v" (percent-encoded) to the array at -3, keeping count in *n.
** Expects the key string at -2 and the value string at -1; pops both. */
static void add_pair(lua_State *L, int *n) {
  char *k = curl_easy_escape(NULL, lua_tostring(L, -2), (int)lua_rawlen(L, -2));
  char *v = curl_easy_escape(NULL, lua_tostring(L, -1), (int)lua_rawlen(L, -1));
  if (!k || !v) { curl_free(k); curl_free(v); luaL_error(L, "not enough memory"); }
  lua_pushfstring(L, "%s=%s", k, v);
  curl_free(k);
  curl_free(v);
  lua_rawseti(L, -4, ++*n);
  lua_pop(L, 2);
}

void fr_query_pairs(lua_State *L, int idx, const char *what) {
  int n = 0, out, keys, nk = 0, i;
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    luaL_error(L, "%s: expected a table, got %s", what, luaL_typename(L, idx));
  lua_newtable(L);
  out = lua_gettop(L);
  if (lua_rawgeti(L, idx, 1) == LUA_TTABLE) {   /* { {"k", v}, ... } */
    int len = (int)array_len(L, idx);
    if (len < 0)
      luaL_error(L, "%s: a list of pairs {{\"k\", v}, ...} cannot have other keys "
                 "(use either a list of pairs or a map {k = v})", what);
    for (i = 1; i <= len; i++) {
      lua_settop(L, out);
      lua_rawgeti(L, idx, i);
      if (!lua_istable(L, -1) || array_len(L, -1) != 2
          || lua_rawgeti(L, -1, 1) != LUA_TSTRING)
        luaL_error(L, "%s[%d]: expected a pair like {\"tag\", \"a\"}", what, i);
      lua_pushvalue(L, out);
      lua_pushvalue(L, -2);
      lua_rawgeti(L, out + 1, 2);
      fr_query_value(L, -1, what, lua_tostring(L, -2));
      lua_remove(L, -2);
      add_pair(L, &n);
    }
    lua_settop(L, out);
    return;
  }
  lua_newtable(L);                      /* the keys, sorted */
  keys = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "%s: keys must be strings (or use the list form {{\"k\", v}, ...})", what);
    lua_pushvalue(L, -1);
    lua_rawseti(L, keys, ++nk);
  }
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "sort");
  lua_pushvalue(L, keys);
  lua_call(L, 1, 0);
  for (i = 1; i <= nk; i++) {
    int k, v;
    lua_settop(L, keys);
    lua_rawgeti(L, keys, i);
    k = lua_gettop(L);
    lua_pushvalue(L, k);
    lua_gettable(L, idx);
    v = lua_gettop(L);
    if (lua_istable(L, v)) {            /* tag = {"a", "b"}: repeat the key */
      int len = (int)array_len(L, v);
      if (len < 0)
        luaL_error(L, "%s.%s: expected a string, number, boolean or an array of them, "
                   "got a table that is not an array", what, lua_tostring(L, k));
      for (int j = 1; j <= len; j++) {
        lua_pushvalue(L, out);
        lua_pushvalue(L, k);
        lua_rawgeti(L, v, j);
        fr_query_value(L, -1, what, lua_tostring(L, k));
        lua_remove(L, -2);
        add_pair(L, &n);
        lua_pop(L, 1);
      }
    } else {
      lua_pushvalue(L, out);
      lua_pushvalue(L, k);
      fr_query_value(L, v, what, lua_tostring(L, k));
      add_pair(L, &n);
      lua_pop(L, 1);
    }
  }
  lua_settop(L, out);
}

