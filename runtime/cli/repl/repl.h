/*
** repl.h -- what the three files of `flowrun repl` share: main.c (the
** loop and the setting up), term.c (the terminal, Ctrl-C, input) and
** sessions.c (sessions and the `host` table of lua/flowrun/repl.lua).
** main.c calls both others, sessions.c calls term.c, term.c neither.
** Not installed.
*/
#ifndef FLOWRUN_REPL_H
#define FLOWRUN_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <termios.h>

#include <lua.h>

#include "cli/common.h"
#include "flowrun.h"

#define DIM   "\033[2m"
#define RED   "\033[31m"
#define RESET "\033[0m"

typedef struct rsession {              /* a session started with .run */
  struct rsession *next;
  bool asking;                          /* waits for the person's answer */
  bool ended;
  int how;                              /* FLOWRUN_DONE or FLOWRUN_FAILED */
  char id[];
} rsession;

typedef struct last_call {              /* the last trace, for .last */
  char *integration, *method, *url, *label, *reason, *error, *body;
  char *curl;                           /* flowrun_trace_curl() */
  char **headers;
  int status, attempts;
  double elapsed_ms;
} last_call;

typedef struct repl {
  flowrun *rt;
  lua_State *L;                         /* the runtime's main thread */
  lua_State *E;                         /* evaluates lines; Ctrl-C hooks it */
  int eref, objref;                     /* registry: E, the Lua repl object */
  bool tty, color, trace;
  /* input */
  char **q;                             /* complete lines, oldest first */
  int qhead, qlen, qcap;
  long lineno;                          /* lines taken from the input so far */
  cli_input in;                         /* stdin; in.eof: no more input */
  bool ctrl_d;                          /* Ctrl-D on an empty line, not taken yet */
  bool editing;
  bool answering;                       /* lines answer a flow: kept out of history */
  char *history;                        /* the history file, or NULL */
  char *last_added;                     /* the newest history line */
  int sigpipe[2];
  /* sessions */
  rsession *sessions, *fg;
  int next_id;
  last_call last;
  struct termios saved;
} repl;

/* What repl_wait_line() got. */
enum { GOT_LINE, GOT_EOF, GOT_INTERRUPT };

/* term.c */

/* Sets the terminal side up: stdin, the Ctrl-C pipe, libedit, signals. */
void repl_term_start(repl *r);
/* Calls r->E's function with nargs arguments, Ctrl-C armed (lua_pcall, 1 result). */
int repl_eval(repl *r, int nargs);
/* Gives the terminal back as it was (before flowrun_free). */
void repl_term_restore(repl *r);
/* Frees what term.c holds (after flowrun_free). */
void repl_term_free(repl *r);

/* Whether Ctrl-C was pressed and nobody has taken it yet. */
int repl_interrupted(void);
/* Takes a pending Ctrl-C: clears the flag and the hook, ends the "^C" line. */
void repl_consume_interrupt(repl *r);
/* Makes the loop's current step return (a session changed what we wait for). */
void repl_wake(void);
/* Clears the line being edited before output; repl_out_end draws it again. */
void repl_out_begin(repl *r);
/* Flushes output and redraws the line being edited. */
void repl_out_end(repl *r);
/* Writes prefix, then s (secrets hidden) in colour, then a line break. */
void repl_put_line(repl *r, FILE *f, const char *prefix, const char *color,
                   const char *s, size_t len);
/* repl_put_line() of a C string, no prefix. */
void repl_put_str(repl *r, FILE *f, const char *color, const char *s);
/* The oldest complete line of input, to free, or NULL. */
char *repl_pop_line(repl *r);
/* Drops the line being edited, as Ctrl-C does. */
void repl_cancel_editing(repl *r);
/* s (len bytes, to its first NUL) with every secret as "***", malloc'd;
** NULL when out of memory. */
char *repl_redact(repl *r, const char *s, size_t len);
/* A flow that took Ctrl-C stopped, or the loop turned: the count of
** Ctrl-Cs not heeded starts again. */
void repl_flow_stopped(void);
/* One turn of the loop; with want, the prompt is shown and stdin read. */
void repl_turn(repl *r, bool want, const char *prompt);
/* Runs the loop until a line (*line, to free), the end of input or Ctrl-C. */
int repl_wait_line(repl *r, const char *prompt, char **line);

/* sessions.c */

/* The runtime's callbacks, reporting to r. */
flowrun_callbacks repl_callbacks(repl *r);
/* Pushes the `host` table, its functions bound to r. */
void repl_push_host(lua_State *L, repl *r);
/* Frees the sessions and the last call that r still holds. */
void repl_host_free(repl *r);

#endif
