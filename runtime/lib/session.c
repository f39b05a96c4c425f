/*
** session.c -- sessions: one end-user going through a flow.
**
** A session is a Lua thread running the flow's function with its own
** globals table (so concurrent sessions of one flow never share globals),
** whose metatable reaches the flow globals and then the standard library.
** A flow file is compiled once as `return function(_ENV, ...) <file> end`
** and every session calls that one function with its own _ENV.
** ask, sleep and api_node yield; the loop makes the session ready again and
** fr_run_ready() resumes it. A flow that returns a declarative definition
** (flow.define, lua/flowrun/flow.lua) goes on running it: its finished
** coroutine is started again on flow.run, so the steps wait and fail like
** any flow.
*/
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <lauxlib.h>

#include "base.h"
#include "cookies.h"
#include "inspect.h"
#include "integration.h"
#include "json.h"
#include "quota.h"
#include "response.h"
#include "runtime.h"
#include "secrets.h"
#include "session.h"
#include "store.h"

/* ---- finding the session of a thread ---- */

static void call_ended(fr_call_waiter *w, fr_call *c);

fr_session *fr_session_current(flowrun *rt, lua_State *L) {
  fr_session *s;
  if (rt->owns_L) return *(fr_session **)lua_getextraspace(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->threads_ref);
  lua_pushthread(L);
  lua_rawget(L, -2);
  s = lua_touserdata(L, -1);
  lua_pop(L, 2);
  return s;
}

bool fr_sessions_idle(const flowrun *rt) {
  if (rt->ready) return false;
  for (fr_session *s = rt->all; s; s = s->next)
    if (s->state != FR_S_ASK) return false;
  return true;
}

void fr_session_ready(fr_session *s) {
  flowrun *rt = s->rt;
  if (s->queued) return;
  s->queued = true;
  rt->nready++;
  s->ready_turn = rt->ready_turn;
  s->next_ready = NULL;
  s->prev_ready = rt->ready_tail;
  if (rt->ready_tail) rt->ready_tail->next_ready = s;
  else rt->ready = s;
  rt->ready_tail = s;
}

/* ---- loading flows ---- */

/* Reads a whole file; NULL with errno set on failure. */
static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t cap = 0, n = 0, r;
  struct stat st;
  if (!f) return NULL;
  if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {   /* fread would say EIO */
    fclose(f);
    errno = EISDIR;
    return NULL;
  }
  do {
    if (cap - n < 4096) {
      char *b = realloc(buf, cap = cap * 2 + 8192);
      if (!b) { free(buf); fclose(f); errno = ENOMEM; return NULL; }
      buf = b;
    }
    r = fread(buf + n, 1, cap - n, f);
    n += r;
  } while (r > 0);
  if (ferror(f)) { free(buf); fclose(f); errno = EIO; return NULL; }
  fclose(f);
  *len = n;
  return buf;
}

/* Compiles FILE into the session function and caches it under its path.
** Pushes the function, or nil and a message. */
static int load_flow(flowrun *rt, lua_State *L, const char *path) {
  static const char head[] = "return function(_ENV, ...) ";
  size_t len, hl, extra;
  char *src, *wrapped;
  int st;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->flows_ref);
  if (lua_getfield(L, -1, path) == LUA_TFUNCTION) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, 2);
  lua_pushfstring(L, "@%s", path);      /* first: it may raise, nothing to free yet */
  src = read_file(path, &len);
  if (!src && errno == ENOMEM) return luaL_error(L, "not enough memory");
  if (!src) {
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot open %s: %s", path, strerror(errno));
    return 2;
  }
  hl = sizeof head - 1;
  extra = src[0] == '#' ? 2 : 0;        /* a shebang line: comment it out */
  wrapped = malloc(hl + extra + len + 4);
  if (!wrapped) { free(src); return luaL_error(L, "not enough memory"); }
  memcpy(wrapped, head, hl);
  memcpy(wrapped + hl, "--", extra);
  memcpy(wrapped + hl + extra, src, len);
  memcpy(wrapped + hl + extra + len, "\nend", 4);
  free(src);
  /* first as written, for exact syntax errors; then wrapped */
  st = luaL_loadbufferx(L, wrapped + hl, extra + len, lua_tostring(L, -1), "t");
  if (st == LUA_OK) {
    lua_pop(L, 1);
    st = luaL_loadbufferx(L, wrapped, hl + extra + len + 4,
                          lua_tostring(L, -1), "t");
    if (st == LUA_OK) st = lua_pcall(L, 0, 1, 0);
  }
  free(wrapped);
  lua_remove(L, -2);
  if (st != LUA_OK) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->flows_ref);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, path);
  lua_pop(L, 1);
  return 1;
}

/* Pushes a new globals table for a session with the given id (or none). */
static void push_env(flowrun *rt, lua_State *L, const char *id) {
  lua_createtable(L, 0, 3);
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "_G");
  lua_createtable(L, 0, 1);
  if (id) {
    lua_pushstring(L, id);
    lua_setfield(L, -2, "id");
  }
  lua_setfield(L, -2, "session");
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->base_ref);
  lua_setmetatable(L, -2);
}

/* Pushes s's globals, new (its `session` table empty, `args` the nargs
** values at first), then those values: after the flow function on top,
** what the first resume of s is given. */
static void start_env(fr_session *s, lua_State *L, int first, int nargs) {
  flowrun *rt = s->rt;
  luaL_checkstack(L, nargs + 4, "too many arguments");
  push_env(rt, L, s->id);
  lua_createtable(L, nargs, 0);
  for (int i = 0; i < nargs; i++) {
    lua_pushvalue(L, first + i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "args");
  luaL_unref(L, LUA_REGISTRYINDEX, s->envref);
  lua_pushvalue(L, -1);
  s->envref = luaL_ref(L, LUA_REGISTRYINDEX);
  for (int i = 0; i < nargs; i++) lua_pushvalue(L, first + i);
}

/* ---- declarative flows ---- */

/* Is the value at idx a definition made by flow.define (lua/flowrun/flow.lua
** marks them with the metatable registered as "flowrun.flowdef")? */
static bool is_flowdef(lua_State *L, int idx) {
  bool yes;
  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return false;
  luaL_getmetatable(L, "flowrun.flowdef");
  yes = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return yes;
}

/* Is path a flow file a flow may name (run_flow, "flow:" targets)? Only
** .lua files: a flow that could compile any file would read it out
** through the syntax errors. */
static bool flow_file(flowrun *rt, const char *path) {
  size_t n = strlen(path);
  return n > 4 && strcmp(path + n - 4, ".lua") == 0 && !fr_integrations_file(rt, path);
}

/* ctx.load(path): the compiled flow file (a function of the globals), from
** the cache run_flow uses; nil and a message when it cannot be loaded. */
static int l_ctx_load(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  if (!flow_file(fr_rt(L), path)) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: a flow file is a .lua file, not the integrations file", path);
    return 2;
  }
  return load_flow(fr_rt(L), L, path);
}

static const char flow_ctx_key = 'c';  /* its address keys the flows table */

/* The session whose declarative flow runs on L, with a journal; NULL
** when there is none (no store, or a flow run_flow runs). */
static fr_session *durable_flow(lua_State *L) {
  fr_session *s = fr_session_current(fr_rt(L), L);
  return s && s->j && s->co == L ? s : NULL;
}

/* ctx.checkpoint(session, file, step, at, same): at a step that waits,
** the snapshot that replaces the journal's records so far (same: the one
** kept is this step's). true, or nil and why the session table cannot be
** stored. */
static int l_ctx_checkpoint(lua_State *L) {
  fr_session *s = durable_flow(L);
  const char *file = luaL_optstring(L, 2, "?"), *step = luaL_checkstring(L, 3);
  const char *at = luaL_optstring(L, 4, "?");
  bool same = lua_toboolean(L, 5);
  if (s && fr_dur_checkpoint(L, s->j, s->id, 1, file, step, at, same, s->jars) != 0) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ctx.resume(): replaying, the file, step and session table of the
** snapshot the journal goes on from; nothing when none. */
static int l_ctx_resume(lua_State *L) {
  fr_session *s = durable_flow(L);
  int n = s ? fr_dur_resume(L, s->j, &s->jars) : 0;
  if (n < 0) return lua_error(L);
  return n;
}

/* ctx.mismatch(message): the stored step is not in the flow now: the
** session fails, or is parked, as on any replay that does not match. */
static int l_ctx_mismatch(lua_State *L) {
  fr_session *s = durable_flow(L);
  if (s) s->j->mismatch = true;
  lua_settop(L, 1);
  return lua_error(L);
}

/* ctx.step(name): a declarative session is at step name now (for traces
** and flowrun_session_step). */
static int l_ctx_step(lua_State *L) {
  fr_session *s = fr_session_current(fr_rt(L), L);
  const char *name = luaL_checkstring(L, 1);
  if (s && s->co == L) {
    flowrun *rt = fr_rt(L);
    s->step = name;                     /* the definition holds the string */
    if (rt->cb.step) rt->cb.step(rt->cb.ud, s->id, name);
  }
  return 0;
}

/* Pushes flow.run and the runtime's context for it: { load, runtime },
** made once per runtime and kept in its flows table. */
static void push_flow_runner(flowrun *rt, lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "flowrun.flow") != LUA_TTABLE) {
    lua_pop(L, 1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    if (lua_getfield(L, -1, "flowrun.flow") != LUA_TFUNCTION)
      luaL_error(L, "module 'flowrun.flow' is not built in");
    lua_pushliteral(L, "flowrun.flow");
    lua_call(L, 1, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, "flowrun.flow");
    lua_remove(L, -2);
  }
  lua_getfield(L, -1, "run");
  lua_replace(L, -3);
  lua_pop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->flows_ref);
  if (lua_rawgetp(L, -1, &flow_ctx_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 3);
    lua_pushlightuserdata(L, rt);
    lua_pushcclosure(L, l_ctx_load, 1);
    lua_setfield(L, -2, "load");
    lua_pushlightuserdata(L, rt);
    lua_pushcclosure(L, fr_open_runtime_module, 1);
    lua_call(L, 0, 1);
    lua_setfield(L, -2, "runtime");
    lua_pushlightuserdata(L, rt);
    lua_pushcclosure(L, l_ctx_step, 1);
    lua_setfield(L, -2, "step");
    if (rt->dur) {                      /* snapshots at steps that wait */
      lua_pushlightuserdata(L, rt);
      lua_pushcclosure(L, l_ctx_checkpoint, 1);
      lua_setfield(L, -2, "checkpoint");
      lua_pushlightuserdata(L, rt);
      lua_pushcclosure(L, l_ctx_resume, 1);
      lua_setfield(L, -2, "resume");
      lua_pushlightuserdata(L, rt);
      lua_pushcclosure(L, l_ctx_mismatch, 1);
      lua_setfield(L, -2, "mismatch");
    }
    lua_pushvalue(L, -1);
    lua_rawsetp(L, -3, &flow_ctx_key);
  }
  lua_remove(L, -2);
}

/* lua_pcall'd: 1 rt; returns flow.run and its context. */
static int l_flow_runner(lua_State *L) {
  push_flow_runner(lua_touserdata(L, 1), L);
  return 2;
}

/* The session's main function returned a definition (its first result):
** makes the finished coroutine call flow.run(def, env, ctx, true) when resumed
** again, and says true; false with an error on its stack otherwise. */
static bool run_definition(fr_session *s, int nres) {
  flowrun *rt = s->rt;
  lua_State *L = rt->L, *co = s->co;
  int base = lua_gettop(co) - nres + 1;
  lua_settop(co, base);                 /* the definition */
  lua_pushcfunction(L, l_flow_runner);
  lua_pushlightuserdata(L, rt);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
    lua_xmove(L, co, 1);
    return false;
  }
  lua_pushvalue(L, -2);
  lua_xmove(L, co, 1);                  /* def, run */
  lua_insert(co, base);                 /* run, def */
  lua_rawgeti(co, LUA_REGISTRYINDEX, s->envref);
  lua_xmove(L, co, 1);                  /* run, def, env, ctx */
  lua_pop(L, 1);
  lua_pushboolean(co, 1);               /* the session's own: its steps are kept */
  s->declarative = true;
  if (s->j) s->j->chunk = s->j->seq;
  return true;
}

/* ---- starting, resuming and ending ---- */

/* lua_pcall'd: 1 the sessions table, 2 an id (light userdata). */
static int l_forget(lua_State *L) {
  lua_pushnil(L);
  lua_setfield(L, 1, lua_touserdata(L, 2));
  return 0;
}

/* Takes s out of the sessions table. The key string of a long id is made
** anew, which takes memory; without any, the table is walked to find it
** (lua_next and setting an existing key to nil allocate nothing). */
static void forget(fr_session *s) {
  lua_State *L = s->rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->rt->sessions_ref);
  lua_pushcfunction(L, l_forget);
  lua_pushvalue(L, -2);
  lua_pushlightuserdata(L, s->id);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_touserdata(L, -1) == s) {
        lua_pop(L, 1);
        lua_pushnil(L);
        lua_rawset(L, -3);
        break;
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
}

/* Empties s's thread: its <close> variables run, within its limits, as a
** resume. Returns how they went (an error: its object on the thread). */
static int close_thread(fr_session *s) {
  flowrun *rt = s->rt;
  fr_session *was = rt->running;
  fr_session *ran = fr_limits_enter(s);
  long long since = atomic_load_explicit(&rt->run_since, memory_order_relaxed);
  int st;
  rt->running = s;
  rt->run_L = s->co;
  atomic_store_explicit(&rt->run_since, (long long)fr_now() | 1, memory_order_relaxed);
  st = lua_resetthread(s->co);
  atomic_store_explicit(&rt->run_since, since, memory_order_relaxed);
  rt->running = was;
  rt->broke = 0;
  fr_limits_leave(ran);
  return st;
}

/* Frees s. evict: it leaves memory only, waiting in the store (its
** coroutine is dropped, not closed: its <close> variables have not gone out
** of scope, and a replay brings them back). */
static void free_session(fr_session *s, bool evict) {
  flowrun *rt = s->rt;
  lua_State *L = rt->L;
  if (s->call) fr_call_cancel(s->call);
  fr_timer_cancel(rt, &s->timer);
  if (s->queued) {                      /* unlink from the ready list */
    if (s->prev_ready) s->prev_ready->next_ready = s->next_ready;
    else rt->ready = s->next_ready;
    if (s->next_ready) s->next_ready->prev_ready = s->prev_ready;
    else rt->ready_tail = s->prev_ready;
    s->queued = false;
    rt->nready--;
  }
  if (s->prev) s->prev->next = s->next;
  else rt->all = s->next;
  if (s->next) s->next->prev = s->prev;
  for (fr_msg *m = s->in, *n; m; m = n) { n = m->next; free(m); }
  forget(s);
  if (!rt->owns_L) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->threads_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  if (!evict && lua_status(s->co) != LUA_OK) close_thread(s);
  fr_usage_free(&s->use);
  fr_jars_free(&s->jars);
  fr_dur_free(s->j);                    /* its rows stay in the store */
  luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
  luaL_unref(L, LUA_REGISTRYINDEX, s->envref);
  rt->nsessions--;
  free(s);
}

static void session_free(fr_session *s) {
  free_session(s, false);
}

static int by_time(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int fr_sessions_evict(flowrun *rt, long long resident, long long idle_ms) {
  double now = fr_clock(rt), cut = -1;
  int n = 0, over = resident > 0 ? rt->nsessions - (int)resident : 0;
  fr_session *s, *next;
  if (over > 0) {                       /* the least recently active go first */
    int cap = 0, k = 0;
    double *t;
    for (s = rt->all; s; s = s->next) cap++;
    if (!(t = malloc((size_t)cap * sizeof *t))) return 0;
    for (s = rt->all; s; s = s->next)
      if (s->j && s->state == FR_S_ASK && !s->in && !s->closed && !s->queued) t[k++] = s->active;
    if (k > 0) {
      int want = over + (int)(resident / 10) < k ? over + (int)(resident / 10) : k;   /* a tenth more: not every turn */
      qsort(t, (size_t)k, sizeof *t, by_time);
      cut = t[want - 1];
    }
    free(t);
  }
  for (s = rt->all; s; s = next) {
    next = s->next;
    if (s->j && s->state == FR_S_ASK && !s->in && !s->closed && !s->queued
        && (s->active <= cut || (idle_ms > 0 && now - s->active > (double)idle_ms))) {
      free_session(s, true);
      n++;
    }
  }
  return n;
}

/* lua_pcall'd: the error object at 1 as a string, through __tostring (a
** flow's own code: it runs within the failed session's limits). */
static int l_error_text(lua_State *L) {
  if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
  return luaL_error(L, "no text");
}

/* lua_pcall'd on the main thread: 1 the session, 2 how its resume ended,
** 3 its error object (moved from its thread); returns the message of the
** failed session: "file:line: message" and a traceback, secrets hidden.
** Pushes onto the main thread only: the session's thread runs no more. */
static int l_failure(lua_State *L) {
  fr_session *s = lua_touserdata(L, 1);
  flowrun *rt = s->rt;
  lua_State *co = s->co;
  int st = (int)lua_tointeger(L, 2);
  const char *msg;
  if (fr_limits_doom(s))                /* a limit ended it: say which */
    msg = lua_pushstring(L, fr_limits_doom(s));
  else if (st == LUA_ERRMEM && fr_usage_refused(&s->use) >= 0) {   /* where the allocation failed */
    lua_Debug d;
    lua_pushliteral(L, "");             /* file:line, as fr_push_where */
    for (int level = 0; lua_getstack(co, level, &d); level++) {
      lua_getinfo(co, "Sl", &d);
      if (d.currentline > 0) {
        lua_pushfstring(L, "%s:%d: ", d.short_src, d.currentline);
        break;
      }
    }
    msg = lua_pushfstring(L, "%smemory limit: %s is %I bytes", lua_tostring(L, -1),
                          fr_usage_refused(&s->use) == FLOWRUN_LIMIT_MEMORY
                          ? "all sessions together hold the most they may: memory"
                          : "the session asked for more than it may hold: session_memory",
                          (lua_Integer)rt->limit[fr_usage_refused(&s->use)]);
  }
  else if (lua_type(L, 3) == LUA_TSTRING || lua_type(L, 3) == LUA_TNUMBER)
    msg = lua_tostring(L, 3);
  else {                                /* __tostring, run with limits */
    fr_session *was = fr_limits_enter(s);
    lua_Hook hook = lua_gethook(L);
    int mask = lua_gethookmask(L), count = lua_gethookcount(L), ok;
    rt->running = s;                    /* a break and a watchdog reach it */
    rt->run_L = L;
    atomic_store_explicit(&rt->run_since, (long long)fr_now() | 1, memory_order_relaxed);
    fr_limits_watch(rt, L);
    lua_pushcfunction(L, l_error_text);
    lua_pushvalue(L, 3);
    ok = lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING;
    lua_sethook(L, hook, mask, count);
    atomic_store_explicit(&rt->run_since, 0, memory_order_relaxed);
    rt->running = NULL;
    rt->broke = 0;
    fr_limits_leave(was);
    fr_usage_free(&s->use);             /* a limit it met here is not why it failed */
    msg = ok ? lua_tostring(L, -1)
             : lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 3));
  }
  if (strstr(msg, "\nstack traceback:\n"))   /* flow.lua gave the step's own */
    lua_pushstring(L, msg);
  else
    luaL_traceback(L, co, msg, 0);
  fr_push_redacted(L, rt, lua_tostring(L, -1), lua_rawlen(L, -1));
  return 1;
}

/* An output of s to the host: at once, or with a store given after the
** commit of its turn (journal.c), as number seq. */
static void output(flowrun *rt, const char *id, long long seq, int kind, int how,
                   const char *text, size_t len) {
  if (seq) fr_dur_output(rt, id, seq, kind, how, text, len);
  else if (kind == FR_J_SAY && rt->cb.say) rt->cb.say(rt->cb.ud, id, text, len);
  else if (kind == FR_J_ASK && rt->cb.ask) rt->cb.ask(rt->cb.ud, id, text, len);
  else if (kind == FR_J_END && rt->cb.end) rt->cb.end(rt->cb.ud, id, how, text);
}

/* Tells the host that s failed (st: how its resume ended). Out of memory
** for the message, it says just that. Leaves L's stack as it was. */
static void session_failed(fr_session *s, int st, long long seq, int how) {
  flowrun *rt = s->rt;
  lua_State *L = rt->L;
  int top = lua_gettop(L);
  const char *msg = "not enough memory";
  if (lua_checkstack(L, 4)) {
    lua_pushcfunction(L, l_failure);
    lua_pushlightuserdata(L, s);
    lua_pushinteger(L, st);
    lua_xmove(s->co, L, 1);
    if (lua_pcall(L, 3, 1, 0) == LUA_OK) msg = lua_tostring(L, -1);
  }
  output(rt, s->id, seq, FR_J_END, how, msg, strlen(msg));
  if (how == FLOWRUN_PARKED) {          /* kept, with why, until it is let run again */
    fr_dur_park(rt, s->id, s->j, msg);
    s->j = NULL;
  }
  lua_settop(L, top);
}

/* A check (flowrun_replay_store) reached the end of s's journal: its end
** says what the flow does next, at which step or line. */
static void replayed(fr_session *s, long long seq) {
  lua_State *L = s->rt->L;
  const char *at = s->j->replayed_at;
  if (!s->j->replayed_at || !lua_checkstack(L, 2))
    output(s->rt, s->id, seq, FR_J_END, FLOWRUN_FAILED, "not enough memory", 17);
  else {
    lua_pushfstring(L, "%s%s%s", s->j->replayed, s->step ? " at step " : *at ? " at " : "",
                    s->step ? s->step : at);
    output(s->rt, s->id, seq, FR_J_END, FLOWRUN_REPLAYED, lua_tostring(L, -1), lua_rawlen(L, -1));
    lua_pop(L, 1);
  }
}

long long flowrun_running_ms(flowrun *rt) {
  long long since = atomic_load_explicit(&rt->run_since, memory_order_relaxed);
  return since ? (long long)fr_now() - since + 1 : 0;
}


/* lua_pcall'd: 1 the session; below on its stack the flow function and
** its new arguments (moved from its thread). */
static int l_afresh(lua_State *L) {
  fr_session *s = lua_touserdata(L, 1);
  int n = lua_gettop(L) - 2;
  if (!lua_checkstack(s->co, 2 + n)) return luaL_error(L, "continue_as_new: too many arguments");
  lua_pushvalue(L, 2);
  start_env(s, L, 3, n);
  lua_xmove(L, s->co, 2 + n);
  s->nargs = 1 + n;
  return 0;
}

/* continue_as_new(...) yielded the flow function and its new arguments
** (and, with a journal to write, where it was and the arguments' bytes):
** its thread is emptied (its <close> variables run, as a resume: what
** they do is journaled before the fresh start) and given the function
** again, with new globals. An error in a <close> variable fails it. */
static void start_afresh(fr_session *s, int nres) {
  flowrun *rt = s->rt;
  lua_State *L = rt->L;
  int top = lua_gettop(L), rec = s->restart_rec ? 2 : 0;
  int st = LUA_ERRMEM;
  s->restart = s->restart_rec = false;
  if (++s->afresh > FR_MAX_AFRESH) {    /* a loop the instruction limit would not see */
    lua_pushfstring(s->co, "continue_as_new: %d fresh starts without a wait (ask, sleep or api_node)"
                    " between them: the flow loops without end", FR_MAX_AFRESH);
  } else if (lua_checkstack(L, nres + 8)) {
    lua_pushcfunction(L, l_afresh);
    lua_pushlightuserdata(L, s);
    lua_xmove(s->co, L, nres);
    if ((st = close_thread(s)) == LUA_OK) {
      if (rec) fr_dur_restarted(L, s->j, s->id, s->jars);
      st = lua_pcall(L, nres - rec + 1, 0, 0);
      if (st != LUA_OK) lua_xmove(L, s->co, 1);   /* out of memory */
    }
  } else {
    lua_pushliteral(L, "continue_as_new: too many arguments");
    lua_xmove(L, s->co, 1);
  }
  if (st != LUA_OK) {                   /* its error on its thread */
    lua_settop(L, top);
    session_failed(s, st, s->j ? ++s->j->seq : 0, FLOWRUN_FAILED);
    if (s->j) fr_dur_end(rt, s->id, s->j);
    s->j = NULL;
    session_free(s);
    return;
  }
  fr_session_ready(s);
}

static void resume(fr_session *s) {
  int nres, st;
  long long seq;
  fr_session *was = fr_limits_enter(s);
  s->state = FR_S_RUN;
  s->active = fr_clock(s->rt);
  fr_usage_resume(&s->use);
  s->rt->running = s;
  s->rt->run_L = s->co;
  atomic_store_explicit(&s->rt->run_since, (long long)fr_now() | 1, memory_order_relaxed);
  st = lua_resume(s->co, NULL, s->nargs, &nres);
  if (st == LUA_OK && nres > 0 && is_flowdef(s->co, -nres))   /* run it */
    st = run_definition(s, nres) ? lua_resume(s->co, NULL, 4, &nres) : LUA_ERRRUN;
  s->rt->running = NULL;
  atomic_store_explicit(&s->rt->run_since, 0, memory_order_relaxed);
  if (s->rt->broke) {                   /* a break is for the session that ran */
    s->rt->broke = 0;
    if (st == LUA_YIELD) fr_limits_watch(s->rt, s->co);   /* it waits: its hook as it was */
  }
  fr_limits_leave(was);
  s->nargs = 0;
  if (st == LUA_YIELD && s->restart) {
    start_afresh(s, nres);
    return;
  }
  if (st == LUA_YIELD) {
    lua_pop(s->co, nres);
    if (s->state == FR_S_RUN) fr_session_ready(s);   /* coroutine.yield() */
    else s->afresh = 0;                 /* it waits */
    return;
  }
  if (st == LUA_OK && s->j && fr_dur_push_leftover(s->co, s->j, s->id))
    st = LUA_ERRRUN;                    /* it ends before its journal does */
  seq = s->j ? ++s->j->seq : 0;
  if (s->j && s->j->replayed)           /* a check: at the end of its journal */
    replayed(s, seq);
  else if (st == LUA_OK) output(s->rt, s->id, seq, FR_J_END, FLOWRUN_DONE, NULL, 0);
  else if (s->j && s->j->mismatch && s->rt->store_limit[FLOWRUN_STORE_PARK] && !fr_dur_checking(s->rt)) {
    session_failed(s, st, seq, FLOWRUN_PARKED);
    free_session(s, true);              /* as it was: not closed */
    return;
  } else
    session_failed(s, st, seq, FLOWRUN_FAILED);
  if (s->j) {
    fr_dur_end(s->rt, s->id, s->j);
    s->j = NULL;
  }
  session_free(s);
}

/* Resumes the sessions that were ready when it was called, in the order
** they became ready; those readied meanwhile carry this call's turn and
** wait for the next call. With a budget, each step resumes at least one,
** then stops when it is spent: the rest stay first in line. */
void fr_run_ready(flowrun *rt) {
  unsigned turn = ++rt->ready_turn;
  fr_session *s;
  for (;;) {
    if (!(s = rt->ready) || s->ready_turn == turn) return;
    /* the check may deliver calls, whose callbacks may stop any session:
    ** the head is read again after it */
    if (rt->step_resumed > 0 && fr_budget_spent(rt)) return;
    if (!(s = rt->ready) || s->ready_turn == turn) return;
    rt->step_resumed++;
    rt->nready--;
    if ((rt->ready = s->next_ready)) rt->ready->prev_ready = NULL;
    else rt->ready_tail = NULL;
    s->queued = false;
    resume(s);
  }
}

/* At the runtime's end: a session with a store leaves memory only (it
** goes on from the store), its <close> variables not run. */
void fr_sessions_free(flowrun *rt) {
  while (rt->all) free_session(rt->all, rt->all->j != NULL);
}

/* lua_pcall'd: 1 rt, 2 id (light userdata); returns its session or nil. */
static int l_find(lua_State *L) {
  flowrun *rt = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->sessions_ref);
  lua_getfield(L, -1, lua_touserdata(L, 2));
  return 1;
}

/* The session `id`, or NULL: none (FLOWRUN_NOSESSION in *st) or no memory
** to look (FLOWRUN_ERR, flowrun_errmsg says so). */
static fr_session *find_session(flowrun *rt, const char *id, int *st) {
  fr_session *s = NULL;
  lua_State *L = rt->L;
  *st = FLOWRUN_ERR;
  if (!lua_checkstack(L, 3)) {
    fr_error(rt, "out of memory");
    return NULL;
  }
  lua_pushcfunction(L, l_find);
  lua_pushlightuserdata(L, rt);
  lua_pushlightuserdata(L, (void *)id);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) fr_error(rt, "out of memory");
  else if (!(s = lua_touserdata(L, -1))) {
    fr_error(rt, "no session %s", id);
    *st = FLOWRUN_NOSESSION;
  }
  lua_pop(L, 1);
  return s;
}

/* What flowrun_start was given, and the session it makes. */
typedef struct start_args {
  flowrun *rt;
  const char *id, *flow;
  int argc;
  const char *const *argv;
  fr_session *s;
  fr_journal *j;                        /* restoring: the journal to replay */
} start_args;

/* lua_pcall'd by l_start, on its stack (1 start_args, 2 id, 3 flow, 4..
** args, the flow function): makes a->s a session. Linked to the runtime
** only by its last step, so that l_start can undo the rest. */
static int l_make(lua_State *L) {
  start_args *a = lua_touserdata(L, 1);
  flowrun *rt = a->rt;
  fr_session *s = a->s;
  int fn = 4 + a->argc, first = 4, nargs = a->argc, n;
  lua_State *co = s->co = lua_newthread(L);
  fr_limits_watch(rt, co);
  s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (rt->owns_L) *(fr_session **)lua_getextraspace(co) = s;
  else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->threads_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
    lua_pushlightuserdata(L, s);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  if (a->j && (n = fr_dur_restart_args(L, a->j, &s->jars)) >= 0) {   /* it started afresh */
    first = lua_gettop(L) - n + 1;
    nargs = n;
  }
  if (!lua_checkstack(co, 2 + nargs)) return luaL_error(L, "too many arguments");
  lua_pushvalue(L, fn);
  start_env(s, L, first, nargs);
  lua_xmove(L, co, 2 + nargs);
  s->nargs = 1 + nargs;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->sessions_ref);
  lua_pushlightuserdata(L, s);
  lua_setfield(L, -2, s->id);
  s->next = rt->all;
  if (rt->all) rt->all->prev = s;
  rt->all = s;
  rt->nsessions++;
  fr_session_ready(s);
  return 0;
}

/* lua_pcall'd body of flowrun_start: 1 its start_args. */
static int l_start(lua_State *L) {
  start_args *a = lua_touserdata(L, 1);
  flowrun *rt = a->rt;
  const char *id;
  int i;
  fr_session *s;
  luaL_checkstack(L, a->argc + 8, "too many arguments");
  id = lua_pushstring(L, a->id);
  lua_pushstring(L, a->flow);
  for (i = 0; i < a->argc; i++) lua_pushstring(L, a->argv[i]);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->sessions_ref);
  if (lua_getfield(L, -1, id) != LUA_TNIL)
    return luaL_error(L, "session %s: already running", id);
  lua_pop(L, 2);
  if (!load_flow(rt, L, lua_tostring(L, 3))) return 0;
  if (lua_isnil(L, -2)) return lua_error(L);
  s = a->s = calloc(1, sizeof *s + strlen(id) + 1);
  if (!s) return luaL_error(L, "not enough memory");
  strcpy(s->id, id);
  s->rt = rt;
  s->timer.idx = -1;
  s->waiter.wake = call_ended;
  s->waiter.id = s->id;
  s->ref = s->envref = LUA_NOREF;
  lua_pushcfunction(L, l_make);
  lua_insert(L, 1);
  if (lua_pcall(L, lua_gettop(L) - 1, 0, 0) == LUA_OK) {
    if (a->j) s->j = a->j;
    else if (rt->dur && !(s->j = fr_dur_start(rt, s->id, a->flow, a->argc, a->argv))) {
      session_free(s);
      return luaL_error(L, "not enough memory");
    }
    return 0;
  }
  if (!rt->owns_L && s->ref != LUA_NOREF) {   /* undone: nothing allocates */
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->threads_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
  luaL_unref(L, LUA_REGISTRYINDEX, s->envref);
  fr_jars_free(&s->jars);               /* a restart record's (fr_dur_restart_args) */
  free(s);
  return lua_error(L);
}

int flowrun_start(flowrun *rt, const char *id, const char *flow,
                  int argc, const char *const *argv) {
  lua_State *L = rt->L;
  int top = lua_gettop(L);
  start_args a = { rt, id, flow, argc, argv, NULL, NULL };
  if (fr_dur_checking(rt))
    return fr_error(rt, "session %s: this runtime replays a store (flowrun_replay_store): it starts no session", id ? id : "");
  if (fr_dur_shared(rt) && id && flow)  /* it runs where its partition is */
    return fr_dur_start_shared(rt, id, flow, argc, argv);
  if (!lua_checkstack(L, argc + 8)) return fr_error(rt, "too many arguments");
  lua_pushcfunction(L, l_start);
  lua_pushlightuserdata(L, &a);
  return fr_pcall(rt, L, 1, top);
}

static int restore_session(void *ud, const char *id, const char *flow, int argc,
                           const char *const *argv, fr_journal *j);
static void restore_message(void *ud, const char *id, long long n, const char *text, size_t len);

/* Queues a message for s (text NULL: its channel closes); n its number in
** the store (0: none). */
static int queue_message(fr_session *s, long long n, const char *text, size_t len) {
  flowrun *rt = s->rt;
  if (!text) s->closed = true;
  else {
    fr_msg *m;
    if (s->nin >= FR_MAX_WAITING)
      return fr_error(rt, "session %s has %d messages it has not asked for: this one is dropped",
                      s->id, FR_MAX_WAITING);
    if (!(m = malloc(sizeof *m + len + 1))) return fr_error(rt, "out of memory");
    s->nin++;
    m->next = NULL;
    m->n = n;
    m->len = len;
    memcpy(m->text, text, len);
    m->text[len] = '\0';
    if (s->in_tail) s->in_tail->next = m;
    else s->in = m;
    s->in_tail = m;
  }
  if (s->state == FR_S_ASK) fr_session_ready(s);
  return FLOWRUN_OK;
}

int flowrun_send_n(flowrun *rt, const char *id, long long n, const char *text, size_t len) {
  fr_session *s;
  int st;
  if (fr_dur_checking(rt))
    return fr_error(rt, "this runtime replays a store (flowrun_replay_store): it takes no message");
  if (!id) {                            /* every live session */
    for (s = rt->all; s; s = s->next)
      if (flowrun_send_n(rt, s->id, 0, text, len) != FLOWRUN_OK) return FLOWRUN_ERR;
    return FLOWRUN_OK;
  }
  if (fr_dur_shared(rt)) return fr_dur_send(rt, id, n, text, len);   /* to its owner */
  if (!(s = find_session(rt, id, &st)) && st == FLOWRUN_NOSESSION && rt->dur) {
    fr_restore r = { restore_session, restore_message, rt, NULL, NULL };   /* waiting in the store */
    int rc = fr_dur_restore_one(rt, &r, id);
    if (rc == FLOWRUN_ERR) return rc;
    if (rc == FR_DUR_PARKED) return fr_dur_input_parked(rt, id, n, text, len);
    if (rc == FLOWRUN_OK) s = find_session(rt, id, &st);
  }
  if (!s) {
    long long had;
    if (st == FLOWRUN_NOSESSION && rt->dur && n > 0 && (had = fr_dur_inputs(rt, id)) >= n) {
      fr_dur_ack(rt, id, n);            /* an ended session's, sent again */
      return FLOWRUN_OK;
    }
    return st;
  }
  if (!s->j) return queue_message(s, 0, text, len);
  if (n > 0 && n <= s->j->inputs) {     /* stored already: said again */
    fr_dur_ack(rt, id, n);
    return FLOWRUN_OK;
  }
  if (n > s->j->inputs + 1)
    return fr_error(rt, "session %s: message %lld comes after message %lld: %lld is missing",
                    id, n, s->j->inputs, s->j->inputs + 1);
  if (text && s->nin >= FR_MAX_WAITING) return queue_message(s, 0, text, len);   /* says why */
  if (fr_dur_input(rt, id, s->j, s->j->inputs + 1, text, len) != FLOWRUN_OK) return FLOWRUN_ERR;
  return queue_message(s, s->j->inputs, text, len);
}

int flowrun_send(flowrun *rt, const char *id, const char *text, size_t len) {
  return flowrun_send_n(rt, id, 0, text, len);
}

const char *flowrun_session_step(flowrun *rt, const char *id) {
  int st;
  fr_session *s = find_session(rt, id, &st);
  return s ? s->step : NULL;
}

void fr_push_session_table(flowrun *rt, lua_State *L, const char *id) {
  int st;
  fr_session *s = find_session(rt, id, &st);
  if (!s) {
    lua_pushnil(L);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->envref);
  lua_getfield(L, -1, "session");
  lua_remove(L, -2);
}

long long flowrun_stored(flowrun *rt, const char *id) {
  return rt->dur ? fr_dur_inputs(rt, id) : -1;
}

/* ---- restore ---- */

static int restore_session(void *ud, const char *id, const char *flow, int argc,
                           const char *const *argv, fr_journal *j) {
  flowrun *rt = ud;
  lua_State *L = rt->L;
  int top = lua_gettop(L);
  start_args a = { rt, id, flow, argc, argv, NULL, j };
  if (!lua_checkstack(L, argc + 8)) { fr_dur_free(j); return -1; }
  lua_pushcfunction(L, l_start);
  lua_pushlightuserdata(L, &a);
  if (fr_pcall(rt, L, 1, top) != FLOWRUN_OK) {
    fr_dur_free(j);
    if (rt->cb.end) rt->cb.end(rt->cb.ud, id, FLOWRUN_FAILED, rt->err);
    fr_dur_end(rt, id, NULL);           /* it would fail again at each start */
    return -1;
  }
  return 0;
}

static void restore_message(void *ud, const char *id, long long n, const char *text, size_t len) {
  flowrun *rt = ud;
  int st;
  fr_session *s = find_session(rt, id, &st);
  if (s) queue_message(s, n, text, len);
}

/* A shared store's: session id's journal when it is in memory. */
static fr_journal *journal_of(void *ud, const char *id) {
  int st;
  fr_session *s = find_session(ud, id, &st);
  return s ? s->j : NULL;
}

/* A shared store's: is no session of partition part in memory? Those
** that only wait for a message leave it (their rows hold them). */
static int part_idle(void *ud, int part) {
  flowrun *rt = ud;
  fr_session *s, *next;
  for (s = rt->all; s; s = s->next)
    if (fr_partition(s->id) == part
        && !(s->j && s->state == FR_S_ASK && !s->in && !s->closed && !s->queued))
      return 0;
  for (s = rt->all; s; s = next) {
    next = s->next;
    if (fr_partition(s->id) == part) free_session(s, true);
  }
  return 1;
}

#define RESTORER(rt) { restore_session, restore_message, (rt), journal_of, part_idle }

int fr_sessions_restore(flowrun *rt) {
  fr_restore r = RESTORER(rt);
  return fr_dur_restore(rt, &r);
}

int fr_sessions_lease(flowrun *rt) {
  fr_restore r = RESTORER(rt);
  return fr_dur_lease(rt, &r);
}

int fr_sessions_wakes(flowrun *rt) {
  fr_restore r = RESTORER(rt);
  return fr_dur_wakes(rt, &r);
}

int flowrun_stop(flowrun *rt, const char *id) {
  int st;
  fr_session *s = find_session(rt, id, &st);
  if (!s && st == FLOWRUN_NOSESSION && rt->dur) return fr_dur_drop_stored(rt, id);   /* in the store only */
  if (!s) return st;
  if (s == rt->running)
    return fr_error(rt, "session %s is running: stop it after its callback", id);
  if (s->call && s->call == rt->tracing)  /* the call goes on after the callback */
    return fr_error(rt, "session %s's call is being traced: stop it after the callback", id);
  if (s->j) {
    fr_dur_drop(rt, s->id, s->j);
    s->j = NULL;
  }
  session_free(s);
  return FLOWRUN_OK;
}

/* ---- flow globals ---- */

/* The id of s (a session's own thread runs) or, when s is NULL, of the
** session running now: a coroutine a session created runs only while it
** does. NULL outside any session. */
static const char *sid(fr_session *s) {
  if (!s) s = fr_running();
  return s ? s->id : NULL;
}

const char *flowrun_session_id(flowrun *rt, lua_State *L) {
  fr_session *s = fr_session_current(rt, L);
  if (!s && fr_running() && fr_running()->rt == rt) s = fr_running();
  return s ? s->id : NULL;
}

/* Pushes the value at idx as the end-user will see it: a string, secrets
** hidden like anywhere else flowrun writes (an end-user is no place for an
** API key either). */
static const char *user_text(flowrun *rt, lua_State *L, int idx, size_t *len) {
  const char *text = luaL_tolstring(L, idx, len);
  if (rt->nsecrets == 0) return text;
  fr_push_redacted(L, rt, text, *len);
  return lua_tolstring(L, -1, len);
}

/* say(text): one message to the end-user. */
static int l_say(lua_State *L) {
  flowrun *rt = fr_rt(L);
  size_t len;
  const char *text;
  fr_session *s = fr_session_current(rt, L);
  luaL_checkany(L, 1);
  text = user_text(rt, L, 1, &len);
  fr_limits_output(rt, L, len);
  if (!s) s = fr_running();
  if (s && s->j) {                      /* replayed: said already */
    const fr_jrec *r = fr_dur_effect(L, s->j, s->id, FR_J_SAY, NULL);
    if (r == &fr_dur_mismatch) return lua_error(L);
    if (r) return 0;
    fr_dur_record(L, rt, s->id, s->j->seq, FR_J_SAY, NULL, NULL, 0);
    fr_dur_output(rt, s->id, s->j->seq, FR_J_SAY, 0, text, len);
    return 0;
  }
  if (rt->cb.say) rt->cb.say(rt->cb.ud, sid(s), text, len);
  return 0;
}

/* Pushes the next message of s, or nil when the channel is closed. */
static int k_ask(lua_State *L, int status, lua_KContext ctx) {
  fr_session *s = (fr_session *)ctx;
  fr_msg *m = s->in;
  (void)status;
  if (s->j) {                           /* the answer goes in the journal */
    lua_pushvalue(L, -1);               /* the fingerprint (l_ask left it) */
    fr_dur_record(L, s->rt, s->id, s->j->seq, FR_J_ASK, lua_tostring(L, -1),
                  m ? m->text : NULL, m ? m->len : 0);
    lua_pop(L, 1);
    if (m && m->n) fr_dur_take_input(s->rt, s->id, m->n);
  }
  if (!m) { lua_pushnil(L); return 1; }
  lua_pushlstring(L, m->text, m->len);
  if (!(s->in = m->next)) s->in_tail = NULL;
  s->nin--;
  free(m);
  return 1;
}

/* Raises unless L is a session's own thread that may yield; returns it. */
static fr_session *waiting_session(flowrun *rt, lua_State *L, const char *fn) {
  fr_session *s = fr_session_current(rt, L);
  if (!s) {
    if (rt->in_step)
      luaL_error(L, "%s: called from a coroutine the flow created; "
                 "call it from the flow itself", fn);
    return NULL;
  }
  if (!lua_isyieldable(L))
    luaL_error(L, "%s: cannot wait here (inside a metamethod or a C "
               "function that cannot yield)", fn);
  return s;
}

/* ask([prompt]): waits for the user's next message, prompt in hand; one
** already there is taken at once, the prompt said on the way. */
static int l_ask(lua_State *L) {
  flowrun *rt = fr_rt(L);
  fr_session *s = waiting_session(rt, L, "ask");
  const char *prompt = NULL;
  size_t len = 0;
  if (!s) return luaL_error(L, "ask: no end-user here (ask works inside a session)");
  if (!lua_isnoneornil(L, 1)) prompt = user_text(rt, L, 1, &len);
  fr_limits_output(rt, L, len);
  if (s->j) {
    const fr_jrec *r;
    lua_pushlstring(L, prompt ? prompt : "", prompt ? len : 0);   /* its fingerprint */
    if ((r = fr_dur_effect(L, s->j, s->id, FR_J_ASK, lua_tostring(L, -1))) == &fr_dur_mismatch)
      return lua_error(L);
    if (r) {
      if (r->data) lua_pushlstring(L, r->data, r->len);
      else lua_pushnil(L);
      return 1;
    }
  }
  if (s->in || s->closed) {
    if (prompt && !(s->j && s->j->seq <= s->j->said))   /* a replay's, said already */
      output(rt, s->id, s->j ? s->j->seq : 0, FR_J_SAY, 0, prompt, len);
    return k_ask(L, 0, (lua_KContext)s);
  }
  s->state = FR_S_ASK;
  if (s->j) fr_dur_waiting(rt, s->id);  /* it may leave memory until its next message */
  if (!(s->j && s->j->seq <= s->j->said))
    output(rt, s->id, s->j ? s->j->seq : 0, FR_J_ASK, 0, prompt, len);
  return lua_yieldk(L, 0, (lua_KContext)s, k_ask);
}

static void wake(flowrun *rt, fr_timer *t) {
  (void)rt;
  fr_session *s = (fr_session *)((char *)t - offsetof(fr_session, timer));
  fr_session_ready(s);
}

static int k_sleep(lua_State *L, int status, lua_KContext ctx) {
  (void)L; (void)status; (void)ctx;
  return 0;
}

/* sleep(ms): suspends this session only. */
static int l_sleep(lua_State *L) {
  flowrun *rt = fr_rt(L);
  lua_Number ms = luaL_checknumber(L, 1);
  fr_session *s = waiting_session(rt, L, "sleep");
  double until = fr_clock(rt) + (ms > 0 ? ms : 0);
  if (s && s->j) {                      /* its deadline in the journal, on the wall clock */
    const fr_jrec *r = fr_dur_effect(L, s->j, s->id, FR_J_SLEEP, NULL);
    char t[32];
    if (r == &fr_dur_mismatch) return lua_error(L);
    if (r) {
      if (fr_dur_replaying(s->j)) return 0;   /* it woke: the journal goes on */
      until = fr_clock(rt) + (strtod(r->data ? r->data : "0", NULL) - fr_wall_clock(rt));
      if (fr_dur_checking(rt)) until = fr_clock(rt);   /* a check does not wait */
    } else {
      snprintf(t, sizeof t, "%.17g", fr_wall_clock(rt) + (until - fr_clock(rt)));
      fr_dur_record(L, rt, s->id, s->j->seq, FR_J_SLEEP, NULL, t, strlen(t));
    }
  }
  if (s) {
    s->timer.fire = wake;
    if (!fr_timer_arm(rt, &s->timer, until)) return luaL_error(L, "not enough memory");
    s->state = FR_S_SLEEP;
    return lua_yieldk(L, 0, 0, k_sleep);
  }
  for (double now; (now = fr_clock(rt)) < until;)
    fr_step(rt, (int)(until - now) + 1);
  return 0;
}

/* The call s waits on has ended: s goes on in the next step. */
static void call_ended(fr_call_waiter *w, fr_call *c) {
  fr_session *s = (fr_session *)((char *)w - offsetof(fr_session, waiter));
  if (s->call != c) return;             /* ended before s began to wait */
  s->call = NULL;
  fr_session_ready(s);
}

/* What a journal knows an api_node by: "integration METHOD path" as the
** spec at 1 gives them (the path before its params). */
static const char *push_call_fp(lua_State *L, fr_call *c) {
  if (lua_getfield(L, 1, "endpoint") == LUA_TSTRING) {   /* "shop.order GET" */
    lua_pushfstring(L, "%s %s", lua_tostring(L, -1), c->rq.method);
    lua_remove(L, -2);
    return lua_tostring(L, -1);
  }
  lua_pop(L, 1);
  lua_getfield(L, 1, "integration");
  lua_getfield(L, 1, "path");
  lua_pushfstring(L, "%s %s %s", lua_tostring(L, -2) ? lua_tostring(L, -2) : "?", c->rq.method,
                  lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
  lua_replace(L, -3);
  lua_pop(L, 1);
  return lua_tostring(L, -1);
}

/* cookies = true: the call takes a copy of its session's jar for its
** integration (false: out of memory), and the session keeps the jar the
** call ends with, its own or the journal's (keep_jar). */
static bool give_jar(fr_session *s, fr_call *c) {
  const char *lines;
  if (!s || !c->rq.ig->cookies || !(lines = fr_jar_get(s->jars, c->rq.ig->name))) return true;
  return (c->jar = strdup(lines)) != NULL;
}

static void keep_jar(fr_session *s, fr_call *c) {
  if (!s || !c->rq.ig->cookies || c->oom) return;
  if (!fr_jar_put(&s->jars, c->rq.ig->name, c->jar)) c->oom = true;   /* api_node raises it */
  c->jar = NULL;
}

/* The call of s has ended: its response goes in the journal, its cookies
** in the session. */
static void record_call(lua_State *L, fr_session *s, fr_call *c) {
  if (s && s->j && !c->oom) {
    fr_dur_record_call(L, s->rt, s->id, s->j->seq, push_call_fp(L, c), c);
    lua_pop(L, 1);
  }
  keep_jar(s, c);
}

int fr_api_node_result(lua_State *L, lua_KContext ctx) {
  flowrun *rt = fr_rt(L);
  record_call(L, fr_session_current(rt, L), (fr_call *)ctx);
  return fr_call_push_result(L, (fr_call *)ctx);
}

static int k_api_node(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return fr_api_node_result(L, ctx);
}

/* api_node(spec) -> label, response. A session waits for the call; Lua
** outside any session (a REPL) turns the loop until it ends. */
static int l_api_node(lua_State *L) {
  return fr_api_node_k(L, k_api_node);
}

int fr_api_node_k(lua_State *L, lua_KFunction k) {
  flowrun *rt = fr_rt(L);
  fr_session *s = waiting_session(rt, L, "api_node");
  fr_call *c;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (!(c = fr_call_new(rt))) return luaL_error(L, "not enough memory");
  fr_call_build(L, c);                  /* raises on misuse */
  lua_settop(L, 1);
  if (!give_jar(s, c)) {
    fr_call_drop(c);
    return luaL_error(L, "not enough memory");
  }
  if (rt->cb.trace) {                   /* where the node is, for its trace */
    size_t n;
    const char *at;
    luaL_where(L, 1);
    at = lua_tolstring(L, -1, &n);
    snprintf(c->at, sizeof c->at, "%.*s", (int)(n >= 2 ? n - 2 : 0), at);
    snprintf(c->step, sizeof c->step, "%s", s && s->step ? s->step : "");
    lua_settop(L, 1);
  }
  if (s && s->j) {                      /* replayed: its response from the journal */
    const fr_jrec *r = fr_dur_effect(L, s->j, s->id, FR_J_CALL, push_call_fp(L, c));
    if (r == &fr_dur_mismatch) {
      fr_call_drop(c);
      return lua_error(L);
    }
    lua_settop(L, 1);
    if (r) {
      fr_dur_replay_call(c, r);
      keep_jar(s, c);
      return fr_call_push_result(L, c);
    }
    if (c->rq.ig->idempotency_key) {    /* sent again after a crash: the same key */
      char key[64];
      fr_dur_key(rt, s->id, s->j->seq, key, sizeof key);
      if (!fr_request_add_key(&c->rq, key)) {
        fr_call_drop(c);
        return luaL_error(L, "not enough memory");
      }
    }
  }
  if (fr_call_begin(c, s ? &s->waiter : NULL)) {
    record_call(L, s, c);
    return fr_call_push_result(L, c);
  }
  if (s) {
    s->call = c;
    s->state = FR_S_CALL;
    return lua_yieldk(L, 0, (lua_KContext)c, k);
  }
  while (!fr_call_over(c))
    if (fr_step(rt, -1) == FLOWRUN_ERR && fr_dur_failed(rt))
      flowrun_interrupt(rt, NULL);      /* the store failed: the loop turns no more */
  return fr_call_push_result(L, c);
}

/* os.time(), os.clock(), os.date(fmt) and math.random(...) with a store:
** what they gave goes in the journal, and a replay gets it back. Given a
** time (os.time{...}, os.date(fmt, t)) they are the originals. */
int fr_journaled_value(lua_State *L) {
  flowrun *rt = fr_rt(L);
  int kind = (int)lua_tointeger(L, lua_upvalueindex(3)), n = lua_gettop(L);
  fr_session *s = fr_session_current(rt, L);
  const fr_jrec *r;
  char t[64];
  if (!s) s = fr_running();
  if (!s || !s->j || (kind != FR_J_RANDOM && kind != FR_J_CLOCK && n >= (kind == FR_J_TIME ? 1 : 2))) {
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
  }
  r = fr_dur_effect(L, s->j, s->id, kind == FR_J_DATE ? FR_J_TIME : kind, NULL);
  if (r == &fr_dur_mismatch) return lua_error(L);
  if (r) {
    if (!r->data || r->len < 1) return luaL_error(L, "journal of session %s: a value is missing", s->id);
    if (r->data[0] == 'i') lua_pushinteger(L, (lua_Integer)strtoll(r->data + 1, NULL, 10));
    else lua_pushnumber(L, strtod(r->data + 1, NULL));
  } else {
    if (kind == FR_J_DATE) {
      lua_pushinteger(L, (lua_Integer)(fr_wall_clock(rt) / 1000));   /* as os.time() */
    } else {
      lua_pushvalue(L, lua_upvalueindex(2));
      for (int i = 1; i <= n; i++) lua_pushvalue(L, i);
      lua_call(L, n, 1);
    }
    if (lua_isinteger(L, -1)) snprintf(t, sizeof t, "i%lld", (long long)lua_tointeger(L, -1));
    else snprintf(t, sizeof t, "f%a", (double)lua_tonumber(L, -1));
    fr_dur_record(L, rt, s->id, s->j->seq, kind == FR_J_DATE ? FR_J_TIME : kind, NULL, t, strlen(t));
  }
  if (kind != FR_J_DATE) return 1;
  lua_pushvalue(L, lua_upvalueindex(2));  /* os.date(fmt, the journaled now) */
  if (n >= 1) lua_pushvalue(L, 1);
  else lua_pushliteral(L, "%c");
  lua_pushvalue(L, -3);
  lua_call(L, 2, 1);
  return 1;
}

int fr_open_api_node(lua_State *L) {
  fr_open_response(L);
  lua_pushcclosure(L, l_api_node, 1);
  return 1;
}

/* log.info/warn/error(...): one line to the trace stream. */
static int l_log(lua_State *L) {
  flowrun *rt = fr_rt(L);
  const char *level = lua_tostring(L, lua_upvalueindex(2));
  int n = lua_gettop(L), i;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (i = 1; i <= n; i++) {
    if (i > 1) luaL_addchar(&b, ' ');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  fr_push_redacted(L, rt, lua_tostring(L, -1), lua_rawlen(L, -1));
  fr_limits_output(rt, L, lua_rawlen(L, -1));
  if (rt->cb.log)
    rt->cb.log(rt->cb.ud, sid(fr_session_current(rt, L)), level, lua_tostring(L, -1));
  return 0;
}

static int k_run_flow_done(lua_State *L, int status, lua_KContext base) {
  (void)status;
  return lua_gettop(L) - (int)base;
}

/* The other flow returned: when it returned a definition, runs it here
** (flow.run) with the same globals, at base. */
static int k_run_flow(lua_State *L, int status, lua_KContext base) {
  (void)status;
  if (lua_gettop(L) > (int)base && is_flowdef(L, (int)base + 1)) {
    lua_settop(L, (int)base + 1);
    push_flow_runner(fr_rt(L), L);      /* def, run, ctx */
    lua_rotate(L, (int)base + 1, -1);   /* run, ctx, def */
    lua_insert(L, -2);                  /* run, def, ctx */
    lua_pushvalue(L, (int)base);        /* the globals */
    lua_insert(L, -2);                  /* run, def, env, ctx */
    lua_callk(L, 3, LUA_MULTRET, base, k_run_flow_done);
  }
  return k_run_flow_done(L, LUA_OK, base);
}

/* run_flow(path, ...): runs another flow in this session's globals and
** returns its results; a relative path is taken from the directory of the
** calling flow. */
static int l_run_flow(lua_State *L) {
  flowrun *rt = fr_rt(L);
  const char *path = luaL_checkstring(L, 1);
  int nargs = lua_gettop(L) - 1, base = nargs + 3, i;
  fr_session *s = fr_session_current(rt, L);
  const char *slash;
  lua_Debug ar;
  if (path[0] != '/' && lua_getstack(L, 1, &ar) && lua_getinfo(L, "S", &ar)
      && ar.source[0] == '@' && (slash = strrchr(ar.source, '/'))) {
    lua_pushlstring(L, ar.source + 1, slash - ar.source);
    lua_pushvalue(L, 1);
    lua_concat(L, 2);
  } else
    lua_pushvalue(L, 1);
  if (!flow_file(rt, lua_tostring(L, -1)))
    return luaL_error(L, "run_flow: %s: a flow file is a .lua file, not the integrations file",
                      lua_tostring(L, -1));
  if (s) lua_rawgeti(L, LUA_REGISTRYINDEX, s->envref);  /* the globals, at base */
  else push_env(rt, L, NULL);
  if (load_flow(rt, L, lua_tostring(L, base - 1)) != 1)
    return luaL_error(L, "run_flow: %s", lua_tostring(L, -1));
  lua_pushvalue(L, base);
  for (i = 2; i <= nargs + 1; i++) lua_pushvalue(L, i);
  lua_callk(L, 1 + nargs, LUA_MULTRET, base, k_run_flow);
  return k_run_flow(L, LUA_OK, base);
}

/* continue_as_new(...): the flow starts again from its top with these
** arguments and new globals; with a store its journal starts afresh (the
** records before go), so a flow that runs for ever keeps a short one. */
static int l_continue_as_new(lua_State *L) {
  flowrun *rt = fr_rt(L);
  fr_session *s = fr_session_current(rt, L);
  int n = lua_gettop(L), level = 0, rec = 0;
  lua_Debug ar;
  if (!s && fr_running() && fr_running()->rt == rt) s = fr_running();
  if (!s) return luaL_error(L, "continue_as_new: only a session's flow can start afresh");
  if (L != s->co) return luaL_error(L, "continue_as_new: call it from the flow, not from a coroutine it made");
  if (s->declarative)
    return luaL_error(L, "continue_as_new: a declarative flow needs none (its journal starts afresh"
                      " at each step that waits)");
  if (!lua_isyieldable(L))
    return luaL_error(L, "continue_as_new: cannot start afresh here (inside a metamethod or a C "
                      "function that cannot yield)");
  while (lua_getstack(L, level + 1, &ar)) level++;
  if (!lua_getstack(L, level, &ar) || !lua_getinfo(L, "f", &ar) || !lua_isfunction(L, -1))
    return luaL_error(L, "continue_as_new: the flow's function is not found");
  lua_insert(L, 1);                     /* the flow function, then the arguments */
  if (s->j && (rec = fr_dur_restart(L, s->j, s->id, 2, n)) < 0) return lua_error(L);
  s->restart = true;
  s->restart_rec = rec > 0;
  return lua_yield(L, lua_gettop(L));
}

void fr_push_flow_primitives(flowrun *rt, lua_State *L) {
  static const char *const levels[] = { "info", "warn", "error" };
  lua_createtable(L, 0, 40);            /* sandbox.c adds the library */
  lua_pushlightuserdata(L, rt);
  fr_open_api_node(L);
  lua_setfield(L, -2, "api_node");
#define GLOBAL(name, fn) \
  (lua_pushlightuserdata(L, rt), lua_pushcclosure(L, fn, 1), \
   lua_setfield(L, -2, name))
  GLOBAL("say", l_say);
  GLOBAL("ask", l_ask);
  GLOBAL("sleep", l_sleep);
  GLOBAL("run_flow", l_run_flow);
  GLOBAL("continue_as_new", l_continue_as_new);
#undef GLOBAL
  lua_createtable(L, 0, 3);
  for (int i = 0; i < 3; i++) {
    lua_pushlightuserdata(L, rt);
    lua_pushstring(L, levels[i]);
    lua_pushcclosure(L, l_log, 2);
    lua_setfield(L, -2, levels[i]);
  }
  lua_getfield(L, -1, "info");          /* print(...) is log.info(...) */
  lua_setfield(L, -3, "print");
  lua_setfield(L, -2, "log");
  fr_open_json(L);
  lua_setfield(L, -2, "json");
}
