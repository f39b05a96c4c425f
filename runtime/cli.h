/*
** cli.h -- subcommands of the flowrun binary that live in their own files.
** Each takes the arguments after the subcommand name and returns the exit
** status (0 ok, 1 failure, 2 usage or configuration error).
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

#endif
