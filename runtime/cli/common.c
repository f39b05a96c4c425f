/*
** common.c -- what every command of the flowrun binary does (common.h):
** the options -I, --trace and --trace-json, the output helpers (text for
** a terminal, JSON strings, traces, the last flush), and stdin read line
** by line through the runtime's loop, by one rule for all.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#include "common.h"
#include "flowrun.h"

/* The usage of the flowrun command: main.c prints it, run.c too after a mistake. */
const char cli_usage[] =
  "usage: flowrun [run] [options] FLOW.lua [ARGS...]   run one session; the terminal is the end-user\n"
  "       flowrun run --sessions N FLOW.lua [ARGS...]  N concurrent sessions (session.id = 1..N)\n"
  "       flowrun repl [-I FILE] [FLOW.lua]            interactive REPL: try integrations and flows\n"
  "       flowrun check [-I FILE] FLOW.lua...          find every routing mistake before running\n"
  "       flowrun graph [--mermaid] FLOW.lua           a declarative flow as Graphviz DOT (or Mermaid)\n"
  "       flowrun host [options] FLOW.lua              many sessions over JSON lines on stdin/stdout\n"
  "       flowrun serve [options] FLOW.lua --port N    conversations over HTTP webhooks, /metrics\n"
  "       flowrun mock ROUTES.lua [--port N]           mock HTTP API on 127.0.0.1\n"
  "       flowrun sessions --store PATH [--end|--retry ID]  a store's sessions; end one, retry one\n"
  "       flowrun test [--coverage] [FILE_test.lua | DIR]...  conversation tests: stubs, a virtual clock\n"
  "       flowrun test --replay STORE                 replay a store's sessions against the flows now\n"
  "       flowrun --version | --help\n"
  "options:\n"
  "  -I FILE            integrations file (default: $FLOWRUN_INTEGRATIONS, else\n"
  "                     integrations.lua beside the flow, else in the current directory)\n"
  "  --sessions N       run N sessions at once; output lines are prefixed [ID]\n"
  "  --store PATH       keep the sessions in a SQLite store: after a crash or a\n"
  "                     restart the same command goes on with them (run, host, serve)\n"
  "  --trace            one line per api_node request (attempt, redirect) on stderr\n"
  "  --trace-json FILE  the same as JSON lines\n"
  "  --allow LIST       grant flows more than the sandbox: io, os, debug, package\n"
  "  --limit NAME=N     a session's limit: instructions (between two waits),\n"
  "                     session-memory, memory (all sessions), output; K, M, G; 0 none;\n"
  "                     wall=SECONDS: a session stuck in C code that long ends the command\n"
  "exit status: 0 done, 1 a session raised an error, 2 usage or configuration error,\n"
  "             3 the store failed while it ran (a full disk)\n";

/* ---- output ---- */

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
  char buf[1024];                       /* escaped here, written a kilobyte at a time */
  size_t o = 0;
  if (!s) { fputs("null", f); return; }
  end = p + len;
  buf[o++] = '"';
  while (p < end) {
    unsigned char ch = *p;
    size_t n;
    if (o >= sizeof buf - 8) {          /* room for the longest step: 6, and the quote */
      fwrite(buf, 1, o, f);
      o = 0;
    }
    if (ch >= 0x20 && ch < 0x7F && ch != '"' && ch != '\\') {   /* a run of such bytes */
      const unsigned char *q = p;
      size_t room = sizeof buf - 8 - o;
      while (q < end && (size_t)(q - p) < room && *q >= 0x20 && *q < 0x7F && *q != '"'
             && *q != '\\')
        q++;
      memcpy(buf + o, p, (size_t)(q - p));
      o += (size_t)(q - p);
      p = q;
      continue;
    }
    n = ch < 0x80 ? 1 : utf8_seq(p, (size_t)(end - p));
    if (ch >= 0x80 && n > 0) {          /* a valid sequence, as it is */
      memcpy(buf + o, p, n);
      o += n;
      p += n;
      continue;
    }
    if (n == 0) { memcpy(buf + o, "\\ufffd", 6); o += 6; }
    else if (ch == '"' || ch == '\\') { buf[o++] = '\\'; buf[o++] = (char)ch; }
    else if (ch == '\n') { buf[o++] = '\\'; buf[o++] = 'n'; }
    else if (ch == '\t') { buf[o++] = '\\'; buf[o++] = 't'; }
    else {                              /* \u00XX, without snprintf: CRs are many */
      memcpy(buf + o, "\\u00", 4);
      buf[o + 4] = "0123456789abcdef"[ch >> 4];
      buf[o + 5] = "0123456789abcdef"[ch & 15];
      o += 6;
    }
    p++;
  }
  buf[o++] = '"';
  fwrite(buf, 1, o, f);
}

static void json_cstr(FILE *f, const char *s) {
  cli_json_str(f, s, s ? strlen(s) : 0);
}

static void put_cstr(FILE *f, const char *s) {
  cli_put_text(f, s, strlen(s));
}

#define TRACE_CAP 8192                  /* --trace-json: bytes of a body or header block */

/* A request header line for --trace-json, cut at TRACE_CAP bytes. */
static void json_capped_item(FILE *f, const char *s) {
  size_t len = strlen(s);
  cli_json_str(f, s, len > TRACE_CAP ? TRACE_CAP : len);
}

/* A body or header block for --trace-json: name, and when it is cut at
** TRACE_CAP bytes, name_bytes with its whole length. */
static void json_capped(FILE *f, const char *name, const char *s, size_t len) {
  fputs(",\"", f);
  fputs(name, f);
  fputs("\":", f);
  cli_json_str(f, s, s && len > TRACE_CAP ? TRACE_CAP : len);
  if (s && len > TRACE_CAP) fprintf(f, ",\"%s_bytes\":%zu", name, len);
}

/* One request of a call: a line on stderr when text, a JSON line on json
** when given. A record the call went on from (retried, redirected) ends
** its line with attempt=, hop= and final=0; the call's last stays as it was. */
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
    if (!t->final) fprintf(stderr, " attempt=%d hop=%d final=0", t->attempt, t->hop);
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
    fprintf(json, ",\"attempt\":%d,\"hop\":%d,\"final\":%s,\"request_headers\":[",
            t->attempt, t->hop, t->final ? "true" : "false");
    for (int i = 0; t->headers && t->headers[i]; i++) {
      if (i) putc(',', json);
      json_capped_item(json, t->headers[i]);
    }
    putc(']', json);
    json_capped(json, "request_body", t->body, t->body_len);
    json_capped(json, "response_headers", t->response_headers, t->response_headers_len);
    json_capped(json, "response_body", t->response_body, t->response_body_len);
    fputs("}\n", json);
  }
}

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

/* ---- options ---- */

/* Takes argv[*i] (and its value) when it is one of the options every
** command reads; see common.h. */
int cli_opts_arg(cli_opts *o, int argc, char **argv, int *i, const char *cmd) {
  const char *a = argv[*i];
  int took = cli_sandbox_arg(&o->grants, argc, argv, i, cmd);
  if (took) return took;
  if (strcmp(a, "-I") == 0 && *i + 1 < argc) o->ifile = argv[++*i];
  else if (strcmp(a, "--trace") == 0) o->trace = true;
  else if (strcmp(a, "--trace-json") == 0 && !o->no_trace_json && *i + 1 < argc)
    o->tjson = argv[++*i];
  else return 0;
  return 1;
}

/* Opens the --trace-json file when one was given. */
int cli_opts_open(cli_opts *o, const char *cmd) {
  if (o->tjson && !(o->trace_json = fopen(o->tjson, "w"))) {
    fprintf(stderr, "%s: cannot write %s: %s\n", cmd, o->tjson, strerror(errno));
    return -1;
  }
  return 0;
}

/* ---- the runtime of host and serve ---- */

/* Takes the store's options; see common.h. */
int cli_store_arg(cli_store_opts *s, int argc, char **argv, int *i, const char *cmd) {
  const char *a = argv[*i];
  if (*i + 1 >= argc) return 0;
  if (strcmp(a, "--store") == 0) s->path = argv[++*i];
  else if (strcmp(a, "--resident") == 0 || strcmp(a, "--idle") == 0
           || strcmp(a, "--ttl") == 0 || strcmp(a, "--keep-ended") == 0) {
    char *end;
    long long v = strtoll(argv[++*i], &end, 10);
    if (*end || end == argv[*i] || v < 0) {
      fprintf(stderr, "%s: %s: expected a whole number >= 0, got '%s'\n", cmd, a, argv[*i]);
      return -1;
    }
    if (a[2] == 'r') s->resident = v;
    else if (a[2] == 'i') s->idle_s = v;
    else if (a[2] == 'k') s->keep_s = v;
    else s->ttl_s = v;
  } else if (strcmp(a, "--on-mismatch") == 0) {
    const char *v = argv[++*i];
    if (strcmp(v, "park") != 0 && strcmp(v, "fail") != 0) {
      fprintf(stderr, "%s: --on-mismatch: expected park or fail, got '%s'\n", cmd, v);
      return -1;
    }
    s->park = v[0] == 'p';
  } else if (strcmp(a, "--node") == 0) s->node = argv[++*i];
  else if (strcmp(a, "--lease-ms") == 0) {
    char *end;
    s->lease_ms = strtoll(argv[++*i], &end, 10);
    if (*end || end == argv[*i] || s->lease_ms < 100) {
      fprintf(stderr, "%s: --lease-ms: expected a whole number >= 100, got '%s'\n", cmd, argv[*i]);
      return -1;
    }
  } else return 0;
  return 1;
}

/* Makes the runtime of host and serve, one way for both; see common.h. */
int cli_runtime_open(flowrun **rt, const flowrun_callbacks *cb, cli_opts *o, const char *flow,
                     const cli_store_opts *s, int *decode_ref, const char *cmd) {
  char buf[4096];
  const char *ifile;
  lua_State *L;
  *rt = NULL;
  if (access(flow, R_OK) != 0) {
    fprintf(stderr, "%s: cannot read flow %s: %s\n", cmd, flow, strerror(errno));
    return 2;
  }
  ifile = flowrun_find_integrations(o->ifile, flow, buf, sizeof buf);
  if (cli_opts_open(o, cmd) != 0) return 2;
  if (!(*rt = flowrun_new(cb))) {
    fprintf(stderr, "%s: out of memory\n", cmd);
    return 2;
  }
  if (cli_sandbox_apply(&o->grants, *rt, cmd) != 0) return 2;
  if (ifile && flowrun_load_integrations(*rt, ifile) != FLOWRUN_OK) {
    fprintf(stderr, "flowrun: %s\n", flowrun_errmsg(*rt));
    return 2;
  }
  L = flowrun_lua(*rt);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "json");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "%s: %s\n", cmd, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 2;
  }
  lua_getfield(L, -1, "decode");
  *decode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1);
  flowrun_store_limit(*rt, FLOWRUN_STORE_RESIDENT, s->resident);
  flowrun_store_limit(*rt, FLOWRUN_STORE_IDLE_MS, s->idle_s * 1000);
  flowrun_store_limit(*rt, FLOWRUN_STORE_PARK, s->park);
  flowrun_store_limit(*rt, FLOWRUN_STORE_TTL_S, s->ttl_s);
  flowrun_store_limit(*rt, FLOWRUN_STORE_ENDED_S, s->keep_s);
  if (s->lease_ms) flowrun_store_limit(*rt, FLOWRUN_STORE_LEASE_MS, s->lease_ms);
  if (s->node && flowrun_store_node(*rt, s->node) != FLOWRUN_OK) {
    fprintf(stderr, "%s: --node: %s\n", cmd, flowrun_errmsg(*rt));
    return 2;
  }
  if (s->path && flowrun_open_store(*rt, s->path) != FLOWRUN_OK) {
    fprintf(stderr, "%s: %s\n", cmd, flowrun_errmsg(*rt));
    return 2;
  }
  return 0;
}

/* ---- stdin ---- */

/* Sets in up; whether the loop can watch fd 0 is asked of the loop
** itself (epoll refuses regular files and /dev/null). A watched pipe or
** socket is made non-blocking, so that a read after a wake-up never
** waits; a terminal is left as it is (its flags are the shell's too). */
void cli_input_open(cli_input *in, flowrun *rt, const char *cmd, size_t max,
                    void (*on_readable)(void *ud, int fd), void *ud) {
  memset(in, 0, sizeof *in);
  in->rt = rt;
  in->cmd = cmd;
  in->max = max;
  in->on_readable = on_readable;
  in->ud = ud;
  in->pollable = flowrun_watch(rt, 0, on_readable, ud) == FLOWRUN_OK;
  if (in->pollable) flowrun_watch(rt, 0, NULL, NULL);
  if (in->pollable && !isatty(0)) {
    int fl = fcntl(0, F_GETFL);
    in->nonblock = fl >= 0 && !(fl & O_NONBLOCK) && fcntl(0, F_SETFL, fl | O_NONBLOCK) == 0;
  }
}

/* Makes fd 0 blocking again when cli_input_open made it non-blocking. */
static void restore_blocking(cli_input *in) {
  if (in->nonblock) fcntl(0, F_SETFL, fcntl(0, F_GETFL) & ~O_NONBLOCK);
  in->nonblock = false;
}

/* One read(2) of what fd 0 has, after the lines handed out. */
bool cli_input_read(cli_input *in) {
  ssize_t n;
  if (in->used > 0) {
    memmove(in->buf, in->buf + in->used, in->len -= in->used);
    in->used = 0;
  }
  if (in->cap - in->len < 4096) {
    char *p = realloc(in->buf, in->cap * 2 + 8192);
    if (!p) {                           /* the same in every command */
      restore_blocking(in);
      fprintf(stderr, "%s: out of memory reading stdin\n", in->cmd);
      exit(2);
    }
    in->buf = p;
    in->cap = in->cap * 2 + 8192;
  }
  n = read(0, in->buf + in->len, in->cap - in->len);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
  if (n <= 0) {
    in->eof = true;
    cli_input_watch(in, false);
    return false;
  }
  in->len += (size_t)n;
  return true;
}

/* Hands out the complete lines read so far, one a call; a line longer
** than in->max is refused once, where it is first seen: whole in one
** read, or as more than max bytes without '\n' (then what follows up to
** its '\n' is dropped, and that is still the same line). */
int cli_input_line(cli_input *in, const char **line, size_t *len) {
  if (!in->buf) return CLI_NONE;
  for (;;) {
    char *p = in->buf + in->used;
    char *nl = in->len > in->used ? memchr(p, '\n', in->len - in->used) : NULL;
    size_t n;
    if (!nl) {
      if (in->skipping) in->used = in->len;            /* more of the long line */
      else if (in->max && in->len - in->used >= in->max) {
        in->skipping = true;
        in->used = in->len;
        return CLI_LONG;
      }
      return CLI_NONE;
    }
    n = (size_t)(nl - p);
    in->used += n + 1;
    if (in->skipping) {                 /* the end of the long line */
      in->skipping = false;
      continue;
    }
    if (in->max && n > in->max) return CLI_LONG;
    *line = p;
    *len = n > 0 && p[n - 1] == '\r' ? n - 1 : n;
    return CLI_LINE;
  }
}

/* The last line, when it has no '\n'. */
const char *cli_input_rest(cli_input *in, size_t *len) {
  char *p;
  size_t n = in->len - in->used;
  *len = 0;
  if (n == 0 || in->skipping) return NULL;
  p = in->buf + in->used;
  in->used = in->len;
  *len = p[n - 1] == '\r' ? n - 1 : n;
  return p;
}

bool cli_input_has_line(const cli_input *in) {
  return in->len > in->used && memchr(in->buf + in->used, '\n', in->len - in->used);
}

void cli_input_watch(cli_input *in, bool on) {
  if (!in->pollable || on == in->watching || (on && in->eof)) return;
  in->watching = on;
  flowrun_watch(in->rt, 0, on ? in->on_readable : NULL, in->ud);
}

/* Does not touch the runtime, which may be freed already. */
void cli_input_close(cli_input *in) {
  restore_blocking(in);
  free(in->buf);
  in->buf = NULL;
  in->len = in->cap = in->used = 0;
}

int cli_step(flowrun *rt, int timeout_ms, double budget_ms, bool *failed) {
  static int in_a_row;
  int n = flowrun_step_budget(rt, timeout_ms, budget_ms);
  if (n != FLOWRUN_ERR) {
    in_a_row = 0;
    return n;
  }
  fprintf(stderr, "flowrun: %s\n", flowrun_errmsg(rt));
  *failed = true;
  if (flowrun_store_failed(rt)) return 0;   /* for good: the caller exits 3 */
  return ++in_a_row < 100;
}
