/*
** cli.h -- subcommands of the flowrun binary that live in their own files.
** Each returns the exit status (0 ok, 1 failure, 2 usage or configuration
** error). repl and host take the arguments after the subcommand's name;
** mock takes them as a main() does, argv[0] being "mock".
*/
#ifndef FLOWRUN_CLI_H
#define FLOWRUN_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "flowrun.h"

int flowrun_mock_main(int argc, char **argv);
int flowrun_repl_main(int argc, char **argv);
int flowrun_host_main(int argc, char **argv);

/* main.c: what run and host both write */
void cli_json_str(FILE *f, const char *s, size_t len);
bool cli_utf8_valid(const char *s, size_t len);
void cli_put_text(FILE *f, const char *s, size_t len);
void cli_trace(bool text, FILE *json, const flowrun_trace *t);
int cli_output_done(int status, FILE *trace_json, const char *name);

/* limits.c: --allow LIST and --limit NAME=VALUE, for run, host, repl */
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

#endif
