/*
** pool.c -- an integration's connection pool: the idle easy handles kept
** set up for it (libcurl keeps the connections themselves in the multi
** handle), and its rate limit: when the next request may start. The
** slots and the queue are counted by call.c.
*/
#include <stdlib.h>

#include "pool.h"

CURL *fr_pool_easy_take(fr_pool *p, const void **owner) {
  *owner = NULL;
  if (p->neasy == 0) return NULL;
  *owner = p->owner[--p->neasy];
  return p->easy[p->neasy];
}

void fr_pool_easy_put(fr_pool *p, CURL *e, const void *owner) {
  if (p->neasy == p->easycap) {         /* grows by half: no realloc per call */
    int cap = p->easycap ? p->easycap + p->easycap / 2 + 1 : 8;
    CURL **easy = realloc(p->easy, (size_t)cap * sizeof *easy);
    const void **own = easy ? realloc(p->owner, (size_t)cap * sizeof *own) : NULL;
    if (easy) p->easy = easy;
    if (!own) {
      curl_easy_cleanup(e);
      return;
    }
    p->owner = own;
    p->easycap = cap;
  }
  p->owner[p->neasy] = owner;
  p->easy[p->neasy++] = e;
}

bool fr_pool_rate(fr_pool *p, int n, long per_ms) {
  free(p->rate_back);
  if (!(p->rate_back = calloc((size_t)n, sizeof *p->rate_back))) return false;
  p->rate_n = n;
  p->rate_next = 0;
  p->rate_per_ms = per_ms;
  return true;
}

/* The bucket is exact over any window: a token taken at t is back at
** t + per_ms, so no per_ms long window holds more than n starts. The
** plain path (no pause, no limit) is two branches. */
double fr_pool_turn(fr_pool *p, double now) {
  double back;
  if (p->paused_until > now) return p->paused_until - now;
  if (!p->rate_back) return 0;
  if ((back = p->rate_back[p->rate_next]) > now) return back - now;
  p->rate_back[p->rate_next] = now + (double)p->rate_per_ms;
  if (++p->rate_next == p->rate_n) p->rate_next = 0;
  return 0;
}

void fr_pool_pause(fr_pool *p, double until) {
  if (until > p->paused_until) p->paused_until = until;
}

void fr_pool_free(fr_pool *p) {
  for (int i = 0; i < p->neasy; i++) curl_easy_cleanup(p->easy[i]);
  free(p->easy);
  free(p->owner);
  p->owner = NULL;
  free(p->rate_back);
  p->rate_back = NULL;
  p->easy = NULL;
  p->neasy = p->easycap = 0;
}
