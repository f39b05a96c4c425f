/*
** sessions.c -- `flowrun sessions --store PATH [--json] [--end ID]`: what a
** store holds, seen from outside (also while a host runs it), and ending
** one session (refused while a host runs it). README: Durable sessions.
*/
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "flowrun.h"

static const char usage[] =
  "usage: flowrun sessions --store PATH [--json]   list the sessions a store holds\n"
  "       flowrun sessions --store PATH --end ID   end one (not while a host runs the store)\n"
  "       flowrun sessions --store PATH --retry ID let a parked one run again (the same)\n";

typedef struct listing { bool json; long n; } listing;

static int show(void *ud, const flowrun_store_entry *s) {
  listing *l = ud;
  char when[32] = "-";
  time_t t = (time_t)(s->active_ms / 1000);
  struct tm tm;
  if (s->active_ms > 0 && gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (l->json) {
    fputs("{\"session\":", stdout);
    cli_json_str(stdout, s->id, strlen(s->id));
    fputs(",\"flow\":", stdout);
    cli_json_str(stdout, s->flow, strlen(s->flow));
    printf(",\"state\":\"%s\",\"active\":\"%s\",\"journal\":%lld,\"messages\":%lld",
           s->state, when, s->journal, s->messages);
    if (s->note) {
      fputs(",\"note\":", stdout);
      cli_json_str(stdout, s->note, strlen(s->note));
    }
    fputs("}\n", stdout);
  } else {
    if (l->n == 0) printf("%-20s %-8s %-20s %7s %8s  %s\n", "SESSION", "STATE", "LAST ACTIVE",
                          "JOURNAL", "MESSAGES", "FLOW");
    cli_put_text(stdout, s->id, strlen(s->id));
    printf("%*s %-8s %-20s %7lld %8lld  ", strlen(s->id) < 20 ? (int)(20 - strlen(s->id)) : 0, "",
           s->state, when, s->journal, s->messages);
    cli_put_text(stdout, s->flow, strlen(s->flow));
    fputc('\n', stdout);
  }
  l->n++;
  return 0;
}

int flowrun_sessions_main(int argc, char **argv) {
  const char *store = NULL, *end = NULL, *retry = NULL;
  listing l = { false, 0 };
  char err[600];
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--store") == 0 && i + 1 < argc) store = argv[++i];
    else if (strcmp(argv[i], "--end") == 0 && i + 1 < argc) end = argv[++i];
    else if (strcmp(argv[i], "--retry") == 0 && i + 1 < argc) retry = argv[++i];
    else if (strcmp(argv[i], "--json") == 0) l.json = true;
    else {
      fprintf(stderr, "flowrun sessions: unknown argument '%s' (or missing value)\n%s", argv[i], usage);
      return 2;
    }
  }
  if (!store) {
    fprintf(stderr, "flowrun sessions: --store PATH is required\n%s", usage);
    return 2;
  }
  if (end || retry) {
    int rc = end ? flowrun_store_end(store, end, err, sizeof err)
                 : flowrun_store_retry(store, retry, err, sizeof err);
    if (rc == FLOWRUN_OK) return 0;
    fprintf(stderr, "flowrun sessions: %s\n", err);
    return rc == FLOWRUN_NOSESSION ? 1 : 2;
  }
  if (flowrun_store_list(store, show, &l, err, sizeof err) != FLOWRUN_OK) {
    fprintf(stderr, "flowrun sessions: %s\n", err);
    return 2;
  }
  return cli_output_done(0, NULL, NULL);
}
