/*
** base.c -- what every file of the library uses: the clock, a Lua
** error's "file:line: " and the runtime's error message. It calls only
** secrets.c (an error message never shows a secret).
*/
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "internal.h"

double fr_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Pushes "file:line: " of the innermost Lua function that runs (a hook
** may fire in a C function it called, pcall say), or "" when none does. */
void fr_push_where(lua_State *L) {
  lua_Debug d;
  for (int level = 0; lua_getstack(L, level, &d); level++) {
    lua_getinfo(L, "Sl", &d);
    if (d.currentline > 0) {
      lua_pushfstring(L, "%s:%d: ", d.short_src, d.currentline);
      return;
    }
  }
  lua_pushliteral(L, "");
}

/* Calls the function below nargs arguments; its error, secrets hidden,
** becomes flowrun_errmsg(). The stack is left at top. */
int fr_pcall(flowrun *rt, lua_State *L, int nargs, int top) {
  int st = lua_pcall(L, nargs, 0, 0);
  if (st != LUA_OK) {
    fr_push_redacted(L, rt, lua_tostring(L, -1), lua_rawlen(L, -1));
    fr_error(rt, "%s", lua_tostring(L, -1));
  }
  lua_settop(L, top);
  return st == LUA_OK ? FLOWRUN_OK : FLOWRUN_ERR;
}

int fr_error(flowrun *rt, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rt->err, sizeof rt->err, fmt, ap);
  va_end(ap);
  return FLOWRUN_ERR;
}
