/*
** main.c -- the flowrun command line: a thin client of flowrun.h.
**
** `run` starts N sessions of a flow; the terminal is their end-user: say
** writes a line to stdout, ask's prompt too, and stdin lines go to the
** sessions in the order they ask. stdin is read through the runtime's loop
** (flowrun_watch), so one session waiting for input never stops the others.
*/
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <lua.h>
#include <lauxlib.h>

#include "cli.h"
#include "flowrun.h"

static const char usage[] =
  "usage: flowrun [run] [options] FLOW.lua [ARGS...]   run one session; the terminal is the end-user\n"
  "       flowrun run --sessions N FLOW.lua [ARGS...]  N concurrent sessions (session.id = 1..N)\n"
  "       flowrun repl [-I FILE] [FLOW.lua]            interactive REPL: try integrations and flows\n"
  "       flowrun check [-I FILE] FLOW.lua...          find every routing mistake before running\n"
  "       flowrun graph [--mermaid] FLOW.lua           a declarative flow as Graphviz DOT (or Mermaid)\n"
  "       flowrun host [options] FLOW.lua              many sessions over JSON lines on stdin/stdout\n"
  "       flowrun mock ROUTES.lua [--port N]           mock HTTP API on 127.0.0.1\n"
  "       flowrun --version | --help\n"
  "options:\n"
  "  -I FILE            integrations file (default: $FLOWRUN_INTEGRATIONS, else\n"
  "                     integrations.lua beside the flow, else in the current directory)\n"
  "  --sessions N       run N sessions at once; output lines are prefixed [ID]\n"
  "  --trace            one line per api_node call on stderr\n"
  "  --trace-json FILE  the same as JSON lines\n"
  "  --allow LIST       grant flows more than the sandbox: io, os, debug, package\n"
  "  --limit NAME=N     a session's limit: instructions (between two waits),\n"
  "                     session-memory, memory (all sessions), output; K, M, G; 0 none;\n"
  "                     wall=SECONDS: a session stuck in C code that long ends the command\n"
  "exit status: 0 done, 1 a session raised an error, 2 usage or configuration error\n";

typedef struct cli {
  flowrun *rt;
  bool prefix;                          /* --sessions N > 1 */
  bool trace;
  FILE *trace_json;
  int failed;
  char **waiting;                       /* sessions in ask, oldest first */
  int nwait, capwait;
  char *in;                             /* stdin bytes not yet a line */
  size_t inlen, incap;
  bool eof, watched, pollable;
} cli;

/* ---- what the sessions do ---- */

/* The length of the valid UTF-8 sequence at p (RFC 3629: no overlong
** forms, no surrogates, nothing above U+10FFFF), 0 if there is none. */
static size_t utf8_seq(const unsigned char *p, size_t left) {
  unsigned char c = p[0], lo = 0x80, hi = 0xBF;
  size_t n;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;           /* overlong */
    if (c == 0xED) hi = 0x9F;           /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;           /* overlong */
    if (c == 0xF4) hi = 0x8F;           /* above U+10FFFF */
  } else
    return 0;
  if (left < n || p[1] < lo || p[1] > hi) return 0;
  for (size_t k = 2; k < n; k++)
    if ((p[k] & 0xC0) != 0x80) return 0;
  return n;
}

/* Writes s (len bytes) to f with what could steer a terminal made
** visible as \xNN: control characters but line break and tab (ESC starts
** the terminal's escape sequences, CR writes over a line), C1 controls
** (U+0080-U+009F) and bytes that are not UTF-8. Errors, logs and traces
** carry text from outside -- a server's Location, a session id -- and
** reach stderr through it; what a flow says is written as it is. */
void cli_put_text(FILE *f, const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len, *from = p;
  while (p < end) {
    size_t n = utf8_seq(p, (size_t)(end - p));
    bool shown = n > 1 ? !(p[0] == 0xC2 && p[1] < 0xA0)
               : n == 1 && (p[0] >= 0x20 || p[0] == '\n' || p[0] == '\t') && p[0] != 0x7F;
    if (shown) { p += n; continue; }
    fwrite(from, 1, (size_t)(p - from), f);
    for (size_t k = 0; k < (n ? n : 1); k++) fprintf(f, "\\x%02x", p[k]);
    p += n ? n : 1;
    from = p;
  }
  fwrite(from, 1, (size_t)(p - from), f);
}

/* Writes head then text (len bytes) and a line break to f; with --sessions
** every line of it starts with "[ID] ", so that lines can be told apart.
** Text from outside is escaped (cli_put_text). */
static void put_lines(cli *c, FILE *f, const char *id, const char *head,
                      const char *text, size_t len, bool outside) {
  bool prefix = c->prefix && id;
  const char *end = text + len;
  if (prefix) fprintf(f, "[%s] ", id);
  fputs(head, f);
  for (;;) {
    const char *nl = memchr(text, '\n', end - text);
    size_t n = (size_t)((nl ? nl + 1 : end) - text);
    if (outside) cli_put_text(f, text, n);
    else fwrite(text, 1, n, f);
    if (!nl) break;
    text = nl + 1;
    if (prefix) fprintf(f, "[%s] ", id);
  }
  fputc('\n', f);
}

static void on_say(void *ud, const char *id, const char *text, size_t len) {
  put_lines(ud, stdout, id, "", text, len, false);
}

static void on_log(void *ud, const char *id, const char *level, const char *msg) {
  char head[32];
  fflush(stdout);
  snprintf(head, sizeof head, "%s: ", level);
  put_lines(ud, stderr, id, head, msg, strlen(msg), true);
}

static void on_end(void *ud, const char *id, int how, const char *error) {
  cli *c = ud;
  if (how == FLOWRUN_DONE) return;
  c->failed = 1;
  fflush(stdout);
  put_lines(c, stderr, id, "", error, strlen(error), true);
}

/* Whether s (len bytes) is valid UTF-8 throughout. */
bool cli_utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  size_t n;
  for (; p < end; p += n)
    if ((n = utf8_seq(p, (size_t)(end - p))) == 0) return false;
  return true;
}

/* s (len bytes) as a JSON string: escaped, and valid UTF-8 whatever the
** flow said (a byte that starts no valid sequence becomes U+FFFD). */
void cli_json_str(FILE *f, const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end;
  if (!s) { fputs("null", f); return; }
  end = p + len;
  putc('"', f);
  while (p < end) {
    unsigned char ch = *p;
    size_t n = utf8_seq(p, (size_t)(end - p));
    if (n == 0) {
      fputs("\\ufffd", f);
      p++;
      continue;
    }
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch == '\n') fputs("\\n", f);
    else if (ch == '\t') fputs("\\t", f);
    else if (ch < 0x20 || ch == 0x7F) fprintf(f, "\\u%04x", ch);
    else fwrite(p, 1, n, f);
    p += n;
  }
  putc('"', f);
}

static void json_cstr(FILE *f, const char *s) {
  cli_json_str(f, s, s ? strlen(s) : 0);
}

static void put_cstr(FILE *f, const char *s) {
  cli_put_text(f, s, strlen(s));
}

/* One call: a line on stderr when text, a JSON line on json when given. */
void cli_trace(bool text, FILE *json, const flowrun_trace *t) {
  if (text) {
    fflush(stdout);
    fputs("trace session=", stderr);
    put_cstr(stderr, t->session ? t->session : "-");
    fprintf(stderr, " integration=%s method=%s url=", t->integration, t->method);
    put_cstr(stderr, t->url);
    fputs(" label=", stderr);
    put_cstr(stderr, t->label);
    if (t->status) fprintf(stderr, " status=%d", t->status);
    fprintf(stderr, " elapsed_ms=%.0f attempts=%d", t->elapsed_ms, t->attempts);
    if (t->reason) fprintf(stderr, " reason=%s", t->reason);
    fputc('\n', stderr);
  }
  if (json) {
    fputs("{\"session\":", json);
    json_cstr(json, t->session);
    fputs(",\"integration\":", json);
    json_cstr(json, t->integration);
    fputs(",\"method\":", json);
    json_cstr(json, t->method);
    fputs(",\"url\":", json);
    json_cstr(json, t->url);
    fputs(",\"label\":", json);
    json_cstr(json, t->label);
    if (t->status) fprintf(json, ",\"status\":%d", t->status);
    else fputs(",\"status\":null", json);
    fprintf(json, ",\"elapsed_ms\":%.1f,\"attempts\":%d", t->elapsed_ms, t->attempts);
    if (t->reason) {
      fputs(",\"reason\":", json);
      json_cstr(json, t->reason);
      fputs(",\"error\":", json);
      json_cstr(json, t->error);
    }
    fputs("}\n", json);
  }
}

static void on_trace(void *ud, const flowrun_trace *t) {
  cli *c = ud;
  cli_trace(c->trace, c->trace_json, t);
}

/* ---- stdin: lines to sessions in the order they ask ---- */

static void deliver(cli *c) {
  char *nl;
  while (c->nwait > 0 && c->inlen > 0
         && (nl = memchr(c->in, '\n', c->inlen))) {
    size_t n = nl - c->in, len = n;
    if (len > 0 && c->in[len - 1] == '\r') len--;
    flowrun_send(c->rt, c->waiting[0], c->in, len);
    free(c->waiting[0]);
    memmove(c->waiting, c->waiting + 1, --c->nwait * sizeof *c->waiting);
    memmove(c->in, nl + 1, c->inlen -= n + 1);
  }
  if (c->eof) {
    while (c->nwait > 0) {                /* the last line may lack '\n' */
      flowrun_send(c->rt, c->waiting[0], c->inlen ? c->in : NULL, c->inlen);
      c->inlen = 0;
      free(c->waiting[0]);
      memmove(c->waiting, c->waiting + 1, --c->nwait * sizeof *c->waiting);
    }
  }
}

/* Reads what stdin has; false at end of input. */
static bool read_stdin(cli *c) {
  if (c->incap - c->inlen < 4096) {
    char *p = realloc(c->in, c->incap = c->incap * 2 + 8192);
    if (!p) { perror("flowrun"); exit(2); }
    c->in = p;
  }
  ssize_t n = read(0, c->in + c->inlen, c->incap - c->inlen);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
  if (n <= 0) return false;
  c->inlen += n;
  return true;
}

static void watch(cli *c, bool on);

static void on_stdin(void *ud, int fd) {
  cli *c = ud;
  (void)fd;
  if (!read_stdin(c)) {
    c->eof = true;
    watch(c, false);
  }
  deliver(c);
  if (c->nwait == 0) watch(c, false);
}

static void watch(cli *c, bool on) {
  if (on == c->watched || (on && c->eof)) return;
  c->watched = on;
  flowrun_watch(c->rt, 0, on ? on_stdin : NULL, c);
}

static void on_ask(void *ud, const char *id, const char *prompt, size_t len) {
  cli *c = ud;
  if (prompt) put_lines(c, stdout, id, "", prompt, len, false);
  fflush(stdout);
  if (c->nwait == c->capwait) {
    c->capwait = c->capwait ? c->capwait * 2 : 16;
    c->waiting = realloc(c->waiting, c->capwait * sizeof *c->waiting);
    if (!c->waiting) { perror("flowrun"); exit(2); }
  }
  c->waiting[c->nwait++] = strdup(id);
  if (c->pollable) {
    deliver(c);                         /* lines read already */
    if (c->nwait > 0) watch(c, true);
    return;
  }
  while (c->nwait > 0 && !c->eof) {    /* a regular file never blocks long */
    if (!(c->inlen > 0 && memchr(c->in, '\n', c->inlen)) && !read_stdin(c)) c->eof = true;
    deliver(c);
  }
  deliver(c);
}

/* ---- run ---- */

/* Flushes stdout and closes the --trace-json file (name) when there is
** one: output that could not be written (a full disk) is a failure the
** caller must hear of, not a silent exit 0. */
int cli_output_done(int status, FILE *trace_json, const char *name) {
  int err;
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "flowrun: cannot write the output: %s\n", strerror(errno));
    status = status ? status : 1;
  }
  if (trace_json) {
    err = fflush(trace_json) != 0 ? errno : 0;
    if (err || ferror(trace_json)) {
      fprintf(stderr, "flowrun: cannot write %s: %s\n", name, err ? strerror(err) : "write error");
      status = status ? status : 1;
    }
    fclose(trace_json);
  }
  return status;
}


static int run(int argc, char **argv) {
  const char *ifile = NULL, *tjson = NULL, *flow = NULL;
  long nsessions = 1;
  char buf[4096];
  cli c = { 0 };
  int i, status;
  struct stat st;
  cli_grants grants = { 0 };
  for (i = 0; i < argc && !flow; i++) {
    const char *a = argv[i];
    int took = cli_sandbox_arg(&grants, argc, argv, &i, "flowrun");
    if (took < 0) return 2;
    if (took) continue;
    if (strcmp(a, "-I") == 0 && i + 1 < argc) ifile = argv[++i];
    else if (strcmp(a, "--trace") == 0) c.trace = true;
    else if (strcmp(a, "--trace-json") == 0 && i + 1 < argc) tjson = argv[++i];
    else if (strcmp(a, "--sessions") == 0 && i + 1 < argc) {
      char *end;
      nsessions = strtol(argv[++i], &end, 10);
      if (*end || nsessions < 1 || nsessions > 10000000) {
        fprintf(stderr, "flowrun: --sessions: expected a positive number, got '%s'\n", argv[i]);
        return 2;
      }
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "flowrun: unknown option '%s' (or missing value)\n%s", a, usage);
      return 2;
    } else flow = a;
  }
  if (!flow) {
    fprintf(stderr, "flowrun: no flow file given\n%s", usage);
    return 2;
  }
  if (access(flow, R_OK) != 0) {
    fprintf(stderr, "flowrun: cannot read flow %s: %s\n", flow, strerror(errno));
    return 2;
  }
  ifile = flowrun_find_integrations(ifile, flow, buf, sizeof buf);
  if (tjson && !(c.trace_json = fopen(tjson, "w"))) {
    fprintf(stderr, "flowrun: cannot write %s: %s\n", tjson, strerror(errno));
    return 2;
  }
  flowrun_callbacks cb = { on_say, on_ask, on_end, NULL, on_log, &c, sizeof(flowrun_callbacks) };
  if (c.trace || tjson) cb.trace = on_trace;   /* else no trace is built */
  if (!(c.rt = flowrun_new(&cb))) {
    fprintf(stderr, "flowrun: out of memory\n");
    return 2;
  }
  status = 0;
  if (cli_sandbox_apply(&grants, c.rt, "flowrun") != 0) status = 2;
  else if (ifile && flowrun_load_integrations(c.rt, ifile) != FLOWRUN_OK) {
    fprintf(stderr, "flowrun: %s\n", flowrun_errmsg(c.rt));
    status = 2;
  }
  c.prefix = nsessions > 1;
  c.pollable = !(fstat(0, &st) == 0 && (S_ISREG(st.st_mode) || S_ISCHR(st.st_mode)))
               || isatty(0);
  if (c.pollable) fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  for (long n = 1; status == 0 && n <= nsessions; n++) {
    char id[24];
    snprintf(id, sizeof id, "%ld", n);
    if (flowrun_start(c.rt, id, flow, argc - i, (const char *const *)argv + i) != FLOWRUN_OK) {
      fprintf(stderr, "flowrun: %s\n", flowrun_errmsg(c.rt));
      status = 2;
    }
  }
  if (status == 0) {
    cli_watchdog_start(&grants, c.rt);
    while (flowrun_step(c.rt, -1) > 0) {}
    cli_watchdog_stop();
    status = c.failed;
  }
  flowrun_free(c.rt);                   /* sessions closed: the last traces written */
  status = cli_output_done(status, c.trace_json, tjson);
  if (c.pollable) fcntl(0, F_SETFL, fcntl(0, F_GETFL) & ~O_NONBLOCK);
  for (i = 0; i < c.nwait; i++) free(c.waiting[i]);
  free(c.waiting);
  free(c.in);
  return status;
}

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
    "  --trace            one line per api_node call on stderr\n"
    "  --trace-json FILE  the same as JSON lines\n"
    "  --allow LIST       grant flows more than the sandbox: io, os, debug, package\n"
    "  --limit NAME=N     instructions, session-memory, memory, output, wall\n" },
  { "host",
    "usage: flowrun host [options] FLOW.lua   sessions over JSON lines on stdin/stdout\n"
    "  -I FILE, --trace, --trace-json FILE, --allow LIST, --limit NAME=N: as for run\n" },
  { "mock", "usage: flowrun mock ROUTES.lua [--port N]   mock HTTP API on 127.0.0.1\n" },
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
    fputs(usage, cmd ? stdout : stderr);
    return cmd ? 0 : 2;
  }
  if (strcmp(cmd, "--version") == 0) {
    printf("flowrun %s (%s, libcurl %s)\n", FLOWRUN_VERSION, LUA_RELEASE,
           curl_version_info(CURLVERSION_NOW)->version);
    return 0;
  }
  if (strcmp(cmd, "mock") == 0) return flowrun_mock_main(argc - 1, argv + 1);
  if (strcmp(cmd, "run") == 0) return run(argc - 2, argv + 2);
  if (strcmp(cmd, "check") == 0 || strcmp(cmd, "graph") == 0)
    return lua_tool(cmd, argc - 2, argv + 2);
  if (strcmp(cmd, "repl") == 0) return flowrun_repl_main(argc - 2, argv + 2);
  if (strcmp(cmd, "host") == 0) return flowrun_host_main(argc - 2, argv + 2);
  return run(argc - 1, argv + 1);
}
