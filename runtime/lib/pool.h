/*
** pool.h -- an integration's connection pool (pool.c): its slots, the
** calls waiting for one, and its idle easy handles. call.c owns what is
** in it; integrations.c only frees it with the integration. Not installed.
*/
#ifndef FLOWRUN_POOL_H
#define FLOWRUN_POOL_H

#include <stdbool.h>

#include <curl/curl.h>

#include "loop.h"

typedef struct fr_call fr_call;

typedef struct fr_pool {
  int inflight;                         /* calls holding a slot */
  fr_call *qhead, *qtail;               /* calls waiting for one, FIFO */
  CURL **easy;                          /* idle easy handles, set up for the integration */
  const void **owner;                   /* the call each one's data options point to */
  bool *added;                          /* still in the multi handle: its transfer just ended */
  int neasy, easycap, nadded;
  /* rate_limit (fr_pool_turn): a bucket of rate_n tokens, each back
     rate_per_ms after it was taken; rate_back holds when each comes back,
     the oldest at rate_next (a ring). NULL: no rate limit. */
  double *rate_back;
  int rate_n, rate_next;
  long rate_per_ms;
  double paused_until;                  /* a 429's Retry-After: no request before */
  fr_timer gate;                        /* the queue's head waits for a turn (call.c) */
} fr_pool;

/* An idle easy handle of p, or NULL when there is none; *owner and *added:
** what fr_pool_easy_put was told of it (the call it was last set up for;
** whether it is still in the multi handle, for the caller to take out). */
CURL *fr_pool_easy_take(fr_pool *p, const void **owner, bool *added);
/* Keeps e for p's next call (or frees it when there is no memory). */
void fr_pool_easy_put(fr_pool *p, CURL *e, const void *owner, bool added);
/* Takes every idle handle of p still in multi out of it. */
void fr_pool_settle(fr_pool *p, CURLM *multi);
/* Gives p a rate limit of n requests per per_ms; false: no memory. */
bool fr_pool_rate(fr_pool *p, int n, long per_ms);
/* 0 when a request may start at now (a token is taken), else the ms until
** one may: the pause of a 429 or the next token. */
double fr_pool_turn(fr_pool *p, double now);
/* No request starts before until (a 429's Retry-After). */
void fr_pool_pause(fr_pool *p, double until);
/* Frees the idle handles; no call may hold a slot or wait. */
void fr_pool_free(fr_pool *p);

#endif
