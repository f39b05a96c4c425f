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

  /* ---- a store shared by many hosts (store_pg.c; NULL in store_sqlite.c) ----
  ** Sessions hash into FR_PARTITIONS partitions (fr_partition). A host
  ** owns partitions through lease rows carrying an epoch; every write of a
  ** turn (put_session ... purge_ended, between begin and commit) checks,
  ** once per partition per transaction and under a share lock on the lease
  ** row, that this host still holds the partition at the epoch it took it
  ** with, else the write fails ("fenced": errmsg names the partition and
  ** both epochs). Messages reach a session's owner through the inbox: any
  ** host stores them (send, start) and the owner is woken (fd, wakes).
  ** Outputs go to the host that stored the session's last message: put_output
  ** addresses them to it (returns 1 when that is another host, 0 this one);
  ** that host takes them (each_mine, then drop_output). The calls below run
  ** outside a turn's transaction, each in its own. */
  /* This host's name (unique among the hosts) and the lease's length in ms,
  ** before any other call below. */
  int (*set_node)(fr_store *st, const char *node, long long lease_ms);
  /* Heartbeat: renews this host's leases, takes free or expired partitions
  ** up to its share (ceil(FR_PARTITIONS / hosts seen within a lease)),
  ** gives back partitions above its share for which idle(ud, part) is 1.
  ** got[part] = 1 for each taken now; lost[part] = 1 for each it held and
  ** no longer does (taken by another: its sessions must stop here). */
  int (*leases)(fr_store *st, int (*idle)(void *ud, int part), void *ud,
                unsigned char got[], unsigned char lost[]);
  int (*owns)(fr_store *st, int part);      /* 1: this host holds part */
  /* Stores message n (0: the next) for id from this host and wakes the
  ** owner: 1 stored as *taken, 0 stored already (n <= inputs: its outputs
  ** not yet taken are addressed to this host again), -2 no unfinished
  ** session, -3 n leaves a gap (n > inputs + 1), -1 failed. */
  int (*send)(fr_store *st, const char *id, long long n, const char *text, size_t len,
              long long *taken);
  /* A new session's row (or an ended one's, made anew), addressed to this
  ** host, and the owner woken: 1 made, 0 an unfinished one has id (its
  ** outputs are addressed to this host again), -1 failed. */
  int (*start)(fr_store *st, const fr_store_session *row);
  int (*fd)(fr_store *st);                  /* readable: wakes came */
  /* fn(ud, kind, id) for each wake that came: kind 'i' messages for
  ** session id, 'o' outputs for this host. */
  int (*wakes)(fr_store *st, int (*fn)(void *ud, int kind, const char *id), void *ud);
  /* outputs addressed to this host, in order (by session, then seq) */
  int (*each_mine)(fr_store *st, int (*fn)(void *ud, const char *id, long long seq, int kind,
                                           int how, const char *text, size_t len), void *ud);
  /* part's sessions to restore: not ended, not parked, and not waiting or
  ** with messages in the inbox */
  int (*each_in_part)(fr_store *st, int part,
                      int (*fn)(void *ud, const fr_store_session *row), void *ud);
} fr_store_methods;

#define FR_PARTITIONS 256

/* A session's partition: FNV-1a (32 bits) of its id, modulo FR_PARTITIONS
** (docs/scale-out.md: another system keying by session agrees with it). */
static inline int fr_partition(const char *id) {
  unsigned h = 2166136261u;
  for (; *id; id++) h = (h ^ (unsigned char)*id) * 16777619u;
  return (int)(h % FR_PARTITIONS);
}

extern const fr_store_methods fr_store_sqlite;
extern const fr_store_methods fr_store_pg;

#endif
