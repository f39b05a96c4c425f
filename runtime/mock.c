/*
** mock.c -- `flowrun mock ROUTES.lua [--port N]`, the fixture API server.
**
** The routes file is read once into plain C data and its Lua state closed,
** so serving never touches Lua. libmicrohttpd serves every connection from
** one epoll thread. A delay or a hang suspends only its own connection; a
** timer thread resumes a delay when it is due and a hang once its client
** has gone, so no thread is ever spent per connection.
*/
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <lua-cjson.h>
#include <microhttpd.h>

#include "cli.h"

#define MAX_CAPS   16                 /* captures in one path */
#define MAX_BODY   (1024 * 1024)      /* request body kept for echo */
#define MAX_DELAY  3600000            /* largest delay_ms */
#define MAX_CONNS  20000
#define HANG_POLL  500                /* ms between checks that a hung client is there */

enum { FAULT_NONE, FAULT_NO_RESPONSE, FAULT_RESET };

struct buf { char *p; size_t n, cap; };

struct seg { char *text; int cap; };   /* cap: capture index, -1 for a literal */

struct header { char *name, *value; };

struct route {
  char *method;                 /* NULL: any method */
  struct seg *segs;             /* the path split on '/' */
  int nsegs, ncaps;
  int status;
  struct header *headers;
  int nheaders, has_ctype;
  char *body;                   /* body text, or the encoded json */
  size_t bodylen;
  int json, echo, fault;
  long delay_ms;
};

struct req {
  char *uri;                    /* raw request target, query included */
  const struct route *route;    /* NULL: no route matched */
  char *vals[MAX_CAPS];         /* percent-decoded captures */
  struct buf body;
  int started, waited, too_big, gone, fd;
  int64_t due;                  /* monotonic ms at which the timer wakes us */
  struct MHD_Connection *conn;
};

struct mock {
  const char *file;
  struct route *routes;
  int nroutes;
  pthread_mutex_t lock;         /* guards the heap and stopping */
  pthread_cond_t wake;
  struct req **heap;            /* suspended requests, earliest due first */
  size_t nheap, heapcap;
  int stopping;
};

static const char *const route_keys[] = {
  "method", "path", "status", "headers", "json", "body", "delay_ms", "fault",
  "echo", NULL
};

/* Resizes p to n bytes; running out of memory ends the process. */
static void *xrealloc(void *p, size_t n)
{
  p = realloc(p, n ? n : 1);
  if (p == NULL) {
    fputs("flowrun mock: out of memory\n", stderr);
    abort();
  }
  return p;
}

/* Returns a NUL-terminated copy of the n bytes at s. */
static char *xstrndup(const char *s, size_t n)
{
  char *d = xrealloc(NULL, n + 1);
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

/* Appends the n bytes at s to b, keeping b NUL-terminated. */
static void buf_add(struct buf *b, const char *s, size_t n)
{
  if (b->n + n + 1 > b->cap) {
    b->cap = (b->n + n + 1) * 2;
    b->p = xrealloc(b->p, b->cap);
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

/* Appends the string s to b. */
static void buf_adds(struct buf *b, const char *s)
{
  buf_add(b, s, strlen(s));
}

/* Appends s JSON-escaped, without quotes. */
static void buf_esc(struct buf *b, const char *s, size_t n)
{
  char tmp[8];
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char) s[i];
    if (c == '"' || c == '\\') {
      tmp[0] = '\\';
      tmp[1] = (char) c;
      buf_add(b, tmp, 2);
    } else if (c < 0x20) {
      snprintf(tmp, sizeof tmp, "\\u%04x", c);
      buf_add(b, tmp, 6);
    } else {
      buf_add(b, s + i, 1);
    }
  }
}

/* Appends the string s as a JSON string. */
static void buf_str(struct buf *b, const char *s)
{
  buf_add(b, "\"", 1);
  buf_esc(b, s, strlen(s));
  buf_add(b, "\"", 1);
}

/* Returns a new string: the n bytes at s percent-decoded ('+' is a space if plus). */
static char *pct_decode(const char *s, size_t n, int plus)
{
  char *d = xrealloc(NULL, n + 1);
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

/* Returns the monotonic clock in milliseconds. */
static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Returns the index of capture name (n bytes) in r, or -1. */
static int capture_index(const struct route *r, const char *name, size_t n)
{
  for (int k = 0; k < r->nsegs; k++) {
    const struct seg *s = &r->segs[k];
    if (s->cap >= 0 && strlen(s->text) == n && memcmp(s->text, name, n) == 0)
      return s->cap;
  }
  return -1;
}

/* Appends template t (n bytes) to b with each {name} of r's captures
** replaced by its value, JSON-escaped when json is set. */
static void render(struct buf *b, const char *t, size_t n,
                   const struct route *r, char **vals, int json)
{
  size_t i = 0;
  while (r->ncaps > 0 && i < n) {
    const char *open = memchr(t + i, '{', n - i), *close;
    int k;
    if (open == NULL) break;
    buf_add(b, t + i, (size_t) (open - t) - i);
    i = (size_t) (open - t);
    close = memchr(open, '}', n - i);
    k = close ? capture_index(r, open + 1, (size_t) (close - open - 1)) : -1;
    if (k < 0) {
      buf_add(b, "{", 1);
      i++;
    } else {
      if (json) buf_esc(b, vals[k], strlen(vals[k]));
      else buf_adds(b, vals[k]);
      i = (size_t) (close - t) + 1;
    }
  }
  buf_add(b, t + i, n - i);
}

/* Raises "FILE: route I: message". */
static int route_error(lua_State *L, const struct mock *m, int i,
                       const char *fmt, ...)
{
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
                 const char *k, int want)
{
  int t = lua_getfield(L, rt, k);
  if (t != LUA_TNIL && t != want)
    route_error(L, m, i, "'%s' must be a %s, got %s", k, lua_typename(L, want),
                luaL_typename(L, -1));
  return t != LUA_TNIL;
}

/* Returns the integer on top of the stack; raises unless it lies in lo..hi. */
static lua_Integer int_in(lua_State *L, const struct mock *m, int i,
                          const char *k, lua_Integer lo, lua_Integer hi)
{
  int isint;
  lua_Integer v = lua_tointegerx(L, -1, &isint);
  if (!isint || v < lo || v > hi)
    route_error(L, m, i, "'%s' must be an integer %I..%I, got %s", k, lo, hi,
                luaL_tolstring(L, -1, NULL));
  return v;
}

/* Returns whether the n bytes at s form a capture name. */
static int is_name(const char *s, size_t n)
{
  if (n == 0 || !(isalpha((unsigned char) s[0]) || s[0] == '_')) return 0;
  for (size_t k = 1; k < n; k++)
    if (!(isalnum((unsigned char) s[k]) || s[k] == '_')) return 0;
  return 1;
}

/* Splits path into r's segments; a segment "{name}" is a capture. */
static void load_path(lua_State *L, const struct mock *m, int i,
                      struct route *r, const char *path)
{
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
    r->segs = xrealloc(r->segs, (size_t) (r->nsegs + 1) * sizeof *r->segs);
    s = &r->segs[r->nsegs++];
    s->text = cap ? xstrndup(p + 1, n - 2) : xstrndup(p, n);
    s->cap = cap ? r->ncaps++ : -1;
    if (p[n] == '\0') break;
    p += n + 1;
  }
}

/* Copies the headers table on top of the stack into r. */
static void load_headers(lua_State *L, const struct mock *m, int i,
                         struct route *r)
{
  int t = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    const char *name, *value;
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      route_error(L, m, i, "'headers' must map names to strings");
    name = lua_tostring(L, -2);
    value = lua_tostring(L, -1);
    if (*name == '\0' || name[strcspn(name, ":()<>@,;\\\"/[]?={} \t\r\n")] != '\0')
      route_error(L, m, i, "header name '%s' is not valid", name);
    if (strcasecmp(name, "Content-Length") == 0
        || strcasecmp(name, "Transfer-Encoding") == 0)
      route_error(L, m, i, "header '%s' is set by the server", name);
    if (strpbrk(value, "\r\n"))
      route_error(L, m, i, "header '%s' has a line break", name);
    if (strcasecmp(name, "Content-Type") == 0) r->has_ctype = 1;
    r->headers = xrealloc(r->headers, (size_t) (r->nheaders + 1) * sizeof *r->headers);
    r->headers[r->nheaders].name = xstrndup(name, strlen(name));
    r->headers[r->nheaders].value = xstrndup(value, strlen(value));
    r->nheaders++;
    lua_pop(L, 1);
  }
}

/* Validates the route table on top of the stack and copies it into r;
** enc is the stack index of cjson.encode. */
static void load_route(lua_State *L, const struct mock *m, int i,
                       struct route *r, int enc)
{
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
    r->method = xstrndup(lua_tostring(L, -1), strlen(lua_tostring(L, -1)));
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
  if (field(L, m, i, rt, "body", LUA_TSTRING)) {
    const char *s = lua_tolstring(L, -1, &r->bodylen);
    r->body = xstrndup(s, r->bodylen);
  }
  if (field(L, m, i, rt, "json", LUA_TTABLE)) {
    const char *s;
    if (r->body) route_error(L, m, i, "use 'json' or 'body', not both");
    lua_pushvalue(L, enc);
    lua_pushvalue(L, -2);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
      route_error(L, m, i, "'json' cannot be encoded: %s", lua_tostring(L, -1));
    s = lua_tolstring(L, -1, &r->bodylen);
    r->body = xstrndup(s, r->bodylen);
    r->json = 1;
  }
  if (r->echo && r->body)
    route_error(L, m, i, "'echo' answers with the request: drop 'json' and 'body'");
  if (field(L, m, i, rt, "headers", LUA_TTABLE))
    load_headers(L, m, i, r);
  lua_settop(L, rt);
}

/* Runs the routes file and copies its routes into the mock (lightuserdata
** at index 1); raises on any error. */
static int l_load(lua_State *L)
{
  struct mock *m = lua_touserdata(L, 1);
  int n, count = 0;
  luaL_requiref(L, "cjson", luaopen_cjson, 1);
  lua_getfield(L, 2, "encode");                   /* index 3 */
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
  m->routes = xrealloc(NULL, (size_t) n * sizeof *m->routes);
  memset(m->routes, 0, (size_t) n * sizeof *m->routes);
  m->nroutes = n;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 4, i);
    load_route(L, m, i, &m->routes[i - 1], 3);
    lua_pop(L, 1);
  }
  return 0;
}

/* Loads m->file into m->routes; prints the error and returns -1 on failure. */
static int load_routes(struct mock *m)
{
  lua_State *L = luaL_newstate();
  int rc = 0;
  if (L == NULL) return -1;
  luaL_openlibs(L);
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
static void free_routes(struct mock *m)
{
  for (int i = 0; i < m->nroutes; i++) {
    struct route *r = &m->routes[i];
    for (int k = 0; k < r->nsegs; k++) free(r->segs[k].text);
    for (int k = 0; k < r->nheaders; k++) {
      free(r->headers[k].name);
      free(r->headers[k].value);
    }
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
                 size_t n, char **vals)
{
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
  for (int k = 0; k < r->ncaps; k++) vals[k] = pct_decode(cs[k], cl[k], 0);
  return 1;
}

/* Returns the first route matching the request, or NULL. */
static const struct route *find_route(const struct mock *m, const char *method,
                                      struct req *q)
{
  size_t n = strcspn(q->uri, "?");
  for (int i = 0; i < m->nroutes; i++)
    if (match(&m->routes[i], method, q->uri, n, q->vals)) return &m->routes[i];
  return NULL;
}

/* Adds one request header to the JSON object in b (cls), name lower-cased. */
static enum MHD_Result echo_header(void *cls, enum MHD_ValueKind kind,
                                   const char *key, const char *value)
{
  struct buf *b = cls;
  (void) kind;
  buf_adds(b, b->p[b->n - 1] == '{' ? "\"" : ",\"");
  for (; *key; key++) {
    char c = (char) tolower((unsigned char) *key);
    buf_esc(b, &c, 1);
  }
  buf_add(b, "\":", 2);
  buf_str(b, value ? value : "");
  return MHD_YES;
}

/* Appends the request itself to b as a JSON object. */
static void echo(struct buf *b, struct MHD_Connection *c, const char *method,
                 const struct req *q)
{
  size_t plen = strcspn(q->uri, "?");
  const char *query = q->uri[plen] ? q->uri + plen + 1 : "", *p = query;
  buf_adds(b, "{\"method\":");
  buf_str(b, method);
  buf_adds(b, ",\"path\":\"");
  buf_esc(b, q->uri, plen);
  buf_adds(b, "\",\"query\":");
  buf_str(b, query);
  buf_adds(b, ",\"args\":{");
  while (*p) {
    size_t n = strcspn(p, "&");
    const char *eq = memchr(p, '=', n);
    if (n > 0) {
      size_t kn = eq ? (size_t) (eq - p) : n;
      char *k = pct_decode(p, kn, 1), *v = pct_decode(p + kn + 1, eq ? n - kn - 1 : 0, 1);
      if (b->p[b->n - 1] != '{') buf_add(b, ",", 1);
      buf_str(b, k);
      buf_add(b, ":", 1);
      buf_str(b, v);
      free(k);
      free(v);
    }
    p += n + (p[n] != '\0');
  }
  buf_adds(b, "},\"headers\":{");
  MHD_get_connection_values(c, MHD_HEADER_KIND, echo_header, b);
  buf_adds(b, "},\"body\":\"");
  buf_esc(b, q->body.p ? q->body.p : "", q->body.n);
  buf_adds(b, "\"}");
}

struct cut { size_t send; char p[]; };  /* a body that a reset stops short */

/* Hands MHD the first part of the body, then fails so it drops the connection. */
static ssize_t cut_read(void *cls, uint64_t pos, char *out, size_t max)
{
  struct cut *k = cls;
  size_t n;
  if (pos >= k->send) return MHD_CONTENT_READER_END_WITH_ERROR;
  n = k->send - (size_t) pos;
  if (n > max) n = max;
  memcpy(out, k->p + pos, n);
  return (ssize_t) n;
}

/* Returns a response announcing all of b but sending only its first half. */
static struct MHD_Response *cut_response(const struct buf *b)
{
  static const char filler[] = "partial body: the mock server resets this response\n";
  const char *s = b->n < 2 ? filler : b->p;
  size_t n = b->n < 2 ? sizeof filler - 1 : b->n;
  struct cut *k = xrealloc(NULL, sizeof *k + n);
  memcpy(k->p, s, n);
  k->send = n / 2;
  return MHD_create_response_from_callback(n, 4096, cut_read, k, free);
}

/* Builds, queues and logs the response to q. */
static enum MHD_Result respond(struct MHD_Connection *c, const char *method,
                               struct req *q)
{
  const struct route *r = q->route;
  const char *ctype = "application/json";
  struct buf b = { NULL, 0, 0 };
  struct MHD_Response *resp;
  enum MHD_Result ok;
  int status = r ? r->status : 404;
  if (r == NULL) {
    buf_adds(&b, "{\"error\":\"no route\",\"method\":");
    buf_str(&b, method);
    buf_adds(&b, ",\"path\":\"");
    buf_esc(&b, q->uri, strcspn(q->uri, "?"));
    buf_adds(&b, "\"}");
  } else if (q->too_big) {
    status = 413;
    buf_adds(&b, "{\"error\":\"request body over 1 MiB\"}");
  } else if (r->echo) {
    echo(&b, c, method, q);
  } else {
    if (r->body) render(&b, r->body, r->bodylen, r, q->vals, r->json);
    ctype = r->json ? "application/json" : r->body ? "text/plain" : NULL;
  }
  if (r && r->fault == FAULT_RESET) resp = cut_response(&b);
  else resp = MHD_create_response_from_buffer(b.n, b.p, MHD_RESPMEM_MUST_COPY);
  free(b.p);
  if (resp == NULL) return MHD_NO;
  for (int k = 0; r && k < r->nheaders; k++) {
    struct buf v = { NULL, 0, 0 };
    render(&v, r->headers[k].value, strlen(r->headers[k].value), r, q->vals, 0);
    MHD_add_response_header(resp, r->headers[k].name, v.p ? v.p : "");
    free(v.p);
  }
  if (ctype && !(r && r->has_ctype))
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
  ok = MHD_queue_response(c, (unsigned) status, resp);
  MHD_destroy_response(resp);
  if (r && r->fault == FAULT_RESET)
    fprintf(stderr, "%s %s -> fault reset\n", method, q->uri);
  else
    fprintf(stderr, "%s %s -> %d\n", method, q->uri, status);
  return ok;
}

/* Adds q to the timer heap. Caller holds m->lock. */
static void heap_push(struct mock *m, struct req *q)
{
  size_t i;
  if (m->nheap == m->heapcap) {
    m->heapcap = m->heapcap ? 2 * m->heapcap : 64;
    m->heap = xrealloc(m->heap, m->heapcap * sizeof *m->heap);
  }
  for (i = m->nheap++; i > 0 && m->heap[(i - 1) / 2]->due > q->due; i = (i - 1) / 2)
    m->heap[i] = m->heap[(i - 1) / 2];
  m->heap[i] = q;
}

/* Removes and returns the earliest request. Caller holds m->lock. */
static struct req *heap_pop(struct mock *m)
{
  struct req *top = m->heap[0], *last = m->heap[--m->nheap];
  size_t i = 0, c;
  while ((c = 2 * i + 1) < m->nheap) {
    if (c + 1 < m->nheap && m->heap[c + 1]->due < m->heap[c]->due) c++;
    if (last->due <= m->heap[c]->due) break;
    m->heap[i] = m->heap[c];
    i = c;
  }
  m->heap[i] = last;
  return top;
}

/* Returns whether the client of a suspended connection has hung up. */
static int client_gone(int fd)
{
  struct pollfd p = { fd, POLLIN | POLLRDHUP, 0 };
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* The timer thread: resumes delays when due and hangs whose client left;
** once stopping, resumes everything (marked gone) and returns. */
static void *timer_main(void *arg)
{
  struct mock *m = arg;
  pthread_mutex_lock(&m->lock);
  while (!m->stopping || m->nheap > 0) {
    int64_t now = now_ms();
    struct req *q;
    if (m->nheap == 0) {
      pthread_cond_wait(&m->wake, &m->lock);
      continue;
    }
    if (!m->stopping && m->heap[0]->due > now) {
      struct timespec ts;
      ts.tv_sec = (time_t) (m->heap[0]->due / 1000);
      ts.tv_nsec = (long) (m->heap[0]->due % 1000) * 1000000;
      pthread_cond_timedwait(&m->wake, &m->lock, &ts);
      continue;
    }
    q = heap_pop(m);
    if (!m->stopping && q->route->fault == FAULT_NO_RESPONSE && !client_gone(q->fd)) {
      q->due = now + HANG_POLL;
      heap_push(m, q);
      continue;
    }
    q->gone = m->stopping || q->route->fault == FAULT_NO_RESPONSE;
    MHD_resume_connection(q->conn);
  }
  pthread_mutex_unlock(&m->lock);
  return NULL;
}

/* Suspends q's connection until its delay is due (or, for a hang, until the
** client leaves). Returns 0 when stopping, without suspending. */
static int suspend(struct mock *m, struct MHD_Connection *c, const char *method,
                   struct req *q)
{
  int hang = q->route->fault == FAULT_NO_RESPONSE;
  const union MHD_ConnectionInfo *ci;
  pthread_mutex_lock(&m->lock);
  if (m->stopping) {
    q->gone = hang;
    pthread_mutex_unlock(&m->lock);
    return 0;
  }
  ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  q->fd = ci ? ci->connect_fd : -1;
  q->conn = c;
  q->due = now_ms() + (hang ? HANG_POLL : q->route->delay_ms);
  q->waited = 1;
  MHD_suspend_connection(c);
  heap_push(m, q);
  pthread_cond_signal(&m->wake);
  pthread_mutex_unlock(&m->lock);
  if (hang) fprintf(stderr, "%s %s -> fault no_response\n", method, q->uri);
  return 1;
}

/* MHD: a request line arrived; returns its context, holding the raw target. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
  struct req *q = xrealloc(NULL, sizeof *q);
  (void) cls, (void) c;
  memset(q, 0, sizeof *q);
  q->uri = xstrndup(uri, strlen(uri));
  q->fd = -1;
  return q;
}

/* MHD: the request is over, answered or not; frees its context. */
static void on_done(void *cls, struct MHD_Connection *c, void **ctx,
                    enum MHD_RequestTerminationCode toe)
{
  struct req *q = *ctx;
  (void) cls, (void) c, (void) toe;
  if (q == NULL) return;
  for (int k = 0; q->route && k < q->route->ncaps; k++) free(q->vals[k]);
  free(q->body.p);
  free(q->uri);
  free(q);
  *ctx = NULL;
}

/* MHD: called at the headers, for each piece of body, at the end, and again
** after a resume. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *data,
                                  size_t *size, void **ctx)
{
  struct mock *m = cls;
  struct req *q = *ctx;
  (void) url, (void) version;
  if (q == NULL) return MHD_NO;
  if (!q->started) {
    q->route = find_route(m, method, q);
    q->started = 1;
    return MHD_YES;
  }
  if (*size > 0) {
    if (q->route && q->route->echo && !q->too_big) {
      if (q->body.n + *size > MAX_BODY) q->too_big = 1;
      else buf_add(&q->body, data, *size);
    }
    *size = 0;
    return MHD_YES;
  }
  if (!q->waited && q->route
      && (q->route->delay_ms > 0 || q->route->fault == FAULT_NO_RESPONSE)
      && suspend(m, c, method, q))
    return MHD_YES;
  if (q->gone) return MHD_NO;
  return respond(c, method, q);
}

/* Raises the open-files limit to its hard limit; returns the new limit. */
static rlim_t raise_nofile(void)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

/* Serves on 127.0.0.1:port until SIGINT or SIGTERM (blocked in sigs). */
static int serve(struct mock *m, uint16_t port, const sigset_t *sigs)
{
  struct sockaddr_in sa;
  struct MHD_Daemon *d;
  const union MHD_DaemonInfo *info;
  pthread_condattr_t ca;
  pthread_t timer;
  rlim_t files = raise_nofile();
  unsigned limit = files > MAX_CONNS + 64 ? MAX_CONNS : (unsigned) (files - 64);
  int sig;

  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  pthread_mutex_init(&m->lock, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&m->wake, &ca);
  pthread_condattr_destroy(&ca);
  pthread_create(&timer, NULL, timer_main, m);
  d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME,
                       port, NULL, NULL, on_request, m,
                       MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &sa,
                       MHD_OPTION_URI_LOG_CALLBACK, on_uri, m,
                       MHD_OPTION_NOTIFY_COMPLETED, on_done, m,
                       MHD_OPTION_CONNECTION_LIMIT, limit,
                       MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u,
                       MHD_OPTION_END);
  if (d != NULL && (info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT))) {
    printf("listening on http://127.0.0.1:%u\n", (unsigned) info->port);
    fflush(stdout);
    while (sigwait(sigs, &sig) != 0) continue;
  } else {
    fprintf(stderr, "flowrun mock: cannot listen on 127.0.0.1:%u: %s\n",
            (unsigned) port, strerror(errno));
  }
  pthread_mutex_lock(&m->lock);
  m->stopping = 1;
  pthread_cond_signal(&m->wake);
  pthread_mutex_unlock(&m->lock);
  pthread_join(timer, NULL);
  if (d) MHD_stop_daemon(d);
  pthread_cond_destroy(&m->wake);
  pthread_mutex_destroy(&m->lock);
  free(m->heap);
  return d ? 0 : 1;
}

/* Prints the usage and returns 2. */
static int usage(void)
{
  fputs("usage: flowrun mock ROUTES.lua [--port N]\n", stderr);
  return 2;
}

/* flowrun mock ROUTES.lua [--port N]: argv[0] is "mock". */
int flowrun_mock_main(int argc, char **argv)
{
  struct mock m;
  sigset_t sigs, old;
  const char *file = NULL, *ports = "0";
  char *end;
  long port;
  int rc;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) ports = argv[++i];
    else if (strncmp(argv[i], "--port=", 7) == 0) ports = argv[i] + 7;
    else if (argv[i][0] != '-' && file == NULL) file = argv[i];
    else return usage();
  }
  errno = 0;
  port = strtol(ports, &end, 10);
  if (file == NULL || *ports == '\0' || *end != '\0' || errno || port < 0 || port > 65535) {
    if (file) fprintf(stderr, "flowrun mock: --port wants 0..65535, got '%s'\n", ports);
    return usage();
  }
  memset(&m, 0, sizeof m);
  m.file = file;
  if (load_routes(&m) != 0) {
    free_routes(&m);
    return 2;
  }
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, &old);    /* threads inherit it; sigwait takes them */
  signal(SIGPIPE, SIG_IGN);
  rc = serve(&m, (uint16_t) port, &sigs);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  free_routes(&m);
  return rc;
}
