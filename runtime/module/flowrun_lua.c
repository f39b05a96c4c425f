/*
** flowrun_lua.c -- the Lua module: require "flowrun" under a stock lua5.4.
**
** flowrun.new{ integrations = FILE } makes a runtime on the caller's Lua
** state. Its api_node blocks until the call ends, turning the loop meanwhile
** (README: Embedding); sessions started with rt:start() run as the
** loop turns, and what they do is kept as events, read with rt:events().
** The host's callbacks never call Lua functions: they only append events;
** but a transport (new{ transport = fn }) is a Lua function, called as each
** call is sent, whose answer (a table) is kept until the next.
*/
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "lib/base.h"
#include "lib/integration.h"
#include "lib/json.h"
#include "lib/loop.h"
#include "lib/modules.h"
#include "lib/runtime.h"
#include "lib/sandbox.h"
#include "lib/session.h"

#define RT_MT "flowrun.runtime"

typedef struct box {
  flowrun *rt;
  int events;                           /* registry: the list of events */
  int transport;                        /* registry: new{ transport }, or LUA_NOREF */
  int answer;                           /* registry: the last answer's strings, kept */
} box;

/* The runtime a method m was called on; raises in the module's terms (a
** plain luaL_check* would say "bad argument #1 to '?'"). */
static box *self_of(lua_State *L, const char *m) {
  box *b = luaL_testudata(L, 1, RT_MT);
  if (!b) luaL_error(L, "flowrun: rt:%s: call it on a runtime with a colon, rt:%s(...)", m, m);
  if (!b->rt) luaL_error(L, "flowrun: rt:%s: the runtime is closed", m);
  return b;
}
#define checkbox(L) self_of((L), method_name)

/* Argument i of method m, named what: an integer, or def when absent. */
static lua_Integer arg_int(lua_State *L, int i, const char *m, const char *what, lua_Integer def) {
  int ok;
  lua_Integer v;
  if (lua_isnoneornil(L, i)) return def;
  v = lua_tointegerx(L, i, &ok);
  if (!ok) luaL_error(L, "flowrun: rt:%s: %s must be an integer, got %s", m, what, luaL_typename(L, i));
  return v;
}

/* Argument i of method m, named what: a string (or a number, as Lua takes). */
static const char *arg_string(lua_State *L, int i, const char *m, const char *what) {
  if (lua_type(L, i) != LUA_TSTRING && lua_type(L, i) != LUA_TNUMBER)
    luaL_error(L, "flowrun: rt:%s: %s must be a string, got %s", m, what, luaL_typename(L, i));
  return lua_tostring(L, i);
}

/* ---- events ---- */

/* Pushes a new event table of the given type onto the events list and
** leaves it on the stack of the main thread. */
static lua_State *event(box *b, const char *type, const char *sid) {
  lua_State *L = flowrun_lua(b->rt);
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->events);
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, (lua_Integer)lua_rawlen(L, -3) + 1);
  lua_remove(L, -2);
  lua_pushstring(L, type);
  lua_setfield(L, -2, "type");
  if (sid) {
    lua_pushstring(L, sid);
    lua_setfield(L, -2, "session");
  }
  if (flowrun_output_seq(b->rt)) {      /* with a store */
    lua_pushinteger(L, (lua_Integer)flowrun_output_seq(b->rt));
    lua_setfield(L, -2, "seq");
  }
  return L;
}

static void on_stored(void *ud, const char *sid, long long n) {
  lua_State *L = event(ud, "stored", sid);
  lua_pushinteger(L, (lua_Integer)n);
  lua_setfield(L, -2, "n");
  lua_pop(L, 1);
}

static void set_str(lua_State *L, const char *k, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

static void on_say(void *ud, const char *sid, const char *text, size_t len) {
  lua_State *L = event(ud, "say", sid);
  lua_pushlstring(L, text, len);
  lua_setfield(L, -2, "text");
  lua_pop(L, 1);
}

/* The session waits for a message: an ask event, its prompt as text (as
** the C callback has it; a prompt said on the way, when the answer was
** there already, is a say event). */
static void on_ask(void *ud, const char *sid, const char *prompt, size_t len) {
  lua_State *L = event(ud, "ask", sid);
  if (prompt) {
    lua_pushlstring(L, prompt, len);
    lua_setfield(L, -2, "text");
  }
  lua_pop(L, 1);
}

static void on_end(void *ud, const char *sid, int how, const char *error) {
  lua_State *L = event(ud, "end", sid);
  lua_pushboolean(L, how == FLOWRUN_DONE || how == FLOWRUN_REPLAYED);
  lua_setfield(L, -2, "ok");
  if (how == FLOWRUN_PARKED || how == FLOWRUN_REPLAYED) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, how == FLOWRUN_PARKED ? "parked" : "replayed");
  }
  set_str(L, how == FLOWRUN_REPLAYED ? "text" : "error", error);
  lua_pop(L, 1);
}

/* ---- a transport in Lua ---- */

/* lua_pcall'd: 1 the request (light userdata), 2 the transport function;
** returns a table of what the answer holds as strings and numbers:
** { status, headers, body, reason, message, delay_ms }. */
static int l_answer(lua_State *L) {
  const flowrun_request *rq = lua_touserdata(L, 1);
  const char *q;
  lua_createtable(L, 0, 12);            /* the request, as the function sees it */
  lua_pushstring(L, rq->method);
  lua_setfield(L, -2, "method");
  lua_pushstring(L, rq->integration);
  lua_setfield(L, -2, "integration");
  if (rq->endpoint) {
    lua_pushstring(L, rq->endpoint);
    lua_setfield(L, -2, "endpoint");
  }
  if (rq->session) {
    lua_pushstring(L, rq->session);
    lua_setfield(L, -2, "session");
  }
  lua_pushstring(L, rq->url);
  lua_setfield(L, -2, "url");
  q = strchr(rq->target, '?');
  lua_pushlstring(L, rq->target, q ? (size_t)(q - rq->target) : strlen(rq->target));
  lua_setfield(L, -2, "path");
  lua_pushstring(L, q ? q + 1 : "");
  lua_setfield(L, -2, "query");
  q = strchr(rq->relative, '?');
  lua_pushlstring(L, rq->relative, q ? (size_t)(q - rq->relative) : strlen(rq->relative));
  lua_setfield(L, -2, "relative");
  lua_newtable(L);                      /* headers: lower-case names */
  for (int i = 0; rq->headers[i]; i++) {
    const char *h = rq->headers[i], *colon = strchr(h, ':');
    luaL_Buffer b;
    if (!colon) continue;
    luaL_buffinit(L, &b);
    for (const char *p = h; p < colon; p++) luaL_addchar(&b, (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p));
    luaL_pushresult(&b);
    for (colon++; *colon == ' '; colon++) {}
    lua_pushstring(L, colon);
    lua_rawset(L, -3);
  }
  lua_setfield(L, -2, "headers");
  if (rq->body) {
    lua_pushlstring(L, rq->body, rq->body_len);
    lua_setfield(L, -2, "body");
  }
  lua_pushinteger(L, rq->attempt);
  lua_setfield(L, -2, "attempt");
  lua_pushvalue(L, 2);
  lua_insert(L, -2);
  lua_call(L, 1, 1);
  if (!lua_istable(L, -1))
    return luaL_error(L, "the transport returned %s, not a table like { status = 200, json = {...} }",
                      luaL_typename(L, -1));
  {
    int a = lua_gettop(L), acc;
    lua_createtable(L, 0, 6);           /* what is kept */
    if (lua_getfield(L, a, "fault") != LUA_TNIL) {
      if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "the transport's fault must be a string");
      lua_setfield(L, -2, "reason");
      lua_getfield(L, a, "message");
      lua_setfield(L, -2, "message");
    } else {
      int isnum;
      lua_Integer st;
      lua_pop(L, 1);
      lua_getfield(L, a, "status");
      st = lua_tointegerx(L, -1, &isnum);
      if (!isnum) return luaL_error(L, "the transport's answer has no status (an integer) and no fault");
      lua_setfield(L, -2, "status");
      (void)st;
      lua_pushliteral(L, "");           /* the header lines, from a table or a string */
      acc = lua_gettop(L);
      if (lua_getfield(L, a, "headers") == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
          lua_pushvalue(L, acc);
          lua_pushvalue(L, -3);
          lua_pushliteral(L, ": ");
          lua_pushvalue(L, -4);
          lua_pushliteral(L, "\r\n");
          lua_concat(L, 5);
          lua_replace(L, acc);
          lua_pop(L, 1);
        }
      } else if (lua_type(L, -1) == LUA_TSTRING) {
        lua_pushvalue(L, -1);
        lua_replace(L, acc);
      }
      lua_pop(L, 1);
      if (lua_getfield(L, a, "json") != LUA_TNIL) {   /* a body as JSON */
        fr_open_json(L);
        lua_getfield(L, -1, "encode");
        lua_pushvalue(L, -3);
        lua_call(L, 1, 1);
        lua_setfield(L, acc - 1, "body");
        lua_getfield(L, a, "headers");
        if (!lua_istable(L, -1) || (lua_getfield(L, -1, "Content-Type") == LUA_TNIL
                                    && (lua_pop(L, 1), lua_getfield(L, -1, "content-type")) == LUA_TNIL)) {
          lua_pushvalue(L, acc);
          lua_pushliteral(L, "Content-Type: application/json\r\n");
          lua_concat(L, 2);
          lua_replace(L, acc);
        }
        lua_settop(L, acc);
      } else {
        lua_pop(L, 1);
        lua_getfield(L, a, "body");
        lua_setfield(L, acc - 1, "body");
      }
      lua_setfield(L, acc - 1, "headers");
    }
    lua_getfield(L, a, "delay_ms");
    lua_setfield(L, -2, "delay_ms");
  }
  return 1;
}

static int on_answer(void *ud, const flowrun_request *rq, flowrun_answer *out) {
  box *b = ud;
  lua_State *L = flowrun_lua(b->rt);
  int top = lua_gettop(L), ok;
  lua_pushcfunction(L, l_answer);
  lua_pushlightuserdata(L, (void *)rq);
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->transport);
  ok = lua_pcall(L, 2, 1, 0) == LUA_OK;
  if (!ok) {                            /* the error, kept as the message */
    lua_createtable(L, 0, 1);
    lua_insert(L, -2);
    lua_setfield(L, -2, "message");
  }
  lua_pushvalue(L, -1);
  lua_rawseti(L, LUA_REGISTRYINDEX, b->answer);   /* the strings live till the next */
  lua_getfield(L, -1, "status");
  out->status = (int)lua_tointeger(L, -1);
  lua_getfield(L, -2, "headers");
  out->headers = lua_tostring(L, -1);
  lua_getfield(L, -3, "body");
  out->body = lua_tolstring(L, -1, &out->body_len);
  lua_getfield(L, -4, "reason");
  out->reason = lua_tostring(L, -1);
  lua_getfield(L, -5, "message");
  out->message = lua_tostring(L, -1);
  lua_getfield(L, -6, "delay_ms");
  out->delay_ms = lua_tonumber(L, -1);
  lua_settop(L, top);
  return ok ? FLOWRUN_OK : FLOWRUN_ERR;
}

static void on_step(void *ud, const char *sid, const char *step) {
  lua_State *L = event(ud, "step", sid);
  lua_pushstring(L, step);
  lua_setfield(L, -2, "step");
  lua_pop(L, 1);
}

static void on_trace(void *ud, const flowrun_trace *t) {
  lua_State *L = event(ud, "trace", t->session);
  set_str(L, "integration", t->integration);
  set_str(L, "method", t->method);
  set_str(L, "url", t->url);
  set_str(L, "label", t->label);
  set_str(L, "reason", t->reason);
  set_str(L, "error", t->error);
  if (t->status) {
    lua_pushinteger(L, t->status);
    lua_setfield(L, -2, "status");
  }
  lua_pushinteger(L, t->attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushnumber(L, t->elapsed_ms);
  lua_setfield(L, -2, "elapsed_ms");
  lua_pushinteger(L, t->attempt);
  lua_setfield(L, -2, "attempt");
  lua_pushinteger(L, t->hop);
  lua_setfield(L, -2, "hop");
  lua_pushboolean(L, t->final);
  lua_setfield(L, -2, "final");
  set_str(L, "at", t->at);
  set_str(L, "step", t->step);
  set_str(L, "relative", t->relative);
  if (t->response_headers) {
    lua_pushlstring(L, t->response_headers, t->response_headers_len);
    lua_setfield(L, -2, "response_headers");
  }
  if (t->response_body) {
    lua_pushlstring(L, t->response_body, t->response_body_len);
    lua_setfield(L, -2, "response_body");
  }
  char *curl = flowrun_trace_curl(((box *)ud)->rt, t);
  set_str(L, "curl", curl);
  free(curl);
  lua_pop(L, 1);
}

static void on_log(void *ud, const char *sid, const char *level, const char *msg) {
  lua_State *L = event(ud, "log", sid);
  set_str(L, "level", level);
  set_str(L, "message", msg);
  lua_pop(L, 1);
}

/* ---- methods ---- */

static int check(lua_State *L, box *b, int rc) {
  if (rc != FLOWRUN_OK) return luaL_error(L, "%s", flowrun_errmsg(b->rt));
  return 0;
}

/* rt:load_integrations(file) */
static int m_load_integrations(lua_State *L) {
  static const char method_name[] = "load_integrations";
  box *b = checkbox(L);
  check(L, b, fr_integrations_load(b->rt, flowrun_lua(b->rt), arg_string(L, 2, method_name, "the file")));
  return 0;
}

/* rt:api_node(spec) -> label, response: blocks until the call ends. */
static int m_api_node(lua_State *L) {
  static const char method_name[] = "api_node";
  box *b = checkbox(L);
  if (flowrun_store_failed(b->rt)) return luaL_error(L, "%s", flowrun_errmsg(b->rt));
  fr_push_flow_global(b->rt, L, "api_node");
  lua_replace(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  if (flowrun_store_failed(b->rt)) return luaL_error(L, "%s", flowrun_errmsg(b->rt));
  return lua_gettop(L);
}

/* rt:start(id, flow, ...) */
static int m_start(lua_State *L) {
  static const char method_name[] = "start";
  box *b = checkbox(L);
  const char *id = arg_string(L, 2, method_name, "id (the session's)");
  const char *flow = arg_string(L, 3, method_name, "flow (a file)");
  int argc = lua_gettop(L) - 3, i;
  const char **argv = lua_newuserdatauv(L, (argc + 1) * sizeof *argv, 0);
  for (i = 0; i < argc; i++) argv[i] = arg_string(L, 4 + i, method_name, "each argument of the flow");
  check(L, b, flowrun_start(b->rt, id, flow, argc, argv));
  return 0;
}

/* rt:send(id, text): text nil closes the session's channel. */
static int m_send(lua_State *L) {
  static const char method_name[] = "send";
  box *b = checkbox(L);
  size_t len = 0;
  const char *id = arg_string(L, 2, method_name, "id");
  const char *text = lua_isnoneornil(L, 3) ? NULL : arg_string(L, 3, method_name, "text (or nil to close)");
  lua_Integer n = luaL_optinteger(L, 4, 0);  /* with a store: the message's number */
  if (text) len = lua_rawlen(L, 3);
  if (n < 0) return luaL_error(L, "send: n: expected a whole number from 1");
  check(L, b, flowrun_send_n(b->rt, id, (long long)n, text, len));
  return 0;
}

static int m_stop(lua_State *L) {
  static const char method_name[] = "stop";
  box *b = checkbox(L);
  check(L, b, flowrun_stop(b->rt, arg_string(L, 2, method_name, "id")));
  return 0;
}

/* rt:step([ms [, budget_ms]]) -> live sessions + calls in flight */
static int m_step(lua_State *L) {
  static const char method_name[] = "step";
  box *b = checkbox(L);
  int ms = (int)arg_int(L, 2, method_name, "ms (how long it may wait)", 0);
  lua_Number budget = 0;
  int n;
  if (!lua_isnoneornil(L, 3)) {
    int ok;
    budget = lua_tonumberx(L, 3, &ok);
    if (!ok || budget != budget)
      luaL_error(L, "flowrun: rt:%s: budget_ms must be a number, got %s", method_name,
                 luaL_typename(L, 3));
  }
  n = flowrun_step_budget(b->rt, ms, (double)budget);
  check(L, b, n < 0 ? n : FLOWRUN_OK);
  lua_pushinteger(L, n);
  return 1;
}

/* rt:run([ms]): turns the loop until no session is left or every one
** waits for a message; gives up after ms (default 60000). Returns true
** when it got there in time; raises when the store failed (for good). */
static int m_run(lua_State *L) {
  static const char method_name[] = "run";
  box *b = checkbox(L);
  flowrun *rt = b->rt;
  double until = fr_now() + arg_int(L, 2, method_name, "ms (how long it may take)", 60000);
  for (;;) {
    if (flowrun_store_failed(rt)) return luaL_error(L, "%s", flowrun_errmsg(rt));
    if (fr_runtime_idle(rt)) { lua_pushboolean(L, 1); return 1; }
    double left = until - fr_now();
    if (left <= 0) { lua_pushboolean(L, 0); return 1; }
    fr_step(rt, left > 100 ? 100 : (int)left + 1);
  }
}

/* rt:events() -> the events since the last call, oldest first. */
static int m_events(lua_State *L) {
  static const char method_name[] = "events";
  box *b = checkbox(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->events);
  lua_newtable(L);
  lua_rawseti(L, LUA_REGISTRYINDEX, b->events);
  return 1;
}

static int m_sessions(lua_State *L) {
  static const char method_name[] = "sessions";
  lua_pushinteger(L, flowrun_sessions(checkbox(L)->rt));
  return 1;
}

/* flowrun_pool_stats: pools[integration] = { in_flight = n, queued = n }. */
static int pool_row(void *ud, const char *integration, int in_flight, int queued) {
  lua_State *L = ud;
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, in_flight);
  lua_setfield(L, -2, "in_flight");
  lua_pushinteger(L, queued);
  lua_setfield(L, -2, "queued");
  lua_setfield(L, -2, integration);
  return 0;
}

/* rt:stats() -> { pools = { NAME = { in_flight, queued } }, store = { commits,
** seconds, le = { { le_s, count }, ... } } (store nil without one). */
static int m_stats(lua_State *L) {
  static const char method_name[] = "stats";
  box *b = checkbox(L);
  flowrun_commits cs;
  lua_createtable(L, 0, 2);
  lua_newtable(L);
  flowrun_pool_stats(b->rt, pool_row, L);
  lua_setfield(L, -2, "pools");
  if (flowrun_store_stats(b->rt, &cs) == FLOWRUN_OK) {
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, cs.commits);
    lua_setfield(L, -2, "commits");
    lua_pushnumber(L, cs.seconds);
    lua_setfield(L, -2, "seconds");
    lua_createtable(L, FLOWRUN_STORE_BUCKETS, 0);
    for (int i = 0; i < FLOWRUN_STORE_BUCKETS; i++) {
      lua_createtable(L, 2, 0);
      lua_pushnumber(L, cs.le_s[i]);
      lua_rawseti(L, -2, 1);
      lua_pushinteger(L, cs.le[i]);
      lua_rawseti(L, -2, 2);
      lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "le");
    lua_setfield(L, -2, "store");
  }
  return 1;
}

/* rt:advance(ms): a virtual clock moves ms on. */
static int m_advance(lua_State *L) {
  static const char method_name[] = "advance";
  box *b = checkbox(L);
  check(L, b, flowrun_clock_advance(b->rt, luaL_checknumber(L, 2)));
  return 0;
}

/* rt:state(id) -> the step a declarative session is at (or nil), and its
** session table itself (nil when there is no such session). */
static int m_state(lua_State *L) {
  static const char method_name[] = "state";
  box *b = checkbox(L);
  const char *id = arg_string(L, 2, method_name, "id"), *step = flowrun_session_step(b->rt, id);
  if (step) lua_pushstring(L, step);
  else lua_pushnil(L);
  fr_push_session_table(b->rt, L, id);
  return 2;
}

/* rt:clock(): the runtime's clock, ms since 1970 (virtual or the wall's). */
static int m_clock(lua_State *L) {
  static const char method_name[] = "clock";
  lua_pushnumber(L, flowrun_clock_ms(checkbox(L)->rt));
  return 1;
}

/* rt:count_lines(on): line coverage of the flows' files from now. */
static int m_count_lines(lua_State *L) {
  static const char method_name[] = "count_lines";
  box *b = checkbox(L);
  check(L, b, flowrun_count_lines(b->rt, lua_toboolean(L, 2)));
  return 0;
}

typedef struct { lua_State *L; int t; } lines_to;   /* the result table's thread and index */

static int line_run(void *ud, const char *file, int line, long long n) {
  lines_to *to = ud;
  lua_State *L = to->L;
  if (!lua_checkstack(L, 3)) return 1;
  if (lua_getfield(L, to->t, file) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, to->t, file);
  }
  lua_pushinteger(L, n);
  lua_rawseti(L, -2, line);
  lua_pop(L, 1);
  return 0;
}

/* rt:lines() -> { [file] = { [line] = runs } } since count_lines(true). */
static int m_lines(lua_State *L) {
  static const char method_name[] = "lines";
  box *b = checkbox(L);
  lines_to to;
  lua_newtable(L);
  to.L = L;
  to.t = lua_gettop(L);
  check(L, b, flowrun_lines(b->rt, line_run, &to));
  lua_settop(L, to.t);
  return 1;
}

static int m_close(lua_State *L) {
  box *b = luaL_checkudata(L, 1, RT_MT);
  if (b->rt) {
    fr_destroy(b->rt);
    b->rt = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, b->events);
    luaL_unref(L, LUA_REGISTRYINDEX, b->transport);
    luaL_unref(L, LUA_REGISTRYINDEX, b->answer);
  }
  return 0;
}

/* Reads the options of new at 1 into rt: allow (an array of library
** names), limits (name -> number), globals (name -> value, added to the
** flow globals); raises on an unknown key. */
static void options(lua_State *L, flowrun *rt) {
  static const char *const keys[] = { "integrations", "allow", "limits", "globals", "store",
                                      "transport", "virtual_clock", "replay", NULL };
  static const char *const limits[] = { "instructions", "session_memory", "memory", "output", NULL };
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    int i = 0;
    lua_pop(L, 1);
    while (keys[i] && !(lua_type(L, -1) == LUA_TSTRING && strcmp(keys[i], lua_tostring(L, -1)) == 0)) i++;
    if (!keys[i])
      luaL_error(L, "flowrun.new: unknown option '%s' (integrations, allow, limits, globals, store,"
                 " transport, virtual_clock, replay)",
                 luaL_tolstring(L, -1, NULL));
  }
  if (lua_getfield(L, 1, "allow") != LUA_TNIL) {
    if (!lua_istable(L, -1))
      luaL_error(L, "flowrun.new: allow: expected a list like { \"io\" }, got %s", luaL_typename(L, -1));
    for (lua_Integer i = 1; lua_rawgeti(L, -1, i) != LUA_TNIL; i++) {
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "flowrun.new: allow[%d]: expected a library name, got %s", (int)i,
                   luaL_typename(L, -1));
      if (flowrun_allow(rt, lua_tostring(L, -1)) != FLOWRUN_OK)
        luaL_error(L, "flowrun.new: allow: %s", flowrun_errmsg(rt));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "limits") != LUA_TNIL) {
    if (!lua_istable(L, -1))
      luaL_error(L, "flowrun.new: limits: expected a table like { instructions = 1000000 }, got %s",
                 luaL_typename(L, -1));
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      int which = 0, ok;
      while (limits[which] && !(lua_type(L, -2) == LUA_TSTRING
                                && strcmp(limits[which], lua_tostring(L, -2)) == 0)) which++;
      if (!limits[which])
        luaL_error(L, "flowrun.new: limits: unknown limit '%s' (instructions, session_memory, "
                   "memory, output)", luaL_tolstring(L, -2, NULL));
      lua_Integer v = lua_tointegerx(L, -1, &ok);
      if (!ok || v < 0)
        luaL_error(L, "flowrun.new: limits.%s: expected a count >= 0 (0: no limit)", limits[which]);
      flowrun_limit(rt, which, v);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "globals") != LUA_TNIL) {
    if (!lua_istable(L, -1))
      luaL_error(L, "flowrun.new: globals: expected a table of name = value, got %s",
                 luaL_typename(L, -1));
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      const char *name;
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "flowrun.new: globals: names must be strings, got %s", luaL_typename(L, -2));
      name = lua_tostring(L, -2);
      lua_xmove(L, flowrun_lua(rt), 1);
      if (flowrun_register_value(rt, name) != FLOWRUN_OK)
        luaL_error(L, "flowrun.new: globals.%s: %s", name, flowrun_errmsg(rt));
    }
  }
  lua_pop(L, 1);
}

/* opts.store at the top: a file name, or { path = FILE, resident = N,
** idle_ms = N, ttl_s = N, keep_ended_s = N, lease_ms = N, park = BOOL,
** node = NAME }. */
static void store(lua_State *L, flowrun *rt) {
  static const char *const keys[] = { "path", "resident", "idle_ms", "ttl_s", "keep_ended_s",
                                      "lease_ms", "park", "node", NULL };
  static const int limits[] = { 0, FLOWRUN_STORE_RESIDENT, FLOWRUN_STORE_IDLE_MS, FLOWRUN_STORE_TTL_S,
                                FLOWRUN_STORE_ENDED_S, FLOWRUN_STORE_LEASE_MS };
  int t = lua_gettop(L);
  if (lua_istable(L, t)) {
    lua_pushnil(L);
    while (lua_next(L, t)) {
      int i = 0;
      lua_pop(L, 1);
      while (keys[i] && !(lua_type(L, -1) == LUA_TSTRING && strcmp(keys[i], lua_tostring(L, -1)) == 0)) i++;
      if (!keys[i])
        luaL_error(L, "flowrun.new: store: unknown key '%s' (path, resident, idle_ms, ttl_s, "
                   "keep_ended_s, lease_ms, park, node)", luaL_tolstring(L, -1, NULL));
    }
    if (lua_getfield(L, t, "node") != LUA_TNIL) {
      if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "flowrun.new: store.node: expected a string");
      if (flowrun_store_node(rt, lua_tostring(L, -1)) != FLOWRUN_OK)
        luaL_error(L, "flowrun.new: store.node: %s", flowrun_errmsg(rt));
    }
    lua_pop(L, 1);
    if (lua_getfield(L, t, "park") != LUA_TNIL) {
      if (!lua_isboolean(L, -1)) luaL_error(L, "flowrun.new: store.park: expected a boolean");
      flowrun_store_limit(rt, FLOWRUN_STORE_PARK, lua_toboolean(L, -1));
    }
    lua_pop(L, 1);
    for (int i = 1; i < 6; i++) {
      if (lua_getfield(L, t, keys[i]) != LUA_TNIL) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
          luaL_error(L, "flowrun.new: store.%s: expected a whole number >= 0", keys[i]);
        flowrun_store_limit(rt, limits[i], (long long)lua_tointeger(L, -1));
      }
      lua_pop(L, 1);
    }
    lua_getfield(L, t, "path");
  } else
    lua_pushvalue(L, t);
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "flowrun.new: store: expected a file name or { path = FILE, resident = N, "
               "idle_ms = N, ttl_s = N, keep_ended_s = N, park = BOOL }, got %s", luaL_typename(L, -1));
  if (flowrun_open_store(rt, lua_tostring(L, -1)) != FLOWRUN_OK)
    luaL_error(L, "flowrun.new: %s", flowrun_errmsg(rt));
  lua_settop(L, t);
}

/* flowrun.new([{ integrations = FILE, allow = {...}, limits = {...},
** globals = {...} }]) -> runtime */
static int l_new(lua_State *L) {
  flowrun_callbacks cb = { .say = on_say, .ask = on_ask, .end = on_end, .trace = on_trace,
                           .log = on_log, .size = sizeof(flowrun_callbacks), .stored = on_stored,
                           .step = on_step, .trace_attempts = 1 };
  box *b;
  lua_State *main;
  lua_settop(L, 1);
  b = lua_newuserdatauv(L, sizeof *b, 0);
  b->rt = NULL;
  b->transport = LUA_NOREF;
  lua_newtable(L);
  b->events = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushboolean(L, 0);
  b->answer = luaL_ref(L, LUA_REGISTRYINDEX);
  luaL_setmetatable(L, RT_MT);
  cb.ud = b;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  main = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (!(b->rt = fr_create(main, false, &cb))) return luaL_error(L, "flowrun: out of memory");
  if (lua_istable(L, 1)) options(L, b->rt);
  if (lua_istable(L, 1) && lua_getfield(L, 1, "virtual_clock") != LUA_TNIL) {   /* true or a start */
    if (!lua_isboolean(L, -1) && !lua_isnumber(L, -1))
      return luaL_error(L, "flowrun.new: virtual_clock: expected true or a start time (ms since 1970)");
    if (lua_toboolean(L, -1)
        && flowrun_virtual_clock(b->rt, lua_isnumber(L, -1) ? lua_tonumber(L, -1) : -1) != FLOWRUN_OK)
      return luaL_error(L, "flowrun.new: %s", flowrun_errmsg(b->rt));
  }
  if (lua_istable(L, 1) && lua_getfield(L, 1, "transport") != LUA_TNIL) {
    if (!lua_isfunction(L, -1))
      return luaL_error(L, "flowrun.new: transport: expected a function(request) -> answer, got %s",
                        luaL_typename(L, -1));
    lua_pushvalue(L, -1);
    b->transport = luaL_ref(L, LUA_REGISTRYINDEX);
    flowrun_set_transport(b->rt, on_answer, b);
  }
  lua_settop(L, 2);
  if (lua_istable(L, 1) && lua_getfield(L, 1, "integrations") == LUA_TTABLE) {
    int t = lua_gettop(L);              /* a table, as a file would return */
    lua_pushnil(L);
    while (lua_next(L, t)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        return luaL_error(L, "flowrun.new: integrations: names must be strings");
      fr_integration_define(b->rt, L, lua_tostring(L, -2), -1, "flowrun.new{ integrations }");
      lua_pop(L, 1);
    }
  } else if (lua_istable(L, 1) && !lua_isnil(L, -1)) {
    const char *file;
    if (lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "flowrun.new: integrations: expected a file name or a table, got %s",
                        luaL_typename(L, -1));
    file = lua_tostring(L, -1);
    if (fr_integrations_load(b->rt, main, file) != FLOWRUN_OK)
      return luaL_error(L, "%s", flowrun_errmsg(b->rt));
  }
  if (lua_istable(L, 1) && lua_getfield(L, 1, "store") != LUA_TNIL) store(L, b->rt);
  lua_settop(L, 2);
  if (lua_istable(L, 1) && lua_getfield(L, 1, "replay") != LUA_TNIL) {   /* a store, checked */
    if (lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "flowrun.new: replay: expected a store's file name, got %s", luaL_typename(L, -1));
    if (flowrun_replay_store(b->rt, lua_tostring(L, -1)) != FLOWRUN_OK)
      return luaL_error(L, "flowrun.new: %s", flowrun_errmsg(b->rt));
  }
  lua_settop(L, 2);
  return 1;
}

static const luaL_Reg methods[] = {
  { "load_integrations", m_load_integrations },
  { "api_node",          m_api_node },
  { "start",             m_start },
  { "send",              m_send },
  { "stop",              m_stop },
  { "step",              m_step },
  { "run",               m_run },
  { "events",            m_events },
  { "sessions",          m_sessions },
  { "stats",             m_stats },
  { "clock",             m_clock },
  { "advance",           m_advance },
  { "count_lines",       m_count_lines },
  { "lines",             m_lines },
  { "state",             m_state },
  { "close",             m_close },
  { NULL, NULL }
};

FLOWRUN_API int luaopen_flowrun(lua_State *L);
FLOWRUN_API int luaopen_flowrun_test(lua_State *L);

/* require "flowrun.test": the module built into the library (Lua's
** all-in-one loader finds it here, in flowrun.so). */
int luaopen_flowrun_test(lua_State *L) {
  for (const fr_module *m = fr_modules; m->name; m++)
    if (strcmp(m->name, "flowrun.test") == 0) {
      if (luaL_loadbuffer(L, m->src, m->len, m->chunkname) != LUA_OK) return lua_error(L);
      lua_pushliteral(L, "flowrun.test");
      lua_call(L, 1, 1);
      return 1;
    }
  return luaL_error(L, "flowrun.test is not built in");
}

static int listed(void *ud, const flowrun_store_entry *e) {
  lua_State *L = ud;
  if (!lua_checkstack(L, 4)) return 1;
  lua_createtable(L, 0, 7);
  set_str(L, "id", e->id);
  set_str(L, "flow", e->flow);
  set_str(L, "state", e->state);
  set_str(L, "note", e->note);
  lua_pushinteger(L, e->messages);
  lua_setfield(L, -2, "messages");
  lua_pushinteger(L, e->journal);
  lua_setfield(L, -2, "journal");
  lua_pushinteger(L, e->active_ms);
  lua_setfield(L, -2, "active_ms");
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  return 0;
}

/* flowrun.store_list(PATH) -> the store's sessions, the most recently active
** first: { id, flow, state, messages, journal, active_ms, note }, as
** `flowrun sessions` lists them; read while a runtime runs the store too. */
static int l_store_list(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char err[600];
  lua_newtable(L);
  if (flowrun_store_list(path, listed, L, err, sizeof err) != FLOWRUN_OK)
    return luaL_error(L, "flowrun.store_list: %s", err);
  return 1;
}

int luaopen_flowrun(lua_State *L) {
  if (luaL_newmetatable(L, RT_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, m_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, m_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 3);
  lua_pushcfunction(L, l_new);
  lua_setfield(L, -2, "new");
  lua_pushcfunction(L, l_store_list);
  lua_setfield(L, -2, "store_list");
  lua_pushliteral(L, FLOWRUN_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
