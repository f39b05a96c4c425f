/*
** repl.c -- `flowrun repl [-I FILE] [--trace] [FLOW.lua [ARGS...]]`.
**
** A thin client of flowrun.h. This file holds what needs C: the terminal
** (libedit, through its readline-compatible callback interface), Ctrl-C,
** and the loop. What a line means, how values print and what completes is
** policy in Lua: lua/flowrun/repl.lua and lua/flowrun/pretty.lua.
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
** Without a terminal (`flowrun repl < script`) lines are read as they come,
** with no prompt, no colour and no history.
*/
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <editline/readline.h>
#include <lua.h>
#include <lauxlib.h>

#include "cli.h"
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
  char **headers;
  int status, attempts;
  double elapsed_ms;
} last_call;

typedef struct repl {
  flowrun *rt;
  lua_State *L;                         /* the runtime's main thread */
  lua_State *E;                         /* evaluates lines; Ctrl-C hooks it */
  int eref, objref;                     /* registry: E, the Lua repl object */
  bool tty, color, trace, pollable;
  /* input */
  char **q;                             /* complete lines, oldest first */
  int qhead, qlen, qcap;
  char *in;                             /* bytes not yet a line (no terminal) */
  size_t inlen, incap;
  bool eof;                             /* no more input */
  bool ctrl_d;                          /* Ctrl-D on an empty line, not taken yet */
  bool watching, editing;
  char *history;                        /* the history file, or NULL */
  char *last_added;                     /* the newest history line */
  int sigpipe[2];
  /* sessions */
  rsession *sessions, *fg;
  int next_id;
  last_call last;
  struct termios saved;
} repl;

static repl *the_repl;                  /* libedit's callbacks carry no data */
static volatile sig_atomic_t interrupted, evaluating, resized;
static volatile sig_atomic_t caret;     /* the terminal echoed "^C": end that line */
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

static void on_sigint(int sig) {
  int saved = errno;
  (void)sig;
  interrupted = 1;
  if (the_repl && the_repl->tty && !the_repl->editing) caret = 1;
  if (evaluating)
    lua_sethook(eval_thread, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  if (write(sigpipe_w, "", 1) < 0) {}   /* full: a wake-up is pending anyway */
  errno = saved;
}

static void on_sigwinch(int sig) {
  (void)sig;
  resized = 1;
}

/* SIGTERM, SIGHUP: give the terminal back as it was, then die of it. */
static void on_sigterm(int sig) {
  if (the_repl && the_repl->tty) tcsetattr(0, TCSANOW, &the_repl->saved);
  signal(sig, SIG_DFL);
  raise(sig);
}

/* Ctrl-C was pressed and this caller takes it. */
static void consume_interrupt(repl *r) {
  interrupted = 0;
  lua_sethook(r->E, NULL, 0, 0);
  end_caret_line();
}

/* The loop woke up for Ctrl-C: a blocking call in flight ends at once. */
static void on_sigpipe(void *ud, int fd) {
  repl *r = ud;
  char buf[64];
  while (read(fd, buf, sizeof buf) > 0) {}
  if (interrupted && flowrun_interrupt(r->rt, NULL) > 0) consume_interrupt(r);
}

/* ---- output ---- */

/* Output while a prompt may be on the screen: the line being edited is
** cleared first and drawn again after, so that it stays the last line. */
static void out_begin(repl *r) {
  if (r->editing) fputs("\r\033[K", stdout);
}

static void out_end(repl *r) {
  fflush(stdout);
  fflush(stderr);
  if (r->editing) rl_forced_update_display();
}

/* Writes prefix, then s (secrets hidden) in colour, then a line break. */
static void put_line(repl *r, FILE *f, const char *prefix, const char *color,
                     const char *s, size_t len) {
  char *copy = malloc(len + 1), *shown;
  if (!copy) return;
  memcpy(copy, s, len);
  copy[len] = '\0';
  shown = flowrun_redact(r->rt, copy);
  out_begin(r);
  if (f == stderr) fflush(stdout);
  if (color && r->color) fputs(color, f);
  fputs(prefix, f);
  fputs(shown ? shown : "", f);
  if (color && r->color) fputs(RESET, f);
  fputc('\n', f);
  out_end(r);
  free(shown);
  free(copy);
}

static void put_str(repl *r, FILE *f, const char *color, const char *s) {
  put_line(r, f, "", color, s, strlen(s));
}

/* ---- sessions ---- */

/* A session changed what the REPL waits for: make the step that runs it
** return instead of waiting on in epoll (the byte is the Ctrl-C pipe's). */
static void wake(void) {
  if (write(sigpipe_w, "", 1) < 0) {}
}

static rsession *find(repl *r, const char *id) {
  rsession *s;
  for (s = r->sessions; s && strcmp(s->id, id) != 0; s = s->next) {}
  return s;
}

static void forget(repl *r, rsession *s) {
  rsession **p;
  for (p = &r->sessions; *p && *p != s; p = &(*p)->next) {}
  if (*p) *p = s->next;
  if (r->fg == s) r->fg = NULL;
  free(s);
}

/* "[ID] " for a session in the background, "" otherwise. */
static const char *tag(repl *r, const char *id, char *buf, size_t size) {
  rsession *s = id ? find(r, id) : NULL;
  if (!id || (s && s == r->fg)) return "";
  snprintf(buf, size, "[%s] ", id);
  return buf;
}

static void on_say(void *ud, const char *id, const char *text, size_t len) {
  repl *r = ud;
  char buf[80];
  put_line(r, stdout, tag(r, id, buf, sizeof buf), NULL, text, len);
}

static void on_ask(void *ud, const char *id) {
  repl *r = ud;
  rsession *s = find(r, id);
  char buf[160];
  if (!s) return;
  s->asking = true;
  wake();
  if (s != r->fg && r->tty) {
    snprintf(buf, sizeof buf, "[%s] waits for an answer: .fg %s", id, id);
    put_str(r, stdout, DIM, buf);
  }
}

static void on_end(void *ud, const char *id, int how, const char *error) {
  repl *r = ud;
  rsession *s = find(r, id);
  char buf[80];
  if (how == FLOWRUN_FAILED)
    put_line(r, stderr, tag(r, id, buf, sizeof buf), RED, error, strlen(error));
  else if (s && s != r->fg) {
    snprintf(buf, sizeof buf, "[%s] done", id);
    put_str(r, stdout, DIM, buf);
  }
  if (!s) return;
  wake();
  s->ended = true;
  s->how = how;
  if (s != r->fg) forget(r, s);        /* the foreground loop forgets its own */
}

static void on_log(void *ud, const char *id, const char *level, const char *msg) {
  repl *r = ud;
  char buf[80], prefix[160];
  snprintf(prefix, sizeof prefix, "%s%s: ", tag(r, id, buf, sizeof buf), level);
  put_line(r, stderr, prefix, NULL, msg, strlen(msg));
}

static void last_free(last_call *l) {
  free(l->integration);
  free(l->method);
  free(l->url);
  free(l->label);
  free(l->reason);
  free(l->error);
  free(l->body);
  for (int i = 0; l->headers && l->headers[i]; i++) free(l->headers[i]);
  free(l->headers);
  memset(l, 0, sizeof *l);
}

static char *copy_str(const char *s) {
  return s ? strdup(s) : NULL;
}

static void on_trace(void *ud, const flowrun_trace *t) {
  repl *r = ud;
  last_call *l = &r->last;
  int n = 0;
  last_free(l);
  l->integration = copy_str(t->integration);
  l->method = copy_str(t->method);
  l->url = copy_str(t->url);
  l->label = copy_str(t->label);
  l->reason = copy_str(t->reason);
  l->error = copy_str(t->error);
  l->body = copy_str(t->body);
  l->status = t->status;
  l->attempts = t->attempts;
  l->elapsed_ms = t->elapsed_ms;
  while (t->headers && t->headers[n]) n++;
  if ((l->headers = calloc(n + 1, sizeof *l->headers)))
    for (int i = 0; i < n; i++) l->headers[i] = strdup(t->headers[i]);
  if (r->trace) {
    char line[4096];
    int k = snprintf(line, sizeof line, "trace session=%s integration=%s method=%s url=%s label=%s",
                     t->session ? t->session : "-", t->integration, t->method, t->url, t->label);
    if (t->status && k < (int)sizeof line)
      k += snprintf(line + k, sizeof line - k, " status=%d", t->status);
    if (k < (int)sizeof line)
      k += snprintf(line + k, sizeof line - k, " elapsed_ms=%.0f attempts=%d", t->elapsed_ms, t->attempts);
    if (t->reason && k < (int)sizeof line)
      snprintf(line + k, sizeof line - k, " reason=%s", t->reason);
    put_str(r, stderr, DIM, line);
  }
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

static char *pop_line(repl *r) {
  char *line;
  if (r->qlen == 0) return NULL;
  line = r->q[r->qhead];
  r->qhead = (r->qhead + 1) % r->qcap;
  r->qlen--;
  return line;
}

static void on_stdin(void *ud, int fd);

static void watch_stdin(repl *r, bool on) {
  if (!r->pollable || on == r->watching || (on && r->eof)) return;
  r->watching = on;
  flowrun_watch(r->rt, 0, on ? on_stdin : NULL, r);
}

/* libedit: the line is complete (NULL: end of input). */
static void on_line(char *line) {
  repl *r = the_repl;
  r->editing = false;                   /* libedit has left its line */
  watch_stdin(r, false);                /* type-ahead waits in the terminal */
  if (!line) {                          /* Ctrl-D: for whoever waits for a line */
    r->ctrl_d = true;
    fputc('\n', stdout);
    return;
  }
  if (*line && r->history && !(r->last_added && strcmp(r->last_added, line) == 0)) {
    add_history(line);
    write_history(r->history);
    free(r->last_added);
    r->last_added = strdup(line);
  }
  push_line(r, line);
}

/* Bytes from a pipe or a file: complete lines go to the queue. */
static void read_input(repl *r) {
  ssize_t n;
  char *nl;
  if (r->incap - r->inlen < 4096) {
    char *p = realloc(r->in, r->incap = r->incap * 2 + 8192);
    if (!p) { r->eof = true; return; }
    r->in = p;
  }
  n = read(0, r->in + r->inlen, r->incap - r->inlen);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n > 0) r->inlen += n;
  while ((nl = memchr(r->in, '\n', r->inlen))) {
    size_t len = nl - r->in, k = len;
    char *line;
    if (k > 0 && r->in[k - 1] == '\r') k--;
    if ((line = malloc(k + 1))) {
      memcpy(line, r->in, k);
      line[k] = '\0';
      push_line(r, line);
    }
    memmove(r->in, nl + 1, r->inlen -= len + 1);
  }
  if (n <= 0) {                         /* end of input: a last line without '\n' */
    if (r->inlen > 0 && (r->in[r->inlen] = '\0', true)) push_line(r, strdup(r->in));
    r->inlen = 0;
    r->eof = true;
    watch_stdin(r, false);
  }
}

static void on_stdin(void *ud, int fd) {
  repl *r = ud;
  int avail = 0;
  if (!r->tty) {
    read_input(r);
    return;
  }
  if (ioctl(fd, FIONREAD, &avail) == 0 && avail == 0) {   /* hung up */
    r->eof = true;
    watch_stdin(r, false);
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
static void cancel_editing(repl *r) {
  if (!r->editing) return;
  fputs("^C\n", stdout);
  fflush(stdout);
  rl_callback_handler_remove();
  r->editing = false;
  watch_stdin(r, false);
}

/* One turn of the loop; when want is set, a line is wanted: the prompt
** is shown and stdin read. */
static void turn(repl *r, bool want, const char *prompt) {
  if (want && !r->eof && !r->ctrl_d) {
    if (r->tty) start_editing(r, prompt);
    if (!r->pollable) {                 /* a file: reading never waits long */
      read_input(r);
      return;
    }
    watch_stdin(r, true);
  }
  flowrun_step(r->rt, -1);
}

enum { GOT_LINE, GOT_EOF, GOT_INTERRUPT };

/* Waits for a line, running the loop: GOT_LINE with *line to free,
** GOT_EOF, or GOT_INTERRUPT (Ctrl-C, left for the caller to consume). */
static int wait_line(repl *r, const char *prompt, char **line) {
  for (;;) {
    if ((*line = pop_line(r))) return GOT_LINE;
    if (interrupted) {
      cancel_editing(r);
      return GOT_INTERRUPT;
    }
    if (r->ctrl_d || r->eof) {
      r->ctrl_d = false;
      return GOT_EOF;
    }
    turn(r, true, prompt);
  }
}

/* ---- what Lua may ask of the REPL (the `host` table) ---- */

#define REPL_OF(L) ((repl *)lua_touserdata((L), lua_upvalueindex(1)))

/* write(text [, "err"]): output, secrets hidden, above the prompt. */
static int l_write(lua_State *L) {
  repl *r = REPL_OF(L);
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  FILE *f = lua_isstring(L, 2) && lua_tostring(L, 2)[0] == 'e' ? stderr : stdout;
  char *copy = malloc(len + 1), *shown;
  if (!copy) return luaL_error(L, "out of memory");
  memcpy(copy, s, len);
  copy[len] = '\0';
  shown = flowrun_redact(r->rt, copy);
  free(copy);
  if (!shown) return luaL_error(L, "out of memory");
  out_begin(r);
  if (f == stderr) fflush(stdout);
  fputs(shown, f);
  out_end(r);
  free(shown);
  return 0;
}

/* read_line(prompt) -> line, nil at the end of input, false on Ctrl-C
** (the hook raises "interrupted!" as soon as Lua runs again). */
static int l_read_line(lua_State *L) {
  repl *r = REPL_OF(L);
  const char *prompt = luaL_optstring(L, 1, "");
  char *line;
  int got = wait_line(r, r->tty ? prompt : "", &line);
  if (got == GOT_LINE) {
    lua_pushstring(L, line);
    free(line);
  } else if (got == GOT_EOF)
    lua_pushnil(L);
  else
    lua_pushboolean(L, 0);
  return 1;
}

/* start(flow, args, background) -> id | nil, message: a new session of
** flow, read again from its file. */
static int l_start(lua_State *L) {
  repl *r = REPL_OF(L);
  const char *flow = luaL_checkstring(L, 1);
  int n, i;
  const char **argv;
  char id[24];
  rsession *s;
  luaL_checktype(L, 2, LUA_TTABLE);
  n = (int)lua_rawlen(L, 2);
  argv = lua_newuserdatauv(L, (n + 1) * sizeof *argv, 0);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, 2, i + 1);
    argv[i] = luaL_checkstring(L, -1);
    lua_pop(L, 1);                      /* the table keeps the string */
  }
  snprintf(id, sizeof id, "%d", ++r->next_id);
  if (!(s = calloc(1, sizeof *s + strlen(id) + 1))) return luaL_error(L, "out of memory");
  strcpy(s->id, id);
  s->next = r->sessions;
  r->sessions = s;
  flowrun_forget_flows(r->rt);
  if (flowrun_start(r->rt, id, flow, n, argv) != FLOWRUN_OK) {
    forget(r, s);
    r->next_id--;
    lua_pushnil(L);
    lua_pushstring(L, flowrun_errmsg(r->rt));
    return 2;
  }
  lua_pushstring(L, id);
  return 1;
}

/* foreground(id) -> "done" | "error" | "interrupted" | nil, message:
** runs the loop until session id ends; the person at the terminal is its
** end-user (a closed input closes its channel), Ctrl-C stops it. */
static int l_foreground(lua_State *L) {
  repl *r = REPL_OF(L);
  const char *id = luaL_checkstring(L, 1);
  const char *prompt = luaL_optstring(L, 2, "");
  rsession *s = find(r, id);
  const char *how = "interrupted";
  if (!s) {
    lua_pushnil(L);
    lua_pushfstring(L, "no session %s (.sessions lists them)", id);
    return 2;
  }
  r->fg = s;
  for (;;) {
    char *line;
    if (s->ended) {
      how = s->how == FLOWRUN_DONE ? "done" : "error";
      break;
    }
    if (interrupted) {
      consume_interrupt(r);
      cancel_editing(r);
      flowrun_stop(r->rt, s->id);
      break;
    }
    if (!s->asking) {
      turn(r, false, NULL);
    } else if ((line = pop_line(r))) {
      s->asking = false;
      flowrun_send(r->rt, s->id, line, strlen(line));
      free(line);
    } else if (r->ctrl_d || r->eof) {  /* the end-user's channel closes */
      r->ctrl_d = false;
      s->asking = false;
      flowrun_send(r->rt, s->id, NULL, 0);
    } else
      turn(r, true, r->tty ? prompt : "");
  }
  forget(r, s);
  lua_pushstring(L, how);
  return 1;
}

/* stop(id) -> true, or nil and a message */
static int l_stop(lua_State *L) {
  repl *r = REPL_OF(L);
  rsession *s = find(r, luaL_checkstring(L, 1));
  if (!s || flowrun_stop(r->rt, s->id) != FLOWRUN_OK) {
    lua_pushnil(L);
    lua_pushfstring(L, "no session %s (.sessions lists them)", lua_tostring(L, 1));
    return 2;
  }
  forget(r, s);
  lua_pushboolean(L, 1);
  return 1;
}

/* sessions() -> { { id =, asking = }, ... }, oldest first */
static int l_sessions(lua_State *L) {
  repl *r = REPL_OF(L);
  int n = 0;
  lua_newtable(L);
  for (rsession *s = r->sessions; s; s = s->next) n++;
  for (rsession *s = r->sessions; s; s = s->next) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, s->id);
    lua_setfield(L, -2, "id");
    lua_pushboolean(L, s->asking);
    lua_setfield(L, -2, "asking");
    lua_rawseti(L, -2, n--);
  }
  return 1;
}

/* sleep(ms) -> true, or false on Ctrl-C: the loop runs meanwhile. */
static int l_sleep(lua_State *L) {
  repl *r = REPL_OF(L);
  lua_Number ms = luaL_checknumber(L, 1);
  struct timespec ts;
  double until, now;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  until = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6 + (ms > 0 ? ms : 0);
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
    if (now >= until || interrupted) break;
    flowrun_step(r->rt, (int)(until - now) + 1);
  }
  lua_pushboolean(L, !interrupted);
  return 1;
}

static void set_field(lua_State *L, const char *k, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

/* last() -> the last call (as its trace saw it), or nil */
static int l_last(lua_State *L) {
  last_call *l = &REPL_OF(L)->last;
  if (!l->method) return 0;
  lua_createtable(L, 0, 12);
  set_field(L, "integration", l->integration);
  set_field(L, "method", l->method);
  set_field(L, "url", l->url);
  set_field(L, "label", l->label);
  set_field(L, "reason", l->reason);
  set_field(L, "error", l->error);
  set_field(L, "body", l->body);
  if (l->status) {
    lua_pushinteger(L, l->status);
    lua_setfield(L, -2, "status");
  }
  lua_pushinteger(L, l->attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushnumber(L, l->elapsed_ms);
  lua_setfield(L, -2, "elapsed_ms");
  lua_newtable(L);
  for (int i = 0; l->headers && l->headers[i]; i++) {
    lua_pushstring(L, l->headers[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "headers");
  return 1;
}

/* trace([on]) -> whether calls are traced (on stderr) */
static int l_trace(lua_State *L) {
  repl *r = REPL_OF(L);
  if (!lua_isnone(L, 1)) r->trace = lua_toboolean(L, 1);
  lua_pushboolean(L, r->trace);
  return 1;
}

/* width() -> the columns of the terminal (80 without one) */
static int l_width(lua_State *L) {
  struct winsize ws;
  (void)REPL_OF(L);
  lua_pushinteger(L, ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80);
  return 1;
}

static const luaL_Reg host_funcs[] = {
  { "write",      l_write },
  { "read_line",  l_read_line },
  { "start",      l_start },
  { "foreground", l_foreground },
  { "stop",       l_stop },
  { "sessions",   l_sessions },
  { "sleep",      l_sleep },
  { "last",       l_last },
  { "trace",      l_trace },
  { "width",      l_width },
  { NULL, NULL }
};

/* ---- completion ---- */

/* libedit asks for the completions of the word from start to end of the
** line: repl:complete(line, start, end) -> candidates, append [, "files"]. */
static char **complete(const char *text, int start, int end) {
  repl *r = the_repl;
  lua_State *L = r->L;
  int top = lua_gettop(L);
  char **m = NULL;
  (void)text;
  rl_attempted_completion_over = 1;     /* no file names unless asked */
  rl_completion_append_character = '\0';
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->objref);
  lua_getfield(L, -1, "complete");
  lua_insert(L, -2);
  lua_pushstring(L, rl_line_buffer);
  lua_pushinteger(L, start);
  lua_pushinteger(L, end);
  if (lua_pcall(L, 4, 3, 0) == LUA_OK && lua_istable(L, -3)) {
    int n = (int)lua_rawlen(L, -3);
    if (lua_toboolean(L, -1)) rl_attempted_completion_over = 0;
    if (lua_isstring(L, -2)) rl_completion_append_character = lua_tostring(L, -2)[0];
    if (n > 0 && (m = calloc(n + 2, sizeof *m))) {
      size_t common = 0;
      for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -3, i);
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

/* ---- evaluation ---- */

/* Calls repl:method(arg) on the evaluation thread with Ctrl-C armed;
** pushes its result onto E, or reports its error and pushes nil. */
static void call_repl(repl *r, const char *method, const char *arg) {
  lua_State *E = r->E;
  int st;
  lua_settop(E, 0);
  interrupted = 0;
  lua_sethook(E, NULL, 0, 0);
  lua_rawgeti(E, LUA_REGISTRYINDEX, r->objref);
  lua_getfield(E, -1, method);
  lua_insert(E, -2);
  if (arg) lua_pushstring(E, arg);
  evaluating = 1;
  st = lua_pcall(E, arg ? 2 : 1, 1, 0);
  evaluating = 0;
  lua_sethook(E, NULL, 0, 0);
  end_caret_line();
  if (st != LUA_OK) {
    const char *msg = lua_tostring(E, -1);
    put_str(r, stderr, RED, msg ? msg : "(error object is not a string)");
    lua_settop(E, 0);
    lua_pushnil(E);
  }
}

static void loop(repl *r) {
  for (;;) {
    char *line;
    int got;
    call_repl(r, "prompt", NULL);
    got = wait_line(r, lua_isstring(r->E, -1) ? lua_tostring(r->E, -1) : "> ", &line);
    if (got == GOT_EOF) break;
    if (got == GOT_INTERRUPT) {
      consume_interrupt(r);
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
  lua_newtable(L);                      /* host */
  lua_pushlightuserdata(L, r);
  luaL_setfuncs(L, host_funcs, 1);
  lua_pushvalue(L, 2);                  /* options */
  if (flowrun_push_globals(r->rt) != FLOWRUN_OK)
    return luaL_error(L, "%s", flowrun_errmsg(r->rt));
  lua_xmove(r->L, L, 1);
  lua_call(L, 3, 1);
  return 1;
}

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

static int usage(void) {
  fputs("usage: flowrun repl [-I FILE] [--trace] [FLOW.lua [ARGS...]]\n", stderr);
  return 2;
}

int flowrun_repl_main(int argc, char **argv) {
  const char *ifile = NULL, *flow = NULL;
  char buf[4096];
  repl r;
  int i, status = 0;
  struct stat st;
  struct sigaction sa;
  memset(&r, 0, sizeof r);
  r.sigpipe[0] = r.sigpipe[1] = -1;
  r.eref = r.objref = LUA_NOREF;
  for (i = 0; i < argc && !flow; i++) {
    if (strcmp(argv[i], "-I") == 0 && i + 1 < argc) ifile = argv[++i];
    else if (strcmp(argv[i], "--trace") == 0) r.trace = true;
    else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage();
      return 0;
    } else if (argv[i][0] == '-') {
      fprintf(stderr, "flowrun repl: unknown option '%s' (or missing value)\n", argv[i]);
      return usage();
    } else flow = argv[i];
  }
  if (flow && !readable(flow)) {
    fprintf(stderr, "flowrun: cannot read flow %s: %s\n", flow, strerror(errno));
    return 2;
  }
  ifile = flowrun_find_integrations(ifile, flow, buf, sizeof buf);
  flowrun_callbacks cb = { on_say, on_ask, on_end, on_trace, on_log, &r };
  if (!(r.rt = flowrun_new(&cb))) {
    fprintf(stderr, "flowrun: out of memory\n");
    return 2;
  }
  if (ifile && flowrun_load_integrations(r.rt, ifile) != FLOWRUN_OK) {
    fprintf(stderr, "flowrun: %s\n", flowrun_errmsg(r.rt));
    flowrun_free(r.rt);
    return 2;
  }
  the_repl = &r;
  r.L = flowrun_lua(r.rt);
  r.tty = isatty(0);
  r.color = r.tty && isatty(1) && !getenv("NO_COLOR")
            && !(getenv("TERM") && strcmp(getenv("TERM"), "dumb") == 0);
  r.pollable = r.tty || !(fstat(0, &st) == 0 && (S_ISREG(st.st_mode) || S_ISCHR(st.st_mode)));
  if (r.pollable && !r.tty) fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  if (pipe(r.sigpipe) == 0) {
    for (int k = 0; k < 2; k++) {
      fcntl(r.sigpipe[k], F_SETFL, fcntl(r.sigpipe[k], F_GETFL) | O_NONBLOCK);
      fcntl(r.sigpipe[k], F_SETFD, FD_CLOEXEC);
    }
    sigpipe_w = r.sigpipe[1];
    flowrun_watch(r.rt, r.sigpipe[0], on_sigpipe, &r);
  }
  r.E = eval_thread = lua_newthread(r.L);
  r.eref = luaL_ref(r.L, LUA_REGISTRYINDEX);
  if (r.tty) init_terminal(&r);
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = on_sigint;            /* no SA_RESTART: epoll_wait wakes */
  sigaction(SIGINT, &sa, NULL);
  sa.sa_handler = on_sigwinch;
  sigaction(SIGWINCH, &sa, NULL);
  if (r.tty) {
    signal(SIGTERM, on_sigterm);
    signal(SIGHUP, on_sigterm);
  }
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
  if (r.editing) rl_callback_handler_remove();
  if (r.tty) tcsetattr(0, TCSANOW, &r.saved);
  fflush(stdout);
  signal(SIGINT, SIG_DFL);
  flowrun_free(r.rt);                   /* the Lua state, E and the refs too */
  the_repl = NULL;
  sigpipe_w = -1;
  for (int k = 0; k < 2; k++)
    if (r.sigpipe[k] >= 0) close(r.sigpipe[k]);
  if (r.pollable && !r.tty) fcntl(0, F_SETFL, fcntl(0, F_GETFL) & ~O_NONBLOCK);
  while (r.sessions) forget(&r, r.sessions);
  while (r.qlen > 0) free(pop_line(&r));
  free(r.q);
  free(r.in);
  free(r.history);
  free(r.last_added);
  last_free(&r.last);
  if (r.tty) clear_history();
  return status;
}
