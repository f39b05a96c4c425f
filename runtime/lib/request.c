/*
** request.c -- from an api_node spec to a request (README: A flow that
** branches on labels).
**
** Everything a flow author can get wrong is checked here, before anything
** is sent: fields, integration and endpoint, method, placeholders, query,
** headers, body and results, by the rules and in the words of rules.c
** (which flowrun check reads too). The URL is built with libcurl's URL API from
** the integration's parsed base URL; values are percent-encoded with
** curl_easy_escape (query strings: query.c). It fills an fr_request and
** calls nothing in call.c: the call adopts what it returns.
*/
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>

#include "integration.h"
#include "json.h"
#include "query.h"
#include "request.h"
#include "rules.h"
#include "runtime.h"
#include "wire.h"

/* ---- building the request ---- */

/* The spec at index 1, read once: which fields (rules.c) it has, as bits
** of present, and each one's value in stack slot base + f. */
typedef struct spec {
  unsigned present;
  int base;
} spec;

#define HAS(f) (sp->present & (1u << (f)))

/* Pushes field f of the spec and says true, when the spec has it; raises
** unless it is of the field's type. */
static bool field(lua_State *L, const spec *sp, int f) {
  if (!HAS(f)) return false;
  lua_pushvalue(L, sp->base + f);
  if (lua_type(L, -1) != fr_fields[f].type)
    fr_api_error(L, M_FIELD_TYPE, fr_fields[f].name, fr_fields[f].want,
                 luaL_typename(L, -1));
  return true;
}

static void resolve_target(lua_State *L, flowrun *rt, fr_request *rq, const spec *sp,
                           const char **path) {
  const fr_endpoint *ep = NULL;
  fr_integration *ig = NULL;
  const char *method = NULL, *bad;
  if (field(L, sp, F_ENDPOINT)) {
    const char *s = lua_tostring(L, -1), *dot = strchr(s, '.');
    if (!dot) fr_api_error(L, M_ENDPOINT_FORM, s);
    if (!(ig = fr_integration_find(rt, s, dot - s)))
      fr_api_error(L, M_UNKNOWN_INTEGRATION, lua_pushlstring(L, s, dot - s), "");
    if (!(ep = fr_endpoint_find(ig, dot + 1)))
      fr_api_error(L, M_NO_ENDPOINT, ig->name, dot + 1);
    lua_pop(L, 1);
  }
  if (field(L, sp, F_INTEGRATION)) {
    const char *s = lua_tostring(L, -1);
    if (ig && strcmp(ig->name, s) != 0)
      fr_api_error(L, M_DISAGREE, s, lua_pushfstring(L, "%s.%s", ig->name, ep->name));
    if (!ig && !(ig = fr_integration_find(rt, s, strlen(s))))
      fr_api_error(L, M_UNKNOWN_INTEGRATION, s,
                   rt->integrations ? "" : " (no integrations are loaded: -I FILE on the command "
                   "line, flowrun.new{ integrations = ... } in Lua, flowrun_load_integrations in C)");
    lua_pop(L, 1);
  }
  if (!ig) fr_api_error(L, M_TARGET_REQUIRED);
  if (ig->unset)                        /* never send a placeholder */
    luaL_error(L, "api_node: integration '%s' cannot be used: environment variable %s is not set",
               ig->name, ig->unset);
  rq->ig = ig;
  rq->endpoint = ep ? ep->name : NULL;
  ig->refs++;
  method = ep ? ep->method : "GET";
  if (field(L, sp, F_METHOD)) {
    const char *m = lua_tostring(L, -1);
    if (!(method = fr_method(m))) {
      fr_push_methods_text(L);
      fr_api_error(L, M_BAD_METHOD, lua_tostring(L, -1), m);
    }
    if (ep && strcmp(ep->method, m) != 0)
      fr_api_error(L, M_METHOD_DIFFERS, m, ep->name, ep->method);
    lua_pop(L, 1);
  }
  strcpy(rq->method, method);
  *path = ep ? ep->path : "";
  if (field(L, sp, F_PATH)) {
    size_t len;
    if (ep) fr_api_error(L, M_PATH_AND_ENDPOINT);
    *path = lua_tolstring(L, -1, &len); /* anchored by the spec */
    if (strlen(*path) != len) luaL_error(L, "api_node: path: NUL in the path");
    lua_pop(L, 1);
  }
  if ((bad = fr_path_problem(*path))) {
    if (ep) fr_api_error(L, M_ENDPOINT_PATH_PROBLEM, lua_pushfstring(L, "%s.%s", ig->name, ep->name), bad);
    fr_api_error(L, M_PATH_PROBLEM, bad);
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
      fr_api_error(L, M_PLACEHOLDER, lua_pushlstring(L, open + 1, close - open - 1));
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
  if (p != path && fr_path_problem(lua_tostring(L, -1)))  /* "/..{a}" with a = "" */
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

/* The request will not be sent: its call ends with label error and this
** reason, and the message made from fmt. */
static void fail(lua_State *L, fr_request *rq, const char *reason, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  free(rq->fail_msg);
  if (!(rq->fail_msg = strdup(msg))) luaL_error(L, "not enough memory");
  rq->fail = reason;
}

static void head_too_large(lua_State *L, fr_request *rq) {
  fail(L, rq, "too_large", "the URL and headers take more than %d bytes, "
               "more than libcurl can send: send large data in the body", MAX_HEAD);
}

/* The URL and the header lines, against MAX_HEAD. */
static void check_head_size(lua_State *L, fr_request *rq) {
  size_t n = strlen(rq->url);
  for (const struct curl_slist *l = rq->hdrs; l && n <= MAX_HEAD; l = l->next)
    n += strlen(l->data) + 2;
  if (n > MAX_HEAD) head_too_large(L, rq);
}

/* Sets rq->url from path and query through the integration's URL handle.
** Many calls ask for the URL of the call before; that one is reused. */
static void set_url(lua_State *L, fr_integration *ig, fr_request *rq, const char *path,
                    const char *query, bool has_query) {
  char *url = NULL;
  CURLUcode rc;
  if (!has_query) query = "";
  if (ig->memo_url && strcmp(path, ig->memo_path) == 0
      && strcmp(query, ig->memo_query) == 0) {
    if (!fr_request_set_url(rq, ig->memo_url)) luaL_error(L, "not enough memory");
    return;
  }
  rc = curl_url_set(ig->scratch, CURLUPART_PATH, path, 0);
  if (rc == CURLUE_OK)
    rc = curl_url_set(ig->scratch, CURLUPART_QUERY, has_query ? query : NULL, 0);
  if (rc == CURLUE_OK) rc = curl_url_get(ig->scratch, CURLUPART_URL, &url, 0);
  if (rc != CURLUE_OK) luaL_error(L, "api_node: cannot build the URL: %s", curl_url_strerror(rc));
  upper_hex(url);
  bool ok = fr_request_set_url(rq, url);
  curl_free(url);
  if (!ok) luaL_error(L, "not enough memory");
  free(ig->memo_path);
  free(ig->memo_query);
  free(ig->memo_url);
  ig->memo_path = strdup(path);
  ig->memo_query = strdup(query);
  ig->memo_url = strdup(rq->url);
  if (!ig->memo_path || !ig->memo_query || !ig->memo_url) {
    free(ig->memo_url);
    ig->memo_url = NULL;                /* no memo this time */
  }
}

/* Remembers the URL of a plain call (no params, no query, no separator:
** its URL depends on its path alone): the next plain call of the path gets
** it as it is. */
static void remember_plain(fr_integration *ig, const char *path, const char *url) {
  char *p = strdup(path), *u = strdup(url);
  free(ig->plain_path);
  free(ig->plain_url);
  ig->plain_path = p;
  ig->plain_url = p && u ? u : NULL;
  if (!ig->plain_url) free(u);
}

/* Builds rq->url from the integration's base URL, path and query. */
static void build_url(lua_State *L, fr_request *rq, const spec *sp, const char *path) {
  fr_integration *ig = rq->ig;
  int params = 0, i;
  char sep = '&';
  const char *q;
  bool plain = !HAS(F_PARAMS) && !HAS(F_QUERY) && !HAS(F_QUERY_SEPARATOR);
  if (plain && ig->plain_url && strcmp(path, ig->plain_path) == 0) {
    if (!fr_request_set_url(rq, ig->plain_url)) luaL_error(L, "not enough memory");
    return;
  }
  if (field(L, sp, F_PARAMS)) {
    params = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, params)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        fr_api_error(L, M_KEYS_STRINGS, "params");
      fr_query_value(L, -1, "api_node: params", lua_tostring(L, -2));
      lua_pop(L, 2);
    }
  }
  if (field(L, sp, F_QUERY_SEPARATOR)) {
    q = lua_tostring(L, -1);
    if (strcmp(q, "&") != 0 && strcmp(q, ";") != 0)
      fr_api_error(L, M_QUERY_SEPARATOR, q);
    sep = q[0];
    lua_pop(L, 1);
  }
  fill_path(L, path, params);
  int filled = lua_gettop(L);
  /* the query: base URL's, the path's, the integration's, the node's */
  if (field(L, sp, F_QUERY)) {
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
    head_too_large(L, rq);
    lua_pushfstring(L, "%s%s%s", ig->base_url, path[0] == '/' ? "" : "/", path);
    if (!fr_request_set_url(rq, lua_tostring(L, -1))) luaL_error(L, "not enough memory");
  } else
    set_url(L, ig, rq, lua_tostring(L, -1), lua_tostring(L, -2), nq > 0);
  if (plain && !rq->fail) remember_plain(ig, path, rq->url);
  lua_settop(L, filled - 1);
  if (params) lua_pop(L, 1);
}

/* The value of the header named name (any case) in the headers table at
** idx, or NULL (also for idx 0: no headers table). */
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

static bool ig_header(const fr_integration *ig, const char *name) {
  for (int i = 0; i < ig->nheaders; i++)
    if (strcasecmp(ig->headers[i].name, name) == 0) return true;
  return false;
}

/* Appends a header line to rq->hdrs after *tail, its last line (NULL: not
** known yet). curl_slist_append walks from the node it is given to the
** end: given the last, a node with 100 000 headers costs no more per line
** than one with two. */
static void add_line(lua_State *L, fr_request *rq, struct curl_slist **tail,
                     const char *name, const char *value) {
  size_t n = strlen(name) + (value ? strlen(value) : 0) + 3;
  char *line = malloc(n);
  struct curl_slist *l;
  if (!line) luaL_error(L, "not enough memory");
  if (!value) snprintf(line, n, "%s", name);          /* "X:" removes X */
  else snprintf(line, n, *value ? "%s: %s" : "%s;", name, value);  /* "X;" sends "X:" */
  if (!*tail && rq->hdrs)
    for (*tail = rq->hdrs; (*tail)->next; *tail = (*tail)->next) {}
  l = curl_slist_append(*tail, line);
  free(line);
  if (!l) luaL_error(L, "not enough memory");
  if (!rq->hdrs) rq->hdrs = l;
  *tail = *tail ? (*tail)->next : l;
}

/* Builds the header list; a conflict with the integration sets the label.
** One pass over the node's headers compares each with the integration's
** and marks those the node repeats. */
static void build_headers(lua_State *L, fr_request *rq, const spec *sp, int *hidx,
                          struct curl_slist **tail) {
  fr_integration *ig = rq->ig;
  int h = 0, i;
  bool *repeated;
  *hidx = 0;
  if (field(L, sp, F_HEADERS)) {
    h = *hidx = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, h)) {
      const char *name, *why;
      size_t vlen;
      if (lua_type(L, -2) != LUA_TSTRING)
        fr_api_error(L, M_HEADER_NAMES);
      name = lua_tostring(L, -2);
      if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        fr_api_error(L, M_HEADER_TYPE, name, luaL_typename(L, -1));
      lua_pushvalue(L, -1);
      const char *value = lua_tolstring(L, -1, &vlen);
      if ((why = fr_header_problem(name, value, vlen)))
        fr_api_error(L, M_HEADER_PROBLEM, name, why);
      lua_pop(L, 2);
    }
  }
  rq->retry_ok = (strcmp(rq->method, "POST") != 0 && strcmp(rq->method, "PATCH") != 0)
             || node_header(L, h, "Idempotency-Key") || ig_header(ig, "Idempotency-Key");
  if (!h && !HAS(F_BODY) && !HAS(F_FORM) && !HAS(F_MULTIPART)) {   /* the integration's alone */
    if (!ig->shared_hdrs) {             /* built once, into rq->hdrs */
      for (i = 0; i < ig->nheaders; i++)
        add_line(L, rq, tail, ig->headers[i].name, ig->headers[i].value);
      add_line(L, rq, tail, "Expect:", NULL);
      ig->shared_hdrs = rq->hdrs;
    }
    rq->hdrs = ig->shared_hdrs;
    rq->shared_hdrs = true;
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
          if (!rq->fail && strcmp(ig->headers[i].value, value) != 0)
            fail(L, rq, "header_conflict", fr_messages[M_HEADER_CONFLICT],
                        ig->headers[i].name, ig->name);
        }
      add_line(L, rq, tail, name, value);
      lua_pop(L, 2);
    }
  }
  for (i = 0; i < ig->nheaders; i++)
    if (!repeated[i] && !(HAS(F_MULTIPART) && strcasecmp(ig->headers[i].name, "Content-Type") == 0))
      add_line(L, rq, tail, ig->headers[i].name, ig->headers[i].value);
  if (repeated != few) lua_pop(L, 1);
  add_line(L, rq, tail, "Expect:", NULL);   /* no 100-continue round trip */
}

/* A multipart body: its parts (wire.c), sent with the Content-Type libcurl
** makes (its boundary), so an integration's Content-Type is left out. */
static void build_multipart(lua_State *L, fr_request *rq, const spec *sp, int h) {
  if (HAS(F_BODY) || HAS(F_FORM)) fr_api_error(L, M_MULTIPART_AND_BODY, HAS(F_BODY) ? "body" : "form");
  if (strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0)
    fr_api_error(L, M_NO_BODY, rq->method, "multipart");
  if (h) {
    lua_pushnil(L);
    while (lua_next(L, h)) {
      lua_pop(L, 1);
      if (strcasecmp(lua_tostring(L, -1), "Content-Type") == 0)
        fr_api_error(L, M_MULTIPART_CONTENT_TYPE, lua_tostring(L, -1));
    }
  }
  field(L, sp, F_MULTIPART);
  fr_parts_read(L, rq, -1);
  lua_pop(L, 1);
}

static void build_body(lua_State *L, fr_request *rq, const spec *sp, int h,
                       struct curl_slist **tail) {
  if (HAS(F_MULTIPART)) {
    build_multipart(L, rq, sp, h);
    return;
  }
  int t = (lua_pushvalue(L, sp->base + F_BODY), lua_type(L, -1));
  int f = (lua_pushvalue(L, sp->base + F_FORM), lua_type(L, -1));
  bool has_type;
  const char *type = NULL;
  size_t len;
  const char *data;
  if (t == LUA_TNIL && f == LUA_TNIL) { lua_pop(L, 2); return; }
  has_type = node_header(L, h, "Content-Type") || ig_header(rq->ig, "Content-Type");
  if (t != LUA_TNIL && f != LUA_TNIL)
    fr_api_error(L, M_BODY_AND_FORM);
  if (strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0)
    fr_api_error(L, M_NO_BODY, rq->method, t != LUA_TNIL ? "body" : "form");
  if (t == LUA_TTABLE) {
    lua_pushcfunction(L, fr_json_encode);
    lua_pushvalue(L, -3);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
      luaL_error(L, "api_node: body: %s", lua_tostring(L, -1));
    type = "application/json";
  } else if (t == LUA_TSTRING) {
    if (!has_type) fr_api_error(L, M_STRING_BODY);
    lua_pushvalue(L, -2);
  } else if (t != LUA_TNIL) {
    fr_api_error(L, M_BODY_TYPE, lua_typename(L, t));
  } else {
    if (f != fr_fields[F_FORM].type)
      fr_api_error(L, M_FIELD_TYPE, "form", fr_fields[F_FORM].want, lua_typename(L, f));
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
  if (!(rq->body = malloc(len + 1))) luaL_error(L, "not enough memory");
  memcpy(rq->body, data, len + 1);
  rq->bodylen = len;
  if (type && !has_type) add_line(L, rq, tail, "Content-Type", type);
  lua_pop(L, 3);
}

/* The names of the fields as this state's strings: a key of a spec is a
** field when it is one of these (short strings are interned: the same
** text is the same string), found by its address without a strcmp. */
static const char *const *field_names(lua_State *L, flowrun *rt) {
  static const char anchor = 0;
  const char *names[F_NFIELDS];
  _Static_assert(F_NFIELDS <= sizeof rt->field_names / sizeof *rt->field_names, "field_names");
  if (rt->field_names[0]) return rt->field_names;
  lua_createtable(L, F_NFIELDS, 0);     /* keeps them alive */
  for (int i = 0; i < F_NFIELDS; i++) {
    names[i] = lua_pushstring(L, fr_fields[i].name);
    lua_rawseti(L, -2, i + 1);
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, &anchor);
  /* kept only once all are anchored: a memory error above leaves none */
  memcpy(rt->field_names, names, sizeof names);
  return rt->field_names;
}

/* Reads which fields the spec has into sp, and their values into the
** slots from sp->base; raises on a key that is not a field. */
static void check_keys(lua_State *L, flowrun *rt, spec *sp) {
  const char *const *names = field_names(L, rt);
  sp->present = 0;
  sp->base = lua_gettop(L) + 1;
  luaL_checkstack(L, F_NFIELDS + 8, "api_node");
  lua_settop(L, sp->base + F_NFIELDS - 1);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    int i = F_NFIELDS;
    if (lua_type(L, -2) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -2);
      for (i = 0; i < F_NFIELDS && names[i] != k; i++) {}
    }
    if (i == F_NFIELDS)
      fr_api_error(L, M_UNKNOWN_FIELD, luaL_tolstring(L, -2, NULL));
    lua_replace(L, sp->base + i);
    sp->present |= 1u << i;
  }
}

/* Reads the spec at index 1 into rq, empty but for its URL buffer. */
void fr_request_build(lua_State *L, flowrun *rt, fr_request *rq) {
  const char *path;
  int h;
  struct curl_slist *tail = NULL;
  spec the, *sp = &the;
  check_keys(L, rt, sp);
  resolve_target(L, rt, rq, sp, &path);
  if (!field(L, sp, F_RESULTS))
    fr_api_error(L, M_RESULTS_REQUIRED, fr_messages[M_MISSING_SUCCESS]);
  fr_parse_results(L, lua_gettop(L), "api_node: results", &rq->results, true);
  lua_pop(L, 1);
  rq->timeout_ms = rq->ig->timeout_ms;
  if (HAS(F_TIMEOUT_MS) && (lua_pushvalue(L, sp->base + F_TIMEOUT_MS), lua_type(L, -1)) != LUA_TNIL) {
    int ok;
    lua_Integer ms = lua_tointegerx(L, -1, &ok);
    if (!ok || lua_type(L, -1) != LUA_TNUMBER || ms < 1 || ms > 0x7fffffff)
      fr_api_error(L, M_TIMEOUT_MS);
    rq->timeout_ms = (long)ms;
  }
  if (HAS(F_TIMEOUT_MS)) lua_pop(L, 1);
  rq->deadline_ms = rq->ig->deadline_ms;
  if (HAS(F_DEADLINE_MS) && (lua_pushvalue(L, sp->base + F_DEADLINE_MS), lua_type(L, -1)) != LUA_TNIL) {
    int ok;
    lua_Integer ms = lua_tointegerx(L, -1, &ok);
    if (!ok || lua_type(L, -1) != LUA_TNUMBER || ms < 1 || ms > 0x7fffffff)
      fr_api_error(L, M_DEADLINE_MS);
    rq->deadline_ms = (long)ms;
  }
  if (HAS(F_DEADLINE_MS)) lua_pop(L, 1);
  build_url(L, rq, sp, path);
  build_headers(L, rq, sp, &h, &tail);
  build_body(L, rq, sp, h, &tail);
  if (!rq->fail) check_head_size(L, rq);
  lua_settop(L, sp->base - 1);
}

bool fr_request_set_url(fr_request *rq, const char *url) {
  size_t n = strlen(url) + 1;
  if (n > rq->urlcap) {
    char *p = realloc(rq->url, n);
    if (!p) return false;
    rq->url = p;
    rq->urlcap = n;
  }
  memcpy(rq->url, url, n);
  return true;
}

bool fr_request_add_key(fr_request *rq, const char *key) {
  struct curl_slist *l = NULL, *n;
  char line[128];
  for (n = rq->hdrs; n; n = n->next)
    if (strncasecmp(n->data, "Idempotency-Key:", 16) == 0) return true;   /* the node's own */
  for (n = rq->hdrs; rq->shared_hdrs && n; n = n->next)   /* the integration's: a copy */
    if (!(l = curl_slist_append(l, n->data))) return false;
  snprintf(line, sizeof line, "Idempotency-Key: %s", key);
  if (!(n = curl_slist_append(rq->shared_hdrs ? l : rq->hdrs, line))) {
    curl_slist_free_all(l);
    return false;
  }
  if (rq->shared_hdrs || !rq->hdrs) rq->hdrs = n;
  rq->shared_hdrs = false;
  rq->retry_ok = true;
  return true;
}

void fr_request_clear(fr_request *rq) {
  char *url = rq->url;
  size_t urlcap = rq->urlcap;
  if (rq->ig) fr_integration_release(rq->ig);
  if (!rq->shared_hdrs) curl_slist_free_all(rq->hdrs);
  free(rq->body);
  fr_parts_free(rq->parts);
  free(rq->fail_msg);
  memset(rq, 0, sizeof *rq);
  rq->url = url;
  rq->urlcap = urlcap;
}
