/*
** store_pg.c -- the store on PostgreSQL (store.h), shared by many hosts:
** partitions, leases with epochs, fencing, the inbox and LISTEN/NOTIFY
** (docs/scale-out.md). Being written: open refuses for now.
*/
#include <stdio.h>

#include <libpq-fe.h>

#include "store.h"

static fr_store *pg_open(const char *path, int flags, char *err, size_t n) {
  (void)flags;
  snprintf(err, n, "store %s: PostgreSQL stores are not built yet (libpq %d)", path, PQlibVersion());
  return NULL;
}

const fr_store_methods fr_store_pg = { .name = "postgresql", .open = pg_open };
