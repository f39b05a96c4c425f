/*
** snapshot.c -- Lua values as bytes (snapshot.h; README: Durable
** sessions, declarative flows).
**
** A value is a tag and what it needs: 'Z' nil, 'F' false, 'T' true, 'I' an
** integer and 'D' a float (8 bytes each, this machine's order: a store
** does not move between machines of another byte order), 'S' a string (4
** bytes of length, then its bytes), 'N' json.null, 'E' json.empty_array,
** and a table: '{' plain, '[' with json.array_mt, '(' a response, then
** key and value after key and value, and '}'.
**
** The bytes are built in a userdata on the stack, grown by replacing it,
** so that an error raised on the way (out of memory) leaks nothing.
*/
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <lauxlib.h>

#include "json.h"
#include "response.h"
#include "snapshot.h"

#define MAX_DEPTH 100                   /* tables within tables */

typedef struct enc {
  lua_State *L;
  int buf, path, seen, msg;             /* stack slots */
  char *b;
  size_t n, cap;
  int depth;
  const char *root;
} enc;

static void put(enc *e, const void *p, size_t n) {
  if (e->cap - e->n < n) {
    size_t cap = e->cap * 2;
    char *b;
    while (cap - e->n < n) cap *= 2;
    b = lua_newuserdatauv(e->L, cap, 0);
    memcpy(b, e->b, e->n);
    lua_replace(e->L, e->buf);
    e->b = b;
    e->cap = cap;
  }
  memcpy(e->b + e->n, p, n);
  e->n += n;
}

static void tag(enc *e, char t) {
  put(e, &t, 1);
}

/* Is k a Lua name (then the path shows it as .k)? */
static bool is_name(const char *k, size_t n) {
  if (n == 0 || isdigit((unsigned char)*k)) return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)k[i]) && k[i] != '_') return false;
  return true;
}

/* Pushes where the value `depth` keys deep is: "session.a[2]". */
static void push_path(enc *e, int depth) {
  lua_State *L = e->L;
  lua_pushstring(L, e->root);
  for (int i = 1; i <= depth; i++) {
    const char *k;
    lua_rawgeti(L, e->path, i);
    switch (lua_type(L, -1)) {
    case LUA_TSTRING:
      k = lua_tostring(L, -1);
      if (is_name(k, lua_rawlen(L, -1))) lua_pushfstring(L, ".%s", k);
      else
        lua_pushfstring(L, "[\"%s\"]", k);
      break;
    default:
      lua_pushfstring(L, "[%s]", luaL_tolstring(L, -1, NULL));
      lua_remove(L, -2);
    }
    lua_remove(L, -2);
    lua_concat(L, 2);
  }
}

/* Keeps why the value at the current path cannot be stored; false. */
static bool refuse(enc *e, const char *what) {
  lua_State *L = e->L;
  push_path(e, e->depth);
  lua_pushfstring(L, "%s %s: %s can hold only nil, booleans, numbers, strings, json.null"
                  " and tables of them", lua_tostring(L, -1), what, e->root);
  lua_replace(L, e->msg);
  lua_pop(L, 1);
  return false;
}

static bool enc_value(enc *e, int idx);

static bool enc_table(enc *e, int idx) {
  lua_State *L = e->L;
  char t = '{';
  if (fr_response_full(L, idx)) t = '(';
  else if (lua_getmetatable(L, idx)) {
    bool array;
    fr_json_push_array_mt(L);
    array = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!array) return refuse(e, "is a table with a metatable");
    t = '[';
  }
  if (e->depth >= MAX_DEPTH) return refuse(e, "is nested deeper than 100 tables");
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->seen) != LUA_TNIL) {   /* a table within itself */
    int at = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    push_path(e, at);
    lua_pushfstring(L, "refers back to %s (a cycle)", lua_tostring(L, -1));
    refuse(e, lua_tostring(L, -1));
    lua_pop(L, 2);
    return false;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, e->depth);
  lua_rawset(L, e->seen);
  tag(e, t);
  luaL_checkstack(L, 8, "tables within tables");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int k = lua_gettop(L) - 1, kt = lua_type(L, k);
    e->depth++;
    lua_pushvalue(L, k);
    lua_rawseti(L, e->path, e->depth);
    if (kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN) {
      lua_pushfstring(L, "has a %s as a key", luaL_typename(L, k));
      e->depth--;
      refuse(e, lua_tostring(L, -1));
      return false;
    }
    if (!enc_value(e, k) || !enc_value(e, k + 1)) return false;
    e->depth--;
    lua_pop(L, 1);
  }
  tag(e, '}');
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, e->seen);
  return true;
}

static bool enc_value(enc *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL: tag(e, 'Z'); return true;
  case LUA_TBOOLEAN: tag(e, lua_toboolean(L, idx) ? 'T' : 'F'); return true;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      int64_t i = (int64_t)lua_tointeger(L, idx);
      tag(e, 'I');
      put(e, &i, sizeof i);
    } else {
      double d = (double)lua_tonumber(L, idx);
      tag(e, 'D');
      put(e, &d, sizeof d);
    }
    return true;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    uint32_t len = (uint32_t)n;
    if (n > UINT32_MAX) return refuse(e, "is a string of 4 GiB or more");
    tag(e, 'S');
    put(e, &len, sizeof len);
    put(e, s, n);
    return true;
  }
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) { tag(e, 'N'); return true; }
    if (lua_touserdata(L, idx) == &fr_json_empty_array) { tag(e, 'E'); return true; }
    return refuse(e, "is a light userdata");
  case LUA_TTABLE: return enc_table(e, lua_absindex(L, idx));
  default: {
    bool ok;
    lua_pushfstring(L, "is a %s", luaL_typename(L, idx));
    ok = refuse(e, lua_tostring(L, -1));
    lua_pop(L, 1);
    return ok;
  }
  }
}

bool fr_snapshot_encode(lua_State *L, int idx, const char *root) {
  enc e;
  int base;
  bool ok;
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 12, "a snapshot");
  base = lua_gettop(L);
  memset(&e, 0, sizeof e);
  e.L = L;
  e.root = root;
  e.cap = 256;
  e.b = lua_newuserdatauv(L, e.cap, 0);
  lua_newtable(L);
  lua_newtable(L);
  lua_pushnil(L);
  e.buf = base + 1, e.path = base + 2, e.seen = base + 3, e.msg = base + 4;
  ok = enc_value(&e, idx);
  if (ok) lua_pushlstring(L, e.b, e.n);
  else lua_pushvalue(L, e.msg);
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
  return ok;
}

/* ---- reading ---- */

typedef struct dec {
  lua_State *L;
  const char *p, *end;
  int depth;
} dec;

static bool take(dec *d, void *out, size_t n) {
  if ((size_t)(d->end - d->p) < n) return false;
  memcpy(out, d->p, n);
  d->p += n;
  return true;
}

static bool dec_value(dec *d) {
  lua_State *L = d->L;
  char t;
  if (!take(d, &t, 1)) return false;
  switch (t) {
  case 'Z': lua_pushnil(L); return true;
  case 'F': case 'T': lua_pushboolean(L, t == 'T'); return true;
  case 'N': lua_pushlightuserdata(L, NULL); return true;
  case 'E': lua_pushlightuserdata(L, (void *)&fr_json_empty_array); return true;
  case 'I': {
    int64_t i;
    if (!take(d, &i, sizeof i)) return false;
    lua_pushinteger(L, (lua_Integer)i);
    return true;
  }
  case 'D': {
    double v;
    if (!take(d, &v, sizeof v)) return false;
    lua_pushnumber(L, (lua_Number)v);
    return true;
  }
  case 'S': {
    uint32_t n;
    if (!take(d, &n, sizeof n) || (size_t)(d->end - d->p) < n) return false;
    lua_pushlstring(L, d->p, n);
    d->p += n;
    return true;
  }
  case '{': case '[': case '(':
    if (++d->depth > MAX_DEPTH) return false;
    luaL_checkstack(L, 8, "tables within tables");
    lua_newtable(L);
    while (d->p < d->end && *d->p != '}') {
      if (!dec_value(d)) return false;
      if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER && isnan(lua_tonumber(L, -1)))) return false;
      if (!dec_value(d)) return false;
      lua_rawset(L, -3);
    }
    if (d->p >= d->end) return false;
    d->p++;
    if (t == '[') {
      fr_json_push_array_mt(L);
      lua_setmetatable(L, -2);
    } else if (t == '(')
      fr_response_mark(L);
    d->depth--;
    return true;
  default:
    return false;
  }
}

bool fr_snapshot_decode(lua_State *L, const char *p, size_t n) {
  dec d = { L, p, p + n, 0 };
  int base = lua_gettop(L);
  if (dec_value(&d) && d.p == d.end) return true;
  lua_settop(L, base);
  lua_pushliteral(L, "the stored state is damaged (not a snapshot of this flowrun)");
  return false;
}
