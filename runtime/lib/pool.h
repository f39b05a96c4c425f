/*
** pool.h -- an integration's connection pool (pool.c): its slots, the
** calls waiting for one, and its idle easy handles. call.c owns what is
** in it; integrations.c only frees it with the integration. Not installed.
*/
#ifndef FLOWRUN_POOL_H
#define FLOWRUN_POOL_H

#include <curl/curl.h>

typedef struct fr_call fr_call;

typedef struct fr_pool {
  int inflight;                         /* calls holding a slot */
  fr_call *qhead, *qtail;               /* calls waiting for one, FIFO */
  CURL **easy;                          /* idle easy handles, set up for the integration */
  int neasy;
} fr_pool;

/* An idle easy handle of p, or NULL when there is none. */
CURL *fr_pool_easy_take(fr_pool *p);
/* Keeps e for p's next call (or frees it when there is no memory). */
void fr_pool_easy_put(fr_pool *p, CURL *e);
/* Frees the idle handles; no call may hold a slot or wait. */
void fr_pool_free(fr_pool *p);

#endif
