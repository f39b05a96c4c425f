/*
** inflight.c -- memory of calls in flight: starts `flowrun mock` with a
** route that answers after 1 s, then N sessions that each call it once, all
** at the same time. Samples this process's resident set after every step
** and reports the peak growth per call, the "200" labels and the wall time.
** usage: inflight FLOWRUN [N]   (default 10000); prints
**   "calls N ok K rss_before_kb B rss_peak_kb P bytes_per_call C maxrss_kb M
**    start_seconds T seconds S" (M: getrusage peak, T: time to start them)
** The mock and the runtime each hold N sockets, so the open-file limit is
** raised to the hard limit first (the mock inherits it).
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "flowrun.h"
#define SCRATCH_NAME "inflight"
#include "scratch.h"

static long ok, other, failed;
static pid_t mock_pid;

static void on_say(void *ud, const char *id, const char *text, size_t len) {
  (void)ud;
  if (len == 3 && memcmp(text, "200", 3) == 0) ok++;
  else if (other++ == 0) fprintf(stderr, "inflight: %s: label %.*s\n", id, (int)len, text);
}

static void on_end(void *ud, const char *id, int how, const char *error) {
  (void)ud;
  if (how != FLOWRUN_DONE && failed++ == 0) fprintf(stderr, "inflight: %s: %s\n", id, error);
}

/* Starts the mock server and returns its port, 0 on failure. */
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
    close(fds[1]);
    freopen("/dev/null", "w", stderr);  /* the mock logs every request */
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

static long rss(void) {
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  return resident * sysconf(_SC_PAGESIZE);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int run(const char *exe, long n) {
  flowrun_callbacks cb = { .say = on_say, .end = on_end, .size = sizeof(flowrun_callbacks) };
  flowrun *rt;
  char buf[512], id[24];
  struct rusage ru;
  int port;
  if (write_file("routes.lua",
                 "return { { path = '/v1/slow', delay_ms = 1000, json = { ok = true } } }\n") < 0
      || write_file("slow.lua",
                    "local label = api_node{ integration = 'mock', path = '/slow',"
                    " results = { '200' } }\nsay(label)\n") < 0)
    return 2;
  if (!(port = start_mock(exe))) {
    fprintf(stderr, "inflight: cannot start %s mock\n", exe);
    return 2;
  }
  snprintf(buf, sizeof buf,
           "return { mock = { base_url = 'http://127.0.0.1:%d/v1', max_connections = %ld,\n"
           "  timeout_ms = 60000, connect_timeout_ms = 30000 } }\n", port, n);
  if (write_file("integrations.lua", buf) < 0) return 2;
  if (!(rt = flowrun_new(&cb)) || flowrun_load_integrations(rt, path("integrations.lua")) != FLOWRUN_OK) {
    fprintf(stderr, "inflight: %s\n", rt ? flowrun_errmsg(rt) : "out of memory");
    return 2;
  }
  long before = rss(), peak = before;
  double t0 = now();
  for (long i = 0; i < n; i++) {
    snprintf(id, sizeof id, "c%ld", i);
    if (flowrun_start(rt, id, path("slow.lua"), 0, NULL) != FLOWRUN_OK) {
      fprintf(stderr, "inflight: %s\n", flowrun_errmsg(rt));
      return 1;
    }
  }
  double started = now() - t0;
  for (;;) {
    int live = flowrun_step(rt, 100);
    long r = rss();
    if (r > peak) peak = r;
    if (live <= 0) break;
  }
  double s = now() - t0;
  getrusage(RUSAGE_SELF, &ru);
  printf("calls %ld ok %ld rss_before_kb %ld rss_peak_kb %ld bytes_per_call %.0f"
         " maxrss_kb %ld start_seconds %.3f seconds %.3f\n",
         n, ok, before / 1024, peak / 1024, (double)(peak - before) / n,
         ru.ru_maxrss, started, s);
  fflush(stdout);
  flowrun_free(rt);
  return ok == n && other == 0 && failed == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  const char *exe = argc > 1 ? argv[1] : "build/flowrun";
  long n = argc > 2 ? atol(argv[2]) : 10000;
  struct rlimit rl;
  int status;
  if (n < 1) return fprintf(stderr, "usage: inflight FLOWRUN [N]\n"), 2;
  signal(SIGPIPE, SIG_IGN);
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (!mkdtemp(dir)) return perror("inflight: mkdtemp"), 2;
  status = run(exe, n);
  if (mock_pid > 0) {
    kill(mock_pid, SIGTERM);
    waitpid(mock_pid, NULL, 0);
  }
  unlink(path("routes.lua"));
  unlink(path("slow.lua"));
  unlink(path("integrations.lua"));
  rmdir(dir);
  return status;
}
