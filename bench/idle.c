/*
** idle.c -- memory of sessions that wait: starts N sessions of a flow that
** calls ask() with no prompt, steps the loop until every one of them has
** asked, and reports the growth of this process's resident set per session
** (from /proc/self/statm, before the first start and once all have asked).
** usage: idle [N]   (default 100000); prints
**   "sessions N asked A rss_before_kb B rss_after_kb C bytes_per_session P
**    after_gc_bytes_per_session G seconds S"
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lua.h>

#include "flowrun.h"

static long asked, failed;

static void on_ask(void *ud, const char *id, const char *prompt, size_t len) {
  (void)ud; (void)id; (void)prompt; (void)len;
  asked++;
}

static void on_end(void *ud, const char *id, int how, const char *error) {
  (void)ud;
  if (how != FLOWRUN_DONE && failed++ == 0) fprintf(stderr, "idle: %s: %s\n", id, error);
}

/* Resident set size in bytes. */
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

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 100000;
  char flow[] = "/tmp/flowrun-idle-XXXXXX.lua", id[24];
  flowrun_callbacks cb = { .ask = on_ask, .end = on_end, .size = sizeof(flowrun_callbacks) };
  flowrun *rt;
  int fd;
  if (n < 1) return fprintf(stderr, "usage: idle [N]\n"), 2;
  if ((fd = mkstemps(flow, 4)) < 0) return perror("idle: mkstemps"), 2;
  if (write(fd, "ask()\n", 6) != 6) return perror("idle: write"), 2;
  close(fd);
  if (!(rt = flowrun_new(&cb))) return fprintf(stderr, "idle: out of memory\n"), 2;
  long before = rss();
  double t0 = now();
  for (long i = 0; i < n; i++) {
    snprintf(id, sizeof id, "s%ld", i);
    if (flowrun_start(rt, id, flow, 0, NULL) != FLOWRUN_OK) {
      fprintf(stderr, "idle: %s\n", flowrun_errmsg(rt));
      return 1;
    }
  }
  while (asked + failed < n && flowrun_step(rt, 10) > 0) {}
  double s = now() - t0;
  long after = rss();
  /* The same after a full collection: what the sessions hold, not garbage
     the collector has yet to reach (glibc may keep freed pages, though). */
  lua_gc(flowrun_lua(rt), LUA_GCCOLLECT);
  long after_gc = rss();
  unlink(flow);
  printf("sessions %ld asked %ld rss_before_kb %ld rss_after_kb %ld bytes_per_session %.0f"
         " after_gc_bytes_per_session %.0f seconds %.3f\n",
         n, asked, before / 1024, after / 1024, (double)(after - before) / n,
         (double)(after_gc - before) / n, s);
  fflush(stdout);
  flowrun_free(rt);
  return asked == n && failed == 0 ? 0 : 1;
}
