/*
** pages.c -- api_pages{...}: api_node over the pages of a listing
** (README: Pagination).
**
**   for label, res, page in api_pages{ integration = "shop", path = "/items",
**       results = { "200" }, pages = { cursor = { param = "cursor",
**       from = "meta.next_cursor" } } } do ... end
**
** api_pages checks `pages` and returns an iterator; each turn is one
** api_node call of the spec without `pages` (session.c's own path, so the
** call is traced, retried, journaled and replayed like any), made from the
** flow's line. What the next page is comes from the page before: a cursor
** in its JSON body (sent as a query parameter), a next URL in its body, or
** its Link header's rel="next". A next URL is followed only when it lies
** under the integration's base URL: it becomes the path (and query) of the
** next call, so a flow cannot be sent to another host by an API's answer.
**
** The loop ends after the page with no next one, after a page whose label
** is not a declared success (a 2xx status matched by a declared result),
** after max_pages pages, and after a page whose next URL is refused; the
** last page says so in `page` (last, capped, refused). The iterator's
** state is a Lua table, its upvalue: nothing here is allocated by a call
** that does not use api_pages.
*/
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <lauxlib.h>

#include "base.h"
#include "integration.h"
#include "pages.h"
#include "rules.h"
#include "runtime.h"
#include "secrets.h"
#include "session.h"

enum { P_CURSOR = 1, P_NEXT_URL, P_LINK };

#define DEFAULT_MAX_PAGES 100
#define MAX_MAX_PAGES 100000

/* ---- checking `pages` ---- */

/* As luaL_error, at the caller of api_pages: "api_pages: " and message id
** formatted with the arguments (rules.h, shared with flowrun check). */
static int pages_error(lua_State *L, int id, ...) {
  va_list ap;
  luaL_where(L, 1);
  lua_pushliteral(L, "api_pages: ");
  va_start(ap, id);
  lua_pushvfstring(L, fr_messages[id], ap);
  va_end(ap);
  lua_concat(L, 3);
  return lua_error(L);
}

/* What a message says a value at idx is: true or false, else its type. */
static const char *what(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TBOOLEAN) return lua_toboolean(L, idx) ? "true" : "false";
  return luaL_typename(L, idx);
}

/* Is s a path of keys: "a", "meta.next_cursor" (no empty key)? */
static bool json_path_ok(const char *s) {
  if (!*s || *s == '.') return false;
  for (; *s; s++)
    if (*s == '.' && (s[1] == '.' || s[1] == '\0')) return false;
  return true;
}

/* The string at idx, a path of keys, or an error naming field. */
static const char *check_json_path(lua_State *L, int idx, const char *field) {
  if (lua_type(L, idx) != LUA_TSTRING)
    pages_error(L, M_FIELD_TYPE, field, "a string (a path of keys like \"meta.next_cursor\")",
                what(L, idx));
  if (!json_path_ok(lua_tostring(L, idx)))
    pages_error(L, M_PAGES_JSON_PATH, field, lua_tostring(L, idx));
  return lua_tostring(L, idx);
}

/* Raises on the first key of the table at idx that allowed (a
** NULL-terminated list) does not hold, naming where and listing them. */
static void known_keys(lua_State *L, int idx, const char *where, const char *const *allowed,
                       const char *list) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    bool ok = false;
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
      for (int i = 0; allowed[i] && !ok; i++) ok = strcmp(allowed[i], lua_tostring(L, -1)) == 0;
    if (!ok) {
      lua_pushvalue(L, -1);
      pages_error(L, M_PAGES_UNKNOWN, where, luaL_tolstring(L, -1, NULL), list);
    }
  }
}

/* Checks the pages table at idx and fills the iterator's state at st:
** mode, param, from, next (a cursor's start), max. */
static void check_pages(lua_State *L, int idx, int st) {
  static const char *const keys[] = { "cursor", "next_url", "link", "max_pages", NULL };
  static const char *const ckeys[] = { "param", "from", "start", NULL };
  int modes = 0, top = lua_gettop(L);
  lua_Integer max = DEFAULT_MAX_PAGES;
  if (lua_isnil(L, idx)) pages_error(L, M_PAGES_REQUIRED);
  if (!lua_istable(L, idx)) pages_error(L, M_FIELD_TYPE, "pages", "a table", what(L, idx));
  known_keys(L, idx, "pages", keys, "cursor, next_url, link, max_pages");
  if (lua_getfield(L, idx, "cursor") != LUA_TNIL) {
    int c = lua_gettop(L);
    modes++;
    if (!lua_istable(L, c))
      pages_error(L, M_FIELD_TYPE, "pages.cursor", "a table { param = ..., from = ... }", what(L, c));
    known_keys(L, c, "pages.cursor", ckeys, "param, from, start");
    if (lua_getfield(L, c, "param") != LUA_TSTRING || lua_rawlen(L, -1) == 0)
      pages_error(L, M_FIELD_TYPE, "pages.cursor.param", "a query parameter's name (a string)",
                  lua_type(L, -1) == LUA_TSTRING ? "\"\"" : what(L, -1));
    lua_setfield(L, st, "param");
    lua_getfield(L, c, "from");
    check_json_path(L, -1, "pages.cursor.from");
    lua_setfield(L, st, "from");
    int t = lua_getfield(L, c, "start");
    if (t == LUA_TSTRING || t == LUA_TNUMBER) {
      luaL_tolstring(L, -1, NULL);
      lua_setfield(L, st, "next");
    } else if (t != LUA_TNIL)
      pages_error(L, M_FIELD_TYPE, "pages.cursor.start", "a string or a number", what(L, -1));
    lua_pushinteger(L, P_CURSOR);
    lua_setfield(L, st, "mode");
  }
  lua_settop(L, top);
  if (lua_getfield(L, idx, "next_url") != LUA_TNIL) {
    modes++;
    check_json_path(L, -1, "pages.next_url");
    lua_setfield(L, st, "from");
    lua_pushinteger(L, P_NEXT_URL);
    lua_setfield(L, st, "mode");
  }
  lua_settop(L, top);
  if (lua_getfield(L, idx, "link") != LUA_TNIL) {
    modes++;
    if (lua_type(L, -1) != LUA_TBOOLEAN || !lua_toboolean(L, -1))
      pages_error(L, M_FIELD_TYPE, "pages.link", "true", what(L, -1));
    lua_pushinteger(L, P_LINK);
    lua_setfield(L, st, "mode");
  }
  lua_settop(L, top);
  if (modes != 1) pages_error(L, M_PAGES_ONE);
  if (lua_getfield(L, idx, "max_pages") != LUA_TNIL) {
    int ok;
    max = lua_tointegerx(L, -1, &ok);
    if (!ok || lua_type(L, -1) != LUA_TNUMBER || max < 1 || max > MAX_MAX_PAGES)
      pages_error(L, M_FIELD_TYPE, "pages.max_pages", "an integer from 1 to 100000", what(L, -1));
  }
  lua_pushinteger(L, max);
  lua_setfield(L, st, "max");
  lua_settop(L, top);
}

/* ---- reading the next page from a response ---- */

/* Pushes the value at path (keys joined by '.'; a key of digits also
** indexes an array, from 1) in the table at idx, or nil. */
static void push_at(lua_State *L, int idx, const char *path) {
  lua_pushvalue(L, idx);
  while (*path) {
    const char *dot = strchr(path, '.');
    size_t n = dot ? (size_t)(dot - path) : strlen(path);
    if (!lua_istable(L, -1)) {
      lua_pop(L, 1);
      lua_pushnil(L);
      return;
    }
    bool digits = n > 0 && n < 16 && strspn(path, "0123456789") >= n;
    int t = LUA_TNIL;
    if (digits) t = lua_rawgeti(L, -1, (lua_Integer)strtoll(path, NULL, 10));
    if (t == LUA_TNIL) {
      if (digits) lua_pop(L, 1);
      lua_pushlstring(L, path, n);
      lua_rawget(L, -2);
    }
    lua_remove(L, -2);
    path += n + (dot ? 1 : 0);
  }
}

static const char *skip_space(const char *p) {
  while (*p == ' ' || *p == '\t') p++;
  return p;
}

/* Does the rel value v (len bytes, space-separated relations) name next? */
static bool rel_next(const char *v, size_t len) {
  for (size_t i = 0; i < len;) {
    size_t j = i;
    while (j < len && v[j] != ' ' && v[j] != '\t') j++;
    if (j - i == 4 && strncasecmp(v + i, "next", 4) == 0) return true;
    i = j + 1;
  }
  return false;
}

/* Pushes the target of the first rel="next" link of a Link header (RFC
** 8288: <url>; rel="next", <url>; rel="last") and returns true, or
** pushes nothing and returns false. */
static bool push_link_next(lua_State *L, const char *p) {
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == ',') p++;
    if (*p != '<') {                    /* not a link: on to the next one */
      while (*p && *p != ',') p++;
      if (!*p) return false;
      continue;
    }
    const char *url = p + 1, *end = strchr(url, '>');
    bool next = false;
    if (!end) return false;
    p = skip_space(end + 1);
    while (*p == ';') {                 /* its parameters */
      const char *name = p = skip_space(p + 1), *v;
      size_t nlen, vlen;
      while (*p && *p != '=' && *p != ';' && *p != ',' && *p != ' ' && *p != '\t') p++;
      nlen = (size_t)(p - name);
      p = skip_space(p);
      if (*p != '=') continue;
      p = skip_space(p + 1);
      if (*p == '"') {
        const char *close = strchr(p + 1, '"');
        v = p + 1;
        vlen = close ? (size_t)(close - v) : strlen(v);
        p = close ? close + 1 : v + vlen;
      } else {
        v = p;
        while (*p && *p != ';' && *p != ',' && *p != ' ' && *p != '\t') p++;
        vlen = (size_t)(p - v);
      }
      if (nlen == 3 && strncasecmp(name, "rel", 3) == 0 && rel_next(v, vlen)) next = true;
      p = skip_space(p);
    }
    if (next) {
      lua_pushlstring(L, url, (size_t)(end - url));
      return true;
    }
    while (*p && *p != ',') p++;
    if (!*p) return false;
  }
}

/* What push_next_url has from libcurl: the URL resolved and its parts,
** libcurl's strings, freed whatever happens in Lua meanwhile. */
typedef struct next_url {
  const fr_integration *ig;
  const char *url;                      /* as the page gives it */
  CURLUcode rc;                         /* of resolving it */
  char *parts[8];                       /* scheme host port path, of it then of base */
  char *full, *query;
} next_url;

/* Pushes what push_next_url returns (protected: it allocates in Lua). */
static int push_next_url_p(lua_State *L) {
  next_url *n = lua_touserdata(L, 1);
  const fr_integration *ig = n->ig;
  char **parts = n->parts;
  size_t bl = strlen(ig->base_path);
  bool same = n->rc == CURLUE_OK;
  if (!same) {
    lua_pushfstring(L, "next URL \"%s\" is not a URL (%s): not followed", n->url, curl_url_strerror(n->rc));
    return 1;
  }
  for (int i = 0; i < 3; i++)
    same = same && parts[i] && parts[4 + i] && strcasecmp(parts[i], parts[4 + i]) == 0;
  same = same && parts[3] && n->full && strncmp(parts[3], ig->base_path, bl) == 0
         && (parts[3][bl] == '\0' || parts[3][bl] == '/');
  if (!same) {
    lua_pushfstring(L, "next URL \"%s\" is not under the base URL of integration '%s' (%s): "
                    "not followed", n->url, ig->name, ig->base_url);
    return 1;
  }
  lua_pushstring(L, n->full);
  lua_pushstring(L, parts[3] + bl);
  if (n->query) lua_pushfstring(L, "?%s", n->query);
  else lua_pushliteral(L, "");
  lua_concat(L, 2);
  const char *path = lua_tostring(L, -1), *bad = fr_path_problem(path);
  if (!bad && strpbrk(path, "{}")) bad = "'{' and '}' are not allowed (percent-encode them)";
  if (!bad) return 2;
  lua_pushfstring(L, "next URL \"%s\" cannot be sent as it reads: %s: not followed", n->url, bad);
  return 1;
}

/* A next URL (absolute, or relative to the integration's base URL as a
** link in a page at that URL would be): when it lies under the base URL
** (same scheme, host and port; its path the base path or below), pushes
** the resolved URL and the path and query to send (below the base path)
** and returns NULL; else pushes why it is not followed and returns it. */
static const char *push_next_url(lua_State *L, const fr_integration *ig, const char *url) {
  static const CURLUPart which[4] = { CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT,
                                      CURLUPART_PATH };
  next_url n = { .ig = ig, .url = url };
  CURLU *u = curl_url_dup(ig->base);
  int top = lua_gettop(L), st;
  if (!u) luaL_error(L, "not enough memory");
  n.rc = curl_url_set(u, CURLUPART_URL, url, 0);
  if (n.rc == CURLUE_OK) {
    for (int i = 0; i < 4; i++) {
      curl_url_get(u, which[i], &n.parts[i], CURLU_DEFAULT_PORT);
      curl_url_get(ig->base, which[i], &n.parts[4 + i], CURLU_DEFAULT_PORT);
    }
    curl_url_get(u, CURLUPART_URL, &n.full, 0);
    curl_url_get(u, CURLUPART_QUERY, &n.query, 0);
  }
  lua_pushcfunction(L, push_next_url_p);
  lua_pushlightuserdata(L, &n);
  st = lua_pcall(L, 1, LUA_MULTRET, 0);
  for (int i = 0; i < 8; i++) curl_free(n.parts[i]);
  curl_free(n.full);
  curl_free(n.query);
  curl_url_cleanup(u);
  if (st != LUA_OK) lua_error(L);
  return lua_gettop(L) - top == 1 ? lua_tostring(L, -1) : NULL;
}

/* The integration the spec at idx names (integration, or endpoint's
** "integration." part), or NULL. */
static fr_integration *spec_integration(lua_State *L, flowrun *rt, int idx) {
  fr_integration *ig = NULL;
  const char *s;
  if (lua_getfield(L, idx, "integration") == LUA_TSTRING) {
    s = lua_tostring(L, -1);
    ig = fr_integration_find(rt, s, strlen(s));
  } else if (lua_getfield(L, idx, "endpoint") == LUA_TSTRING) {
    s = lua_tostring(L, -1);
    const char *dot = strchr(s, '.');
    if (dot) ig = fr_integration_find(rt, s, (size_t)(dot - s));
    lua_pop(L, 1);
  } else
    lua_pop(L, 1);
  lua_pop(L, 1);
  return ig;
}

/* Writes a warning to the trace stream, as log.warn does. */
static void warn(lua_State *L, flowrun *rt, const char *text) {
  fr_session *s = fr_session_current(rt, L);
  if (!rt->cb.log) return;
  luaL_where(L, 1);
  lua_pushliteral(L, "api_pages: ");
  lua_pushstring(L, text);
  lua_concat(L, 3);
  fr_push_redacted(L, rt, lua_tostring(L, -1), lua_rawlen(L, -1));
  rt->cb.log(rt->cb.ud, s ? s->id : NULL, "warn", lua_tostring(L, -1));
  lua_pop(L, 2);
}

/* The page whose label and response are on top has come: the next page
** (if any) goes in the state, and label, response and the page table are
** returned. */
static int page_done(lua_State *L) {
  flowrun *rt = fr_rt(L);
  int st = lua_upvalueindex(2), res = lua_gettop(L), label = res - 1, page, mode;
  lua_Integer n, max;
  bool success, has_next = false;
  lua_getfield(L, st, "n");
  n = lua_tointeger(L, -1) + 1;
  lua_pop(L, 1);
  lua_pushinteger(L, n);
  lua_setfield(L, st, "n");
  lua_getfield(L, st, "max");
  max = lua_tointeger(L, -1);
  lua_getfield(L, st, "mode");
  mode = (int)lua_tointeger(L, -1);
  lua_getfield(L, res, "status");
  lua_Integer status = lua_tointeger(L, -1);
  lua_pop(L, 3);
  success = status >= 200 && status <= 299 && strcmp(lua_tostring(L, label), "other") != 0;
  lua_createtable(L, 0, 5);
  page = lua_gettop(L);
  lua_pushinteger(L, n);
  lua_setfield(L, page, "number");
  lua_pushnil(L);                       /* the next page: nil for none */
  lua_setfield(L, st, "next");
  if (success && mode == P_CURSOR) {
    lua_getfield(L, res, "json");
    lua_getfield(L, st, "from");
    push_at(L, -2, lua_tostring(L, -1));
    if ((lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) > 0) || lua_type(L, -1) == LUA_TNUMBER) {
      luaL_tolstring(L, -1, NULL);
      lua_pushvalue(L, -1);
      lua_setfield(L, st, "next");
      lua_setfield(L, page, "next");
      has_next = true;
    }
    lua_settop(L, page);
  } else if (success) {                 /* a next URL, in the body or the Link header */
    bool found;
    if (mode == P_NEXT_URL) {
      lua_getfield(L, res, "json");
      lua_getfield(L, st, "from");
      push_at(L, -2, lua_tostring(L, -1));
      found = lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) > 0;
    } else {
      lua_getfield(L, res, "headers");
      found = lua_getfield(L, -1, "link") == LUA_TSTRING
              && push_link_next(L, lua_tostring(L, -1));
    }
    lua_getfield(L, st, "spec");
    fr_integration *ig = spec_integration(L, rt, lua_gettop(L));
    lua_pop(L, 1);
    if (found && ig) {
      const char *why = push_next_url(L, ig, lua_tostring(L, -1));
      if (why) {
        warn(L, rt, why);
        lua_setfield(L, page, "refused");
      } else {
        lua_setfield(L, st, "next");    /* the path and query */
        lua_setfield(L, page, "next");  /* the URL */
        has_next = true;
      }
    }
    lua_settop(L, page);
  }
  if (has_next && n >= max) {
    lua_pushboolean(L, 1);
    lua_setfield(L, page, "capped");
  }
  if (!has_next || n >= max) {
    lua_pushboolean(L, 1);
    lua_setfield(L, st, "done");
  }
  lua_pushboolean(L, !has_next || n >= max);
  lua_setfield(L, page, "last");
  lua_pushvalue(L, label);
  lua_pushvalue(L, res);
  lua_pushvalue(L, page);
  return 3;
}

/* ---- the iterator ---- */

/* Pushes a copy of the table at idx (its own keys, not its metatable). */
static void push_copy(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
}

/* Pushes the spec of the next page: the spec given, with the cursor added
** to its query, or (a next URL) the path and query of that URL on the same
** integration and method. */
static void push_page_spec(lua_State *L, flowrun *rt, int st) {
  int mode, spec, t;
  lua_getfield(L, st, "mode");
  mode = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, st, "spec");
  push_copy(L, -1);
  lua_remove(L, -2);
  spec = lua_gettop(L);
  if (lua_getfield(L, st, "next") == LUA_TNIL) {   /* the first page as written */
    lua_pop(L, 1);
    return;
  }
  if (mode == P_CURSOR) {               /* query + { [param] = cursor } */
    lua_getfield(L, st, "param");       /* cursor, param */
    t = lua_getfield(L, spec, "query");
    if (t == LUA_TTABLE && lua_rawgeti(L, -1, 1) == LUA_TTABLE) {   /* a list of pairs */
      lua_pop(L, 1);
      push_copy(L, -1);
      lua_createtable(L, 2, 0);         /* { param, cursor } */
      lua_pushvalue(L, -4);
      lua_rawseti(L, -2, 1);
      lua_pushvalue(L, -5);
      lua_rawseti(L, -2, 2);
      lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    } else if (t == LUA_TTABLE) {
      lua_pop(L, 1);
      push_copy(L, -1);
      lua_pushvalue(L, -3);
      lua_pushvalue(L, -5);
      lua_rawset(L, -3);
    } else if (t == LUA_TNIL) {
      lua_createtable(L, 0, 1);
      lua_pushvalue(L, -3);
      lua_pushvalue(L, -5);
      lua_rawset(L, -3);
    } else {
      lua_settop(L, spec);              /* api_node says what is wrong with it */
      return;
    }
    lua_setfield(L, spec, "query");
    lua_settop(L, spec);
    return;
  }
  lua_setfield(L, spec, "path");        /* a next URL's path and query */
  fr_integration *ig = spec_integration(L, rt, spec);
  if (lua_getfield(L, spec, "method") == LUA_TNIL && ig
      && lua_getfield(L, spec, "endpoint") == LUA_TSTRING && strchr(lua_tostring(L, -1), '.')) {
    const fr_endpoint *ep = fr_endpoint_find(ig, strchr(lua_tostring(L, -1), '.') + 1);
    if (ep) {
      lua_pushstring(L, ep->method);
      lua_setfield(L, spec, "method");
    }
  }
  lua_settop(L, spec);
  if (ig) {
    lua_pushstring(L, ig->name);
    lua_setfield(L, spec, "integration");
  }
  lua_pushnil(L);
  lua_setfield(L, spec, "endpoint");
  lua_pushnil(L);
  lua_setfield(L, spec, "params");
  lua_pushnil(L);
  lua_setfield(L, spec, "query");
}

static int k_page(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  fr_api_node_result(L, ctx);
  return page_done(L);
}

/* The iterator: label, response, page of the next page, or nothing once
** the last has been given. Upvalues: the runtime, the state. */
static int l_pages_next(lua_State *L) {
  int st = lua_upvalueindex(2);
  lua_settop(L, 0);
  if (lua_getfield(L, st, "done") == LUA_TBOOLEAN) return 0;
  lua_pop(L, 1);
  push_page_spec(L, fr_rt(L), st);      /* at 1: the spec api_node reads */
  fr_api_node_k(L, k_page);
  return page_done(L);
}

/* api_pages(spec) -> the iterator over the pages: spec is api_node's, with
** pages = { cursor = { param, from [, start] } | next_url = path | link =
** true, max_pages = n }. */
static int l_api_pages(lua_State *L) {
  int st;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_newtable(L);
  st = lua_gettop(L);
  lua_getfield(L, 1, "pages");
  check_pages(L, 3, st);
  lua_pop(L, 1);
  push_copy(L, 1);
  lua_pushnil(L);
  lua_setfield(L, -2, "pages");
  lua_setfield(L, st, "spec");
  lua_pushinteger(L, 0);
  lua_setfield(L, st, "n");
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, st);
  lua_pushcclosure(L, l_pages_next, 2);
  return 1;
}

void fr_add_api_pages(flowrun *rt, lua_State *L) {
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, l_api_pages, 1);
  lua_setfield(L, -2, "api_pages");
}
