/*
** runtime.c -- the runtime: made of its parts (the loop, sessions, calls,
** integrations, secrets, the sandbox and its limits) and taken apart in
** order; the entry points of flowrun.h that belong to no one part.
*/
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>
#include <lua-cjson.h>

#include "base.h"
#include "inspect.h"
#include "integration.h"
#include "json.h"
#include "modules.h"
#include "quota.h"
#include "journal.h"
#include "loop.h"
#include "runtime.h"
#include "sandbox.h"
#include "secrets.h"
#include "session.h"

/* ---- creation ---- */

/* The package.preload loader of a built-in module. */
static int l_load_module(lua_State *L) {
  const fr_module *m = lua_touserdata(L, lua_upvalueindex(1));
  if (luaL_loadbufferx(L, m->src, m->len, m->chunkname, "t") != LUA_OK)
    return lua_error(L);
  lua_pushstring(L, m->name);
  lua_call(L, 1, 1);
  return 1;
}

/* Opens what flows see beyond the standard library: `json` and the flow
** globals. Runs under lua_pcall: errors are out-of-memory only. */
static int l_setup(lua_State *L) {
  flowrun *rt = lua_touserdata(L, 1);
  if (rt->owns_L) {
    *(fr_session **)lua_getextraspace(L) = NULL;   /* threads copy it */
    luaL_openlibs(L);
  }
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, fr_open_json);
  lua_setfield(L, -2, "json");
  lua_pushcfunction(L, luaopen_cjson);
  lua_setfield(L, -2, "cjson");
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, fr_open_runtime_module, 1);
  lua_setfield(L, -2, "flowrun.runtime");
  for (const fr_module *m = fr_modules; m->name; m++) {
    lua_pushlightuserdata(L, (void *)m);
    lua_pushcclosure(L, l_load_module, 1);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
  lua_newtable(L);
  rt->sessions_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  rt->flows_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  rt->threads_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  fr_sandbox_open(rt, L);
  return 0;
}

#define FR_GC_STEPSIZE 9               /* log2 of the bytes a collector step pays for */

flowrun *fr_create(lua_State *L, bool owns, const flowrun_callbacks *cb) {
  static int curl_ready;
  flowrun *rt = calloc(1, sizeof *rt);
  if (!rt) return NULL;
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) goto fail;
    curl_ready = 1;
  }
  rt->epfd = -1;
  rt->vclock = -1;
  rt->store_limit[FLOWRUN_STORE_ENDED_S] = 7 * 86400;
  rt->store_limit[FLOWRUN_STORE_LEASE_MS] = 10000;
  rt->owns_L = owns;
  rt->sessions_ref = rt->flows_ref = rt->base_ref = LUA_NOREF;
  rt->threads_ref = rt->globals_ref = rt->modules_ref = rt->trusted_ref = LUA_NOREF;
  rt->lines_ref = LUA_NOREF;
  if (cb) {                              /* what the host's size says it has */
    size_t n = cb->size ? cb->size : offsetof(flowrun_callbacks, size);
    memcpy(&rt->cb, cb, n < sizeof rt->cb ? n : sizeof rt->cb);
  }
  rt->cb.size = sizeof rt->cb;
  rt->on_ready = fr_run_ready;
  rt->on_done = fr_call_done;
  rt->on_settle = fr_calls_settle;
  if (!fr_loop_init(rt)) goto fail;
  fr_limits_init(rt);
  if (!L) {
    if (!(L = lua_newstate(fr_alloc, rt))) goto fail;
    /* the collector's steps a sixteenth of Lua's default (8 KB of
    ** allocation paid for by each, 512 bytes here): as much collecting,
    ** in pieces short enough for a frame (README: A frame budget) */
    lua_gc(L, LUA_GCINC, 0, 0, FR_GC_STEPSIZE);
  }
  rt->L = L;
  lua_pushcfunction(L, l_setup);
  lua_pushlightuserdata(L, rt);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    goto fail;
  }
  return rt;
fail:
  fr_destroy(rt);
  return NULL;
}

void fr_destroy(flowrun *rt) {
  if (fr_dur_store_fd(rt) >= 0) flowrun_watch(rt, fr_dur_store_fd(rt), NULL, NULL);
  fr_dur_close(rt);                     /* the last turn's writes committed */
  if (rt->sweep) {
    fr_timer_cancel(rt, rt->sweep);
    free(rt->sweep);
  }
  if (rt->lease) {
    fr_timer_cancel(rt, rt->lease);
    free(rt->lease);
  }
  free(rt->store_node);
  fr_sessions_free(rt);
  fr_calls_settle(rt);
  fr_calls_free(rt);
  if (rt->L) {
    luaL_unref(rt->L, LUA_REGISTRYINDEX, rt->sessions_ref);
    luaL_unref(rt->L, LUA_REGISTRYINDEX, rt->flows_ref);
    luaL_unref(rt->L, LUA_REGISTRYINDEX, rt->base_ref);
    luaL_unref(rt->L, LUA_REGISTRYINDEX, rt->threads_ref);
    luaL_unref(rt->L, LUA_REGISTRYINDEX, rt->globals_ref);
    luaL_unref(rt->L, LUA_REGISTRYINDEX, rt->modules_ref);
    luaL_unref(rt->L, LUA_REGISTRYINDEX, rt->trusted_ref);
    luaL_unref(rt->L, LUA_REGISTRYINDEX, rt->lines_ref);
    if (rt->owns_L) lua_close(rt->L);
  }
  fr_blocks_free(&rt->blocks);
  fr_loop_free(rt);
  fr_integrations_free(rt);
  fr_secrets_free(rt);
  free(rt);
}

/* ---- the public API ---- */

flowrun *flowrun_new(const flowrun_callbacks *cb) {
  return fr_create(NULL, true, cb);
}

void flowrun_free(flowrun *rt) {
  if (rt) fr_destroy(rt);
}

const char *flowrun_errmsg(const flowrun *rt) {
  return rt->err;
}

lua_State *flowrun_lua(flowrun *rt) {
  return rt->L;
}

int flowrun_step_budget(flowrun *rt, int timeout_ms, double budget_ms) {
  int n;
  if (rt->in_step) return fr_error(rt, "flowrun_step: called from a callback");
  if (rt->dur && fr_dur_failed(rt)) return fr_dur_commit(rt);
  rt->budget_ms = budget_ms > 0 ? budget_ms : 0;
  n = fr_step(rt, timeout_ms);
  rt->budget_ms = 0;
  return n;
}

int flowrun_ready(const flowrun *rt) {
  return rt->nready;
}

int flowrun_step(flowrun *rt, int timeout_ms) {
  return flowrun_step_budget(rt, timeout_ms, 0);
}

/* ---- durable sessions ---- */

/* A turn with a store ends: its writes committed, then sessions that wait
** may leave memory (a cap passed; idle ones looked for once a second). */
/* A session silent too long (FLOWRUN_STORE_TTL_S): its channel closes. */
static int close_silent(void *ud, const char *id) {
  flowrun_send((flowrun *)ud, id, NULL, 0);
  return 0;
}

/* Once a second while idle, TTL or ENDED_S is set: sessions idle too
** long leave memory, the channels of those silent too long close, the rows
** of sessions ended long ago go. */
static void sweep_tick(flowrun *rt, fr_timer *t) {
  long long idle = rt->store_limit[FLOWRUN_STORE_IDLE_MS];
  long long ttl = rt->store_limit[FLOWRUN_STORE_TTL_S];
  long long ended = rt->store_limit[FLOWRUN_STORE_ENDED_S];
  if (idle <= 0 && ttl <= 0 && ended <= 0) return;
  fr_timer_arm(rt, t, fr_clock(rt) + 1000);
  if (rt->in_step && idle > 0) fr_sessions_evict(rt, 0, idle);
  if (rt->in_step && ttl > 0)
    fr_dur_silent(rt, (long long)fr_wall_clock(rt) - ttl * 1000, close_silent, rt);
  if (rt->in_step && ended > 0) fr_dur_purge(rt, (long long)fr_wall_clock(rt) - ended * 1000);
}

/* A shared store's heartbeat, a third of the lease apart: done at the
** turn's end (fr_sessions_lease), outside its transaction. */
static void lease_tick(flowrun *rt, fr_timer *t) {
  long long ms = rt->store_limit[FLOWRUN_STORE_LEASE_MS];
  rt->lease_due = true;
  fr_timer_arm(rt, t, fr_clock(rt) + (double)(ms > 0 ? ms : 10000) / 3);
}

/* The store's descriptor is readable: wakes came (taken at the turn's end). */
static void store_readable(void *ud, int fd) {
  (void)ud;
  (void)fd;
}

static int turn_end(flowrun *rt, bool force) {
  long long cap = rt->store_limit[FLOWRUN_STORE_RESIDENT];
  if (fr_dur_shared(rt)) {              /* wakes before the commit: their outputs go with it */
    if (fr_sessions_wakes(rt) != FLOWRUN_OK) return fr_dur_commit(rt);
    if (rt->lease_due) {
      rt->lease_due = false;
      if (fr_sessions_lease(rt) != FLOWRUN_OK) return fr_dur_commit(rt);
    }
  }
  if ((force || fr_dur_due(rt)) && fr_dur_commit(rt) != FLOWRUN_OK) return FLOWRUN_ERR;
  if (cap > 0 && rt->nsessions > cap)
    fr_sessions_evict(rt, cap, rt->store_limit[FLOWRUN_STORE_IDLE_MS]);
  return FLOWRUN_OK;
}

long long flowrun_store_limit(flowrun *rt, int which, long long value) {
  long long was;
  if (which < 0 || which >= FLOWRUN_STORE_COUNT) return -1;
  was = rt->store_limit[which];
  if (value >= 0 && !fr_dur_checking(rt)) rt->store_limit[which] = value;   /* a replay keeps 0s */
  if (rt->sweep && rt->sweep->idx < 0 && value > 0
      && (which == FLOWRUN_STORE_IDLE_MS || which == FLOWRUN_STORE_TTL_S
          || which == FLOWRUN_STORE_ENDED_S))
    fr_timer_arm(rt, rt->sweep, fr_clock(rt) + 1000);
  return was;
}

/* lua_pcall'd: 1 rt. os.time, os.clock, os.date and math.random journaled. */
static int l_journal_values(lua_State *L) {
  flowrun *rt = lua_touserdata(L, 1);
  fr_sandbox_wrap(rt, L, "os", "time", fr_journaled_value, FR_J_TIME);
  fr_sandbox_wrap(rt, L, "os", "clock", fr_journaled_value, FR_J_CLOCK);
  fr_sandbox_wrap(rt, L, "os", "date", fr_journaled_value, FR_J_DATE);
  fr_sandbox_wrap(rt, L, "math", "random", fr_journaled_value, FR_J_RANDOM);
  return 0;
}

static int open_store(flowrun *rt, const char *path, bool check) {
  lua_State *L = rt->L;
  if (!path) return fr_error(rt, "%s: no path", check ? "flowrun_replay_store" : "flowrun_open_store");
  if (fr_dur_open(rt, path, check) != FLOWRUN_OK) return FLOWRUN_ERR;
  if (check)                            /* every session in memory, none leaves, none parks */
    for (int i = 0; i < FLOWRUN_STORE_COUNT; i++) rt->store_limit[i] = 0;
  if (!(rt->sweep = calloc(1, sizeof *rt->sweep))) {
    fr_dur_close(rt);
    return fr_error(rt, "out of memory");
  }
  rt->sweep->idx = -1;
  rt->sweep->fire = sweep_tick;
  sweep_tick(rt, rt->sweep);
  rt->on_turn = turn_end;               /* the turns' writes, one transaction */
  rt->turn_open = fr_dur_open_txn;
  lua_pushcfunction(L, l_journal_values);
  lua_pushlightuserdata(L, rt);
  if (fr_dur_shared(rt)) {               /* the heartbeat; wakes watched */
    if (!(rt->lease = calloc(1, sizeof *rt->lease))) {
      fr_dur_close(rt);
      return fr_error(rt, "out of memory");
    }
    rt->lease->idx = -1;
    rt->lease->fire = lease_tick;
    lease_tick(rt, rt->lease);
    rt->lease_due = false;
    flowrun_watch(rt, fr_dur_store_fd(rt), store_readable, rt);
  }
  if (fr_pcall(rt, L, 1, lua_gettop(L) - 2) != FLOWRUN_OK
      || fr_sessions_restore(rt) != FLOWRUN_OK) {
    char err[sizeof rt->err];
    memcpy(err, rt->err, sizeof err);
    fr_sessions_free(rt);
    fr_dur_close(rt);
    if (rt->sweep) {
      fr_timer_cancel(rt, rt->sweep);
      free(rt->sweep);
      rt->sweep = NULL;
    }
    if (rt->lease) {
      fr_timer_cancel(rt, rt->lease);
      free(rt->lease);
      rt->lease = NULL;
    }
    rt->on_turn = NULL;
    rt->turn_open = NULL;
    return fr_error(rt, "%s", err);
  }
  return FLOWRUN_OK;
}

int flowrun_store_node(flowrun *rt, const char *name) {
  char *n;
  if (rt->dur) return fr_error(rt, "flowrun_store_node: before flowrun_open_store");
  if (!name || !*name || strlen(name) > 200)
    return fr_error(rt, "flowrun_store_node: a name of 1 to 200 bytes");
  if (!(n = strdup(name))) return fr_error(rt, "out of memory");
  free(rt->store_node);
  rt->store_node = n;
  return FLOWRUN_OK;
}

int flowrun_open_store(flowrun *rt, const char *path) {
  return open_store(rt, path, false);
}

int flowrun_replay_store(flowrun *rt, const char *path) {
  return open_store(rt, path, true);
}

int flowrun_set_transport(flowrun *rt, flowrun_answer_fn answer, void *ud) {
  if (rt->in_step) return fr_error(rt, "flowrun_set_transport: not from a callback");
  rt->answer = answer;
  rt->answer_ud = ud;
  return FLOWRUN_OK;
}

/* os.time(), os.clock() and os.date(fmt) of now on a virtual clock
** (upvalues: rt, the original, its FR_J_* kind); with other arguments the
** original. os.clock() is the virtual seconds since the clock was made. */
static int l_virtual_value(lua_State *L) {
  flowrun *rt = fr_rt(L);
  int kind = (int)lua_tointeger(L, lua_upvalueindex(3)), n = lua_gettop(L);
  lua_Integer now = (lua_Integer)(fr_wall_clock(rt) / 1000);
  if (kind == FR_J_CLOCK) {
    lua_pushnumber(L, (rt->vclock - rt->vstart) / 1000);
    return 1;
  }
  if (kind == FR_J_TIME && n == 0) {
    lua_pushinteger(L, now);
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_insert(L, 1);
  if (kind == FR_J_DATE && n < 2) {
    if (n == 0) lua_pushliteral(L, "%c");
    lua_pushinteger(L, now);
    n = 2;
  }
  lua_call(L, n, LUA_MULTRET);
  return lua_gettop(L);
}

/* lua_pcall'd: 1 rt. os.time, os.clock and os.date on the virtual clock. */
static int l_virtual_values(lua_State *L) {
  flowrun *rt = lua_touserdata(L, 1);
  fr_sandbox_wrap(rt, L, "os", "time", l_virtual_value, FR_J_TIME);
  fr_sandbox_wrap(rt, L, "os", "clock", l_virtual_value, FR_J_CLOCK);
  fr_sandbox_wrap(rt, L, "os", "date", l_virtual_value, FR_J_DATE);
  return 0;
}

int flowrun_virtual_clock(flowrun *rt, double start_ms) {
  lua_State *L = rt->L;
  if (rt->vclock >= 0) return FLOWRUN_OK;
  if (rt->nsessions || rt->ncalls)
    return fr_error(rt, "flowrun_virtual_clock: before any session starts");
  if (rt->dur) return fr_error(rt, "flowrun_virtual_clock: before flowrun_open_store");
  lua_pushcfunction(L, l_virtual_values);
  lua_pushlightuserdata(L, rt);
  if (fr_pcall(rt, L, 1, lua_gettop(L) - 2) != FLOWRUN_OK) return FLOWRUN_ERR;
  rt->vclock = rt->vstart = fr_now();
  rt->vwall = (start_ms >= 0 ? start_ms : (double)(long long)(fr_wall_ms() / 1000) * 1000) - rt->vclock;
  return FLOWRUN_OK;
}

int flowrun_clock_advance(flowrun *rt, double ms) {
  if (rt->vclock < 0) return fr_error(rt, "flowrun_clock_advance: the clock is not virtual");
  if (ms > 0) rt->vclock += ms;
  return FLOWRUN_OK;
}

double flowrun_clock_ms(flowrun *rt) {
  return fr_wall_clock(rt);
}

long long flowrun_output_seq(const flowrun *rt) {
  return rt->out_seq;
}

int flowrun_quiet(const flowrun *rt) {
  return rt->ncalls == 0 && !rt->ready && !(rt->nheap && rt->heap[0]->at <= fr_clock(rt));
}

bool fr_runtime_idle(const flowrun *rt) {
  int sweep = rt->sweep && rt->sweep->idx >= 0;   /* not work: a store's once-a-second look */
  return rt->ncalls == 0 && rt->nheap == sweep && fr_sessions_idle(rt);
}

int flowrun_sessions(const flowrun *rt) {
  return rt->nsessions;
}

/* ---- for hosts that run Lua of their own (the REPL) ---- */

/* lua_pcall'd: 1 rt, 2 true to forget the flows, false for globals. */
static int l_globals(lua_State *L) {
  flowrun *rt = lua_touserdata(L, 1);
  if (lua_toboolean(L, 2)) {            /* the flows cached by path go */
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->flows_ref);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pop(L, 1);
      if (lua_type(L, -1) == LUA_TSTRING) {
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, -4);
      }
    }
    return 0;
  }
  lua_newtable(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->trusted_ref);
  lua_setmetatable(L, -2);
  return 1;
}

static int run_protected(flowrun *rt, bool forget, int nres) {
  lua_State *L = rt->L;
  if (!lua_checkstack(L, 4)) return fr_error(rt, "out of memory");
  lua_pushcfunction(L, l_globals);
  lua_pushlightuserdata(L, rt);
  lua_pushboolean(L, forget);
  if (lua_pcall(L, 2, nres, 0) != LUA_OK) {
    lua_pop(L, 1);
    return fr_error(rt, "out of memory");
  }
  return FLOWRUN_OK;
}

int flowrun_push_globals(flowrun *rt) {
  return run_protected(rt, false, 1);
}

int flowrun_forget_flows(flowrun *rt) {
  return run_protected(rt, true, 0);
}

char *flowrun_redact(flowrun *rt, const char *s) {
  return fr_redact(rt, s);
}
