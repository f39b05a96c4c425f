/*
** response.c -- the response table api_node returns (README: The labels).
**
** Most flows read a response's label, status and maybe one JSON field, so
** a response is made with label and status only; the rest (raw headers,
** body, URL, times, error) waits in one userdata, its blob, under a private
** light-userdata key, and the table's __index sets the fields on the first
** read of any: body, url, elapsed_ms, attempts, error and reason together
** (cheap), `headers` parsed from the raw block and `json` (or json_error)
** decoded from the body on the first read of either. __pairs builds
** everything first, so iterating a response shows what the contract says
** and never the private key; so do snapshots (fr_response_full).
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
static const char mt_key = 0;          /* the metatable in the registry, also under this */

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

/* What a response holds until it is read: everything but label and
** status, copied out of the call (which goes on to the next one). */
typedef struct blob {
  const void *mark;                     /* &raw_key: a blob, not any userdata put there */
  lua_Integer elapsed_ms, attempts;
  bool errors;                          /* error and reason are fields */
  bool plain;                           /* body ... reason are in the table */
  size_t n[5];                          /* lengths: headers, body, url, error, reason */
  char data[];                          /* the five, one after the other */
} blob;

enum { B_HEADERS, B_BODY, B_URL, B_ERROR, B_REASON };

static const char *part(const blob *b, int i) {
  const char *p = b->data;
  for (int k = 0; k < i; k++) p += b->n[k];
  return p;
}

/* The blob of the response at idx, pushed; NULL (something pushed) once it
** is all in the table, or when what is there is no blob: a flow can reach
** the private key with next() and put another userdata there (a file, with
** io allowed), whose bytes must not be read as a blob's. */
static blob *get_blob(lua_State *L, int idx) {
  blob *b;
  size_t size, sum = 0;
  if (lua_rawgetp(L, idx, &raw_key) != LUA_TUSERDATA) return NULL;
  b = lua_touserdata(L, -1);
  size = lua_rawlen(L, -1);
  if (size < sizeof *b || b->mark != &raw_key) return NULL;
  for (int i = 0; i < 5; i++) sum += b->n[i];
  return sum == size - sizeof *b ? b : NULL;
}

/* Pops the value on top into field k of the table at idx, unless the flow
** has set k already (its own value stays). */
static void put(lua_State *L, int idx, const char *k) {
  lua_pushstring(L, k);
  if (lua_rawget(L, idx) != LUA_TNIL) {
    lua_pop(L, 2);
    return;
  }
  lua_pop(L, 1);
  lua_pushstring(L, k);
  lua_insert(L, -2);
  lua_rawset(L, idx);
}

/* Sets body, url, elapsed_ms, attempts (error, reason) of the response at
** idx from its blob, once. */
static void fill_plain(lua_State *L, int idx) {
  blob *b = get_blob(L, idx);
  if (b && !b->plain) {
    lua_pushlstring(L, part(b, B_BODY), b->n[B_BODY]);
    put(L, idx, "body");
    lua_pushlstring(L, part(b, B_URL), b->n[B_URL]);   /* redacted when made */
    put(L, idx, "url");
    lua_pushinteger(L, b->elapsed_ms);
    put(L, idx, "elapsed_ms");
    lua_pushinteger(L, b->attempts);
    put(L, idx, "attempts");
    if (b->errors) {
      lua_pushlstring(L, part(b, B_ERROR), b->n[B_ERROR]);
      put(L, idx, "error");
      lua_pushlstring(L, part(b, B_REASON), b->n[B_REASON]);
      put(L, idx, "reason");
    }
    b->plain = true;
  }
  lua_pop(L, 1);
}

/* Builds every field of the response at idx (headers, json, json_error
** too), once; the blob goes. */
static void materialize(lua_State *L, int idx) {
  blob *b;
  fill_plain(L, idx);
  if (!(b = get_blob(L, idx))) {
    lua_pop(L, 1);
    return;
  }
  push_headers(L, part(b, B_HEADERS), b->n[B_HEADERS]);
  lua_pushnil(L);
  lua_rawsetp(L, idx, &raw_key);        /* the blob stays on the stack */
  lua_pushvalue(L, -1);
  put(L, idx, "headers");
  if (lua_getfield(L, -1, "content-type") == LUA_TSTRING
      && is_json_type(lua_tostring(L, -1), lua_rawlen(L, -1))) {
    lua_pushcfunction(L, fr_json_decode);
    lua_pushlstring(L, part(b, B_BODY), b->n[B_BODY]);   /* what came, whatever body is now */
    put(L, idx, lua_pcall(L, 1, 1, 0) == LUA_OK ? "json" : "json_error");
  }
  lua_pop(L, 3);
}

/* __index(res, key): the fields a response keeps in its blob, on first
** access; headers, json and json_error parse and decode. */
static int res_index(lua_State *L) {
  const char *k = lua_tostring(L, 2);
  if (!k || lua_type(L, 2) != LUA_TSTRING) return 0;
  if (strcmp(k, "headers") == 0 || strcmp(k, "json") == 0 || strcmp(k, "json_error") == 0)
    materialize(L, 1);
  else if (strcmp(k, "body") == 0 || strcmp(k, "url") == 0 || strcmp(k, "elapsed_ms") == 0
           || strcmp(k, "attempts") == 0 || strcmp(k, "error") == 0
           || strcmp(k, "reason") == 0)
    fill_plain(L, 1);
  else
    return 0;
  lua_rawget(L, 1);
  return 1;
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

/* Pushes the response of a finished call (label: a stack index that holds
** its label already, or 0): label and status in the table,
** the rest copied into its blob for the first read (most flows read the
** label, the status and maybe one field). */
void fr_push_response(lua_State *L, fr_call *c, int label) {
  const char *src[5];
  size_t n[5], total = 0;
  blob *b;
  int top = lua_gettop(L);
  bool errors = c->label == LABEL_ERROR || c->label == LABEL_TIMEOUT
             || c->label == LABEL_MAXCONN;
  src[B_HEADERS] = c->status ? c->rhdr.p : NULL;
  n[B_HEADERS] = src[B_HEADERS] ? c->rhdr.len : 0;
  src[B_BODY] = c->status ? c->rbody.p : NULL;
  n[B_BODY] = src[B_BODY] ? c->rbody.len : 0;
  src[B_URL] = c->rq.url;
  n[B_URL] = c->rq.url ? strlen(c->rq.url) : 0;
  src[B_ERROR] = errors ? c->error : NULL;
  n[B_ERROR] = src[B_ERROR] ? strlen(c->error) : 0;
  src[B_REASON] = errors ? c->reason : NULL;
  n[B_REASON] = src[B_REASON] ? strlen(c->reason) : 0;
  /* the URL and the error hidden now, with the secrets of now (a token
  ** retired later is hidden all the same), as Lua strings: a memory error
  ** leaks nothing; none to hide, the common case, copies them as they are */
  if (fr_has_secrets(c->rt))
    for (int i = B_URL; i <= B_ERROR; i++)
      if (n[i]) {
        fr_push_redacted(L, c->rt, src[i], n[i]);
        src[i] = lua_tolstring(L, -1, &n[i]);
      }
  for (int i = 0; i < 5; i++) total += n[i];
  lua_createtable(L, 0, 4);             /* label, status, the blob; more when read */
  if (label) lua_pushvalue(L, label);
  else lua_pushstring(L, c->label);
  lua_setfield(L, -2, "label");
  if (c->status) {
    lua_pushinteger(L, c->status);
    lua_setfield(L, -2, "status");
  }
  b = lua_newuserdatauv(L, sizeof *b + total, 0);
  b->mark = &raw_key;
  b->elapsed_ms = (lua_Integer)(c->t0 + 0.5);
  b->attempts = c->attempts;
  b->errors = errors;
  b->plain = false;
  for (size_t i = 0, at = 0; i < 5; at += n[i], i++) {
    b->n[i] = n[i];
    if (n[i]) memcpy(b->data + at, src[i], n[i]);
  }
  lua_rawsetp(L, -2, &raw_key);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mt_key);
  lua_setmetatable(L, -2);
  if (lua_gettop(L) > top + 1) {        /* the hidden strings under it go */
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
  }
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
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &mt_key);
  }
  lua_pop(L, 1);
}
