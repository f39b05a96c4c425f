/*
** store.h -- where durable sessions are kept: a backend behind a table of
** methods, as SQLite's VFS is (store_sqlite.c is the one there is). Only
** journal.c calls it. Not installed.
**
** A backend keeps, per session, a row (its flow, its start arguments, the
** number of messages stored for it, whether it ended), its journal (one
** record per effect, by sequence number) and its inbox (messages stored
** and not yet taken). Its rules: every call between begin and commit is
** one atomic unit; commit returns only when the data survives the
** process's crash; one process at a time (open refuses a second); a
** failing call returns -1 and errmsg says why.
*/
#ifndef FLOWRUN_STORE_H
#define FLOWRUN_STORE_H

#include <stddef.h>

typedef struct fr_store fr_store;       /* a backend's open store */

typedef struct fr_store_session {
  const char *id, *flow;
  const char *args;                     /* the start arguments, NUL-separated */
  size_t args_len;
  int nargs;
  long long inputs;                     /* messages stored for it, ever */
  int ended;                            /* kept to recognise a message sent again */
  long long said;                       /* the last output the host was given */
  int parked;                           /* its replay did not match: kept, not run */
} fr_store_session;

typedef struct fr_store_rec {
  long long seq;
  int kind;                             /* journal.h: FR_J_* */
  const char *fp;                       /* what the flow asked for */
  const char *at;                       /* where: "flow.lua:7" */
  const char *data;                     /* the result, encoded (journal.c) */
  size_t len;
} fr_store_rec;

typedef struct fr_store_listed {        /* flowrun sessions */
  const char *id, *flow;
  int ended, waiting, parked;
  long long inputs, journal, active;    /* active: unix ms */
  const char *note;                     /* why it is parked */
} fr_store_listed;

enum { FR_STORE_READ = 1 };             /* open: read only, no lock */

typedef struct fr_store_methods {
  const char *name;
  /* NULL and a message in err (PATH named) when it cannot be opened. */
  fr_store *(*open)(const char *path, int flags, char *err, size_t n);
  void (*close)(fr_store *st);
  int (*begin)(fr_store *st);
  int (*commit)(fr_store *st);
  void (*rollback)(fr_store *st);
  int (*put_session)(fr_store *st, const fr_store_session *row);   /* insert or replace */
  int (*end_session)(fr_store *st, const char *id);   /* journal and inbox go; row kept */
  int (*drop_session)(fr_store *st, const char *id);  /* row, journal and inbox go */
  /* 1 and *row (valid until the next call) when there is one, 0 when not. */
  int (*get_session)(fr_store *st, const char *id, fr_store_session *row);
  /* the sessions to restore: not ended, not waiting for a message, not
     parked; all: every one not ended */
  int (*each_session)(fr_store *st, int all,
                      int (*fn)(void *ud, const fr_store_session *row), void *ud);
  int (*append)(fr_store *st, const char *id, const fr_store_rec *rec);
  int (*each_rec)(fr_store *st, const char *id,
                  int (*fn)(void *ud, const fr_store_rec *rec), void *ud);
  int (*put_input)(fr_store *st, const char *id, long long n,
                   const char *text, size_t len);      /* text NULL: the channel closed */
  int (*take_input)(fr_store *st, const char *id, long long n);
  int (*each_input)(fr_store *st, const char *id,
                    int (*fn)(void *ud, long long n, const char *text, size_t len), void *ud);
  /* Outputs made and not yet known to be given to the host: kind is
  ** FR_J_SAY, FR_J_ASK or FR_J_END (how: FLOWRUN_DONE or _FAILED). */
  int (*put_output)(fr_store *st, const char *id, long long seq, int kind, int how,
                    const char *text, size_t len);
  int (*drop_output)(fr_store *st, const char *id, long long seq);   /* given: said >= seq */
  int (*each_output)(fr_store *st, int (*fn)(void *ud, const char *id, long long seq, int kind,
                                             int how, const char *text, size_t len), void *ud);
  const char *(*errmsg)(fr_store *st);
  const char *(*identity)(fr_store *st);   /* made with the store, never the same twice */
  /* waiting 1: the session waits for a message, none is stored (it need
  ** not be in memory); a stored message (put_input) sets it to 0 */
  int (*set_waiting)(fr_store *st, const char *id, int waiting);
  int (*each_listed)(fr_store *st, int (*fn)(void *ud, const fr_store_listed *row), void *ud);
  int (*drop_outbox)(fr_store *st, const char *id);
  int (*park)(fr_store *st, const char *id, const char *note);   /* NULL: run it again */
  /* sessions waiting for a message since before `before` (unix ms): fn for
  ** each, at most 1000 a call; returns how many */
  int (*each_silent)(fr_store *st, long long before, int (*fn)(void *ud, const char *id),
                     void *ud);
  /* the journal's records after `after` and before `before` go (a
  ** snapshot or a fresh start holds what they did) */
  int (*cut)(fr_store *st, const char *id, long long after, long long before);
  /* rows of sessions that ended before `before` (unix ms) go, at most 1000 */
  int (*purge_ended)(fr_store *st, long long before);
} fr_store_methods;

extern const fr_store_methods fr_store_sqlite;

#endif
