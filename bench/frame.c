/*
** frame.c -- a game server's frame loop: N players, each a session whose
** flow calls BASE_URL/json once a second (sleep 1000 between calls), all
** started at once; the host steps the runtime every 1 ms, with a time
** budget of BUDGET_MS (flowrun_step_budget) or none (0: flowrun_step(rt, 0)),
** for SECONDS, and times every step.
** usage: frame BASE_URL N SECONDS BUDGET_MS [MAX_CONNECTIONS (100)]; prints
**   "sessions N budget_ms B steps S p50_us A p99_us B max_us C
**    first_max_us D cpu_p99_us E cpu_max_us F calls K calls_per_s R wrong W
**    start_ms T"
** (first_max_us: the longest step in the first second; cpu_*: the steps'
** CPU time, which leaves out the time the thread was not running;
** calls_per_s: after the first second; start_ms: the host's own time in
** flowrun_start for the N sessions, outside any step; wrong: calls that
** did not end "200"). Exits 1 when a call went wrong or a
** session failed.
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "flowrun.h"
#define SCRATCH_NAME "frame"
#include "scratch.h"

static long calls, wrong, failed;

static void on_say(void *ud, const char *id, const char *text, size_t len) {
  (void)ud;
  calls++;
  if (!(len == 3 && memcmp(text, "200", 3) == 0) && wrong++ == 0)
    fprintf(stderr, "frame: %s: label %.*s\n", id, (int)len, text);
}

static void on_end(void *ud, const char *id, int how, const char *error) {
  (void)ud;
  if (how != FLOWRUN_DONE && failed++ == 0) fprintf(stderr, "frame: %s: %s\n", id, error);
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static double cpu_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

static int run(const char *url, long n, double seconds, double budget, long conns) {
  flowrun_callbacks cb = { .say = on_say, .end = on_end, .size = sizeof(flowrun_callbacks) };
  flowrun *rt;
  char buf[512], id[24];
  long cap = (long)(seconds * 1000 * 2) + 1000, nsteps = 0, steps_at_1s = 0;
  float *steps = malloc(cap * sizeof *steps), *cpus = malloc(cap * sizeof *cpus);
  double first_max = 0, t0, started, end, calls_from = 0;
  long calls_at_1s = 0;
  snprintf(buf, sizeof buf,
           "return { bench = { base_url = '%s', max_connections = %ld,"
           " timeout_ms = 30000, connect_timeout_ms = 30000, queue_timeout_ms = 30000 } }\n",
           url, conns);
  if (!steps || !cpus || write_file("integrations.lua", buf) < 0
      || write_file("player.lua",
                    "while true do\n"
                    "  local label = api_node{ integration = 'bench', path = '/json', results = { '200' } }\n"
                    "  say(label)\n"
                    "  sleep(1000)\n"
                    "end\n") < 0)
    return 2;
  if (!(rt = flowrun_new(&cb)) || flowrun_load_integrations(rt, path("integrations.lua")) != FLOWRUN_OK) {
    fprintf(stderr, "frame: %s\n", rt ? flowrun_errmsg(rt) : "out of memory");
    return 2;
  }
  t0 = now_us();
  for (long i = 0; i < n; i++) {
    snprintf(id, sizeof id, "p%ld", i);
    if (flowrun_start(rt, id, path("player.lua"), 0, NULL) != FLOWRUN_OK) {
      fprintf(stderr, "frame: %s\n", flowrun_errmsg(rt));
      return 1;
    }
  }
  started = now_us();
  end = started + seconds * 1e6;
  for (;;) {
    double a = now_us(), ca = cpu_us(), d, cd;
    if (a >= end) break;
    if ((budget > 0 ? flowrun_step_budget(rt, 0, budget) : flowrun_step(rt, 0)) < 0) {
      fprintf(stderr, "frame: %s\n", flowrun_errmsg(rt));
      return 1;
    }
    d = now_us() - a;
    cd = cpu_us() - ca;
    if (a - started < 1e6) {
      if (d > first_max) first_max = d;
      steps_at_1s = nsteps + 1;
      calls_at_1s = calls;
      calls_from = now_us();
    }
    if (nsteps == cap) {
      float *p = realloc(steps, cap * 2 * sizeof *p), *q = p ? realloc(cpus, cap * 2 * sizeof *q) : NULL;
      if (!q) return 2;
      steps = p;
      cpus = q;
      cap *= 2;
    }
    cpus[nsteps] = (float)cd;
    steps[nsteps++] = (float)d;
    usleep(1000);                       /* the rest of the frame */
  }
  (void)steps_at_1s;
  double span = (now_us() - calls_from) / 1e6;
  qsort(steps, nsteps, sizeof *steps, cmp);
  qsort(cpus, nsteps, sizeof *cpus, cmp);
  printf("sessions %ld budget_ms %g steps %ld p50_us %.1f p99_us %.1f max_us %.1f"
         " first_max_us %.1f cpu_p99_us %.1f cpu_max_us %.1f calls %ld calls_per_s %.1f"
         " wrong %ld start_ms %.1f\n",
         n, budget, nsteps, steps[nsteps / 2], steps[(long)(nsteps * 0.99)], steps[nsteps - 1],
         first_max, cpus[(long)(nsteps * 0.99)], cpus[nsteps - 1], calls,
         span > 0 ? (calls - calls_at_1s) / span : 0.0, wrong, (started - t0) / 1e3);
  fflush(stdout);
  free(steps);
  free(cpus);
  flowrun_free(rt);
  return wrong == 0 && failed == 0 && calls > 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  struct rlimit rl;
  int status;
  if (argc < 5 || argc > 6 || atol(argv[2]) < 1 || atof(argv[3]) <= 0) {
    fprintf(stderr, "usage: frame BASE_URL N SECONDS BUDGET_MS [MAX_CONNECTIONS]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (!mkdtemp(dir)) return perror("frame: mkdtemp"), 2;
  status = run(argv[1], atol(argv[2]), atof(argv[3]), atof(argv[4]),
               argc > 5 ? atol(argv[5]) : 100);
  unlink(path("integrations.lua"));
  unlink(path("player.lua"));
  rmdir(dir);
  return status;
}
