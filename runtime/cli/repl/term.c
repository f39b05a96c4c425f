/*
** term.c -- the terminal side of `flowrun repl`: Ctrl-C, output while a
** prompt may be on the screen, input (libedit on a terminal, lines from
** a pipe or a file otherwise) and completion. main.c holds the loop and
** the setting up, sessions.c the sessions and the `host` table; repl.h
** what the three share.
**
** Input is read from the runtime's loop: a flowrun_watch() on fd 0 feeds
** rl_callback_read_char(), so sessions keep running while the person types.
** A finished line is only queued there and is evaluated between
** flowrun_step() calls, because api_node outside a session drives the loop
** itself and refuses to run inside a step.
**
** Ctrl-C, as in lua.c, only sets a flag and a hook in the signal handler,
** and writes a byte to a pipe the loop watches so that a waiting loop
** wakes up. Then whoever is waiting consumes it: a call in flight ends with
** label "error", reason "interrupted" (flowrun_interrupt); a flow in the
** foreground is stopped; at a prompt the line is dropped; Lua code that runs
** meets the hook, which raises "interrupted!".
**
** Without a terminal (`flowrun repl < script`) lines are read as they come
** (common.c), with no prompt, no colour and no history.
*/
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <editline/readline.h>
#include <lua.h>
#include <lauxlib.h>

#include "cli/common.h"
#include "flowrun.h"
#include "repl.h"

static repl *the_repl;                  /* libedit's callbacks carry no data */
static volatile sig_atomic_t interrupted, evaluating, resized;
static volatile sig_atomic_t caret;     /* the terminal echoed "^C": end that line */
static volatile sig_atomic_t breaks;    /* Ctrl-Cs a running flow has not heeded */
static lua_State *eval_thread;
static int sigpipe_w = -1;

/* ---- Ctrl-C ---- */

/* Ends the line where the terminal echoed "^C" (it does so while no line
** is edited), before anything else is written. */
static void end_caret_line(void) {
  if (!caret) return;
  caret = 0;
  fputc('\n', stdout);
  fflush(stdout);
}

/* The hook set by the handler: raises in the Lua code that runs. */
static void lstop(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  interrupted = 0;
  end_caret_line();
  lua_pushliteral(L, "interrupted!");
  lua_error(L);
}

static void on_sigterm(int sig);

static void on_sigint(int sig) {
  int saved = errno;
  (void)sig;
  if (the_repl && the_repl->tty && !the_repl->editing) caret = 1;
  if (the_repl && flowrun_break(the_repl->rt)) {   /* a session's Lua runs: */
    if (++breaks == 3) {                /* it ends with "interrupted!", or */
      static const char msg[] = "\r\nflowrun: the flow does not stop "
                                "(it is stuck inside a C function: a pattern match?); Ctrl-C again leaves\r\n";
      if (write(2, msg, sizeof msg - 1) < 0) {}
      signal(SIGINT, on_sigterm);       /* the next: terminal back, and leave */
    }
    errno = saved;
    return;
  }
  interrupted = 1;
  if (evaluating)
    lua_sethook(eval_thread, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  if (write(sigpipe_w, "", 1) < 0) {}   /* full: a wake-up is pending anyway */
  errno = saved;
}

static void on_sigwinch(int sig) {
  (void)sig;
  resized = 1;
}

static void catch_sigint(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = on_sigint;            /* no SA_RESTART: epoll_wait wakes */
  sigaction(SIGINT, &sa, NULL);
}

/* SIGTERM, SIGHUP: give the terminal back as it was, then die of it. */
static void on_sigterm(int sig) {
  if (the_repl && the_repl->tty) tcsetattr(0, TCSANOW, &the_repl->saved);
  signal(sig, SIG_DFL);
  raise(sig);
}

/* Ctrl-C was pressed and this caller takes it. */
void repl_consume_interrupt(repl *r) {
  interrupted = 0;
  lua_sethook(r->E, NULL, 0, 0);
  end_caret_line();
}

/* The loop woke up for Ctrl-C: a blocking call in flight ends at once. */
static void on_sigpipe(void *ud, int fd) {
  repl *r = ud;
  char buf[64];
  while (read(fd, buf, sizeof buf) > 0) {}
  if (interrupted && flowrun_interrupt(r->rt, NULL) > 0) repl_consume_interrupt(r);
}

/* Ctrl-C was pressed and nobody has taken it yet. */
int repl_interrupted(void) {
  return interrupted;
}

/* A session changed what the REPL waits for: make the step that runs it
** return instead of waiting on in epoll (the byte is the Ctrl-C pipe's). */
void repl_wake(void) {
  if (write(sigpipe_w, "", 1) < 0) {}
}

/* ---- output ---- */

/* Output while a prompt may be on the screen: the line being edited is
** cleared first and drawn again after, so that it stays the last line. */
void repl_out_begin(repl *r) {
  end_caret_line();
  if (r->editing) fputs("\r\033[K", stdout);
}

void repl_out_end(repl *r) {
  fflush(stdout);
  fflush(stderr);
  if (r->editing) rl_forced_update_display();
}

/* s (len bytes, to its first NUL) with every secret as "***", malloc'd;
** NULL when out of memory. */
char *repl_redact(repl *r, const char *s, size_t len) {
  char *copy = strndup(s, len), *shown;
  if (!copy) return NULL;
  shown = flowrun_redact(r->rt, copy);
  free(copy);
  return shown;
}

/* Writes prefix, then s (secrets hidden) in colour, then a line break. */
void repl_put_line(repl *r, FILE *f, const char *prefix, const char *color,
                   const char *s, size_t len) {
  char *shown = repl_redact(r, s, len);
  repl_out_begin(r);
  if (f == stderr) fflush(stdout);
  if (color && r->color) fputs(color, f);
  fputs(prefix, f);
  if (f == stderr && shown)             /* errors, logs, traces: text from outside */
    cli_put_text(f, shown, strlen(shown));
  else
    fputs(shown ? shown : "", f);
  if (color && r->color) fputs(RESET, f);
  fputc('\n', f);
  repl_out_end(r);
  free(shown);
}

void repl_put_str(repl *r, FILE *f, const char *color, const char *s) {
  repl_put_line(r, f, "", color, s, strlen(s));
}

/* ---- input ---- */

static void push_line(repl *r, char *line) {
  if (r->qlen == r->qcap) {
    int cap = r->qcap ? r->qcap * 2 : 16;
    char **q = malloc(cap * sizeof *q);
    if (!q) { free(line); return; }
    for (int i = 0; i < r->qlen; i++) q[i] = r->q[(r->qhead + i) % r->qcap];
    free(r->q);
    r->q = q;
    r->qcap = cap;
    r->qhead = 0;
  }
  r->q[(r->qhead + r->qlen++) % r->qcap] = line;
}

char *repl_pop_line(repl *r) {
  char *line;
  if (r->qlen == 0) return NULL;
  line = r->q[r->qhead];
  r->qhead = (r->qhead + 1) % r->qcap;
  r->qlen--;
  r->lineno++;
  return line;
}


/* libedit: the line is complete (NULL: end of input). */
static void on_line(char *line) {
  repl *r = the_repl;
  r->editing = false;                   /* libedit has left its line */
  cli_input_watch(&r->in, false);                /* type-ahead waits in the terminal */
  if (!line) {                          /* Ctrl-D: for whoever waits for a line */
    r->ctrl_d = true;
    fputc('\n', stdout);
    return;
  }
  if (*line && r->history && !r->answering && !(r->last_added && strcmp(r->last_added, line) == 0)) {
    add_history(line);
    write_history(r->history);
    free(r->last_added);
    r->last_added = strdup(line);
  }
  push_line(r, line);
}

/* Bytes from a pipe or a file: complete lines go to the queue. */
static void read_input(repl *r) {
  const char *line;
  size_t len;
  char *copy;
  bool more = cli_input_read(&r->in);
  while (cli_input_line(&r->in, &line, &len) == CLI_LINE)
    if ((copy = strndup(line, len))) push_line(r, copy);
  if (!more && (line = cli_input_rest(&r->in, &len)) && (copy = strndup(line, len)))
    push_line(r, copy);                 /* a last line without '\n' */
}

static void on_stdin(void *ud, int fd) {
  repl *r = ud;
  int avail = 0;
  if (!r->tty) {
    read_input(r);
    return;
  }
  if (ioctl(fd, FIONREAD, &avail) == 0 && avail == 0) {
    /* Nothing to read: either the terminal hung up, or Ctrl-C flushed
    ** what was typed between the wake-up and now (ISIG drops type-ahead).
    ** Only the first ends the input. */
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLERR | POLLNVAL))) {
      r->in.eof = true;
      cli_input_watch(&r->in, false);
    }
    return;
  }
  if (resized) {
    resized = 0;
    rl_resize_terminal();
  }
  rl_callback_read_char();
}

/* Shows prompt and edits a line (terminal only). */
static void start_editing(repl *r, const char *prompt) {
  if (r->editing) return;
  r->editing = true;
  rl_callback_handler_install(prompt, on_line);
}

/* Drops the line being edited, as Ctrl-C does. */
void repl_cancel_editing(repl *r) {
  if (!r->editing) return;
  fputs("^C\n", stdout);
  fflush(stdout);
  rl_callback_handler_remove();
  r->editing = false;
  cli_input_watch(&r->in, false);
}

/* One turn of the loop; when want is set, a line is wanted: the prompt
** is shown and stdin read. */
void repl_turn(repl *r, bool want, const char *prompt) {
  if (want && !r->in.eof && !r->ctrl_d) {
    if (r->tty) start_editing(r, prompt);
    if (!r->in.pollable) {              /* a file: reading never waits long */
      read_input(r);
      return;
    }
    cli_input_watch(&r->in, true);
  }
  flowrun_step_budget(r->rt, -1, CLI_SLICE_MS);
  repl_flow_stopped();                  /* the loop turns again */
}

/* A flow that took Ctrl-C stopped (or the loop turned): the count of
** Ctrl-Cs not heeded starts again. */
void repl_flow_stopped(void) {
  if (!breaks) return;
  if (breaks >= 3) catch_sigint();
  breaks = 0;
}

/* Waits for a line, running the loop: GOT_LINE with *line to free,
** GOT_EOF, or GOT_INTERRUPT (Ctrl-C, left for the caller to consume). */
int repl_wait_line(repl *r, const char *prompt, char **line) {
  for (;;) {
    if ((*line = repl_pop_line(r))) return GOT_LINE;
    if (interrupted) {
      repl_cancel_editing(r);
      return GOT_INTERRUPT;
    }
    if (r->ctrl_d || r->in.eof) {
      r->ctrl_d = false;
      return GOT_EOF;
    }
    repl_turn(r, true, prompt);
  }
}

/* ---- completion ---- */

/* libedit asks for the completions of the word from start to end of the
** line: repl:complete(line, start, end) -> candidates, append. */
static char **complete(const char *text, int start, int end) {
  repl *r = the_repl;
  lua_State *L = r->L;
  int top = lua_gettop(L);
  char **m = NULL;
  int st;
  (void)text;
  rl_attempted_completion_over = 1;     /* never libedit's own file names */
  rl_completion_append_character = '\0';
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->objref);
  lua_getfield(L, -1, "complete");
  lua_insert(L, -2);
  lua_pushstring(L, rl_line_buffer);
  lua_pushinteger(L, start);
  lua_pushinteger(L, end);
  eval_thread = L;                      /* a table's __index may loop: Ctrl-C */
  evaluating = 1;
  st = interrupted ? LUA_ERRRUN : lua_pcall(L, 4, 2, 0);   /* Ctrl-C came first */
  evaluating = 0;
  eval_thread = r->E;
  lua_sethook(L, NULL, 0, 0);
  if (st == LUA_OK && lua_istable(L, -2)) {
    int n = (int)lua_rawlen(L, -2);
    if (lua_isstring(L, -1)) rl_completion_append_character = lua_tostring(L, -1)[0];
    if (n > 0 && (m = calloc(n + 2, sizeof *m))) {
      size_t common = 0;
      for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -2, i);
        m[i] = strdup(luaL_optstring(L, -1, ""));
        lua_pop(L, 1);
      }
      if (m[1]) {
        common = strlen(m[1]);
        for (int i = 2; i <= n; i++) {
          size_t j = 0;
          while (j < common && m[i] && m[i][j] == m[1][j]) j++;
          common = j;
        }
        m[0] = strndup(m[1], common);
      }
      if (n > 1) rl_completion_append_character = '\0';
    }
  }
  lua_settop(L, top);
  return m;
}

/* ---- setting up ---- */

static void init_terminal(repl *r) {
  const char *home = getenv("HOME");
  tcgetattr(0, &r->saved);
  setlocale(LC_CTYPE, "");              /* UTF-8 typing; Lua is unaffected */
  rl_readline_name = "flowrun";
  rl_catch_signals = 0;                 /* Ctrl-C is ours, see on_sigint */
  rl_initialize();
  rl_attempted_completion_function = complete;
  /* a Lua word goes on through . and : (string.format, s:upper) */
  rl_basic_word_break_characters = " \t\n\"'`@$><=;|&{}()[],+-*/%^~#";
  rl_parse_and_bind("settc bl \033[m");  /* no bell: libedit rings even on a unique completion */
  stifle_history(1000);
  if (home && *home && (r->history = malloc(strlen(home) + 20))) {
    sprintf(r->history, "%s/.flowrun_history", home);
    read_history(r->history);
  }
}

/* Sets the terminal side up for r, whose runtime and E exist: stdin
** through the loop, the Ctrl-C pipe, libedit on a terminal, the signals. */
void repl_term_start(repl *r) {
  struct sigaction sa;
  the_repl = r;
  r->tty = isatty(0);
  r->color = r->tty && isatty(1) && !getenv("NO_COLOR")
             && !(getenv("TERM") && strcmp(getenv("TERM"), "dumb") == 0);
  cli_input_open(&r->in, r->rt, "flowrun repl", 0, on_stdin, r);
  if (pipe(r->sigpipe) == 0) {
    for (int k = 0; k < 2; k++) {
      fcntl(r->sigpipe[k], F_SETFL, fcntl(r->sigpipe[k], F_GETFL) | O_NONBLOCK);
      fcntl(r->sigpipe[k], F_SETFD, FD_CLOEXEC);
    }
    sigpipe_w = r->sigpipe[1];
    flowrun_watch(r->rt, r->sigpipe[0], on_sigpipe, r);
  }
  eval_thread = r->E;
  if (r->tty) init_terminal(r);
  catch_sigint();
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = on_sigwinch;
  sigaction(SIGWINCH, &sa, NULL);
  if (r->tty) {
    signal(SIGTERM, on_sigterm);
    signal(SIGHUP, on_sigterm);
  }
}

/* Calls what r->E holds (a function and nargs arguments) with Ctrl-C
** armed: the hook raises "interrupted!" in it. One result, as lua_pcall. */
int repl_eval(repl *r, int nargs) {
  int st;
  interrupted = 0;
  lua_sethook(r->E, NULL, 0, 0);
  evaluating = 1;
  st = lua_pcall(r->E, nargs, 1, 0);
  evaluating = 0;
  lua_sethook(r->E, NULL, 0, 0);
  end_caret_line();
  return st;
}

/* Gives the terminal back as it was; before the runtime is freed. */
void repl_term_restore(repl *r) {
  if (r->editing) rl_callback_handler_remove();
  if (r->tty) tcsetattr(0, TCSANOW, &r->saved);
  fflush(stdout);
  signal(SIGINT, SIG_DFL);
}

/* After the runtime is freed: the pipe closed, the input and history freed. */
void repl_term_free(repl *r) {
  the_repl = NULL;
  sigpipe_w = -1;
  for (int k = 0; k < 2; k++)
    if (r->sigpipe[k] >= 0) close(r->sigpipe[k]);
  cli_input_close(&r->in);
  while (r->qlen > 0) free(repl_pop_line(r));
  free(r->q);
  free(r->history);
  free(r->last_added);
  if (r->tty) clear_history();
}
