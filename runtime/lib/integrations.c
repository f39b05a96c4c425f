/*
** integrations.c -- integrations files (README: An integrations file) and
** the secrets they read.
**
** An integrations file runs in a sandbox: the safe parts of the standard
** library plus env(). Every integration is validated key by key into a C
** struct that calls share by reference count, so replacing an integration
** (a reload, the REPL's integration()) never pulls it from under a call in
** flight. Values read through env() are remembered as secrets and hidden
** from every trace, error and URL the runtime shows.
*/
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>

#include "auth.h"
#include "base.h"
#include "integration.h"
#include "query.h"
#include "rules.h"
#include "runtime.h"
#include "secrets.h"

/* ---- integration structs ---- */

static void integration_free(fr_integration *ig) {
  int i;
  free(ig->name);
  free(ig->base_url);
  if (ig->base) curl_url_cleanup(ig->base);
  if (ig->scratch) curl_url_cleanup(ig->scratch);
  free(ig->base_path);
  free(ig->base_query);
  free(ig->memo_path);
  free(ig->memo_query);
  free(ig->memo_url);
  free(ig->plain_path);
  free(ig->plain_url);
  for (i = 0; i < ig->nheaders; i++) {
    free(ig->headers[i].name);
    free(ig->headers[i].value);
  }
  free(ig->headers);
  fr_auth_free(ig->oauth);
  free(ig->api_key);
  for (i = 0; i < ig->nquery; i++) free(ig->query[i]);
  free(ig->query);
  for (i = 0; i < ig->nendpoints; i++) {
    free(ig->endpoints[i].name);
    free(ig->endpoints[i].method);
    free(ig->endpoints[i].path);
  }
  free(ig->endpoints);
  free(ig->ca_file);
  free(ig->proxy);
  free(ig->no_proxy);
  free(ig->cert_file);
  free(ig->key_file);
  free(ig->key_password);
  free(ig->unset);
  fr_pool_free(&ig->pool);
  curl_slist_free_all(ig->shared_hdrs);
  free(ig);
}

void fr_integration_release(fr_integration *ig) {
  if (--ig->refs == 0) integration_free(ig);
}

fr_integration *fr_integration_find(flowrun *rt, const char *name, size_t len) {
  for (fr_integration *ig = rt->integrations; ig; ig = ig->next)
    if (strncmp(ig->name, name, len) == 0 && ig->name[len] == '\0') return ig;
  return NULL;
}

const fr_endpoint *fr_endpoint_find(const fr_integration *ig, const char *name) {
  for (int i = 0; i < ig->nendpoints; i++)
    if (strcmp(ig->endpoints[i].name, name) == 0) return &ig->endpoints[i];
  return NULL;
}

void fr_integrations_free(flowrun *rt) {
  while (rt->integrations) {
    fr_integration *ig = rt->integrations;
    rt->integrations = ig->next;
    fr_integration_release(ig);
  }
  free(rt->integrations_file);
  rt->integrations_file = NULL;
  rt->ig_dev = rt->ig_ino = 0;
}

/* ---- validation ---- */

typedef struct building {               /* a userdata: frees on error */
  fr_integration *ig;
  const char *where;                    /* file name, for messages */
  flowrun *rt;
} building;

static int building_gc(lua_State *L) {
  building *b = lua_touserdata(L, 1);
  if (b->ig) integration_free(b->ig);
  b->ig = NULL;
  return 0;
}

static char *xstrdup(lua_State *L, const char *s, size_t len) {
  char *p = malloc(len + 1);
  if (!p) luaL_error(L, "not enough memory");
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

static int bad(lua_State *L, building *b, const char *key, const char *what) {
  return luaL_error(L, "%s: %s.%s: %s", b->where, b->ig->name, key, what);
}

static const char *want_string(lua_State *L, building *b, int idx,
                               const char *key, size_t *len) {
  if (lua_type(L, idx) != LUA_TSTRING)
    bad(L, b, key, lua_pushfstring(L, "expected a string, got %s",
                                   luaL_typename(L, idx)));
  return lua_tolstring(L, idx, len);
}

/* An integer from min to INT_MAX (milliseconds: 24 days). */
static long want_int(lua_State *L, building *b, const char *key, long min) {
  int ok;
  lua_Integer v = lua_tointegerx(L, -1, &ok);
  bool number = lua_type(L, -1) == LUA_TNUMBER;
  if (number && lua_tonumber(L, -1) > INT_MAX)
    bad(L, b, key, lua_pushfstring(L, "expected an integer from %d to %d, got %s",
                                   (int)min, INT_MAX, lua_tostring(L, -1)));
  if (!ok || !number || v < min)
    bad(L, b, key, lua_pushfstring(L, "expected an integer >= %d, got %s", (int)min,
                                   number ? lua_tostring(L, -1) : luaL_typename(L, -1)));
  return (long)v;
}

static bool want_bool(lua_State *L, building *b, const char *key) {
  if (!lua_isboolean(L, -1))
    bad(L, b, key, lua_pushfstring(L, "expected true or false, got %s",
                                   luaL_typename(L, -1)));
  return lua_toboolean(L, -1);
}

static void want_table(lua_State *L, building *b, const char *key) {
  if (!lua_istable(L, -1))
    bad(L, b, key, lua_pushfstring(L, "expected a table, got %s",
                                   luaL_typename(L, -1)));
}

/* Raises naming the first key of the table at -1 that is not in `known`. */
static void only_keys(lua_State *L, building *b, const char *key,
                      const char *const known[]) {
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    int i = 0;
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
      for (; known[i]; i++)
        if (strcmp(known[i], lua_tostring(L, -1)) == 0) break;
    if (lua_type(L, -1) != LUA_TSTRING || !known[i]) {
      const char *k = luaL_tolstring(L, -1, NULL);
      if (key) bad(L, b, key, lua_pushfstring(L, "unknown key '%s'", k));
      luaL_error(L, "%s: %s: unknown key '%s'", b->where, b->ig->name, k);
    }
  }
}

static void add_header(lua_State *L, building *b, const char *name,
                       const char *value, size_t vlen) {
  fr_integration *ig = b->ig;
  fr_header *h;
  void *p = realloc(ig->headers, (ig->nheaders + 1) * sizeof *ig->headers);
  if (!p) luaL_error(L, "not enough memory");
  ig->headers = p;
  h = &ig->headers[ig->nheaders++];     /* counted first: freed if xstrdup raises */
  h->name = h->value = NULL;
  h->name = xstrdup(L, name, strlen(name));
  h->value = xstrdup(L, value, vlen);
}

static void read_headers(lua_State *L, building *b) {
  want_table(L, b, "headers");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    int v = lua_gettop(L);
    size_t vlen;
    const char *name, *value, *why, *key;
    if (lua_type(L, v - 1) != LUA_TSTRING) bad(L, b, "headers", "names must be strings");
    name = lua_tostring(L, v - 1);
    key = lua_pushfstring(L, "headers.%s", name);
    value = want_string(L, b, v, key, &vlen);
    if ((why = fr_header_problem(name, value, vlen))) bad(L, b, key, why);
    add_header(L, b, name, value, vlen);
    lua_settop(L, v - 1);
  }
}

static const char b64[] =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Pushes the base64 of s (for Basic auth). */
static void push_base64(lua_State *L, const unsigned char *s, size_t n) {
  luaL_Buffer b;
  size_t i;
  luaL_buffinit(L, &b);
  for (i = 0; i + 2 < n; i += 3) {
    luaL_addchar(&b, b64[s[i] >> 2]);
    luaL_addchar(&b, b64[((s[i] & 3) << 4) | (s[i + 1] >> 4)]);
    luaL_addchar(&b, b64[((s[i + 1] & 15) << 2) | (s[i + 2] >> 6)]);
    luaL_addchar(&b, b64[s[i + 2] & 63]);
  }
  if (i < n) {
    luaL_addchar(&b, b64[s[i] >> 2]);
    if (i + 1 < n) {
      luaL_addchar(&b, b64[((s[i] & 3) << 4) | (s[i + 1] >> 4)]);
      luaL_addchar(&b, b64[(s[i + 1] & 15) << 2]);
    } else {
      luaL_addchar(&b, b64[(s[i] & 3) << 4]);
      luaL_addchar(&b, '=');
    }
    luaL_addchar(&b, '=');
  }
  luaL_pushresult(&b);
}

/* Whether s (len bytes) holds a control character, which RFC 7617 forbids
** in Basic credentials (one would never show, nor be typed). */
static bool has_control(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7F) return true;
  return false;
}

/* Reads the string key of the table at -1 into a new string (NULL when
** absent and not required); a secret one is hidden from then on. */
static char *sub_string(lua_State *L, building *b, const char *table, const char *key,
                        bool required, bool secret) {
  char *v = NULL;
  const char *name = lua_pushfstring(L, "%s.%s", table, key);
  if (lua_getfield(L, -2, key) != LUA_TNIL) {
    size_t len;
    const char *s = want_string(L, b, -1, name, &len);
    if (len == 0 || strlen(s) != len) bad(L, b, name, "expected a non-empty string without NUL");
    if (secret && !b->rt->env_placeholders && !fr_secret_add(b->rt, s, len, NULL, NULL))
      luaL_error(L, "not enough memory");   /* placeholders: nothing is sent, "${X}" shows */
    v = xstrdup(L, s, len);
  } else if (required)
    bad(L, b, name, "required");
  lua_pop(L, 2);
  return v;
}

/* auth.oauth2 = { token_url, client_id, client_secret, scope, audience,
** refresh_token, client_auth } into ig->oauth (README: OAuth2). */
static void read_oauth2(lua_State *L, building *b) {
  static const char *const keys[] = {
    "token_url", "client_id", "client_secret", "scope", "audience", "refresh_token",
    "client_auth", NULL
  };
  static const char *const t = "auth.oauth2";
  fr_oauth *o;
  want_table(L, b, t);
  only_keys(L, b, t, keys);
  if (!(o = b->ig->oauth = calloc(1, sizeof *o))) luaL_error(L, "not enough memory");
  o->token_url = sub_string(L, b, t, "token_url", true, false);
  CURLU *u = curl_url();
  char *scheme = NULL;
  if (!u) luaL_error(L, "not enough memory");
  CURLUcode rc = curl_url_set(u, CURLUPART_URL, o->token_url, 0);
  if (rc == CURLUE_OK) curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
  curl_url_cleanup(u);
  bool web = scheme && (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0);
  curl_free(scheme);
  const char *a = strstr(o->token_url, "://");
  if (rc != CURLUE_OK || !web || !a || strcspn(a + 3, "/?#") == 0)
    bad(L, b, "auth.oauth2.token_url", "expected an http:// or https:// URL with a host");
  if (memchr(a + 3, '@', strcspn(a + 3, "/?#")))
    bad(L, b, "auth.oauth2.token_url", "a user or password in the URL: give client_id and client_secret");
  o->client_id = sub_string(L, b, t, "client_id", true, false);
  o->refresh_token = sub_string(L, b, t, "refresh_token", false, true);
  o->client_secret = sub_string(L, b, t, "client_secret", !o->refresh_token, true);
  o->scope = sub_string(L, b, t, "scope", false, false);
  o->audience = sub_string(L, b, t, "audience", false, false);
  char *how = sub_string(L, b, t, "client_auth", false, false);
  o->client_body = how && strcmp(how, "body") == 0;
  bool known = !how || o->client_body || strcmp(how, "basic") == 0;
  free(how);
  if (!known) bad(L, b, "auth.oauth2.client_auth", "expected \"basic\" or \"body\"");
  add_header(L, b, "Authorization", "Bearer", 6);   /* its token goes here (call.c) */
}

/* auth.api_key = { header = NAME, value = KEY } or { query = NAME, value =
** KEY }: the key, a secret, as a header or a query parameter of every call. */
static void read_api_key(lua_State *L, building *b) {
  static const char *const keys[] = { "header", "query", "value", NULL };
  static const char *const t = "auth.api_key";
  fr_integration *ig = b->ig;
  size_t len;
  want_table(L, b, t);
  only_keys(L, b, t, keys);
  char *header = ig->api_key = sub_string(L, b, t, "header", false, false);
  char *query = sub_string(L, b, t, "query", false, false);
  if (header && query) {
    free(query);
    bad(L, b, t, "give header or query, not both");
  }
  if (!header) {
    ig->api_key = query;
    ig->api_key_query = true;
  }
  if (!ig->api_key) bad(L, b, t, "expected { header = NAME, value = KEY } or { query = NAME, value = KEY }");
  lua_getfield(L, -1, "value");
  if (lua_isnil(L, -1)) bad(L, b, "auth.api_key.value", "required");
  const char *v = want_string(L, b, -1, "auth.api_key.value", &len);
  if (len == 0) bad(L, b, "auth.api_key.value", "expected a non-empty string");
  if (!b->rt->env_placeholders && !fr_secret_add(b->rt, v, len, NULL, NULL))
    luaL_error(L, "not enough memory");
  if (header) {
    const char *why = fr_header_problem(header, v, len);
    if (why) bad(L, b, "auth.api_key", why);
    for (int i = 0; i < ig->nheaders; i++)
      if (strcasecmp(ig->headers[i].name, header) == 0)
        bad(L, b, "auth.api_key", lua_pushfstring(L, "both auth.api_key and headers.%s are set",
                                                  ig->headers[i].name));
    add_header(L, b, header, v, len);
  } else {
    char *k = curl_easy_escape(NULL, query, 0), *e = curl_easy_escape(NULL, v, (int)len);
    char **q = realloc(ig->query, (size_t)(ig->nquery + 1) * sizeof *q);
    if (q) ig->query = q;
    if (k && e && q) lua_pushfstring(L, "%s=%s", k, e);
    curl_free(k);
    curl_free(e);
    if (!k || !e || !q) luaL_error(L, "not enough memory");
    ig->query[ig->nquery] = xstrdup(L, lua_tostring(L, -1), lua_rawlen(L, -1));
    ig->nquery++;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static void read_auth(lua_State *L, building *b) {
  static const char *const keys[] = { "bearer", "basic", "oauth2", "api_key", NULL };
  size_t len;
  int kinds = 0;
  want_table(L, b, "auth");
  only_keys(L, b, "auth", keys);
  for (int i = 0; keys[i]; i++) {
    kinds += lua_getfield(L, -1, keys[i]) != LUA_TNIL;
    lua_pop(L, 1);
  }
  if (kinds > 1 && lua_getfield(L, -1, "oauth2") == LUA_TNIL
      && lua_getfield(L, -2, "api_key") == LUA_TNIL)
    bad(L, b, "auth", "give bearer or basic, not both");
  if (kinds > 1) bad(L, b, "auth", "give one of bearer, basic, oauth2 and api_key");
  if (lua_getfield(L, -1, "api_key") != LUA_TNIL) {
    read_api_key(L, b);
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  for (int i = 0; i < b->ig->nheaders; i++)
    if (strcasecmp(b->ig->headers[i].name, "Authorization") == 0)
      bad(L, b, "auth", "both auth and an Authorization header are set");
  if (lua_getfield(L, -1, "oauth2") != LUA_TNIL) {
    read_oauth2(L, b);
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_getfield(L, -1, "basic");
  lua_getfield(L, -2, "bearer");
  if (!lua_isnil(L, -1) && !lua_isnil(L, -2))
    bad(L, b, "auth", "give bearer or basic, not both");
  if (!lua_isnil(L, -1)) {
    const char *tok = want_string(L, b, -1, "auth.bearer", &len);
    lua_pushfstring(L, "Bearer %s", tok);
  } else if (lua_type(L, -2) == LUA_TTABLE) {
    lua_rawgeti(L, -2, 1);
    lua_rawgeti(L, -3, 2);
    const char *user = want_string(L, b, -2, "auth.basic[1]", &len);
    if (memchr(user, ':', len))         /* RFC 7617: the first ':' ends the user */
      bad(L, b, "auth.basic[1]", "a user name cannot hold ':' (the server would split it there)");
    if (has_control(user, len))
      bad(L, b, "auth.basic[1]", "a control character in the user name");
    const char *pw = want_string(L, b, -1, "auth.basic[2]", &len);
    if (has_control(pw, len))
      bad(L, b, "auth.basic[2]", "a control character in the password");
    lua_pushliteral(L, ":");
    lua_insert(L, -2);
    lua_concat(L, 3);
    push_base64(L, (const unsigned char *)lua_tostring(L, -1), lua_rawlen(L, -1));
    /* a secret user or password makes the encoded pair a secret too; a
    ** shell writes it as curl's -u word, the secrets in it as variables */
    char *shown = fr_redact(b->rt, lua_tostring(L, -2)), *word = NULL;
    size_t wlen;
    bool ok = shown != NULL;
    if (ok && strcmp(shown, lua_tostring(L, -2)) != 0) {
      FILE *f = open_memstream(&word, &wlen);
      if ((ok = f != NULL)) {
        fr_shell_word(b->rt, f, lua_tostring(L, -2), lua_rawlen(L, -2));
        ok = fclose(f) == 0
             && fr_secret_add(b->rt, lua_tostring(L, -1), lua_rawlen(L, -1), NULL, word);
      }
    }
    free(word);
    free(shown);
    if (!ok) luaL_error(L, "not enough memory");
    lua_pushliteral(L, "Basic ");
    lua_insert(L, -2);
    lua_concat(L, 2);
  } else
    bad(L, b, "auth", "expected { bearer = TOKEN }, { basic = { USER, PASSWORD } }, "
        "{ oauth2 = { ... } } or { api_key = { ... } }");
  const char *v = lua_tolstring(L, -1, &len);
  if (fr_header_problem("Authorization", v, len))
    bad(L, b, "auth", "CR, LF or NUL in the credentials");
  add_header(L, b, "Authorization", v, len);
}

static void read_endpoints(lua_State *L, building *b) {
  static const char *const keys[] = { "method", "path", NULL };
  fr_integration *ig = b->ig;
  want_table(L, b, "endpoints");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    int v = lua_gettop(L), i;
    const char *name, *key, *method = "GET", *path;
    size_t len;
    fr_endpoint *e;
    if (lua_type(L, v - 1) != LUA_TSTRING) bad(L, b, "endpoints", "names must be strings");
    name = lua_tostring(L, v - 1);
    key = lua_pushfstring(L, "endpoints.%s", name);
    lua_pushvalue(L, v);
    want_table(L, b, key);
    only_keys(L, b, key, keys);
    if (lua_getfield(L, v, "method") != LUA_TNIL) {
      int m = lua_gettop(L);
      const char *mkey = lua_pushfstring(L, "%s.method", key);
      method = want_string(L, b, m, mkey, &len);
      if (!fr_method(method)) {
        fr_push_methods_text(L);
        bad(L, b, mkey, lua_pushfstring(L, "expected %s", lua_tostring(L, -1)));
      }
    }
    lua_getfield(L, v, "path");
    i = lua_gettop(L);
    key = lua_pushfstring(L, "%s.path", key);
    path = want_string(L, b, i, key, &len);
    if (strlen(path) != len) bad(L, b, key, "NUL in the path");
    e = realloc(ig->endpoints, (ig->nendpoints + 1) * sizeof *e);
    if (!e) luaL_error(L, "not enough memory");
    ig->endpoints = e;
    e = &ig->endpoints[ig->nendpoints++];
    e->name = e->method = e->path = NULL;
    e->name = xstrdup(L, name, strlen(name));
    e->method = xstrdup(L, method, strlen(method));
    e->path = xstrdup(L, path, len);
    lua_settop(L, v - 1);
  }
}

static void read_query(lua_State *L, building *b) {
  fr_integration *ig = b->ig;
  int n, i;
  want_table(L, b, "query");
  int t = lua_gettop(L);
  fr_query_pairs(L, t, lua_pushfstring(L, "%s: %s.query", b->where, ig->name));
  lua_remove(L, -2);                    /* the message prefix */
  n = (int)lua_rawlen(L, -1);
  ig->query = calloc(n ? n : 1, sizeof *ig->query);
  if (!ig->query) luaL_error(L, "not enough memory");
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *kv;
    lua_rawgeti(L, -1, i);
    kv = lua_tolstring(L, -1, &len);
    ig->query[ig->nquery++] = xstrdup(L, kv, len);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static void read_retry(lua_State *L, building *b) {
  static const char *const keys[] = {
    "attempts", "on", "backoff_ms", "max_backoff_ms", NULL
  };
  fr_integration *ig = b->ig;
  want_table(L, b, "retry");
  only_keys(L, b, "retry", keys);
  if (lua_getfield(L, -1, "attempts") != LUA_TNIL)
    ig->retry_attempts = (int)want_int(L, b, "retry.attempts", 1);
  if (lua_getfield(L, -2, "backoff_ms") != LUA_TNIL)
    ig->retry_backoff_ms = want_int(L, b, "retry.backoff_ms", 0);
  if (lua_getfield(L, -3, "max_backoff_ms") != LUA_TNIL)
    ig->retry_max_backoff_ms = want_int(L, b, "retry.max_backoff_ms", 0);
  if (lua_getfield(L, -4, "on") != LUA_TNIL) {
    want_table(L, b, "retry.on");
    memset(&ig->retry_on, 0, sizeof ig->retry_on);
    int on = lua_gettop(L);
    fr_parse_results(L, on, lua_pushfstring(L, "%s: %s.retry.on", b->where, ig->name),
                     &ig->retry_on, false);
    lua_pop(L, 1);
  }
  lua_pop(L, 4);
}

/* rate_limit = { requests = N, per_ms = M }: both required. */
static void read_rate_limit(lua_State *L, building *b) {
  static const char *const keys[] = { "requests", "per_ms", NULL };
  fr_integration *ig = b->ig;
  want_table(L, b, "rate_limit");
  only_keys(L, b, "rate_limit", keys);
  if (lua_getfield(L, -1, "requests") == LUA_TNIL) bad(L, b, "rate_limit.requests", "required");
  ig->rate_requests = (int)want_int(L, b, "rate_limit.requests", 1);
  if (ig->rate_requests > 100000) bad(L, b, "rate_limit.requests", "at most 100000");
  if (lua_getfield(L, -2, "per_ms") == LUA_TNIL) bad(L, b, "rate_limit.per_ms", "required");
  ig->rate_per_ms = want_int(L, b, "rate_limit.per_ms", 1);
  if (!fr_pool_rate(&ig->pool, ig->rate_requests, ig->rate_per_ms))
    luaL_error(L, "not enough memory");
  lua_pop(L, 3);
}

/* A string key of the integration table at top, copied, or NULL when it
** is absent. */
static char *opt_string(lua_State *L, building *b, int top, const char *key) {
  size_t len;
  const char *s;
  lua_settop(L, top);
  if (lua_getfield(L, top, key) == LUA_TNIL) return NULL;
  s = want_string(L, b, -1, key, &len);
  if (strlen(s) != len) bad(L, b, key, "a NUL byte in the string");
  return xstrdup(L, s, len);
}

/* compressed, proxy, no_proxy, cert_file, key_file, key_password of the
** integration table at top. A proxy is a URL libcurl can use (http,
** https, socks) or "env"; without one the environment is not read. */
static void read_wire(lua_State *L, building *b, int top) {
  fr_integration *ig = b->ig;
  lua_settop(L, top);
  if (lua_getfield(L, top, "compressed") != LUA_TNIL)
    ig->compressed = want_bool(L, b, "compressed");
  if ((ig->proxy = opt_string(L, b, top, "proxy")) && strcmp(ig->proxy, "env") == 0) {
    free(ig->proxy);
    ig->proxy = NULL;
    ig->proxy_env = true;
  } else if (ig->proxy && !(b->rt->env_placeholders && strstr(ig->proxy, "${"))) {
    static const char *const schemes[] = {   /* (an unset env() in check: not sent) */
      "http", "https", "socks4", "socks4a", "socks5", "socks5h", NULL
    };
    CURLU *u = curl_url();
    char *scheme = NULL;
    int i = 0;
    if (!u) luaL_error(L, "not enough memory");
    bool ok = curl_url_set(u, CURLUPART_URL, ig->proxy, 0) == CURLUE_OK
              && curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK;
    while (ok && schemes[i] && strcmp(schemes[i], scheme) != 0) i++;
    curl_free(scheme);
    curl_url_cleanup(u);
    if (!ok || !schemes[i])
      bad(L, b, "proxy", "expected a proxy URL like \"http://HOST:PORT\" (http, https, "
          "socks4, socks4a, socks5, socks5h) or \"env\"");
  }
  if ((ig->no_proxy = opt_string(L, b, top, "no_proxy")) && !ig->proxy && !ig->proxy_env)
    bad(L, b, "no_proxy", "no proxy is set: give proxy too");
  ig->cert_file = opt_string(L, b, top, "cert_file");
  ig->key_file = opt_string(L, b, top, "key_file");
  ig->key_password = opt_string(L, b, top, "key_password");
  if (ig->key_file && !ig->cert_file)
    bad(L, b, "key_file", "a key without its certificate: give cert_file too");
  if (ig->key_password && !ig->cert_file)
    bad(L, b, "key_password", "a password without a certificate: give cert_file too");
  lua_settop(L, top);
}

/* libcurl reads "http:///x" and "http:/x" as the host x, and takes a
** user and password in the URL, which would then show in res.url and
** traces: the text itself must hold "//", a host, and no '@'. */
static void check_authority(lua_State *L, building *b, const char *url) {
  const char *a = strchr(url, ':');
  size_t n;
  if (!a || strncmp(a, "://", 3) != 0 || (n = strcspn(a + 3, "/?#")) == 0)
    bad(L, b, "base_url", "no host: expected http://HOST[:PORT][/PATH]");
  if (memchr(a + 3, '@', n))
    bad(L, b, "base_url", "a user or password in the URL would show in res.url and "
        "traces: credentials belong in auth = { basic = { USER, PASSWORD } }");
}

static void read_base_url(lua_State *L, building *b) {
  fr_integration *ig = b->ig;
  size_t len;
  const char *url = want_string(L, b, -1, "base_url", &len);
  char *scheme = NULL;
  ig->base_url = xstrdup(L, url, len);
  ig->base = curl_url();
  if (!ig->base) luaL_error(L, "not enough memory");
  CURLUcode rc = curl_url_set(ig->base, CURLUPART_URL, url, 0);
  if (rc != CURLUE_OK)
    bad(L, b, "base_url", lua_pushfstring(L, "malformed URL: %s", curl_url_strerror(rc)));
  curl_url_get(ig->base, CURLUPART_SCHEME, &scheme, 0);
  bool web = scheme && (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0);
  curl_free(scheme);
  if (!web) bad(L, b, "base_url", "only http:// and https:// URLs are allowed");
  check_authority(L, b, url);
  /* what every call starts from, taken apart once */
  char *path = NULL, *query = NULL;
  curl_url_get(ig->base, CURLUPART_PATH, &path, 0);
  curl_url_get(ig->base, CURLUPART_QUERY, &query, 0);
  len = path ? strlen(path) : 0;
  while (len > 0 && path[len - 1] == '/') len--;
  ig->base_path = malloc(len + 1);
  ig->base_query = query ? strdup(query) : NULL;
  if (ig->base_path) {
    memcpy(ig->base_path, path ? path : "", len);
    ig->base_path[len] = '\0';
  }
  curl_free(path);
  curl_free(query);
  ig->scratch = curl_url_dup(ig->base);
  if (!ig->base_path || (query && !ig->base_query) || !ig->scratch)
    luaL_error(L, "not enough memory");
}

/* An integration name is what traces print as integration=NAME and what
** an endpoint "NAME.endpoint" starts with: letters, digits, '_' and '-'. */
static void check_name(lua_State *L, const char *name, const char *where) {
  luaL_Buffer shown;
  const char *p = name;
  while (isalnum((unsigned char)*p) || *p == '_' || *p == '-') p++;
  if (*name && !*p) return;
  luaL_buffinit(L, &shown);             /* printable, as Lua's %q would */
  for (p = name; *p; p++)
    if (isprint((unsigned char)*p) && *p != '"' && *p != '\\')
      luaL_addchar(&shown, *p);
    else {
      char esc[8];
      snprintf(esc, sizeof esc, "\\%d", (unsigned char)*p);
      luaL_addstring(&shown, esc);
    }
  luaL_pushresult(&shown);
  luaL_error(L, "%s: integration name \"%s\": use letters, digits, '_' and '-'%s",
             where, lua_tostring(L, -1), *name ? "" : " (it is empty)");
}

/* The name of an unset variable whose placeholder "${NAME}" (env() in
** placeholder mode) one of ig's values holds, malloc'd; NULL when none:
** such an integration is never called (api_node refuses it). Raises when
** out of memory: a placeholder must never go unnoticed. */
static char *unset_placeholder(lua_State *L, const fr_integration *ig) {
  int n = 4 + ig->nheaders + ig->nquery + ig->nendpoints;
  const char **vals = calloc((size_t)n, sizeof *vals);
  char *found = NULL;
  bool oom = false;
  if (!vals) luaL_error(L, "not enough memory");
  n = 0;
  vals[n++] = ig->base_url;
  for (int i = 0; i < ig->nheaders; i++) vals[n++] = ig->headers[i].value;
  for (int i = 0; i < ig->nquery; i++) vals[n++] = ig->query[i];
  for (int i = 0; i < ig->nendpoints; i++) vals[n++] = ig->endpoints[i].path;
  if (ig->oauth) {                      /* n: no more than 4 + ... */
    vals[n++] = ig->oauth->token_url;
    vals[n++] = ig->oauth->client_secret ? ig->oauth->client_secret : "";
    vals[n++] = ig->oauth->refresh_token ? ig->oauth->refresh_token : "";
  }
  for (int i = 0; i < n && !found; i++) {
    const char *p = strstr(vals[i], "${"), *e;
    if (!p && (p = strstr(vals[i], "%24%7B"))) {   /* in a query: encoded */
      e = strstr(p, "%7D");
      if (e && !(oom = (found = malloc((size_t)(e - p - 5))) == NULL)) {
        memcpy(found, p + 6, (size_t)(e - p - 6));
        found[e - p - 6] = '\0';
      }
      if (oom) break;
      continue;
    }
    if (p && (e = strchr(p, '}')) && !(oom = (found = malloc((size_t)(e - p - 1))) == NULL)) {
      memcpy(found, p + 2, (size_t)(e - p - 2));
      found[e - p - 2] = '\0';
    }
    if (oom) break;
  }
  free(vals);
  if (oom) luaL_error(L, "not enough memory");
  return found;
}

/* http_version = "1.1" or "2": HTTP/1.1 only; or HTTP/2, negotiated by
** ALPN over https (HTTP/1.1 when the server does not offer it). HTTP/2
** without TLS (h2c, prior knowledge) is refused: libcurl 7.88 fails every
** call that reuses such a connection. Needs base_url read first. */
static void read_http_version(lua_State *L, building *b) {
  size_t len;
  const char *v;
  if (lua_type(L, -1) == LUA_TNUMBER)   /* 2 and 1.1 read as numbers: say how */
    bad(L, b, "http_version", lua_pushfstring(L, "expected \"1.1\" or \"2\" (a string), got %s",
                                              lua_tostring(L, -1)));
  v = want_string(L, b, -1, "http_version", &len);
  if (strcmp(v, "1.1") == 0) b->ig->http_version = CURL_HTTP_VERSION_1_1;
  else if (strcmp(v, "2") != 0)
    bad(L, b, "http_version", lua_pushfstring(L, "expected \"1.1\" or \"2\", got \"%s\"", v));
  else if (strncasecmp(b->ig->base_url, "https:", 6) != 0)
    bad(L, b, "http_version", "\"2\" needs an https:// base_url (HTTP/2 is negotiated in"
        " the TLS handshake; HTTP/2 without TLS, h2c, is not supported)");
  else
    b->ig->http_version = CURL_HTTP_VERSION_2TLS;
}

/* Reads the integration table at idx into a new struct. Pushes the box
** that owns it until take(): a Lua error on the way frees it. */
static fr_integration *build(flowrun *rt, lua_State *L, const char *name,
                          int idx, const char *where) {
  static const char *const keys[] = {
    "base_url", "headers", "auth", "query", "endpoints", "timeout_ms",
    "connect_timeout_ms", "max_connections", "queue_timeout_ms",
    "max_response_bytes", "follow_redirects", "tls_verify", "ca_file",
    "retry", "idempotency_key", "http_version", "cookies", "deadline_ms", "rate_limit",
    "compressed", "proxy", "no_proxy", "cert_file", "key_file", "key_password", NULL
  };
  building *b;
  fr_integration *ig;
  int top, box;
  (void)rt;
  idx = lua_absindex(L, idx);
  b = lua_newuserdatauv(L, sizeof *b, 0);
  box = lua_gettop(L);
  b->ig = NULL;
  b->where = where;
  b->rt = rt;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, building_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  check_name(L, name, where);
  ig = b->ig = calloc(1, sizeof *ig);
  if (!ig) luaL_error(L, "not enough memory");
  ig->name = xstrdup(L, name, strlen(name));
  ig->pool.gate.idx = -1;               /* not armed */
  ig->timeout_ms = 10000;
  ig->connect_timeout_ms = 3000;
  ig->max_connections = 16;
  ig->queue_timeout_ms = 1000;
  ig->max_response_bytes = 10485760;
  ig->tls_verify = true;
  ig->retry_attempts = 1;
  ig->retry_backoff_ms = 200;
  ig->retry_max_backoff_ms = 5000;
  ig->retry_on.defaults = LBL_TIMEOUT;
  ig->retry_on.code[503 / 8] |= 1 << (503 % 8);
  if (!lua_istable(L, idx))
    luaL_error(L, "%s: %s: expected a table, got %s", where, name, luaL_typename(L, idx));
  lua_pushvalue(L, idx);
  only_keys(L, b, NULL, keys);
  top = lua_gettop(L);
#define FIELD(k) (lua_settop(L, top), lua_getfield(L, top, k) != LUA_TNIL)
  if (!FIELD("base_url")) bad(L, b, "base_url", "required");
  read_base_url(L, b);
  if (FIELD("headers")) read_headers(L, b);
  if (FIELD("query")) read_query(L, b);
  if (FIELD("auth")) read_auth(L, b);   /* after query: an api_key may add to it */
  if (FIELD("endpoints")) read_endpoints(L, b);
  if (FIELD("timeout_ms")) ig->timeout_ms = want_int(L, b, "timeout_ms", 1);
  if (FIELD("connect_timeout_ms"))
    ig->connect_timeout_ms = want_int(L, b, "connect_timeout_ms", 1);
  if (FIELD("max_connections"))
    ig->max_connections = (int)want_int(L, b, "max_connections", 1);
  if (FIELD("queue_timeout_ms"))
    ig->queue_timeout_ms = want_int(L, b, "queue_timeout_ms", 0);
  if (FIELD("max_response_bytes"))
    ig->max_response_bytes = want_int(L, b, "max_response_bytes", 1);
  if (FIELD("follow_redirects"))
    ig->follow_redirects = want_bool(L, b, "follow_redirects");
  if (FIELD("tls_verify")) ig->tls_verify = want_bool(L, b, "tls_verify");
  if (FIELD("idempotency_key")) ig->idempotency_key = want_bool(L, b, "idempotency_key");
  if (FIELD("ca_file")) {
    size_t len;
    const char *f = want_string(L, b, -1, "ca_file", &len);
    ig->ca_file = xstrdup(L, f, len);
  }
  if (FIELD("retry")) read_retry(L, b);
  if (FIELD("http_version")) read_http_version(L, b);
  if (FIELD("cookies")) ig->cookies = want_bool(L, b, "cookies");
  if (FIELD("deadline_ms")) ig->deadline_ms = want_int(L, b, "deadline_ms", 1);
  if (FIELD("rate_limit")) read_rate_limit(L, b);
  read_wire(L, b, top);
#undef FIELD
  lua_settop(L, box);                   /* the box stays: see take() */
  if (rt->env_placeholders) ig->unset = unset_placeholder(L, ig);
  return ig;
}

/* The box at idx gives up its integration. */
static void take(lua_State *L, int idx) {
  ((building *)lua_touserdata(L, idx))->ig = NULL;
}

static void install(flowrun *rt, fr_integration *ig) {
  fr_integration **p = &rt->integrations;
  ig->refs = 1;
  for (; *p; p = &(*p)->next)
    if (strcmp((*p)->name, ig->name) == 0) {
      fr_integration *old = *p;
      ig->next = old->next;
      *p = ig;
      fr_integration_release(old);
      return;
    }
  ig->next = NULL;
  *p = ig;
}

int fr_integration_define(flowrun *rt, lua_State *L, const char *name,
                          int idx, const char *where) {
  fr_integration *ig = build(rt, L, name, idx, where);
  take(L, -1);
  lua_pop(L, 1);
  install(rt, ig);
  return 0;
}

/* ---- loading a file ---- */

/* env(NAME [, default]): the environment variable, remembered as a secret
** (a default is not one); upvalue 1 is the runtime. */
int fr_l_env(lua_State *L) {
  flowrun *rt = fr_rt(L);
  const char *name = luaL_checkstring(L, 1);
  const char *v = getenv(name);
  if (v) {
    if (!fr_secret_add(rt, v, strlen(v), name, NULL))
      return luaL_error(L, "not enough memory");
    lua_pushstring(L, v);
  } else if (!lua_isnoneornil(L, 2))
    lua_pushvalue(L, 2);
  else if (rt->env_placeholders)        /* check, graph: nothing is sent */
    lua_pushfstring(L, "${%s}", name);
  else
    return luaL_error(L, "environment variable %s is not set", name);
  return 1;
}

/* Pushes the sandbox globals table of integrations files. */
static void push_sandbox(flowrun *rt, lua_State *L) {
  lua_newtable(L);
  for (int i = 0; fr_integrations_base[i]; i++) {   /* rules.c */
    lua_getglobal(L, fr_integrations_base[i]);
    lua_setfield(L, -2, fr_integrations_base[i]);
  }
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, fr_l_env, 1);
  lua_setfield(L, -2, "env");
}

/* Names of the table at idx, sorted, as a new array on the stack. */
static void push_sorted_names(lua_State *L, int idx, const char *file) {
  int n = 0;
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "%s: integration names must be strings, got %s", file,
                 luaL_typename(L, -1));
    if (strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
      luaL_error(L, "%s: integration name with a NUL byte", file);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, ++n);
  }
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "sort");
  lua_pushvalue(L, -3);
  lua_call(L, 1, 0);
  lua_pop(L, 1);
}

#define LOAD_SECONDS 5                  /* an integrations file that runs longer loops */
#define DEADLINE_KEY "flowrun.load_deadline"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Every million instructions of the file: is its time up? */
static void deadline_hook(lua_State *L, lua_Debug *ar) {
  double due;
  (void)ar;
  lua_getfield(L, LUA_REGISTRYINDEX, DEADLINE_KEY);
  due = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (now_s() > due) {
    lua_sethook(L, deadline_hook, LUA_MASKCOUNT, 1);   /* and a pcall meets it again */
    fr_push_where(L);                   /* file:line of the code that runs */
    lua_pushfstring(L, "still running after %d s: a loop that never ends?", LOAD_SECONDS);
    lua_concat(L, 2);
    lua_error(L);
  }
}

/* Runs the file's chunk at -1 with the deadline armed; as lua_pcall. */
static int run_chunk(lua_State *L) {
  lua_Hook old = lua_gethook(L);
  int mask = lua_gethookmask(L), count = lua_gethookcount(L), st;
  lua_pushnumber(L, now_s() + LOAD_SECONDS);
  lua_setfield(L, LUA_REGISTRYINDEX, DEADLINE_KEY);
  lua_sethook(L, deadline_hook, LUA_MASKCOUNT, 1000000);
  st = lua_pcall(L, 0, 1, 0);
  lua_sethook(L, old, mask, count);
  return st;
}

/* lua_pcall'd: 1 rt, 2 file (light userdata: pushing a string could fail
** for want of memory before the protection). */
static int l_load(lua_State *L) {
  flowrun *rt = lua_touserdata(L, 1);
  const char *file = lua_touserdata(L, 2);
  fr_integration *list = NULL, **tail = &list;
  char *name;
  int n, i;
  if (luaL_loadfilex(L, file, "t") != LUA_OK) return lua_error(L);
  push_sandbox(rt, L);
  lua_setupvalue(L, -2, 1);
  if (run_chunk(L) != LUA_OK) {
    if (lua_type(L, -1) == LUA_TSTRING) return lua_error(L);
    /* error() or error({}): no message to say where, so say the file */
    return luaL_error(L, "%s: raised an error with a %s value instead of a message",
                      file, luaL_typename(L, -1));
  }
  if (!lua_istable(L, -1))
    return luaL_error(L, "%s: must return a table of integrations, got %s",
                      file, luaL_typename(L, -1));
  int set = lua_gettop(L);
  push_sorted_names(L, set, file);
  n = (int)lua_rawlen(L, -1);
  /* build all first, install only when every one is valid */
  lua_newtable(L);                      /* the boxes */
  int boxes = lua_gettop(L);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, boxes - 1, i);
    lua_gettable(L, set);
    lua_rawgeti(L, boxes - 1, i);
    fr_integration *ig = build(rt, L, lua_tostring(L, -1), -2, file);
    lua_rawseti(L, boxes, i);
    lua_pop(L, 2);
    *tail = ig;
    ig->next = NULL;
    tail = &ig->next;
  }
  if (!(name = strdup(file))) return luaL_error(L, "not enough memory");
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, boxes, i);
    take(L, -1);
    lua_pop(L, 1);
  }
  fr_integrations_free(rt);
  while (list) {
    fr_integration *next = list->next;
    install(rt, list);
    list = next;
  }
  rt->integrations_file = name;
  {                                     /* its identity: flows may not run it */
    struct stat st;
    if (stat(file, &st) == 0) {
      rt->ig_dev = (unsigned long long)st.st_dev;
      rt->ig_ino = (unsigned long long)st.st_ino;
    }
  }
  return 0;
}

int fr_integrations_load(flowrun *rt, lua_State *L, const char *file) {
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 3)) return fr_error(rt, "out of memory");
  lua_pushcfunction(L, l_load);
  lua_pushlightuserdata(L, rt);
  lua_pushlightuserdata(L, (void *)file);
  return fr_pcall(rt, L, 2, top);
}

const char *flowrun_find_integrations(const char *opt, const char *flow,
                                      char *buf, size_t size) {
  const char *env = getenv("FLOWRUN_INTEGRATIONS"), *slash;
  if (opt) return opt;
  if (env && *env) return env;
  if (flow) {
    slash = strrchr(flow, '/');
    snprintf(buf, size, "%.*sintegrations.lua", slash ? (int)(slash - flow + 1) : 0, flow);
    if (access(buf, R_OK) == 0) return buf;
  }
  return access("integrations.lua", R_OK) == 0 ? "integrations.lua" : NULL;
}

void flowrun_env_placeholders(flowrun *rt, int on) {
  rt->env_placeholders = on != 0;
}

int flowrun_load_integrations(flowrun *rt, const char *file) {
  return fr_integrations_load(rt, rt->L, file);
}

bool fr_integrations_file(flowrun *rt, const char *path) {
  struct stat st;                       /* its identity was taken when it loaded */
  return rt->ig_ino && stat(path, &st) == 0 && (unsigned long long)st.st_dev == rt->ig_dev
      && (unsigned long long)st.st_ino == rt->ig_ino;
}
