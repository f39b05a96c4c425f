/*
** store_pg_test.c -- the PostgreSQL store (runtime/lib/store_pg.c) driven
** through its methods, two or three handles in one process acting as
** hosts, against a real PostgreSQL (spec/store_pg_spec.lua starts it and
** makes a database per test).
**
**   build/store_pg_test URL TEST
**
** TEST: roundtrip split takeover restart race fence skiplocked inbox redact lost format perf.
** Prints what it checked, then "ok TEST"; on a failed check
** "FAIL TEST line N: what (the store's errmsg)" and exits 1.
*/
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "lib/store.h"

static const fr_store_methods *M = &fr_store_pg;
static const char *test, *url;
static fr_store *last;                  /* the handle whose errmsg a failure shows */

#define CHECK(c) do { if (!(c)) fail_at(__LINE__, #c); } while (0)

static void fail_at(int line, const char *what) {
  printf("FAIL %s line %d: %s (%s)\n", test, line, what, last ? M->errmsg(last) : "");
  exit(1);
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void sleep_ms(int ms) {
  struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
  nanosleep(&t, NULL);
}

static fr_store *open_store(int flags) {
  char err[600];
  fr_store *st = M->open(url, flags, err, sizeof err);
  if (!st) printf("open: %s\n", err);
  CHECK(st);
  return st;
}

static fr_store *host(const char *node, long long lease_ms) {
  fr_store *st = open_store(0);
  last = st;
  CHECK(M->set_node(st, node, lease_ms) == 0);
  return st;
}

/* One SQL query's first value through a connection of our own ("" when none). */
static char *query(const char *sql) {
  static char v[256];
  PGconn *db = PQconnectdb(url);
  PGresult *r = PQexec(db, sql);
  v[0] = '\0';
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
    snprintf(v, sizeof v, "%s", PQgetvalue(r, 0, 0));
  else if (PQresultStatus(r) != PGRES_COMMAND_OK)
    printf("query %s: %s", sql, PQerrorMessage(db));
  PQclear(r);
  PQfinish(db);
  return v;
}

/* ---- callbacks that collect ---- */

typedef struct recs { int n; long long seq[8]; int kind[8]; char fp[8][32], at[8][32], data[8][32];
                      size_t len[8]; int has_at[8], has_data[8]; } recs;

static int take_rec(void *ud, const fr_store_rec *r) {
  recs *x = ud;
  int i = x->n++;
  if (i >= 8) return 1;
  x->seq[i] = r->seq;
  x->kind[i] = r->kind;
  snprintf(x->fp[i], 32, "%s", r->fp);
  x->has_at[i] = r->at != NULL;
  snprintf(x->at[i], 32, "%s", r->at ? r->at : "");
  x->has_data[i] = r->data != NULL;
  x->len[i] = r->len;
  if (r->data && r->len <= 32) memcpy(x->data[i], r->data, r->len);
  return 0;
}

typedef struct texts { int n; long long num[8]; char id[8][32]; char text[8][32]; size_t len[8];
                       int has[8], kind[8], how[8]; } texts;

static int take_input(void *ud, long long n, const char *t, size_t len) {
  texts *x = ud;
  int i = x->n++;
  if (i >= 8) return 1;
  x->num[i] = n;
  x->has[i] = t != NULL;
  x->len[i] = len;
  if (t && len <= 32) memcpy(x->text[i], t, len);
  return 0;
}

static int take_output(void *ud, const char *id, long long seq, int kind, int how,
                       const char *t, size_t len) {
  texts *x = ud;
  int i = x->n++;
  if (i >= 8) return 1;
  snprintf(x->id[i], 32, "%s", id);
  x->num[i] = seq;
  x->kind[i] = kind;
  x->how[i] = how;
  x->has[i] = t != NULL;
  x->len[i] = len;
  if (t && len <= 32) memcpy(x->text[i], t, len);
  return 0;
}

typedef struct ids { int n; char id[8][32]; int kind[8]; } ids;

static int take_session(void *ud, const fr_store_session *s) {
  ids *x = ud;
  if (x->n < 8) snprintf(x->id[x->n], 32, "%s", s->id);
  x->n++;
  return 0;
}

static int take_id(void *ud, const char *id) {
  ids *x = ud;
  if (x->n < 8) snprintf(x->id[x->n], 32, "%s", id);
  x->n++;
  return 0;
}

static int take_wake(void *ud, int kind, const char *id) {
  ids *x = ud;
  if (x->n < 8) {
    snprintf(x->id[x->n], 32, "%s", id);
    x->kind[x->n] = kind;
  }
  x->n++;
  return 0;
}

typedef struct listed { int n; char id[8][32]; int ended[8], waiting[8], parked[8];
                        long long inputs[8], journal[8]; char note[8][32]; } listed;

static int take_listed(void *ud, const fr_store_listed *l) {
  listed *x = ud;
  int i = x->n++;
  if (i >= 8) return 1;
  snprintf(x->id[i], 32, "%s", l->id);
  x->ended[i] = l->ended;
  x->waiting[i] = l->waiting;
  x->parked[i] = l->parked;
  x->inputs[i] = l->inputs;
  x->journal[i] = l->journal;
  snprintf(x->note[i], 32, "%s", l->note ? l->note : "(none)");
  return 0;
}

static int always_idle(void *ud, int part) { (void)ud; (void)part; return 1; }

static int count(const unsigned char v[]) {
  int n = 0;
  for (int i = 0; i < FR_PARTITIONS; i++) n += v[i] != 0;
  return n;
}

static int held(fr_store *st) {
  int n = 0;
  for (int i = 0; i < FR_PARTITIONS; i++) n += M->owns(st, i);
  return n;
}

/* A session id in partition part (the first of "s0", "s1", ... that is). */
static const char *id_in(int part, int skip) {
  static char id[8][32];
  static int k;
  char *p = id[k++ % 8];
  for (int i = 0;; i++) {
    snprintf(p, 32, "s%d", i);
    if (fr_partition(p) == part && skip-- == 0) return p;
  }
}

/* Waits up to ms for the store's wake fd; the wakes that came. */
static ids wait_wakes(fr_store *st, int ms) {
  ids w = { 0 };
  struct pollfd pfd = { M->fd(st), POLLIN, 0 };
  double end = now_ms() + ms;
  CHECK(pfd.fd >= 0);
  while (w.n == 0 && now_ms() < end) {
    if (poll(&pfd, 1, (int)(end - now_ms()) + 1) > 0) CHECK(M->wakes(st, take_wake, &w) == 0);
  }
  sleep_ms(50);                         /* any more that come with them */
  CHECK(M->wakes(st, take_wake, &w) == 0);
  return w;
}

/* ---- the tests ---- */

static const fr_store_rec rec1 = { 1, 4, "GET /x\x01\xff", "f.lua:3", "d\0\1\2", 4 };
static const fr_store_rec rec2 = { 2, 2, "", NULL, NULL, 0 };

static void roundtrip(void) {
  fr_store *a = open_store(0), *b = open_store(0);
  fr_store_session row = { "u1", "f.lua", "a\0b\0", 4, 2, 0, 0, 0, 0 }, got;
  fr_store_rec r3 = { 3, 2, "", NULL, "three", 5 }, r4 = { 4, 2, "", NULL, "four", 4 };
  recs rs = { 0 };
  texts in = { 0 }, out = { 0 };
  ids ss = { 0 };
  listed ls = { 0 };
  char err[600];
  last = a;
  CHECK(strlen(M->identity(a)) == 16 && strspn(M->identity(a), "0123456789abcdef") == 16);
  CHECK(strcmp(M->identity(a), M->identity(b)) == 0);
  printf("identity: 16 hex digits, the same for both handles\n");
  /* a turn: the session, two records, two messages, an output */
  CHECK(M->begin(a) == 0);
  CHECK(M->put_session(a, &row) == 0);
  CHECK(M->append(a, "u1", &rec1) == 0);
  CHECK(M->append(a, "u1", &rec2) == 0);
  CHECK(M->each_rec(a, "u1", take_rec, &rs) == 0);
  CHECK(rs.n == 2);                     /* the transaction sees its own records */
  CHECK(M->put_input(a, "u1", 1, "hi\0there", 8) == 0);
  CHECK(M->put_input(a, "u1", 2, NULL, 0) == 0);
  CHECK(M->put_output(a, "u1", 1, 2, 0, "out\0put", 7) == 0);
  CHECK(M->commit(a) == 0);
  /* the other handle reads them, byte for byte */
  last = b;
  CHECK(M->get_session(b, "u1", &got) == 1);
  CHECK(strcmp(got.flow, "f.lua") == 0 && got.args_len == 4 && memcmp(got.args, "a\0b\0", 4) == 0);
  CHECK(got.nargs == 2 && got.inputs == 2 && !got.ended && got.said == 0 && !got.parked);
  CHECK(M->get_session(b, "nobody", &got) == 0);
  rs.n = 0;
  CHECK(M->each_rec(b, "u1", take_rec, &rs) == 0);
  CHECK(rs.n == 2 && rs.seq[0] == 1 && rs.kind[0] == 4 && strcmp(rs.fp[0], "GET /x\x01\xff") == 0);
  CHECK(rs.has_at[0] && strcmp(rs.at[0], "f.lua:3") == 0 && rs.len[0] == 4
        && memcmp(rs.data[0], "d\0\1\2", 4) == 0);
  CHECK(rs.seq[1] == 2 && rs.kind[1] == 2 && !rs.has_at[1] && !rs.has_data[1]);
  CHECK(M->each_input(b, "u1", take_input, &in) == 0);
  CHECK(in.n == 2 && in.num[0] == 1 && in.len[0] == 8 && memcmp(in.text[0], "hi\0there", 8) == 0);
  CHECK(in.num[1] == 2 && !in.has[1]);
  CHECK(M->each_output(b, take_output, &out) == 0);
  CHECK(out.n == 1 && strcmp(out.id[0], "u1") == 0 && out.num[0] == 1 && out.kind[0] == 2
        && out.len[0] == 7 && memcmp(out.text[0], "out\0put", 7) == 0);
  printf("session, journal, inbox, outbox: round trip with NUL bytes\n");
  /* waiting, silent, listed, parked */
  CHECK(M->each_session(b, 0, take_session, &ss) == 0 && ss.n == 1 && strcmp(ss.id[0], "u1") == 0);
  CHECK(M->begin(b) == 0 && M->set_waiting(b, "u1", 1) == 0 && M->commit(b) == 0);
  ss.n = 0;
  CHECK(M->each_session(b, 0, take_session, &ss) == 0 && ss.n == 0);
  CHECK(M->each_silent(b, 1LL << 50, take_id, &ss) == 1 && strcmp(ss.id[0], "u1") == 0);
  ss.n = 0;
  CHECK(M->each_silent(b, 1000, take_id, &ss) == 0);
  CHECK(M->each_listed(b, take_listed, &ls) == 0);
  CHECK(ls.n == 1 && ls.waiting[0] == 1 && ls.journal[0] == 2 && ls.inputs[0] == 2 && !ls.parked[0]);
  CHECK(M->begin(b) == 0 && M->park(b, "u1", "replay differs") == 0 && M->commit(b) == 0);
  ls.n = 0;
  CHECK(M->each_listed(b, take_listed, &ls) == 0);
  CHECK(ls.parked[0] == 1 && ls.waiting[0] == 0 && strcmp(ls.note[0], "replay differs") == 0);
  CHECK(M->each_session(b, 0, take_session, &ss) == 0 && ss.n == 0);
  CHECK(M->each_session(b, 1, take_session, &ss) == 0 && ss.n == 1);
  CHECK(M->begin(b) == 0 && M->park(b, "u1", NULL) == 0 && M->commit(b) == 0);
  ss.n = 0;
  CHECK(M->each_session(b, 0, take_session, &ss) == 0 && ss.n == 1);
  printf("waiting, silent, listed, parked and run again\n");
  /* cut: written records, and records still in memory */
  CHECK(M->begin(b) == 0 && M->cut(b, "u1", 0, 2) == 0);
  CHECK(M->append(b, "u1", &r3) == 0 && M->append(b, "u1", &r4) == 0);
  CHECK(M->cut(b, "u1", 2, 4) == 0 && M->commit(b) == 0);
  rs.n = 0;
  CHECK(M->each_rec(a, "u1", take_rec, &rs) == 0);
  CHECK(rs.n == 2 && rs.seq[0] == 2 && rs.seq[1] == 4 && memcmp(rs.data[1], "four", 4) == 0);
  ls.n = 0;
  CHECK(M->each_listed(b, take_listed, &ls) == 0 && ls.journal[0] == 2);
  printf("cut: records 1 and 3 gone, 2 and 4 kept\n");
  /* given, taken */
  CHECK(M->begin(b) == 0 && M->drop_output(b, "u1", 1) == 0 && M->take_input(b, "u1", 1) == 0
        && M->commit(b) == 0);
  out.n = in.n = 0;
  CHECK(M->each_output(a, take_output, &out) == 0 && out.n == 0);
  CHECK(M->each_input(a, "u1", take_input, &in) == 0 && in.n == 1 && in.num[0] == 2);
  CHECK(M->get_session(a, "u1", &got) == 1 && got.said == 1);
  printf("output given (said 1), message 1 taken\n");
  /* a failing commit: PostgreSQL's message */
  last = a;
  CHECK(M->begin(a) == 0 && M->append(a, "u1", &rec2) == 0);
  CHECK(M->commit(a) == -1);
  printf("commit: %s\n", M->errmsg(a));
  M->rollback(a);
  /* end, purge, drop */
  CHECK(M->begin(a) == 0 && M->end_session(a, "u1") == 0 && M->commit(a) == 0);
  CHECK(M->get_session(a, "u1", &got) == 1 && got.ended == 1);
  rs.n = in.n = ss.n = 0;
  CHECK(M->each_rec(a, "u1", take_rec, &rs) == 0 && rs.n == 0);
  CHECK(M->each_input(a, "u1", take_input, &in) == 0 && in.n == 0);
  CHECK(M->each_session(a, 1, take_session, &ss) == 0 && ss.n == 0);
  CHECK(M->begin(a) == 0 && M->purge_ended(a, 1000) == 0 && M->commit(a) == 0);
  CHECK(M->get_session(a, "u1", &got) == 1);   /* ended after 1000 ms since 1970 */
  CHECK(M->begin(a) == 0 && M->purge_ended(a, 1LL << 50) == 0 && M->commit(a) == 0);
  CHECK(M->get_session(a, "u1", &got) == 0);
  row.id = "u2";
  CHECK(M->begin(a) == 0 && M->put_session(a, &row) == 0 && M->append(a, "u2", &rec1) == 0
        && M->put_output(a, "u2", 1, 2, 0, "x", 1) == 0 && M->drop_session(a, "u2") == 0
        && M->commit(a) == 0);
  rs.n = out.n = 0;
  CHECK(M->get_session(a, "u2", &got) == 0 && M->each_rec(a, "u2", take_rec, &rs) == 0 && rs.n == 0);
  CHECK(M->each_output(a, take_output, &out) == 0 && out.n == 0);
  printf("ended: row kept, journal and inbox gone; purged; dropped\n");
  /* read only: reads, never writes */
  M->close(b);
  b = open_store(FR_STORE_READ);
  last = b;
  ls.n = 0;
  CHECK(M->each_listed(b, take_listed, &ls) == 0 && ls.n == 0);
  CHECK(M->begin(b) == 0);
  CHECK(M->put_session(b, &row) == -1);
  printf("read only: %s\n", M->errmsg(b));
  M->rollback(b);
  M->close(b);
  M->close(a);
  (void)err;
}

static void split(void) {
  fr_store *a = host("a", 10000), *b = host("b", 10000);
  unsigned char got[FR_PARTITIONS], lost[FR_PARTITIONS];
  int both = 0, none = 0;
  last = a;
  CHECK(M->leases(a, always_idle, NULL, got, lost) == 0);
  printf("a alone: took %d\n", count(got));
  last = b;
  CHECK(M->leases(b, always_idle, NULL, got, lost) == 0);
  printf("b joins: took %d\n", count(got));
  last = a;
  CHECK(M->leases(a, always_idle, NULL, got, lost) == 0);
  printf("a: took %d, lost %d, holds %d\n", count(got), count(lost), held(a));
  last = b;
  CHECK(M->leases(b, always_idle, NULL, got, lost) == 0);
  printf("b: took %d, lost %d, holds %d\n", count(got), count(lost), held(b));
  for (int i = 0; i < FR_PARTITIONS; i++) {
    both += M->owns(a, i) && M->owns(b, i);
    none += !M->owns(a, i) && !M->owns(b, i);
  }
  printf("held by both: %d, by none: %d\n", both, none);
  /* restore and purge: the sessions of the partitions this host holds only */
  {
    fr_store *c = open_store(0);
    fr_store_session row = { NULL, "f.lua", "", 0, 0, 0, 0, 0, 0 }, got_row;
    const char *sid[4];
    ids ss = { 0 };
    last = c;
    CHECK(M->begin(c) == 0);
    for (int i = 0; i < 4; i++) {
      row.id = sid[i] = id_in(i * 64, 0);
      CHECK(M->put_session(c, &row) == 0);
    }
    CHECK(M->commit(c) == 0);
    last = a;
    CHECK(M->each_session(a, 0, take_session, &ss) == 0);
    printf("a's sessions to restore:");
    for (int i = 0; i < ss.n; i++) printf(" %s", M->owns(a, fr_partition(ss.id[i])) ? "a's" : "b's");
    ss.n = 0;
    CHECK(M->each_session(a, 1, take_session, &ss) == 0);
    printf("; all unfinished: %d\n", ss.n);
    last = c;
    CHECK(M->begin(c) == 0);
    for (int i = 0; i < 4; i++) CHECK(M->end_session(c, sid[i]) == 0);
    CHECK(M->commit(c) == 0);
    last = a;
    CHECK(M->begin(a) == 0 && M->purge_ended(a, 1LL << 50) == 0 && M->commit(a) == 0);
    printf("a purges:");
    for (int i = 0; i < 4; i++)
      printf(" %s %s", M->owns(a, i * 64) ? "a's" : "b's", M->get_session(c, sid[i], &got_row) ? "kept" : "gone");
    printf("\n");
    M->close(c);
  }
  printf("leases: %s\n", query("SELECT count(DISTINCT node) || ' nodes, ' || count(*) || ' rows, epochs '"
                               " || min(epoch) || '..' || max(epoch) FROM flowrun_leases"));
  M->close(a);
  M->close(b);
}

static void takeover(void) {
  fr_store *a = host("a", 1000), *b = host("b", 1000);
  unsigned char got[FR_PARTITIONS], lost[FR_PARTITIONS];
  last = a;
  CHECK(M->leases(a, always_idle, NULL, got, lost) == 0 && count(got) == 256);
  last = b;
  CHECK(M->leases(b, always_idle, NULL, got, lost) == 0);
  printf("b while a lives: took %d\n", count(got));
  sleep_ms(1200);                       /* a's leases expire */
  CHECK(M->leases(b, always_idle, NULL, got, lost) == 0);
  printf("b after a's leases expired: took %d, holds %d\n", count(got), held(b));
  printf("takeovers by b: %s\n", query("SELECT count(*) || ' at epoch ' || min(epoch) || '..' || max(epoch)"
                                       " FROM flowrun_takeovers WHERE node = 'b'"));
  printf("takeovers by a: %s\n", query("SELECT count(*) || ' at epoch ' || min(epoch) || '..' || max(epoch)"
                                       " FROM flowrun_takeovers WHERE node = 'a'"));
  last = a;
  CHECK(M->leases(a, always_idle, NULL, got, lost) == 0);
  printf("a comes back: lost %d, took %d, holds %d\n", count(lost), count(got), held(a));
  M->close(a);
  M->close(b);
}

/* Two hosts at once: each starts the same 20 sessions and sends 100
** messages to one. The session row's lock makes one start win and
** numbers the messages without a gap or a duplicate. */
typedef struct racer { fr_store *st; int made, failed; long long taken[100]; } racer;

static void *race_one(void *ud) {
  racer *x = ud;
  fr_store_session row = { NULL, "f.lua", "", 0, 0, 0, 0, 0, 0 };
  char id[16];
  for (int i = 0; i < 20; i++) {
    int rc;
    snprintf(id, sizeof id, "r%d", i);
    row.id = id;
    rc = M->start(x->st, &row);
    x->made += rc == 1;
    x->failed += rc < 0;
  }
  for (int i = 0; i < 100; i++)
    if (M->send(x->st, "r0", 0, "m", 1, &x->taken[i]) != 1) x->failed++;
  return NULL;
}

static void race(void) {
  racer x = { host("a", 10000), 0, 0, { 0 } }, y = { host("b", 10000), 0, 0, { 0 } };
  pthread_t tx, ty;
  unsigned char seen[201] = { 0 };
  int dup = 0, missing = 0;
  fr_store_session got;
  CHECK(pthread_create(&tx, NULL, race_one, &x) == 0 && pthread_create(&ty, NULL, race_one, &y) == 0);
  pthread_join(tx, NULL);
  pthread_join(ty, NULL);
  for (int i = 0; i < 100; i++) {
    if (x.taken[i] >= 1 && x.taken[i] <= 200) dup += seen[x.taken[i]]++;
    if (y.taken[i] >= 1 && y.taken[i] <= 200) dup += seen[y.taken[i]]++;
  }
  for (int i = 1; i <= 200; i++) missing += !seen[i];
  last = x.st;
  CHECK(M->get_session(x.st, "r0", &got) == 1);
  printf("starts that made the session: %d of 40; failed calls: %d\n", x.made + y.made, x.failed + y.failed);
  printf("messages: %lld stored, numbers missing %d, twice %d; inbox rows %s\n", got.inputs, missing, dup,
         query("SELECT count(DISTINCT n) FROM flowrun_inbox WHERE session = 'r0'"));
  M->close(x.st);
  M->close(y.st);
}

/* A host restarted under its name (killed, its supervisor started it
** again) has its partitions back at once, at the next epoch. */
static void restart(void) {
  fr_store *r = host("r", 10000);
  unsigned char got[FR_PARTITIONS], lost[FR_PARTITIONS];
  CHECK(M->leases(r, always_idle, NULL, got, lost) == 0 && count(got) == 256);
  M->close(r);
  r = host("r", 10000);
  CHECK(M->leases(r, always_idle, NULL, got, lost) == 0);
  printf("r restarted: took %d, lost %d; %s\n", count(got), count(lost),
         query("SELECT 'epochs ' || min(epoch) || '..' || max(epoch) FROM flowrun_leases WHERE node = 'r'"));
  M->close(r);
}

static void fence(void) {
  fr_store *a = host("a", 300), *b = host("b", 300);
  unsigned char got[FR_PARTITIONS], lost[FR_PARTITIONS];
  fr_store_session row = { NULL, "f.lua", "", 0, 0, 0, 0, 0, 0 };
  fr_store_rec r2 = { 2, 2, "", NULL, "by a, paused", 12 }, r3 = { 3, 2, "", NULL, "by b", 4 };
  const char *id = id_in(7, 0);
  recs rs = { 0 };
  ids ss = { 0 };
  row.id = id;
  last = a;
  CHECK(M->leases(a, always_idle, NULL, got, lost) == 0 && M->owns(a, 7));
  CHECK(M->begin(a) == 0 && M->put_session(a, &row) == 0 && M->append(a, id, &rec1) == 0
        && M->commit(a) == 0);
  /* a pauses inside a turn (its lease rows held FOR SHARE) past its lease:
     PostgreSQL ends that transaction, so b takes every partition at once */
  CHECK(M->begin(a) == 0 && M->append(a, id, &r2) == 0);
  sleep_ms(700);
  last = b;
  CHECK(M->leases(b, always_idle, NULL, got, lost) == 0);
  printf("b's takeover: took %d, partition 7 at epoch %s\n", count(got),
         query("SELECT epoch FROM flowrun_leases WHERE part = 7"));
  CHECK(M->each_in_part(b, 7, take_session, &ss) == 0 && ss.n == 1 && strcmp(ss.id[0], id) == 0);
  CHECK(M->each_rec(b, id, take_rec, &rs) == 0);
  printf("b restores %d record, \"%.*s\"\n", rs.n, (int)rs.len[rs.n - 1], rs.data[rs.n - 1]);
  /* a resumes: what it did after its lease ran out is not kept */
  last = a;
  CHECK(M->commit(a) == -1);
  printf("a's commit: %s\n", M->errmsg(a));
  CHECK(M->begin(a) == -1 || M->append(a, id, &r3) == -1);
  M->rollback(a);
  last = b;
  CHECK(M->begin(b) == 0 && M->append(b, id, &r3) == 0 && M->commit(b) == 0);
  printf("journal rows by node and epoch: %s\n",
         query("SELECT string_agg(seq || ':' || node || '@' || epoch, ' ' ORDER BY seq) FROM flowrun_journal"));
  M->close(a);
  M->close(b);
}

/* A turn of a live host that holds a lease row FOR SHARE (a write) when
** another host's takeover comes: the take leaves that partition (it never
** waits: two takers cannot deadlock) and takes it at a later heartbeat,
** after the commit, which is then refused. */
static void skiplocked(void) {
  fr_store *a = host("a", 5000), *b = host("b", 5000);
  unsigned char got[FR_PARTITIONS], lost[FR_PARTITIONS];
  fr_store_session row = { NULL, "f.lua", "", 0, 0, 0, 0, 0, 0 };
  const char *id = id_in(7, 0);
  row.id = id;
  last = a;
  CHECK(M->leases(a, always_idle, NULL, got, lost) == 0 && M->owns(a, 7));
  query("UPDATE flowrun_leases SET expires = 0");   /* as if a's lease ran out, */
  query("UPDATE flowrun_nodes SET seen = 0 WHERE node = 'a'");   /* and a were silent */
  CHECK(M->begin(a) == 0 && M->put_session(a, &row) == 0 && M->append(a, id, &rec1) == 0);
  last = b;
  CHECK(M->leases(b, always_idle, NULL, got, lost) == 0);
  printf("b's takeover during a's turn: took %d, partition 7 %s\n", count(got), got[7] ? "too" : "left");
  last = a;
  CHECK(M->commit(a) == 0);
  last = b;
  CHECK(M->leases(b, always_idle, NULL, got, lost) == 0);
  printf("b's next heartbeat: took %d (partition 7: %s)\n", count(got), got[7] ? "yes" : "no");
  last = a;                             /* a, not paused, writes again: fenced by the epoch */
  CHECK(M->begin(a) == 0);
  CHECK(M->append(a, id, &rec2) == -1);
  printf("a fenced: %s\n", M->errmsg(a));
  M->rollback(a);
  M->close(a);
  M->close(b);
}

static void inbox(void) {
  fr_store *a = host("a", 10000), *b = host("b", 10000), *c = open_store(0);
  unsigned char got[FR_PARTITIONS], lost[FR_PARTITIONS];
  fr_store_session row = { "c1", "f.lua", "x\0", 2, 1, 0, 0, 0, 0 }, srow;
  long long taken = -1;
  texts in = { 0 }, out = { 0 };
  ids w;
  last = a;
  CHECK(M->leases(a, always_idle, NULL, got, lost) == 0 && count(got) == 256);
  last = b;
  CHECK(M->leases(b, always_idle, NULL, got, lost) == 0 && count(got) == 0);
  CHECK(M->send(b, "c1", 0, "hi", 2, &taken) == -2);
  CHECK(M->start(b, &row) == 1);
  w = wait_wakes(a, 3000);
  printf("a woken: %d, %c %s\n", w.n, w.kind[0], w.id[0]);
  CHECK(M->send(b, "c1", 0, "hi\0you", 6, &taken) == 1);
  printf("send 0: stored as %lld\n", taken);
  CHECK(M->send(b, "c1", 1, "hi\0you", 6, &taken) == 0);
  CHECK(M->send(b, "c1", 3, "three", 5, &taken) == -3);
  CHECK(M->send(b, "c1", 2, "two", 3, &taken) == 1 && taken == 2);
  CHECK(M->start(b, &row) == 0);
  w = wait_wakes(a, 3000);
  printf("a woken: %d, %c %s\n", w.n, w.kind[0], w.id[0]);
  w = wait_wakes(b, 3000);
  printf("b woken by its messages sent again: %d, %c %s\n", w.n, w.kind[0], w.id[0]);
  last = a;
  CHECK(M->each_input(a, "c1", take_input, &in) == 0);
  CHECK(in.n == 2 && in.num[0] == 1 && in.len[0] == 6 && memcmp(in.text[0], "hi\0you", 6) == 0
        && in.num[1] == 2 && in.len[1] == 3);
  printf("inbox: 1 \"hi\\0you\", 2 \"two\"\n");
  /* the owner, not woken yet, says c1 waits: it does not, a message is stored */
  {
    ids ss = { 0 };
    CHECK(M->begin(a) == 0 && M->set_waiting(a, "c1", 1) == 0 && M->commit(a) == 0);
    CHECK(M->each_session(a, 0, take_session, &ss) == 0);
    CHECK(M->each_in_part(a, fr_partition("c1"), take_session, &ss) == 0);
    printf("c1 to restore: %d times; silent: %d\n", ss.n, M->each_silent(a, 1LL << 50, take_id, &ss));
  }
  /* a's output goes to b, which stored the last message */
  CHECK(M->begin(a) == 0);
  printf("put_output: %d\n", M->put_output(a, "c1", 1, 2, 0, "hel\0lo", 6));
  CHECK(M->commit(a) == 0);
  CHECK(M->each_output(a, take_output, &out) == 0 && out.n == 0);
  last = b;
  w = wait_wakes(b, 3000);
  printf("b woken: %d, %c %s\n", w.n, w.kind[0], w.id[0]);
  CHECK(M->each_mine(b, take_output, &out) == 0);
  printf("b's outputs: %d", out.n);
  for (int i = 0; i < out.n; i++) printf(", %s %lld %d bytes", out.id[i], out.num[i], (int)out.len[i]);
  printf("\n");
  CHECK(out.n == 1 && memcmp(out.text[0], "hel\0lo", 6) == 0);
  out.n = 0;
  CHECK(M->each_mine(b, take_output, &out) == 0);
  printf("b's outputs again: %d\n", out.n);
  /* b gives it though a owns the session: not fenced */
  CHECK(M->begin(b) == 0 && M->drop_output(b, "c1", 1) == 0 && M->commit(b) == 0);
  CHECK(M->get_session(b, "c1", &srow) == 1 && srow.said == 1);
  /* the owner runs it: its row put again keeps the messages stored */
  last = a;
  CHECK(M->begin(a) == 0 && M->put_session(a, &row) == 0 && M->commit(a) == 0);
  CHECK(M->get_session(a, "c1", &srow) == 1 && srow.inputs == 2 && srow.said == 1);   /* given on b */
  last = b;
  /* sent again (a retried webhook): the replies come again */
  CHECK(M->send(b, "c1", 2, "two", 3, &taken) == 0);
  w = wait_wakes(b, 3000);
  CHECK(w.n >= 1 && w.kind[0] == 'o');
  CHECK(M->each_mine(b, take_output, &out) == 0);
  printf("b after sending 2 again: %d outputs\n", out.n);
  /* the next message, stored by a: the last one's outputs go; a's own */
  last = a;
  CHECK(M->send(a, "c1", 0, "three", 5, &taken) == 1 && taken == 3);
  CHECK(M->begin(a) == 0);
  printf("put_output to itself: %d\n", M->put_output(a, "c1", 2, 3, 1, NULL, 0));
  CHECK(M->commit(a) == 0);
  out.n = 0;
  CHECK(M->each_output(a, take_output, &out) == 0);
  CHECK(out.n == 1 && out.num[0] == 2 && out.kind[0] == 3 && out.how[0] == 1 && !out.has[0]);
  out.n = 0;
  CHECK(M->each_mine(b, take_output, &out) == 0 && out.n == 0);
  printf("outbox: %s\n", query("SELECT string_agg(seq || ':' || node, ' ') FROM flowrun_outbox"));
  /* inside a turn's transaction: send joins it, leases refuses */
  CHECK(M->begin(a) == 0 && M->send(a, "c1", 0, "four", 4, &taken) == 1 && taken == 4);
  CHECK(M->leases(a, always_idle, NULL, got, lost) == -1);
  printf("%s\n", M->errmsg(a));
  printf("before the commit: %s; ", query("SELECT inputs FROM flowrun_sessions WHERE id = 'c1'"));
  CHECK(M->commit(a) == 0);
  printf("after: %s\n", query("SELECT inputs FROM flowrun_sessions WHERE id = 'c1'"));
  /* a tool (no node): no fencing, outputs to nobody */
  last = c;
  CHECK(M->begin(c) == 0);
  printf("put_output without a node: %d\n", M->put_output(c, "c1", 3, 2, 0, "t", 1));
  CHECK(M->park(c, "c1", "by hand") == 0 && M->commit(c) == 0);
  /* a message for a partition a does not hold wakes nobody there */
  M->close(a);
  M->close(b);
  M->close(c);
}

static void redact(void) {
  char err[600];
  CHECK(!M->open("postgresql://flowrun:s3cret@/db?host=/nonexistent-dir", 0, err, sizeof err));
  printf("%s\n", err);
  CHECK(!strstr(err, "s3cret"));
  CHECK(!M->open("postgres:///db?host=/nonexistent-dir&password=s3cret&user=flowrun", 0, err, sizeof err));
  printf("%s\n", err);
  CHECK(!strstr(err, "s3cret"));
  /* libpq quotes a bad token of the URL, or all of it */
  CHECK(!M->open("postgresql://flowrun:s3c%zzret@/db?host=/nonexistent-dir", 0, err, sizeof err));
  printf("%s\n", err);
  CHECK(!strstr(err, "s3c"));
  CHECK(!M->open("postgresql://flowrun:s%33cret@[::1/db", 0, err, sizeof err));
  printf("%s\n", err);
  CHECK(!strstr(err, "s%33cret") && !strstr(err, "s3cret"));
  CHECK(!M->open("postgresql://flowrun:*@[::1/db", 0, err, sizeof err));   /* ends */
  CHECK(!M->open("postgresql://flowrun:s@[::1/db", 0, err, sizeof err));
  printf("%s\n", err);
}

static void lost(void) {
  fr_store *a = host("a", 10000);
  unsigned char got[FR_PARTITIONS], l[FR_PARTITIONS];
  ids ss = { 0 };
  fr_store_session row;
  CHECK(M->leases(a, always_idle, NULL, got, l) == 0);
  query("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()");
  sleep_ms(100);
  CHECK(M->begin(a) == -1);
  printf("begin: %s\n", M->errmsg(a));
  CHECK(M->get_session(a, "x", &row) == -1);
  CHECK(M->each_session(a, 0, take_session, &ss) == -1);
  CHECK(M->leases(a, always_idle, NULL, got, l) == -1);
  CHECK(M->commit(a) == -1);
  M->rollback(a);
  CHECK(M->wakes(a, take_wake, &ss) == -1);
  printf("wakes: %s\n", M->errmsg(a));
  M->close(a);
}

static void format(void) {
  char err[600];
  fr_store *st;
  CHECK(!M->open(url, FR_STORE_READ, err, sizeof err));
  printf("read only, no store: %s\n", err);
  st = open_store(0);
  M->close(st);
  query("UPDATE flowrun_meta SET v = '2' WHERE k = 'format' RETURNING v");
  CHECK(!M->open(url, 0, err, sizeof err));
  printf("%s\n", err);
  CHECK(!M->open(url, FR_STORE_READ, err, sizeof err));
  query("UPDATE flowrun_meta SET v = '1' WHERE k = 'format' RETURNING v");
  st = host("n1", 10000);
  {
    fr_store *other = open_store(0);
    CHECK(M->set_node(other, "n1", 10000) == -1);
    printf("%s\n", M->errmsg(other));
    CHECK(M->set_node(other, "a-host-name-of-fifty-two-bytes-0123456789-0123456789", 10000) == -1);
    printf("%s\n", M->errmsg(other));
    CHECK(M->set_node(other, "", 10000) == -1);
    printf("%s\n", M->errmsg(other));
    CHECK(M->set_node(other, "n2", 0) == -1);
    printf("%s\n", M->errmsg(other));
    CHECK(M->fd(other) == -1 && M->wakes(other, take_wake, NULL) == 0);
    M->close(other);
  }
  M->close(st);
}

static void perf(void) {
  fr_store *a = host("a", 10000);
  unsigned char got[FR_PARTITIONS], lost_[FR_PARTITIONS];
  fr_store_session row = { "p1", "f.lua", "", 0, 0, 0, 0, 0, 0 };
  int n = 300;
  double t0;
  CHECK(M->leases(a, always_idle, NULL, got, lost_) == 0);
  CHECK(M->begin(a) == 0 && M->put_session(a, &row) == 0 && M->commit(a) == 0);
  t0 = now_ms();
  for (int i = 1; i <= n; i++) {
    fr_store_rec r = { i, 2, "", "f.lua:1", "some result", 11 };
    CHECK(M->begin(a) == 0 && M->append(a, "p1", &r) == 0 && M->commit(a) == 0);
  }
  printf("commit of one journal record: %.3f ms\n", (now_ms() - t0) / n);
  /* a message from another host, the owner woken; a heartbeat */
  {
    fr_store *b = host("b", 10000);
    double sent = 0, woken = 0, t1;
    long long taken;
    ids w;
    for (int i = 0; i < 100; i++) {
      t1 = now_ms();
      CHECK(M->send(b, "p1", 0, "m", 1, &taken) == 1);
      sent += now_ms() - t1;
      w = (ids){ 0 };
      while (w.n == 0) {
        struct pollfd pfd = { M->fd(a), POLLIN, 0 };
        CHECK(poll(&pfd, 1, 3000) == 1 && M->wakes(a, take_wake, &w) == 0);
      }
      woken += now_ms() - t1;
    }
    printf("send: %.3f ms; the owner woken after %.3f ms\n", sent / 100, woken / 100);
    t1 = now_ms();
    for (int i = 0; i < 20; i++) CHECK(M->leases(a, always_idle, NULL, got, lost_) == 0);
    printf("heartbeat holding 256 partitions: %.3f ms\n", (now_ms() - t1) / 20);
    M->close(b);
  }
  M->close(a);
}

int main(int argc, char **argv) {
  static const struct { const char *name; void (*fn)(void); } tests[] = {
    { "roundtrip", roundtrip }, { "split", split }, { "takeover", takeover }, { "restart", restart }, { "race", race }, { "fence", fence }, { "skiplocked", skiplocked },
    { "inbox", inbox }, { "redact", redact }, { "lost", lost }, { "format", format },
    { "perf", perf },
  };
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc != 3) {
    fprintf(stderr, "usage: store_pg_test URL TEST\n");
    return 2;
  }
  url = argv[1];
  test = argv[2];
  for (size_t i = 0; i < sizeof tests / sizeof *tests; i++)
    if (strcmp(tests[i].name, test) == 0) {
      tests[i].fn();
      printf("ok %s\n", test);
      return 0;
    }
  fprintf(stderr, "store_pg_test: no test %s\n", test);
  return 2;
}
