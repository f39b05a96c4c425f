/*
** quota.h -- what one session may take of the process (quota.c):
** instructions between two waits, memory, output. A session over a limit
** ends with a message saying which; the others go on.
*/
#ifndef FLOWRUN_QUOTA_H
#define FLOWRUN_QUOTA_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "flowrun.h"

typedef struct fr_session fr_session;

/* What a session has taken, kept in the session, written by quota.c only. */
typedef struct fr_usage {
  long long steps;                      /* instructions since it last waited */
  long long mem, mem_check;             /* bytes charged to it; measure past this */
  long long out;                        /* bytes it said, asked, logged */
  int refused;                          /* the limit that refused it memory, +1 */
  bool recheck;                         /* measure what it holds at the next look */
  char *doom;                           /* why a limit ends it: raised again and again */
} fr_usage;

void fr_usage_free(fr_usage *u);        /* the session goes */
void fr_usage_resume(fr_usage *u);      /* it runs again: no refusal yet */
/* The limit (FLOWRUN_LIMIT_*) that refused it memory, or -1. */
int fr_usage_refused(const fr_usage *u);

void fr_limits_init(flowrun *rt);

/* The allocator of a Lua state the runtime owns (ud: the runtime): counts
** what the runtime and the running session hold, refuses past a limit. */
void *fr_alloc(void *ud, void *p, size_t osize, size_t nsize);

/* Arms the count hook on a session's new thread (and the line hook when
** rt counts lines); coroutines it creates inherit it. */
void fr_limits_watch(flowrun *rt, lua_State *co);

/* Around a resume of s (and anything else that runs its code): what it
** allocates is charged to it, and its instructions are counted from 0.
** enter returns the session that ran before, for leave to restore. */
fr_session *fr_limits_enter(fr_session *s);
void fr_limits_leave(fr_session *was);

/* The session whose code runs on this thread now, or NULL. */
fr_session *fr_running(void);

/* Charges n bytes of output (say, ask, log, print) to the session running
** on L, if any; raises when that passes the output limit. */
void fr_limits_output(flowrun *rt, lua_State *L, size_t n);

/* Why a limit ended s (NULL: none did); freed with the session. */
const char *fr_limits_doom(const fr_session *s);

#endif
