/*
** rules.c -- the rules of an api_node spec and the sandbox allow-lists.
**
** One table, read by the runtime that enforces the rules (request.c,
** integrations.c, sandbox.c) and, through rules() of flowrun.runtime, by
** the tools that find the same mistakes before anything runs (nodespec.lua
** for flowrun check, loader.lua for the sandbox of a checked flow file).
** A message is written once here; a rule whose logic both sides need
** (a path, a header) is a C function that rules() hands to Lua.
*/
#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>

#include "rules.h"

const fr_field fr_fields[F_NFIELDS] = {
  { "integration",     LUA_TSTRING, "a string" },
  { "endpoint",        LUA_TSTRING, "\"integration.endpoint\"" },
  { "method",          LUA_TSTRING, "a string" },
  { "path",            LUA_TSTRING, "a string" },
  { "params",          LUA_TTABLE,  "a table" },
  { "query",           LUA_TTABLE,  "a table" },
  { "query_separator", LUA_TSTRING, "\"&\" or \";\"" },
  { "headers",         LUA_TTABLE,  "a table" },
  { "body",            LUA_TNONE,   "a table or a string" },
  { "form",            LUA_TTABLE,  "a table" },
  { "results",         LUA_TTABLE,  "an array like {\"200\", \"404\"}" },
  { "timeout_ms",      LUA_TNONE,   "a positive integer" },
  { "deadline_ms",     LUA_TNONE,   "a positive integer" },
  { "multipart",       LUA_TTABLE,  "an array of parts like { { name = \"title\", value = \"x\" } }" },
};

const char *const fr_methods[] = {
  "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", NULL
};

const char *fr_method(const char *m) {
  for (int i = 0; fr_methods[i]; i++)
    if (strcmp(fr_methods[i], m) == 0) return fr_methods[i];
  return NULL;
}

void fr_push_methods_text(lua_State *L) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 0; fr_methods[i]; i++) {
    if (i > 0) luaL_addstring(&b, fr_methods[i + 1] ? ", " : " or ");
    luaL_addstring(&b, fr_methods[i]);
  }
  luaL_pushresult(&b);
}

/* The default labels, compared by address where a call's label is one. */
const char LABEL_OTHER[] = "other", LABEL_ERROR[] = "error",
  LABEL_TIMEOUT[] = "timeout", LABEL_MAXCONN[] = "max-connection";
const char *const fr_default_labels[] = { LABEL_OTHER, LABEL_ERROR, LABEL_TIMEOUT, LABEL_MAXCONN, NULL };

static bool is_code(const char *s) {
  return s[0] >= '1' && s[0] <= '5' && isdigit((unsigned char)s[1])
      && isdigit((unsigned char)s[2]) && s[3] == '\0';
}

static bool is_class(const char *s, bool any_case) {
  return s[0] >= '1' && s[0] <= '5' && (s[1] == 'x' || (any_case && s[1] == 'X'))
      && (s[2] == 'x' || (any_case && s[2] == 'X')) && s[3] == '\0';
}

int fr_result_kind(const char *s, size_t len) {
  if (strlen(s) != len) return FR_NOT_RESULT;
  if (is_code(s)) return FR_RESULT_CODE;
  if (is_class(s, false)) return FR_RESULT_CLASS;
  for (int k = 0; fr_default_labels[k]; k++) {
    if (strcmp(s, fr_default_labels[k]) == 0) return FR_RESULT_DEFAULT;
    if (strcasecmp(s, fr_default_labels[k]) == 0) return FR_RESULT_UPPER;
  }
  return is_class(s, true) ? FR_RESULT_UPPER : FR_NOT_RESULT;
}

#define FR_MESSAGE_TEXT(id, text) text,
const char *const fr_messages[M_NMESSAGES] = { FR_MESSAGES(FR_MESSAGE_TEXT) };
#undef FR_MESSAGE_TEXT

#define FR_MESSAGE_NAME(id, text) #id,
static const char *const message_names[M_NMESSAGES] = { FR_MESSAGES(FR_MESSAGE_NAME) };
#undef FR_MESSAGE_NAME

/* As luaL_error: the caller's position, then the message. */
int fr_api_error(lua_State *L, int id, ...) {
  va_list ap;
  luaL_where(L, 1);
  lua_pushliteral(L, "api_node: ");
  va_start(ap, id);
  lua_pushvfstring(L, fr_messages[id], ap);
  va_end(ap);
  lua_concat(L, 3);
  return lua_error(L);
}

/* libcurl would refuse a space or control character in the URL, or cut a
** fragment at '#'; it would remove a "." or ".." segment, sending the
** request elsewhere than res.url says, even above base_url's path. */
const char *fr_path_problem(const char *path) {
  const char *p = path, *seg = path, *close;
  bool in_query = false;
  for (;; p++) {
    if (*p == '{' && (close = strchr(p, '}'))) p = close;
    else if ((unsigned char)*p < 0x20 && *p != '\0') break;
    else if (*p == ' ' || *p == 0x7f || *p == '#') break;
    if (!in_query && (*p == '/' || *p == '?' || *p == '\0')) {
      size_t n = (size_t)(p - seg);
      if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
        return "\".\" and \"..\" segments are not allowed (a path stays under base_url)";
      seg = p + 1;
      in_query = *p == '?';
    }
    if (*p == '\0') return NULL;
  }
  return "spaces, control characters and '#' are not allowed "
         "(percent-encode them, or give the value in params)";
}

const char *const fr_flow_primitives[] = {
  "api_node", "api_pages", "say", "ask", "sleep", "run_flow", "continue_as_new", "log", "json", NULL
};

const char *const fr_flow_base[] = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select",
  "tonumber", "tostring", "type", "rawequal", "rawget", "rawlen",
  "getmetatable", "_VERSION", NULL
};

const char *const fr_flow_libs[] = { "string", "table", "math", "utf8", "coroutine", NULL };

const char *const fr_flow_os[] = { "time", "clock", "date", "difftime", NULL };

const char *const fr_integrations_base[] = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "select",
  "tonumber", "tostring", "type", "string", "table", "math", "utf8", NULL
};

/* path_problem(path) -> why api_node refuses the path, or nil */
/* A header name is an HTTP token; a value holds no CR, LF or NUL. The
** headers that frame the message or pick the connection are flowrun's:
** a Content-Length that disagrees with the body would let the rest of the
** body be read as a second request on the kept-alive connection. */
const char *fr_header_problem(const char *name, const char *value, size_t vlen) {
  static const struct { const char *name, *why; } reserved[] = {
    { "Content-Length", "flowrun sets it from the body" },
    { "Transfer-Encoding", "flowrun sets it from the body" },
    { "Host", "flowrun sets it from base_url" },
    { "Connection", "flowrun manages the connections (keep-alive, pool)" },
  };
  if (!*name) return "empty header name";
  for (const char *p = name; *p; p++)
    if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
      return "header names are letters, digits and !#$%&'*+-.^_`|~";
  for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
    if (strcasecmp(name, reserved[i].name) == 0) return reserved[i].why;
  for (size_t i = 0; i < vlen; i++)
    if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
      return "CR, LF or NUL in a header value";
  return NULL;
}

/* A string key of the part at idx: NULL when absent, else a problem (on
** the stack) unless it is a string without NUL (a number, with num). */
static const char *part_string(lua_State *L, int idx, const char *key, bool num,
                               bool *has) {
  size_t len;
  int t = lua_getfield(L, idx, key);
  *has = t != LUA_TNIL;
  if (t == LUA_TNIL || (num && t == LUA_TNUMBER)) {
    lua_pop(L, 1);
    return NULL;
  }
  if (t != LUA_TSTRING)
    return lua_pushfstring(L, "%s: expected a string%s, got %s", key,
                           num ? " or a number" : "", luaL_typename(L, -1));
  const char *s = lua_tolstring(L, -1, &len);
  if (strcmp(key, "data") != 0 && strcmp(key, "value") != 0 && strlen(s) != len)
    return lua_pushfstring(L, "%s: a NUL byte in the string", key);
  lua_pop(L, 1);
  return NULL;
}

const char *fr_part_problem(lua_State *L, int idx) {
  static const char *const keys[] = { "name", "value", "data", "filename", "content_type", NULL };
  const char *why;
  bool has[5];
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    return lua_pushfstring(L, "expected a table like { name = \"file\", filename = \"a.txt\", "
                           "data = \"...\" }, got %s", luaL_typename(L, idx));
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int k = 0;
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
      while (keys[k] && strcmp(keys[k], lua_tostring(L, -1)) != 0) k++;
    if (lua_type(L, -1) != LUA_TSTRING || !keys[k])
      return lua_pushfstring(L, "unknown key '%s' (a part has name, value or data, "
                             "filename, content_type)", luaL_tolstring(L, -1, NULL));
  }
  for (int k = 0; keys[k]; k++)
    if ((why = part_string(L, idx, keys[k], k == 1, &has[k]))) return why;
  lua_getfield(L, idx, "name");
  bool empty = !has[0] || lua_rawlen(L, -1) == 0;
  lua_pop(L, 1);
  if (empty) return lua_pushliteral(L, "name: a non-empty string is required");
  if (has[1] && has[2]) return lua_pushliteral(L, "give value (a field) or data (a file), not both");
  if (!has[1] && !has[2]) return lua_pushliteral(L, "value (a field) or data (a file) is required");
  if (has[1] && (has[3] || has[4]))
    return lua_pushfstring(L, "%s goes with data (a file), not value", has[3] ? "filename" : "content_type");
  if (has[4]) {
    lua_getfield(L, idx, "content_type");
    const char *t = lua_tostring(L, -1);
    for (; *t; t++)
      if ((unsigned char)*t < 0x20 || *t == 0x7f) {
        lua_pop(L, 1);
        return lua_pushliteral(L, "content_type: control characters are not allowed");
      }
    lua_pop(L, 1);
  }
  return NULL;
}

/* part_problem(part) -> why api_node refuses the multipart part, or nil */
static int l_part_problem(lua_State *L) {
  lua_settop(L, 1);
  if (!fr_part_problem(L, 1)) lua_pushnil(L);
  return 1;
}

static int l_path_problem(lua_State *L) {
  lua_pushstring(L, fr_path_problem(luaL_checkstring(L, 1)));   /* NULL: nil */
  return 1;
}

/* header_problem(name [, value]) -> why api_node refuses the header, or
** nil; a value that is not a string (a number) is not looked at. */
static int l_header_problem(lua_State *L) {
  size_t vlen = 0;
  const char *name = luaL_checkstring(L, 1), *value = "";
  if (lua_type(L, 2) == LUA_TSTRING) value = lua_tolstring(L, 2, &vlen);
  lua_pushstring(L, fr_header_problem(name, value, vlen));   /* NULL: nil */
  return 1;
}

/* result_kind(s) -> "code", "class", "default", "upper" (a label or class
** in the wrong case) or nil, as api_node reads a result name */
static int l_result_kind(lua_State *L) {
  static const char *const kinds[] = { NULL, "code", "class", "default", "upper" };
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushstring(L, kinds[fr_result_kind(s, len)]);   /* NULL: nil */
  return 1;
}

/* Pushes the NULL-terminated list as an array. */
static void push_list(lua_State *L, const char *const *list) {
  lua_newtable(L);
  for (int i = 0; list[i]; i++) {
    lua_pushstring(L, list[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

void fr_push_rules(lua_State *L) {
  lua_createtable(L, 0, 8);
  lua_createtable(L, F_NFIELDS, 0);     /* fields: { name, type, want } in order */
  for (int i = 0; i < F_NFIELDS; i++) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, fr_fields[i].name);
    lua_setfield(L, -2, "name");
    if (fr_fields[i].type != LUA_TNONE) {
      lua_pushstring(L, lua_typename(L, fr_fields[i].type));
      lua_setfield(L, -2, "type");
    }
    lua_pushstring(L, fr_fields[i].want);
    lua_setfield(L, -2, "want");
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "fields");
  push_list(L, fr_methods);
  lua_setfield(L, -2, "methods");
  push_list(L, fr_default_labels);
  lua_setfield(L, -2, "labels");
  fr_push_methods_text(L);
  lua_setfield(L, -2, "methods_text");
  lua_createtable(L, 0, M_NMESSAGES);   /* messages: { unknown_field = "...", ... } */
  for (int i = 0; i < M_NMESSAGES; i++) {
    char name[32];
    size_t n = strlen(message_names[i]);
    for (size_t k = 0; k <= n && k < sizeof name; k++)
      name[k] = (char)tolower((unsigned char)message_names[i][k]);
    name[sizeof name - 1] = '\0';
    lua_pushstring(L, fr_messages[i]);
    lua_setfield(L, -2, name);
  }
  lua_setfield(L, -2, "messages");
  lua_createtable(L, 0, 2);             /* sandbox */
  lua_createtable(L, 0, 4);
  push_list(L, fr_flow_primitives);
  lua_setfield(L, -2, "primitives");
  push_list(L, fr_flow_base);
  lua_setfield(L, -2, "base");
  push_list(L, fr_flow_libs);
  lua_setfield(L, -2, "libs");
  push_list(L, fr_flow_os);
  lua_setfield(L, -2, "os");
  lua_setfield(L, -2, "flows");
  push_list(L, fr_integrations_base);
  lua_setfield(L, -2, "integrations");
  lua_setfield(L, -2, "sandbox");
  lua_pushcfunction(L, l_path_problem);
  lua_setfield(L, -2, "path_problem");
  lua_pushcfunction(L, l_header_problem);
  lua_setfield(L, -2, "header_problem");
  lua_pushcfunction(L, l_result_kind);
  lua_setfield(L, -2, "result_kind");
  lua_pushcfunction(L, l_part_problem);
  lua_setfield(L, -2, "part_problem");
}
