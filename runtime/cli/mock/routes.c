/*
** routes.c -- the routes of `flowrun mock`: reading the routes file
** into plain C data, freeing it, and matching requests against it.
**
** The routes file runs in its own Lua state, closed once every route is
** validated and copied, so serving never touches Lua. A bad route stops the
** server before it listens, with a message naming the file, the route and
** the key.
*/
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <lua-cjson.h>

#include "lib/json.h"
#include "mock.h"

#define MAX_DELAY  3600000            /* largest delay_ms */

static const char *const route_keys[] = {
  "method", "path", "status", "headers", "json", "body", "delay_ms", "fault",
  "echo", "times", "chunked", "query", "gzip", NULL
};

/* Resizes p to n bytes; running out of memory ends the process. */
void *mock_xrealloc(void *p, size_t n) {
  p = realloc(p, n ? n : 1);
  if (p == NULL) {
    fputs("flowrun mock: out of memory\n", stderr);
    abort();
  }
  return p;
}

/* Returns a NUL-terminated copy of the n bytes at s. */
char *mock_xstrndup(const char *s, size_t n) {
  char *d = mock_xrealloc(NULL, n + 1);
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

/* Appends the n bytes at s to b, keeping b NUL-terminated. */
void mock_buf_add(struct buf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    b->cap = (b->n + n + 1) * 2;
    b->p = mock_xrealloc(b->p, b->cap);
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

/* Appends the string s to b. */
void mock_buf_adds(struct buf *b, const char *s) {
  mock_buf_add(b, s, strlen(s));
}

/* Appends s JSON-escaped, without quotes. */
void mock_buf_esc(struct buf *b, const char *s, size_t n) {
  char tmp[8];
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char) s[i];
    if (c == '"' || c == '\\') {
      tmp[0] = '\\';
      tmp[1] = (char) c;
      mock_buf_add(b, tmp, 2);
    } else if (c < 0x20) {
      snprintf(tmp, sizeof tmp, "\\u%04x", c);
      mock_buf_add(b, tmp, 6);
    } else {
      mock_buf_add(b, s + i, 1);
    }
  }
}

/* Returns a new string: the n bytes at s percent-decoded ('+' is a space if plus). */
char *mock_pct_decode(const char *s, size_t n, int plus) {
  char *d = mock_xrealloc(NULL, n + 1);
  size_t j = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char) s[i + 1])
        && isxdigit((unsigned char) s[i + 2])) {
      char hex[3] = { s[i + 1], s[i + 2], '\0' };
      d[j++] = (char) strtol(hex, NULL, 16);
      i += 2;
    } else {
      d[j++] = (plus && s[i] == '+') ? ' ' : s[i];
    }
  }
  d[j] = '\0';
  return d;
}

/* Returns the index of capture name (n bytes) in r, or -1. */
static int capture_index(const struct route *r, const char *name, size_t n) {
  for (int k = 0; k < r->nsegs; k++) {
    const struct seg *s = &r->segs[k];
    if (s->cap >= 0 && strlen(s->text) == n && memcmp(s->text, name, n) == 0)
      return s->cap;
  }
  return -1;
}

/* Appends template t (n bytes) to b with each {name} of r's captures
** replaced by its value, JSON-escaped when json is set. */
void mock_render(struct buf *b, const char *t, size_t n,
                 const struct route *r, char **vals, int json) {
  size_t i = 0;
  while (r->ncaps > 0 && i < n) {
    const char *open = memchr(t + i, '{', n - i), *close;
    int k;
    if (open == NULL) break;
    mock_buf_add(b, t + i, (size_t) (open - t) - i);
    i = (size_t) (open - t);
    close = memchr(open, '}', n - i);
    k = close ? capture_index(r, open + 1, (size_t) (close - open - 1)) : -1;
    if (k < 0) {
      mock_buf_add(b, "{", 1);
      i++;
    } else {
      if (json) mock_buf_esc(b, vals[k], strlen(vals[k]));
      else mock_buf_adds(b, vals[k]);
      i = (size_t) (close - t) + 1;
    }
  }
  mock_buf_add(b, t + i, n - i);
}

/* Raises "FILE: route I: message". */
static int route_error(lua_State *L, const struct mock *m, int i,
                       const char *fmt, ...) {
  va_list ap;
  lua_pushfstring(L, "%s: route %d: ", m->file, i);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  return lua_error(L);
}

/* Pushes field k of the route table rt; raises unless it is nil or of type
** want. Returns whether it is present. */
static int field(lua_State *L, const struct mock *m, int i, int rt,
                 const char *k, int want) {
  int t = lua_getfield(L, rt, k);
  if (t != LUA_TNIL && t != want)
    route_error(L, m, i, "'%s' must be a %s, got %s", k, lua_typename(L, want),
                luaL_typename(L, -1));
  return t != LUA_TNIL;
}

/* Returns the integer on top of the stack; raises unless it lies in lo..hi. */
static lua_Integer int_in(lua_State *L, const struct mock *m, int i,
                          const char *k, lua_Integer lo, lua_Integer hi) {
  int isint;
  lua_Integer v = lua_tointegerx(L, -1, &isint);
  if (!isint || v < lo || v > hi)
    route_error(L, m, i, "'%s' must be an integer %I..%I, got %s", k, lo, hi,
                luaL_tolstring(L, -1, NULL));
  return v;
}

/* Returns whether the n bytes at s form a capture name. */
static int is_name(const char *s, size_t n) {
  if (n == 0 || !(isalpha((unsigned char) s[0]) || s[0] == '_')) return 0;
  for (size_t k = 1; k < n; k++)
    if (!(isalnum((unsigned char) s[k]) || s[k] == '_')) return 0;
  return 1;
}

/* Splits path into r's segments; a segment "{name}" is a capture. */
static void load_path(lua_State *L, const struct mock *m, int i,
                      struct route *r, const char *path) {
  const char *p = path + 1;
  if (path[0] != '/' || strchr(path, '?'))
    route_error(L, m, i, "'path' must start with '/' and have no query, got '%s'",
                path);
  for (;;) {
    size_t n = strcspn(p, "/");
    int cap = memchr(p, '{', n) != NULL || memchr(p, '}', n) != NULL;
    struct seg *s;
    if (cap && (n < 3 || p[0] != '{' || p[n - 1] != '}' || !is_name(p + 1, n - 2)))
      route_error(L, m, i, "path segment '%s' must be a whole capture like '{id}'",
                  lua_pushlstring(L, p, n));
    if (cap && capture_index(r, p + 1, n - 2) >= 0)
      route_error(L, m, i, "capture '%s' appears twice", lua_pushlstring(L, p, n));
    if (cap && r->ncaps == MAX_CAPS)
      route_error(L, m, i, "more than %d captures", MAX_CAPS);
    r->segs = mock_xrealloc(r->segs, (size_t) (r->nsegs + 1) * sizeof *r->segs);
    s = &r->segs[r->nsegs++];
    s->text = cap ? mock_xstrndup(p + 1, n - 2) : mock_xstrndup(p, n);
    s->cap = cap ? r->ncaps++ : -1;
    if (p[n] == '\0') break;
    p += n + 1;
  }
}

/* Copies the headers table on top of the stack into r. */
static void load_headers(lua_State *L, const struct mock *m, int i,
                         struct route *r) {
  int t = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    const char *name, *value;
    int many = lua_istable(L, -1), v = lua_gettop(L);
    if (lua_type(L, -2) != LUA_TSTRING || (!many && lua_type(L, -1) != LUA_TSTRING))
      route_error(L, m, i, "'headers' must map names to strings or arrays of strings");
    name = lua_tostring(L, -2);
    for (int j = 1; !many || j <= (int)lua_rawlen(L, v); j++) {
    if (many && lua_rawgeti(L, v, j) != LUA_TSTRING)
      route_error(L, m, i, "header '%s' must be an array of strings", name);
    value = lua_tostring(L, -1);
    if (*name == '\0' || name[strcspn(name, ":()<>@,;\\\"/[]?={} \t\r\n")] != '\0')
      route_error(L, m, i, "header name '%s' is not valid", name);
    if (strcasecmp(name, "Content-Length") == 0
        || strcasecmp(name, "Transfer-Encoding") == 0)
      route_error(L, m, i, "header '%s' is set by the server", name);
    if (strpbrk(value, "\r\n"))
      route_error(L, m, i, "header '%s' has a line break", name);
    if (strcasecmp(name, "Content-Type") == 0) r->has_ctype = 1;
    r->headers = mock_xrealloc(r->headers,
                               (size_t) (r->nheaders + 1) * sizeof *r->headers);
    r->headers[r->nheaders].name = mock_xstrndup(name, strlen(name));
    r->headers[r->nheaders].value = mock_xstrndup(value, strlen(value));
    r->nheaders++;
    if (!many) break;
    lua_pop(L, 1);
    }
    lua_settop(L, v - 1);
  }
}

/* Copies the route's query table on top of the stack (names to strings or
** numbers) into r->query. */
static void load_query(lua_State *L, const struct mock *m, int i, struct route *r) {
  int t = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (lua_type(L, -2) != LUA_TSTRING
        || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
      route_error(L, m, i, "'query' must map parameter names to strings");
    r->query = mock_xrealloc(r->query, (size_t) (r->nquery + 1) * sizeof *r->query);
    r->query[r->nquery].name = mock_xstrndup(lua_tostring(L, -2), strlen(lua_tostring(L, -2)));
    r->query[r->nquery].value = mock_xstrndup(lua_tostring(L, -1), strlen(lua_tostring(L, -1)));
    r->nquery++;
    lua_pop(L, 1);
  }
}

/* Validates the route table on top of the stack and copies it into r;
** enc is the stack index of the encoder (json.encode, exact numbers). */
static void load_route(lua_State *L, const struct mock *m, int i,
                       struct route *r, int enc) {
  int rt = lua_gettop(L);
  r->status = 200;
  if (!lua_istable(L, rt))
    route_error(L, m, i, "expected a table, got %s", luaL_typename(L, rt));
  lua_pushnil(L);
  while (lua_next(L, rt)) {
    int k = 0;
    if (lua_type(L, -2) == LUA_TSTRING)
      while (route_keys[k] && strcmp(route_keys[k], lua_tostring(L, -2)) != 0) k++;
    if (lua_type(L, -2) != LUA_TSTRING || route_keys[k] == NULL)
      route_error(L, m, i, "unknown key '%s'", luaL_tolstring(L, -2, NULL));
    lua_pop(L, 1);
  }
  if (field(L, m, i, rt, "method", LUA_TSTRING)) {
    r->method = mock_xstrndup(lua_tostring(L, -1), strlen(lua_tostring(L, -1)));
    for (char *c = r->method; *c; c++) *c = (char) toupper((unsigned char) *c);
  }
  if (!field(L, m, i, rt, "path", LUA_TSTRING))
    route_error(L, m, i, "'path' is required");
  load_path(L, m, i, r, lua_tostring(L, -1));
  if (field(L, m, i, rt, "status", LUA_TNUMBER))
    r->status = (int) int_in(L, m, i, "status", 100, 599);
  if (field(L, m, i, rt, "delay_ms", LUA_TNUMBER))
    r->delay_ms = (long) int_in(L, m, i, "delay_ms", 0, MAX_DELAY);
  if (field(L, m, i, rt, "fault", LUA_TSTRING)) {
    const char *f = lua_tostring(L, -1);
    if (strcmp(f, "no_response") == 0) r->fault = FAULT_NO_RESPONSE;
    else if (strcmp(f, "reset") == 0) r->fault = FAULT_RESET;
    else route_error(L, m, i, "'fault' must be 'no_response' or 'reset', got '%s'", f);
  }
  if (field(L, m, i, rt, "echo", LUA_TBOOLEAN))
    r->echo = lua_toboolean(L, -1);
  if (field(L, m, i, rt, "chunked", LUA_TBOOLEAN))
    r->chunked = lua_toboolean(L, -1);
  if (field(L, m, i, rt, "gzip", LUA_TBOOLEAN))
    r->gzip = lua_toboolean(L, -1);
  if (field(L, m, i, rt, "times", LUA_TNUMBER))
    r->times = (long) int_in(L, m, i, "times", 1, 0x7fffffff);
  if (field(L, m, i, rt, "body", LUA_TSTRING)) {
    const char *s = lua_tolstring(L, -1, &r->bodylen);
    r->body = mock_xstrndup(s, r->bodylen);
  }
  if (field(L, m, i, rt, "json", LUA_TTABLE)) {
    const char *s;
    if (r->body) route_error(L, m, i, "use 'json' or 'body', not both");
    lua_pushvalue(L, enc);
    lua_pushvalue(L, -2);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
      route_error(L, m, i, "'json' cannot be encoded: %s", lua_tostring(L, -1));
    s = lua_tolstring(L, -1, &r->bodylen);
    r->body = mock_xstrndup(s, r->bodylen);
    r->json = 1;
  }
  if (r->echo && r->body)
    route_error(L, m, i, "'echo' answers with the request: drop 'json' and 'body'");
  if (field(L, m, i, rt, "headers", LUA_TTABLE))
    load_headers(L, m, i, r);
  if (field(L, m, i, rt, "query", LUA_TTABLE))
    load_query(L, m, i, r);
  lua_settop(L, rt);
}

/* Runs the routes file and copies its routes into the mock (lightuserdata
** at index 1); raises on any error. */
static int l_load(lua_State *L) {
  struct mock *m = lua_touserdata(L, 1);
  int n, count = 0;
  luaL_requiref(L, "cjson", luaopen_cjson, 1);   /* the global cjson, as before */
  lua_pushcfunction(L, fr_json_encode);           /* index 3 */
  fr_open_json(L);                                /* json.null, json.empty_array */
  lua_setglobal(L, "json");
  if (luaL_loadfile(L, m->file) != LUA_OK) return lua_error(L);
  lua_call(L, 0, 1);                              /* index 4 */
  if (!lua_istable(L, 4))
    return luaL_error(L, "%s: must return an array of routes, got %s", m->file,
                      luaL_typename(L, 4));
  n = (int) lua_rawlen(L, 4);
  lua_pushnil(L);
  while (lua_next(L, 4)) {
    count++;
    lua_pop(L, 1);
  }
  if (count != n)
    return luaL_error(L, "%s: must return an array of routes, found other keys",
                      m->file);
  m->routes = mock_xrealloc(NULL, (size_t) n * sizeof *m->routes);
  memset(m->routes, 0, (size_t) n * sizeof *m->routes);
  m->nroutes = n;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 4, i);
    load_route(L, m, i, &m->routes[i - 1], 3);
    lua_pop(L, 1);
  }
  return 0;
}

#define LOAD_SECONDS 5                  /* a routes file that runs longer loops */
#define DEADLINE_KEY "flowrun.mock_deadline"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Every million instructions of the routes file: is its time up? The
** error names the file and line of the Lua code that runs, else the file. */
static void deadline_hook(lua_State *L, lua_Debug *ar) {
  lua_Debug d;
  int level = 0;
  (void)ar;
  lua_getfield(L, LUA_REGISTRYINDEX, DEADLINE_KEY);
  double due = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (now_s() <= due) return;
  lua_sethook(L, deadline_hook, LUA_MASKCOUNT, 1);   /* and a pcall meets it again */
  while (lua_getstack(L, level++, &d)) {
    lua_getinfo(L, "Sl", &d);
    if (d.currentline > 0)
      luaL_error(L, "%s:%d: still running after %d s: a loop that never ends?",
                 d.short_src, d.currentline, LOAD_SECONDS);
  }
  lua_getfield(L, LUA_REGISTRYINDEX, "flowrun.mock_file");
  luaL_error(L, "%s: still running after %d s: a loop that never ends?",
             lua_tostring(L, -1), LOAD_SECONDS);
}

/* Loads m->file into m->routes; prints the error and returns -1 on failure.
** A file that loops is stopped after LOAD_SECONDS, as an integrations
** file is. */
int mock_load_routes(struct mock *m) {
  lua_State *L = luaL_newstate();
  int rc = 0;
  if (L == NULL) return -1;
  luaL_openlibs(L);
  lua_pushstring(L, m->file);
  lua_setfield(L, LUA_REGISTRYINDEX, "flowrun.mock_file");
  lua_pushnumber(L, now_s() + LOAD_SECONDS);
  lua_setfield(L, LUA_REGISTRYINDEX, DEADLINE_KEY);
  lua_sethook(L, deadline_hook, LUA_MASKCOUNT, 1000000);
  lua_pushcfunction(L, l_load);
  lua_pushlightuserdata(L, m);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    rc = -1;
  }
  lua_close(L);
  return rc;
}

/* Frees every route, complete or not. */
void mock_free_routes(struct mock *m) {
  for (int i = 0; i < m->nroutes; i++) {
    struct route *r = &m->routes[i];
    for (int k = 0; k < r->nsegs; k++) free(r->segs[k].text);
    for (int k = 0; k < r->nheaders; k++) {
      free(r->headers[k].name);
      free(r->headers[k].value);
    }
    for (int k = 0; k < r->nquery; k++) {
      free(r->query[k].name);
      free(r->query[k].value);
    }
    free(r->query);
    free(r->method);
    free(r->segs);
    free(r->headers);
    free(r->body);
  }
  free(m->routes);
}

/* Returns whether r matches; if so sets vals to its decoded captures.
** path is the raw request path, n bytes, without the query. */
static int match(const struct route *r, const char *method, const char *path,
                 size_t n, char **vals) {
  const char *cs[MAX_CAPS], *p = path + 1, *end = path + n;
  size_t cl[MAX_CAPS];
  if ((r->method && strcmp(r->method, method) != 0) || n == 0 || path[0] != '/')
    return 0;
  for (int i = 0; i < r->nsegs; i++) {
    const struct seg *s = &r->segs[i];
    const char *e = memchr(p, '/', (size_t) (end - p));
    size_t len;
    if (e == NULL) e = end;
    len = (size_t) (e - p);
    if ((e == end) != (i == r->nsegs - 1)) return 0;
    if (s->cap < 0 && (strlen(s->text) != len || memcmp(s->text, p, len) != 0))
      return 0;
    if (s->cap >= 0) {
      if (len == 0) return 0;
      cs[s->cap] = p;
      cl[s->cap] = len;
    }
    p = e + 1;
  }
  for (int k = 0; k < r->ncaps; k++) vals[k] = mock_pct_decode(cs[k], cl[k], 0);
  return 1;
}

/* Does the query q (after '?', or "") have parameter name with value
** (both compared percent-decoded, '+' a space)? */
static int has_param(const char *q, const char *name, const char *value) {
  while (*q) {
    size_t n = strcspn(q, "&;"), k = strcspn(q, "=&;");
    char *key = mock_pct_decode(q, k, 1);
    char *val = mock_pct_decode(q + k + (k < n), n - k - (k < n), 1);
    int hit = strcmp(key, name) == 0 && strcmp(val, value) == 0;
    free(key);
    free(val);
    if (hit) return 1;
    q += n + (q[n] != '\0');
  }
  return 0;
}

/* Does the request's query have every parameter the route asks for? */
static int query_matches(const struct route *r, const char *uri) {
  const char *qm = strchr(uri, '?');
  for (int k = 0; k < r->nquery; k++)
    if (!has_param(qm ? qm + 1 : "", r->query[k].name, r->query[k].value)) return 0;
  return 1;
}

/* Returns the first route matching the request, or NULL. */
const struct route *mock_find_route(struct mock *m, const char *method,
                                    struct req *q) {
  size_t n = strcspn(q->uri, "?");
  for (int i = 0; i < m->nroutes; i++) {
    struct route *r = &m->routes[i];
    if (r->times && r->used >= r->times) continue;   /* used up: fall through */
    if (query_matches(r, q->uri) && match(r, method, q->uri, n, q->vals)) {
      r->used++;
      return r;
    }
  }
  return NULL;
}

