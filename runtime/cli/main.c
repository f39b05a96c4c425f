/*
** main.c -- the flowrun command line: a thin client of flowrun.h. Reads
** the subcommand and calls its main (run.c, jsonl.c, serve.c,
** repl/main.c, mock/server.c); check and graph are tools written in Lua, run here.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <lua.h>
#include <lauxlib.h>

#include "common.h"
#include "flowrun.h"

/* `flowrun NAME [-I FILE] ARGS...` for a tool written in Lua: the function
** main(args) of the built-in module flowrun.NAME runs in a runtime with the
** integrations loaded (found as for run, beside the first file argument)
** and returns the exit status. */
static int lua_tool(const char *name, int argc, char **argv) {
  const char *ifile = NULL, *first = NULL;
  char buf[4096];
  int status = 2, i, n = 0;
  flowrun *rt = flowrun_new(NULL);
  lua_State *L;
  if (!rt) {
    fprintf(stderr, "flowrun: out of memory\n");
    return 2;
  }
  L = flowrun_lua(rt);
  lua_getglobal(L, "require");
  lua_pushfstring(L, "flowrun.%s", name);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "flowrun %s: %s\n", name, lua_tostring(L, -1));
    goto done;
  }
  lua_getfield(L, -1, "main");
  lua_newtable(L);
  for (i = 0; i < argc; i++) {
    if (strcmp(argv[i], "-I") == 0 && i + 1 < argc) {
      ifile = argv[++i];
      continue;
    }
    if (!first && argv[i][0] != '-') first = argv[i];
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, ++n);
  }
  ifile = flowrun_find_integrations(ifile, first, buf, sizeof buf);
  flowrun_env_placeholders(rt, 1);      /* nothing is sent: no secrets needed */
  if (ifile && flowrun_load_integrations(rt, ifile) != FLOWRUN_OK) {
    fprintf(stderr, "flowrun: %s\n", flowrun_errmsg(rt));
    goto done;
  }
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "flowrun %s: %s\n", name, lua_tostring(L, -1));
    goto done;
  }
  status = (int)luaL_optinteger(L, -1, 0);
done:
  fflush(stdout);
  flowrun_free(rt);
  return status;
}

/* The usage of the subcommands the C side reads itself (check, graph and
** repl print their own). */
static const struct { const char *cmd, *text; } sub_usage[] = {
  { "run",
    "usage: flowrun [run] [options] FLOW.lua [ARGS...]\n"
    "  -I FILE            integrations file\n"
    "  --sessions N       run N sessions at once; output lines are prefixed [ID]\n"
    "  --trace            one line per api_node request (attempt, redirect) on stderr\n"
    "  --trace-json FILE  the same as JSON lines\n"
    "  --allow LIST       grant flows more than the sandbox: io, os, debug, package\n"
    "  --limit NAME=N     instructions, session-memory, memory, output, wall\n"
    "  --store PATH       keep the sessions in a store; run again after a crash: they go on\n" },
  { "host",
    "usage: flowrun host [options] FLOW.lua   sessions over JSON lines on stdin/stdout\n"
    "  -I FILE, --trace, --trace-json FILE, --allow LIST, --limit NAME=N: as for run\n"
    "  --store PATH       keep the sessions in a store: lines carry seq, n and stored\n"
    "  --resident N       with a store: at most N sessions in memory\n"
    "  --idle SECONDS     with a store: a session waiting longer leaves memory\n"
    "  --ttl SECONDS      with a store: a session silent longer has its channel closed\n"
    "  --keep-ended SECONDS  with a store: an ended session's row goes after (7 days)\n"
    "  --on-mismatch park with a store: a flow changed under a session parks it\n"
    "  --store postgresql://...  many hosts share the sessions (docs/scale-out.md)\n"
    "  --node NAME        this host's name in a shared store (hostname:pid)\n"
    "  --lease-ms MS      a shared store's lease: a host silent this long loses its\n"
    "                     sessions to the others (10000)\n" },
  { "serve",
    "usage: flowrun serve [options] FLOW.lua --port N   conversations over HTTP webhooks\n"
    "  -I FILE, --trace, --trace-json FILE, --allow LIST, --limit NAME=N: as for run\n"
    "  --port N           listen on 127.0.0.1:N (0: a free port; it is printed)\n"
    "  --store PATH, --resident N, --idle SECONDS, --ttl SECONDS, --keep-ended SECONDS,\n"
    "  --on-mismatch park, --node NAME, --lease-ms MS: as for host\n"
    "  --token-env NAME   webhooks need \"Authorization: Bearer $NAME\"\n"
    "  --reply-timeout SECONDS  a webhook answers after this long at most (30)\n"
    "  POST /webhooks/rest {\"sender\":ID,\"message\":TEXT}: the bot's messages to its next ask\n"
    "    [\"number\":N: the message's number in the conversation (1 starts it); one\n"
    "    taken already is not taken again: sent again, the same answer]\n"
    "  GET /webhooks/rest/messages?sender=ID[&wait=S]: messages that came later (long poll)\n"
    "  GET /health, GET /metrics (Prometheus text format)\n" },
  { "mock", "usage: flowrun mock ROUTES.lua [--port N]   mock HTTP API on 127.0.0.1\n" },
  { "test",
    "usage: flowrun test [options] [FILE_test.lua | DIR]...   conversation tests of flows\n"
    "  each FILE_test.lua (a folder: every one below it) runs in one runtime: its calls\n"
    "  answered by its stubs, its clock virtual; ok/not ok per test, N passed, N failed;\n"
    "  exit 0 all passed, 1 a test failed, 2 a test file is wrong\n"
    "  --coverage [FILE.json]  the labels each node took, steps and edges; also as JSON\n"
    "  --junit FILE            the results as JUnit XML\n"
    "  --live                  against the real APIs and the real clock, stubs unused\n"
    "  --record FILE.lua       with --live: the real answers as stubs (recorded \"FILE.lua\")\n"
    "usage: flowrun test --replay STORE [-I FILE] [--allow LIST] [--junit FILE]\n"
    "  every unfinished session of the store replayed against the flows as they are\n"
    "  now, to the end of its journal: the check before deploying a changed flow;\n"
    "  the store is only read (a host may be running it); exit 1 when one does not replay\n" },
};

int main(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : NULL;
  for (size_t i = 0; cmd && argc > 2 && i < sizeof sub_usage / sizeof *sub_usage; i++)
    if (strcmp(cmd, sub_usage[i].cmd) == 0
        && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
      fputs(sub_usage[i].text, stdout);
      return cli_output_done(0, NULL, NULL);
    }
  if (!cmd || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    fputs(cli_usage, cmd ? stdout : stderr);
    return cmd ? 0 : 2;
  }
  if (strcmp(cmd, "--version") == 0) {
    printf("flowrun %s (%s, libcurl %s)\n", FLOWRUN_VERSION, LUA_RELEASE,
           curl_version_info(CURLVERSION_NOW)->version);
    return 0;
  }
  if (strcmp(cmd, "mock") == 0) return flowrun_mock_main(argc - 1, argv + 1);
  if (strcmp(cmd, "run") == 0) return flowrun_run_main(argc - 2, argv + 2);
  if (strcmp(cmd, "check") == 0 || strcmp(cmd, "graph") == 0)
    return lua_tool(cmd, argc - 2, argv + 2);
  if (strcmp(cmd, "repl") == 0) return flowrun_repl_main(argc - 2, argv + 2);
  if (strcmp(cmd, "host") == 0) return flowrun_host_main(argc - 2, argv + 2);
  if (strcmp(cmd, "serve") == 0) return flowrun_serve_main(argc - 2, argv + 2);
  if (strcmp(cmd, "sessions") == 0) return flowrun_sessions_main(argc - 2, argv + 2);
  if (strcmp(cmd, "test") == 0) return flowrun_test_main(argc - 2, argv + 2);
  return flowrun_run_main(argc - 1, argv + 1);
}
