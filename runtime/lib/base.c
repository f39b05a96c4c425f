/*
** base.c -- what every file of the library uses: the clock, a Lua
** error's "file:line: " and the runtime's error message. It calls only
** secrets.c (an error message never shows a secret).
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "base.h"
#include "runtime.h"
#include "secrets.h"

double fr_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

double fr_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
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

/* Is the error message at the top a memory error ("[file:line: ]not
** enough memory", as Lua and flowrun raise it)? */
static bool memory_error(lua_State *L) {
  size_t len, n = sizeof "not enough memory" - 1;
  const char *s = lua_tolstring(L, -1, &len);
  return len >= n && strcmp(s + len - n, "not enough memory") == 0
         && (len == n || s[len - n - 1] == ' ');
}

/* Calls the function below nargs arguments; its error, secrets hidden,
** becomes flowrun_errmsg(); a memory error says "out of memory". The
** stack is left at top. Nothing here may raise: it runs outside any
** protection, maybe out of memory. */
int fr_pcall(flowrun *rt, lua_State *L, int nargs, int top) {
  int st = lua_pcall(L, nargs, 0, 0);
  if (st != LUA_OK) {
    bool text = lua_type(L, -1) == LUA_TSTRING;
    char *msg = NULL;
    if (st == LUA_ERRMEM || (text && memory_error(L))
        || (text && !(msg = fr_redact(rt, lua_tostring(L, -1)))))
      fr_error(rt, "out of memory");
    else if (msg) fr_error(rt, "%s", msg);
    else fr_error(rt, "(error object is a %s value)", luaL_typename(L, -1));
    free(msg);
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
