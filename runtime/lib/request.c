/*
** request.c -- from an api_node spec to a request (SPEC 3).
**
** Everything a flow author can get wrong is checked here, before anything
** is sent: fields, integration and endpoint, method, placeholders, query,
** headers, body and results. The URL is built with libcurl's URL API from
** the integration's parsed base URL; values are percent-encoded with
** curl_easy_escape. Query tables come in two forms: a map (keys sorted,
** arrays repeat the key) or a list of pairs (order kept).
*/
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

/* ---- result sets ---- */

static bool is_code(const char *s) {
  return s[0] >= '1' && s[0] <= '5' && isdigit((unsigned char)s[1])
      && isdigit((unsigned char)s[2]) && s[3] == '\0';
}

void fr_parse_results(lua_State *L, int idx, const char *what, fr_results *r,
                      bool need200) {
  static const struct { const char *name; uint8_t bit; } defaults[] = {
    { "other", LBL_OTHER }, { "error", LBL_ERROR },
    { "timeout", LBL_TIMEOUT }, { "max-connection", LBL_MAXCONN },
  };
  lua_Integer n, i;
  if (!lua_istable(L, idx))
    luaL_error(L, "%s: expected an array of result names like {\"200\", \"404\"}, got %s",
               what, luaL_typename(L, idx));
  n = (lua_Integer)lua_rawlen(L, idx);
  for (i = 1; i <= n; i++) {
    const char *s;
    size_t k;
    if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
      luaL_error(L, "%s[%d]: expected a string like \"200\", got %s", what,
                 (int)i, luaL_typename(L, -1));
    s = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (is_code(s)) {
      int c = atoi(s);
      r->code[c / 8] |= 1 << (c % 8);
      continue;
    }
    if (s[0] >= '1' && s[0] <= '5' && s[1] == 'x' && s[2] == 'x' && !s[3]) {
      r->cls |= 1 << (s[0] - '0');
      continue;
    }
    for (k = 0; k < 4; k++)
      if (strcasecmp(s, defaults[k].name) == 0) break;
    if (k < 4 && strcmp(s, defaults[k].name) == 0) {
      r->defaults |= defaults[k].bit;
      continue;
    }
    if (k < 4 || (s[0] >= '1' && s[0] <= '5' && (s[1] == 'x' || s[1] == 'X')
                  && (s[2] == 'x' || s[2] == 'X') && !s[3]))
      luaL_error(L, "%s: result labels must be lower case: \"%s\"", what, s);
    luaL_error(L, "%s: unknown result \"%s\" (use a status like \"404\", a "
               "class like \"4xx\", or other, error, timeout, max-connection)",
               what, s);
  }
  if (need200 && !(r->cls & (1 << 2))) {   /* a success: a 2xx status, or "2xx" */
    int c = 200;
    while (c < 300 && !(r->code[c / 8] & (1 << (c % 8)))) c++;
    if (c == 300) luaL_error(L, "%s: must include a success: a 2xx status like \"200\" or \"201\", or \"2xx\"", what);
  }
}

/* The declared result matching status: the code, -class, or 0. */
int fr_results_status(const fr_results *r, int status) {
  if (status >= 0 && status < 600 && (r->code[status / 8] & (1 << (status % 8))))
    return status;
  if (status >= 100 && status < 600 && (r->cls & (1 << (status / 100))))
    return -(status / 100);
  return 0;
}

/* ---- query strings ---- */

/* Pushes the string form of a query or params value; raises otherwise. */
static const char *scalar(lua_State *L, int idx, const char *what, const char *key) {
  int t = lua_type(L, idx);
  if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
    luaL_error(L, "%s.%s: expected a string, number or boolean, got %s",
               what, key, luaL_typename(L, idx));
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
      scalar(L, -1, what, lua_tostring(L, -2));
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
        scalar(L, -1, what, lua_tostring(L, k));
        lua_remove(L, -2);
        add_pair(L, &n);
        lua_pop(L, 1);
      }
    } else {
      lua_pushvalue(L, out);
      lua_pushvalue(L, k);
      scalar(L, v, what, lua_tostring(L, k));
      add_pair(L, &n);
      lua_pop(L, 1);
    }
  }
  lua_settop(L, out);
}

/* ---- building the request ---- */

enum {                                  /* the fields of a spec */
  F_INTEGRATION, F_ENDPOINT, F_METHOD, F_PATH, F_PARAMS, F_QUERY,
  F_QUERY_SEPARATOR, F_HEADERS, F_BODY, F_FORM, F_RESULTS, F_TIMEOUT_MS
};

static const char *const spec_keys[] = {
  "integration", "endpoint", "method", "path", "params", "query",
  "query_separator", "headers", "body", "form", "results", "timeout_ms", NULL
};

#define HAS(f) (present & (1u << (f)))
static const char *const methods[] = {
  "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", NULL
};

/* Pushes field f of the spec at 1 and says true, when the spec has it (the
** bits of present); raises unless it is of type t. */
static bool field(lua_State *L, unsigned present, int f, int t, const char *want) {
  int got;
  if (!HAS(f)) return false;
  lua_pushstring(L, spec_keys[f]);
  if ((got = lua_rawget(L, 1)) != t)
    luaL_error(L, "api_node: %s: expected %s, got %s", spec_keys[f], want,
               luaL_typename(L, -1));
  return true;
}

/* What keeps the path as written (placeholders aside) from being sent as
** it reads, or NULL: a space, control character or '#' (libcurl would
** refuse the URL, or cut a fragment), or a "." or ".." segment (libcurl
** would remove it, sending the request elsewhere than res.url says, even
** above base_url's path). */
static const char *path_problem(const char *path) {
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

static void resolve_target(lua_State *L, call *c, unsigned present,
                           const char **path) {
  flowrun *rt = c->rt;
  const fr_endpoint *ep = NULL;
  integration *ig = NULL;
  const char *method = NULL, *bad;
  if (field(L, present, F_ENDPOINT, LUA_TSTRING, "\"integration.endpoint\"")) {
    const char *s = lua_tostring(L, -1), *dot = strchr(s, '.');
    if (!dot) luaL_error(L, "api_node: endpoint: expected \"integration.endpoint\", got \"%s\"", s);
    if (!(ig = fr_integration_find(rt, s, dot - s)))
      luaL_error(L, "api_node: unknown integration '%s'", lua_pushlstring(L, s, dot - s));
    if (!(ep = fr_endpoint_find(ig, dot + 1)))
      luaL_error(L, "api_node: integration '%s' has no endpoint '%s'", ig->name, dot + 1);
    lua_pop(L, 1);
  }
  if (field(L, present, F_INTEGRATION, LUA_TSTRING, "a string")) {
    const char *s = lua_tostring(L, -1);
    if (ig && strcmp(ig->name, s) != 0)
      luaL_error(L, "api_node: integration '%s' and endpoint '%s.%s' disagree", s,
                 ig->name, ep->name);
    if (!ig && !(ig = fr_integration_find(rt, s, strlen(s))))
      luaL_error(L, "api_node: unknown integration '%s'%s", s,
                 rt->integrations ? "" : " (no integrations are loaded: -I FILE on the command "
                 "line, flowrun.new{ integrations = ... } in Lua, flowrun_load_integrations in C)");
    lua_pop(L, 1);
  }
  if (!ig) luaL_error(L, "api_node: integration (or endpoint) is required");
  if (ig->unset)                        /* never send a placeholder */
    luaL_error(L, "api_node: integration '%s' cannot be used: environment variable %s is not set",
               ig->name, ig->unset);
  c->ig = ig;
  ig->refs++;
  method = ep ? ep->method : "GET";
  if (field(L, present, F_METHOD, LUA_TSTRING, "a string")) {
    const char *m = lua_tostring(L, -1);
    int i;
    for (i = 0; methods[i] && strcmp(methods[i], m) != 0; i++) {}
    if (!methods[i])
      luaL_error(L, "api_node: method: expected GET, POST, PUT, PATCH, DELETE or HEAD, got \"%s\"", m);
    if (ep && strcmp(ep->method, m) != 0)
      luaL_error(L, "api_node: method %s differs from endpoint '%s' (%s)", m, ep->name, ep->method);
    method = methods[i];
    lua_pop(L, 1);
  }
  strcpy(c->method, method);
  *path = ep ? ep->path : "";
  if (field(L, present, F_PATH, LUA_TSTRING, "a string")) {
    size_t len;
    if (ep) luaL_error(L, "api_node: give path or endpoint, not both");
    *path = lua_tolstring(L, -1, &len); /* anchored by the spec */
    if (strlen(*path) != len) luaL_error(L, "api_node: path: NUL in the path");
    lua_pop(L, 1);
  }
  if ((bad = path_problem(*path))) {
    if (ep) luaL_error(L, "api_node: endpoint '%s.%s' path: %s", ig->name, ep->name, bad);
    luaL_error(L, "api_node: path: %s", bad);
  }
}

/* Pushes path with {name} placeholders filled from params, encoded. */
static void fill_path(lua_State *L, const char *path, int params) {
  luaL_Buffer b;
  const char *p = path, *open, *close;
  luaL_buffinit(L, &b);
  while ((open = strchr(p, '{')) && (close = strchr(open, '}'))) {
    char *enc;
    luaL_addlstring(&b, p, open - p);
    lua_pushlstring(L, open + 1, close - open - 1);
    if (!params || lua_rawget(L, params) == LUA_TNIL)
      luaL_error(L, "api_node: path placeholder {%s} has no value in params",
                 lua_pushlstring(L, open + 1, close - open - 1));
    const char *v = luaL_tolstring(L, -1, NULL);
    enc = curl_easy_escape(NULL, v, (int)lua_rawlen(L, -1));
    lua_pop(L, 2);
    if (!enc) luaL_error(L, "not enough memory");
    if (*enc && enc[strspn(enc, ".")] == '\0')  /* "." or "..": no dot segment */
      for (const char *d = enc; *d; d++) luaL_addstring(&b, "%2E");
    else
      luaL_addstring(&b, enc);
    curl_free(enc);
    p = close + 1;
  }
  luaL_addstring(&b, p);
  luaL_pushresult(&b);
  if (p != path && path_problem(lua_tostring(L, -1)))  /* "/..{a}" with a = "" */
    luaL_error(L, "api_node: path: \".\" and \"..\" segments are not allowed, "
               "also once params are filled in (%s)", lua_tostring(L, -1));
}

/* libcurl 7.88's URL API gives %xx in lower case; RFC 3986 prefers upper
** case, and servers that sign or compare URLs see what the flow meant. */
static void upper_hex(char *s) {
  for (; (s = strchr(s, '%')); s++)
    if (isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2])) {
      s[1] = (char)toupper((unsigned char)s[1]);
      s[2] = (char)toupper((unsigned char)s[2]);
    }
}

/* libcurl builds the request line and headers (and a POST body under
** 64 KB) in one buffer of at most 1 MiB, and fails with "Out of memory"
** past it; a URL over 8 MB it refuses outright. flowrun refuses a request
** whose URL and headers take more than MAX_HEAD bytes first, with a label
** that says so, and leaves room for what libcurl adds. */
#define MAX_HEAD 900000

static void head_too_large(call *c) {
  fr_call_fail(c, LABEL_ERROR, "too_large", "the URL and headers take more than %d bytes, "
               "more than libcurl can send: send large data in the body", MAX_HEAD);
}

/* The URL and the header lines, against MAX_HEAD. */
static void check_head_size(call *c) {
  size_t n = strlen(c->url);
  for (const struct curl_slist *l = c->hdrs; l && n <= MAX_HEAD; l = l->next)
    n += strlen(l->data) + 2;
  if (n > MAX_HEAD) head_too_large(c);
}

/* Sets c->url from path and query through the integration's URL handle.
** Many calls ask for the URL of the call before; that one is reused. */
static void set_url(lua_State *L, integration *ig, call *c, const char *path,
                    const char *query, bool has_query) {
  char *url = NULL;
  CURLUcode rc;
  if (!has_query) query = "";
  if (ig->memo_url && strcmp(path, ig->memo_path) == 0
      && strcmp(query, ig->memo_query) == 0) {
    if (!fr_call_set_url(c, ig->memo_url)) luaL_error(L, "not enough memory");
    return;
  }
  rc = curl_url_set(ig->scratch, CURLUPART_PATH, path, 0);
  if (rc == CURLUE_OK)
    rc = curl_url_set(ig->scratch, CURLUPART_QUERY, has_query ? query : NULL, 0);
  if (rc == CURLUE_OK) rc = curl_url_get(ig->scratch, CURLUPART_URL, &url, 0);
  if (rc != CURLUE_OK) luaL_error(L, "api_node: cannot build the URL: %s", curl_url_strerror(rc));
  upper_hex(url);
  bool ok = fr_call_set_url(c, url);
  curl_free(url);
  if (!ok) luaL_error(L, "not enough memory");
  free(ig->memo_path);
  free(ig->memo_query);
  free(ig->memo_url);
  ig->memo_path = strdup(path);
  ig->memo_query = strdup(query);
  ig->memo_url = strdup(c->url);
  if (!ig->memo_path || !ig->memo_query || !ig->memo_url) {
    free(ig->memo_url);
    ig->memo_url = NULL;                /* no memo this time */
  }
}

/* Builds c->url from the integration's base URL, path and query. */
static void build_url(lua_State *L, call *c, unsigned present, const char *path) {
  integration *ig = c->ig;
  int params = 0, i;
  char sep = '&';
  const char *q;
  if (field(L, present, F_PARAMS, LUA_TTABLE, "a table")) {
    params = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, params)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "api_node: params: keys must be strings");
      scalar(L, -1, "api_node: params", lua_tostring(L, -2));
      lua_pop(L, 2);
    }
  }
  if (field(L, present, F_QUERY_SEPARATOR, LUA_TSTRING, "\"&\" or \";\"")) {
    q = lua_tostring(L, -1);
    if (strcmp(q, "&") != 0 && strcmp(q, ";") != 0)
      luaL_error(L, "api_node: query_separator: expected \"&\" or \";\", got \"%s\"", q);
    sep = q[0];
    lua_pop(L, 1);
  }
  fill_path(L, path, params);
  int filled = lua_gettop(L);
  /* the query: base URL's, the path's, the integration's, the node's */
  if (field(L, present, F_QUERY, LUA_TTABLE, "a table")) {
    fr_query_pairs(L, -1, "api_node: query");
    lua_remove(L, -2);
  } else
    lua_newtable(L);
  int node_q = lua_gettop(L);
  luaL_Buffer b;
  int nq = 0;
  luaL_buffinit(L, &b);
#define ADDQ(s, n) (nq++ ? luaL_addchar(&b, sep) : (void)0, luaL_addlstring(&b, s, n))
  if (ig->base_query) ADDQ(ig->base_query, strlen(ig->base_query));
  const char *fp = lua_tostring(L, filled), *qm = strchr(fp, '?');
  if (qm && qm[1]) ADDQ(qm + 1, strlen(qm + 1));
  for (i = 0; i < ig->nquery; i++) ADDQ(ig->query[i], strlen(ig->query[i]));
  for (i = 1; i <= (int)lua_rawlen(L, node_q); i++) {
    lua_rawgeti(L, node_q, i);
    size_t n;
    const char *kv = lua_tolstring(L, -1, &n);
    lua_pop(L, 1);
    ADDQ(kv, n);
  }
#undef ADDQ
  luaL_pushresult(&b);
  /* the path: base path + node path */
  size_t pl = qm ? (size_t)(qm - fp) : strlen(fp);
  lua_pushstring(L, ig->base_path);
  lua_pushstring(L, pl > 0 && fp[0] != '/' ? "/" : "");
  lua_pushlstring(L, fp, pl);
  lua_concat(L, 3);
  if (lua_rawlen(L, -1) == 0) {
    lua_pop(L, 1);
    lua_pushliteral(L, "/");
  }
  if (lua_rawlen(L, -1) + lua_rawlen(L, -2) > MAX_HEAD) {   /* the URL alone */
    head_too_large(c);
    lua_pushfstring(L, "%s%s%s", ig->base_url, path[0] == '/' ? "" : "/", path);
    if (!fr_call_set_url(c, lua_tostring(L, -1))) luaL_error(L, "not enough memory");
  } else
    set_url(L, ig, c, lua_tostring(L, -1), lua_tostring(L, -2), nq > 0);
  lua_settop(L, filled - 1);
  if (params) lua_pop(L, 1);
}

/* Has the headers table at idx a header named name (any case)? */
static const char *node_header(lua_State *L, int idx, const char *name) {
  const char *v = NULL;
  if (!idx) return NULL;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (strcasecmp(lua_tostring(L, -2), name) == 0) v = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  return v;
}

static bool ig_header(const integration *ig, const char *name) {
  for (int i = 0; i < ig->nheaders; i++)
    if (strcasecmp(ig->headers[i].name, name) == 0) return true;
  return false;
}

/* Appends a header line to c->hdrs after *tail, its last line (NULL: not
** known yet). curl_slist_append walks from the node it is given to the
** end: given the last, a node with 100 000 headers costs no more per line
** than one with two. */
static void add_line(lua_State *L, call *c, struct curl_slist **tail,
                     const char *name, const char *value) {
  size_t n = strlen(name) + (value ? strlen(value) : 0) + 3;
  char *line = malloc(n);
  struct curl_slist *l;
  if (!line) luaL_error(L, "not enough memory");
  if (!value) snprintf(line, n, "%s", name);          /* "X:" removes X */
  else snprintf(line, n, *value ? "%s: %s" : "%s;", name, value);  /* "X;" sends "X:" */
  if (!*tail && c->hdrs)
    for (*tail = c->hdrs; (*tail)->next; *tail = (*tail)->next) {}
  l = curl_slist_append(*tail, line);
  free(line);
  if (!l) luaL_error(L, "not enough memory");
  if (!c->hdrs) c->hdrs = l;
  *tail = *tail ? (*tail)->next : l;
}

/* Builds the header list; a conflict with the integration sets the label.
** One pass over the node's headers compares each with the integration's
** and marks those the node repeats. */
static void build_headers(lua_State *L, call *c, unsigned present, int *hidx,
                          struct curl_slist **tail) {
  integration *ig = c->ig;
  int h = 0, i;
  bool *repeated;
  *hidx = 0;
  if (field(L, present, F_HEADERS, LUA_TTABLE, "a table")) {
    h = *hidx = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, h)) {
      const char *name, *why;
      size_t vlen;
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "api_node: headers: names must be strings");
      name = lua_tostring(L, -2);
      if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "api_node: headers.%s: expected a string, got %s", name,
                   luaL_typename(L, -1));
      lua_pushvalue(L, -1);
      const char *value = lua_tolstring(L, -1, &vlen);
      if ((why = fr_header_problem(name, value, vlen)))
        luaL_error(L, "api_node: headers.%s: %s", name, why);
      lua_pop(L, 2);
    }
  }
  c->retry_ok = (strcmp(c->method, "POST") != 0 && strcmp(c->method, "PATCH") != 0)
             || node_header(L, h, "Idempotency-Key") || ig_header(ig, "Idempotency-Key");
  if (!h && !HAS(F_BODY) && !HAS(F_FORM)) {   /* the integration's alone */
    if (!ig->shared_hdrs) {             /* built once, into c->hdrs */
      for (i = 0; i < ig->nheaders; i++)
        add_line(L, c, tail, ig->headers[i].name, ig->headers[i].value);
      add_line(L, c, tail, "Expect:", NULL);
      ig->shared_hdrs = c->hdrs;
    }
    c->hdrs = ig->shared_hdrs;
    c->shared_hdrs = true;
    return;
  }
  /* the node's headers, then the integration's it does not repeat */
  bool few[16];                         /* the usual integration; else Lua's memory */
  repeated = ig->nheaders <= 16 ? few : lua_newuserdatauv(L, (size_t)ig->nheaders * sizeof *repeated, 0);
  if (ig->nheaders > 0) memset(repeated, 0, (size_t)ig->nheaders * sizeof *repeated);
  if (h) {
    lua_pushnil(L);
    while (lua_next(L, h)) {
      lua_pushvalue(L, -1);
      const char *name = lua_tostring(L, -3), *value = lua_tostring(L, -1);
      for (i = 0; i < ig->nheaders; i++)
        if (strcasecmp(ig->headers[i].name, name) == 0) {
          repeated[i] = true;
          if (!c->label && strcmp(ig->headers[i].value, value) != 0)
            fr_call_fail(c, LABEL_ERROR, "header_conflict",
                        "header '%s' differs between the node and integration '%s'",
                        ig->headers[i].name, ig->name);
        }
      add_line(L, c, tail, name, value);
      lua_pop(L, 2);
    }
  }
  for (i = 0; i < ig->nheaders; i++)
    if (!repeated[i]) add_line(L, c, tail, ig->headers[i].name, ig->headers[i].value);
  if (repeated != few) lua_pop(L, 1);
  add_line(L, c, tail, "Expect:", NULL);   /* no 100-continue round trip */
}

static void build_body(lua_State *L, call *c, unsigned present, int h,
                       struct curl_slist **tail) {
  int t = HAS(F_BODY) ? (lua_pushliteral(L, "body"), lua_rawget(L, 1)) : (lua_pushnil(L), LUA_TNIL);
  int f = HAS(F_FORM) ? (lua_pushliteral(L, "form"), lua_rawget(L, 1)) : (lua_pushnil(L), LUA_TNIL);
  bool has_type = node_header(L, h, "Content-Type") || ig_header(c->ig, "Content-Type");
  const char *type = NULL;
  size_t len;
  const char *data;
  if (t == LUA_TNIL && f == LUA_TNIL) { lua_pop(L, 2); return; }
  if (t != LUA_TNIL && f != LUA_TNIL)
    luaL_error(L, "api_node: give body or form, not both");
  if (strcmp(c->method, "GET") == 0 || strcmp(c->method, "HEAD") == 0)
    luaL_error(L, "api_node: a %s request cannot have a %s", c->method,
               t != LUA_TNIL ? "body" : "form");
  if (t == LUA_TTABLE) {
    lua_pushcfunction(L, fr_json_encode);
    lua_pushvalue(L, -3);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
      luaL_error(L, "api_node: body: %s", lua_tostring(L, -1));
    type = "application/json";
  } else if (t == LUA_TSTRING) {
    if (!has_type)
      luaL_error(L, "api_node: a string body needs a Content-Type header "
                 "(for example application/xml)");
    lua_pushvalue(L, -2);
  } else if (t != LUA_TNIL) {
    luaL_error(L, "api_node: body: expected a table or a string, got %s", lua_typename(L, t));
  } else {
    if (f != LUA_TTABLE)
      luaL_error(L, "api_node: form: expected a table, got %s", lua_typename(L, f));
    fr_query_pairs(L, -1, "api_node: form");
    luaL_Buffer b;
    int n = (int)lua_rawlen(L, -1), arr = lua_gettop(L);
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
      if (i > 1) luaL_addchar(&b, '&');
      lua_rawgeti(L, arr, i);
      luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_remove(L, arr);
    type = "application/x-www-form-urlencoded";
  }
  data = lua_tolstring(L, -1, &len);
  if (!(c->body = malloc(len + 1))) luaL_error(L, "not enough memory");
  memcpy(c->body, data, len + 1);
  c->bodylen = len;
  if (type && !has_type) add_line(L, c, tail, "Content-Type", type);
  lua_pop(L, 3);
}

/* The fields the spec has, as bits; raises on one that is unknown. */
static unsigned check_keys(lua_State *L) {
  unsigned present = 0;
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    int i = 0;
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
      for (; spec_keys[i]; i++)
        if (strcmp(spec_keys[i], lua_tostring(L, -1)) == 0) break;
    if (lua_type(L, -1) != LUA_TSTRING || !spec_keys[i])
      luaL_error(L, "api_node: unknown field '%s'", luaL_tolstring(L, -1, NULL));
    present |= 1u << i;
  }
  return present;
}

/* Reads the spec at index 1 into c. */
void fr_request_build(lua_State *L, call *c) {
  const char *path;
  int h;
  struct curl_slist *tail = NULL;
  unsigned present = check_keys(L);
  resolve_target(L, c, present, &path);
  if (!field(L, present, F_RESULTS, LUA_TTABLE, "an array like {\"200\", \"404\"}"))
    luaL_error(L, "api_node: results is required and must include a success: a 2xx status like \"200\" or \"201\", or \"2xx\"");
  fr_parse_results(L, lua_gettop(L), "api_node: results", &c->results, true);
  lua_pop(L, 1);
  c->timeout_ms = c->ig->timeout_ms;
  if (HAS(F_TIMEOUT_MS) && (lua_pushliteral(L, "timeout_ms"), lua_rawget(L, 1)) != LUA_TNIL) {
    int ok;
    lua_Integer ms = lua_tointegerx(L, -1, &ok);
    if (!ok || lua_type(L, -1) != LUA_TNUMBER || ms < 1 || ms > 0x7fffffff)
      luaL_error(L, "api_node: timeout_ms: expected a positive integer");
    c->timeout_ms = (long)ms;
  }
  if (HAS(F_TIMEOUT_MS)) lua_pop(L, 1);
  build_url(L, c, present, path);
  build_headers(L, c, present, &h, &tail);
  build_body(L, c, present, h, &tail);
  if (!c->label) check_head_size(c);
}
