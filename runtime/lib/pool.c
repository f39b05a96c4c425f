/*
** pool.c -- an integration's connection pool: the idle easy handles kept
** set up for it (libcurl keeps the connections themselves in the multi
** handle). The slots and the queue are counted by call.c.
*/
#include <stdlib.h>

#include "pool.h"

CURL *fr_pool_easy_take(fr_pool *p) {
  return p->neasy > 0 ? p->easy[--p->neasy] : NULL;
}

void fr_pool_easy_put(fr_pool *p, CURL *e) {
  CURL **easy = realloc(p->easy, (p->neasy + 1) * sizeof *easy);
  if (!easy) {
    curl_easy_cleanup(e);
    return;
  }
  p->easy = easy;
  easy[p->neasy++] = e;
}

void fr_pool_free(fr_pool *p) {
  for (int i = 0; i < p->neasy; i++) curl_easy_cleanup(p->easy[i]);
  free(p->easy);
  p->easy = NULL;
  p->neasy = 0;
}
