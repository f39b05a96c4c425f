/*
** quota.c -- what one session may take of the process.
**
** Every session thread carries a count hook (coroutines the flow creates
** inherit it) that looks at the session every EVERY instructions: how many
** it ran since it last waited, whether flowrun_break asked it to stop, and
** whether it holds too much memory. A session over a limit is doomed: the
** hook raises its message and re-arms itself to raise again at every
** instruction, so a pcall cannot swallow it, and the session ends as a
** failed one while the others go on (as Redis's script timeout does).
**
** Memory: the allocator of a state the runtime owns counts what the
** runtime holds, and charges what is allocated (and freed) while a session
** runs to that session. The collector frees one session's garbage while
** another runs, so the charge drifts; when it passes the limit the hook
** measures what the session really holds (its globals, every slot of its
** threads, the modules it required, and what they reach, shared tables
** aside) and dooms it only if that is over the limit. An allocation that would take
** the runtime past its limit, or a session far past its own, is refused
** (Lua's "not enough memory", after an emergency collection).
*/
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "base.h"
#include "freeze.h"
#include "quota.h"
#include "runtime.h"
#include "session.h"

#define EVERY 1000                      /* instructions between two looks */
#define VARARG 0x8000                   /* thread slots from here: varargs */

static _Thread_local fr_session *running; /* whose code runs on this thread */

void fr_limits_init(flowrun *rt) {
  rt->limit[FLOWRUN_LIMIT_INSTRUCTIONS] = 100000000;
  rt->limit[FLOWRUN_LIMIT_SESSION_MEMORY] = 64LL << 20;
  rt->limit[FLOWRUN_LIMIT_MEMORY] = 2LL << 30;
  rt->limit[FLOWRUN_LIMIT_OUTPUT] = 64LL << 20;
}

long long flowrun_limit(flowrun *rt, int which, long long value) {
  long long old;
  if (which < 0 || which >= FLOWRUN_LIMIT_COUNT) {
    fr_error(rt, "flowrun_limit: no limit %d", which);
    return FLOWRUN_ERR;
  }
  old = rt->limit[which];
  if (value >= 0) rt->limit[which] = value;
  return old;
}

fr_session *fr_limits_enter(fr_session *s) {
  fr_session *was = running;
  running = s;
  s->use.steps = 0;
  return was;
}

void fr_limits_leave(fr_session *was) {
  running = was;
}

fr_session *fr_running(void) {
  return running;
}

const char *fr_limits_doom(const fr_session *s) {
  return s->use.doom;
}

/* ---- memory ---- */

void *fr_alloc(void *ud, void *p, size_t osize, size_t nsize) {
  flowrun *rt = ud;
  fr_session *s = running && running->rt == rt ? running : NULL;
  long long delta;
  void *q;
  if (!p) osize = 0;                    /* then it says the type */
  delta = (long long)nsize - (long long)osize;
  rt->blocks.keep = rt->mem > 0 ? (size_t)rt->mem : 0;   /* blocks.c: what may wait */
  if (nsize == 0) {
    fr_blocks_resize(&rt->blocks, p, osize, 0);
    rt->mem += delta;
    if (s) s->use.mem += delta;
    return NULL;
  }
  if (delta > 0 && s) {                 /* inside a resume: an error is safe */
    long long lim = rt->limit[FLOWRUN_LIMIT_MEMORY];
    long long slim = rt->limit[FLOWRUN_LIMIT_SESSION_MEMORY];
    if (lim && rt->mem + delta > lim) {
      s->use.refused = 1 + FLOWRUN_LIMIT_MEMORY;
      s->use.recheck = true;
      return NULL;
    }
    if (slim && (delta > slim || s->use.mem + delta > slim + slim)) {
      s->use.refused = 1 + FLOWRUN_LIMIT_SESSION_MEMORY;
      s->use.recheck = true;
      return NULL;
    }
  }
  if (!(q = fr_blocks_resize(&rt->blocks, p, osize, nsize))) return NULL;
  rt->mem += delta;
  if (s) s->use.mem += delta;
  return q;
}

/* A set of pointers (open addressing): what the measure has seen. */
typedef struct pset { const void **v; size_t n, cap; } pset;

/* Adds k; false when it was there already (or out of memory). */
static bool pset_add(pset *p, const void *k) {
  size_t i;
  if (2 * (p->n + 1) > p->cap) {
    size_t cap = p->cap ? 2 * p->cap : 1024;
    const void **v = calloc(cap, sizeof *v);
    if (!v) return false;
    for (size_t j = 0; j < p->cap; j++)
      if (p->v[j]) {
        for (i = ((uintptr_t)p->v[j] >> 4) & (cap - 1); v[i]; i = (i + 1) & (cap - 1)) {}
        v[i] = p->v[j];
      }
    free(p->v);
    p->v = v;
    p->cap = cap;
  }
  for (i = ((uintptr_t)k >> 4) & (p->cap - 1); p->v[i]; i = (i + 1) & (p->cap - 1))
    if (p->v[i] == k) return false;
  p->v[i] = k;
  p->n++;
  return true;
}

/* A measure under way: what it has seen, its total, and the stack slots of
** the module caches (sandbox.c) and of the things left for later. */
typedef struct walk {
  pset seen;
  long long total;
  int mods, later;
  lua_Integer nlater;
} walk;

/* Leaves the value on top for the end of the walk. */
static void later(lua_State *L, walk *w) {
  lua_rawseti(L, w->later, ++w->nlater);
}

/* Accounts for the value on top, then pops it or, when it holds other
** values that are the session's own, leaves it with a cursor above it
** (a frame) for measure() to walk; a table's metatable comes next, and
** the modules required with it as globals (kept beside it) come later. */
static void visit(lua_State *L, walk *w) {
  for (;;) {
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING) {
      if (pset_add(&w->seen, lua_tostring(L, -1))) w->total += 24 + (long long)lua_rawlen(L, -1);
    } else if ((t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TTHREAD)
               && pset_add(&w->seen, lua_topointer(L, -1))) {
      if ((t == LUA_TTABLE && fr_frozen(L, -1)) || !lua_checkstack(L, 4)) {
        w->total += 32;                 /* shared, or too deep to follow */
      } else if (t != LUA_TTABLE) {
        w->total += t == LUA_TTHREAD ? 200 : 40;
        lua_pushinteger(L, 0);
        return;
      } else {
        w->total += 56;
        if (w->mods) {                  /* its modules: later */
          lua_pushvalue(L, -1);
          if (lua_rawget(L, w->mods) == LUA_TTABLE) later(L, w);
          else lua_pop(L, 1);
        }
        lua_pushnil(L);
        if (!lua_getmetatable(L, -2)) return;
        continue;                       /* its metatable, on top */
      }
    } else if (t == LUA_TUSERDATA && pset_add(&w->seen, lua_topointer(L, -1))) {
      w->total += 40 + (long long)lua_rawlen(L, -1);
    }
    lua_pop(L, 1);
    return;
  }
}

/* What the session holds, estimated from what its globals and threads
** reach (shared and frozen tables aside); -1 when it cannot be told. */
static long long measure(lua_State *L, fr_session *s) {
  flowrun *rt = s->rt;
  walk w = { { 0 }, 0, 0, 0, 0 };
  int base = lua_gettop(L);
  static const char *const shared[] = {
    "flowrun.flowdef", "flowrun.flowstep", "flowrun.response", NULL
  };
  if (!lua_checkstack(L, 40)) return -1;
  /* what every session shares is not its own */
  lua_pushvalue(L, LUA_REGISTRYINDEX);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->base_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->globals_ref);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  for (int i = 0; shared[i]; i++) lua_getfield(L, LUA_REGISTRYINDEX, shared[i]);
  for (int i = base + 1; i <= lua_gettop(L); i++)
    if (!lua_isnil(L, i)) pset_add(&w.seen, lua_topointer(L, i));
  lua_settop(L, base);
  fr_push_module_caches(L);
  w.mods = lua_istable(L, -1) ? base + 1 : 0;
  lua_newtable(L);                      /* what is left for later */
  w.later = base + 2;
  base += 2;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->envref);
  visit(L, &w);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
  visit(L, &w);
  lua_pushthread(L);                    /* the thread the hook runs on */
  visit(L, &w);
  for (;;) {
    int t;
    if (lua_gettop(L) == base) {        /* then what was left for later */
      if (w.nlater == 0 || w.seen.cap == 0) break;
      lua_rawgeti(L, w.later, w.nlater);
      lua_pushnil(L);
      lua_rawseti(L, w.later, w.nlater--);
      visit(L, &w);
      continue;
    }
    if (!lua_checkstack(L, 8)) { w.total = -1; break; }
    t = lua_type(L, -2);
    if (t == LUA_TTABLE) {              /* cursor: the last key */
      int kt;
      if (!lua_next(L, -2)) { lua_pop(L, 1); continue; }
      w.total += 32;
      kt = lua_type(L, -2);
      if (kt == LUA_TSTRING && pset_add(&w.seen, lua_tostring(L, -2)))
        w.total += 24 + (long long)lua_rawlen(L, -2);
      else if (kt == LUA_TTABLE || kt == LUA_TFUNCTION || kt == LUA_TTHREAD) {
        lua_pushvalue(L, -2);           /* a key that holds things: later */
        later(L, &w);
      }
      visit(L, &w);
    } else if (t == LUA_TFUNCTION) {    /* cursor: the last upvalue */
      int i = (int)lua_tointeger(L, -1) + 1;
      lua_pop(L, 1);
      lua_pushinteger(L, i);
      if (!lua_getupvalue(L, -2, i)) { lua_pop(L, 2); continue; }
      w.total += 40;
      visit(L, &w);
    } else {                            /* a thread; cursor: level << 16 | slot */
      lua_State *co = lua_tothread(L, -2);
      lua_Integer c = lua_tointeger(L, -1);
      int level = (int)(c >> 16), n = (int)(c & 0xffff);
      lua_Debug ar;
      lua_pop(L, 1);
      if (!lua_getstack(co, level, &ar) || n == 0xffff) { lua_pop(L, 1); continue; }
      if (n == 0) {                     /* the function of this level */
        lua_pushinteger(L, ((lua_Integer)level << 16) | 1);
        lua_getinfo(co, "f", &ar);
      } else if (lua_getlocal(co, &ar, n < VARARG ? n : -(n - VARARG + 1))) {
        /* locals and temporaries, then varargs (negative slots) */
        lua_pushinteger(L, ((lua_Integer)level << 16) | (n + 1));
        if (co == L) lua_insert(L, -2); /* the value above the cursor */
        else lua_xmove(co, L, 1);
        w.total += 16;
        visit(L, &w);
        continue;
      } else {
        lua_pushinteger(L, n < VARARG ? ((lua_Integer)level << 16) | VARARG
                                      : (lua_Integer)(level + 1) << 16);
        continue;
      }
      if (co != L) lua_xmove(co, L, 1);
      visit(L, &w);
    }
  }
  if (w.seen.cap == 0) w.total = -1;    /* out of memory */
  lua_settop(L, base - 2);
  free(w.seen.v);
  return w.total;
}

/* ---- the hook ---- */

static void hook(lua_State *L, lua_Debug *ar);

/* Ends s for good: raises msg at the code that runs, and at every
** instruction after it. Doomed before "file:line: " is put in front: that
** takes Lua memory, and a memory error must not save the session. */
static void doom(lua_State *L, fr_session *s, const char *fmt, ...) {
  static const char fallback[] = "a limit of the session was reached";
  char msg[300], *where;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  free(s->use.doom);
  s->use.doom = strdup(msg);
  if (!s->use.doom) s->use.doom = strdup(fallback);
  lua_sethook(L, hook, LUA_MASKCOUNT | LUA_MASKCALL, 1);
  fr_push_where(L);
  lua_pushstring(L, msg);
  lua_concat(L, 2);
  if ((where = strdup(lua_tostring(L, -1)))) {
    free(s->use.doom);
    s->use.doom = where;
  }
  lua_error(L);
}

static void check_memory(lua_State *L, fr_session *s) {
  long long slim = s->rt->limit[FLOWRUN_LIMIT_SESSION_MEMORY];
  long long held = measure(L, s);
  s->use.recheck = false;
  if (held < 0) held = s->use.mem;
  if (held > slim)
    doom(L, s, "memory limit: the session holds about %lld bytes (session_memory is %lld)",
         held, slim);
  s->use.mem = held;
  s->use.mem_check = held + slim / 8;       /* not measured again at every look */
}

/* flowrun_count_lines: one more run of the line ar is at, in the table of
** its file (a flow's own files only: "@path" sources). */
static void count_line(lua_State *L, flowrun *rt, lua_Debug *ar) {
  lua_Integer n;
  if (!lua_getinfo(L, "Sl", ar) || ar->source[0] != '@' || ar->currentline <= 0
      || !lua_checkstack(L, 4))
    return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->lines_ref);
  if (lua_getfield(L, -1, ar->source + 1) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, ar->source + 1);
  }
  n = (lua_rawgeti(L, -1, ar->currentline), lua_tointeger(L, -1));
  lua_pop(L, 1);
  lua_pushinteger(L, n + 1);
  lua_rawseti(L, -2, ar->currentline);
  lua_pop(L, 2);
}

static void hook(lua_State *L, lua_Debug *ar) {
  fr_session *s = running;
  flowrun *rt;
  long long lim;
  if (!s) return;
  rt = s->rt;
  if (ar->event == LUA_HOOKLINE) {
    if (rt->lines_ref != LUA_NOREF && !s->use.doom) count_line(L, rt, ar);
    return;
  }
  rt->run_L = L;                        /* where a break finds it */
  if (s->use.doom) {                        /* caught by a pcall: again */
    lua_sethook(L, hook, LUA_MASKCOUNT | LUA_MASKCALL, 1);
    lua_pushstring(L, s->use.doom);
    lua_error(L);
  }
  if (rt->broke) doom(L, s, "interrupted!");
  if (lua_gethookcount(L) != EVERY) {  /* a break armed it for a session gone */
    fr_limits_watch(rt, L);
    return;
  }
  s->use.steps += EVERY;
  lim = rt->limit[FLOWRUN_LIMIT_INSTRUCTIONS];
  if (lim && s->use.steps > lim)
    doom(L, s, "instruction limit: %lld instructions without waiting (a loop that never ends?)",
         lim);
  lim = rt->limit[FLOWRUN_LIMIT_SESSION_MEMORY];
  if (lim && (s->use.mem > (s->use.mem_check > lim ? s->use.mem_check : lim) || s->use.recheck))
    check_memory(L, s);
}

int flowrun_break(flowrun *rt) {
  lua_State *L = rt->run_L;
  if (!rt->running) return 0;
  rt->broke = 1;                        /* the hook ends the session that runs */
  if (L) lua_sethook(L, hook, LUA_MASKCOUNT | LUA_MASKCALL, 1);   /* now */
  return 1;
}

void fr_limits_watch(flowrun *rt, lua_State *co) {
  lua_sethook(co, hook, LUA_MASKCOUNT | (rt->lines_ref != LUA_NOREF ? LUA_MASKLINE : 0), EVERY);
}

int flowrun_count_lines(flowrun *rt, int on) {
  lua_State *L = rt->L;
  if (rt->in_step) return fr_error(rt, "flowrun_count_lines: not from a callback");
  luaL_unref(L, LUA_REGISTRYINDEX, rt->lines_ref);
  rt->lines_ref = LUA_NOREF;
  if (on) {
    if (!lua_checkstack(L, 1)) return fr_error(rt, "out of memory");
    lua_newtable(L);
    rt->lines_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  for (fr_session *s = rt->all; s; s = s->next) fr_limits_watch(rt, s->co);
  return FLOWRUN_OK;
}

int flowrun_lines(flowrun *rt, int (*fn)(void *ud, const char *file, int line, long long n),
                  void *ud) {
  lua_State *L = rt->L;
  int stop = 0;
  if (rt->lines_ref == LUA_NOREF) return FLOWRUN_OK;
  if (!lua_checkstack(L, 6)) return fr_error(rt, "out of memory");
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->lines_ref);
  lua_pushnil(L);
  while (!stop && lua_next(L, -2)) {
    lua_pushnil(L);
    while (!stop && lua_next(L, -2)) {
      stop = fn(ud, lua_tostring(L, -4), (int)lua_tointeger(L, -2), (long long)lua_tointeger(L, -1));
      lua_pop(L, 1);
    }
    if (stop) lua_pop(L, 1);
    lua_pop(L, 1);
  }
  if (stop) lua_pop(L, 1);
  lua_pop(L, 1);
  return FLOWRUN_OK;
}

void fr_limits_output(flowrun *rt, lua_State *L, size_t n) {
  fr_session *s = running;
  long long lim = rt->limit[FLOWRUN_LIMIT_OUTPUT];
  if (!s || s->rt != rt) return;
  s->use.out += (long long)n;
  if (lim && s->use.out > lim)
    doom(L, s, "output limit: the session said more than %lld bytes (say, ask, log, print)", lim);
}

void fr_usage_free(fr_usage *u) {
  free(u->doom);
  u->doom = NULL;
}

void fr_usage_resume(fr_usage *u) {
  u->refused = 0;
  u->recheck = false;
}

int fr_usage_refused(const fr_usage *u) {
  return u->refused ? u->refused - 1 : -1;
}
