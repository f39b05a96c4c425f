/*
** inspect.c -- require "flowrun.runtime": what tools written in Lua (the
** REPL, flowrun check, flowrun graph) may ask of the runtime they run in.
**
** integrations() describes the loaded integrations with every secret shown
** as "***"; header_conflict() answers the one question about a secret value
** that a checker needs without revealing it; define_integration() is the
** REPL's integration(name, table), with the validation of a file, and env()
** reads a secret for it as integrations files do. rules() gives the rules
** of api_node and the sandbox allow-lists the runtime enforces (rules.c),
** for tools that find the same mistakes before anything runs. request()
** builds the request an api_node spec makes, as request.c makes it, and
** sends nothing.
*/
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>

#include "auth.h"
#include "base.h"
#include "call.h"
#include "inspect.h"
#include "integration.h"
#include "request.h"
#include "rules.h"
#include "runtime.h"
#include "secrets.h"

static void set_str(lua_State *L, flowrun *rt, const char *k, const char *v) {
  fr_push_redacted(L, rt, v, strlen(v));
  lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

/* An integration's auth of issue 14 as its table: oauth2 (secrets as
** "***", whether it holds a token now), api_key (where the key goes). */
static void push_auth(lua_State *L, flowrun *rt, const fr_integration *ig) {
  const fr_oauth *o = ig->oauth;
  if (!o && !ig->api_key) return;
  lua_createtable(L, 0, 1);
  if (o) {
    lua_createtable(L, 0, 8);
    set_str(L, rt, "token_url", o->token_url);
    set_str(L, rt, "client_id", o->client_id);
    if (o->client_secret) set_str(L, rt, "client_secret", o->client_secret);
    if (o->refresh_token) set_str(L, rt, "refresh_token", o->refresh_token);
    if (o->scope) set_str(L, rt, "scope", o->scope);
    if (o->audience) set_str(L, rt, "audience", o->audience);
    set_str(L, rt, "client_auth", o->client_body || !o->client_secret ? "body" : "basic");
    set_str(L, rt, "token", !o->token ? "none" : fr_auth_fresh(rt, o) ? "fresh" : "expiring");
    lua_setfield(L, -2, "oauth2");
  } else {
    lua_createtable(L, 0, 2);
    set_str(L, rt, ig->api_key_query ? "query" : "header", ig->api_key);
    set_str(L, rt, "value", "***");
    lua_setfield(L, -2, "api_key");
  }
  lua_setfield(L, -2, "auth");
}

/* integrations() -> { name = { base_url, headers, endpoints, ... } } */
static int l_integrations(lua_State *L) {
  flowrun *rt = fr_rt(L);
  lua_newtable(L);
  for (fr_integration *ig = rt->integrations; ig; ig = ig->next) {
    int i;
    lua_createtable(L, 0, 16);
    set_str(L, rt, "name", ig->name);
    set_str(L, rt, "base_url", ig->base_url);
    lua_newtable(L);
    for (i = 0; i < ig->nheaders; i++) set_str(L, rt, ig->headers[i].name, ig->headers[i].value);
    lua_setfield(L, -2, "headers");
    lua_newtable(L);
    for (i = 0; i < ig->nendpoints; i++) {
      lua_createtable(L, 0, 2);
      set_str(L, rt, "method", ig->endpoints[i].method);
      set_str(L, rt, "path", ig->endpoints[i].path);
      lua_setfield(L, -2, ig->endpoints[i].name);
    }
    lua_setfield(L, -2, "endpoints");
    set_int(L, "timeout_ms", ig->timeout_ms);
    set_int(L, "connect_timeout_ms", ig->connect_timeout_ms);
    set_int(L, "max_connections", ig->max_connections);
    set_int(L, "queue_timeout_ms", ig->queue_timeout_ms);
    set_int(L, "max_response_bytes", (lua_Integer)ig->max_response_bytes);
    set_int(L, "in_flight", ig->pool.inflight);
    lua_pushboolean(L, ig->follow_redirects);
    lua_setfield(L, -2, "follow_redirects");
    lua_pushboolean(L, ig->tls_verify);
    lua_setfield(L, -2, "tls_verify");
    lua_pushboolean(L, ig->cookies);
    lua_setfield(L, -2, "cookies");
    if (ig->http_version) {             /* as written; nil: libcurl's default */
      lua_pushstring(L, ig->http_version == CURL_HTTP_VERSION_1_1 ? "1.1" : "2");
      lua_setfield(L, -2, "http_version");
    }
    lua_pushboolean(L, ig->compressed);   /* the wire (wire.c) */
    lua_setfield(L, -2, "compressed");
    if (ig->proxy_env || ig->proxy) set_str(L, rt, "proxy", ig->proxy_env ? "env" : ig->proxy);
    if (ig->no_proxy) set_str(L, rt, "no_proxy", ig->no_proxy);
    if (ig->cert_file) set_str(L, rt, "cert_file", ig->cert_file);
    if (ig->key_file) set_str(L, rt, "key_file", ig->key_file);
    if (ig->key_password) {               /* never its value */
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "key_password");
    }
    lua_createtable(L, 0, 3);
    set_int(L, "attempts", ig->retry_attempts);
    set_int(L, "backoff_ms", ig->retry_backoff_ms);
    set_int(L, "max_backoff_ms", ig->retry_max_backoff_ms);
    lua_setfield(L, -2, "retry");
    push_auth(L, rt, ig);
    if (ig->deadline_ms) set_int(L, "deadline_ms", ig->deadline_ms);
    if (ig->rate_requests) {
      lua_createtable(L, 0, 2);
      set_int(L, "requests", ig->rate_requests);
      set_int(L, "per_ms", ig->rate_per_ms);
      lua_setfield(L, -2, "rate_limit");
    }
    lua_setfield(L, -2, ig->name);
  }
  return 1;
}

/* header_conflict(integration, name, value) -> the integration's header
** name when it sets that header (any case) to another value, else nil. */
static int l_header_conflict(lua_State *L) {
  flowrun *rt = fr_rt(L);
  size_t n;
  const char *ig_name = luaL_checklstring(L, 1, &n);
  const char *name = luaL_checkstring(L, 2), *value = luaL_checkstring(L, 3);
  fr_integration *ig = fr_integration_find(rt, ig_name, n);
  if (!ig) return luaL_argerror(L, 1, "no such integration");
  for (int i = 0; i < ig->nheaders; i++)
    if (strcasecmp(ig->headers[i].name, name) == 0 && strcmp(ig->headers[i].value, value) != 0) {
      lua_pushstring(L, ig->headers[i].name);
      return 1;
    }
  return 0;
}

/* define_integration(name, table): adds or replaces one integration. */
static int l_define(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  fr_integration_define(fr_rt(L), L, name, 2, "integration()");
  return 0;
}

/* integrations_file() -> the file loaded last, or nil */
static int l_file(lua_State *L) {
  flowrun *rt = fr_rt(L);
  if (!rt->integrations_file) return 0;
  lua_pushstring(L, rt->integrations_file);
  return 1;
}

/* flow_globals() -> the flow globals, the sandbox flows have: a loader
** runs a flow file's top level in it (never handed to a flow). */
static int l_flow_globals(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, fr_rt(L)->globals_ref);
  return 1;
}

/* rules() -> { fields, methods, methods_text, messages, sandbox,
** path_problem, header_problem } (rules.c); a new table each time. */
static int l_rules(lua_State *L) {
  fr_push_rules(L);
  return 1;
}

/* __gc of the userdata request() builds into: a spec that raised halfway
** leaves what it took (a reference to the integration, headers, a body). */
static int request_gc(lua_State *L) {
  fr_request *rq = lua_touserdata(L, 1);
  fr_request_clear(rq);
  free(rq->url);
  rq->url = NULL;
  return 0;
}

static void set_redacted(lua_State *L, flowrun *rt, const char *k, const char *v, size_t len) {
  fr_push_redacted(L, rt, v, len);
  lua_setfield(L, -2, k);
}

/* request(spec) -> { integration, method, url, headers, body, timeout_ms,
** retry_ok, fail, fail_message }: what api_node(spec) would send, secrets
** as "***", headers as "Name: value" lines in order ("Expect:" tells
** libcurl to send no Expect); raises as api_node does on a misuse. */
static int l_request(lua_State *L) {
  flowrun *rt = fr_rt(L);
  fr_request *rq;
  int i = 0;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  rq = lua_newuserdatauv(L, sizeof *rq, 0);
  memset(rq, 0, sizeof *rq);
  if (luaL_newmetatable(L, "flowrun.request")) {
    lua_pushcfunction(L, request_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  fr_request_build(L, rt, rq);          /* raises on misuse */
  lua_createtable(L, 0, 9);
  lua_pushstring(L, rq->ig->name);
  lua_setfield(L, -2, "integration");
  lua_pushstring(L, rq->method);
  lua_setfield(L, -2, "method");
  set_redacted(L, rt, "url", rq->url, strlen(rq->url));
  lua_newtable(L);
  for (const struct curl_slist *l = rq->hdrs; l; l = l->next) {
    fr_push_redacted(L, rt, l->data, strlen(l->data));
    lua_rawseti(L, -2, ++i);
  }
  lua_setfield(L, -2, "headers");
  if (rq->body) set_redacted(L, rt, "body", rq->body, rq->bodylen);
  set_int(L, "timeout_ms", rq->timeout_ms);
  lua_pushboolean(L, rq->retry_ok);
  lua_setfield(L, -2, "retry_ok");
  if (rq->fail) {
    lua_pushstring(L, rq->fail);
    lua_setfield(L, -2, "fail");
    set_redacted(L, rt, "fail_message", rq->fail_msg, strlen(rq->fail_msg));
  }
  return 1;
}

static const luaL_Reg funcs[] = {
  { "request",            l_request },
  { "flow_globals",       l_flow_globals },
  { "integrations",       l_integrations },
  { "header_conflict",    l_header_conflict },
  { "define_integration", l_define },
  { "integrations_file",  l_file },
  { "env",                fr_l_env },
  { "rules",              l_rules },
  { NULL, NULL }
};

/* The preload loader of flowrun.runtime; upvalue 1 is the runtime. */
int fr_open_runtime_module(lua_State *L) {
  luaL_newlibtable(L, funcs);
  lua_pushvalue(L, lua_upvalueindex(1));
  luaL_setfuncs(L, funcs, 1);
  return 1;
}

/* The pools' figures: a walk of the integrations (flowrun.h). */
int flowrun_pool_stats(flowrun *rt, int (*fn)(void *ud, const char *integration,
                                              int in_flight, int queued),
                       void *ud) {
  for (fr_integration *ig = rt->integrations; ig; ig = ig->next) {
    int queued = 0;
    for (fr_call *c = ig->pool.qhead; c; c = c->qnext) queued++;
    if (fn(ud, ig->name, ig->pool.inflight, queued)) break;
  }
  return FLOWRUN_OK;
}
