/*
** runtime.h -- the runtime (runtime.c): the struct every part keeps its
** state in, each part writing its own fields, and its making and
** unmaking. Not installed.
*/
#ifndef FLOWRUN_RUNTIME_H
#define FLOWRUN_RUNTIME_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <curl/curl.h>
#include <lua.h>

#include "base.h"
#include "blocks.h"
#include "flowrun.h"

typedef struct fr_timer fr_timer;
typedef struct fr_session fr_session;
typedef struct fr_call fr_call;
typedef struct fr_integration fr_integration;
typedef struct fr_secret fr_secret;
struct fr_watch;
struct fr_durable;
struct fd_state;

struct flowrun {
  lua_State *L;                         /* main thread */
  bool owns_L;
  void (*on_ready)(flowrun *rt);        /* the loop's hooks: resume ready sessions, */
  void (*on_done)(flowrun *rt, CURLMsg *m);  /* a transfer has ended */
  void (*on_settle)(flowrun *rt);       /* the turn ends: ended handles leave multi */
  /* a turn ends (a store commits what it wrote: at once when forced, the
     loop being about to wait; else when it has outputs or messages to
     acknowledge, or its last commit is 50 ms old); NULL: no store */
  int (*on_turn)(flowrun *rt, bool force);
  bool (*turn_open)(const flowrun *rt); /* has the store writes not committed? */
  /* the loop (loop.c) */
  CURLM *multi;
  int epfd;
  double curl_deadline;                 /* libcurl's timer, -1 if none */
  fr_timer **heap;
  int nheap, capheap;
  unsigned long long timer_seq;         /* timers armed so far */
  struct fr_watch *watches;
  int nwatches;
  struct fd_state *fds;                 /* by descriptor: see loop.c */
  int nfds;
  int in_step;
  double budget_ms;                     /* this step's (flowrun_step_budget), 0: none */
  double budget_end;                    /* fr_now() when it is spent */
  int step_resumed;                     /* sessions resumed in this step */
  unsigned ev_next;                     /* loop.c: where the next step's events start */
  int step_mc;                          /* CURLMcode: this step's first libcurl failure */
  unsigned ready_turn;                  /* session.c: fr_run_ready's calls */
  /* sessions (session.c; quota.c: running, broke, run_L) */
  fr_session *ready, *ready_tail;
  int nready;                           /* in the ready list */
  fr_session *all;
  fr_session *volatile running;         /* being resumed now (flowrun_break) */
  volatile sig_atomic_t broke;          /* flowrun_break: the hook ends it */
  lua_State *volatile run_L;            /* the thread the hook last ran on */
  _Atomic long long run_since;          /* ms its resume began, 0: none (a watchdog reads it) */
  int nsessions;
  int sessions_ref;                     /* registry: id -> session */
  int flows_ref;                        /* registry: path -> flow function */
  int threads_ref;                      /* registry: thread -> session */
  /* calls (call.c) */
  int ncalls;                           /* calls started, not yet finished */
  bool easy_added;                      /* an idle handle is still in multi (call.c) */
  fr_call *calls;                       /* calls being built or not done */
  fr_call *spare;                       /* finished calls to reuse */
  int nspare;
  fr_call *building;                    /* its spec is being read */
  fr_call *tracing;                     /* the call whose trace the host is given */
  const flowrun_trace *tracing_t;
  /* integrations (integrations.c) */
  fr_integration *integrations;
  char *integrations_file;
  bool env_placeholders;                /* env() of an unset name gives "${NAME}" */
  unsigned long long ig_dev, ig_ino;    /* the integrations file's identity (0: none) */
  /* secrets (secrets.c) */
  fr_secret *secrets;
  int nsecrets;
  /* the sandbox (sandbox.c) */
  int base_ref;                         /* registry: metatable of session globals */
  int globals_ref;                      /* registry: the flow globals */
  int modules_ref;                      /* registry: what require gives flows */
  int trusted_ref;                      /* registry: metatable of a host's own globals */
  /* durable sessions (journal.c; session.c: out_seq) */
  struct fr_durable *dur;               /* NULL: no store */
  long long out_seq;                    /* of the output being given, 0: none */
  long long store_limit[FLOWRUN_STORE_COUNT];
  fr_timer *sweep;                      /* wakes the loop once a second for idle and TTL */
  fr_timer *lease;                      /* a shared store's heartbeat: a third of the lease */
  bool lease_due;
  char *store_node;                     /* flowrun_store_node */
  /* tests (call.c, loop.c): calls answered by the host; a virtual clock */
  flowrun_answer_fn answer;             /* NULL: calls go to the network */
  void *answer_ud;
  double vclock;                        /* the virtual clock (fr_now's scale); < 0: none */
  double vwall;                         /* the wall clock's ms at vclock 0 */
  double vstart;                        /* vclock when it was made */
  /* limits (quota.c) */
  long long limit[FLOWRUN_LIMIT_COUNT];
  int lines_ref;                        /* registry: file -> line -> runs; LUA_NOREF: not counted */
  long long mem;                        /* bytes the Lua state holds (if ours) */
  fr_blocks blocks;                     /* its small freed blocks (blocks.c) */
  const char *field_names[32];          /* api_node's fields as L's strings (request.c) */
  flowrun_callbacks cb;
  char err[1024];
};

/* The runtime's clock in ms: fr_now(), or the virtual clock's time; and
** the wall clock's (ms since 1970) as the runtime sees it. */
static inline double fr_clock(const flowrun *rt) {
  return rt->vclock >= 0 ? rt->vclock : fr_now();
}
static inline double fr_wall_clock(const flowrun *rt) {
  return rt->vclock >= 0 ? rt->vwall + rt->vclock : fr_wall_ms();
}

flowrun *fr_create(lua_State *L, bool owns, const flowrun_callbacks *cb);
void fr_destroy(flowrun *rt);
/* No call, no timer, and every session waits for a message. */
bool fr_runtime_idle(const flowrun *rt);

#endif
