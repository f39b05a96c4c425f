/*
** jsonl.c -- `flowrun host FLOW.lua`: many end-users over JSON lines
** (README: flowrun host).
**
** A chat server or a game pipes its users' messages in, one JSON object a
** line, and reads what the sessions say back, one JSON object a line:
**
**   in:  {"session":"u1","text":"hi"}   starts u1 (text is its args[1]), or
**                                       answers u1's ask (queued until it asks)
**        {"session":"u1","close":true}  closes u1's channel: its asks return nil
**   out: {"session":"u1","say":"..."}   {"session":"u1","ask":"..."}
**        {"session":"u1","end":"done"}  {"session":"u1","end":"error","error":"..."}
**        {"error":"line 3: ...","line":3}   a malformed line, skipped
**
** With --store PATH (README: Durable sessions) the sessions live in the
** store: output lines carry "seq" (a replay after a crash may give one
** again: drop the seq already seen), an input line may carry "n" (the
** session's line number, 1 for its start) and is acknowledged with
** {"session":"u1","stored":n} once stored; a line sent again with an n
** already stored is acknowledged again and not taken twice. At the end of
** input nothing closes: calls in flight finish, and the sessions wait in
** the store for the next run.
**
** stdin is read through the runtime's loop (flowrun_watch), so a slow
** writer never stalls the sessions, and no session waits for another. At
** the end of input every channel closes and the host runs until the last
** session ends. Exit: 0, 1 when a session raised, 2 a configuration error
** (or a store it cannot open), 3 when the store failed while it ran (a full
** disk: nothing after the last commit was acknowledged).
*/
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#include "common.h"
#include "flowrun.h"

#define MAX_LINE (1 << 20)              /* longer lines are refused, not kept */

typedef struct host {
  flowrun *rt;
  const char *flow;
  cli_opts opts;
  bool failed;
  int decode_ref;                       /* json.decode */
  long lineno;
  cli_input in;                         /* stdin */
  cli_store_opts st;                    /* --store PATH and its limits */
  bool ended;                           /* input ended: each channel closes at its next wait */
  bool untracked;                       /* a waiting session not tracked (out of memory) */
  int waiting_ref;                      /* { [id] = true } of the sessions waiting in ask */
} host;

/* ---- who waits in ask ---- */

/* lua_pcall'd: 1 host, 2 id (light), 3 true or nil. The table is made at
** its first use. */
static int l_waiting(lua_State *L) {
  host *h = lua_touserdata(L, 1);
  if (h->waiting_ref == LUA_NOREF) {
    lua_newtable(L);
    h->waiting_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->waiting_ref);
  lua_pushstring(L, lua_touserdata(L, 2));
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  return 0;
}

/* Marks session id as waiting in ask for its next line, or not. */
static void set_waiting(host *h, const char *id, bool on) {
  lua_State *L = flowrun_lua(h->rt);
  int top = lua_gettop(L);
  if (h->st.path || (!on && h->waiting_ref == LUA_NOREF)) return;   /* a store keeps them waiting */
  if (lua_checkstack(L, 5)) {
    lua_pushcfunction(L, l_waiting);
    lua_pushlightuserdata(L, h);
    lua_pushlightuserdata(L, (void *)id);
    if (on) lua_pushboolean(L, 1);
    else lua_pushnil(L);
    if (lua_pcall(L, 3, 0, 0) == LUA_OK) on = false;
  }
  if (on) h->untracked = true;          /* at the end of input all close at once */
  lua_settop(L, top);
}

/* lua_pcall'd: 1 host. Closes the channel of every session waiting in ask. */
static int l_close_waiting(lua_State *L) {
  host *h = lua_touserdata(L, 1);
  if (h->waiting_ref == LUA_NOREF) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->waiting_ref);
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    lua_pop(L, 1);
    flowrun_send(h->rt, lua_tostring(L, -1), NULL, 0);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, 2);                   /* clearing a field while traversing is allowed */
  }
  return 0;
}

/* ---- out ---- */

/* ,"seq":n with a store */
static void out_seq(host *h) {
  long long seq = h->rt ? flowrun_output_seq(h->rt) : 0;
  if (seq) printf(",\"seq\":%lld", seq);
}

static void out_event(host *h, const char *id, const char *key, const char *text, size_t len) {
  fputs("{\"session\":", stdout);
  cli_json_str(stdout, id, strlen(id));
  printf(",\"%s\":", key);
  cli_json_str(stdout, text ? text : "", text ? len : 0);
  out_seq(h);
  fputs("}\n", stdout);
}

static void on_say(void *ud, const char *id, const char *text, size_t len) {
  out_event(ud, id, "say", text, len);
}

/* After the end of input a session that waits for a line gets nil. */
static void on_ask(void *ud, const char *id, const char *prompt, size_t len) {
  host *h = ud;
  out_event(h, id, "ask", prompt, len);
  if (h->ended && !h->st.path) flowrun_send(h->rt, id, NULL, 0);
  else set_waiting(h, id, true);
}

static void on_end(void *ud, const char *id, int how, const char *error) {
  host *h = ud;
  set_waiting(h, id, false);
  fputs("{\"session\":", stdout);
  cli_json_str(stdout, id, strlen(id));
  if (how == FLOWRUN_DONE) fputs(",\"end\":\"done\"", stdout);
  else {
    h->failed = true;
    fputs(how == FLOWRUN_PARKED ? ",\"end\":\"parked\",\"error\":" : ",\"end\":\"error\",\"error\":",
          stdout);
    cli_json_str(stdout, error, strlen(error));
  }
  out_seq(h);
  fputs("}\n", stdout);
}

/* With a store: the session's line n is stored (1: its start). */
static void out_stored(const char *id, long long n) {
  fputs("{\"session\":", stdout);
  cli_json_str(stdout, id, strlen(id));
  printf(",\"stored\":%lld}\n", n);
}

static void on_stored(void *ud, const char *id, long long n) {
  (void)ud;
  out_stored(id, n + 1);
}

static void on_flush(void *ud) {
  (void)ud;
  fflush(stdout);
}

/* "[ID] level: message" on stderr; the id comes from stdin and the
** message may hold a server's text: both escaped for the terminal. */
static void on_log(void *ud, const char *id, const char *level, const char *msg) {
  (void)ud;
  fputc('[', stderr);
  cli_put_text(stderr, id ? id : "-", strlen(id ? id : "-"));
  fprintf(stderr, "] %s: ", level);
  cli_put_text(stderr, msg, strlen(msg));
  fputc('\n', stderr);
}

static void on_trace(void *ud, const flowrun_trace *t) {
  host *h = ud;
  cli_trace(h->opts.trace, h->opts.trace_json, t);
}

/* A line that was skipped, and why. */
static void bad_line(host *h, const char *fmt, ...) {
  char msg[600];
  int n = snprintf(msg, sizeof msg, "line %ld: ", h->lineno);
  va_list ap;
  if (flowrun_store_failed(h->rt)) return;   /* not taken, not malformed: the host exits 3 */
  va_start(ap, fmt);
  vsnprintf(msg + n, sizeof msg - n, fmt, ap);
  va_end(ap);
  fputs("{\"error\":", stdout);
  cli_json_str(stdout, msg, strlen(msg));
  printf(",\"line\":%ld}\n", h->lineno);
}

/* ---- in ---- */

/* lua_pcall'd: 1 host, 2 decode, 3 line. Checks the object; pushes the
** session id and the text (nil for close), or raises a message. */
static int l_parse(lua_State *L) {
  const char *id = NULL;
  int has_text = 0, has_close = 0;
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)  /* json.decode(line) */
    return luaL_error(L, "not JSON: %s", lua_tostring(L, -1));
  if (!lua_istable(L, -1)) return luaL_error(L, "expected a JSON object");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (!k) return luaL_error(L, "expected a JSON object");
    if (strlen(k) != lua_rawlen(L, -2)) return luaL_error(L, "a key with a NUL byte");
    if (strcmp(k, "session") == 0) {
      if (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) == 0
          || strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
        return luaL_error(L, "\"session\": expected a non-empty string without NUL");
      if (!cli_utf8_valid(lua_tostring(L, -1), lua_rawlen(L, -1)))   /* they would print alike */
        return luaL_error(L, "\"session\": not valid UTF-8");
    } else if (strcmp(k, "text") == 0) {
      if (lua_type(L, -1) != LUA_TSTRING || strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
        return luaL_error(L, "\"text\": expected a string without NUL");
      has_text = 1;
    } else if (strcmp(k, "close") == 0) {
      if (!lua_isboolean(L, -1) || !lua_toboolean(L, -1))
        return luaL_error(L, "\"close\": expected true");
      has_close = 1;
    } else if (strcmp(k, "n") == 0) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
        return luaL_error(L, "\"n\": expected a whole number from 1");
    } else
      return luaL_error(L, "unknown key \"%s\" (expected session, text, close or n)", k);
    lua_pop(L, 1);
  }
  lua_getfield(L, -1, "session");
  if (!(id = lua_tostring(L, -1))) return luaL_error(L, "\"session\" is missing");
  if (has_text == has_close)
    return luaL_error(L, "expected one of \"text\" or \"close\"");
  lua_getfield(L, -2, "text");
  lua_getfield(L, -3, "n");
  return 3;
}

static void handle_line(host *h, const char *line, size_t len) {
  lua_State *L = flowrun_lua(h->rt);
  int top = lua_gettop(L);
  const char *id, *text;
  size_t tlen;
  long long n;
  int rc = FLOWRUN_OK;
  h->lineno++;
  if (len == 0) return;                 /* blank lines are no messages */
  lua_pushcfunction(L, l_parse);
  lua_pushlightuserdata(L, h);
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->decode_ref);
  lua_pushlstring(L, line, len);
  if (lua_pcall(L, 3, 3, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    bad_line(h, "%s", msg ? msg : "?");
    lua_settop(L, top);
    return;
  }
  id = lua_tostring(L, -3);
  text = lua_tolstring(L, -2, &tlen);
  n = lua_tointeger(L, -1);             /* 0: none */
  if (n && !h->st.path) {
    bad_line(h, "\"n\" numbers lines for a store: run with --store PATH");
  } else if (n == 1 && flowrun_stored(h->rt, id) >= 0) {
    out_stored(id, 1);                  /* started already: said again */
  } else if (n == 1 && !text) {
    bad_line(h, "line 1 of a session starts it: \"text\", not \"close\"");
  } else if (n == 1 || (n == 0 && text
                        && (rc = flowrun_send(h->rt, id, text, tlen)) == FLOWRUN_NOSESSION)) {
    const char *argv[1] = { text };     /* new */
    if (flowrun_start(h->rt, id, h->flow, 1, argv) != FLOWRUN_OK) {
      h->failed = true;
      on_end(h, id, FLOWRUN_FAILED, flowrun_errmsg(h->rt));
    }
  } else if (n > 1) {                   /* the library counts the lines after the start */
    long long had = flowrun_stored(h->rt, id);
    if (had >= 0 && n - 1 > had + 1)
      bad_line(h, "session %s: line %lld comes after line %lld: %lld is missing",
               id, n, had + 1, had + 2);
    else if (flowrun_send_n(h->rt, id, n - 1, text, tlen) != FLOWRUN_OK)
      bad_line(h, "%s", flowrun_errmsg(h->rt));
  } else if (!text) {                   /* close */
    if (flowrun_send(h->rt, id, NULL, 0) != FLOWRUN_OK)
      bad_line(h, "%s", flowrun_errmsg(h->rt));
    else set_waiting(h, id, false);
  } else if (rc != FLOWRUN_OK)
    bad_line(h, "%s", flowrun_errmsg(h->rt));
  else set_waiting(h, id, false);       /* it has its line */
  lua_settop(L, top);
}

/* The complete lines read so far; one longer than MAX_LINE is refused
** where it is first seen, and counted once. */
static void handle_lines(host *h) {
  const char *line;
  size_t len;
  int got;
  while (!flowrun_store_failed(h->rt) && (got = cli_input_line(&h->in, &line, &len)) != CLI_NONE) {
    if (got == CLI_LINE) handle_line(h, line, len);
    else {
      h->lineno++;
      bad_line(h, "longer than %d bytes", MAX_LINE);
    }
  }
}

/* End of input: a last line without '\n', then each channel closes in its
** turn: those of the sessions waiting in ask now, the others' when they
** next wait (on_ask). A session that ran what the last lines gave it asks
** (an "ask" line), then gets nil, however long another one keeps running.
** With a store they stay waiting in it. */
static void input_ends(host *h) {
  lua_State *L = flowrun_lua(h->rt);
  const char *rest;
  size_t len;
  if ((rest = cli_input_rest(&h->in, &len))) handle_line(h, rest, len);
  if (h->st.path || h->ended) return;
  h->ended = true;
  lua_pushcfunction(L, l_close_waiting);
  lua_pushlightuserdata(L, h);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    h->untracked = true;
  }
  if (h->untracked) flowrun_send(h->rt, NULL, NULL, 0);   /* all at once: none is lost */
}

/* stdin is read while fewer sessions than this wait to run: what was
** read must not pile up faster than the sessions run (a step is a slice) */
#define HOST_BACKLOG 1000

/* Reads what stdin has and handles its lines; false at the end. */
static bool read_some(host *h) {
  if (!cli_input_read(&h->in)) return false;
  handle_lines(h);
  return true;
}

static void on_stdin(void *ud, int fd) {
  host *h = ud;
  (void)fd;
  if (!read_some(h)) input_ends(h);
  fflush(stdout);
}

#define HOST_USAGE \
  "usage: flowrun host [-I FILE] [--store PATH [--resident N] [--idle SECONDS] [--ttl SECONDS] [--keep-ended SECONDS] [--on-mismatch park]] [--trace] [--trace-json FILE] FLOW.lua\n"

int flowrun_host_main(int argc, char **argv) {
  host h = { 0 };
  h.waiting_ref = LUA_NOREF;
  h.st.keep_s = -1;
  int i, status = 0;
  for (i = 0; i < argc; i++) {
    const char *a = argv[i];
    int took = cli_opts_arg(&h.opts, argc, argv, &i, "flowrun host");
    if (!took) took = cli_store_arg(&h.st, argc, argv, &i, "flowrun host");
    if (took < 0) return 2;
    if (took) continue;
    if (a[0] == '-' && a[1]) {
      fprintf(stderr, "flowrun host: unknown option '%s' (or missing value)\n" HOST_USAGE, a);
      return 2;
    } else if (!h.flow) h.flow = a;
    else {
      fprintf(stderr, "flowrun host: one flow only (the first message is its argument)\n");
      return 2;
    }
  }
  if (!h.flow) {
    fputs(HOST_USAGE, stderr);
    return 2;
  }
  if (h.st.node || h.st.lease_ms || (h.st.path && (strncmp(h.st.path, "postgresql://", 13) == 0
                                                   || strncmp(h.st.path, "postgres://", 11) == 0))) {
    /* its sessions would run on whichever host owns them: their lines
       would come out there, or after this host's input ended */
    fprintf(stderr, "flowrun host: a store shared by many hosts (postgresql://, --node, --lease-ms) "
            "is for flowrun serve (docs/scale-out.md)\n");
    return 2;
  }
  flowrun_callbacks cb = { .say = on_say, .ask = on_ask, .end = on_end, .log = on_log, .ud = &h,
                           .size = sizeof(flowrun_callbacks), .flush = on_flush, .stored = on_stored,
                           .trace_attempts = 1 };
  if (h.opts.trace || h.opts.tjson) cb.trace = on_trace;
  if ((status = cli_runtime_open(&h.rt, &cb, &h.opts, h.flow, &h.st, &h.decode_ref,
                                 "flowrun host")) != 0)
    goto done;
  cli_input_open(&h.in, h.rt, "flowrun host", MAX_LINE, on_stdin, &h);
  cli_input_watch(&h.in, true);
  cli_watchdog_start(&h.opts.grants, h.rt);
  if (!h.in.pollable) {                 /* a file, /dev/null: read as the loop turns */
    while (!h.in.eof && !flowrun_store_failed(h.rt)) {
      if (flowrun_ready(h.rt) < HOST_BACKLOG && !read_some(&h)) input_ends(&h);
      cli_step(h.rt, 0, CLI_SLICE_MS, &h.failed);
      fflush(stdout);
    }
  }
  for (;;) {                            /* with a store, waiting sessions wait in it */
    if (flowrun_store_failed(h.rt)) break;
    if (h.st.path && h.in.eof && flowrun_quiet(h.rt)) break;
    cli_input_watch(&h.in, flowrun_ready(h.rt) < HOST_BACKLOG);
    if (cli_step(h.rt, -1, CLI_SLICE_MS, &h.failed) <= 0 && h.in.eof) break;
    fflush(stdout);
  }
  status = flowrun_store_failed(h.rt) ? 3 : h.failed;
  cli_watchdog_stop();
done:
  flowrun_free(h.rt);                   /* sessions closed: the last traces written */
  status = cli_output_done(status, h.opts.trace_json, h.opts.tjson);
  cli_input_close(&h.in);
  return status;
}
