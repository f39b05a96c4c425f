/*
** journal.c -- durable sessions: the runtime's store, each session's
** journal of effects, and replay (journal.h; README: Durable sessions).
**
** Writes go into one transaction per loop turn, begun at the turn's first
** write and committed at its end (fr_dur_commit): a turn's records are
** all stored or none is. Outputs are given to the host as they happen,
** and before the commit the host is told to write them out (cb.flush): an
** output whose record is stored has reached the host, and one whose record
** is lost is made again, with the same sequence number, when the session
** is replayed. A message is acknowledged (cb.stored) only after the
** commit that stored it.
*/
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "base.h"
#include "cookies.h"
#include "integration.h"
#include "journal.h"
#include "rules.h"
#include "runtime.h"
#include "secrets.h"
#include "snapshot.h"
#include "store.h"

typedef struct ack { struct ack *next; long long n; char id[]; } ack;

/* An output, stored in the outbox with its turn and given after the commit. */
typedef struct output {
  struct output *next;
  long long seq;
  int kind, how;
  bool mine;                            /* a shared store's, for this host: taken, not dropped */
  char *text;                           /* NULL: none (an ask without prompt) */
  size_t len;
  char id[];
} output;

typedef struct fr_durable fr_durable;
struct fr_durable {
  const fr_store_methods *m;
  fr_store *st;
  bool in_txn;
  bool failed;                          /* a write of this turn failed */
  ack *acks, **acks_tail;               /* stored this turn */
  output *outs, **outs_tail;            /* made this turn: given after its commit */
  output *given;                        /* given: out of the outbox at the next commit */
  char *path;
  double began;                         /* when the open transaction began (fr_now) */
  int crash_at;                         /* FLOWRUN_STORE_CRASH: a test's kill point */
  long crash_k, commits;
  char *rec;                            /* fr_dur_record_call's record */
  size_t rec_len, rec_cap;
  bool oom;                             /* making it ran out of memory */
  bool check;                           /* flowrun_replay_store: read, never written */
  bool shared;                          /* a store of many hosts (store.h) */
  char fenced[300];                     /* why this host stopped: a partition lost */
  double renewed;                       /* when its leases were last renewed (fr_now) */
  long long lease_ms;
  flowrun_commits stats;                /* commits and their time (timed_commit) */
};

enum { CRASH_NONE, CRASH_BEFORE, CRASH_AFTER };

/* The crash specs kill the process at a chosen commit:
** FLOWRUN_STORE_CRASH=before-commit:K or after-commit:K (the K-th). */
static void crash_point(fr_durable *d, int at) {
  if (d->crash_at == at && d->commits == d->crash_k) raise(SIGKILL);
}

static const char *const kind_name[] = {
  "", "ask", "say", "sleep", "api_node", "os.time", "os.clock", "math.random", "the end",
  "os.date", "step", "continue_as_new",
};

/* ---- the turn's transaction ---- */

/* Begins the turn's transaction; false when the store failed. */
static bool writing(flowrun *rt) {
  fr_durable *d = rt->dur;
  if (d->failed || d->check) return false;
  if (!d->in_txn) {
    if (d->m->begin(d->st) != 0) {
      d->failed = true;
      return false;
    }
    d->in_txn = true;
    d->began = fr_now();
  }
  return true;
}

static void wrote(flowrun *rt, int rc) {
  if (rc != 0) rt->dur->failed = true;
}

static void free_acks(fr_durable *d) {
  for (ack *a = d->acks, *n; a; a = n) { n = a->next; free(a); }
  d->acks = NULL;
  d->acks_tail = &d->acks;
}

static void free_outputs(output *o) {
  for (output *n; o; o = n) { n = o->next; free(o->text); free(o); }
}

/* Queues an output to give after the commit; NULL when out of memory. */
static output *queue_output(flowrun *rt, const char *id, long long seq, int kind, int how,
                            const char *text, size_t len) {
  fr_durable *d = rt->dur;
  size_t n = strlen(id) + 1;
  output *o = malloc(sizeof *o + n);
  if (!o) return NULL;
  o->next = NULL;
  o->mine = false;
  o->seq = seq;
  o->kind = kind;
  o->how = how;
  o->len = len;
  o->text = NULL;
  if (text && !(o->text = malloc(len + 1))) { free(o); return NULL; }
  if (text) { memcpy(o->text, text, len); o->text[len] = '\0'; }
  memcpy(o->id, id, n);
  *d->outs_tail = o;
  d->outs_tail = &o->next;
  return o;
}

void fr_dur_output(flowrun *rt, const char *id, long long seq, int kind, int how,
                   const char *text, size_t len) {
  int rc;
  if (rt->dur->check) {                 /* a check gives the ends only */
    if (kind == FR_J_END && !queue_output(rt, id, seq, kind, how, text, len))
      rt->dur->failed = true;
    return;
  }
  if (!writing(rt)) return;
  rc = rt->dur->m->put_output(rt->dur->st, id, seq, kind, how, text, len);
  if (rc < 0) rt->dur->failed = true;
  else if (rc == 0 && !queue_output(rt, id, seq, kind, how, text, len)) rt->dur->failed = true;
}                                       /* rc 1: for another host, woken */

/* Gives the outputs of the turn just committed to the host. */
static void give_outputs(flowrun *rt) {
  fr_durable *d = rt->dur;
  output *o = d->outs;
  d->outs = NULL;
  d->outs_tail = &d->outs;
  d->given = o;                         /* out of the outbox once given */
  for (; o; o = o->next) {
    rt->out_seq = o->seq;
    if (o->kind == FR_J_SAY && rt->cb.say) rt->cb.say(rt->cb.ud, o->id, o->text ? o->text : "", o->len);
    else if (o->kind == FR_J_ASK && rt->cb.ask) rt->cb.ask(rt->cb.ud, o->id, o->text, o->len);
    else if (o->kind == FR_J_END && rt->cb.end)
      rt->cb.end(rt->cb.ud, o->id, o->how, o->how == FLOWRUN_DONE ? NULL : o->text ? o->text : "");
  }
  rt->out_seq = 0;
}

static int failed_turn(flowrun *rt) {
  fr_durable *d = rt->dur;
  double silent = d->shared && d->renewed > 0 ? fr_now() - d->renewed : 0;
  d->m->rollback(d->st);
  if (!d->fenced[0] && silent > (double)d->lease_ms)   /* paused: its partitions are others' */
    snprintf(d->fenced, sizeof d->fenced, "%s: this host did not renew its leases for %.0f ms, "
             "longer than its lease (%lld ms): it is fenced out and stops", d->m->errmsg(d->st),
             silent, d->lease_ms);
  if (d->fenced[0]) return fr_error(rt, "%s", d->fenced);
  d->in_txn = false;
  free_acks(d);
  free_outputs(d->outs);
  d->outs = NULL;
  d->outs_tail = &d->outs;
  return fr_error(rt, "%s: nothing after the last commit is stored or acknowledged",
                  d->m->errmsg(d->st));
}

/* ---- commits counted and timed (flowrun_store_stats) ---- */

static const double commit_le_s[FLOWRUN_STORE_BUCKETS] = {
  .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, 1,
};

/* d's store commits, timed on the monotonic clock. */
static int timed_commit(fr_durable *d) {
  double t0 = fr_now(), s;
  int rc = d->m->commit(d->st);
  s = (fr_now() - t0) / 1000;
  d->stats.commits++;
  d->stats.seconds += s;
  for (int i = 0; i < FLOWRUN_STORE_BUCKETS; i++) d->stats.le[i] += s <= commit_le_s[i];
  return rc;
}

int flowrun_store_stats(const flowrun *rt, flowrun_commits *stats) {
  if (!rt->dur) return FLOWRUN_ERR;
  *stats = rt->dur->stats;
  memcpy(stats->le_s, commit_le_s, sizeof commit_le_s);
  return FLOWRUN_OK;
}

int fr_dur_commit(flowrun *rt) {
  fr_durable *d = rt->dur;
  ack *a;
  if (d->in_txn && !d->failed) {
    d->commits++;
    crash_point(d, CRASH_BEFORE);
    if (timed_commit(d) != 0) d->failed = true;
  }
  if (d->failed) return failed_turn(rt);
  if (d->in_txn) crash_point(d, CRASH_AFTER);
  d->in_txn = false;
  give_outputs(rt);
  a = d->acks;
  d->acks = NULL;
  d->acks_tail = &d->acks;
  for (ack *n; a; a = n) {
    n = a->next;
    if (rt->cb.stored) rt->cb.stored(rt->cb.ud, a->id, a->n);
    free(a);
  }
  if (d->given) {                       /* the host has them: out of the outbox */
    if (rt->cb.flush) rt->cb.flush(rt->cb.ud);
    if (writing(rt))
      for (output *o = d->given; o; o = o->next)
        if (!o->mine) wrote(rt, d->m->drop_output(d->st, o->id, o->seq));
    free_outputs(d->given);
    d->given = NULL;
    if (d->check) return FLOWRUN_OK;    /* nothing was written */
    if (!d->failed && timed_commit(d) != 0) d->failed = true;
    if (d->failed) return failed_turn(rt);
    d->in_txn = false;
  }
  return FLOWRUN_OK;
}

bool fr_dur_open_txn(const flowrun *rt) {
  return rt->dur->in_txn || rt->dur->outs || rt->dur->acks;
}

bool fr_dur_due(flowrun *rt) {
  fr_durable *d = rt->dur;
  return d->outs || d->acks || d->failed || (d->in_txn && fr_now() - d->began >= 50);
}

bool fr_dur_checking(const flowrun *rt) {
  return rt->dur && rt->dur->check;
}

bool fr_dur_failed(const flowrun *rt) {
  return rt->dur && rt->dur->failed;
}

int flowrun_store_failed(const flowrun *rt) {
  return fr_dur_failed(rt);
}

/* The backend a path names: a libpq URI is PostgreSQL, anything else a
** SQLite file. */
static const fr_store_methods *backend(const char *path) {
  return strncmp(path, "postgresql://", 13) == 0 || strncmp(path, "postgres://", 11) == 0
         ? &fr_store_pg : &fr_store_sqlite;
}

int fr_dur_open(flowrun *rt, const char *path, bool check) {
  fr_durable *d;
  const char *crash;
  char err[600];
  if (rt->dur) return fr_error(rt, "store %s: this runtime has a store already", path);
  if (rt->nsessions) return fr_error(rt, "store %s: open it before any session starts", path);
  if (!(d = calloc(1, sizeof *d)) || !(d->path = strdup(path))) {
    free(d);
    return fr_error(rt, "out of memory");
  }
  d->m = backend(path);
  d->check = check;
  if (!(d->st = d->m->open(path, check ? FR_STORE_READ : 0, err, sizeof err))) {
    free(d->path);
    free(d);
    return fr_error(rt, "%s", err);
  }
  if (d->m->set_node && !check) {       /* shared: this host's name and lease */
    char node[300];
    if (rt->store_node) snprintf(node, sizeof node, "%s", rt->store_node);
    else {
      char host[256] = "host";
      gethostname(host, sizeof host - 1);
      snprintf(node, sizeof node, "%s:%ld", host, (long)getpid());
    }
    long long lease = rt->store_limit[FLOWRUN_STORE_LEASE_MS];
    d->lease_ms = lease > 0 ? lease : 10000;
    if (d->m->set_node(d->st, node, d->lease_ms) != 0) {
      snprintf(err, sizeof err, "%s", d->m->errmsg(d->st));
      d->m->close(d->st);
      free(d->path);
      free(d);
      return fr_error(rt, "%s", err);
    }
    d->shared = true;
  }
  d->acks_tail = &d->acks;
  d->outs_tail = &d->outs;
  if ((crash = getenv("FLOWRUN_STORE_CRASH"))) {
    if (strncmp(crash, "before-commit:", 14) == 0) d->crash_at = CRASH_BEFORE;
    if (strncmp(crash, "after-commit:", 13) == 0) d->crash_at = CRASH_AFTER;
    d->crash_k = strtol(strchr(crash, ':') ? strchr(crash, ':') + 1 : "0", NULL, 10);
  }
  rt->dur = d;
  return FLOWRUN_OK;
}

void fr_dur_close(flowrun *rt) {
  fr_durable *d = rt->dur;
  if (!d) return;
  if ((d->in_txn || d->outs || d->acks) && !d->failed) fr_dur_commit(rt);
  if (d->in_txn) d->m->rollback(d->st);
  free_acks(d);
  free_outputs(d->outs);
  free_outputs(d->given);
  d->m->close(d->st);
  free(d->rec);
  free(d->path);
  free(d);
  rt->dur = NULL;
}

void fr_dur_ack(flowrun *rt, const char *id, long long n) {
  size_t len = strlen(id) + 1;
  ack *a = malloc(sizeof *a + len);
  if (!a) { rt->dur->failed = true; return; }
  a->next = NULL;
  a->n = n;
  memcpy(a->id, id, len);
  *rt->dur->acks_tail = a;
  rt->dur->acks_tail = &a->next;
}

/* ---- from outside: flowrun sessions ---- */

typedef struct listing {
  int (*fn)(void *ud, const flowrun_store_entry *s);
  void *ud;
} listing;

static int list_one(void *ud, const fr_store_listed *r) {
  listing *l = ud;
  flowrun_store_entry s = { r->id, r->flow, r->ended ? "ended" : r->parked ? "parked"
                           : r->waiting ? "waiting" : "running",
                           r->inputs, r->journal, r->active, r->parked ? r->note : NULL };
  return l->fn(l->ud, &s);
}

int flowrun_store_list(const char *path, int (*fn)(void *ud, const flowrun_store_entry *s), void *ud,
                       char *err, size_t errlen) {
  const fr_store_methods *m = backend(path);
  listing l = { fn, ud };
  fr_store *st = m->open(path, FR_STORE_READ, err, errlen);
  int rc;
  if (!st) return FLOWRUN_ERR;
  rc = m->each_listed(st, list_one, &l);
  if (rc != 0) snprintf(err, errlen, "%s", m->errmsg(st));
  m->close(st);
  return rc ? FLOWRUN_ERR : FLOWRUN_OK;
}

/* flowrun_store_end (retry 0) and flowrun_store_retry (1): one write to a
** session of the store at path, under its lock. */
static int change_stored(const char *path, const char *id, int retry, char *err, size_t errlen) {
  const fr_store_methods *m = backend(path);
  fr_store *st = m->open(path, 0, err, errlen);
  fr_store_session row;
  int rc;
  if (!st) return FLOWRUN_ERR;
  rc = m->get_session(st, id, &row);
  if (rc == 1 && (row.ended || (retry && !row.parked))) rc = 0;
  if (rc == 1)
    rc = m->begin(st) || (retry ? m->park(st, id, NULL)
                                : m->end_session(st, id) || m->drop_outbox(st, id))
         || m->commit(st) ? -1 : 1;
  if (rc < 0) snprintf(err, errlen, "%s", m->errmsg(st));
  else if (rc == 0)
    snprintf(err, errlen, retry ? "store %s: no parked session %s" : "store %s: no session %s to end",
             path, id);
  m->close(st);
  return rc == 1 ? FLOWRUN_OK : rc == 0 ? FLOWRUN_NOSESSION : FLOWRUN_ERR;
}

int flowrun_store_retry(const char *path, const char *id, char *err, size_t errlen) {
  return change_stored(path, id, 1, err, errlen);
}

int flowrun_store_end(const char *path, const char *id, char *err, size_t errlen) {
  return change_stored(path, id, 0, err, errlen);
}

/* ---- sessions ---- */

fr_journal *fr_dur_start(flowrun *rt, const char *id, const char *flow,
                         int argc, const char *const *argv) {
  fr_durable *d = rt->dur;
  fr_store_session row = { id, flow, NULL, 0, argc, 0, 0, 0, 0 };
  fr_journal *j = calloc(1, sizeof *j);
  char *args = NULL;
  size_t len = 0;
  int i;
  if (!j) return NULL;
  j->rt = rt;
  for (i = 0; i < argc; i++) len += strlen(argv[i]) + 1;
  if (len && !(args = malloc(len))) { free(j); return NULL; }
  for (i = 0, len = 0; i < argc; i++) {
    size_t n = strlen(argv[i]) + 1;
    memcpy(args + len, argv[i], n);
    len += n;
  }
  row.args = args;
  row.args_len = len;
  if (writing(rt)) {
    wrote(rt, d->m->put_session(d->st, &row));
    fr_dur_ack(rt, id, 0);
  }
  free(args);
  return j;
}

void fr_dur_end(flowrun *rt, const char *id, fr_journal *j) {
  if (writing(rt)) wrote(rt, rt->dur->m->end_session(rt->dur->st, id));
  fr_dur_free(j);
}

void fr_dur_drop(flowrun *rt, const char *id, fr_journal *j) {
  if (writing(rt)) wrote(rt, rt->dur->m->drop_session(rt->dur->st, id));
  fr_dur_free(j);
}

int fr_dur_drop_stored(flowrun *rt, const char *id) {
  fr_store_session row;
  int rc = rt->dur->m->get_session(rt->dur->st, id, &row);
  if (rc < 0) return fr_error(rt, "%s", rt->dur->m->errmsg(rt->dur->st));
  if (rc == 0 || row.ended) return fr_error(rt, "no session %s", id), FLOWRUN_NOSESSION;
  if (writing(rt))
    wrote(rt, rt->dur->m->drop_session(rt->dur->st, id) || rt->dur->m->drop_outbox(rt->dur->st, id));
  return FLOWRUN_OK;
}

long long fr_dur_inputs(flowrun *rt, const char *id) {
  fr_store_session row;
  int rc = rt->dur->m->get_session(rt->dur->st, id, &row);
  return rc == 1 ? row.inputs : -1;
}

int fr_dur_input(flowrun *rt, const char *id, fr_journal *j, long long n,
                 const char *text, size_t len) {
  if (!writing(rt) || rt->dur->m->put_input(rt->dur->st, id, n, text, len) != 0) {
    rt->dur->failed = true;
    return fr_error(rt, "%s", rt->dur->m->errmsg(rt->dur->st));
  }
  j->inputs = n;
  fr_dur_ack(rt, id, n);
  return FLOWRUN_OK;
}

void fr_dur_take_input(flowrun *rt, const char *id, long long n) {
  if (writing(rt)) wrote(rt, rt->dur->m->take_input(rt->dur->st, id, n));
}

void fr_dur_free(fr_journal *j) {
  if (!j) return;
  for (long long i = 0; i < j->nrecs; i++) {
    free(j->recs[i].fp);
    free(j->recs[i].at);
    free(j->recs[i].data);
  }
  free(j->recs);
  free(j->replayed);
  free(j->replayed_at);
  free(j);
}

void fr_dur_key(flowrun *rt, const char *id, long long seq, char *buf, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;     /* FNV-1a of the store and the session */
  for (const char *p = rt->dur->m->identity(rt->dur->st); *p; p++) h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
  h = (h ^ 0) * 0x100000001b3ull;
  for (const char *p = id; *p; p++) h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
  snprintf(buf, n, "flowrun-%016llx-%lld", (unsigned long long)h, seq);
}

/* ---- restore ---- */

typedef struct restoring {
  flowrun *rt;
  const fr_restore *r;
  fr_journal *j;
  const char *id;
  int failed;
} restoring;

static char *dup_n(const char *p, size_t n) {
  char *q = malloc(n + 1);
  if (q) {
    if (n) memcpy(q, p, n);
    q[n] = '\0';
  }
  return q;
}

static int take_rec(void *ud, const fr_store_rec *r) {
  restoring *x = ud;
  fr_journal *j = x->j;
  fr_jrec *rec;
  if (j->nrecs % 64 == 0) {
    fr_jrec *n = realloc(j->recs, (size_t)(j->nrecs + 64) * sizeof *n);
    if (!n) return x->failed = 1;
    j->recs = n;
  }
  rec = &j->recs[j->nrecs];
  rec->seq = r->seq;
  rec->kind = r->kind;
  rec->fp = dup_n(r->fp ? r->fp : "", r->fp ? strlen(r->fp) : 0);
  rec->at = dup_n(r->at ? r->at : "", r->at ? strlen(r->at) : 0);
  rec->data = r->data ? dup_n(r->data, r->len) : NULL;
  rec->len = r->len;
  j->nrecs++;
  if (!rec->fp || !rec->at || (r->data && !rec->data)) return x->failed = 1;
  return 0;
}

static int take_input(void *ud, long long n, const char *text, size_t len) {
  restoring *x = ud;
  if (x->j && n > x->j->inputs) x->j->inputs = n;   /* stored after its row was read */
  x->r->message(x->r->ud, x->id, n, text, len);
  return 0;
}

static int take_session(void *ud, const fr_store_session *row) {
  restoring *x = ud;
  fr_durable *d = x->rt->dur;
  const char **argv = malloc(((size_t)row->nargs + 1) * sizeof *argv);
  char *args = dup_n(row->args ? row->args : "", row->args_len), *id = strdup(row->id);
  char *flow = strdup(row->flow);
  int argc = 0;
  if (!argv || !args || !id || !flow) goto oom;
  for (size_t off = 0; off < row->args_len && argc < row->nargs; off += strlen(args + off) + 1)
    argv[argc++] = args + off;
  if (!(x->j = calloc(1, sizeof *x->j))) goto oom;
  x->j->rt = x->rt;
  x->j->inputs = row->inputs;
  x->j->said = row->said;
  x->id = id;
  if (d->m->each_rec(d->st, id, take_rec, x) != 0 && !x->failed) {
    char msg[600];                      /* a damaged journal: this session fails, */
    snprintf(msg, sizeof msg, "%s", d->m->errmsg(d->st));   /* the others go on */
    if (x->rt->cb.end) x->rt->cb.end(x->rt->cb.ud, id, FLOWRUN_FAILED, msg);
    fr_dur_end(x->rt, id, x->j);
    x->j = NULL;
    free(argv); free(args); free(id); free(flow);
    return 0;
  }
  if (x->failed) goto oom;
  /* the journal's numbers have no gaps: the next effect takes the next */
  x->j->seq = 0;
  if (x->r->session(x->r->ud, id, flow, argc, argv, x->j) == 0 && !d->check)
    d->m->each_input(d->st, id, take_input, x);
  free(argv); free(args); free(id); free(flow);
  return 0;
oom:
  fr_dur_free(x->j);
  free(argv); free(args); free(id); free(flow);
  return x->failed = 1;
}

/* An output the outbox still has: given (again) after the first commit. */
static int take_output(void *ud, const char *id, long long seq, int kind, int how,
                       const char *text, size_t len) {
  restoring *x = ud;
  if (!queue_output(x->rt, id, seq, kind, how, text, len)) return x->failed = 1;
  return 0;
}

int fr_dur_restore_one(flowrun *rt, const fr_restore *r, const char *id) {
  restoring x = { rt, r, NULL, NULL, 0 };
  fr_store_session row;
  int rc = rt->dur->m->get_session(rt->dur->st, id, &row);
  if (rc < 0) return fr_error(rt, "%s", rt->dur->m->errmsg(rt->dur->st));
  if (rc == 0 || row.ended) return FLOWRUN_NOSESSION;
  if (row.parked) return FR_DUR_PARKED;
  take_session(&x, &row);
  return x.failed ? fr_error(rt, "out of memory") : FLOWRUN_OK;
}

void fr_dur_park(flowrun *rt, const char *id, fr_journal *j, const char *note) {
  if (writing(rt)) wrote(rt, rt->dur->m->park(rt->dur->st, id, note));
  fr_dur_free(j);
}

int fr_dur_input_parked(flowrun *rt, const char *id, long long n, const char *text, size_t len) {
  long long had = fr_dur_inputs(rt, id);
  if (n > 0 && n <= had) {              /* stored already */
    fr_dur_ack(rt, id, n);
    return FLOWRUN_OK;
  }
  if (n > had + 1)
    return fr_error(rt, "session %s: message %lld comes after message %lld: %lld is missing",
                    id, n, had, had + 1);
  if (!writing(rt) || rt->dur->m->put_input(rt->dur->st, id, had + 1, text, len) != 0) {
    rt->dur->failed = true;
    return fr_error(rt, "%s", rt->dur->m->errmsg(rt->dur->st));
  }
  fr_dur_ack(rt, id, had + 1);
  return FLOWRUN_OK;
}

int fr_dur_silent(flowrun *rt, long long before, int (*fn)(void *ud, const char *id), void *ud) {
  return rt->dur->m->each_silent(rt->dur->st, before, fn, ud);
}

void fr_dur_purge(flowrun *rt, long long before) {
  if (writing(rt)) wrote(rt, rt->dur->m->purge_ended(rt->dur->st, before));
}

void fr_dur_waiting(flowrun *rt, const char *id) {
  if (writing(rt)) wrote(rt, rt->dur->m->set_waiting(rt->dur->st, id, 1));
}

int fr_dur_restore(flowrun *rt, const fr_restore *r) {
  restoring x = { rt, r, NULL, NULL, 0 };
  bool check = rt->dur->check;          /* a check: every unfinished one, no outbox */
  if (!check && rt->dur->m->each_output(rt->dur->st, take_output, &x) != 0)
    return fr_error(rt, "%s", rt->dur->m->errmsg(rt->dur->st));
  if (x.failed) return fr_error(rt, "out of memory");
  if (rt->dur->shared) {                /* this host's outputs: they were given, maybe */
    for (output *o = rt->dur->outs; o; o = o->next) o->mine = true;
    return fr_dur_lease(rt, r);         /* sessions come with the partitions */
  }
  if (rt->dur->m->each_session(rt->dur->st, check, take_session, &x) != 0)
    return fr_error(rt, "%s", rt->dur->m->errmsg(rt->dur->st));
  if (x.failed) return fr_error(rt, "out of memory");
  return FLOWRUN_OK;
}

/* ---- a store shared by many hosts ---- */

bool fr_dur_shared(const flowrun *rt) {
  return rt->dur && rt->dur->shared;
}

int fr_dur_store_fd(const flowrun *rt) {
  return fr_dur_shared(rt) ? rt->dur->m->fd(rt->dur->st) : -1;
}

/* The turn's writes committed now, its outputs and acknowledgements still
** given at its end: a shared store's calls run in transactions of their
** own on the one connection. */
static int settle(flowrun *rt) {
  fr_durable *d = rt->dur;
  if (d->in_txn && !d->failed) {
    if (timed_commit(d) != 0) d->failed = true;
    else d->in_txn = false;
  }
  if (d->failed) return fr_error(rt, "%s", d->fenced[0] ? d->fenced : d->m->errmsg(d->st));
  return FLOWRUN_OK;
}

int fr_dur_send(flowrun *rt, const char *id, long long n, const char *text, size_t len) {
  fr_durable *d = rt->dur;
  long long taken = 0;
  int rc;
  if (settle(rt) != FLOWRUN_OK) return FLOWRUN_ERR;
  rc = d->m->send(d->st, id, n, text, len, &taken);
  if (rc == 1 || rc == 0) {
    fr_dur_ack(rt, id, rc == 1 ? taken : n);
    return FLOWRUN_OK;
  }
  if (rc == -2) return fr_error(rt, "no session %s", id), FLOWRUN_NOSESSION;
  if (rc == -3) return fr_error(rt, "session %s: message %lld leaves a gap: the messages before it are missing", id, n);
  return fr_error(rt, "%s", d->m->errmsg(d->st));
}

int fr_dur_start_shared(flowrun *rt, const char *id, const char *flow,
                        int argc, const char *const *argv) {
  fr_durable *d = rt->dur;
  fr_store_session row = { id, flow, NULL, 0, argc, 0, 0, 0, 0 };
  char *args = NULL;
  size_t len = 0;
  int rc;
  if (settle(rt) != FLOWRUN_OK) return FLOWRUN_ERR;
  for (int i = 0; i < argc; i++) len += strlen(argv[i]) + 1;
  if (len && !(args = malloc(len))) return fr_error(rt, "out of memory");
  for (int i = 0, at = 0; i < argc; i++) {
    size_t k = strlen(argv[i]) + 1;
    memcpy(args + at, argv[i], k);
    at += (int)k;
  }
  row.args = args;
  row.args_len = len;
  rc = d->m->start(d->st, &row);
  free(args);
  if (rc < 0) return fr_error(rt, "%s", d->m->errmsg(d->st));
  fr_dur_ack(rt, id, 0);                /* 0: it runs already, its outputs come here */
  return FLOWRUN_OK;
}

typedef struct leasing { const fr_restore *r; } leasing;

static int lease_idle(void *ud, int part) {
  const fr_restore *r = ((leasing *)ud)->r;
  return r->idle ? r->idle(r->ud, part) : 0;
}

/* A session of a partition just taken: restored unless in memory already
** (a wake brought it first). */
static int take_part_session(void *ud, const fr_store_session *row) {
  restoring *x = ud;
  if (x->r->journal && x->r->journal(x->r->ud, row->id)) return 0;
  return take_session(x, row);
}

int fr_dur_lease(flowrun *rt, const fr_restore *r) {
  fr_durable *d = rt->dur;
  unsigned char got[FR_PARTITIONS], lost[FR_PARTITIONS];
  leasing l = { r };
  restoring x = { rt, r, NULL, NULL, 0 };
  if (settle(rt) != FLOWRUN_OK) return FLOWRUN_ERR;
  memset(got, 0, sizeof got);
  memset(lost, 0, sizeof lost);
  if (d->m->leases(d->st, lease_idle, &l, got, lost) != 0) {
    d->failed = true;
    return fr_error(rt, "%s", d->m->errmsg(d->st));
  }
  d->renewed = fr_now();
  for (int p = 0; p < FR_PARTITIONS; p++)
    if (lost[p]) {                      /* another host has it: this one stops */
      snprintf(d->fenced, sizeof d->fenced, "store: partition %d was taken over by another host "
               "(this host did not renew its lease in time): this host is fenced out and stops", p);
      d->failed = true;
      return fr_error(rt, "%s", d->fenced);
    }
  for (int p = 0; p < FR_PARTITIONS && !x.failed; p++)
    if (got[p] && d->m->each_in_part(d->st, p, take_part_session, &x) != 0)
      return fr_error(rt, "%s", d->m->errmsg(d->st));
  return x.failed ? fr_error(rt, "out of memory") : FLOWRUN_OK;
}

typedef struct waking {
  flowrun *rt;
  const fr_restore *r;
  fr_journal *j;
  const char *id;
  int failed, outs;                     /* outs: outputs came for this host */
} waking;

/* A message of the inbox for a session in memory: queued unless it was. */
static int wake_input(void *ud, long long n, const char *text, size_t len) {
  waking *w = ud;
  if (n <= w->j->inputs) return 0;
  w->j->inputs = n;
  w->r->message(w->r->ud, w->id, n, text, len);
  return 0;
}

static int take_mine(void *ud, const char *id, long long seq, int kind, int how,
                     const char *text, size_t len) {
  waking *w = ud;
  fr_durable *d = w->rt->dur;
  output *o;
  for (int l = 0; l < 2; l++)           /* this host's own, being given: not twice */
    for (o = l ? d->given : d->outs; o; o = o->next)
      if (o->seq == seq && strcmp(o->id, id) == 0) return 0;
  if (!(o = queue_output(w->rt, id, seq, kind, how, text, len))) return w->failed = 1;
  o->mine = true;                       /* each_mine marked it given */
  return 0;
}

static int on_wake(void *ud, int kind, const char *id) {
  waking *w = ud;
  fr_durable *d = w->rt->dur;
  if (kind == 'o') return w->outs = 1, 0;   /* taken below, once */
  if (!d->m->owns(d->st, fr_partition(id))) return 0;
  w->id = id;
  if (w->r->journal && (w->j = w->r->journal(w->r->ud, id)))
    return d->m->each_input(d->st, id, wake_input, w) != 0 ? (w->failed = 1) : 0;
  if (fr_dur_restore_one(w->rt, w->r, id) == FLOWRUN_ERR) w->failed = 1;
  return 0;
}

int fr_dur_wakes(flowrun *rt, const fr_restore *r) {
  fr_durable *d = rt->dur;
  waking w = { rt, r, NULL, NULL, 0, 0 };
  if (d->failed) return FLOWRUN_ERR;
  if (d->m->wakes(d->st, on_wake, &w) != 0 || w.failed) {
    d->failed = true;
    return fr_error(rt, "%s", d->m->errmsg(d->st));
  }
  /* outputs taken in a transaction of their own: marked given before the
  ** host can answer with them, so a message that follows at once, stored
  ** by another host, sees them given (a replay then does not make them
  ** again) */
  if (w.outs && (settle(rt) != FLOWRUN_OK || d->m->each_mine(d->st, take_mine, &w) != 0 || w.failed)) {
    d->failed = true;
    return fr_error(rt, "%s", d->m->errmsg(d->st));
  }
  return FLOWRUN_OK;
}

/* ---- effects ---- */

bool fr_dur_replaying(const fr_journal *j) {
  return j->pos < j->nrecs;
}

/* "ask \"prompt\"" as a mismatch message shows a record. */
static void push_effect(lua_State *L, int kind, const char *fp) {
  if (kind == FR_J_ASK) lua_pushfstring(L, "ask \"%s\"", fp ? fp : "");
  else if (fp && *fp) lua_pushfstring(L, "%s %s", kind_name[kind], fp);
  else lua_pushstring(L, kind_name[kind]);
}

static void done_replaying(fr_journal *j) {
  for (long long i = 0; i < j->nrecs; i++) {
    free(j->recs[i].fp);
    free(j->recs[i].at);
    free(j->recs[i].data);
  }
  free(j->recs);
  j->recs = NULL;
  j->nrecs = j->pos = 0;
}

const fr_jrec fr_dur_mismatch;


/* A check (flowrun_replay_store) reached the end of the journal: the
** session stops before its next effect, which the message names. */
static const fr_jrec *replayed(lua_State *L, fr_journal *j, int kind, const char *fp) {
  if (!j->replayed) {
    size_t n;
    const char *at;
    luaL_where(L, 1);                   /* "file:line: " or "" */
    at = lua_tolstring(L, -1, &n);
    j->replayed_at = n >= 2 ? strndup(at, n - 2) : strdup("");
    push_effect(L, kind, fp);
    lua_pushfstring(L, "replays to the end of its journal (%I %s); next it does %s",
                    (lua_Integer)(j->seq - 1), j->seq - 1 == 1 ? "entry" : "entries",
                    lua_tostring(L, -1));
    j->replayed = strdup(lua_tostring(L, -1));
    lua_pop(L, 3);
  }
  if (j->replayed && j->replayed_at) lua_pushstring(L, j->replayed);
  else lua_pushliteral(L, "not enough memory");
  return &fr_dur_mismatch;
}

const fr_jrec *fr_dur_effect(lua_State *L, fr_journal *j, const char *id, int kind,
                             const char *fp) {
  const fr_jrec *r;
  j->seq++;
  if (j->pos >= j->nrecs && j->rt->dur->check) return replayed(L, j, kind, fp);
  if (j->pos >= j->nrecs) {
    if (j->recs) done_replaying(j);
    if (j->seq - j->base == FR_JOURNAL_WARN && j->rt->cb.log) {
      char msg[200];
      snprintf(msg, sizeof msg, "the journal of session %s holds %d records: a restart replays them"
               " all; a long-lived flow starts afresh with continue_as_new (README: Durable sessions)",
               id, FR_JOURNAL_WARN);
      j->rt->cb.log(j->rt->cb.ud, id, "warn", msg);
    }
    return NULL;
  }
  r = &j->recs[j->pos++];
  if (r->kind == kind && strcmp(r->fp, fp ? fp : "") == 0 && r->seq == j->seq) return r;
  luaL_where(L, 1);
  push_effect(L, r->kind, r->fp);
  push_effect(L, kind, fp);
  lua_pushfstring(L, "%sreplay of session %s does not match its journal: entry %d is %s "
                  "(made at %s), but the flow now does %s here "
                  "(README: Changing a flow with live sessions)",
                  lua_tostring(L, -3), id, (int)r->seq, lua_tostring(L, -2),
                  *r->at ? r->at : "?", lua_tostring(L, -1));
  lua_replace(L, -4);
  lua_pop(L, 2);
  j->mismatch = true;
  return &fr_dur_mismatch;
}

int fr_dur_push_leftover(lua_State *L, fr_journal *j, const char *id) {
  const fr_jrec *r;
  if (j->pos >= j->nrecs) return 0;
  j->mismatch = true;
  r = &j->recs[j->pos];
  push_effect(L, r->kind, r->fp);
  lua_pushfstring(L, "replay of session %s does not match its journal: entry %d is %s (made at %s), "
                  "but the flow now ends before it (README: Changing a flow with live sessions)",
                  id, (int)r->seq, lua_tostring(L, -1), *r->at ? r->at : "?");
  lua_remove(L, -2);
  return 1;
}

static void append(flowrun *rt, const char *id, long long seq, int kind, const char *fp,
                   const char *at, const char *data, size_t len) {
  fr_store_rec r = { seq, kind, fp ? fp : "", at, data, len };
  if (writing(rt)) wrote(rt, rt->dur->m->append(rt->dur->st, id, &r));
}

/* Where the flow is (level 1): "flow.lua:7" as luaL_where says it, less
** its ": "; "" when unknown. Written into at (n bytes) rather than pushed:
** one a record. */
static const char *where(lua_State *L, char *at, size_t n) {
  lua_Debug ar;
  *at = '\0';
  if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
    snprintf(at, n, "%s:%d", ar.short_src, ar.currentline);
  return at;
}

void fr_dur_record(lua_State *L, flowrun *rt, const char *id, long long seq, int kind,
                   const char *fp, const char *data, size_t len) {
  char at[LUA_IDSIZE + 24];
  append(rt, id, seq, kind, fp, where(L, at, sizeof at), data, len);
}

/* A response as bytes: fields, each a 4-byte length (0xffffffff: NULL)
** and its bytes. Built in the runtime's buffer (d->rec), not as a Lua
** string: a record a call, and the store copies it. */
static void put_field(fr_durable *d, const char *p, size_t n) {
  uint32_t len = p ? (uint32_t)n : 0xffffffffu;
  size_t need = d->rec_len + 4 + (p ? n : 0);
  if (d->oom) return;
  if (need > d->rec_cap) {
    size_t cap = d->rec_cap ? d->rec_cap : 1024;
    char *q;
    while (cap < need) cap *= 2;
    if (!(q = realloc(d->rec, cap))) { d->oom = true; return; }
    d->rec = q;
    d->rec_cap = cap;
  }
  memcpy(d->rec + d->rec_len, &len, 4);
  if (p && n) memcpy(d->rec + d->rec_len + 4, p, n);
  d->rec_len = need;
}

static void put_str(fr_durable *d, const char *s) {
  put_field(d, s, s ? strlen(s) : 0);
}

/* %.17g (what replay's strtod reads back exactly); a whole number, as
** the status and attempts always are, without printf. */
static void put_num(fr_durable *d, double v) {
  char t[32], *p = t + sizeof t;
  if (v > -1e15 && v < 1e15 && v == (double)(long long)v && !(v == 0 && signbit(v))) {
    long long i = (long long)v;
    unsigned long long u = i < 0 ? 0ull - (unsigned long long)i : (unsigned long long)i;
    do *--p = (char)('0' + u % 10); while ((u /= 10));
    if (i < 0) *--p = '-';
    put_field(d, p, (size_t)(t + sizeof t - p));
    return;
  }
  snprintf(t, sizeof t, "%.17g", v);
  put_str(d, t);
}

/* A call's response as its record. Its URL and error go in as the flow
** sees them, secrets hidden (a key in a query string stays out of the
** store); headers and body as they came: the flow reads them on replay.
** With cookies = true a tenth field holds the session's cookie jar after
** the call (NULL: empty), which replay gives back to the session; records
** written before it have nine fields and leave the jar as it is. */
void fr_dur_record_call(lua_State *L, flowrun *rt, const char *id, long long seq,
                        const char *fp, const fr_call *c) {
  fr_durable *d = rt->dur;
  const char *url, *err = NULL;
  fr_push_redacted(L, rt, c->rq.url ? c->rq.url : "", c->rq.url ? strlen(c->rq.url) : 0);
  url = lua_tostring(L, -1);
  if (c->error) {
    fr_push_redacted(L, rt, c->error, strlen(c->error));
    err = lua_tostring(L, -1);
  }
  d->rec_len = 0;
  d->oom = false;
  put_str(d, c->label);
  put_num(d, c->status);
  put_field(d, c->rhdr.p ? c->rhdr.p : "", c->rhdr.len);
  put_field(d, c->rbody.p ? c->rbody.p : "", c->rbody.len);
  put_str(d, err);
  put_str(d, c->reason);
  put_num(d, c->t0);
  put_str(d, url);
  put_num(d, c->attempts);
  if (c->rq.ig->cookies) put_str(d, c->jar);  /* its session's jar after it */
  if (d->oom) d->failed = true;         /* the turn fails: out of memory */
  else fr_dur_record(L, rt, id, seq, FR_J_CALL, fp, d->rec, d->rec_len);
  lua_pop(L, err ? 2 : 1);
}

/* The next field of a recorded response: its bytes (NULL) and length. */
static const char *get_field(const char **p, const char *end, size_t *n) {
  uint32_t len;
  const char *f;
  if (end - *p < 4) { *n = 0; return NULL; }
  memcpy(&len, *p, 4);
  *p += 4;
  if (len == 0xffffffffu || (size_t)(end - *p) < len) { *n = 0; return NULL; }
  f = *p;
  *p += len;
  *n = len;
  return f;
}

static void set_buf(fr_buf *b, const char *p, size_t n) {
  char *q = realloc(b->p, n + 1);
  if (!q) { b->len = 0; return; }
  b->p = q;
  b->cap = n + 1;
  if (n) memcpy(q, p, n);
  q[n] = '\0';
  b->len = n;
}

void fr_dur_replay_call(fr_call *c, const fr_jrec *r) {
  const char *p = r->data, *end = r->data + r->len, *f;
  size_t n;
  char num[32];
  f = get_field(&p, end, &n);                /* label */
  c->label = LABEL_ERROR;
  for (int i = 0; fr_default_labels[i]; i++)
    if (f && n == strlen(fr_default_labels[i]) && memcmp(f, fr_default_labels[i], n) == 0)
      c->label = fr_default_labels[i];
  if (f && c->label == LABEL_ERROR && !(n == 5 && memcmp(f, "error", 5) == 0)
      && n < sizeof c->codelabel) {
    memcpy(c->codelabel, f, n);
    c->codelabel[n] = '\0';
    c->label = c->codelabel;
  }
#define NUM(dst) (f = get_field(&p, end, &n), n = n < sizeof num ? n : sizeof num - 1, \
                  memcpy(num, f ? f : "0", f ? n : 1), num[f ? n : 1] = '\0', dst = strtod(num, NULL))
  NUM(c->status);
  f = get_field(&p, end, &n);
  set_buf(&c->rhdr, f ? f : "", n);
  f = get_field(&p, end, &n);
  set_buf(&c->rbody, f ? f : "", n);
  f = get_field(&p, end, &n);
  free(c->error);
  c->error = f ? dup_n(f, n) : NULL;
  f = get_field(&p, end, &n);                /* reason: kept in errbuf, */
  c->reason = NULL;                          /* which libcurl never fills for it */
  if (f) {
    n = n < sizeof c->errbuf ? n : sizeof c->errbuf - 1;
    memcpy(c->errbuf, f, n);
    c->errbuf[n] = '\0';
    c->reason = c->errbuf;
  }
  NUM(c->t0);
  f = get_field(&p, end, &n);
  if (f) {
    char *url = dup_n(f, n);
    if (url) fr_request_set_url(&c->rq, url);
    free(url);
  }
  NUM(c->attempts);
#undef NUM
  if (p < end) {                             /* cookies = true: the jar after it */
    f = get_field(&p, end, &n);
    free(c->jar);
    if ((c->jar = f ? dup_n(f, n) : NULL) == NULL && f) c->oom = true;
  }
  c->phase = FR_C_DONE;
}

/* ---- fresh starts: snapshots and continue_as_new ---- */

/*
** A fresh start lets the records before it go, and with them the cookie
** jars their calls carried (cookies = true): the session's jars then
** ride at the end of its record, after the snapshot, as their bytes
** (fr_jars_encode), their length in 4 bytes and "JARS". A snapshot ends
** with '}' or a value's bytes never followed by that tail, and a record
** without jars has none: those of older stores read as before.
*/
#define JARS_TAG "JARS"

/* The bytes on top of L, with the jars' tail when there are jars;
** false when out of memory (the bytes stay as they were). */
static bool add_jars(lua_State *L, const fr_jar *jars) {
  char *b;
  size_t n;
  uint32_t len;
  if (!jars) return true;
  if (!fr_jars_encode(jars, &b, &n)) return false;
  if (n == 0) return true;
  len = (uint32_t)n;
  lua_pushlstring(L, b, n);
  free(b);
  lua_pushlstring(L, (const char *)&len, 4);
  lua_pushliteral(L, JARS_TAG);
  lua_concat(L, 4);
  return true;
}

/* The length of record bytes p (n) without their jars' tail, the jars
** given to *jars (emptied when there is no tail); n when no tail. */
static size_t take_jars(const char *p, size_t n, fr_jar **jars) {
  uint32_t len;
  if (n < 8 || memcmp(p + n - 4, JARS_TAG, 4) != 0) {
    if (jars) fr_jars_free(jars);
    return n;
  }
  memcpy(&len, p + n - 8, 4);
  if (len > n - 8) return n;            /* not a tail: the decoder says damaged */
  if (jars) fr_jars_decode(jars, p + n - 8 - len, len);
  return n - 8 - len;
}

/* Records the fresh start of kind at the next number, its data the bytes
** on top of L (popped), and lets the records since `after` go. */
static void fresh_start(lua_State *L, fr_journal *j, const char *id, int kind, const char *fp,
                        const char *at, long long after) {
  flowrun *rt = j->rt;
  j->seq++;
  append(rt, id, j->seq, kind, fp, at, lua_tostring(L, -1), lua_rawlen(L, -1));
  if (writing(rt)) wrote(rt, rt->dur->m->cut(rt->dur->st, id, after, j->seq));
  j->base = j->seq;
  lua_pop(L, 1);
}

int fr_dur_checkpoint(lua_State *L, fr_journal *j, const char *id, int idx, const char *file,
                      const char *step, const char *at, bool same, const fr_jar *jars) {
  if (fr_dur_replaying(j)) return 0;
  idx = lua_absindex(L, idx);
  lua_pushstring(L, file);
  lua_pushlstring(L, "", 1);          /* a NUL */
  if (!fr_snapshot_encode(L, idx, "session")) {
    lua_replace(L, -3);
    lua_pop(L, 1);
    return -1;
  }
  if (same && j->seq == j->base) {      /* the one kept, this step's, replays to here */
    lua_pop(L, 3);
    return 0;
  }
  lua_concat(L, 3);                     /* file NUL snapshot [jars] */
  if (!add_jars(L, jars)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "not enough memory");
    return -1;
  }
  fresh_start(L, j, id, FR_J_STEP, step, at, j->chunk);
  return 0;
}

int fr_dur_resume(lua_State *L, fr_journal *j, fr_jar **jars) {
  const fr_jrec *r;
  size_t n, len;
  bool ok;
  if (j->pos >= j->nrecs || j->recs[j->pos].kind != FR_J_STEP) return 0;
  r = &j->recs[j->pos++];
  j->seq = j->base = r->seq;
  n = r->data ? strnlen(r->data, r->len) : 0;
  len = r->data ? take_jars(r->data, r->len, jars) : 0;
  if (!r->data || n >= len) {
    lua_pushliteral(L, "the stored state is damaged (not a snapshot of this flowrun)");
    return -1;
  }
  lua_pushlstring(L, r->data, n);
  lua_pushstring(L, r->fp);
  ok = fr_snapshot_decode(L, r->data + n + 1, len - n - 1);
  if (ok && !lua_istable(L, -1)) {      /* a value, not a session table */
    lua_pop(L, 1);
    lua_pushliteral(L, "the stored state is damaged (not a snapshot of this flowrun)");
    ok = false;
  }
  if (!ok) {
    lua_replace(L, -3);
    lua_pop(L, 1);
    return -1;
  }
  if (j->pos >= j->nrecs) done_replaying(j);
  return 3;
}

int fr_dur_restart(lua_State *L, fr_journal *j, const char *id, int first, int n) {
  const fr_jrec *r;
  lua_createtable(L, n, 1);
  for (int i = 0; i < n; i++) {
    lua_pushvalue(L, first + i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  if (!fr_snapshot_encode(L, -1, "continue_as_new's arguments")) {
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
    lua_remove(L, -2);
    return -1;
  }
  lua_remove(L, -2);
  r = fr_dur_effect(L, j, id, FR_J_RESTART, NULL);
  if (r == &fr_dur_mismatch) {
    lua_remove(L, -2);
    return -1;
  }
  if (r) {                              /* replayed: it started afresh already */
    j->base = j->seq;
    lua_pop(L, 1);
    return 0;
  }
  j->seq--;                             /* numbered when written: after its <close> variables */
  luaL_where(L, 1);                     /* "flow.lua:7: " */
  lua_pushlstring(L, lua_tostring(L, -1), lua_rawlen(L, -1) > 2 ? lua_rawlen(L, -1) - 2 : 0);
  lua_remove(L, -2);
  lua_insert(L, -2);                    /* at, bytes */
  return 2;
}

void fr_dur_restarted(lua_State *L, fr_journal *j, const char *id, const fr_jar *jars) {
  if (!add_jars(L, jars)) j->rt->dur->failed = true;   /* the turn fails: out of memory */
  fresh_start(L, j, id, FR_J_RESTART, NULL, lua_tostring(L, -2), 0);
  lua_pop(L, 1);
}

int fr_dur_restart_args(lua_State *L, fr_journal *j, fr_jar **jars) {
  const fr_jrec *r;
  lua_Integer n;
  if (j->nrecs == 0 || j->recs[0].kind != FR_J_RESTART || j->pos != 0) return -1;
  r = &j->recs[j->pos++];
  j->seq = j->base = r->seq;
  if (!r->data || !fr_snapshot_decode(L, r->data, take_jars(r->data, r->len, jars))
      || !lua_istable(L, -1))
    luaL_error(L, "the stored state is damaged (not a snapshot of this flowrun)");
  lua_getfield(L, -1, "n");
  n = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (n < 0 || n > 1000000 || !lua_checkstack(L, (int)n + 1))   /* a damaged count */
    luaL_error(L, "the stored state is damaged (not a snapshot of this flowrun)");
  for (lua_Integer i = 1; i <= n; i++) lua_rawgeti(L, -1 - (int)(i - 1), i);
  lua_remove(L, -1 - (int)n);
  if (j->pos >= j->nrecs) done_replaying(j);
  return (int)n;
}
