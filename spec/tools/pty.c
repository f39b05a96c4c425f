/*
** pty.c -- require "pty" (build/pty.so): a program on a pseudo-terminal,
** for the specs that play a person at a terminal (the REPL).
**
**   local p = pty.spawn{ argv = { "build/flowrun", "repl" }, env = { TERM = "xterm" },
**                        cwd = dir, rows = 24, cols = 100 }
**   p:send("1 + 1\r")            -- keys, as typed ("\3" is Ctrl-C, "\4" Ctrl-D)
**   p:expect("2", 5000)          -- true once the output after the last match
**                                -- holds the text (plain), false after 5 s
**   p:output()                   -- everything the program wrote so far
**   p:pump(50)                   -- reads what it writes for up to 50 ms
**   p:wait(5000)                 -- its exit status, or nil while it runs
**   p:close()                    -- SIGKILL if it still runs (also __gc)
**
** env values of false unset a variable; the rest of the environment is
** inherited. Linked against nothing but libc: the interpreter provides Lua.
*/
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#define PTY_MT "spec.pty"

typedef struct pty {
  pid_t pid;
  int fd;                               /* the master side, -1 once closed */
  int status;                           /* exit status once reaped */
  int reaped;
  char *buf;                            /* all output */
  size_t len, cap, pos;                 /* pos: just after the last match */
} pty;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static pty *check(lua_State *L) {
  return luaL_checkudata(L, 1, PTY_MT);
}

/* Reads what the program wrote, waiting at most ms; false at end. */
static int pump(lua_State *L, pty *p, int ms) {
  struct pollfd pfd;
  char chunk[4096];
  ssize_t n;
  if (p->fd < 0) return 0;
  pfd.fd = p->fd;
  pfd.events = POLLIN;
  if (poll(&pfd, 1, ms) <= 0) return 1;
  n = read(p->fd, chunk, sizeof chunk);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 1;
  if (n <= 0) {                         /* EIO: the program closed its side */
    close(p->fd);
    p->fd = -1;
    return 0;
  }
  if (p->cap - p->len < (size_t)n + 1) {
    size_t cap = p->cap ? p->cap * 2 : 65536;
    while (cap - p->len < (size_t)n + 1) cap *= 2;
    char *b = realloc(p->buf, cap);
    if (!b) return luaL_error(L, "out of memory");
    p->buf = b;
    p->cap = cap;
  }
  memcpy(p->buf + p->len, chunk, n);
  p->len += n;
  p->buf[p->len] = '\0';
  return 1;
}

static void reap(pty *p, int options) {
  int st;
  if (p->reaped || p->pid <= 0) return;
  if (waitpid(p->pid, &st, options) == p->pid) {
    p->reaped = 1;
    p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
}

/* pty.spawn{ argv, env, cwd, rows, cols } -> p */
static int l_spawn(lua_State *L) {
  struct winsize ws = { 24, 100, 0, 0 };
  int n, i, fd;
  pid_t pid;
  char **argv;
  const char *cwd = NULL;
  pty *p;
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_getfield(L, 1, "rows") == LUA_TNUMBER) ws.ws_row = (unsigned short)lua_tointeger(L, -1);
  if (lua_getfield(L, 1, "cols") == LUA_TNUMBER) ws.ws_col = (unsigned short)lua_tointeger(L, -1);
  if (lua_getfield(L, 1, "cwd") == LUA_TSTRING) cwd = lua_tostring(L, -1);
  lua_getfield(L, 1, "env");
  if (lua_getfield(L, 1, "argv") != LUA_TTABLE) return luaL_argerror(L, 1, "argv: expected an array");
  n = (int)lua_rawlen(L, -1);
  if (n < 1) return luaL_argerror(L, 1, "argv: empty");
  argv = lua_newuserdatauv(L, (n + 1) * sizeof *argv, 0);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, -2, i + 1);
    argv[i] = (char *)luaL_checkstring(L, -1);
    lua_pop(L, 1);                      /* the array keeps the string */
  }
  argv[n] = NULL;
  p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  p->fd = -1;
  luaL_setmetatable(L, PTY_MT);
  pid = forkpty(&fd, NULL, NULL, &ws);
  if (pid < 0) return luaL_error(L, "forkpty: %s", strerror(errno));
  if (pid == 0) {
    int env = 5;                        /* the env field (or nil) */
    if (lua_istable(L, env)) {
      lua_pushnil(L);
      while (lua_next(L, env)) {
        if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))
          unsetenv(lua_tostring(L, -2));
        else
          setenv(lua_tostring(L, -2), lua_tostring(L, -1), 1);
        lua_pop(L, 1);
      }
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    if (cwd && chdir(cwd) != 0) _exit(126);
    execvp(argv[0], argv);
    _exit(127);
  }
  p->pid = pid;
  p->fd = fd;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  return 1;
}

/* p:send(text) */
static int l_send(lua_State *L) {
  pty *p = check(L);
  size_t len, off = 0;
  const char *s = luaL_checklstring(L, 2, &len);
  double until = now_ms() + 5000;
  if (p->fd < 0) return luaL_error(L, "pty: the program has ended");
  while (off < len && now_ms() < until) {
    ssize_t n = write(p->fd, s + off, len - off);
    if (n > 0) off += n;
    else if (n < 0 && errno != EAGAIN && errno != EINTR) break;
    else pump(L, p, 10);                /* let the program drain its side */
  }
  lua_pushboolean(L, off == len);
  return 1;
}

/* p:expect(text [, ms]) -> true when the output after the last match
** holds text (the next expect starts after it), false after ms. */
static int l_expect(lua_State *L) {
  pty *p = check(L);
  size_t nlen;
  const char *needle = luaL_checklstring(L, 2, &nlen);
  double until = now_ms() + luaL_optnumber(L, 3, 5000);
  for (;;) {
    if (p->len >= p->pos + nlen) {
      char *hit = memmem(p->buf + p->pos, p->len - p->pos, needle, nlen);
      if (hit) {
        p->pos = hit - p->buf + nlen;
        lua_pushboolean(L, 1);
        return 1;
      }
    }
    double left = until - now_ms();
    if (left <= 0 || !pump(L, p, left > 50 ? 50 : (int)left + 1)) {
      if (p->fd < 0 && p->len >= p->pos + nlen
          && memmem(p->buf + p->pos, p->len - p->pos, needle, nlen))
        continue;
      lua_pushboolean(L, 0);
      return 1;
    }
  }
}

/* p:output() -> everything so far; p:rest() -> what follows the last match */
static int l_output(lua_State *L) {
  pty *p = check(L);
  while (pump(L, p, 0) && p->fd >= 0) {
    struct pollfd pfd = { p->fd, POLLIN, 0 };
    if (poll(&pfd, 1, 0) <= 0) break;
  }
  lua_pushlstring(L, p->buf ? p->buf : "", p->len);
  return 1;
}

static int l_rest(lua_State *L) {
  pty *p = check(L);
  lua_pushlstring(L, p->buf ? p->buf + p->pos : "", p->len - p->pos);
  return 1;
}

/* p:wait([ms]) -> exit status, or nil while it runs */
static int l_wait(lua_State *L) {
  pty *p = check(L);
  double until = now_ms() + luaL_optnumber(L, 2, 5000);
  for (;;) {
    reap(p, WNOHANG);
    if (p->reaped) {
      while (pump(L, p, 0) && p->fd >= 0) {
        struct pollfd pfd = { p->fd, POLLIN, 0 };
        if (poll(&pfd, 1, 0) <= 0) break;
      }
      lua_pushinteger(L, p->status);
      return 1;
    }
    if (now_ms() >= until) return 0;
    if (!pump(L, p, 20)) usleep(10000);
  }
}

/* p:pump([ms]) reads what the program writes for at most ms (0). */
static int l_pump(lua_State *L) {
  pty *p = check(L);
  double until = now_ms() + luaL_optnumber(L, 2, 0);
  while (pump(L, p, 0) && p->fd >= 0) {
    double left = until - now_ms();
    struct pollfd pfd = { p->fd, POLLIN, 0 };
    if (poll(&pfd, 1, left > 0 ? (int)left + 1 : 0) <= 0) break;
  }
  return 0;
}

static int l_pid(lua_State *L) {
  lua_pushinteger(L, check(L)->pid);
  return 1;
}

/* p:kill([signal]) */
static int l_kill(lua_State *L) {
  pty *p = check(L);
  if (!p->reaped && p->pid > 0) kill(p->pid, (int)luaL_optinteger(L, 2, SIGTERM));
  return 0;
}

static int l_close(lua_State *L) {
  pty *p = check(L);
  if (!p->reaped && p->pid > 0) {
    kill(p->pid, SIGKILL);
    reap(p, 0);
  }
  if (p->fd >= 0) close(p->fd);
  p->fd = -1;
  free(p->buf);
  p->buf = NULL;
  p->len = p->cap = p->pos = 0;
  return 0;
}

static const luaL_Reg methods[] = {
  { "send",   l_send },
  { "expect", l_expect },
  { "output", l_output },
  { "rest",   l_rest },
  { "pump",   l_pump },
  { "wait",   l_wait },
  { "pid",    l_pid },
  { "kill",   l_kill },
  { "close",  l_close },
  { NULL, NULL }
};

int luaopen_pty(lua_State *L);

int luaopen_pty(lua_State *L) {
  if (luaL_newmetatable(L, PTY_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_spawn);
  lua_setfield(L, -2, "spawn");
  return 1;
}
