/*
** common.h -- what every command of the flowrun binary does: its options
** (-I, --trace, --trace-json, and --allow/--limit from limits.c), its
** output (text for the terminal, JSON strings, traces) and its stdin,
** read line by line through the runtime's loop. main.c calls each
** command's main; the commands call this and nothing of each other.
** Each main takes the arguments after the subcommand name (mock's argv[0]
** is "mock") and returns the exit status (0 ok, 1 failure, 2 usage or
** configuration error).
*/
#ifndef FLOWRUN_CLI_COMMON_H
#define FLOWRUN_CLI_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "flowrun.h"

/* the commands: run.c, jsonl.c, repl/main.c, mock/server.c */
int flowrun_run_main(int argc, char **argv);
int flowrun_host_main(int argc, char **argv);
int flowrun_serve_main(int argc, char **argv);   /* serve.c */
int flowrun_repl_main(int argc, char **argv);
int flowrun_mock_main(int argc, char **argv);
int flowrun_sessions_main(int argc, char **argv);
int flowrun_test_main(int argc, char **argv);   /* test.c */

/* ---- output (common.c) ---- */

/* The usage of the whole command (--help). */
extern const char cli_usage[];

/* s (len bytes) as a JSON string, valid UTF-8 whatever it holds; s NULL: null. */
void cli_json_str(FILE *f, const char *s, size_t len);
/* Whether s (len bytes) is valid UTF-8 throughout. */
bool cli_utf8_valid(const char *s, size_t len);
/* s with what could steer a terminal shown as \xNN. */
void cli_put_text(FILE *f, const char *s, size_t len);
/* One call's trace: a line on stderr when text, a JSON line on json when given. */
void cli_trace(bool text, FILE *json, const flowrun_trace *t);
/* Flushes stdout and closes the --trace-json file; a write error makes
** status 1 (when it was 0) and is said. */
int cli_output_done(int status, FILE *trace_json, const char *name);
/* flowrun_step for a command's loop: what it returns, or, when the step
** failed (libcurl, out of memory), 1 after saying why on stderr and
** setting *failed: the host steps again (flowrun.h). After 100 failed
** steps in a row it gives up: 0; at once when the store failed (then the
** command exits 3: flowrun_store_failed). budget_ms: as
** flowrun_step_budget (0: none). */
int cli_step(flowrun *rt, int timeout_ms, double budget_ms, bool *failed);
/* The slice of work host, serve and the REPL give a step: their input is
** read, and what the sessions said is written out, between two slices. */
#define CLI_SLICE_MS 5.0

/* ---- limits.c: --allow LIST and --limit NAME=VALUE, for run, host, repl ---- */
#define CLI_MAX_LIMITS 8
typedef struct cli_grants {
  const char *allow;                    /* "io,os" */
  const char *limits[CLI_MAX_LIMITS];   /* "instructions=1000000" */
  int nlimits;
  long wall;                            /* --limit wall=SECONDS (the watchdog) */
  bool wall_set;
} cli_grants;

/* Takes argv[*i] (and its value) when it is --allow or --limit: 1 taken,
** 0 not one of them, -1 a bad value (said on stderr, naming cmd). */
int cli_sandbox_arg(cli_grants *g, int argc, char **argv, int *i, const char *cmd);
/* Applies what cli_sandbox_arg took to rt; -1 when refused (said). */
int cli_sandbox_apply(const cli_grants *g, flowrun *rt, const char *cmd);
/* The watchdog of a session stuck in C code (limits.c): started once
** the runtime exists, stopped before it is freed. */
void cli_watchdog_start(const cli_grants *g, flowrun *rt);
void cli_watchdog_stop(void);

/* ---- the options every command reads (common.c) ---- */
typedef struct cli_opts {
  bool no_trace_json;                   /* set by a command without --trace-json */
  const char *ifile;                    /* -I FILE */
  bool trace;                           /* --trace */
  const char *tjson;                    /* --trace-json FILE */
  FILE *trace_json;                     /* opened by cli_opts_open */
  cli_grants grants;                    /* --allow, --limit */
} cli_opts;

/* Takes argv[*i] (and its value) when it is -I, --trace, --trace-json,
** --allow or --limit: 1 taken, 0 not one of them, -1 a bad value (said
** on stderr, naming cmd). */
int cli_opts_arg(cli_opts *o, int argc, char **argv, int *i, const char *cmd);
/* Opens the --trace-json file; -1 when it cannot be written (said). */
int cli_opts_open(cli_opts *o, const char *cmd);

/* ---- the runtime of the commands that serve many sessions: host, serve (common.c) ---- */
typedef struct cli_store_opts {
  const char *path;                     /* --store PATH */
  long long resident, idle_s, ttl_s;    /* --resident N, --idle SECONDS, --ttl SECONDS */
  long long keep_s;                     /* --keep-ended SECONDS (-1: the default) */
  bool park;                            /* --on-mismatch park */
  const char *node;                     /* --node NAME (a shared store's) */
  long long lease_ms;                   /* --lease-ms MS (0: the default) */
} cli_store_opts;

/* Takes argv[*i] (and its value) when it is --store, --resident, --idle,
** --ttl, --keep-ended, --on-mismatch, --node or --lease-ms: 1 taken, 0 not one of them, -1 a
** bad value (said on stderr, naming cmd). Set s->keep_s to -1 first. */
int cli_store_arg(cli_store_opts *s, int argc, char **argv, int *i, const char *cmd);
/* Checks that flow can be read, opens the --trace-json file, makes the
** runtime with cb (*rt is set at once, for the callbacks; the caller frees
** it, also after a failure), applies --allow and --limit, loads the
** integrations file (-I, else the one flowrun_find_integrations finds),
** keeps json.decode in the registry (*decode_ref), sets the store limits
** and opens the store. 0, or 2 after saying why on stderr (naming cmd). */
int cli_runtime_open(flowrun **rt, const flowrun_callbacks *cb, cli_opts *o, const char *flow,
                     const cli_store_opts *s, int *decode_ref, const char *cmd);

/* ---- stdin, line by line through the loop (common.c) ---- */

/* The one rule: fd 0 is watched by the loop (flowrun_watch) when the loop
** accepts it, and then read only when it is readable; otherwise (a
** regular file, /dev/null: epoll refuses them) it never blocks long and
** is read when the command wants more. A line ends at '\n'; a '\r' before
** it (or at the end of a last line without '\n') is dropped. */
typedef struct cli_input {
  flowrun *rt;
  const char *cmd;                      /* "flowrun host": names an out-of-memory exit */
  size_t max;                           /* longer lines are refused, not kept (0: no limit) */
  void (*on_readable)(void *ud, int fd);
  void *ud;
  char *buf;                            /* bytes not yet a line */
  size_t len, cap, used;                /* used: handed out by cli_input_line */
  bool pollable;                        /* the loop watches fd 0 */
  bool watching;                        /* it does right now */
  bool nonblock;                        /* O_NONBLOCK was set on fd 0 */
  bool eof;                             /* no more input */
  bool skipping;                        /* in a line longer than max */
} cli_input;

/* What cli_input_line found. */
enum { CLI_NONE, CLI_LINE, CLI_LONG };

/* Sets in up for fd 0 of rt; on_readable(ud, 0) is called when the loop
** sees fd 0 readable, between cli_input_watch(in, true) and false. */
void cli_input_open(cli_input *in, flowrun *rt, const char *cmd, size_t max,
                    void (*on_readable)(void *ud, int fd), void *ud);
/* Reads what fd 0 has; false at the end of input (in->eof set, and the
** watch off). Out of memory: says so naming in->cmd, and exits 2. */
bool cli_input_read(cli_input *in);
/* The next complete line (*line, *len: valid until the next read), or
** CLI_LONG once for a line longer than in->max (the rest of it is
** dropped), or CLI_NONE. */
int cli_input_line(cli_input *in, const char **line, size_t *len);
/* At the end of input: a last line without '\n' (NULL when none); it is
** taken. */
const char *cli_input_rest(cli_input *in, size_t *len);
/* Whether a complete line is there already. */
bool cli_input_has_line(const cli_input *in);
/* The loop watches fd 0 (on) or not; nothing when it cannot. */
void cli_input_watch(cli_input *in, bool on);
/* Stops watching, makes fd 0 blocking again and frees the buffer. */
void cli_input_close(cli_input *in);

#endif
