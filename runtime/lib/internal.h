/*
** internal.h -- what the runtime's C files share. Not installed.
*/
#ifndef FLOWRUN_INTERNAL_H
#define FLOWRUN_INTERNAL_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <curl/curl.h>
#include <lua.h>
#include <lauxlib.h>

#include "flowrun.h"
#include "json.h"
#include "pool.h"

typedef struct fr_timer fr_timer;
typedef struct session session;
typedef struct call call;
typedef struct integration integration;

/* ---- timers (loop.c): a min-heap of deadlines in monotonic ms ---- */
struct fr_timer {
  double at;
  int idx;                              /* heap slot, -1 when not armed */
  void (*fire)(flowrun *rt, fr_timer *t);
};

double fr_now(void);
bool fr_timer_arm(flowrun *rt, fr_timer *t, double at);   /* false: ENOMEM */
void fr_timer_cancel(flowrun *rt, fr_timer *t);

/* ---- labels (labels.c); result sets: declared results or retry.on ---- */
enum { LBL_OTHER = 1, LBL_ERROR = 2, LBL_TIMEOUT = 4, LBL_MAXCONN = 8 };

typedef struct fr_results {
  uint8_t code[75];                     /* bit per status 0..599 */
  uint8_t cls;                          /* bit per class 1..5 */
  uint8_t defaults;                     /* LBL_* bits */
} fr_results;

/* Reads an array of result names at idx into r, raising on misuse; what
** names the field in messages ("results", "retry.on"); need200: a success
** (a 2xx status such as "200" or "201", or "2xx") must be among them. */
void fr_parse_results(lua_State *L, int idx, const char *what, fr_results *r,
                      bool need200);
/* Pushes an array of "key=value" strings, percent-encoded, from a query
** table at idx in either form (README: A flow that branches on labels);
** raises naming what (query.c). */
void fr_query_pairs(lua_State *L, int idx, const char *what);
/* Pushes the string form of the query or params value at idx; raises
** naming what.key when it is not a string, number or boolean. */
const char *fr_query_value(lua_State *L, int idx, const char *what, const char *key);
int fr_results_status(const fr_results *r, int status);  /* 0, code or -cls */
uint8_t fr_label_bit(const char *label);  /* LBL_* of a default label, or 0 */

/* ---- integrations (integrations.c) ---- */
typedef struct fr_header { char *name, *value; } fr_header;
typedef struct fr_endpoint { char *name, *method, *path; } fr_endpoint;

struct integration {
  char *name;
  char *base_url;                       /* as written, secrets and all */
  CURLU *base;
  char *base_path;                      /* its path without trailing '/' */
  char *base_query;                     /* its query, or NULL */
  CURLU *scratch;                       /* a copy of base that calls reuse */
  char *memo_path, *memo_query, *memo_url;  /* the last URL built */
  fr_header *headers;                   /* auth included as Authorization */
  int nheaders;
  char **query;                         /* "k=v", already encoded */
  int nquery;
  fr_endpoint *endpoints;
  int nendpoints;
  long timeout_ms, connect_timeout_ms, queue_timeout_ms;
  int max_connections;
  curl_off_t max_response_bytes;
  bool follow_redirects, tls_verify;
  char *ca_file;
  char *unset;                          /* an env() it needs is unset (placeholders) */
  int retry_attempts;
  long retry_backoff_ms, retry_max_backoff_ms;
  fr_results retry_on;
  fr_pool pool;                         /* its connections (call.c, pool.c) */
  int refs;                             /* calls holding it, plus the set */
  struct curl_slist *shared_hdrs;       /* its headers, for calls adding none */
  integration *next;
};

int fr_integrations_load(flowrun *rt, lua_State *L, const char *file);
int fr_integration_define(flowrun *rt, lua_State *L, const char *name,
                          int idx, const char *where);
integration *fr_integration_find(flowrun *rt, const char *name, size_t len);
void fr_integration_release(integration *ig);
void fr_integrations_free(flowrun *rt);
int fr_l_env(lua_State *L);             /* env() of integrations files */
const fr_endpoint *fr_endpoint_find(const integration *ig, const char *name);

/* Secrets: values read through env(). false: out of memory (what was
** added stays: hiding more is harmless). */
bool fr_secret_add(flowrun *rt, const char *s, size_t len, const char *name,
                   const char *basic);
void fr_shell_word(flowrun *rt, FILE *f, const char *s, size_t len);
/* Pushes s with every secret replaced by "***". */
void fr_push_redacted(lua_State *L, flowrun *rt, const char *s, size_t len);
/* Same into a malloc'd string the caller frees; NULL on ENOMEM. */
char *fr_redact(flowrun *rt, const char *s);

/* (integrations.c) Is path the integrations file the runtime loaded? Flows may not run it
** (its literal values are the operator's, not theirs to read). */
bool fr_integrations_file(flowrun *rt, const char *path);

/* ---- sessions (session.c) ---- */
enum { S_RUN, S_CALL, S_ASK, S_SLEEP };

typedef struct fr_msg { struct fr_msg *next; size_t len; char text[]; } fr_msg;
#define FR_MAX_WAITING 1000             /* messages a session has not asked for */

/* Who waits on a call: wake runs when the call has ended; id names the
** waiter in traces and flowrun_interrupt (a session's id). */
typedef struct fr_call_waiter fr_call_waiter;
struct fr_call_waiter {
  void (*wake)(fr_call_waiter *w, call *c);
  const char *id;
};

struct session {
  flowrun *rt;
  lua_State *co;
  int ref;                              /* registry ref to the thread */
  int envref;                           /* the session's globals */
  int state;
  int nargs;                            /* values for the first resume */
  bool closed;                          /* the channel: asks get nil */
  bool queued;                          /* in the ready list */
  fr_msg *in, *in_tail;                 /* messages not asked for yet */
  int nin;                              /* how many (at most FR_MAX_WAITING) */
  fr_timer timer;                       /* sleep */
  call *call;                           /* the call it waits on */
  fr_call_waiter waiter;                /* how that call wakes it */
  long long steps;                      /* instructions since it last waited */
  long long mem, mem_check;             /* bytes charged to it; measure past this */
  long long out;                        /* bytes it said, asked, logged */
  int refused;                          /* the limit that refused it memory, +1 */
  bool recheck;                         /* measure what it holds at the next look */
  char *doom;                           /* why a limit ends it: raised again and again */
  session *next_ready;
  session *prev, *next;                 /* all live sessions */
  char id[];
};

session *fr_session_current(flowrun *rt, lua_State *L);
void fr_session_ready(session *s);      /* resume it in the next step */
/* Does every session wait for a message (none ready, none sleeping or
** calling)? And the runtime as a whole: also no call and no timer. */
bool fr_sessions_idle(const flowrun *rt);
bool fr_runtime_idle(const flowrun *rt);
void fr_run_ready(flowrun *rt);
void fr_sessions_free(flowrun *rt);
/* Pushes a new table of the flow primitives: api_node, say, ask, sleep,
** run_flow, log, json, print. */
void fr_push_flow_primitives(flowrun *rt, lua_State *L);
int fr_sandbox_require(lua_State *L);   /* sandbox.c: require of flows */

/* ---- calls (call.c, request.c) ---- */
enum { C_NEW, C_QUEUED, C_ACTIVE, C_BACKOFF, C_DONE };

typedef struct fr_buf { char *p; size_t len, cap; } fr_buf;

/* A value to hide. name: the environment variable it was read from (by
** env()), basic: for "user:password" encoded as Basic credentials, that
** pair as a shell word; NULL when not known. */
typedef struct fr_secret {
  char *s;
  size_t len;
  char *name, *basic;
} fr_secret;

/* A request as request.c makes it from an api_node spec, adopted by the
** call that sends it (call.c); the URL buffer is kept from one to the
** next. fail: the reason it will not be sent (its call gets label error
** and fail_msg): header_conflict, too_large. */
typedef struct fr_request {
  integration *ig;                      /* holds a reference */
  char method[8];
  char *url;                            /* the URL of this hop */
  size_t urlcap;
  struct curl_slist *hdrs;
  bool shared_hdrs;                     /* hdrs belong to the integration */
  bool retry_ok;                        /* not POST/PATCH, or idempotent */
  char *body;
  size_t bodylen;
  fr_results results;
  long timeout_ms;
  const char *fail;
  char *fail_msg;
} fr_request;

/* Reads the api_node spec at stack index 1 into rq (empty but for its URL
** buffer); raises on misuse. */
void fr_request_build(lua_State *L, flowrun *rt, fr_request *rq);
bool fr_request_set_url(fr_request *rq, const char *url);  /* false: no memory */
void fr_request_clear(fr_request *rq);  /* empty again; the URL buffer kept */

struct call {
  flowrun *rt;
  fr_call_waiter *w;                    /* NULL: a blocking call */
  fr_request rq;                        /* what it sends (request.c) */
  CURL *easy;
  call *prev, *next;                    /* the runtime's calls */
  int phase;
  bool active;                          /* counted in ncalls */
  bool slot;                            /* holds a pool slot */
  bool too_large;
  bool head_done;                       /* the last header block has ended */
  bool resend_refused;                  /* on_send stopped libcurl's resend */
  int sends;                            /* requests this transfer has sent */
  int fd_errno;                         /* EMFILE or ENFILE when a socket failed */
  bool oom;                             /* out of memory: api_node raises that */
  int attempts, hops;
  double t0, attempt_t0;
  fr_timer timer;                       /* queue limit or backoff */
  call *qnext;                          /* waiting for a slot */
  fr_buf rbody, rhdr;                   /* the response as it arrives */
  int status;                           /* of a complete response */
  const char *label;                    /* set when decided */
  const char *reason;
  char *error;
  char codelabel[16];
  char errbuf[CURL_ERROR_SIZE];
};

/* The default labels; compared by address. */
extern const char LABEL_OTHER[], LABEL_ERROR[], LABEL_TIMEOUT[], LABEL_MAXCONN[];


int fr_open_api_node(lua_State *L);     /* session.c: pushes the api_node closure */
/* A call's life, for api_node: a new call, filled from the spec at stack
** index 1 (raises on misuse); begun (true: it has ended already, else
** w->wake runs when it ends; w NULL: the caller turns the loop until
** fr_call_over); its label and response pushed, and the call given back. */
call *fr_call_new(flowrun *rt);
void fr_call_build(lua_State *L, call *c);
bool fr_call_begin(call *c, fr_call_waiter *w);
bool fr_call_over(const call *c);
int fr_call_push_result(lua_State *L, call *c);
void fr_open_response(lua_State *L);     /* response.c */
int fr_open_runtime_module(lua_State *L);  /* inspect.c: upvalue 1 = rt */
void fr_push_response(lua_State *L, call *c);     /* response.c: c's response */
void fr_call_done(flowrun *rt, CURLMsg *m);
void fr_calls_free(flowrun *rt);        /* the runtime goes away */
void fr_call_cancel(call *c);           /* session ended while waiting */

/* ---- Lua modules of lua/, built in (build/modules.c) ---- */
typedef struct fr_module {
  const char *name, *chunkname, *src;  /* "flowrun.flow", "@lua/flowrun/flow.lua" */
  size_t len;
} fr_module;
extern const fr_module fr_modules[];    /* ends with a NULL name */

/* ---- the runtime (runtime.c) ---- */
typedef struct fr_watch { int fd; void (*cb)(void *, int); void *ud; } fr_watch;
typedef struct fd_state { uint32_t events; uint8_t flags; } fd_state;

/* libcurl's connection sockets pass through these (loop.c); the open
** callback's ud is the call, the close callback's the runtime. */
curl_socket_t fr_open_socket(void *ud, curlsocktype purpose,
                             struct curl_sockaddr *a);
int fr_close_socket(void *ud, curl_socket_t fd);

struct flowrun {
  lua_State *L;                         /* main thread */
  bool owns_L;
  void (*on_ready)(flowrun *rt);        /* the loop's hooks: resume ready sessions, */
  void (*on_done)(flowrun *rt, CURLMsg *m);  /* a transfer has ended */
  CURLM *multi;
  int epfd;
  double curl_deadline;                 /* libcurl's timer, -1 if none */
  fr_timer **heap;
  int nheap, capheap;
  session *ready, *ready_tail;
  session *all;
  session *volatile running;            /* being resumed now (flowrun_break) */
  volatile sig_atomic_t broke;          /* flowrun_break: the hook ends it */
  lua_State *volatile run_L;            /* the thread the hook last ran on */
  _Atomic long long run_since;          /* ms its resume began, 0: none (a watchdog reads it) */
  int nsessions;
  int ncalls;                           /* calls started, not yet finished */
  int in_step;
  integration *integrations;
  char *integrations_file;
  bool env_placeholders;                /* env() of an unset name gives "${NAME}" */
  unsigned long long ig_dev, ig_ino;    /* the integrations file's identity (0: none) */
  fr_secret *secrets;
  int nsecrets;
  struct call *tracing;                 /* the call whose trace the host is given */
  const flowrun_trace *tracing_t;
  fr_watch *watches;
  int nwatches;
  fd_state *fds;                        /* by descriptor: see runtime.c */
  int nfds;
  int sessions_ref;                     /* registry: id -> session */
  int flows_ref;                        /* registry: path -> flow function */
  int base_ref;                         /* registry: metatable of session globals */
  int globals_ref;                      /* registry: the flow globals */
  int modules_ref;                      /* registry: what require gives flows */
  int trusted_ref;                      /* registry: metatable of a host's own globals */
  long long limit[FLOWRUN_LIMIT_COUNT]; /* quota.c */
  long long mem;                        /* bytes the Lua state holds (if ours) */
  int threads_ref;                      /* registry: thread -> session */
  call *calls;                          /* calls being built or not done */
  call *spare;                          /* finished calls to reuse */
  int nspare;
  call *building;                       /* its spec is being read */
  flowrun_callbacks cb;
  char err[1024];
};

flowrun *fr_create(lua_State *L, bool owns, const flowrun_callbacks *cb);
void fr_destroy(flowrun *rt);
int fr_error(flowrun *rt, const char *fmt, ...);    /* returns FLOWRUN_ERR */
int fr_pcall(flowrun *rt, lua_State *L, int nargs, int top);
void fr_push_where(lua_State *L);
/* The loop (loop.c): made and freed with the runtime; one turn, wait_ms
** as flowrun_step. */
bool fr_loop_init(flowrun *rt);
void fr_loop_free(flowrun *rt);
int fr_step(flowrun *rt, int wait_ms);
/* The runtime stored in the upvalue of a Lua-facing C function. */
#define fr_rt(L) ((flowrun *)lua_touserdata((L), lua_upvalueindex(1)))

#endif
