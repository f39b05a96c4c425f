/*
** sandbox.c -- what a flow can reach.
**
** Many end-users' sessions share one Lua state, so what a flow sees is an
** allow-list, by category, as in Redis's scripting and Roblox's Luau: the
** flow globals (api_node, say, ask, ...), the safe base functions, string,
** table, math, utf8, coroutine, the time functions of os, json, text-only
** load and a require of Lua files run in the same sandbox. No io, no os
** beyond time, no debug, no package, no string.dump, no finalizers.
**
** What every session shares is read-only: the library tables are copies
** frozen in place (their contents move to a hidden table behind __index,
** writes raise, rawset refuses them, their metatable is protected), and so
** are json, log, flowrun.flow and the string metatable. A flow can change
** its own globals only: its globals table falls back, through a protected
** metatable, to the flow globals.
**
** A host grants more on purpose: flowrun_allow() adds a library (io, os,
** debug, package), flowrun_register() a function of its own.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "base.h"
#include "freeze.h"
#include "integration.h"
#include "quota.h"
#include "rules.h"
#include "runtime.h"
#include "pages.h"
#include "sandbox.h"
#include "session.h"

static const char loading_key = 'l';    /* a module being loaded */
static const char real_require_key = 'r';

/* ---- the sandbox's own versions of base functions ---- */

/* rawset(t, k, v), refusing a shared table. */
static int sb_rawset(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkany(L, 2);
  luaL_checkany(L, 3);
  if (fr_frozen(L, 1))
    return luaL_error(L, "rawset: the table is read-only (every session shares it)");
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 1;
}

/* setmetatable(t, mt), refusing __gc: a finalizer runs where no limit can
** stop it, in whichever session the collector happens to run. */
static int sb_setmetatable(lua_State *L) {
  int t = lua_type(L, 2);
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
  if (t == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, 2) != LUA_TNIL)
      return luaL_error(L, "setmetatable: __gc is not available to flows "
                        "(a finalizer would run outside any session's limits)");
    lua_pop(L, 1);
  }
  if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
    return luaL_error(L, "cannot change a protected metatable");
  lua_settop(L, 2);
  lua_setmetatable(L, 1);
  return 1;
}

/* collectgarbage("count") only: the collector is every session's. */
static int sb_collectgarbage(lua_State *L) {
  const char *opt = luaL_optstring(L, 1, "collect");
  int k, b;
  if (strcmp(opt, "count") != 0)
    return luaL_error(L, "collectgarbage(\"%s\"): flows may only ask for \"count\" "
                      "(the collector is shared by every session)", opt);
  k = lua_gc(L, LUA_GCCOUNT);
  b = lua_gc(L, LUA_GCCOUNTB);
  lua_pushnumber(L, (lua_Number)k + ((lua_Number)b / 1024));
  return 1;
}

/* The first level from `level` up that runs a Lua function (pcall(require,
** ...) is called by pcall, a C function, on behalf of the Lua code above),
** filled into ar; 0 when there is none. */
static int lua_level(lua_State *L, int level, lua_Debug *ar) {
  for (; lua_getstack(L, level, ar); level++) {
    lua_getinfo(L, "S", ar);
    if (ar->what[0] != 'C') return level;
  }
  return 0;
}

int fr_caller_env(lua_State *L, int level) {
  lua_Debug ar;
  const char *name;
  int found = 0;
  if (!lua_level(L, level, &ar)) return 0;
  for (int i = 1; (name = lua_getlocal(L, &ar, i)) != NULL; i++) {
    if (strcmp(name, "_ENV") == 0 && lua_istable(L, -1)) found = i;
    lua_pop(L, 1);
  }
  if (found) {                          /* a flow file's: a parameter */
    lua_getlocal(L, &ar, found);
    return 1;
  }
  lua_getinfo(L, "f", &ar);
  for (int i = 1; (name = lua_getupvalue(L, -1, i)) != NULL; i++) {
    if (strcmp(name, "_ENV") == 0 && lua_istable(L, -1)) {
      lua_remove(L, -2);
      return 1;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

/* Pushes the globals of the code that called the C function running now:
** its _ENV, else its session's globals; raises when there is neither. */
static void push_caller_env(lua_State *L, flowrun *rt, const char *fn) {
  fr_session *s;
  if (fr_caller_env(L, 1)) {
    if (!lua_istable(L, -1) || !fr_frozen(L, -1)) return;
    lua_pop(L, 1);                      /* shared: never a module's globals */
  }
  if ((s = fr_session_current(rt, L)) || ((s = fr_running()) && s->rt == rt)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->envref);
    return;
  }
  luaL_error(L, "%s: no globals to run in (give them as an argument)", fn);
}

/* load(chunk [, name [, mode [, env]]]): text only; env defaults to the
** globals of the caller (Lua's own would give the shared _G). Upvalue 2
** is Lua's load. */
static int sb_load(lua_State *L) {
  int n = lua_gettop(L);
  const char *mode = luaL_optstring(L, 3, "t");
  if (strchr(mode, 'b'))
    return luaL_error(L, "load: binary chunks are not available to flows (text only)");
  if (n < 4) {
    lua_settop(L, 3);
    push_caller_env(L, fr_rt(L), "load");
  }
  lua_settop(L, 4);
  lua_pushliteral(L, "t");
  lua_replace(L, 3);
  lua_pushvalue(L, lua_upvalueindex(2));  /* load(chunk, name, "t", env) */
  lua_insert(L, 1);
  lua_call(L, 4, LUA_MULTRET);
  return lua_gettop(L);
}

/* Searches module `name` (dots become slashes) in dir (the caller's
** directory, dirlen 0 for none), then along package.path. Pushes the file
** and "", or nil and the places tried. */
static void search_module(lua_State *L, const char *name, const char *dir,
                          size_t dirlen) {
  int top = lua_gettop(L), ntried = 0;
  const char *rel = luaL_gsub(L, name, ".", "/"), *path, *p;
  const char *d = lua_pushlstring(L, dir, dirlen);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "package");
  if (lua_istable(L, -1)) lua_getfield(L, -1, "path");
  else lua_pushnil(L);
  path = lua_tostring(L, -1);
  if (!path) path = "./?.lua";
  if (dirlen) p = lua_pushfstring(L, "%s?.lua;%s?/init.lua;%s", d, d, path);
  else p = lua_pushstring(L, path);
  while (*p) {
    size_t n = strcspn(p, ";");
    if (n > 0) {
      const char *file;
      lua_pushlstring(L, p, n);
      file = luaL_gsub(L, lua_tostring(L, -1), "?", rel);
      lua_remove(L, -2);
      if (access(file, R_OK) == 0) {
        lua_copy(L, -1, top + 1);
        lua_settop(L, top + 1);
        lua_pushliteral(L, "");
        return;
      }
      lua_pushfstring(L, "\n\tno file '%s'", file);
      lua_remove(L, -2);
      ntried++;
    }
    p += n + (p[n] == ';');
  }
  lua_concat(L, ntried);
  lua_copy(L, -1, top + 2);
  lua_settop(L, top + 2);
  lua_pushnil(L);
  lua_replace(L, top + 1);
}

/* require(name): a library the sandbox has (upvalue 1: name -> value), or
** a Lua file from the caller's directory or package.path, run once per
** globals table in those globals (so a module's functions act for the
** session that called them, and sessions never share a module's state).
** Upvalue 2: the runtime; upvalue 3: true when package is granted (then
** Lua's own require takes what the sandbox does not find). */
static int sb_require(lua_State *L) {
  const char *name = luaL_checkstring(L, 1), *src, *slash;
  lua_Debug ar;
  int env, cache;
  lua_settop(L, 1);
  if (lua_getfield(L, lua_upvalueindex(1), name) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  if (strcmp(name, "flowrun.flow") == 0) {   /* built in: frozen on first use */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &real_require_key);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    if (lua_istable(L, -1) && !fr_frozen(L, -1)) {
      if (lua_getfield(L, -1, "END") == LUA_TTABLE && !fr_frozen(L, -1))
        fr_freeze(L, -1, "flow.END");
      lua_pop(L, 1);
      fr_freeze(L, -1, "flowrun.flow");
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, lua_upvalueindex(1), name);
    return 1;
  }
  if (name[strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  "0123456789_-.")] != '\0' || !*name)
    return luaL_error(L, "require \"%s\": a module name is letters, digits, '_', '-' and '.'",
                      name);
  push_caller_env(L, lua_touserdata(L, lua_upvalueindex(2)), "require");
  env = lua_gettop(L);
  /* the modules of each globals table, kept beside it (weak keys): a
  ** flow's own table is never written to */
  fr_open_module_caches(L);
  lua_pushvalue(L, env);
  if (lua_rawget(L, -2) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, env);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  lua_remove(L, -2);
  cache = lua_gettop(L);
  if (lua_getfield(L, cache, name) != LUA_TNIL) {
    if (lua_touserdata(L, -1) == &loading_key)
      return luaL_error(L, "require \"%s\": it requires itself (a cycle of modules)", name);
    return 1;
  }
  lua_pop(L, 1);
  src = "";
  if (lua_level(L, 1, &ar) && ar.source[0] == '@') src = ar.source + 1;
  slash = strrchr(src, '/');
  if (*src && !slash) src = "./", slash = src + 1;   /* a file in the current directory */
  search_module(L, name, src, slash ? (size_t)(slash - src + 1) : 0);
  if (lua_isnil(L, -2)) {
    if (lua_toboolean(L, lua_upvalueindex(3))) {   /* package granted */
      lua_rawgetp(L, LUA_REGISTRYINDEX, &real_require_key);
      lua_pushvalue(L, 1);
      lua_call(L, 1, 1);
      return 1;
    }
    return luaL_error(L, "module '%s' not found (flows load Lua files only: io, os, debug, "
                      "package and C modules are not available):%s", name, lua_tostring(L, -1));
  }
  lua_pop(L, 1);
  if (fr_integrations_file(lua_touserdata(L, lua_upvalueindex(2)), lua_tostring(L, -1)))
    return luaL_error(L, "require \"%s\": %s is the integrations file, not a module",
                      name, lua_tostring(L, -1));
  if (luaL_loadfilex(L, lua_tostring(L, -1), "t") != LUA_OK) return lua_error(L);
  lua_pushvalue(L, env);
  lua_setupvalue(L, -2, 1);             /* _ENV: the caller's globals */
  lua_pushlightuserdata(L, (void *)&loading_key);
  lua_setfield(L, cache, name);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, -3);                 /* name, path */
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    lua_pushnil(L);
    lua_setfield(L, cache, name);
    return lua_error(L);
  }
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, cache, name);
  lua_insert(L, -2);                    /* value, path */
  return 2;
}

/* ---- building the globals ---- */

/* Pushes a frozen copy of the library `name` of the state, without the
** fields in `except`. */
static void push_library(lua_State *L, const char *name, const char *const *except) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
  lua_newtable(L);
  if (lua_istable(L, -2)) {
    lua_pushnil(L);
    while (lua_next(L, -3)) {
      bool skip = false;
      for (int i = 0; except && except[i]; i++)
        if (lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), except[i]) == 0)
          skip = true;
      if (skip) { lua_pop(L, 1); continue; }
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
  }
  lua_remove(L, -2);
  fr_freeze(L, -1, name);
}

/* Sets field k of the frozen table at idx to the value on top (popped):
** the sandbox's own changes to a library it copied. */
static void set_frozen_field(lua_State *L, int idx, const char *k) {
  idx = lua_absindex(L, idx);
  lua_getmetatable(L, idx);
  lua_getfield(L, -1, "__index");
  lua_rotate(L, -3, -1);
  lua_setfield(L, -2, k);
  lua_pop(L, 2);
}

void fr_sandbox_wrap(flowrun *rt, lua_State *L, const char *lib, const char *name,
                     lua_CFunction fn, int kind) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->globals_ref);
  lua_getfield(L, -1, lib);
  lua_pushlightuserdata(L, rt);
  lua_getfield(L, -2, name);
  lua_pushinteger(L, kind);
  lua_pushcclosure(L, fn, 3);
  set_frozen_field(L, -2, name);
  lua_pop(L, 2);
}

/* Is the thread at idx a session's own (its main coroutine)? */
static bool session_thread(flowrun *rt, lua_State *L, int idx) {
  lua_State *co = lua_tothread(L, idx);
  bool yes;
  if (rt->owns_L) return *(fr_session **)lua_getextraspace(co) != NULL;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->threads_ref);
  lua_pushvalue(L, idx);
  yes = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return yes;
}

/* coroutine.resume and coroutine.close, refusing a session's own thread:
** only the runtime resumes a session (it may wait in api_node, its call
** in flight). Upvalue 1: the runtime; 2: Lua's function. */
static int sb_co_guard(lua_State *L) {
  flowrun *rt = lua_touserdata(L, lua_upvalueindex(1));
  if (lua_type(L, 1) == LUA_TTHREAD && session_thread(rt, L, 1))
    return luaL_error(L, "a session's own coroutine is resumed by the runtime only");
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* Puts the value on top into the flow globals (at g) and, when module is
** set, into the sandbox's modules (at m), for require to give; pops it. */
static void put(lua_State *L, int g, int m, const char *name, bool module) {
  if (module) {
    lua_pushvalue(L, -1);
    lua_setfield(L, m, name);
  }
  lua_setfield(L, g, name);
}

void fr_sandbox_open(flowrun *rt, lua_State *L) {
  const char *const *base = fr_flow_base, *const *libs = fr_flow_libs;   /* rules.c */
  static const char *const no_dump[] = { "dump", NULL };
  static const char *const no_seed[] = { "randomseed", NULL };
  static const struct { const char *name; lua_CFunction fn; } own[] = {
    { "rawset", sb_rawset }, { "setmetatable", sb_setmetatable },
    { "collectgarbage", sb_collectgarbage },
  };
  const char *const *os_safe = fr_flow_os;
  int g, m, top = lua_gettop(L);
  fr_push_flow_primitives(rt, L);       /* the flow globals, to fill */
  fr_add_api_pages(rt, L);
  g = lua_gettop(L);
  lua_newtable(L);                      /* what require gives */
  m = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  for (int i = 0; base[i]; i++) {
    lua_getfield(L, -1, base[i]);
    lua_setfield(L, g, base[i]);
  }
  lua_getfield(L, -1, "require");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &real_require_key);
  lua_getfield(L, -1, "load");          /* for sb_load */
  lua_pushlightuserdata(L, rt);
  lua_insert(L, -2);
  lua_pushcclosure(L, sb_load, 2);
  lua_setfield(L, g, "load");
  lua_pop(L, 1);
  for (size_t i = 0; i < sizeof own / sizeof *own; i++) {
    lua_pushcfunction(L, own[i].fn);
    lua_setfield(L, g, own[i].name);
  }
  for (int i = 0; libs[i]; i++) {
    push_library(L, libs[i], strcmp(libs[i], "string") == 0 ? no_dump
                 : strcmp(libs[i], "math") == 0 ? no_seed : NULL);
    if (strcmp(libs[i], "coroutine") == 0)
      for (int k = 0; k < 2; k++) {
        const char *fn = k ? "close" : "resume";
        lua_pushlightuserdata(L, rt);
        lua_getfield(L, -2, fn);
        lua_pushcclosure(L, sb_co_guard, 2);
        set_frozen_field(L, -2, fn);
      }
    put(L, g, m, libs[i], true);
  }
  lua_newtable(L);                      /* os: the clock and the calendar */
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "os");
  for (int i = 0; os_safe[i] && lua_istable(L, -1); i++) {
    lua_getfield(L, -1, os_safe[i]);
    lua_setfield(L, -4, os_safe[i]);
  }
  lua_pop(L, 2);
  fr_freeze(L, -1, "os");
  put(L, g, m, "os", true);
  lua_getfield(L, g, "json");           /* one instance, read-only */
  if (lua_getfield(L, -1, "array_mt") == LUA_TTABLE) fr_freeze(L, -1, "json.array_mt");
  lua_pop(L, 1);
  fr_freeze(L, -1, "json");
  lua_pushvalue(L, -1);
  lua_setfield(L, m, "json");
  lua_setfield(L, m, "cjson");
  lua_getfield(L, g, "log");
  fr_freeze(L, -1, "log");
  lua_pop(L, 1);
  lua_getfield(L, g, "string");         /* the string metatable, read-only */
  lua_pushliteral(L, "");
  if (lua_getmetatable(L, -1)) {
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, -4);
    lua_setfield(L, -2, "__index");
    fr_freeze(L, -1, "the string metatable");
    lua_setfield(L, -2, "__metatable");
    if (rt->owns_L) {                   /* methods come from the copy: no dump */
      lua_pushvalue(L, -3);             /* (a host's own state keeps its string) */
      lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  lua_pushvalue(L, m);                  /* require */
  lua_pushlightuserdata(L, rt);
  lua_pushboolean(L, 0);
  lua_pushcclosure(L, fr_sandbox_require, 3);
  lua_setfield(L, g, "require");
  lua_pushvalue(L, m);
  rt->modules_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, g);
  rt->globals_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_createtable(L, 0, 2);             /* the metatable of session globals */
  lua_pushvalue(L, g);
  lua_setfield(L, -2, "__index");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  rt->base_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_createtable(L, 0, 8);             /* a host's own Lua: primitives, then _G */
  for (int i = 0; fr_flow_primitives[i]; i++) {
    lua_getfield(L, g, fr_flow_primitives[i]);
    lua_setfield(L, -2, fr_flow_primitives[i]);
  }
  lua_createtable(L, 0, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_createtable(L, 0, 1);
  lua_insert(L, -2);
  lua_setfield(L, -2, "__index");
  rt->trusted_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, top);
}

int fr_sandbox_require(lua_State *L) {
  return sb_require(L);
}

/* ---- granting more ---- */

/* lua_pcall'd: 1 rt, 2 what. */
static int l_allow(lua_State *L) {
  static const char *const granted[] = { "io", "os", "debug", "package", NULL };
  flowrun *rt = lua_touserdata(L, 1);
  const char *what = lua_touserdata(L, 2);    /* C strings come as light userdata: */
  int i;                                      /* pushing one outside could raise */
  for (i = 0; granted[i] && strcmp(granted[i], what) != 0; i++) {}
  if (!granted[i])
    return luaL_error(L, "flowrun_allow: unknown library '%s' (io, os, debug or package)", what);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->globals_ref);    /* 3 */
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->modules_ref);    /* 4 */
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, what);
  if (lua_isnil(L, -1)) return luaL_error(L, "flowrun_allow: the state has no library '%s'", what);
  lua_pushvalue(L, -1);
  lua_setfield(L, 4, what);
  lua_setfield(L, 3, what);
  if (strcmp(what, "package") == 0) {   /* and require finds C modules too */
    lua_pushvalue(L, 4);
    lua_pushlightuserdata(L, rt);
    lua_pushboolean(L, 1);
    lua_pushcclosure(L, fr_sandbox_require, 3);
    lua_setfield(L, 3, "require");
  }
  return 0;
}

int flowrun_allow(flowrun *rt, const char *what) {
  lua_State *L = rt->L;
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 4)) return fr_error(rt, "out of memory");
  lua_pushcfunction(L, l_allow);
  lua_pushlightuserdata(L, rt);
  lua_pushlightuserdata(L, (void *)(what ? what : ""));
  return fr_pcall(rt, L, 2, top);
}

/* lua_pcall'd: 1 rt, 2 name (light userdata), 3 the value (a table is
** shown as a view); with 4, a light userdata, 3 is a C function that
** becomes a closure with it as upvalue 1 (made here: it takes memory). */
static int l_register(lua_State *L) {
  flowrun *rt = lua_touserdata(L, 1);
  const char *name;
  lua_pushstring(L, lua_touserdata(L, 2));
  lua_replace(L, 2);
  name = lua_tostring(L, 2);
  if (lua_gettop(L) == 4) {
    lua_pushcclosure(L, lua_tocfunction(L, 3), 1);
    lua_replace(L, 3);
  }
  if (lua_istable(L, 3) && !fr_frozen(L, 3)) {
    fr_push_view(L, 3);
    lua_replace(L, 3);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->globals_ref);
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, name);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->trusted_ref);
  lua_getfield(L, -1, "__index");
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, name);
  return 0;
}

/* Registers the n values on top (l_register says which) as name. */
static int do_register(flowrun *rt, const char *name, int n) {
  lua_State *L = rt->L;
  int top = lua_gettop(L) - n;
  if (!name || !*name) {
    lua_pop(L, n);
    return fr_error(rt, "flowrun_register: a name is required");
  }
  lua_pushcfunction(L, l_register);
  lua_pushlightuserdata(L, rt);
  lua_pushlightuserdata(L, (void *)name);
  lua_rotate(L, top + 1, 3);            /* l_register, rt, name, the values */
  return fr_pcall(rt, L, 2 + n, top);
}

int flowrun_register(flowrun *rt, const char *name, int (*fn)(lua_State *L), void *ud) {
  lua_State *L = rt->L;
  if (!fn) return fr_error(rt, "flowrun_register: a function is required");
  if (!lua_checkstack(L, 6)) return fr_error(rt, "out of memory");
  lua_pushcfunction(L, fn);
  lua_pushlightuserdata(L, ud);
  return do_register(rt, name, 2);
}

int flowrun_register_value(flowrun *rt, const char *name) {
  lua_State *L = rt->L;
  if (lua_gettop(L) < 1) return fr_error(rt, "flowrun_register_value: no value on the stack");
  if (!lua_checkstack(L, 6)) return fr_error(rt, "out of memory");
  return do_register(rt, name, 1);
}

void fr_push_flow_global(flowrun *rt, lua_State *L, const char *name) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->base_ref);
  lua_getfield(L, -1, "__index");
  lua_getfield(L, -1, name);
  lua_replace(L, -3);
  lua_pop(L, 1);
}
