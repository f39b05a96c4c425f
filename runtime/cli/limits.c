/*
** limits.c -- the options of run, host and repl that grant flows
** more than the sandbox (--allow LIST) and set the limits of a session
** (--limit NAME=VALUE), read the same way by every command.
*/
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define WALL_DEFAULT 30                 /* seconds a session may run without waiting */

static const struct { const char *name; int which; } limit_names[] = {
  { "instructions", FLOWRUN_LIMIT_INSTRUCTIONS },
  { "session-memory", FLOWRUN_LIMIT_SESSION_MEMORY },
  { "memory", FLOWRUN_LIMIT_MEMORY },
  { "output", FLOWRUN_LIMIT_OUTPUT },
};
#define NLIMITS (sizeof limit_names / sizeof *limit_names)

/* "NAME=VALUE" with VALUE a count and an optional K, M or G (x1024). */
static int parse_limit(const char *s, int *which, long long *value) {
  const char *eq = strchr(s, '=');
  char *end;
  size_t n = eq ? (size_t)(eq - s) : 0;
  *which = -1;
  for (size_t i = 0; i < NLIMITS; i++)
    if (eq && strlen(limit_names[i].name) == n && strncmp(s, limit_names[i].name, n) == 0)
      *which = limit_names[i].which;
  if (*which < 0) return -1;
  errno = 0;
  *value = strtoll(eq + 1, &end, 10);
  if (end == eq + 1 || *value < 0 || errno || *value > (LLONG_MAX >> 30)) return -1;
  if (*end == 'K' || *end == 'k') *value <<= 10, end++;
  else if (*end == 'M' || *end == 'm') *value <<= 20, end++;
  else if (*end == 'G' || *end == 'g') *value <<= 30, end++;
  return *end ? -1 : 0;
}

int cli_sandbox_arg(cli_grants *g, int argc, char **argv, int *i, const char *cmd) {
  const char *a = argv[*i];
  int which;
  long long v;
  if (strcmp(a, "--allow") != 0 && strcmp(a, "--limit") != 0) return 0;
  if (*i + 1 >= argc) {
    fprintf(stderr, "%s: %s needs a value\n", cmd, a);
    return -1;
  }
  a = argv[++*i];
  if (strcmp(argv[*i - 1], "--allow") == 0) {
    g->allow = a;
    return 1;
  }
  if (strncmp(a, "wall=", 5) == 0) {    /* the command's own: seconds */
    char *end;
    long w = strtol(a + 5, &end, 10);
    if (end == a + 5 || *end || w < 0) {
      fprintf(stderr, "%s: --limit wall=SECONDS: expected a whole number of seconds, got '%s'\n",
              cmd, a + 5);
      return -1;
    }
    g->wall = w;
    g->wall_set = true;
    return 1;
  }
  if (parse_limit(a, &which, &v) != 0 || g->nlimits == CLI_MAX_LIMITS) {
    fprintf(stderr, "%s: --limit: expected NAME=VALUE with NAME one of instructions, "
            "session-memory, memory, output, wall and VALUE a number (K, M, G allowed), got '%s'\n",
            cmd, a);
    return -1;
  }
  g->limits[g->nlimits++] = a;
  return 1;
}

int cli_sandbox_apply(const cli_grants *g, flowrun *rt, const char *cmd) {
  for (int k = 0; k < g->nlimits; k++) {
    int which;
    long long v;
    parse_limit(g->limits[k], &which, &v);
    flowrun_limit(rt, which, v);
  }
  if (g->allow) {
    const char *p = g->allow;
    while (*p) {
      size_t n = strcspn(p, ",");
      char lib[32];
      if (n > 0 && n < sizeof lib) {
        memcpy(lib, p, n);
        lib[n] = '\0';
        if (flowrun_allow(rt, lib) != FLOWRUN_OK) {
          fprintf(stderr, "%s: --allow: %s\n", cmd, flowrun_errmsg(rt));
          return -1;
        }
      } else if (n > 0) {
        fprintf(stderr, "%s: --allow: unknown library '%.*s' (io, os, debug or package)\n",
                cmd, (int)n, p);
        return -1;
      }
      p += n + (p[n] == ',');
    }
  }
  return 0;
}

/* ---- the watchdog: a session stuck in C code ----
** The count hook stops Lua code that runs too long; code stuck inside one
** C function (a pattern match that backtracks for ever) never reaches it.
** A thread looks every 100 ms at how long the running session has run
** without waiting: past the wall budget it asks the session to stop
** (flowrun_break, which ends it if the C function calls back into Lua or
** returns); two seconds later it is stuck for good, and nothing can take
** it off the loop's thread: the command says so and exits 1, so that a
** supervisor starts it again, rather than freezing every session. */

static struct {
  pthread_t thread, loop;               /* the watchdog, the loop's thread */
  flowrun *rt;
  long long budget_ms;
  atomic_bool stop;
  bool started;
} dog;

static void *watch(void *arg) {
  bool broke = false;
  (void)arg;
  while (!atomic_load(&dog.stop)) {
    struct timespec ts = { 0, 100 * 1000 * 1000 };
    long long ms = flowrun_running_ms(dog.rt);
    nanosleep(&ts, NULL);
    if (ms < dog.budget_ms) {
      broke = false;
      continue;
    }
    if (!broke) {                       /* flowrun_break, on the loop's thread */
      broke = true;
      pthread_kill(dog.loop, SIGUSR1);
    } else if (ms > dog.budget_ms + 2000) {
      char msg[300];
      int n = snprintf(msg, sizeof msg,
                       "flowrun: a session has run for %lld s without waiting, stuck inside a C "
                       "function (a pattern match?) where it cannot be stopped: exiting "
                       "(--limit wall=%lld)\n", ms / 1000, dog.budget_ms / 1000);
      fflush(stdout);
      if (write(2, msg, (size_t)n) < 0) {}
      _exit(1);
    }
  }
  return NULL;
}

static void on_usr1(int sig) {
  (void)sig;
  flowrun_break(dog.rt);
}

void cli_watchdog_start(const cli_grants *g, flowrun *rt) {
  long wall = g->wall_set ? g->wall : WALL_DEFAULT;
  struct sigaction sa;
  if (wall <= 0 || dog.started) return;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, NULL);
  dog.loop = pthread_self();
  dog.rt = rt;
  dog.budget_ms = (long long)wall * 1000;
  atomic_store(&dog.stop, false);
  dog.started = pthread_create(&dog.thread, NULL, watch, NULL) == 0;
}

void cli_watchdog_stop(void) {
  if (!dog.started) return;
  atomic_store(&dog.stop, true);
  pthread_join(dog.thread, NULL);
  dog.started = false;
}
