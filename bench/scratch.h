/*
** scratch.h -- the scratch folder of a bench program that runs flowrun in
** its own process (frame.c, inflight.c): the flows and integrations it
** writes live in a mkdtemp folder, removed at the end.
** Define SCRATCH_NAME ("frame") before including it.
*/
#ifndef BENCH_SCRATCH_H
#define BENCH_SCRATCH_H

#include <stdio.h>

static char dir[] = "/tmp/flowrun-" SCRATCH_NAME "-XXXXXX";

/* dir/name, in one of four static buffers (several in one call) */
static char *path(const char *name) {
  static char buf[4][256];
  static int i;
  char *p = buf[i++ % 4];
  snprintf(p, 256, "%s/%s", dir, name);
  return p;
}

/* Writes text to dir/name; -1 (said on stderr) when it cannot. */
static int write_file(const char *name, const char *text) {
  FILE *f = fopen(path(name), "w");
  if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
    perror(name);
    return -1;
  }
  return 0;
}

#endif
