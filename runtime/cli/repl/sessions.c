/*
** sessions.c -- sessions and the `host` table of `flowrun repl`.
**
** The runtime reports to the REPL through the callbacks here: what a
** session says, asks and logs goes above the prompt, with "[ID] " when the
** session is in the background, and the last trace is kept for .last.
** lua/flowrun/repl.lua asks the REPL for what needs C through the `host`
** table: output, a line of input, starting, foregrounding and stopping
** sessions, sleeping with the loop running. The terminal, Ctrl-C and the
** loop itself are repl.c's.
*/
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>

#include <lua.h>
#include <lauxlib.h>

#include "flowrun.h"
#include "repl.h"

/* ---- sessions ---- */

static rsession *find(repl *r, const char *id) {
  rsession *s;
  for (s = r->sessions; s && strcmp(s->id, id) != 0; s = s->next) {}
  return s;
}

static void forget(repl *r, rsession *s) {
  rsession **p;
  for (p = &r->sessions; *p && *p != s; p = &(*p)->next) {}
  if (*p) *p = s->next;
  if (r->fg == s) r->fg = NULL;
  free(s);
}

/* "[ID] " for a session in the background, "" otherwise. */
static const char *tag(repl *r, const char *id, char *buf, size_t size) {
  rsession *s = id ? find(r, id) : NULL;
  if (!id || (s && s == r->fg)) return "";
  snprintf(buf, size, "[%s] ", id);
  return buf;
}

static void on_say(void *ud, const char *id, const char *text, size_t len) {
  repl *r = ud;
  char buf[80];
  repl_put_line(r, stdout, tag(r, id, buf, sizeof buf), NULL, text, len);
}

static void on_ask(void *ud, const char *id, const char *prompt, size_t len) {
  repl *r = ud;
  rsession *s = find(r, id);
  char buf[160];
  if (prompt) on_say(ud, id, prompt, len);
  if (!s) return;
  s->asking = true;
  repl_wake();
  if (s != r->fg && r->tty) {
    snprintf(buf, sizeof buf, "[%s] waits for an answer: .fg %s", id, id);
    repl_put_str(r, stdout, DIM, buf);
  }
}

static void on_end(void *ud, const char *id, int how, const char *error) {
  repl *r = ud;
  rsession *s = find(r, id);
  char buf[80];
  repl_flow_stopped();                  /* a flow that heeded Ctrl-C, maybe */
  if (how == FLOWRUN_FAILED)
    repl_put_line(r, stderr, tag(r, id, buf, sizeof buf), RED, error, strlen(error));
  else if (s && s != r->fg) {
    snprintf(buf, sizeof buf, "[%s] done", id);
    repl_put_str(r, stdout, DIM, buf);
  }
  if (!s) return;
  repl_wake();
  s->ended = true;
  s->how = how;
  if (s != r->fg) forget(r, s);        /* the foreground loop forgets its own */
}

static void on_log(void *ud, const char *id, const char *level, const char *msg) {
  repl *r = ud;
  char buf[80], prefix[160];
  snprintf(prefix, sizeof prefix, "%s%s: ", tag(r, id, buf, sizeof buf), level);
  repl_put_line(r, stderr, prefix, NULL, msg, strlen(msg));
}

static void last_free(last_call *l) {
  free(l->integration);
  free(l->method);
  free(l->url);
  free(l->label);
  free(l->reason);
  free(l->error);
  free(l->body);
  free(l->curl);
  for (int i = 0; l->headers && l->headers[i]; i++) free(l->headers[i]);
  free(l->headers);
  memset(l, 0, sizeof *l);
}

static char *copy_str(const char *s) {
  return s ? strdup(s) : NULL;
}

static void keep_last(repl *r, const flowrun_trace *t);

/* .last keeps the call's last record; --trace prints each request's. */
static void on_trace(void *ud, const flowrun_trace *t) {
  repl *r = ud;
  if (t->final) keep_last(r, t);
  if (r->trace) {
    char line[4096];
    int k = snprintf(line, sizeof line, "trace session=%s integration=%s method=%s url=%s label=%s",
                     t->session ? t->session : "-", t->integration, t->method, t->url, t->label);
    if (t->status && k < (int)sizeof line)
      k += snprintf(line + k, sizeof line - k, " status=%d", t->status);
    if (k < (int)sizeof line)
      k += snprintf(line + k, sizeof line - k, " elapsed_ms=%.0f attempts=%d", t->elapsed_ms, t->attempts);
    if (t->reason && k < (int)sizeof line)
      k += snprintf(line + k, sizeof line - k, " reason=%s", t->reason);
    if (!t->final && k < (int)sizeof line)
      snprintf(line + k, sizeof line - k, " attempt=%d hop=%d final=0", t->attempt, t->hop);
    repl_put_str(r, stderr, DIM, line);
  }
}

static void keep_last(repl *r, const flowrun_trace *t) {
  last_call *l = &r->last;
  int n = 0;
  last_free(l);
  l->integration = copy_str(t->integration);
  l->method = copy_str(t->method);
  l->url = copy_str(t->url);
  l->label = copy_str(t->label);
  l->reason = copy_str(t->reason);
  l->error = copy_str(t->error);
  l->body = copy_str(t->body);
  l->curl = flowrun_trace_curl(r->rt, t);
  l->status = t->status;
  l->attempts = t->attempts;
  l->elapsed_ms = t->elapsed_ms;
  while (t->headers && t->headers[n]) n++;
  if ((l->headers = calloc(n + 1, sizeof *l->headers)))
    for (int i = 0; i < n; i++) l->headers[i] = strdup(t->headers[i]);
}

/* The runtime's callbacks, reporting to r. */
flowrun_callbacks repl_callbacks(repl *r) {
  flowrun_callbacks cb = { .say = on_say, .ask = on_ask, .end = on_end, .trace = on_trace, .log = on_log,
                           .ud = r, .size = sizeof(flowrun_callbacks), .trace_attempts = 1 };
  return cb;
}

/* Frees the sessions and the last call that r still holds. */
void repl_host_free(repl *r) {
  while (r->sessions) forget(r, r->sessions);
  last_free(&r->last);
}

/* ---- what Lua may ask of the REPL (the `host` table) ---- */

#define REPL_OF(L) ((repl *)lua_touserdata((L), lua_upvalueindex(1)))

/* lineno() -> how many lines were taken from the input so far (the REPL's
** and a flow's answers alike): a script's errors name its own lines. */
static int l_lineno(lua_State *L) {
  lua_pushinteger(L, REPL_OF(L)->lineno);
  return 1;
}

/* write(text [, "err"]): output, secrets hidden, above the prompt. */
static int l_write(lua_State *L) {
  repl *r = REPL_OF(L);
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  FILE *f = lua_isstring(L, 2) && lua_tostring(L, 2)[0] == 'e' ? stderr : stdout;
  char *shown = repl_redact(r, s, len);
  if (!shown) return luaL_error(L, "out of memory");
  repl_out_begin(r);
  if (f == stderr) fflush(stdout);
  fputs(shown, f);
  repl_out_end(r);
  free(shown);
  return 0;
}

/* redact(s) -> s with every secret as "***": the printer calls it before
** it escapes or cuts a string, which would hide a secret from write().
** A secret holds no NUL, so the pieces between NULs are redacted apart
** and a binary string keeps every byte. */
static int l_redact(lua_State *L) {
  repl *r = REPL_OF(L);
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len), *end = s + len;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (;;) {
    size_t n = strnlen(s, (size_t)(end - s));
    char *shown = repl_redact(r, s, n);
    if (!shown) return luaL_error(L, "out of memory");
    luaL_addstring(&b, shown);
    free(shown);
    if ((s += n) == end) break;
    luaL_addchar(&b, '\0');
    s++;
  }
  luaL_pushresult(&b);
  return 1;
}

/* read_line(prompt) -> line, nil at the end of input, false on Ctrl-C
** (the hook raises "interrupted!" as soon as Lua runs again). */
static int l_read_line(lua_State *L) {
  repl *r = REPL_OF(L);
  const char *prompt = luaL_optstring(L, 1, "");
  char *line;
  int got = repl_wait_line(r, r->tty ? prompt : "", &line);
  if (got == GOT_LINE) {
    lua_pushstring(L, line);
    free(line);
  } else if (got == GOT_EOF)
    lua_pushnil(L);
  else
    lua_pushboolean(L, 0);
  return 1;
}

/* start(flow, args, background) -> id | nil, message: a new session of
** flow, read again from its file. */
static int l_start(lua_State *L) {
  repl *r = REPL_OF(L);
  const char *flow = luaL_checkstring(L, 1);
  int n, i;
  const char **argv;
  char id[24];
  rsession *s;
  luaL_checktype(L, 2, LUA_TTABLE);
  n = (int)lua_rawlen(L, 2);
  argv = lua_newuserdatauv(L, (n + 1) * sizeof *argv, 0);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, 2, i + 1);
    argv[i] = luaL_checkstring(L, -1);
    lua_pop(L, 1);                      /* the table keeps the string */
  }
  snprintf(id, sizeof id, "%d", ++r->next_id);
  if (!(s = calloc(1, sizeof *s + strlen(id) + 1))) return luaL_error(L, "out of memory");
  strcpy(s->id, id);
  s->next = r->sessions;
  r->sessions = s;
  flowrun_forget_flows(r->rt);
  if (flowrun_start(r->rt, id, flow, n, argv) != FLOWRUN_OK) {
    forget(r, s);
    r->next_id--;
    lua_pushnil(L);
    lua_pushstring(L, flowrun_errmsg(r->rt));
    return 2;
  }
  lua_pushstring(L, id);
  return 1;
}

/* foreground(id) -> "done" | "error" | "interrupted" | nil, message:
** runs the loop until session id ends; the person at the terminal is its
** end-user (a closed input closes its channel), Ctrl-C stops it. */
static int l_foreground(lua_State *L) {
  repl *r = REPL_OF(L);
  const char *id = luaL_checkstring(L, 1);
  const char *prompt = luaL_optstring(L, 2, "");
  rsession *s = find(r, id);
  const char *how = "interrupted";
  if (!s) {
    lua_pushnil(L);
    lua_pushfstring(L, "no session %s (.sessions lists them)", id);
    return 2;
  }
  r->fg = s;
  r->answering = true;                  /* a password or a code is no history */
  for (;;) {
    char *line;
    if (s->ended) {
      how = s->how == FLOWRUN_DONE ? "done" : "error";
      break;
    }
    if (repl_interrupted()) {
      repl_consume_interrupt(r);
      repl_cancel_editing(r);
      flowrun_stop(r->rt, s->id);
      break;
    }
    if (!s->asking) {
      repl_turn(r, false, NULL);
    } else if ((line = repl_pop_line(r))) {
      s->asking = false;
      flowrun_send(r->rt, s->id, line, strlen(line));
      free(line);
    } else if (r->ctrl_d || r->in.eof) {  /* the end-user's channel closes */
      r->ctrl_d = false;
      s->asking = false;
      flowrun_send(r->rt, s->id, NULL, 0);
    } else
      repl_turn(r, true, r->tty ? prompt : "");
  }
  r->answering = false;
  forget(r, s);
  lua_pushstring(L, how);
  return 1;
}

/* stop(id) -> true, or nil and a message */
static int l_stop(lua_State *L) {
  repl *r = REPL_OF(L);
  rsession *s = find(r, luaL_checkstring(L, 1));
  if (!s || flowrun_stop(r->rt, s->id) != FLOWRUN_OK) {
    lua_pushnil(L);
    lua_pushfstring(L, "no session %s (.sessions lists them)", lua_tostring(L, 1));
    return 2;
  }
  forget(r, s);
  lua_pushboolean(L, 1);
  return 1;
}

/* sessions() -> { { id =, asking = }, ... }, oldest first */
static int l_sessions(lua_State *L) {
  repl *r = REPL_OF(L);
  int n = 0;
  lua_newtable(L);
  for (rsession *s = r->sessions; s; s = s->next) n++;
  for (rsession *s = r->sessions; s; s = s->next) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, s->id);
    lua_setfield(L, -2, "id");
    lua_pushboolean(L, s->asking);
    lua_setfield(L, -2, "asking");
    lua_rawseti(L, -2, n--);
  }
  return 1;
}

/* sleep(ms) -> true, or false on Ctrl-C: the loop runs meanwhile. */
static int l_sleep(lua_State *L) {
  repl *r = REPL_OF(L);
  lua_Number ms = luaL_checknumber(L, 1);
  struct timespec ts;
  double until, now;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  until = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6 + (ms > 0 ? ms : 0);
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
    if (now >= until || repl_interrupted()) break;
    flowrun_step_budget(r->rt, (int)(until - now) + 1, CLI_SLICE_MS);
  }
  lua_pushboolean(L, !repl_interrupted());
  return 1;
}

static void set_field(lua_State *L, const char *k, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

/* last() -> the last call (as its trace saw it), or nil */
static int l_last(lua_State *L) {
  last_call *l = &REPL_OF(L)->last;
  if (!l->method) return 0;
  lua_createtable(L, 0, 12);
  set_field(L, "integration", l->integration);
  set_field(L, "method", l->method);
  set_field(L, "url", l->url);
  set_field(L, "label", l->label);
  set_field(L, "reason", l->reason);
  set_field(L, "error", l->error);
  set_field(L, "body", l->body);
  set_field(L, "curl", l->curl);
  if (l->status) {
    lua_pushinteger(L, l->status);
    lua_setfield(L, -2, "status");
  }
  lua_pushinteger(L, l->attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushnumber(L, l->elapsed_ms);
  lua_setfield(L, -2, "elapsed_ms");
  lua_newtable(L);
  for (int i = 0; l->headers && l->headers[i]; i++) {
    lua_pushstring(L, l->headers[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "headers");
  return 1;
}

/* trace([on]) -> whether calls are traced (on stderr) */
static int l_trace(lua_State *L) {
  repl *r = REPL_OF(L);
  if (!lua_isnone(L, 1)) r->trace = lua_toboolean(L, 1);
  lua_pushboolean(L, r->trace);
  return 1;
}

/* width() -> the columns of the terminal (80 without one) */
static int l_width(lua_State *L) {
  struct winsize ws;
  (void)REPL_OF(L);
  lua_pushinteger(L, ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80);
  return 1;
}

/* dir(path) -> { { name =, dir = bool }, ... } of the entries of the
** directory path (not . and ..), or nil when it cannot be read: for
** completing the file names of .run and .load. */
static int l_dir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  DIR *d;
  struct dirent *e;
  lua_Integer n = 0;
  (void)REPL_OF(L);
  if (!(d = opendir(path))) return 0;
  lua_newtable(L);
  while ((e = readdir(d))) {
    struct stat st;
    char *full;
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    lua_createtable(L, 0, 2);
    lua_pushstring(L, e->d_name);
    lua_setfield(L, -2, "name");
    full = malloc(strlen(path) + strlen(e->d_name) + 2);
    if (full) {
      sprintf(full, "%s/%s", path, e->d_name);
      lua_pushboolean(L, stat(full, &st) == 0 && S_ISDIR(st.st_mode));
      lua_setfield(L, -2, "dir");
      free(full);
    }
    lua_rawseti(L, -2, ++n);
  }
  closedir(d);
  return 1;
}

static const luaL_Reg host_funcs[] = {
  { "dir",        l_dir },
  { "write",      l_write },
  { "lineno",     l_lineno },
  { "redact",     l_redact },
  { "read_line",  l_read_line },
  { "start",      l_start },
  { "foreground", l_foreground },
  { "stop",       l_stop },
  { "sessions",   l_sessions },
  { "sleep",      l_sleep },
  { "last",       l_last },
  { "trace",      l_trace },
  { "width",      l_width },
  { NULL, NULL }
};

/* Pushes the `host` table, its functions bound to r. */
void repl_push_host(lua_State *L, repl *r) {
  lua_newtable(L);
  lua_pushlightuserdata(L, r);
  luaL_setfuncs(L, host_funcs, 1);
}
