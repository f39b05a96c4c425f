/*
** base.h -- what every file of the library uses (base.c): the clock, a
** Lua error's "file:line: ", the runtime's error message. Not installed.
*/
#ifndef FLOWRUN_BASE_H
#define FLOWRUN_BASE_H

#include <lua.h>

#include "flowrun.h"

double fr_now(void);                    /* monotonic ms */
double fr_wall_ms(void);                /* ms since 1970 (the wall clock) */
int fr_error(flowrun *rt, const char *fmt, ...);    /* returns FLOWRUN_ERR */
/* Calls the function below nargs arguments; its error, secrets hidden,
** becomes flowrun_errmsg(). The stack is left at top. */
int fr_pcall(flowrun *rt, lua_State *L, int nargs, int top);
/* Pushes "file:line: " of the innermost Lua function that runs, or "". */
void fr_push_where(lua_State *L);
/* The runtime stored in the upvalue of a Lua-facing C function. */
#define fr_rt(L) ((flowrun *)lua_touserdata((L), lua_upvalueindex(1)))

#endif
