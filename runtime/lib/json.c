/*
** json.c -- the `json` module of flows: an exact JSON codec.
**
** Integers go out and come back exactly (64-bit ids), floats are written in
** the shortest form that reads back as the same double, `[]` survives a
** round trip (json.empty_array, json.array_mt), and nesting deeper than
** MAXDEPTH is an error, never a C stack overflow. The module has no
** settings: all flows share it, so none can change it for the others.
** Strings are byte-transparent (no UTF-8 check), as lua-cjson's are.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "base.h"
#include "json.h"

#define MAXDEPTH 1000

static const char array_mt_key = 0;     /* registry: json.array_mt */
const char fr_json_empty_array = 0;    /* json.empty_array is its address */

/* ---- a growing byte buffer ---- */

/* Text being built. It starts in `init`; once larger it lives in a userdata
** kept at stack index `box`, so an error raised midway frees it. */
typedef struct {
  lua_State *L;
  char *b;
  size_t n, size;
  int box;
  char init[1024];
} buf;

/* Sets B up; pushes the placeholder its box takes the place of. */
static void buf_init(lua_State *L, buf *B) {
  B->L = L;
  B->b = B->init;
  B->n = 0;
  B->size = sizeof B->init;
  lua_pushnil(L);
  B->box = lua_gettop(L);
}

/* Makes room for len more bytes; needs one free stack slot. */
static void reserve(buf *B, size_t len) {
  size_t size = B->size;
  char *b;
  if (B->size - B->n >= len) return;
  while (size - B->n < len) {
    if (size > ((size_t)-1) / 4) luaL_error(B->L, "json: text too large");
    size *= 2;
  }
  b = lua_newuserdatauv(B->L, size, 0);
  memcpy(b, B->b, B->n);
  lua_replace(B->L, B->box);
  B->b = b;
  B->size = size;
}

static void put(buf *B, const char *s, size_t len) {
  reserve(B, len);
  memcpy(B->b + B->n, s, len);
  B->n += len;
}

static void putch(buf *B, char c) {
  if (B->n == B->size) reserve(B, 1);
  B->b[B->n++] = c;
}

/* Pushes json.array_mt, making it on first use. It is shared by every
** session: a metatable of its own refuses new keys, so that a flow cannot
** give all decoded arrays an __index. */
void fr_json_push_array_mt(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_newtable(L);
  luaL_loadstring(L, "error('json.array_mt cannot be changed', 2)");
  lua_setfield(L, -2, "__newindex");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &array_mt_key);
}

/* ---- encoding ---- */

/* Writes i in decimal to s; returns the length. */
static int fmt_integer(char *s, lua_Integer i) {
  char t[24];
  int n = 0, len = 0;
  lua_Unsigned u = i < 0 ? 0u - (lua_Unsigned)i : (lua_Unsigned)i;
  do t[n++] = (char)('0' + u % 10); while ((u /= 10) != 0);
  if (i < 0) s[len++] = '-';
  while (n) s[len++] = t[--n];
  return len;
}

/* Writes the finite d to s (32 bytes) in the fewest digits that read back
** as d: a double that 15 digits hold prints the same in %.15g, one that
** needs more is found at 16 or 17 (17 always suffice). A whole float gets
** ".0", so that it comes back a float. Returns the length. */
static int fmt_double(char *s, double d, int keep_float) {
  int len = 0;
  for (int prec = 15; prec <= 17; prec++) {
    len = snprintf(s, 32, "%.*g", prec, d);
    if (prec == 17 || strtod(s, NULL) == d) break;
  }
  if (keep_float && !strpbrk(s, ".e")) {
    s[len++] = '.';
    s[len++] = '0';
    s[len] = '\0';
  }
  return len;
}

/* What each byte becomes in a JSON string: 0 itself, 'u' \u00XX, another
** letter that letter after a backslash. */
static const char escape[256] = {
  'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
  'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
  0, 0, '"', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '/',
  ['\\'] = '\\', [127] = 'u',
};

static void enc_string(buf *B, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  size_t i, run = 0;
  putch(B, '"');
  for (i = 0; i < len; i++) {
    char e = escape[(unsigned char)s[i]];
    if (!e) continue;
    put(B, s + run, i - run);
    run = i + 1;
    if (e == 'u') {
      char u[6] = { '\\', 'u', '0', '0', hex[(unsigned char)s[i] >> 4], hex[s[i] & 15] };
      put(B, u, 6);
    } else {
      char c[2] = { '\\', e };
      put(B, c, 2);
    }
  }
  put(B, s + run, len - run);
  putch(B, '"');
}

static void enc_number(lua_State *L, buf *B, int i) {
  char s[32];
  int len;
  if (lua_isinteger(L, i)) len = fmt_integer(s, lua_tointeger(L, i));
  else {
    lua_Number d = lua_tonumber(L, i);
    if (!isfinite(d))
      luaL_error(L, "json.encode: cannot encode %s (JSON has no NaN or infinity)",
                 isnan(d) ? "NaN" : d > 0 ? "inf" : "-inf");
    len = fmt_double(s, d, 1);
  }
  put(B, s, (size_t)len);
}

static void enc_value(lua_State *L, buf *B, int i, int depth);

/* Writes the key at the top of the stack as an object key. */
static void enc_key(lua_State *L, buf *B) {
  char s[34];
  int len = 0;
  switch (lua_type(L, -1)) {
  case LUA_TSTRING: {
    size_t n;
    const char *k = lua_tolstring(L, -1, &n);
    enc_string(B, k, n);
    break;
  }
  case LUA_TNUMBER:                     /* {1, x = 2}: "1" */
    s[0] = '"';
    if (lua_isinteger(L, -1)) len = fmt_integer(s + 1, lua_tointeger(L, -1));
    else if (isfinite(lua_tonumber(L, -1))) len = fmt_double(s + 1, lua_tonumber(L, -1), 0);
    else luaL_error(L, "json.encode: cannot encode a NaN or infinite key");
    s[len + 1] = '"';
    put(B, s, (size_t)len + 2);
    break;
  default:
    luaL_error(L, "json.encode: a table key must be a string or a number, not a %s",
               luaL_typename(L, -1));
  }
  putch(B, ':');
}

/* A table is an array when its metatable is json.array_mt (then it is
** t[1..#t]) or when all its keys are positive integers and it is not empty
** (then it is t[1..max key], holes as null, refused when more than half
** holes past index 10, as lua-cjson does). Other tables are objects. */
static void enc_table(lua_State *L, buf *B, int t, int depth) {
  lua_Integer n = 0, count = 0, i;
  int array = 0;
  if (depth > MAXDEPTH)
    luaL_error(L, "json.encode: tables nested deeper than %d (a table that contains itself?)",
               MAXDEPTH);
  luaL_checkstack(L, 6, "json.encode");
  if (lua_getmetatable(L, t)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
    array = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!array && luaL_getmetafield(L, t, "__pairs") != LUA_TNIL) {
      lua_pushvalue(L, t);              /* a table that builds its fields when iterated */
      lua_call(L, 1, 0);                /* (a response) is complete before it is read */
    }
  }
  if (array) n = (lua_Integer)lua_rawlen(L, t);
  else {
    lua_pushnil(L);
    while (lua_next(L, t)) {
      lua_pop(L, 1);
      if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
        if (lua_tointeger(L, -1) > n) n = lua_tointeger(L, -1);
        count++;
      } else {
        lua_pop(L, 1);
        n = -1;
        break;
      }
    }
    if (n > 10 && n > 2 * count)
      luaL_error(L, "json.encode: an excessively sparse array (index %I with %I values); "
                 "fill its holes with json.null", n, count);
    array = n > 0;
  }
  if (array) {
    putch(B, '[');
    for (i = 1; i <= n; i++) {
      if (i > 1) putch(B, ',');
      lua_rawgeti(L, t, i);
      enc_value(L, B, lua_gettop(L), depth + 1);
      lua_pop(L, 1);
    }
    putch(B, ']');
    return;
  }
  putch(B, '{');
  lua_pushnil(L);
  for (i = 0; lua_next(L, t); i++) {
    if (i) putch(B, ',');
    lua_pushvalue(L, -2);
    enc_key(L, B);
    lua_pop(L, 1);
    enc_value(L, B, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
  }
  putch(B, '}');
}

static void enc_value(lua_State *L, buf *B, int i, int depth) {
  switch (lua_type(L, i)) {
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, i, &len);
    enc_string(B, s, len);
    return;
  }
  case LUA_TNUMBER: enc_number(L, B, i); return;
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, i)) put(B, "true", 4);
    else put(B, "false", 5);
    return;
  case LUA_TNIL: put(B, "null", 4); return;
  case LUA_TTABLE: enc_table(L, B, i, depth); return;
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, i) == NULL) { put(B, "null", 4); return; }
    if (lua_touserdata(L, i) == &fr_json_empty_array) { put(B, "[]", 2); return; }
    /* FALLTHROUGH */
  default:
    luaL_error(L, "json.encode: cannot encode a %s", luaL_typename(L, i));
  }
}

/* json.encode(value) -> text. Also api_node's body encoder. */
int fr_json_encode(lua_State *L) {
  buf B;
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  buf_init(L, &B);
  enc_value(L, &B, 1, 0);
  lua_pushlstring(L, B.b, B.n);
  return 1;
}

/* ---- decoding ---- */

/* The text is a Lua string, so *e is '\0': scanning stops there. */
typedef struct {
  lua_State *L;
  const char *s, *p, *e;                /* text, position, end */
  buf B;                                /* unescaped strings */
} dec;

/* Raises "Expected <expected> but found <what is at D->p> at character N". */
_Noreturn static void dec_error(dec *D, const char *expected) {
  const char *p = D->p;
  char found[16];
  if (p >= D->e) snprintf(found, sizeof found, "the end");
  else if (*p > ' ' && *p < 127) snprintf(found, sizeof found, "'%c'", *p);
  else snprintf(found, sizeof found, "byte 0x%02X", (unsigned)(unsigned char)*p);
  luaL_error(D->L, "Expected %s but found %s at character %I", expected, found,
             (lua_Integer)(p - D->s) + 1);
  __builtin_unreachable();              /* luaL_error does not return */
}

/* Raises "<what> at character N", N the position of at. */
_Noreturn static void dec_invalid(dec *D, const char *what, const char *at) {
  luaL_error(D->L, "%s at character %I", what, (lua_Integer)(at - D->s) + 1);
  __builtin_unreachable();              /* luaL_error does not return */
}

static void skip_space(dec *D) {
  while (*D->p == ' ' || *D->p == '\n' || *D->p == '\r' || *D->p == '\t') D->p++;
}

#define DIGIT(c) ((c) >= '0' && (c) <= '9')

/* A number with '.', 'e' or 'E' is a float; another is an integer when it
** fits 64 bits, else a float (approximate). Pushes it. */
static void dec_number(dec *D) {
  const char *start = D->p, *p = D->p;
  int neg = *p == '-', isfloat = 0;
  p += neg;
  if (*p == '0') p++;
  else if (DIGIT(*p)) while (DIGIT(*p)) p++;
  else dec_invalid(D, "Expected value but found invalid token", start);
  if (*p == '.') {
    if (!DIGIT(p[1])) dec_invalid(D, "Expected a digit after '.'", p + 1);
    for (p++; DIGIT(*p); p++) {}
    isfloat = 1;
  }
  if (*p == 'e' || *p == 'E') {
    p += (p[1] == '+' || p[1] == '-') ? 2 : 1;
    if (!DIGIT(*p)) dec_invalid(D, "Expected a digit in the exponent", p);
    while (DIGIT(*p)) p++;
    isfloat = 1;
  }
  D->p = p;
  if (!isfloat) {
    lua_Unsigned u = 0, max = (lua_Unsigned)LUA_MAXINTEGER + (lua_Unsigned)neg;
    const char *q;
    for (q = start + neg; q < p; q++) {
      unsigned d = (unsigned)(*q - '0');
      if (u > (max - d) / 10) break;
      u = u * 10 + d;
    }
    if (q == p) {
      lua_pushinteger(D->L, neg ? (lua_Integer)(0u - u) : (lua_Integer)u);
      return;
    }
  }
  lua_pushnumber(D->L, strtod(start, NULL));  /* stops where p does */
}

/* The 4 hex digits at p, or -1. */
static long hex4(const char *p, const char *e) {
  long v = 0;
  if (e - p < 4) return -1;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    int d = DIGIT(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10
          : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

/* Adds code point c to B as UTF-8. */
static void put_utf8(buf *B, unsigned long c) {
  char u[4];
  size_t n;
  if (c < 0x80) { u[0] = (char)c; n = 1; }
  else if (c < 0x800) { u[0] = (char)(0xC0 | c >> 6); n = 2; }
  else if (c < 0x10000) { u[0] = (char)(0xE0 | c >> 12); n = 3; }
  else { u[0] = (char)(0xF0 | c >> 18); n = 4; }
  for (size_t i = n - 1; i > 0; i--, c >>= 6) u[i] = (char)(0x80 | (c & 0x3F));
  put(B, u, n);
}

/* Reads the \u escape at p (at the 'u'); a UTF-16 pair makes one code
** point, a lone surrogate becomes U+FFFD. Returns the position after it. */
static const char *dec_unicode(dec *D, const char *p) {
  long c = hex4(p + 1, D->e), lo;
  if (c < 0) dec_invalid(D, "Expected 4 hex digits after \\u", p + 1);
  p += 5;
  if (c >= 0xD800 && c <= 0xDBFF && p[0] == '\\' && p[1] == 'u'
      && (lo = hex4(p + 2, D->e)) >= 0xDC00 && lo <= 0xDFFF) {
    c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
    p += 6;
  } else if (c >= 0xD800 && c <= 0xDFFF) {
    c = 0xFFFD;
  }
  put_utf8(&D->B, (unsigned long)c);
  return p;
}

/* Pushes the string at D->p (at its '"'). */
static void dec_string(dec *D) {
  const char *open = D->p, *p = D->p + 1, *run = p, *e = D->e;
  while (p < e && *p != '"' && *p != '\\') p++;
  if (p < e && *p == '"') {             /* no escapes: no copy */
    lua_pushlstring(D->L, run, (size_t)(p - run));
    D->p = p + 1;
    return;
  }
  D->B.n = 0;
  for (;;) {
    put(&D->B, run, (size_t)(p - run));
    if (p >= e) dec_invalid(D, "Unterminated string", open);
    if (*p == '"') break;
    switch (*++p) {                     /* after the backslash */
    case '"': case '\\': case '/': putch(&D->B, *p); p++; break;
    case 'b': putch(&D->B, '\b'); p++; break;
    case 'f': putch(&D->B, '\f'); p++; break;
    case 'n': putch(&D->B, '\n'); p++; break;
    case 'r': putch(&D->B, '\r'); p++; break;
    case 't': putch(&D->B, '\t'); p++; break;
    case 'u': p = dec_unicode(D, p); break;
    default:
      if (p >= e) dec_invalid(D, "Unterminated string", open);
      dec_invalid(D, "Invalid escape in string", p - 1);
    }
    run = p;
    while (p < e && *p != '"' && *p != '\\') p++;
  }
  lua_pushlstring(D->L, D->B.b, D->B.n);
  D->p = p + 1;
}

static void dec_value(dec *D, int depth);

/* Pushes the array at D->p (at its '['), with json.array_mt. */
static void dec_array(dec *D, int depth) {
  lua_Integer n = 0;
  lua_createtable(D->L, 0, 0);
  lua_pushvalue(D->L, 3);
  lua_setmetatable(D->L, -2);
  D->p++;
  skip_space(D);
  if (*D->p == ']') { D->p++; return; }
  for (;;) {
    dec_value(D, depth);
    lua_rawseti(D->L, -2, ++n);
    skip_space(D);
    if (*D->p == ']') { D->p++; return; }
    if (*D->p != ',') dec_error(D, "comma or array end");
    D->p++;
  }
}

/* Pushes the object at D->p (at its '{'); a repeated key keeps its last value. */
static void dec_object(dec *D, int depth) {
  lua_createtable(D->L, 0, 0);
  D->p++;
  skip_space(D);
  if (*D->p == '}') { D->p++; return; }
  for (;;) {
    skip_space(D);
    if (*D->p != '"') dec_error(D, "object key string");
    dec_string(D);
    skip_space(D);
    if (*D->p != ':') dec_error(D, "colon");
    D->p++;
    dec_value(D, depth);
    lua_rawset(D->L, -3);
    skip_space(D);
    if (*D->p == '}') { D->p++; return; }
    if (*D->p != ',') dec_error(D, "comma or object end");
    D->p++;
  }
}

/* Pushes the value at D->p; depth is how many arrays and objects hold it. */
static void dec_value(dec *D, int depth) {
  const char *p;
  skip_space(D);
  p = D->p;
  switch (*p) {
  case '[': case '{':
    if (depth >= MAXDEPTH)
      luaL_error(D->L, "Too deep: more than %d nested arrays and objects at character %I",
                 MAXDEPTH, (lua_Integer)(p - D->s) + 1);
    luaL_checkstack(D->L, 4, "json.decode");
    if (*p == '[') dec_array(D, depth + 1);
    else dec_object(D, depth + 1);
    return;
  case '"': dec_string(D); return;
  case 't':
    if (D->e - p >= 4 && memcmp(p, "true", 4) == 0) {
      lua_pushboolean(D->L, 1);
      D->p += 4;
      return;
    }
    break;
  case 'f':
    if (D->e - p >= 5 && memcmp(p, "false", 5) == 0) {
      lua_pushboolean(D->L, 0);
      D->p += 5;
      return;
    }
    break;
  case 'n':
    if (D->e - p >= 4 && memcmp(p, "null", 4) == 0) {
      lua_pushlightuserdata(D->L, NULL);
      D->p += 4;
      return;
    }
    break;
  default:
    if (*p == '-' || DIGIT(*p)) { dec_number(D); return; }
    if (p >= D->e) dec_invalid(D, "Expected value but found the end", p);
  }
  dec_invalid(D, "Expected value but found invalid token", p);
}

/* json.decode(text) -> value. Also what a response's json is made by. */
int fr_json_decode(lua_State *L) {
  size_t len;
  dec D;
  D.L = L;
  D.s = D.p = luaL_checklstring(L, 1, &len);
  D.e = D.s + len;
  lua_settop(L, 1);
  buf_init(L, &D.B);                    /* index 2 */
  fr_json_push_array_mt(L);             /* index 3 */
  dec_value(&D, 0);
  skip_space(&D);
  if (D.p < D.e) dec_error(&D, "the end");
  return 1;
}

/* ---- the module ---- */

/* Opens the module; also what require "json" returns. One table per
** state, made once: encode, decode, null, empty_array, array_mt. */
int fr_open_json(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "flowrun.json") == LUA_TTABLE) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 6);
  lua_pushcfunction(L, fr_json_encode);
  lua_setfield(L, -2, "encode");
  lua_pushcfunction(L, fr_json_decode);
  lua_setfield(L, -2, "decode");
  lua_pushlightuserdata(L, NULL);       /* lua-cjson's null: same value */
  lua_setfield(L, -2, "null");
  lua_pushlightuserdata(L, (void *)&fr_json_empty_array);
  lua_setfield(L, -2, "empty_array");
  fr_json_push_array_mt(L);
  lua_setfield(L, -2, "array_mt");
  lua_pushliteral(L, "flowrun.json " FLOWRUN_VERSION);
  lua_setfield(L, -2, "_VERSION");
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "flowrun.json");
  lua_remove(L, -2);
  return 1;
}
