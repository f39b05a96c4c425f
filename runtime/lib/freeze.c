/*
** freeze.c -- what every session shares, read-only: frozen tables (the
** flow globals, the standard library, modules), read-only views of a
** host's tables, and the cache of modules each globals table required.
** quota.c asks it what is shared (not counted against one session).
*/
#include <stdbool.h>

#include <lua.h>
#include <lauxlib.h>

#include "freeze.h"

static const char fr_frozen_key = 'f';  /* marks a frozen table's metatable */
static const char modules_key = 'm';    /* a globals table's modules */

/* ---- read-only tables ---- */

/* __newindex of a frozen table; upvalue 1 names it. */
static int ro_newindex(lua_State *L) {
  const char *name = lua_tostring(L, lua_upvalueindex(1));
  if (lua_type(L, 2) == LUA_TSTRING)
    return luaL_error(L, "cannot set %s.%s: %s is read-only (every session shares it)",
                      name, lua_tostring(L, 2), name);
  return luaL_error(L, "cannot change %s: it is read-only (every session shares it)", name);
}

/* Pushes the hidden contents of the frozen table at 1. */
static void push_contents(lua_State *L) {
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "__index");
  lua_remove(L, -2);
}

/* The iterator of a frozen table: upvalue 1 is its hidden contents, which
** are never handed out (a flow given them could write to them). */
static int ro_next(lua_State *L) {
  lua_settop(L, 2);
  if (lua_next(L, lua_upvalueindex(1))) return 2;
  lua_pushnil(L);
  return 1;
}

static int ro_pairs(lua_State *L) {
  push_contents(L);
  lua_pushcclosure(L, ro_next, 1);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

static int ro_len(lua_State *L) {
  push_contents(L);
  lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
  return 1;
}

void fr_freeze(lua_State *L, int idx, const char *name) {
  int contents, mt;
  idx = lua_absindex(L, idx);
  lua_newtable(L);
  contents = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {            /* move every field out */
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, contents);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, idx);
  }
  lua_newtable(L);                      /* the old metatable's fields, and ours */
  mt = lua_gettop(L);
  if (lua_getmetatable(L, idx)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, mt);
    }
    lua_pop(L, 1);
  }
  if (lua_getfield(L, mt, "__index") != LUA_TNIL) {   /* it kept looking on */
    lua_createtable(L, 0, 1);
    lua_insert(L, -2);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, contents);
  } else
    lua_pop(L, 1);
  lua_pushvalue(L, contents);
  lua_setfield(L, mt, "__index");
  lua_pushstring(L, name);
  lua_pushcclosure(L, ro_newindex, 1);
  lua_setfield(L, mt, "__newindex");
  lua_pushcfunction(L, ro_pairs);
  lua_setfield(L, mt, "__pairs");
  lua_pushcfunction(L, ro_len);
  lua_setfield(L, mt, "__len");
  if (lua_getfield(L, mt, "__metatable") == LUA_TNIL) {
    lua_pushboolean(L, 0);
    lua_setfield(L, mt, "__metatable");
  }
  lua_pop(L, 1);
  lua_pushboolean(L, 1);
  lua_rawsetp(L, mt, &fr_frozen_key);
  lua_setmetatable(L, idx);
  lua_pop(L, 1);
}

bool fr_frozen(lua_State *L, int idx) {
  bool yes;
  if (!lua_getmetatable(L, idx)) return false;
  yes = lua_rawgetp(L, -1, &fr_frozen_key) != LUA_TNIL;
  lua_pop(L, 2);
  return yes;
}

/* ---- read-only views of a host's tables ----
** A table a host registers stays the host's to change; flows see it
** through a view: reads go through to it (tables in it come as views too),
** writes raise. The view of a table is made once (weak registry tables). */

static const char views_key = 'v';      /* registry: table -> its view */
static const char targets_key = 't';    /* registry: view -> its table */
static const char view_mt_key = 'w';    /* registry: the views' metatable */


/* Pushes the table behind the view at idx. */
static void push_target(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &targets_key);
  lua_pushvalue(L, idx);
  lua_rawget(L, -2);
  lua_remove(L, -2);
}

static int view_index(lua_State *L) {
  push_target(L, 1);
  lua_pushvalue(L, 2);
  if (lua_gettable(L, -2) == LUA_TTABLE) fr_push_view(L, -1);
  return 1;
}

static int view_newindex(lua_State *L) {
  return luaL_error(L, "cannot set %s: the host's table is read-only (every session shares it)",
                    luaL_tolstring(L, 2, NULL));
}

static int view_next(lua_State *L) {
  lua_settop(L, 2);
  if (!lua_next(L, lua_upvalueindex(1))) return 0;
  if (lua_istable(L, -1)) {
    fr_push_view(L, -1);
    lua_replace(L, -2);
  }
  return 2;
}

static int view_pairs(lua_State *L) {
  push_target(L, 1);
  lua_pushcclosure(L, view_next, 1);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

static int view_len(lua_State *L) {
  push_target(L, 1);
  lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
  return 1;
}

/* A weak-keyed table of the registry under key, made on first use. */
static void push_weak(lua_State *L, const char *key) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

void fr_push_view(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  push_weak(L, &views_key);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TTABLE) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  lua_newtable(L);                      /* the view: empty, for good */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &view_mt_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 8);
    lua_pushcfunction(L, view_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, view_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, view_pairs);
    lua_setfield(L, -2, "__pairs");
    lua_pushcfunction(L, view_len);
    lua_setfield(L, -2, "__len");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushboolean(L, 1);
    lua_rawsetp(L, -2, &fr_frozen_key);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &view_mt_key);
  }
  lua_setmetatable(L, -2);
  lua_pushvalue(L, idx);                /* views[t] = view */
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);
  push_weak(L, &targets_key);           /* targets[view] = t */
  lua_pushvalue(L, -2);
  lua_pushvalue(L, idx);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_remove(L, -2);
}

void fr_push_module_caches(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &modules_key);
}

void fr_open_module_caches(lua_State *L) {
  push_weak(L, &modules_key);
}
