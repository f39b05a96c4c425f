/*
** response.c -- the response table api_node returns (README: The labels).
**
** Most flows read a response's label, status and maybe one JSON field, so
** the costly parts are built only when first read: `headers` is parsed from
** the raw header block, and `json` (or `json_error`) is decoded from the
** body, on the first access of either one, through the table's __index.
** Until then the raw header block waits in the table under a private
** light-userdata key; __pairs builds everything first, so iterating a
** response shows what the contract says and never the private key.
*/
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>

#include "json.h"
#include "response.h"
#include "rules.h"
#include "secrets.h"

#define RESPONSE_MT "flowrun.response"

static const char raw_key = 0;         /* its address is the private key */

static bool is_json_type(const char *ct, size_t len) {
  size_t n = 0;
  while (n < len && ct[n] != ';' && ct[n] != ' ') n++;
  return (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
      || (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0);
}

/* Pushes a table of the header block p[0..len): lower-case names, a
** repeated header joined with ", ". The status line is skipped. */
static void push_headers(lua_State *L, const char *p, size_t len) {
  const char *end = p + len;
  lua_newtable(L);
  p = memchr(p, '\n', len);
  while (p && ++p < end) {
    const char *eol = memchr(p, '\n', end - p), *colon, *v, *ve;
    if (!eol) eol = end;
    colon = memchr(p, ':', eol - p);
    if (colon && colon > p) {
      luaL_Buffer b;
      char *name = luaL_buffinitsize(L, &b, colon - p);
      for (const char *q = p; q < colon; q++) *name++ = (char)tolower((unsigned char)*q);
      luaL_pushresultsize(&b, colon - p);
      for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++) {}
      for (ve = eol; ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'); ve--) {}
      lua_pushvalue(L, -1);
      if (lua_rawget(L, -3) == LUA_TSTRING) {   /* repeated: join */
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, ve - v);
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, ve - v);
      }
      lua_rawset(L, -3);
    }
    p = eol;
  }
}

/* Builds headers, json and json_error of the response at idx, once. */
static void materialize(lua_State *L, int idx) {
  size_t len;
  const char *raw;
  if (lua_rawgetp(L, idx, &raw_key) != LUA_TSTRING) {
    lua_pop(L, 1);
    return;
  }
  raw = lua_tolstring(L, -1, &len);
  push_headers(L, raw, len);
  lua_pushnil(L);
  lua_rawsetp(L, idx, &raw_key);        /* the string stays on the stack */
  lua_pushvalue(L, -1);
  lua_setfield(L, idx, "headers");
  if (lua_getfield(L, -1, "content-type") == LUA_TSTRING
      && is_json_type(lua_tostring(L, -1), lua_rawlen(L, -1))) {
    lua_pushcfunction(L, fr_json_decode);
    lua_getfield(L, idx, "body");
    lua_setfield(L, idx, lua_pcall(L, 1, 1, 0) == LUA_OK ? "json" : "json_error");
  }
  lua_pop(L, 3);
}

/* __index(res, key): headers, json and json_error on first access. */
static int res_index(lua_State *L) {
  const char *k = lua_tostring(L, 2);
  if (k && lua_type(L, 2) == LUA_TSTRING
      && (strcmp(k, "headers") == 0 || strcmp(k, "json") == 0
          || strcmp(k, "json_error") == 0)) {
    materialize(L, 1);
    lua_rawget(L, 1);
    return 1;
  }
  return 0;
}

static int res_next(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  if (lua_next(L, 1)) return 2;
  lua_pushnil(L);
  return 1;
}

/* __pairs(res): everything built, then a plain next. */
static int res_pairs(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  materialize(L, 1);
  lua_pushcfunction(L, res_next);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

/* Pushes the response of a finished call. */
void fr_push_response(lua_State *L, fr_call *c) {
  flowrun *rt = c->rt;
  lua_createtable(L, 0, 8);             /* 7 fields; 9 with error, reason */
  lua_pushstring(L, c->label);
  lua_setfield(L, -2, "label");
  if (c->status) {
    lua_pushinteger(L, c->status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, c->rhdr.p ? c->rhdr.p : "", c->rhdr.len);
    lua_rawsetp(L, -2, &raw_key);
    lua_pushlstring(L, c->rbody.p ? c->rbody.p : "", c->rbody.len);
  } else {
    lua_newtable(L);
    lua_setfield(L, -2, "headers");
    lua_pushliteral(L, "");
  }
  lua_setfield(L, -2, "body");
  if (c->label == LABEL_ERROR || c->label == LABEL_TIMEOUT || c->label == LABEL_MAXCONN) {
    const char *e = c->error ? c->error : "";
    fr_push_redacted(L, rt, e, strlen(e));
    lua_setfield(L, -2, "error");
    lua_pushstring(L, c->reason);
    lua_setfield(L, -2, "reason");
  }
  lua_pushinteger(L, (lua_Integer)(c->t0 + 0.5));
  lua_setfield(L, -2, "elapsed_ms");
  fr_push_redacted(L, rt, c->rq.url ? c->rq.url : "", c->rq.url ? strlen(c->rq.url) : 0);
  lua_setfield(L, -2, "url");
  lua_pushinteger(L, c->attempts);
  lua_setfield(L, -2, "attempts");
  luaL_setmetatable(L, RESPONSE_MT);
}

bool fr_response_full(lua_State *L, int idx) {
  bool is;
  idx = lua_absindex(L, idx);
  if (!lua_getmetatable(L, idx)) return false;
  luaL_getmetatable(L, RESPONSE_MT);
  is = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  if (is) materialize(L, idx);
  return is;
}

void fr_response_mark(lua_State *L) {
  luaL_setmetatable(L, RESPONSE_MT);
}

/* Creates the metatable of responses in the registry. */
void fr_open_response(lua_State *L) {
  if (luaL_newmetatable(L, RESPONSE_MT)) {
    lua_pushcfunction(L, res_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, res_pairs);
    lua_setfield(L, -2, "__pairs");
    lua_pushboolean(L, 0);              /* shared by every session: hidden */
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
}
