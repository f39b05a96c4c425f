/*
** integration.h -- integrations (integrations.c): their configuration,
** read-only once loaded; the pool (pool.h) and the URL memo of request.c
** ride along. Not installed.
*/
#ifndef FLOWRUN_INTEGRATION_H
#define FLOWRUN_INTEGRATION_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>
#include <lua.h>

#include "auth.h"
#include "flowrun.h"
#include "labels.h"
#include "pool.h"

typedef struct fr_integration fr_integration;
typedef struct fr_header { char *name, *value; } fr_header;
typedef struct fr_endpoint { char *name, *method, *path; } fr_endpoint;

struct fr_integration {
  char *name;
  char *base_url;                       /* as written, secrets and all */
  CURLU *base;
  char *base_path;                      /* its path without trailing '/' */
  char *base_query;                     /* its query, or NULL */
  CURLU *scratch;                       /* a copy of base that calls reuse */
  char *memo_path, *memo_query, *memo_url;  /* the last URL built (request.c) */
  char *plain_path, *plain_url;         /* the last plain call's path and URL (request.c) */
  fr_header *headers;                   /* auth included as Authorization */
  fr_oauth *oauth;                      /* auth = { oauth2 = ... }, or NULL (auth.h) */
  char *api_key;                        /* auth = { api_key = ... }: its header or query name */
  bool api_key_query;
  int nheaders;
  char **query;                         /* "k=v", already encoded */
  int nquery;
  fr_endpoint *endpoints;
  int nendpoints;
  long timeout_ms, connect_timeout_ms, queue_timeout_ms;
  int max_connections;
  curl_off_t max_response_bytes;
  bool follow_redirects, tls_verify;
  bool idempotency_key;                 /* with a store: Idempotency-Key on each call */
  bool cookies;                         /* a cookie jar per session (cookies.c) */
  long http_version;                    /* CURLOPT_HTTP_VERSION; 0: libcurl's default */
  char *ca_file;
  /* the wire (README: Compressed responses, Proxies, Client certificates) */
  bool compressed;                      /* Accept-Encoding, max_response_bytes decoded */
  bool proxy_env;                       /* proxy = "env": libcurl reads the environment */
  char *proxy, *no_proxy;               /* NULL proxy: none, the environment ignored */
  char *cert_file, *key_file, *key_password;
  char *unset;                          /* an env() it needs is unset (placeholders) */
  int retry_attempts;
  long retry_backoff_ms, retry_max_backoff_ms;
  fr_results retry_on;
  long deadline_ms;                     /* a call's whole time, retries and all; 0: none */
  int rate_requests;                    /* rate_limit: requests per rate_per_ms; 0: none */
  long rate_per_ms;
  fr_pool pool;                         /* its connections (call.c, pool.c) */
  int refs;                             /* calls holding it, plus the set */
  struct curl_slist *shared_hdrs;       /* its headers, for calls adding none (request.c) */
  fr_integration *next;
};

int fr_integrations_load(flowrun *rt, lua_State *L, const char *file);
int fr_integration_define(flowrun *rt, lua_State *L, const char *name,
                          int idx, const char *where);
fr_integration *fr_integration_find(flowrun *rt, const char *name, size_t len);
void fr_integration_release(fr_integration *ig);
void fr_integrations_free(flowrun *rt);
int fr_l_env(lua_State *L);             /* env() of integrations files */
const fr_endpoint *fr_endpoint_find(const fr_integration *ig, const char *name);
/* Is path the integrations file the runtime loaded? Flows may not run it
** (its literal values are the operator's, not theirs to read). */
bool fr_integrations_file(flowrun *rt, const char *path);

#endif
