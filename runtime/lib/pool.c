/*
** pool.c -- an integration's connection pool: the idle easy handles kept
** set up for it (libcurl keeps the connections themselves in the multi
** handle), and its rate limit: when the next request may start. The
** slots and the queue are counted by call.c.
*/
#include <stdlib.h>

#include "pool.h"

CURL *fr_pool_easy_take(fr_pool *p, const void **owner, bool *added) {
  *owner = NULL;
  *added = false;
  if (p->neasy == 0) return NULL;
  *owner = p->owner[--p->neasy];
  if ((*added = p->added[p->neasy])) p->nadded--;
  return p->easy[p->neasy];
}

void fr_pool_easy_put(fr_pool *p, CURL *e, const void *owner, bool added) {
  if (p->neasy == p->easycap) {         /* grows by half: no realloc per call */
    int cap = p->easycap ? p->easycap + p->easycap / 2 + 1 : 8;
    CURL **easy = realloc(p->easy, (size_t)cap * sizeof *easy);
    const void **own = easy ? realloc(p->owner, (size_t)cap * sizeof *own) : NULL;
    bool *add = own ? realloc(p->added, (size_t)cap * sizeof *add) : NULL;
    if (easy) p->easy = easy;
    if (own) p->owner = own;
    if (!add) {
      curl_easy_cleanup(e);             /* takes it out of the multi handle too */
      return;
    }
    p->added = add;
    p->easycap = cap;
  }
  p->owner[p->neasy] = owner;
  p->added[p->neasy] = added;
  p->nadded += added;
  p->easy[p->neasy++] = e;
}

void fr_pool_settle(fr_pool *p, CURLM *multi) {
  for (int i = p->neasy - 1; i >= 0 && p->nadded > 0; i--)
    if (p->added[i]) {
      p->added[i] = false;
      p->nadded--;
      if (curl_multi_remove_handle(multi, p->easy[i]) != CURLM_OK) {
        curl_easy_cleanup(p->easy[i]);  /* never reused: the last one takes its place */
        p->easy[i] = p->easy[--p->neasy];
        p->owner[i] = p->owner[p->neasy];
        p->added[i] = p->added[p->neasy];
      }
    }
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
  free(p->added);
  p->added = NULL;
  p->nadded = 0;
  free(p->rate_back);
  p->rate_back = NULL;
  p->easy = NULL;
  p->neasy = p->easycap = 0;
}
