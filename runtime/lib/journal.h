/*
** journal.h -- durable sessions (journal.c): the store a runtime keeps its
** sessions in, each session's journal of effects, and replay. Sessions
** (session.c) call it at each effect; it knows nothing of sessions but
** their ids. Not installed.
**
** Every effect of a session takes the next sequence number. Live, its
** result is written to the store in the loop turn's transaction; replayed
** (after a restart), the record at that number is checked against what
** the flow asks for now and its result is given back instead.
*/
#ifndef FLOWRUN_JOURNAL_H
#define FLOWRUN_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "call.h"
#include "cookies.h"
#include "flowrun.h"

enum { FR_J_ASK = 1, FR_J_SAY, FR_J_SLEEP, FR_J_CALL, FR_J_TIME, FR_J_CLOCK, FR_J_RANDOM,
       FR_J_END, FR_J_DATE /* os.date: a TIME record */,
       FR_J_STEP /* a declarative flow's snapshot */, FR_J_RESTART /* continue_as_new */ };

#define FR_JOURNAL_WARN 10000           /* records: a journal this long is warned of */

typedef struct fr_jrec {
  long long seq;
  int kind;
  char *fp, *at;
  char *data;                           /* NULL: none (an ask of a closed channel) */
  size_t len;
} fr_jrec;

/* A session's journal: NULL without a store. */
typedef struct fr_journal {
  flowrun *rt;
  long long seq;                        /* the last effect's */
  long long base;                       /* the last snapshot's or fresh start's (0: none) */
  long long chunk;                      /* a declarative flow's: effects before its first step */
  long long inputs;                     /* messages stored for the session */
  long long said;                       /* outputs up to this one reached the host */
  fr_jrec *recs;                        /* to replay; freed once replayed */
  long long nrecs, pos;
  bool mismatch;                        /* its replay did not match */
  char *replayed;                       /* a check's: what comes after the journal, */
  char *replayed_at;                    /* and at which line ("" unknown) */
} fr_journal;

/* The runtime's store: opened once; NULL when none (then nothing else
** here is called). */
int fr_dur_open(flowrun *rt, const char *path, bool check);
/* Opened by flowrun_replay_store: the store is read, never written; a
** session stops at the end of its journal (fr_journal.replayed). */
bool fr_dur_checking(const flowrun *rt);
void fr_dur_close(flowrun *rt);
/* The end of a loop turn: commit, then the turn's outputs are given (say,
** ask, end) and cb.stored runs for each message the commit stored; then
** cb.flush (the host writes them out) and the outputs leave the outbox in a
** second commit. FLOWRUN_ERR when a commit failed (nothing of the turn is
** given or acknowledged; the runtime stops). */
int fr_dur_commit(flowrun *rt);
bool fr_dur_failed(const flowrun *rt);  /* a write failed: the turn is lost */
/* Should the turn commit now: outputs or acknowledgements wait for it, a
** write failed, or its transaction is 50 ms old? */
bool fr_dur_due(flowrun *rt);
bool fr_dur_open_txn(const flowrun *rt);   /* writes, outputs or acks wait for a commit */

/* A session's row: made when it starts (args as given), tombstoned when
** it ends (its journal and inbox go), dropped when stopped. */
fr_journal *fr_dur_start(flowrun *rt, const char *id, const char *flow,
                         int argc, const char *const *argv);
void fr_dur_end(flowrun *rt, const char *id, fr_journal *j);
void fr_dur_drop(flowrun *rt, const char *id, fr_journal *j);
/* Drops a session that is in the store only (waiting, or parked):
** FLOWRUN_NOSESSION when the store has no unfinished one. */
int fr_dur_drop_stored(flowrun *rt, const char *id);
/* Messages stored for id: 0 after its start, -1 when the store has none. */
long long fr_dur_inputs(flowrun *rt, const char *id);
/* Stores message n (text NULL: the channel closed); cb.stored says so
** after the commit. */
int fr_dur_input(flowrun *rt, const char *id, fr_journal *j, long long n,
                 const char *text, size_t len);
void fr_dur_take_input(flowrun *rt, const char *id, long long n);
void fr_dur_ack(flowrun *rt, const char *id, long long n);
/* The Idempotency-Key of session id's effect seq: the same after a crash,
** another in another store or session. */
void fr_dur_key(flowrun *rt, const char *id, long long seq, char *buf, size_t n);   /* cb.stored after the commit */

/* Unfinished sessions, for restore: fn(ud, id, flow, argc, argv, j) with
** j holding the records to replay and the inbox given to msg(ud2...). */
typedef struct fr_restore {
  int (*session)(void *ud, const char *id, const char *flow, int argc,
                 const char *const *argv, fr_journal *j);
  void (*message)(void *ud, const char *id, long long n, const char *text, size_t len);
  void *ud;
  /* a shared store's: the journal of session id when it is in memory */
  fr_journal *(*journal)(void *ud, const char *id);
  /* a shared store's: 1 when no session of partition part is in memory
  ** (those that only wait for a message leave it) */
  int (*idle)(void *ud, int part);
} fr_restore;
int fr_dur_restore(flowrun *rt, const fr_restore *r);   /* all but those waiting */
/* ---- a store shared by many hosts (PostgreSQL; docs/scale-out.md) ----
** This host owns some partitions of the sessions; a session runs only on
** the host that owns its partition. Every start and message goes through
** the store's inbox, wherever the session runs; its outputs come back to
** the host that sent its last message. */
bool fr_dur_shared(const flowrun *rt);
int fr_dur_store_fd(const flowrun *rt);
/* A start or a message, stored for the owner (acknowledged by cb.stored). */
int fr_dur_send(flowrun *rt, const char *id, long long n, const char *text, size_t len);
int fr_dur_start_shared(flowrun *rt, const char *id, const char *flow,
                        int argc, const char *const *argv);
/* The heartbeat: leases renewed, partitions taken (their sessions restored)
** or given back; a partition lost stops the runtime (fenced out). */
int fr_dur_lease(flowrun *rt, const fr_restore *r);
/* Wakes that came: messages for sessions of this host's partitions,
** outputs for this host (given after the next commit). */
int fr_dur_wakes(flowrun *rt, const fr_restore *r);

/* One session, waiting in the store for a message: FLOWRUN_NOSESSION when
** the store has no such live session. */
int fr_dur_restore_one(flowrun *rt, const fr_restore *r, const char *id);
enum { FR_DUR_PARKED = 1 };             /* fr_dur_restore_one: the session is parked */
/* The session's replay did not match: kept in the store, not run, until
** flowrun_store_retry (note: why); j is freed. */
void fr_dur_park(flowrun *rt, const char *id, fr_journal *j, const char *note);
/* Message n for a parked session: stored for when it runs again. */
int fr_dur_input_parked(flowrun *rt, const char *id, long long n, const char *text, size_t len);
/* fn for each session waiting for a message since before `before` (unix
** ms), at most 1000 a call; returns how many (-1: the store failed). */
int fr_dur_silent(flowrun *rt, long long before, int (*fn)(void *ud, const char *id), void *ud);
/* The rows of sessions that ended before `before` (unix ms) go, at most
** 1000 a call. */
void fr_dur_purge(flowrun *rt, long long before);
/* id waits for a message and has none: it may leave memory (restored at
** its next message). */
void fr_dur_waiting(flowrun *rt, const char *id);

/* An effect of `kind` asked for with fingerprint fp (may be NULL: none):
** takes its sequence number; returns the record to give back when
** replaying, NULL when live, &fr_dur_mismatch with the error pushed when
** the record at this number is another effect (the caller raises it). */
extern const fr_jrec fr_dur_mismatch;
const fr_jrec *fr_dur_effect(lua_State *L, fr_journal *j, const char *id, int kind,
                             const char *fp);
/* The live result of the effect that took seq. */
void fr_dur_record(lua_State *L, flowrun *rt, const char *id, long long seq, int kind,
                   const char *fp, const char *data, size_t len);
void fr_dur_record_call(lua_State *L, flowrun *rt, const char *id, long long seq,
                        const char *fp, const fr_call *c);
/* Fills c, built but never begun, with a recorded response. */
void fr_dur_replay_call(fr_call *c, const fr_jrec *r);
/* Is the journal replaying (records left)? The flow ended with records
** left: the mismatch message, pushed; 0 when none left. */
bool fr_dur_replaying(const fr_journal *j);
int fr_dur_push_leftover(lua_State *L, fr_journal *j, const char *id);
void fr_dur_free(fr_journal *j);

/* Declarative flows. At a step that waits, the records since the flow's
** first step give way to one snapshot of the session table (value at
** idx) and where it is (file, step, at "file:line"); not written when the
** last one is this step's (same) and no effect came since (that one
** replays to here), skipped while replaying. -1 and a message pushed
** ("session.cb is a function: ...") when session cannot be stored. */
int fr_dur_checkpoint(lua_State *L, fr_journal *j, const char *id, int idx, const char *file,
                      const char *step, const char *at, bool same, const fr_jar *jars);
/* Replaying, at the flow's first step: when the journal goes on with a
** snapshot, pushes its file, step and session table and returns 3; 0
** when it does not; -1 and a message when the snapshot is damaged. The
** session's cookie jars (jars) are those stored with the snapshot. */
int fr_dur_resume(lua_State *L, fr_journal *j, fr_jar **jars);
/* Imperative flows: continue_as_new(...) with its n arguments at first.
** Live: pushes where it is and the arguments as bytes, for
** fr_dur_restarted once the flow's <close> variables ran, and returns 2;
** replayed: 0; -1 and a message pushed when they cannot be stored or
** replay does not match. */
int fr_dur_restart(lua_State *L, fr_journal *j, const char *id, int first, int n);
/* The journal starts afresh with the bytes on top of L (below them where
** continue_as_new was; both popped) and the session's cookie jars: the
** records before go. */
void fr_dur_restarted(lua_State *L, fr_journal *j, const char *id, const fr_jar *jars);
/* A journal that starts afresh: pushes the arguments it starts with and
** returns how many; -1 when there are none (the session's own). The
** session's cookie jars (jars) are those stored with them. */
int fr_dur_restart_args(lua_State *L, fr_journal *j, fr_jar **jars);
/* An output of a session (kind FR_J_SAY, FR_J_ASK, FR_J_END; how for an
** end): stored in the turn, given after its commit. */
void fr_dur_output(flowrun *rt, const char *id, long long seq, int kind, int how,
                   const char *text, size_t len);

#endif
