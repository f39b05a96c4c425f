/*
** session.h -- sessions: one end-user going through a flow, and the flow
** primitives (session.c). Not installed.
*/
#ifndef FLOWRUN_SESSION_H
#define FLOWRUN_SESSION_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "call.h"
#include "journal.h"
#include "flowrun.h"
#include "loop.h"
#include "quota.h"

typedef struct fr_session fr_session;

enum { FR_S_RUN, FR_S_CALL, FR_S_ASK, FR_S_SLEEP };

typedef struct fr_msg { struct fr_msg *next; long long n; size_t len; char text[]; } fr_msg;
#define FR_MAX_WAITING 1000             /* messages a session has not asked for */
#define FR_MAX_AFRESH 1000              /* continue_as_new without a wait between */

struct fr_session {
  flowrun *rt;
  lua_State *co;
  int ref;                              /* registry ref to the thread */
  int envref;                           /* the session's globals */
  int state;
  int nargs;                            /* values for the first resume */
  bool closed;                          /* the channel: asks get nil */
  bool queued;                          /* in the ready list */
  unsigned ready_turn;                  /* rt->ready_turn when it was put there */
  bool restart;                         /* continue_as_new: start afresh */
  bool restart_rec;                     /* and write its record (2 values on top) */
  bool declarative;                     /* it runs a definition (flow.run) */
  unsigned short afresh;                /* fresh starts since it last waited */
  const char *step;                     /* the step it is at (a name its definition holds) */
  fr_msg *in, *in_tail;                 /* messages not asked for yet */
  int nin;                              /* how many (at most FR_MAX_WAITING) */
  fr_timer timer;                       /* sleep */
  fr_call *call;                        /* the call it waits on */
  fr_call_waiter waiter;                /* how that call wakes it */
  fr_usage use;                         /* what it has taken (quota.c) */
  fr_journal *j;                        /* its journal: NULL without a store */
  struct fr_jar *jars;                  /* its cookies (cookies.c) */
  double active;                        /* when it last ran (ms, fr_now) */
  fr_session *next_ready, *prev_ready;
  fr_session *prev, *next;              /* all live sessions */
  char id[];
};

fr_session *fr_session_current(flowrun *rt, lua_State *L);
/* Pushes the `session` table of session id (its globals' own), or nil. */
void fr_push_session_table(flowrun *rt, lua_State *L, const char *id);
void fr_session_ready(fr_session *s);   /* resume it in the next step */
/* Does every session wait for a message (none ready, none sleeping or
** calling)? */
bool fr_sessions_idle(const flowrun *rt);
void fr_run_ready(flowrun *rt);         /* the loop's hook: resume the ready */
void fr_sessions_free(flowrun *rt);
/* With a store: the unfinished sessions it holds start again, to replay. */
int fr_sessions_restore(flowrun *rt);
/* A shared store's heartbeat (partitions taken: their sessions restored)
** and its wakes (messages for this host's sessions, outputs for it). */
int fr_sessions_lease(flowrun *rt);
int fr_sessions_wakes(flowrun *rt);
/* With a store: sessions waiting for a message leave memory, the least
** recently active first, down to resident (0: no cap), and any idle longer
** than idle_ms (0: never); their next message brings them back. Returns
** how many left. */
int fr_sessions_evict(flowrun *rt, long long resident, long long idle_ms);
/* lua_CFunction for os.time, os.clock, os.date and math.random with a
** store (upvalues: rt, the original, its FR_J_* kind): journaled. */
int fr_journaled_value(lua_State *L);
/* Pushes a new table of the flow primitives: api_node, say, ask, sleep,
** run_flow, log, json, print. */
void fr_push_flow_primitives(flowrun *rt, lua_State *L);
int fr_open_api_node(lua_State *L);     /* pushes the api_node closure */
/* api_node of the spec at stack index 1, for a C function whose upvalue 1
** is the runtime (api_pages, pages.c): returns 2 with label and response
** pushed, or yields to k, which gets them from fr_api_node_result(L, ctx).
** Misuse raises at the caller of that C function. */
int fr_api_node_k(lua_State *L, lua_KFunction k);
int fr_api_node_result(lua_State *L, lua_KContext ctx);

#endif
