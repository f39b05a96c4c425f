/*
** main.c -- `flowrun repl [-I FILE] [--trace] [FLOW.lua [ARGS...]]`.
**
** A thin client of flowrun.h. This file holds the loop and the setting
** up; term.c the terminal (libedit, through its readline-compatible
** callback interface), Ctrl-C and input; sessions.c the sessions started
** with .run and the `host` table that Lua calls. What a line means, how
** values print and what completes is policy in Lua: lua/flowrun/repl.lua
** and lua/flowrun/pretty.lua.
*/
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#include "cli/common.h"
#include "flowrun.h"
#include "repl.h"

/* ---- evaluation ---- */

/* Calls repl:method(arg) on the evaluation thread with Ctrl-C armed;
** pushes its result onto E, or reports its error and pushes nil. */
static void call_repl(repl *r, const char *method, const char *arg) {
  lua_State *E = r->E;
  int st;
  lua_settop(E, 0);
  lua_rawgeti(E, LUA_REGISTRYINDEX, r->objref);
  lua_getfield(E, -1, method);
  lua_insert(E, -2);
  if (arg) lua_pushstring(E, arg);
  st = repl_eval(r, arg ? 2 : 1);
  if (st != LUA_OK) {
    const char *msg = lua_tostring(E, -1);
    repl_put_str(r, stderr, RED, msg ? msg : "(error object is not a string)");
    lua_settop(E, 0);
    lua_pushnil(E);
  }
}

static void loop(repl *r) {
  for (;;) {
    char *line;
    int got;
    call_repl(r, "prompt", NULL);
    got = repl_wait_line(r, lua_isstring(r->E, -1) ? lua_tostring(r->E, -1) : "> ", &line);
    if (got == GOT_EOF) break;
    if (got == GOT_INTERRUPT) {
      repl_consume_interrupt(r);
      call_repl(r, "cancel", NULL);
      continue;
    }
    call_repl(r, "feed", line);
    free(line);
    if (lua_type(r->E, -1) == LUA_TBOOLEAN && !lua_toboolean(r->E, -1)) break;
  }
}

/* ---- setting up ---- */

static bool readable(const char *path) {
  return access(path, R_OK) == 0;
}

/* lua_pcall'd on E: 1 repl, 2 options table. Pushes the repl object. */
static int l_setup(lua_State *L) {
  repl *r = lua_touserdata(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "flowrun.repl");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "new");
  repl_push_host(L, r);                 /* host */
  lua_pushvalue(L, 2);                  /* options */
  if (flowrun_push_globals(r->rt) != FLOWRUN_OK)
    return luaL_error(L, "%s", flowrun_errmsg(r->rt));
  lua_xmove(r->L, L, 1);
  lua_call(L, 3, 1);
  return 1;
}

/* Prints the usage on f: stdout for --help (exit 0), stderr for a mistake. */
static int usage(FILE *f) {
  fputs("usage: flowrun repl [-I FILE] [--trace] [--allow LIST] [--limit NAME=N] "
        "[FLOW.lua [ARGS...]]\n", f);
  return f == stdout ? 0 : 2;
}

int flowrun_repl_main(int argc, char **argv) {
  const char *ifile = NULL, *flow = NULL;
  char buf[4096];
  repl r;
  int i, status = 0;
  cli_opts opts = { .no_trace_json = true };
  memset(&r, 0, sizeof r);
  r.sigpipe[0] = r.sigpipe[1] = -1;
  r.eref = r.objref = LUA_NOREF;
  for (i = 0; i < argc && !flow; i++) {
    int took = cli_opts_arg(&opts, argc, argv, &i, "flowrun repl");
    if (took < 0) return 2;
    if (took) continue;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      return usage(stdout);
    } else if (argv[i][0] == '-') {
      fprintf(stderr, "flowrun repl: unknown option '%s' (or missing value)\n", argv[i]);
      return usage(stderr);
    } else flow = argv[i];
  }
  if (flow && !readable(flow)) {
    fprintf(stderr, "flowrun: cannot read flow %s: %s\n", flow, strerror(errno));
    return 2;
  }
  r.trace = opts.trace;
  ifile = flowrun_find_integrations(opts.ifile, flow, buf, sizeof buf);
  flowrun_callbacks cb = repl_callbacks(&r);
  if (!(r.rt = flowrun_new(&cb))) {
    fprintf(stderr, "flowrun: out of memory\n");
    return 2;
  }
  flowrun_env_placeholders(r.rt, 1);    /* start; an integration missing a secret says so when used */
  if (cli_sandbox_apply(&opts.grants, r.rt, "flowrun repl") != 0
      || (ifile && flowrun_load_integrations(r.rt, ifile) != FLOWRUN_OK)) {
    if (ifile) fprintf(stderr, "flowrun: %s\n", flowrun_errmsg(r.rt));
    flowrun_free(r.rt);
    return 2;
  }
  r.L = flowrun_lua(r.rt);
  r.E = lua_newthread(r.L);
  r.eref = luaL_ref(r.L, LUA_REGISTRYINDEX);
  repl_term_start(&r);
  /* the Lua side: repl = require("flowrun.repl").new(host, options, env) */
  lua_pushcfunction(r.E, l_setup);
  lua_pushlightuserdata(r.E, &r);
  lua_createtable(r.E, 0, 8);
  lua_pushboolean(r.E, r.tty);
  lua_setfield(r.E, -2, "interactive");
  lua_pushboolean(r.E, r.color);
  lua_setfield(r.E, -2, "color");
  if (flow) {
    lua_pushstring(r.E, flow);
    lua_setfield(r.E, -2, "flow");
  }
  lua_createtable(r.E, argc - i, 0);
  for (int k = i; k < argc; k++) {
    lua_pushstring(r.E, argv[k]);
    lua_rawseti(r.E, -2, k - i + 1);
  }
  lua_setfield(r.E, -2, "args");
  if (ifile) {
    lua_pushstring(r.E, ifile);
    lua_setfield(r.E, -2, "integrations_file");
  }
  lua_pushstring(r.E, FLOWRUN_VERSION);
  lua_setfield(r.E, -2, "version");
  if (lua_pcall(r.E, 2, 1, 0) != LUA_OK) {
    fprintf(stderr, "flowrun repl: %s\n", lua_tostring(r.E, -1));
    status = 2;
  } else {
    r.objref = luaL_ref(r.E, LUA_REGISTRYINDEX);
    call_repl(&r, "start", NULL);
    loop(&r);
    call_repl(&r, "finish", NULL);
    if (lua_isinteger(r.E, -1)) status = (int)lua_tointeger(r.E, -1);
  }
  repl_term_restore(&r);
  flowrun_free(r.rt);                   /* the Lua state, E and the refs too */
  repl_term_free(&r);
  repl_host_free(&r);                   /* the sessions, the last call */
  return status;
}