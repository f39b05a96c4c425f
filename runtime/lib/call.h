/*
** call.h -- a call's life (call.c): pool slot or queue, transfer, retries,
** redirects, its label. Not installed.
*/
#ifndef FLOWRUN_CALL_H
#define FLOWRUN_CALL_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>
#include <lua.h>

#include "flowrun.h"
#include "loop.h"
#include "request.h"

typedef struct fr_call fr_call;

enum { FR_C_NEW, FR_C_QUEUED, FR_C_ACTIVE, FR_C_BACKOFF, FR_C_DONE,
       FR_C_AUTH };                     /* waits for its integration's OAuth2 token */

typedef struct fr_buf { char *p; size_t len, cap; } fr_buf;

/* Who waits on a call: wake runs when the call has ended; id names the
** waiter in traces and flowrun_interrupt (a session's id). */
typedef struct fr_call_waiter fr_call_waiter;
struct fr_call_waiter {
  void (*wake)(fr_call_waiter *w, fr_call *c);
  const char *id;
};

/* What a call's last transfer set on its easy handle (call.c: transfer). */
typedef struct fr_easy_set {
  CURL *easy;                           /* the handle */
  const struct curl_slist *hdrs;        /* CURLOPT_HTTPHEADER */
  bool get;                             /* a plain GET: no body, no custom method */
} fr_easy_set;

struct fr_call {
  flowrun *rt;
  fr_call_waiter *w;                    /* NULL: a blocking call */
  fr_request rq;                        /* what it sends (request.c) */
  CURL *easy;
  curl_mime *mime;                      /* a multipart body of this transfer (wire.c) */
  fr_call *prev, *next;                 /* the runtime's calls */
  int phase;
  bool active;                          /* counted in ncalls */
  bool slot;                            /* holds a pool slot */
  bool too_large;
  bool head_done;                       /* the last header block has ended */
  bool resend_refused;                  /* on_send stopped libcurl's resend */
  int sends;                            /* requests this transfer has sent */
  int fd_errno;                         /* EMFILE or ENFILE when a socket failed (loop.c) */
  bool oom;                             /* out of memory: api_node raises that */
  int attempts, hops;
  double t0, attempt_t0;
  double hop_t0;                        /* this request's start (traces) */
  double deadline;                      /* deadline_ms: when the call must end; 0: none */
  bool cut;                             /* this request ends at the deadline, not its timeout */
  fr_timer timer;                       /* queue limit or backoff */
  fr_call *qnext, *qprev;               /* waiting for a slot, or a token: the next, the one before */
  fr_call **wq[2];                      /* waiting for a token: the list's head and tail */
  bool internal;                        /* the runtime's own: an OAuth2 token request */
  bool reauthed;                        /* sent again after a 401 with a new token */
  unsigned token_gen;                   /* the OAuth2 token it carries */
  fr_buf rbody, rhdr;                   /* the response as it arrives */
  int status;                           /* of a complete response */
  const char *label;                    /* set when decided */
  const char *reason;
  char *error;
  char *jar;                            /* cookies = true: its session's cookies (cookies.c) */
  char codelabel[16];
  bool answering;                       /* the host's transport answers this hop */
  int ans_status;                       /* its status; 0: a fault (reason) */
  const char *ans_reason;
  bool ans_late;                        /* its delay passes the timeout */
  char at[96];                          /* with a trace callback: "flow.lua:7" of the node */
  char step[64];                        /* and the declarative step it is, or "" */
  char errbuf[CURL_ERROR_SIZE];
  fr_easy_set set;                      /* what its last transfer set (kept by clear) */
  CURL *done_easy;                      /* its last transfer's handle: ended, still in multi */
};

/* A call's life, for api_node: a new call, filled from the spec at stack
** index 1 (raises on misuse); begun (true: it has ended already, else
** w->wake runs when it ends; w NULL: the caller turns the loop until
** fr_call_over); its label and response pushed, and the call given back. */
fr_call *fr_call_new(flowrun *rt);
void fr_call_build(lua_State *L, fr_call *c);
bool fr_call_begin(fr_call *c, fr_call_waiter *w);
bool fr_call_over(const fr_call *c);
int fr_call_push_result(lua_State *L, fr_call *c);
void fr_call_done(flowrun *rt, CURLMsg *m);  /* the loop's hook: a transfer ended */
void fr_calls_free(flowrun *rt);        /* the runtime goes away */
/* At the end of a loop turn: idle handles whose transfer ended this turn
** leave the multi handle (call.c: easy_done). */
void fr_calls_settle(flowrun *rt);
void fr_call_cancel(fr_call *c);        /* its waiter has gone */
void fr_call_drop(fr_call *c);          /* built, never begun: given back */

#endif
