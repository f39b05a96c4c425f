/*
** loop.h -- the runtime's loop (loop.c): timers, epoll, libcurl's sockets
** and one turn. It reaches sessions and calls only through the runtime's
** hooks (rt->on_ready, rt->on_done). Not installed.
*/
#ifndef FLOWRUN_LOOP_H
#define FLOWRUN_LOOP_H

#include <stdbool.h>

#include <curl/curl.h>

#include "flowrun.h"

/* A deadline in the min-heap, in monotonic ms. */
typedef struct fr_timer fr_timer;
struct fr_timer {
  double at;
  unsigned long long seq;               /* when armed: ties fire in this order */
  int idx;                              /* heap slot, -1 when not armed */
  void (*fire)(flowrun *rt, fr_timer *t);
};

bool fr_timer_arm(flowrun *rt, fr_timer *t, double at);   /* false: ENOMEM */
void fr_timer_cancel(flowrun *rt, fr_timer *t);

/* libcurl's connection sockets pass through these; the open callback's
** ud is the call, the close callback's the runtime. */
curl_socket_t fr_open_socket(void *ud, curlsocktype purpose,
                             struct curl_sockaddr *a);
int fr_close_socket(void *ud, curl_socket_t fd);

/* Made and freed with the runtime; one turn, wait_ms as flowrun_step. */
bool fr_loop_init(flowrun *rt);
void fr_loop_free(flowrun *rt);
int fr_step(flowrun *rt, int wait_ms);
/* With a budget (flowrun_step_budget): is this step's spent? Between two
** units of work; it first lets libcurl send what the last unit started. */
bool fr_budget_spent(flowrun *rt);

#endif
