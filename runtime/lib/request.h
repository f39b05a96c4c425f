/*
** request.h -- from an api_node spec to a request (request.c). Not
** installed.
*/
#ifndef FLOWRUN_REQUEST_H
#define FLOWRUN_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>
#include <lua.h>

#include "flowrun.h"
#include "labels.h"

typedef struct fr_integration fr_integration;

/* A request as request.c makes it from an api_node spec, adopted by the
** call that sends it (call.c); the URL buffer is kept from one to the
** next. fail: the reason it will not be sent (its call gets label error
** and fail_msg): header_conflict, too_large. */
typedef struct fr_request {
  fr_integration *ig;                   /* holds a reference */
  const char *endpoint;                 /* the node's endpoint's name (ig's), or NULL */
  char method[8];
  char *url;                            /* the URL of this hop */
  size_t urlcap;
  struct curl_slist *hdrs;
  bool shared_hdrs;                     /* hdrs belong to the integration */
  bool retry_ok;                        /* not POST/PATCH, or idempotent */
  char *body;
  size_t bodylen;
  struct fr_parts *parts;               /* a multipart body (wire.c), or NULL */
  fr_results results;
  long timeout_ms;
  long deadline_ms;                     /* the whole call's, retries and all; 0: none */
  const char *fail;
  char *fail_msg;
} fr_request;

/* Reads the api_node spec at stack index 1 into rq (empty but for its URL
** buffer); raises on misuse. */
void fr_request_build(lua_State *L, flowrun *rt, fr_request *rq);
bool fr_request_set_url(fr_request *rq, const char *url);  /* false: no memory */
void fr_request_clear(fr_request *rq);  /* empty again; the URL buffer kept */
/* Adds "Idempotency-Key: key" unless the node gave one; the request may
** then be sent again. false: no memory. */
bool fr_request_add_key(fr_request *rq, const char *key);

#endif
