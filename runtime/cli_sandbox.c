/*
** cli_sandbox.c -- the options of run, host and repl that grant flows
** more than the sandbox (--allow LIST) and set the limits of a session
** (--limit NAME=VALUE), read the same way by every command.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

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
  if (end == eq + 1 || *value < 0 || errno) return -1;
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
  if (parse_limit(a, &which, &v) != 0 || g->nlimits == CLI_MAX_LIMITS) {
    fprintf(stderr, "%s: --limit: expected NAME=VALUE with NAME one of instructions, "
            "session-memory, memory, output and VALUE a number (K, M, G allowed), got '%s'\n",
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
