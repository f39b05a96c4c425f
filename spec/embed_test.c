/*
** embed_test.c -- flowrun embedded in a C host, as a game server or chat
** bot would: callbacks, sessions driven both by a never-blocking frame loop
** and by a blocking one, ask answered with flowrun_send, a session stopped
** mid-call, a host fd watched by the loop, a spinning session broken from a
** signal handler, callbacks of other versions (flowrun_callbacks.size),
** and (built with EMBED_OOM, as the Makefile does) every
** allocation of the library failing in turn (EMBED_OOM_FROM=N: only
** those rounds, from allocation N on, to look into one with gdb).
** EMBED_ONLY=name,name: only the tests of those functions (out_of_memory
** for the rounds; make mutate names the one that shows a promise). Talks to
** `flowrun mock` on 127.0.0.1, which it starts itself. Prints TAP lines and
** a closing "N passed, N failed".
*/
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lua.h>

#include "flowrun.h"

#ifdef EMBED_OOM
/* ---- a failing allocator ----
** Linked with -Wl,--wrap=malloc,... (the Makefile), the library's objects
** (libflowrun.a, the Lua state's allocator included) allocate through these.
** Armed, they count allocations down and refuse the one at the countdown's
** end, and (alloc_once 0) every one after it until the test disarms them. */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

static long alloc_left = -1;            /* before they fail; -1: disarmed */
static long alloc_refused;              /* since armed */
static int alloc_once;                  /* refuse one, then disarm */
static size_t alloc_big;                /* refuse each of this size or more; 0: off */

static int refuse_size(size_t n) {
  if (!alloc_big || n < alloc_big) return 0;
  alloc_refused++;
  return 1;
}

static int refuse(void) {
  if (alloc_left < 0) return 0;
  if (alloc_left > 0) { alloc_left--; return 0; }
  alloc_refused++;
  if (alloc_once) alloc_left = -1;
  return 1;
}

void *__wrap_malloc(size_t n) { return refuse_size(n) || refuse() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t size) {
  return refuse_size(n * size) || refuse() ? NULL : __real_calloc(n, size);
}
void *__wrap_realloc(void *p, size_t n) {
  return n && (refuse_size(n) || refuse()) ? NULL : __real_realloc(p, n);
}
char *__wrap_strdup(const char *s) { return refuse() ? NULL : __real_strdup(s); }
#endif

static int passed, failed;
static char dir[] = "/tmp/flowrun-embed-XXXXXX";

static void check(int ok, const char *what) {
  if (ok) passed++;
  else failed++;
  printf("%s %d - %s\n", ok ? "ok" : "not ok", passed + failed, what);
  fflush(stdout);
}

/* ---- what the host hears ---- */

typedef struct host {
  char said[64][128];
  int nsaid, asks, done, errors, traces;
  char last_error[512], last_label[32], prompt[128], curl[512];
  flowrun *rt;
} host;

static void on_say(void *ud, const char *id, const char *text, size_t len) {
  host *h = ud;
  (void)id;
  if (h->nsaid < 64) snprintf(h->said[h->nsaid++], 128, "%.*s", (int)len, text);
}

static void on_ask(void *ud, const char *id, const char *prompt, size_t len) {
  host *h = ud;
  (void)id;
  h->asks++;
  snprintf(h->prompt, sizeof h->prompt, "%.*s", prompt ? (int)len : 0, prompt ? prompt : "");
}

static void on_end(void *ud, const char *id, int how, const char *error) {
  host *h = ud;
  (void)id;
  if (how == FLOWRUN_DONE) h->done++;
  else {
    h->errors++;
    snprintf(h->last_error, sizeof h->last_error, "%s", error);
  }
}

static void on_trace(void *ud, const flowrun_trace *t) {
  host *h = ud;
  h->traces++;
  snprintf(h->last_label, sizeof h->last_label, "%s", t->label);
  if (h->rt) {
    char *c = flowrun_trace_curl(h->rt, t);
    snprintf(h->curl, sizeof h->curl, "%s", c ? c : "(null)");
    free(c);
  }
}

/* ---- fixtures ---- */

static char *path(const char *name) {
  static char buf[8][256];
  static int i;
  char *p = buf[i++ % 8];
  snprintf(p, 256, "%s/%s", dir, name);
  return p;
}

static void write_file(const char *name, const char *text) {
  FILE *f = fopen(path(name), "w");
  if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
    perror(name);
    exit(1);
  }
}

static pid_t mock_pid;

/* Starts the mock server and returns its port. */
static int start_mock(const char *exe) {
  int fds[2], port = 0;
  char line[256];
  FILE *out;
  if (pipe(fds) < 0) return 0;
  pid_t parent = getpid();
  if ((mock_pid = fork()) == 0) {
    /* it ends with this process, however that ends (a crash, exit(1)) */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent) _exit(127);
    dup2(fds[1], 1);
    close(fds[0]);
    freopen("/dev/null", "w", stderr);
    execl(exe, exe, "mock", path("routes.lua"), "--port", "0", (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  out = fdopen(fds[0], "r");
  if (out && fgets(line, sizeof line, out))
    sscanf(line, "listening on http://127.0.0.1:%d", &port);
  if (out) fclose(out);
  return port;
}

static flowrun *runtime(host *h) {
  flowrun_callbacks cb = { .say = on_say, .ask = on_ask, .end = on_end, .trace = on_trace, .ud = h,
                           .size = sizeof(flowrun_callbacks) };
  flowrun *rt;
  memset(h, 0, sizeof *h);
  rt = flowrun_new(&cb);
  h->rt = rt;
  if (!rt || flowrun_load_integrations(rt, path("integrations.lua")) != FLOWRUN_OK) {
    fprintf(stderr, "cannot make a runtime: %s\n", rt ? flowrun_errmsg(rt) : "ENOMEM");
    exit(1);
  }
  return rt;
}

/* ---- tests ---- */

static void frame_loop(void) {
  host h;
  flowrun *rt = runtime(&h);
  char id[16];
  int frames = 0, ok = 1;
  for (int i = 0; i < 50; i++) {
    snprintf(id, sizeof id, "p%d", i);
    if (flowrun_start(rt, id, path("reward.lua"), 0, NULL) != FLOWRUN_OK) ok = 0;
  }
  check(ok && flowrun_sessions(rt) == 50, "50 sessions start");
  /* a hang guard, not a time limit: 100 000 frames are 100 s at least */
  while (flowrun_step(rt, 0) > 0 && frames < 100000) {
    frames++;
    usleep(1000);                       /* the rest of a game frame */
  }
  check(h.done == 50 && h.errors == 0, "every session ends done, driven by step(0)");
  int all200 = h.nsaid == 50;
  for (int i = 0; i < h.nsaid; i++) all200 &= strcmp(h.said[i], "200 granted") == 0;
  check(all200, "each session said the label and the JSON field");
  check(frames > 1, "step(0) never blocked: the calls took several frames");
  check(h.traces == 50 && strcmp(h.last_label, "200") == 0, "trace callback per call");
  check(strncmp(h.curl, "curl http://127.0.0.1:", 22) == 0 && strstr(h.curl, "/v1/reward/p")
        && strstr(h.curl, "-H \"Authorization: Bearer $EMBED_TOKEN\"")
        && !strstr(h.curl, "embed-s3cret"),
        "flowrun_trace_curl: the call as curl, the env() secret as its variable");
  check(flowrun_trace_curl(rt, NULL) == NULL, "flowrun_trace_curl outside a trace: NULL");
  flowrun_free(rt);
}

static void ask_and_send(void) {
  host h;
  flowrun *rt = runtime(&h);
  flowrun_start(rt, "u1", path("chat.lua"), 0, NULL);
  flowrun_step(rt, 100);
  check(h.asks == 1 && h.nsaid == 0 && strcmp(h.prompt, "your name?") == 0,
        "ask waits, its prompt in hand");
  check(flowrun_send(rt, "nobody", "x", 1) == FLOWRUN_NOSESSION, "send to an unknown session fails");
  flowrun_send(rt, "u1", "Ada", 3);
  while (flowrun_step(rt, 1000) > 0) {}
  check(h.nsaid == 1 && strcmp(h.said[0], "hello Ada") == 0 && h.done == 1,
        "send answers the pending ask");
  flowrun_free(rt);
  rt = runtime(&h);                     /* the answer is there before the ask */
  flowrun_start(rt, "u2", path("chat.lua"), 0, NULL);
  flowrun_send(rt, "u2", "Bo", 2);
  while (flowrun_step(rt, 1000) > 0) {}
  check(h.asks == 0 && h.nsaid == 2 && strcmp(h.said[0], "your name?") == 0
        && strcmp(h.said[1], "hello Bo") == 0,
        "an ask whose answer is there takes it at once, its prompt said");
  flowrun_free(rt);
}

static void errors(void) {
  host h;
  flowrun *rt = runtime(&h);
  flowrun_start(rt, "e", path("broken.lua"), 0, NULL);
  flowrun_start(rt, "ok", path("chat.lua"), 0, NULL);
  flowrun_step(rt, 100);
  check(h.errors == 1 && strstr(h.last_error, "broken.lua:2: boom")
        && strstr(h.last_error, "stack traceback"),
        "a raising session ends with file:line and a traceback");
  check(flowrun_sessions(rt) == 1, "the other session lives on");
  check(flowrun_start(rt, "ok", path("chat.lua"), 0, NULL) == FLOWRUN_ERR,
        "a session id in use is refused");
  check(flowrun_start(rt, "m", path("missing.lua"), 0, NULL) == FLOWRUN_ERR
        && strstr(flowrun_errmsg(rt), "missing.lua"),
        "a missing flow is refused, naming it");
  check(flowrun_load_integrations(rt, path("bad_integrations.lua")) == FLOWRUN_ERR
        && strstr(flowrun_errmsg(rt), "bad_integrations.lua")
        && strstr(flowrun_errmsg(rt), "shop.timeout_ms"),
        "a broken integrations file names file and key");
  flowrun_free(rt);
}

static void stop_mid_call(void) {
  host h;
  flowrun *rt = runtime(&h);
  flowrun_start(rt, "s", path("hang.lua"), 0, NULL);
  flowrun_step(rt, 50);
  flowrun_step(rt, 50);
  check(flowrun_step(rt, 0) > 0, "a session waits on a hanging route");
  check(flowrun_stop(rt, "s") == FLOWRUN_OK, "stop ends it mid-call");
  check(flowrun_step(rt, 0) == 0 && h.done == 0 && h.errors == 0,
        "nothing is left and no end is reported");
  flowrun_free(rt);
}

/* flowrun_pool_stats: one integration's figures, by name. */
typedef struct { const char *name; int in_flight, queued, seen; } pool_fig;
static int on_pool(void *ud, const char *integration, int in_flight, int queued) {
  pool_fig *f = ud;
  if (strcmp(integration, f->name) == 0) f->in_flight = in_flight, f->queued = queued, f->seen++;
  return 0;
}

/* The pool's calls in flight and queued; the store's commits and their time. */
static void stats(void) {
  host h;
  flowrun *rt = runtime(&h);
  pool_fig f = { "one", -1, -1, 0 };
  flowrun_commits cs;
  int ok = 1;
  check(flowrun_load_integrations(rt, path("one_integrations.lua")) == FLOWRUN_OK, "load one_integrations.lua");
  flowrun_start(rt, "a", path("hang_one.lua"), 0, NULL);
  flowrun_start(rt, "b", path("hang_one.lua"), 0, NULL);
  flowrun_start(rt, "c", path("hang_one.lua"), 0, NULL);
  for (int i = 0; i < 20 && (f.in_flight != 1 || f.queued != 2); i++) {
    flowrun_step(rt, 50);
    flowrun_pool_stats(rt, on_pool, &f);
  }
  check(f.seen > 0 && f.in_flight == 1 && f.queued == 2,
        "flowrun_pool_stats: max_connections 1, three calls: one in flight, two queued");
  /* calls leave the queue from anywhere in it, and what is left keeps going */
  {
    static const struct { const char *start, *stop; int in_flight, queued; } q[] = {
      { "d", NULL, 1, 3 }, { "e", NULL, 1, 4 }, { NULL, "c", 1, 3 }, { NULL, "d", 1, 2 },
      { "f", NULL, 1, 3 }, { NULL, "f", 1, 2 }, { NULL, "a", 1, 1 }, { NULL, "b", 1, 0 },
      { NULL, "e", 0, 0 },
    };
    int all = 1;
    for (size_t k = 0; k < sizeof q / sizeof q[0]; k++) {
      if (q[k].start) flowrun_start(rt, q[k].start, path("hang_one.lua"), 0, NULL);
      if (q[k].stop && flowrun_stop(rt, q[k].stop) != FLOWRUN_OK) all = 0;
      for (int i = 0; i < 20; i++) {
        flowrun_step(rt, 10);
        flowrun_pool_stats(rt, on_pool, &f);
        if (f.in_flight == q[k].in_flight && f.queued == q[k].queued) break;
      }
      if (f.in_flight != q[k].in_flight || f.queued != q[k].queued) {
        fprintf(stderr, "queue step %zu: in flight %d queued %d\n", k, f.in_flight, f.queued);
        all = 0;
      }
    }
    check(all, "queued calls stopped from the middle and the end of the queue: the rest are served in turn");
  }
  check(flowrun_store_stats(rt, &cs) == FLOWRUN_ERR, "flowrun_store_stats without a store: FLOWRUN_ERR");
  flowrun_free(rt);
  rt = runtime(&h);
  if (flowrun_open_store(rt, path("stats.db")) != FLOWRUN_OK) ok = 0;
  flowrun_start(rt, "u", path("chat.lua"), 0, NULL);
  for (int i = 0; i < 10; i++) flowrun_step(rt, 10);
  flowrun_send(rt, "u", "Ada", 3);
  for (int i = 0; i < 10; i++) flowrun_step(rt, 10);
  ok &= flowrun_store_stats(rt, &cs) == FLOWRUN_OK && h.done == 1;
  check(ok && cs.commits >= 2 && cs.le[FLOWRUN_STORE_BUCKETS - 1] == cs.commits
        && cs.le[0] <= cs.le[1] && cs.seconds > 0 && cs.le_s[0] == 0.0001
        && cs.le_s[FLOWRUN_STORE_BUCKETS - 1] == 1,
        "flowrun_store_stats: commits counted, their seconds, cumulative buckets to 1 s");
  check(flowrun_store_node(rt, "n1") == FLOWRUN_ERR
        && strstr(flowrun_errmsg(rt), "before flowrun_open_store") != NULL,
        "flowrun_store_node after flowrun_open_store: FLOWRUN_ERR, saying so");
  flowrun_free(rt);
  rt = runtime(&h);
  check(flowrun_store_node(rt, "") == FLOWRUN_ERR && flowrun_store_node(rt, "n1") == FLOWRUN_OK
        && flowrun_store_limit(rt, FLOWRUN_STORE_LEASE_MS, 5000) == 10000,
        "flowrun_store_node: a name of 1 to 200 bytes; FLOWRUN_STORE_LEASE_MS: 10000 by default");
  flowrun_free(rt);
}

static int fired;
static void on_fd(void *ud, int fd) {
  char c;
  (void)ud;
  if (read(fd, &c, 1) == 1) fired++;
}

static void watch_fd(void) {
  host h;
  flowrun *rt = runtime(&h);
  int fds[2];
  if (pipe(fds) < 0) return;
  check(flowrun_watch(rt, fds[0], on_fd, NULL) == FLOWRUN_OK, "watch a host fd");
  if (write(fds[1], "x", 1) != 1) return;
  flowrun_step(rt, 1000);
  check(fired == 1, "its callback runs from step");
  flowrun_watch(rt, fds[0], NULL, NULL);
  close(fds[0]);
  close(fds[1]);
  flowrun_free(rt);
}

/* A watchdog: a session stuck in a loop is stopped from a signal handler,
** and the one beside it is not. */
static flowrun *watched;
static void on_alarm(int sig) {
  (void)sig;
  flowrun_break(watched);
}

static void break_spinning(void) {
  host h;
  flowrun *rt = runtime(&h);
  watched = rt;
  flowrun_limit(rt, FLOWRUN_LIMIT_INSTRUCTIONS, 0);   /* only the break can stop it */
  signal(SIGALRM, on_alarm);
  flowrun_start(rt, "spin", path("spin.lua"), 0, NULL);
  flowrun_start(rt, "calm", path("chat.lua"), 0, NULL);
  check(flowrun_break(rt) == 0, "break with no session running does nothing");
  alarm(1);
  flowrun_step(rt, 0);                  /* spins until the alarm */
  check(h.errors == 1 && strstr(h.last_error, "spin.lua:2: interrupted!") != NULL,
        "a session stuck in a loop, in a coroutine of its own and under pcall, ends with file:line: interrupted!");
  check(flowrun_sessions(rt) == 1 && h.asks == 1, "the other session lives on");
  signal(SIGALRM, SIG_DFL);
  flowrun_free(rt);
}

/* A host function: says who called it; ud counts the calls. */
static int l_grant(lua_State *L) {
  int *calls = lua_touserdata(L, lua_upvalueindex(1));
  const char *id = flowrun_session_id(watched, L);
  char buf[64];
  (*calls)++;
  snprintf(buf, sizeof buf, "granted to %s", id ? id : "nobody");
  lua_pushstring(L, buf);
  return 1;
}

static void sandbox_api(void) {
  host h;
  int calls = 0;
  flowrun *rt = runtime(&h);
  watched = rt;
  check(flowrun_register(rt, "grant", l_grant, &calls) == FLOWRUN_OK, "flowrun_register adds a host function");
  check(flowrun_allow(rt, "sockets") == FLOWRUN_ERR
        && strstr(flowrun_errmsg(rt), "unknown library 'sockets'") != NULL,
        "flowrun_allow refuses an unknown library, saying so");
  check(flowrun_limit(rt, FLOWRUN_LIMIT_SESSION_MEMORY, -1) == 64LL << 20
        && flowrun_limit(rt, FLOWRUN_LIMIT_MEMORY, -1) == 2LL << 30
        && flowrun_limit(rt, FLOWRUN_LIMIT_OUTPUT, -1) == 64LL << 20,
        "the limits' defaults: 64 MiB a session, 2 GiB in all, 64 MiB of output");
  check(flowrun_limit(rt, FLOWRUN_LIMIT_INSTRUCTIONS, 200000) == 100000000
        && flowrun_limit(rt, FLOWRUN_LIMIT_INSTRUCTIONS, -1) == 200000
        && flowrun_limit(rt, 99, 1) == FLOWRUN_ERR,
        "flowrun_limit sets a limit and returns the one before (100 000 000 instructions by default)");
  flowrun_start(rt, "g1", path("grant.lua"), 0, NULL);
  flowrun_start(rt, "g2", path("grant.lua"), 0, NULL);
  flowrun_start(rt, "loop", path("loop.lua"), 0, NULL);
  for (int i = 0; i < 100 && flowrun_step(rt, 10) > 0; i++) {}
  check(calls == 2 && h.nsaid == 2 && strcmp(h.said[0], "granted to g1 nil") == 0
        && strcmp(h.said[1], "granted to g2 nil") == 0,
        "flows call the host function as a global, each as itself; io stays out of reach");
  check(h.errors == 1 && strstr(h.last_error, "loop.lua:1: instruction limit: 200000") != NULL,
        "a session over the instruction limit ends with file:line and the limit");
  flowrun_free(rt);
  rt = runtime(&h);
  check(flowrun_allow(rt, "io") == FLOWRUN_OK, "flowrun_allow grants io");
  h.nsaid = 0;
  flowrun_start(rt, "io", path("io.lua"), 0, NULL);
  for (int i = 0; i < 100 && flowrun_step(rt, 10) > 0; i++) {}
  check(h.nsaid == 1 && strcmp(h.said[0], "function") == 0, "a granted library is there");
  flowrun_free(rt);
}

#ifdef EMBED_OOM
/* ---- out of memory ---- */

/* What an entry point says when out of memory. */
static int memory_error(const char *msg) {
  return strcmp(msg, "out of memory") == 0;
}

/* A session ended by it: "[file:line: ]not enough memory" and the
** traceback, or (no memory left for one) the error alone. */
static int session_memory_error(const char *msg) {
  const char *m = strstr(msg, "not enough memory");
  return m && (m == msg || (m[-1] == ' ' && memchr(msg, '\n', m - msg) == NULL))
         && (strcmp(m + 17, "") == 0 || strncmp(m + 17, "\nstack traceback:\n", 18) == 0);
}

/* Lua makes a string this long anew each time (no interning): ending
** the session takes memory to find it. */
#define LONG_ID "a-session-id-longer-than-forty-bytes-of-lua-short-strings"

static int l_hello(lua_State *L) {
  lua_pushliteral(L, "hi");
  return 1;
}

/* An entry point in a round: it works, or it met a refused allocation,
** returns FLOWRUN_ERR saying "out of memory", and then works when called
** again (nothing was left half done). Disarms once one was refused. */
#define ENTRY(call)                                                         \
  if (!bad) {                                                               \
    st = (call);                                                            \
    alloc_left = alloc_refused ? -1 : alloc_left;                           \
    if (st != FLOWRUN_OK && (!alloc_refused || !memory_error(flowrun_errmsg(rt)) \
                             || (call) != FLOWRUN_OK)) {                    \
      snprintf(why, size, "%s: %s", #call, flowrun_errmsg(rt));             \
      bad = 1;                                                              \
    }                                                                       \
  }

/* Runs oom.lua as session id to its end; 1 when it said what it should. */
static int run_oom_flow(flowrun *rt, host *h, const char *id) {
  int steps = 0;
  if (flowrun_start(rt, id, path("oom.lua"), 0, NULL) != FLOWRUN_OK
      || flowrun_send(rt, id, "Ada", 3) != FLOWRUN_OK)
    return 0;
  while (flowrun_step(rt, 100) > 0 && ++steps < 100) {}   /* 10 s at most */
  return h->done == 1 && h->nsaid == 1 && strcmp(h->said[0], "200 granted hi Ada") == 0;
}

/* One round: the nth allocation of the library fails, and (alloc_once 0)
** every one after it until the entry point that asked for it returns; Lua
** collects its garbage and asks again once, so failing one allocation and
** failing them all take different ways. Each entry point must work or
** say so (ENTRY; flowrun_new: NULL, then a runtime when asked again); a
** session that meets the failure ends as failed with a memory error, and
** then the same flow runs to its end in the same runtime. Returns 1 when
** an allocation was refused, 0 when the round got through without (n is
** past the last one), -1 when the host saw something else (why: *why). */
static int oom_round(long n, char *why, size_t size) {
  host h;
  flowrun_callbacks cb = { .say = on_say, .ask = on_ask, .end = on_end, .trace = on_trace, .ud = &h,
                           .size = sizeof(flowrun_callbacks) };
  flowrun *rt;
  int st = 0, steps = 0, bad = 0;
  memset(&h, 0, sizeof h);
  alloc_refused = 0;
  alloc_left = n;
  rt = flowrun_new(&cb);
  alloc_left = alloc_refused ? -1 : alloc_left;
  if (!rt && (!alloc_refused || !(rt = flowrun_new(&cb)))) {
    snprintf(why, size, "flowrun_new: NULL");
    return -1;
  }
  h.rt = rt;
  ENTRY(flowrun_load_integrations(rt, path("integrations.lua")))
  ENTRY(flowrun_register(rt, "hello", l_hello, NULL))
  ENTRY(flowrun_start(rt, LONG_ID, path("oom.lua"), 0, NULL))
  ENTRY(flowrun_send(rt, LONG_ID, "Ada", 3))
  while (!bad && (st = flowrun_step(rt, 100)) > 0 && ++steps < 100)   /* 10 s at most */
    alloc_left = alloc_refused ? -1 : alloc_left;
  alloc_left = -1;
  if (bad) {}
  else if (st == FLOWRUN_ERR) {
    snprintf(why, size, "flowrun_step: %s", flowrun_errmsg(rt));
    bad = 1;
  } else if (h.done == 1 && h.errors == 0 && h.nsaid == 1
             && strcmp(h.said[0], "200 granted hi Ada") == 0) {
  } else if (!(h.done == 0 && h.errors == 1 && alloc_refused && session_memory_error(h.last_error))) {
    snprintf(why, size, "%d done, %d failed, said \"%s\", error: %.300s", h.done, h.errors,
             h.nsaid ? h.said[0] : "", h.last_error);
    bad = 1;
  } else if (h.nsaid = 0, !run_oom_flow(rt, &h, "again")) {
    snprintf(why, size, "after a session failed, another: %d done, said \"%s\"", h.done,
             h.nsaid ? h.said[0] : "");
    bad = 1;
  }
  flowrun_free(rt);
  return bad ? -1 : alloc_refused > 0;
}

/* The rounds above refuse allocations by their place in line, which moves
** with how the response arrives (one read or several): this one refuses by
** size, every block of 64 KiB or more while a 200 KB body comes in, so it
** is the body's buffer that finds no memory, every run. */
static void response_out_of_memory(void) {
  host h;
  flowrun *rt = runtime(&h);
  int steps = 0, ok;
  ok = flowrun_register(rt, "hello", l_hello, NULL) == FLOWRUN_OK
       && flowrun_start(rt, "big", path("big.lua"), 0, NULL) == FLOWRUN_OK;
  alloc_refused = 0;
  alloc_big = 65536;
  while (ok && flowrun_step(rt, 100) > 0 && ++steps < 100) {}   /* 10 s at most */
  alloc_big = 0;
  ok = ok && h.done == 0 && h.errors == 1 && alloc_refused > 0 && session_memory_error(h.last_error);
  if (!ok) printf("# %d done, %d failed, said \"%s\", error: %.300s\n", h.done, h.errors,
                  h.nsaid ? h.said[0] : "", h.last_error);
  h.nsaid = 0;
  check(ok && run_oom_flow(rt, &h, "again"),
        "a response body that finds no memory fails its session with a memory error "
        "(not a label); the runtime goes on");
  flowrun_free(rt);
}

/* Every round from allocation `from` on (0: all of them). */
static void out_of_memory(int once, long from) {
  char why[512] = "";
  long n, rounds = 0, bad = 0, first_bad = -1;
  int r;
  alloc_once = once;
  for (n = from; (r = oom_round(n, why, sizeof why)) != 0; n++) {
    rounds++;
    if (r < 0 && bad++ == 0) {
      first_bad = n;
      printf("# allocation %ld refused: %s\n", n, why);
    }
  }
  printf("# %ld allocations refused in turn, %ld rounds went wrong (the first: %ld)\n",
         rounds, bad, first_bad);
  check((from > 0 || rounds > 500) && bad == 0,
        once ? "each allocation of flowrun_new, _load_integrations, _register, _start, _send "
               "and a session's sleep, api_node and ask refused alone: FLOWRUN_ERR or a memory "
               "error, or no harm"
             : "each allocation of flowrun_new, _load_integrations, _register, _start, _send "
               "and a session's sleep, api_node and ask refused, and all after it in that "
               "call: FLOWRUN_ERR or a session failed with a memory error; the runtime goes on");
}
#endif

/* flowrun_callbacks grows: the library reads the size the host gives. */
static int said, ended, traced;
static void count_say(void *ud, const char *id, const char *text, size_t len) {
  (void)ud; (void)id; (void)text; (void)len;
  said++;
}
static void count_end(void *ud, const char *id, int how, const char *error) {
  (void)ud; (void)id; (void)error;
  ended += how == FLOWRUN_DONE;
}
static void count_trace(void *ud, const flowrun_trace *t) {
  (void)ud; (void)t;
  traced++;
}

/* Runs reward.lua (a call, then a say) to its end with cb. */
static void run_reward(const flowrun_callbacks *cb) {
  flowrun *rt = flowrun_new(cb);
  said = ended = traced = 0;
  if (!rt || flowrun_load_integrations(rt, path("integrations.lua")) != FLOWRUN_OK
      || flowrun_start(rt, "r", path("reward.lua"), 0, NULL) != FLOWRUN_OK)
    fprintf(stderr, "run_reward: %s\n", rt ? flowrun_errmsg(rt) : "NULL");
  for (int i = 0; i < 100 && rt && flowrun_step(rt, 100) > 0; i++) {}
  flowrun_free(rt);
}

/* ---- a store on a full disk ---- */

static int acks[3];                     /* stored callbacks, by session */

static void on_stored(void *ud, const char *id, long long n) {
  (void)ud;
  (void)n;
  acks[id[1] - '1']++;
}

/* Three sessions answered until their store has no room (a file size
** limit, SIGXFSZ ignored: a write past it fails as on a full disk), in a
** child, so that the limit binds no file of this process. The child
** writes what it saw to fd: the step that failed and its message, the
** next step's, flowrun_store_failed, the acknowledgements. */
static void fill_store(int fd) {
  struct rlimit rl = { 4 << 20, 4 << 20 };
  flowrun_callbacks cb = { .size = sizeof(flowrun_callbacks), .stored = on_stored };
  flowrun *rt = flowrun_new(&cb);
  char id[3] = "u0", text[4000], out[1200];
  int rc = FLOWRUN_OK, again;
  signal(SIGXFSZ, SIG_IGN);
  setrlimit(RLIMIT_FSIZE, &rl);
  memset(text, 'a', sizeof text);
  if (!rt || flowrun_open_store(rt, path("full.db")) != FLOWRUN_OK) _exit(1);
  for (int i = 0; i < 3; i++) {
    id[1] = (char)('1' + i);
    flowrun_start(rt, id, path("count.lua"), 0, NULL);
  }
  for (int k = 1; k <= 2000 && rc != FLOWRUN_ERR; k++) {
    for (int i = 0; i < 3; i++) {
      id[1] = (char)('1' + i);
      flowrun_send_n(rt, id, k, text, sizeof text);
    }
    for (int t = 0; t < 3 && (rc = flowrun_step(rt, 5)) != FLOWRUN_ERR; t++) {}
  }
  snprintf(out, sizeof out, "%d %d %d %d %d|%s|", rc, flowrun_store_failed(rt), acks[0], acks[1], acks[2],
           flowrun_errmsg(rt));
  again = flowrun_step(rt, 0);
  snprintf(out + strlen(out), sizeof out - strlen(out), "%d %s", again, flowrun_errmsg(rt));
  if (write(fd, out, strlen(out)) < 0) _exit(1);
  flowrun_free(rt);
  _exit(0);
}

static void store_full(void) {
  int fds[2], rc = 0, failed_for_good = 0, got[3] = { 0 }, ok = 1;
  char res[1200] = "", want[600], *msg, *msg2;
  ssize_t n;
  pid_t pid;
  flowrun_callbacks cb = { .size = sizeof(flowrun_callbacks) };
  flowrun *rt;
  write_file("count.lua", "while true do local a = ask() if a == nil then return end say(#a) end\n");
  if (pipe(fds) < 0) return;
  if ((pid = fork()) == 0) {
    close(fds[0]);
    fill_store(fds[1]);
  }
  close(fds[1]);
  n = read(fds[0], res, sizeof res - 1);
  res[n > 0 ? n : 0] = '\0';
  close(fds[0]);
  waitpid(pid, NULL, 0);
  sscanf(res, "%d %d %d %d %d", &rc, &failed_for_good, &got[0], &got[1], &got[2]);
  msg = strchr(res, '|');
  msg2 = msg ? strchr(msg + 1, '|') : NULL;
  if (msg2) *msg2++ = '\0';
  snprintf(want, sizeof want, "store %s: disk I/O error: nothing after the last commit is stored "
           "or acknowledged", path("full.db"));
  check(rc == FLOWRUN_ERR && msg && strcmp(msg + 1, want) == 0,
        "full store: flowrun_step fails, flowrun_errmsg names the store");
  check(failed_for_good == 1 && msg2 && atoi(msg2) == FLOWRUN_ERR && strstr(msg2, want),
        "full store: flowrun_store_failed is 1; the next step fails the same");
  rt = flowrun_new(&cb);
  check(rt && flowrun_store_failed(rt) == 0 && got[0] + got[1] + got[2] > 3,
        "full store: messages were acknowledged before; no store, no failure");
  if (rt && flowrun_open_store(rt, path("full.db")) == FLOWRUN_OK) {
    for (int i = 0; i < 3; i++) {
      char id[3] = { 'u', (char)('1' + i), 0 };
      ok &= flowrun_stored(rt, id) == got[i] - 1;   /* the start is acknowledged too */
    }
  } else ok = 0;
  check(ok, "full store: with room again, the store has exactly the messages acknowledged");
  flowrun_free(rt);
}

static void callbacks_size(void) {
  flowrun_callbacks before = { .say = count_say, .end = count_end, .trace = count_trace };
  struct { flowrun_callbacks cb; void (*later)(void *); char more[64]; } newer;
  flowrun_callbacks older = { .say = count_say, .end = count_end, .trace = count_trace,
                              .size = offsetof(flowrun_callbacks, trace) };
  run_reward(&before);
  check(said == 1 && ended == 1 && traced == 1,
        "callbacks without size (a host written before the field): every one up to ud is heard");
  memset(&newer, 0xA5, sizeof newer);   /* fields this version does not know */
  newer.cb = (flowrun_callbacks){ .say = count_say, .end = count_end, .trace = count_trace,
                                  .size = sizeof newer };
  run_reward(&newer.cb);
  check(said == 1 && ended == 1 && traced == 1,
        "callbacks of a later flowrun.h (a larger size): the fields this version knows are heard");
  run_reward(&older);
  check(said == 1 && ended == 1 && traced == 0,
        "callbacks whose size ends before trace: trace is taken as NULL");
}

/* A transport in C: the id from the path said back as JSON after 250 ms;
** /v1/fast/down is refused by the transport itself. */
static int answer_reward(void *ud, const flowrun_request *rq, flowrun_answer *out) {
  static char body[128];
  int *n = ud;
  const char *id = strrchr(rq->target, '/') + 1;
  (*n)++;
  if (strcmp(id, "down") == 0) {
    out->message = "no stub for it";
    return FLOWRUN_ERR;
  }
  snprintf(body, sizeof body, "{\"result\":\"%s %s %s\"}", id, rq->method, rq->session ? rq->session : "-");
  out->status = 200;
  out->headers = "Content-Type: application/json\nX-Stub: 1";
  out->body = body;
  out->body_len = strlen(body);
  out->delay_ms = 250;
  return FLOWRUN_OK;
}

static void transport(void) {
  host h;
  flowrun *rt = runtime(&h);
  int calls = 0, steps = 0;
  double c0;
  write_file("stubbed.lua", "local l, r = api_node{ integration = 'game', path = '/fast/{id}',\n"
             "  params = { id = session.id }, results = { '200' } }\n"
             "say(l .. ' ' .. (r.json and r.json.result or r.reason .. ' ' .. r.error) .. ' ' .. r.elapsed_ms)\n");
  check(flowrun_virtual_clock(rt, 1767225600000.0) == FLOWRUN_OK
        && flowrun_set_transport(rt, answer_reward, &calls) == FLOWRUN_OK
        && flowrun_clock_ms(rt) == 1767225600000.0, "flowrun_virtual_clock from a start; a transport");
  c0 = flowrun_clock_ms(rt);
  flowrun_start(rt, "p1", path("stubbed.lua"), 0, NULL);
  flowrun_start(rt, "down", path("stubbed.lua"), 0, NULL);
  while (flowrun_step(rt, 100) > 0 && steps < 1000) steps++;
  check(calls == 2 && h.nsaid == 2 && h.done == 2, "every call answered by the transport, none by the network");
  check(strcmp(h.said[0], "200 p1 GET p1 250") == 0 || strcmp(h.said[1], "200 p1 GET p1 250") == 0,
        "the answer's status, body and delay reach the flow");
  check(strcmp(h.said[0], "error internal no stub for it 0") == 0
        || strcmp(h.said[1], "error internal no stub for it 0") == 0,
        "a transport's FLOWRUN_ERR: label error, reason internal, its message");
  check(flowrun_clock_ms(rt) - c0 == 250 && steps < 10,
        "the virtual clock jumped the 250 ms in a few steps");
  check(flowrun_virtual_clock(rt, -1) == FLOWRUN_OK, "flowrun_virtual_clock again: nothing changes");
  flowrun_free(rt);
}

/* ---- a frame budget: a burst of completions spread over steps ---- */

#define BURST 5000
#define WORK_US 100                     /* the host's work for each trace and message */
#define MOST (2000 / WORK_US + 2)       /* what a step of 2 ms can hold: see frame_budget */
static int burst_said, burst_traced, burst_step_work, burst_in_order, burst_ok, burst_next;
static char burst_stopped[BURST];       /* sessions the host stopped: none says */

static void burst_say(void *ud, const char *id, const char *text, size_t len) {
  (void)ud;
  while (burst_next < BURST && burst_stopped[burst_next]) burst_next++;
  if (atoi(id + 1) != burst_next++) burst_in_order = 0;
  if (len == 3 && memcmp(text, "200", 3) == 0) burst_ok++;
  burst_said++;
  burst_step_work++;
  usleep(WORK_US);
}

static void burst_trace(void *ud, const flowrun_trace *t) {
  (void)ud;
  (void)t;
  burst_traced++;
  burst_step_work++;
  usleep(WORK_US);
}

static int answer_burst(void *ud, const flowrun_request *rq, flowrun_answer *out) {
  (void)ud;
  (void)rq;
  out->status = 200;
  out->body = "{}";
  out->body_len = 2;
  out->delay_ms = 100;
  return FLOWRUN_OK;
}

/* n sessions each make one call, answered together: by a transport on a
** virtual clock (mode 0: at the same instant), or by the mock over the
** network (mode 1: 300 ms after they were sent, within a few ms of each
** other); or (mode 2) each waits in ask() and the host sends a message to
** every one at once. The host takes WORK_US for each trace and each
** message said. budget
** 0: flowrun_step. Returns the most traces and messages one step gave;
** *steps: the steps that gave any. */
static int burst(int n, int mode, double budget, int *steps) {
  flowrun_callbacks cb = { .say = burst_say, .trace = burst_trace, .size = sizeof(flowrun_callbacks) };
  flowrun *rt = flowrun_new(&cb);
  char id[16];
  int most = 0, live, idle = 0;
  burst_said = burst_traced = burst_ok = burst_next = 0;
  memset(burst_stopped, 0, sizeof burst_stopped);
  burst_in_order = 1;
  *steps = 0;
  if (!rt || flowrun_load_integrations(rt, path(mode == 1 ? "net_integrations.lua"
                                                          : "burst_integrations.lua")) != FLOWRUN_OK
      || (mode != 1 && (flowrun_virtual_clock(rt, 0) != FLOWRUN_OK
                   || flowrun_set_transport(rt, answer_burst, NULL) != FLOWRUN_OK))) {
    fprintf(stderr, "burst: %s\n", rt ? flowrun_errmsg(rt) : "ENOMEM");
    exit(1);
  }
  for (int i = 0; i < n; i++) {
    snprintf(id, sizeof id, "b%d", i);
    if (flowrun_start(rt, id, path(mode == 2 ? "burst_ask.lua" : "burst.lua"), 0, NULL) != FLOWRUN_OK)
      exit(1);
  }
  if (mode == 2) {                      /* all wait in ask(); then a message to each */
    for (int i = 0; i < 100 && !flowrun_quiet(rt); i++) flowrun_step(rt, 0);
    for (int i = 0; i < n; i++) {
      snprintf(id, sizeof id, "b%d", i);
      if (flowrun_send(rt, id, "200", 3) != FLOWRUN_OK) exit(1);
    }
    /* then stops some of them, ready to run: from the middle of the ready
    ** list (two side by side), its head and its tail */
    static const int stop[] = { 10, 11, 0, BURST - 1 };
    for (size_t k = 0; k < sizeof stop / sizeof stop[0]; k++) {
      snprintf(id, sizeof id, "b%d", stop[k]);
      if (flowrun_stop(rt, id) != FLOWRUN_OK) exit(1);
      burst_stopped[stop[k]] = 1;
    }
  }
  do {                                  /* hang guards: 200 steps in a row that gave nothing */
    burst_step_work = 0;                /* (20 s at least), n * 10 that gave something */
    live = budget > 0 ? flowrun_step_budget(rt, 100, budget) : flowrun_step(rt, 100);
    if (burst_step_work > 0) (*steps)++;
    idle = burst_step_work > 0 ? 0 : idle + 1;
    if (burst_step_work > most) most = burst_step_work;
  } while (live > 0 && *steps < n * 10 && idle < 200);
  flowrun_free(rt);
  return most;
}

/* A step with a 2 ms budget checks the time before each unit of work but
** the first of each kind, and each trace and message costs the host
** WORK_US: it gives at most 2000 / WORK_US units past the checks, plus the
** first timer's and the first resume's. A count, whatever the machine's
** speed (a slower one gives fewer). */
static void frame_budget(int port) {
  char buf[256];
  int steps, most;
  write_file("burst_integrations.lua",
             "return { burst = { base_url = 'http://127.0.0.1:9/v1', max_connections = 10000 } }\n");
  snprintf(buf, sizeof buf, "return { burst = { base_url = 'http://127.0.0.1:%d/v1',"
           " max_connections = 500, timeout_ms = 30000 } }\n", port);
  write_file("net_integrations.lua", buf);
  write_file("burst_ask.lua", "say(ask())\n");
  write_file("burst.lua", "local label = api_node{ integration = 'burst', path = '/burst',"
             " results = { '200' } }\nsay(label)\n");
  most = burst(BURST, 0, 0, &steps);
  check(burst_ok == BURST && most == 2 * BURST && steps == 1,
        "without a budget, one step takes all 5000 calls that ended together and their sessions");
  most = burst(BURST, 0, 2.0, &steps);
  check(burst_ok == BURST && burst_traced == BURST, "with a 2 ms budget every call and session is still served");
  check(most >= 1 && most <= MOST,
        "with a 2 ms budget a step takes at most 22 of those ends and resumes (100 us of host work each)");
  check(steps >= 2 * BURST / MOST, "the burst is spread over hundreds of steps");
  check(burst_in_order, "the sessions are resumed in the order they made their calls (answers that came together)");
  most = burst(BURST, 2, 2.0, &steps);
  check(burst_ok == BURST - 4 && most >= 1 && most <= MOST && burst_in_order,
        "5000 messages sent at once, 4 of their sessions stopped: at most 22 sessions resumed a"
        " step, in the order they were sent, all but the 4");
  most = burst(500, 1, 2.0, &steps);
  check(burst_ok == 500 && most >= 1 && most <= MOST,
        "500 calls over the network ending together: at most 22 ends and resumes a step, all served");
  flowrun_callbacks none = { .size = sizeof(flowrun_callbacks) };
  flowrun *rt = flowrun_new(&none);
  check(rt && flowrun_step_budget(rt, 0, 2.0) == 0 && flowrun_step_budget(rt, 0, -1) == 0
        && flowrun_step_budget(rt, 0, 0) == 0, "flowrun_step_budget on an idle runtime; 0 and < 0: none");
  flowrun_free(rt);
}

/* ---- callbacks that stop sessions while a budgeted step checks its time ---- */

static flowrun *stopper_rt;
static const char *stop_on_trace;       /* the session a trace callback stops */
static int stop_traces, stop_wait_us;
static char stop_said[4][64];
static int stop_nsaid;

static void stop_say(void *ud, const char *id, const char *text, size_t len) {
  (void)ud;
  if (stop_nsaid < 4) snprintf(stop_said[stop_nsaid++], 64, "%s %.*s", id, (int)len, text);
}

static void stop_trace(void *ud, const flowrun_trace *t) {
  (void)ud;
  (void)t;
  if (stop_traces++ == 0 && stop_wait_us) usleep(stop_wait_us);   /* the host's work */
  else if (stop_on_trace) flowrun_stop(stopper_rt, stop_on_trace);
}

/* A listener that never answers: calls to it time out. Its port, 0 on failure. */
static int silent_listener(int *fd) {
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
  socklen_t sl = sizeof sa;
  *fd = socket(AF_INET, SOCK_STREAM, 0);
  if (*fd < 0 || bind(*fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(*fd, 16) < 0
      || getsockname(*fd, (struct sockaddr *)&sa, &sl) < 0)
    return 0;
  return ntohs(sa.sin_port);
}

/* The check of a budget delivers calls that ended, and their trace
** callbacks may stop any session (under AddressSanitizer a use after free
** shows here): the one at the head of the ready list, the one whose sleep
** is the next timer due. */
static void stop_in_budget(void) {
  flowrun_callbacks cb = { .say = stop_say, .trace = stop_trace, .size = sizeof(flowrun_callbacks) };
  char buf[512];
  int fd, port = silent_listener(&fd), ok;
  flowrun *rt;
  snprintf(buf, sizeof buf,
           "return { x = { base_url = 'http://127.0.0.1:%d/v1', timeout_ms = 50 },\n"
           "  q = { base_url = 'http://127.0.0.1:%d/v1', max_connections = 1, queue_timeout_ms = 20,"
           " timeout_ms = 5000 },\n"
           "  y = { base_url = 'http://127.0.0.1:%d/v1', timeout_ms = 60 } }\n", port, port, port);
  write_file("silent_integrations.lua", buf);
  write_file("silent_call.lua", "local label = api_node{ integration = 'x', path = '/a', results = { '200' } }\n"
             "say(label)\n");
  write_file("asker.lua", "say('got ' .. tostring(ask()))\n");
  write_file("hold_q.lua", "say(api_node{ integration = 'q', path = '/h', results = { '200' } })\n");
  write_file("call_y.lua", "say(api_node{ integration = 'y', path = '/y', results = { '200' } })\n");
  write_file("sleeper.lua", "sleep(25)\nsay('woke')\n");

  /* a trace stops the session at the head of the ready list */
  stop_nsaid = stop_traces = stop_wait_us = 0;
  stop_on_trace = "b";
  stopper_rt = rt = flowrun_new(&cb);
  ok = port && rt && flowrun_load_integrations(rt, path("silent_integrations.lua")) == FLOWRUN_OK
       && flowrun_start(rt, "c", path("silent_call.lua"), 0, NULL) == FLOWRUN_OK
       && flowrun_start(rt, "a", path("asker.lua"), 0, NULL) == FLOWRUN_OK
       && flowrun_start(rt, "b", path("asker.lua"), 0, NULL) == FLOWRUN_OK;
  for (int i = 0; ok && i < 5; i++) flowrun_step_budget(rt, 5, 1000);
  usleep(100 * 1000);                   /* a frame: c's call runs out of time */
  ok = ok && flowrun_send(rt, "a", "1", 1) == FLOWRUN_OK && flowrun_send(rt, "b", "2", 1) == FLOWRUN_OK;
  for (int i = 0; ok && i < 20 && flowrun_step_budget(rt, 10, 1000) > 0; i++) {}
  if (stop_nsaid != 2) fprintf(stderr, "stop_in_budget: %d traces, said %d: %s / %s\n", stop_traces,
                               stop_nsaid, stop_said[0], stop_said[1]);
  check(ok && stop_traces == 1 && stop_nsaid == 2 && strcmp(stop_said[0], "a got 1") == 0
        && strcmp(stop_said[1], "c timeout") == 0 && flowrun_sessions(rt) == 0,
        "a trace callback stops the session a budgeted step was about to resume: the others go on");
  flowrun_free(rt);

  /* a trace stops the session whose sleep is the next timer due */
  stop_nsaid = stop_traces = 0;
  stop_wait_us = 50 * 1000;
  stopper_rt = rt = flowrun_new(&cb);
  ok = port && rt && flowrun_load_integrations(rt, path("silent_integrations.lua")) == FLOWRUN_OK
       && flowrun_start(rt, "h", path("hold_q.lua"), 0, NULL) == FLOWRUN_OK;
  if (ok) flowrun_step_budget(rt, 0, 1000);
  ok = ok && flowrun_start(rt, "qd", path("hold_q.lua"), 0, NULL) == FLOWRUN_OK
       && flowrun_start(rt, "y", path("call_y.lua"), 0, NULL) == FLOWRUN_OK
       && flowrun_start(rt, "b", path("sleeper.lua"), 0, NULL) == FLOWRUN_OK;
  for (int i = 0; ok && i < 2; i++) flowrun_step_budget(rt, 0, 1000);
  usleep(30 * 1000);                    /* qd's queue time and b's sleep are over */
  for (int i = 0; ok && i < 10; i++) flowrun_step_budget(rt, 10, 1000);
  check(ok && stop_traces >= 2 && flowrun_stop(rt, "b") == FLOWRUN_NOSESSION,
        "a trace callback stops the session whose timer a budgeted step was about to fire");
  flowrun_free(rt);
  close(fd);
}

/* A host descriptor that stays readable (a busy input) does not starve the
** sockets of calls, nor another busy descriptor: a budgeted step takes
** events from where the last one stopped. */
static void on_busy(void *ud, int fd) {
  char c;
  if (read(fd, &c, 1) == 1) ++*(int *)ud;
  usleep(3000);                         /* the host's work for each byte: 3 ms */
}

static int busy_pipe(int fds[2]) {
  static char junk[2000];
  memset(junk, 'x', sizeof junk);
  return pipe(fds) == 0 && write(fds[1], junk, sizeof junk) == (ssize_t)sizeof junk;
}

static void busy_fd(void) {
  host h;
  flowrun *rt = runtime(&h);
  int a[2], b[2], reads_a = 0, reads_b = 0;
  if (!busy_pipe(a) || !busy_pipe(b)) exit(1);
  flowrun_watch(rt, a[0], on_busy, &reads_a);
  flowrun_start(rt, "f", path("fast_once.lua"), 0, NULL);
  for (int i = 0; i < 2000 && flowrun_sessions(rt) > 0; i++) flowrun_step_budget(rt, 10, 2.0);
  check(h.nsaid == 1 && strcmp(h.said[0], "200") == 0 && reads_a < 200,
        "a host fd that stays readable does not starve a call's socket under a budget");
  /* two that stay readable: epoll reports them in the same order every
  ** time, so a step that always began with the first would never read b */
  reads_a = 0;
  flowrun_watch(rt, b[0], on_busy, &reads_b);
  for (int i = 0; i < 40; i++) flowrun_step_budget(rt, 10, 2.0);
  check(reads_a >= 10 && reads_b >= 10 && reads_a + reads_b <= 42,
        "two host fds that stay readable take budgeted steps in turn (one event a step each)");
  flowrun_watch(rt, a[0], NULL, NULL);
  flowrun_watch(rt, b[0], NULL, NULL);
  close(a[0]); close(a[1]); close(b[0]); close(b[1]);
  flowrun_free(rt);
}

/* A transport that answers 503 to a call's first attempt, 200 to its next. */
static int answer_503_then_200(void *ud, const flowrun_request *rq, flowrun_answer *out) {
  (void)ud;
  out->status = rq->attempt == 1 ? 503 : 200;
  out->body = "{}";
  out->body_len = 2;
  return FLOWRUN_OK;
}

static int finals;
static void count_final(void *ud, const flowrun_trace *t) {
  (void)ud;
  traced++;
  finals += t->final;
}

/* A call retried once: two trace records with trace_attempts (the
** attempt's, final 0, then the call's), one without (a host built before
** the field hears what it always did). */
static void trace_attempts(void) {
  for (int on = 0; on <= 1; on++) {
    flowrun_callbacks cb = { .trace = count_final, .size = sizeof(flowrun_callbacks),
                             .trace_attempts = on };
    flowrun *rt = flowrun_new(&cb);
    int steps = 0;
    traced = finals = 0;
    write_file("retry_once.lua", "api_node{ integration = 'game', path = '/x', results = { '200' } }\n");
    if (!rt || flowrun_load_integrations(rt, path("retried.lua")) != FLOWRUN_OK
        || flowrun_virtual_clock(rt, -1) != FLOWRUN_OK
        || flowrun_set_transport(rt, answer_503_then_200, NULL) != FLOWRUN_OK
        || flowrun_start(rt, "r", path("retry_once.lua"), 0, NULL) != FLOWRUN_OK) {
      check(0, "a runtime for trace_attempts");
      return;
    }
    while (flowrun_step(rt, 100) > 0 && steps < 1000) steps++;
    check(traced == 1 + on && finals == 1,
          on ? "trace_attempts 1: a retried call's attempt has its own record (final 0), then the call's"
             : "trace_attempts 0: one trace record a call, however many attempts");
    flowrun_free(rt);
  }
}

/* A trace callback that stops the session whose call it is about: refused
** (the call goes on after the callback: a retry, a redirect, its end), for
** every record; the host stops it after the step. */
static flowrun *self_rt;
static int self_refused, self_traced;
static void stop_self(void *ud, const flowrun_trace *t) {
  (void)ud;
  self_traced++;
  if (flowrun_stop(self_rt, t->session) == FLOWRUN_ERR && strstr(flowrun_errmsg(self_rt), "being traced"))
    self_refused++;
}

static void stop_traced(void) {
  flowrun_callbacks cb = { .trace = stop_self, .size = sizeof(flowrun_callbacks), .trace_attempts = 1 };
  flowrun *rt = self_rt = flowrun_new(&cb);
  int steps = 0;
  self_refused = self_traced = 0;
  write_file("retry_twice.lua", "api_node{ integration = 'game', path = '/x', results = { '200' } }\n"
             "sleep(1000)\n");
  if (!rt || flowrun_load_integrations(rt, path("retried.lua")) != FLOWRUN_OK
      || flowrun_set_transport(rt, answer_503_then_200, NULL) != FLOWRUN_OK
      || flowrun_start(rt, "r", path("retry_twice.lua"), 0, NULL) != FLOWRUN_OK) {
    check(0, "a runtime for stop_traced");
    return;
  }
  while (self_traced < 2 && flowrun_step(rt, 100) > 0 && steps < 1000) steps++;
  check(self_traced == 2 && self_refused == 2 && flowrun_stop(rt, "r") == FLOWRUN_OK,
        "a trace callback cannot stop the session its call is of (FLOWRUN_ERR); the host stops it after");
  flowrun_free(rt);
}

/* Is test function name wanted (EMBED_ONLY unset, or it names it)? */
static int wanted(const char *name) {
  const char *only = getenv("EMBED_ONLY"), *p;
  size_t n = strlen(name);
  if (!only) return 1;
  for (p = only; (p = strstr(p, name)); p += n)
    if ((p == only || p[-1] == ',') && (p[n] == ',' || p[n] == '\0')) return 1;
  return 0;
}

#define RUN(f) do { if (wanted(#f)) f(); } while (0)

int main(int argc, char **argv) {
  const char *exe = argc > 1 ? argv[1] : "build/flowrun";
  const char *oom_from = getenv("EMBED_OOM_FROM");   /* only those rounds, from N */
  char buf[512];
  int port;
  signal(SIGPIPE, SIG_IGN);
  if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
  write_file("routes.lua",
    "return {\n"
    "  { path = '/v1/reward/{id}', delay_ms = 50, json = { result = 'granted' } },\n"
    "  { path = '/v1/hang', fault = 'no_response' },\n"
    "  { path = '/v1/fast/{id}', json = { result = 'granted' } },\n"
    "  { path = '/v1/big', body = string.rep('x', 200000) },\n"
    "  { path = '/v1/burst', delay_ms = 300, json = { ok = true } },\n"
    "}\n");
  if (!(port = start_mock(exe))) {
    fprintf(stderr, "cannot start the mock server\n");
    return 1;
  }
  snprintf(buf, sizeof buf,
           "return { game = { base_url = 'http://127.0.0.1:%d/v1', max_connections = 64,\n"
           "                  auth = { bearer = env('EMBED_TOKEN') } } }\n",
           port);
  setenv("EMBED_TOKEN", "embed-s3cret", 1);
  write_file("integrations.lua", buf);
  snprintf(buf, sizeof buf,
           "return { one = { base_url = 'http://127.0.0.1:%d/v1', max_connections = 1,\n"
           "                 queue_timeout_ms = 60000 } }\n", port);
  write_file("one_integrations.lua", buf);
  write_file("hang_one.lua", "api_node{ integration = 'one', path = '/hang', results = { '200' } }\n");
  write_file("bad_integrations.lua", "return { shop = { base_url = 'http://127.0.0.1/', timeout_ms = 'x' } }\n");
  write_file("reward.lua",
    "local label, res = api_node{ integration = 'game', path = '/reward/{id}',\n"
    "  params = { id = session.id }, results = { '200' } }\n"
    "say(label .. ' ' .. res.json.result)\n");
  write_file("chat.lua", "local name = ask('your name?')\nsay('hello ' .. name)\n");
  write_file("broken.lua", "local x = 1\nerror('boom')\n");
  write_file("spin.lua", "local n = 0\ncoroutine.wrap(function() while true do n = n + 1 "
             "pcall(error, 'caught') end end)()\n");
  write_file("grant.lua", "say(grant() .. ' ' .. tostring(io))\n");
  write_file("loop.lua", "while true do end\n");
  write_file("io.lua", "say(type(io.write))\n");
  write_file("oom.lua", "sleep(1)\n"
    "local label, res = api_node{ integration = 'game', path = '/fast/{id}',\n"
    "  params = { id = session.id }, results = { '200' } }\n"
    "say(label .. ' ' .. res.json.result .. ' ' .. hello() .. ' ' .. ask())\n");
  write_file("big.lua", "local label = api_node{ integration = 'game', path = '/big', "
             "results = { '200' } }\nsay(label)\n");
  write_file("hang.lua", "api_node{ integration = 'game', path = '/hang', results = { '200' } }\n");
  write_file("fast_once.lua", "say(api_node{ integration = 'game', path = '/fast/f', results = { '200' } })\n");
  write_file("retried.lua", "return { game = { base_url = 'http://127.0.0.1:9/v1',"   /* a transport answers */
             " retry = { attempts = 2, on = { '503' }, backoff_ms = 10 } } }\n");
  if (!oom_from) {
    RUN(frame_loop);
    RUN(ask_and_send);
    RUN(errors);
    RUN(stop_mid_call);
    RUN(stats);
    RUN(watch_fd);
    RUN(break_spinning);
    RUN(sandbox_api);
    RUN(callbacks_size);
    RUN(store_full);
    RUN(transport);
    RUN(trace_attempts);
    if (wanted("frame_budget")) frame_budget(port);
    RUN(stop_in_budget);
    RUN(busy_fd);
    RUN(stop_traced);
  }
#ifdef EMBED_OOM
  if (!oom_from) RUN(response_out_of_memory);
  if (wanted("out_of_memory")) {
    out_of_memory(0, atol(oom_from ? oom_from : "0"));
    out_of_memory(1, atol(oom_from ? oom_from : "0"));
  }
#endif
  kill(mock_pid, SIGTERM);
  waitpid(mock_pid, NULL, 0);
  snprintf(buf, sizeof buf, "rm -rf %s", dir);
  if (system(buf) != 0) fprintf(stderr, "cannot remove %s\n", dir);
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
