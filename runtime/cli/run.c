/*
** run.c -- `flowrun [run] [options] FLOW.lua [ARGS...]`: N sessions of a
** flow; the terminal is their end-user: say writes a line to stdout, ask's
** prompt too, and stdin lines go to the sessions in the order they ask.
** stdin is read through the runtime's loop (common.c), so one session
** waiting for input never stops the others.
*/
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "flowrun.h"

typedef struct cli {
  flowrun *rt;
  cli_opts opts;
  bool prefix;                          /* --sessions N > 1 */
  int failed;
  char **waiting;                       /* sessions in ask, oldest first */
  int nwait, capwait;
  cli_input in;                         /* stdin */
} cli;

/* ---- what the sessions do ---- */

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

/* With a store: what was said is written out before the store forgets it. */
static void on_flush(void *ud) {
  (void)ud;
  fflush(stdout);
}

static void on_trace(void *ud, const flowrun_trace *t) {
  cli *c = ud;
  cli_trace(c->opts.trace, c->opts.trace_json, t);
}

/* ---- stdin: lines to sessions in the order they ask ---- */

/* The oldest waiting session takes line (len bytes; NULL: its channel
** closes). */
static void answer(cli *c, const char *line, size_t len) {
  flowrun_send(c->rt, c->waiting[0], line, len);
  free(c->waiting[0]);
  memmove(c->waiting, c->waiting + 1, --c->nwait * sizeof *c->waiting);
}

static void deliver(cli *c) {
  const char *line;
  size_t len;
  while (c->nwait > 0 && cli_input_line(&c->in, &line, &len) == CLI_LINE)
    answer(c, line, len);
  if (c->in.eof) {
    while (c->nwait > 0) {                /* the last line may lack '\n' */
      line = cli_input_rest(&c->in, &len);
      answer(c, line, len);
    }
  }
}

static void on_stdin(void *ud, int fd) {
  cli *c = ud;
  (void)fd;
  cli_input_read(&c->in);               /* at the end, the watch is off */
  deliver(c);
  if (c->nwait == 0) cli_input_watch(&c->in, false);
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
  if (c->in.pollable) {
    deliver(c);                         /* lines read already */
    if (c->nwait > 0) cli_input_watch(&c->in, true);
    return;
  }
  while (c->nwait > 0 && !c->in.eof) { /* a regular file never blocks long */
    if (!cli_input_has_line(&c->in)) cli_input_read(&c->in);
    deliver(c);
  }
  deliver(c);
}


int flowrun_run_main(int argc, char **argv) {
  const char *ifile, *flow = NULL, *store = NULL;
  long nsessions = 1;
  char buf[4096];
  cli c = { 0 };
  int i, status;
  for (i = 0; i < argc && !flow; i++) {
    const char *a = argv[i];
    int took = cli_opts_arg(&c.opts, argc, argv, &i, "flowrun");
    if (took < 0) return 2;
    if (took) continue;
    if (strcmp(a, "--sessions") == 0 && i + 1 < argc) {
      char *end;
      nsessions = strtol(argv[++i], &end, 10);
      if (*end || nsessions < 1 || nsessions > 10000000) {
        fprintf(stderr, "flowrun: --sessions: expected a positive number, got '%s'\n", argv[i]);
        return 2;
      }
    } else if (strcmp(a, "--store") == 0 && i + 1 < argc) {
      store = argv[++i];
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "flowrun: unknown option '%s' (or missing value)\n%s", a, cli_usage);
      return 2;
    } else flow = a;
  }
  if (!flow) {
    fprintf(stderr, "flowrun: no flow file given\n%s", cli_usage);
    return 2;
  }
  if (access(flow, R_OK) != 0) {
    fprintf(stderr, "flowrun: cannot read flow %s: %s\n", flow, strerror(errno));
    return 2;
  }
  ifile = flowrun_find_integrations(c.opts.ifile, flow, buf, sizeof buf);
  if (cli_opts_open(&c.opts, "flowrun") != 0) return 2;
  flowrun_callbacks cb = { .say = on_say, .ask = on_ask, .end = on_end, .log = on_log, .ud = &c,
                           .size = sizeof(flowrun_callbacks), .flush = on_flush, .trace_attempts = 1 };
  if (c.opts.trace || c.opts.tjson) cb.trace = on_trace;   /* else no trace is built */
  if (!(c.rt = flowrun_new(&cb))) {
    fprintf(stderr, "flowrun: out of memory\n");
    return 2;
  }
  status = 0;
  if (cli_sandbox_apply(&c.opts.grants, c.rt, "flowrun") != 0) status = 2;
  else if (ifile && flowrun_load_integrations(c.rt, ifile) != FLOWRUN_OK) {
    fprintf(stderr, "flowrun: %s\n", flowrun_errmsg(c.rt));
    status = 2;
  }
  if (status == 0 && store && flowrun_open_store(c.rt, store) != FLOWRUN_OK) {
    fprintf(stderr, "flowrun: %s\n", flowrun_errmsg(c.rt));
    status = 2;
  }
  c.prefix = nsessions > 1;
  cli_input_open(&c.in, c.rt, "flowrun", 0, on_stdin, &c);
  if (flowrun_sessions(c.rt) > 0) nsessions = 0;   /* the store's unfinished ones go on */
  for (long n = 1; status == 0 && n <= nsessions; n++) {
    char id[24];
    snprintf(id, sizeof id, "%ld", n);
    if (flowrun_start(c.rt, id, flow, argc - i, (const char *const *)argv + i) != FLOWRUN_OK) {
      fprintf(stderr, "flowrun: %s\n", flowrun_errmsg(c.rt));
      status = 2;
    }
  }
  if (status == 0) {
    cli_watchdog_start(&c.opts.grants, c.rt);
    bool step_failed = false;
    while (cli_step(c.rt, -1, 0, &step_failed) > 0) {}
    if (step_failed) c.failed = 1;
    cli_watchdog_stop();
    status = flowrun_store_failed(c.rt) ? 3 : c.failed;
  }
  flowrun_free(c.rt);                   /* sessions closed: the last traces written */
  status = cli_output_done(status, c.opts.trace_json, c.opts.tjson);
  cli_input_close(&c.in);
  for (i = 0; i < c.nwait; i++) free(c.waiting[i]);
  free(c.waiting);
  return status;
}
