/*
** store_sqlite.c -- the SQLite store (store.h): one file in WAL mode.
**
** Tables: sessions (one row each), journal (session, seq: a record, or a
** group of a session's records from one commit, kind -N; see flush),
** inbox (session, n). The file says it is ours with PRAGMA application_id and
** its format with user_version; a file of another application, or of a
** newer format, is refused. One process at a time: an flock on PATH-lock,
** which the kernel drops when the process dies however it dies (a restart
** right after a SIGKILL finds it free), and which leaves the database
** readable by others (unlike SQLite's exclusive locking mode).
** synchronous=NORMAL in WAL mode: a commit survives the process's crash,
** not necessarily a power loss (README: Durable sessions).
*/
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store.h"

#define APP_ID 0x666c6f77               /* "flow" */
#define FORMAT 1

enum {
  Q_BEGIN, Q_COMMIT, Q_ROLLBACK, Q_PUT_SESSION, Q_END_SESSION, Q_DROP_SESSION,
  Q_GET_SESSION, Q_EACH_SESSION, Q_DROP_JOURNAL, Q_DROP_INBOX, Q_APPEND, Q_EACH_REC,
  Q_PUT_INPUT, Q_TAKE_INPUT, Q_EACH_INPUT, Q_INPUTS, Q_PUT_OUTPUT, Q_DROP_OUTPUT,
  Q_EACH_OUTPUT, Q_SAID, Q_WAITING, Q_LIST, Q_DROP_OUTBOX, Q_PARK, Q_SILENT, Q_CUT, Q_PURGE, Q_GROUPS, Q_DROP_ROW, Q_EACH_UNFINISHED, Q_COUNT
};

static const char *const sql[Q_COUNT] = {
  "BEGIN IMMEDIATE",
  "COMMIT",
  "ROLLBACK",
  "INSERT OR REPLACE INTO sessions(id, flow, args, nargs, inputs, ended, said, active)"
  "  VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))",
  "UPDATE sessions SET ended = 1, waiting = 0, active = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) WHERE id = ?1",
  "DELETE FROM sessions WHERE id = ?1",
  "SELECT id, flow, args, nargs, inputs, ended, said, parked FROM sessions WHERE id = ?1",
  "SELECT id, flow, args, nargs, inputs, ended, said, parked FROM sessions"
  "  WHERE ended = 0 AND waiting = 0 AND parked = 0",
  "DELETE FROM journal WHERE session = ?1",
  "DELETE FROM inbox WHERE session = ?1",
  "INSERT INTO journal(session, seq, kind, fp, at, result) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
  "SELECT seq, kind, fp, at, result FROM journal WHERE session = ?1 ORDER BY seq",
  "INSERT INTO inbox(session, n, text) VALUES (?1, ?2, ?3)",
  "DELETE FROM inbox WHERE session = ?1 AND n = ?2",
  "SELECT n, text FROM inbox WHERE session = ?1 ORDER BY n",
  "UPDATE sessions SET inputs = ?2, waiting = 0, active = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) WHERE id = ?1 AND inputs < ?2",
  "INSERT OR REPLACE INTO outbox(session, seq, kind, how, text) VALUES (?1, ?2, ?3, ?4, ?5)",
  "DELETE FROM outbox WHERE session = ?1 AND seq = ?2",
  "SELECT session, seq, kind, how, text FROM outbox ORDER BY rowid",
  "UPDATE sessions SET said = ?2 WHERE id = ?1 AND said < ?2",
  "UPDATE sessions SET waiting = ?2, active = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) WHERE id = ?1",
  "SELECT id, flow, ended, waiting, inputs, active,"
  "  (SELECT coalesce(sum(CASE WHEN kind < 0 THEN -kind ELSE 1 END), 0) FROM journal WHERE session = id),"
  "  parked, note FROM sessions ORDER BY active DESC",
  "DELETE FROM outbox WHERE session = ?1",
  "UPDATE sessions SET parked = ?2, note = ?3, waiting = 0 WHERE id = ?1",
  "SELECT id FROM sessions WHERE waiting = 1 AND ended = 0 AND parked = 0 AND active < ?1 LIMIT 1000",
  "DELETE FROM journal WHERE session = ?1 AND kind >= 0 AND seq > ?2 AND seq < ?3",
  "DELETE FROM sessions WHERE id IN"
  " (SELECT id FROM sessions WHERE ended = 1 AND active < ?1 LIMIT 1000)",
  "SELECT seq, result FROM journal WHERE session = ?1 AND kind < 0 AND seq < ?2",
  "DELETE FROM journal WHERE session = ?1 AND seq = ?2",
  "SELECT id, flow, args, nargs, inputs, ended, said, parked FROM sessions WHERE ended = 0",
};

static const char schema[] =
  "CREATE TABLE IF NOT EXISTS sessions(id TEXT PRIMARY KEY, flow TEXT NOT NULL,"
  "  args BLOB NOT NULL, nargs INTEGER NOT NULL, inputs INTEGER NOT NULL,"
  "  ended INTEGER NOT NULL, said INTEGER NOT NULL DEFAULT 0,"
  "  waiting INTEGER NOT NULL DEFAULT 0, active INTEGER NOT NULL DEFAULT 0,"
  "  parked INTEGER NOT NULL DEFAULT 0, note TEXT) WITHOUT ROWID;"
  "CREATE TABLE IF NOT EXISTS journal(session TEXT NOT NULL, seq INTEGER NOT NULL,"
  "  kind INTEGER NOT NULL, fp TEXT NOT NULL, at TEXT, result BLOB,"
  "  PRIMARY KEY(session, seq));"
  "CREATE TABLE IF NOT EXISTS inbox(session TEXT NOT NULL, n INTEGER NOT NULL, text BLOB,"
  "  PRIMARY KEY(session, n)) WITHOUT ROWID;"
  "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;"
  "INSERT OR IGNORE INTO meta(k, v) VALUES ('id', lower(hex(randomblob(8))));"
  "CREATE TABLE IF NOT EXISTS outbox(session TEXT NOT NULL, seq INTEGER NOT NULL,"
  "  kind INTEGER NOT NULL, how INTEGER NOT NULL, text BLOB, UNIQUE(session, seq));"
  "CREATE INDEX IF NOT EXISTS ended_at ON sessions(active) WHERE ended = 1;"
  "CREATE INDEX IF NOT EXISTS silent_since ON sessions(active)"
  "  WHERE waiting = 1 AND ended = 0 AND parked = 0;";

/* A journal record appended in the open transaction, not yet inserted:
** one allocation holds it, its session's id, fp, at and data. */
typedef struct pending {
  long long seq;
  int kind;
  const char *id, *fp, *at, *data;      /* at, data: NULL when the record has none */
  size_t len;
} pending;

struct fr_store {
  sqlite3 *db;
  sqlite3_stmt *q[Q_COUNT];
  int lockfd;
  char *path;
  char id[20];                          /* made when the store was: Idempotency-Keys */
  char *row;                            /* get_session's copy */
  pending **pend;                       /* appended this transaction: flush() */
  size_t npend, cap;
  char err[512];
};

static int fail(fr_store *st) {
  snprintf(st->err, sizeof st->err, "store %s: %s", st->path, sqlite3_errmsg(st->db));
  return -1;
}

/* Runs q to its end (a statement without rows). */
static int done(fr_store *st, int q) {
  int rc = sqlite3_step(st->q[q]);
  sqlite3_reset(st->q[q]);
  sqlite3_clear_bindings(st->q[q]);
  return rc == SQLITE_DONE ? 0 : fail(st);
}

static void bind_text(sqlite3_stmt *s, int i, const char *t) {
  sqlite3_bind_text(s, i, t, -1, SQLITE_STATIC);
}

static void drop_pending(fr_store *st) {
  for (size_t i = 0; i < st->npend; i++) free(st->pend[i]);
  st->npend = 0;
}

static int by_session(const void *a, const void *b) {
  const pending *x = *(const pending *const *)a, *y = *(const pending *const *)b;
  int c = strcmp(x->id, y->id);
  return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

/* A group's bytes: the records of one session from one flush, each as
** its seq (8 bytes), kind (4), then fp, at and data, each a 4-byte length
** (0xffffffff: NULL) and its bytes, fp and at with their NUL (each_rec
** hands them on as C strings). Host byte order, as a call's record. */
static void put_u32(char **q, uint32_t v) { memcpy(*q, &v, 4); *q += 4; }

static void put_bytes(char **q, const char *p, size_t n) {
  put_u32(q, p ? (uint32_t)n : 0xffffffffu);
  if (p && n) memcpy(*q, p, n);
  if (p) *q += n;
}

static size_t packed_size(const pending *r) {
  return 8 + 4 + 12 + strlen(r->fp) + 1 + (r->at ? strlen(r->at) + 1 : 0) + r->len;
}

enum { GROUP_MAX = 1000, GROUP_BYTES = 1 << 16 };

/* Inserts the records appended since the last flush, a session's together
** (by session, then seq) and as one row: a group (kind -N: N records, seq
** the first's), or the record itself when alone. Interleaved rows, a row a
** record, made a session's end rewrite most of the journal's pages and
** cost two B-tree inserts and two deletes a record (make bench, the stored
** row). Called before a commit and before anything reads or deletes
** journal rows, so nothing can tell the rows were late. */
static int flush(fr_store *st) {
  sqlite3_stmt *s = st->q[Q_APPEND];
  char *buf = NULL;
  size_t i = 0, j, bytes;
  int rc = 0;
  if (st->npend > 1) qsort(st->pend, st->npend, sizeof *st->pend, by_session);
  while (i < st->npend && rc == 0) {
    const pending *r = st->pend[i];
    for (j = i, bytes = 0; j < st->npend && j - i < GROUP_MAX && strcmp(st->pend[j]->id, r->id) == 0
                           && (j == i || bytes + packed_size(st->pend[j]) <= GROUP_BYTES); j++)
      bytes += packed_size(st->pend[j]);
    bind_text(s, 1, r->id);
    sqlite3_bind_int64(s, 2, r->seq);
    if (j - i == 1) {                   /* alone: a record's row */
      sqlite3_bind_int(s, 3, r->kind);
      bind_text(s, 4, r->fp);
      bind_text(s, 5, r->at);
      if (r->data) sqlite3_bind_blob(s, 6, r->data, (int)r->len, SQLITE_STATIC);
    } else {
      char *q;
      free(buf);
      if (!(buf = q = malloc(bytes))) {
        snprintf(st->err, sizeof st->err, "out of memory");
        rc = -1;
        break;
      }
      for (size_t k = i; k < j; k++) {
        const pending *x = st->pend[k];
        int64_t seq = x->seq;
        memcpy(q, &seq, 8);
        q += 8;
        put_u32(&q, (uint32_t)x->kind);
        put_bytes(&q, x->fp, strlen(x->fp) + 1);
        put_bytes(&q, x->at, x->at ? strlen(x->at) + 1 : 0);
        put_bytes(&q, x->data, x->len);
      }
      sqlite3_bind_int(s, 3, -(int)(j - i));
      bind_text(s, 4, "");
      sqlite3_bind_blob(s, 6, buf, (int)bytes, SQLITE_STATIC);
    }
    rc = done(st, Q_APPEND);
    i = j;
  }
  free(buf);
  drop_pending(st);
  return rc;
}

/* An integer pragma's value, -1 on error. */
static long long pragma(sqlite3 *db, const char *name) {
  char q[64];
  sqlite3_stmt *s;
  long long v = -1;
  snprintf(q, sizeof q, "PRAGMA %s", name);
  if (sqlite3_prepare_v2(db, q, -1, &s, NULL) != SQLITE_OK) return -1;
  if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  return v;
}

/* How many tables the file has (-1: unreadable): an empty SQLite file may
** become a store, one with tables of its own is another application's. */
static long long tables(sqlite3 *db) {
  sqlite3_stmt *s;
  long long v = -1;
  if (sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_schema", -1, &s, NULL) != SQLITE_OK) return -1;
  if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  return v;
}

static void st_close(fr_store *st) {
  if (!st) return;
  drop_pending(st);
  free(st->pend);
  for (int i = 0; i < Q_COUNT; i++) sqlite3_finalize(st->q[i]);
  sqlite3_close(st->db);
  if (st->lockfd >= 0) close(st->lockfd);   /* the lock goes with it */
  free(st->row);
  free(st->path);
  free(st);
}

/* Takes PATH-lock; the pid of the holder in it. */
static int take_lock(fr_store *st, char *err, size_t n) {
  size_t len = strlen(st->path);
  char *lock = malloc(len + 6), pid[32];
  ssize_t got;
  if (!lock) return snprintf(err, n, "out of memory"), -1;
  memcpy(lock, st->path, len);
  memcpy(lock + len, "-lock", 6);
  st->lockfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (st->lockfd < 0) {
    snprintf(err, n, "store %s: cannot open %s: %s", st->path, lock, strerror(errno));
    free(lock);
    return -1;
  }
  free(lock);
  if (flock(st->lockfd, LOCK_EX | LOCK_NB) != 0) {
    got = pread(st->lockfd, pid, sizeof pid - 1, 0);
    pid[got > 0 ? got : 0] = '\0';
    pid[strcspn(pid, "\n")] = '\0';
    if (errno == EWOULDBLOCK && atol(pid) == (long)getpid())
      snprintf(err, n, "store %s: in use by another runtime of this process", st->path);
    else if (errno == EWOULDBLOCK)
      snprintf(err, n, "store %s: in use by another flowrun (pid %s): "
               "two processes never run the same sessions", st->path, *pid ? pid : "?");
    else
      snprintf(err, n, "store %s: cannot lock: %s", st->path, strerror(errno));
    return -1;
  }
  snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
  if (ftruncate(st->lockfd, 0) != 0 || pwrite(st->lockfd, pid, strlen(pid), 0) < 0) {}
  return 0;
}

static fr_store *st_open(const char *path, int flags, char *err, size_t n) {
  fr_store *st = calloc(1, sizeof *st);
  long long app, fmt;
  int fd;
  if (!st || !(st->path = strdup(path))) {
    free(st);
    snprintf(err, n, "out of memory");
    return NULL;
  }
  st->lockfd = -1;
  if (flags & FR_STORE_READ) {          /* a look from outside: no lock, no write */
    if (access(path, R_OK) != 0) {
      snprintf(err, n, "store %s: %s", path, strerror(errno));
      goto bad;
    }
    if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
      snprintf(err, n, "store %s: %s", path, st->db ? sqlite3_errmsg(st->db) : "out of memory");
      goto bad;
    }
    if (pragma(st->db, "application_id") != APP_ID) {
      snprintf(err, n, "store %s: not a flowrun store", path);
      goto bad;
    }
    if ((fmt = pragma(st->db, "user_version")) > FORMAT) {
      snprintf(err, n, "store %s: written by a newer flowrun (store format %lld; this one reads %d)",
               path, fmt, FORMAT);
      goto bad;
    }
    goto prepare;                       /* the writing statements fail if stepped */
  }
  if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {   /* mode 0600 when new */
    snprintf(err, n, "store %s: %s%s", path, strerror(errno),
             errno == EACCES || errno == EPERM || errno == EROFS
             ? " (a store is written at every turn: it cannot be read-only)" : "");
    goto bad;
  }
  close(fd);
  if (take_lock(st, err, n) != 0) goto bad;
  if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
    snprintf(err, n, "store %s: %s", path, st->db ? sqlite3_errmsg(st->db) : "out of memory");
    goto bad;
  }
  sqlite3_extended_result_codes(st->db, 0);
  app = pragma(st->db, "application_id");
  fmt = pragma(st->db, "user_version");
  if (app < 0 || fmt < 0) {             /* a full disk (no room for the WAL's index) is no other file */
    int io = sqlite3_errcode(st->db) == SQLITE_IOERR || sqlite3_errcode(st->db) == SQLITE_FULL;
    snprintf(err, n, io ? "store %s: %s" : "store %s: not a flowrun store (%s)", path,
             sqlite3_errmsg(st->db));
    goto bad;
  }
  if (app != APP_ID && (app != 0 || fmt != 0 || tables(st->db) != 0)) {
    snprintf(err, n, "store %s: not a flowrun store (a SQLite file of another application)", path);
    goto bad;
  }
  if (fmt > FORMAT) {
    snprintf(err, n, "store %s: written by a newer flowrun (store format %lld; this one reads %d)",
             path, fmt, FORMAT);
    goto bad;
  }
  /* 16 KiB pages (set before the first table, so for a new store only)
  ** and the WAL copied into the database every 8192 pages (128 MiB; the
  ** file kept to 64 MiB after): where every record is a few hundred bytes,
  ** SQLite's defaults (4 KiB, 1000 pages) take twice the time per record
  ** (make bench, the stored row). Its page cache stays at 2 MiB: a larger
  ** one saved no time and grew with the store (the resident cap row). */
  if (sqlite3_exec(st->db, "PRAGMA page_size=16384", NULL, NULL, NULL) != SQLITE_OK
      || sqlite3_exec(st->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) != SQLITE_OK
      || sqlite3_exec(st->db, "PRAGMA synchronous=NORMAL; "
                      "PRAGMA wal_autocheckpoint=8192; PRAGMA journal_size_limit=67108864",
                      NULL, NULL, NULL) != SQLITE_OK
      || sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK
      || sqlite3_exec(st->db, schema, NULL, NULL, NULL) != SQLITE_OK
      || sqlite3_exec(st->db, "PRAGMA application_id=1718382455; PRAGMA user_version=1",
                      NULL, NULL, NULL) != SQLITE_OK
      || sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    snprintf(err, n, "store %s: %s", path, sqlite3_errmsg(st->db));
    goto bad;
  }
prepare:
  {
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(st->db, "SELECT v FROM meta WHERE k = 'id'", -1, &q, NULL) == SQLITE_OK
        && sqlite3_step(q) == SQLITE_ROW)
      snprintf(st->id, sizeof st->id, "%s", (const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
  }
  for (int i = 0; i < Q_COUNT; i++)
    if (sqlite3_prepare_v3(st->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->q[i], NULL) != SQLITE_OK) {
      snprintf(err, n, "store %s: %s", path, sqlite3_errmsg(st->db));
      goto bad;
    }
  return st;
bad:
  st_close(st);
  return NULL;
}

static int st_begin(fr_store *st) { return flush(st) || done(st, Q_BEGIN) ? -1 : 0; }
static int st_commit(fr_store *st) { return flush(st) || done(st, Q_COMMIT) ? -1 : 0; }
static void st_rollback(fr_store *st) {
  drop_pending(st);
  if (!sqlite3_get_autocommit(st->db)) done(st, Q_ROLLBACK);
}

static int st_put_session(fr_store *st, const fr_store_session *r) {
  sqlite3_stmt *s = st->q[Q_PUT_SESSION];
  bind_text(s, 1, r->id);
  bind_text(s, 2, r->flow);
  sqlite3_bind_blob(s, 3, r->args ? r->args : "", (int)r->args_len, SQLITE_STATIC);
  sqlite3_bind_int(s, 4, r->nargs);
  sqlite3_bind_int64(s, 5, r->inputs);
  return done(st, Q_PUT_SESSION);
}

static int drop_rest(fr_store *st, const char *id) {
  bind_text(st->q[Q_DROP_JOURNAL], 1, id);
  bind_text(st->q[Q_DROP_INBOX], 1, id);
  return done(st, Q_DROP_JOURNAL) || done(st, Q_DROP_INBOX) ? -1 : 0;
}

static int st_end_session(fr_store *st, const char *id) {
  if (flush(st)) return -1;
  bind_text(st->q[Q_END_SESSION], 1, id);
  return done(st, Q_END_SESSION) || drop_rest(st, id) ? -1 : 0;
}

static int st_park(fr_store *st, const char *id, const char *note) {
  sqlite3_stmt *s = st->q[Q_PARK];
  bind_text(s, 1, id);
  sqlite3_bind_int(s, 2, note != NULL);
  bind_text(s, 3, note);
  return done(st, Q_PARK);
}

/* At most 1000 a call: the caller closes their channels and asks again. */
static int st_each_silent(fr_store *st, long long before, int (*fn)(void *, const char *),
                          void *ud) {
  sqlite3_stmt *s = st->q[Q_SILENT];
  char **ids = NULL;
  int n = 0, rc;
  sqlite3_bind_int64(s, 1, before);
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {   /* copied: fn writes */
    char **more = realloc(ids, (size_t)(n + 1) * sizeof *ids);
    if (!more || !(more[n] = strdup((const char *)sqlite3_column_text(s, 0)))) {
      ids = more ? more : ids;
      rc = SQLITE_NOMEM;
      break;
    }
    ids = more;
    n++;
  }
  sqlite3_reset(s);
  for (int i = 0; i < n; i++) {
    if (rc == SQLITE_DONE) fn(ud, ids[i]);
    free(ids[i]);
  }
  free(ids);
  if (rc == SQLITE_NOMEM) {
    snprintf(st->err, sizeof st->err, "out of memory");
    return -1;
  }
  return rc == SQLITE_DONE ? n : fail(st);
}

static int st_drop_outbox(fr_store *st, const char *id) {
  bind_text(st->q[Q_DROP_OUTBOX], 1, id);
  return done(st, Q_DROP_OUTBOX);
}

static int st_each_listed(fr_store *st, int (*fn)(void *, const fr_store_listed *), void *ud) {
  sqlite3_stmt *s = st->q[Q_LIST];
  fr_store_listed r;
  int rc;
  if (flush(st)) return -1;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    r.id = (const char *)sqlite3_column_text(s, 0);
    r.flow = (const char *)sqlite3_column_text(s, 1);
    r.ended = sqlite3_column_int(s, 2);
    r.waiting = sqlite3_column_int(s, 3);
    r.inputs = sqlite3_column_int64(s, 4);
    r.active = sqlite3_column_int64(s, 5);
    r.journal = sqlite3_column_int64(s, 6);
    r.parked = sqlite3_column_int(s, 7);
    r.note = (const char *)sqlite3_column_text(s, 8);
    if (fn(ud, &r) != 0) break;
  }
  sqlite3_reset(s);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : fail(st);
}

static int st_drop_session(fr_store *st, const char *id) {
  if (flush(st)) return -1;
  bind_text(st->q[Q_DROP_SESSION], 1, id);
  return done(st, Q_DROP_SESSION) || drop_rest(st, id) ? -1 : 0;
}

static void row_of(sqlite3_stmt *s, fr_store_session *r) {
  r->id = (const char *)sqlite3_column_text(s, 0);
  r->flow = (const char *)sqlite3_column_text(s, 1);
  r->args = sqlite3_column_blob(s, 2);
  r->args_len = (size_t)sqlite3_column_bytes(s, 2);
  r->nargs = sqlite3_column_int(s, 3);
  r->inputs = sqlite3_column_int64(s, 4);
  r->ended = sqlite3_column_int(s, 5);
  r->said = sqlite3_column_int64(s, 6);
  r->parked = sqlite3_column_int(s, 7);
}

/* The row is copied (st->row) and the statement reset at once: no read
** stays open between turns. */
static int st_get_session(fr_store *st, const char *id, fr_store_session *r) {
  sqlite3_stmt *s = st->q[Q_GET_SESSION];
  int rc;
  bind_text(s, 1, id);
  rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    size_t il, fl;
    char *p;
    row_of(s, r);
    il = strlen(r->id) + 1;
    fl = strlen(r->flow) + 1;
    if (!(p = realloc(st->row, il + fl + r->args_len + 1))) {
      sqlite3_reset(s);
      snprintf(st->err, sizeof st->err, "out of memory");
      return -1;
    }
    st->row = p;
    memcpy(p, r->id, il);
    memcpy(p + il, r->flow, fl);
    if (r->args_len) memcpy(p + il + fl, r->args, r->args_len);
    r->id = p;
    r->flow = p + il;
    r->args = p + il + fl;
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : fail(st);
}

static int st_each_session(fr_store *st, int all, int (*fn)(void *, const fr_store_session *),
                           void *ud) {
  sqlite3_stmt *s = st->q[all ? Q_EACH_UNFINISHED : Q_EACH_SESSION];
  fr_store_session r;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    row_of(s, &r);
    if (fn(ud, &r) != 0) break;
  }
  sqlite3_reset(s);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : fail(st);
}

/* Kept in memory until flush() (at the latest, the commit). */
static int st_append(fr_store *st, const char *id, const fr_store_rec *r) {
  const char *fp = r->fp ? r->fp : "";
  size_t idn = strlen(id) + 1, fpn = strlen(fp) + 1, atn = r->at ? strlen(r->at) + 1 : 0;
  size_t len = r->data ? r->len : 0;
  pending *p;
  char *q;
  if (st->npend == st->cap) {
    size_t cap = st->cap ? st->cap * 2 : 256;
    pending **more = realloc(st->pend, cap * sizeof *more);
    if (!more) goto oom;
    st->pend = more;
    st->cap = cap;
  }
  if (!(p = malloc(sizeof *p + idn + fpn + atn + len))) goto oom;
  q = (char *)(p + 1);
  p->seq = r->seq;
  p->kind = r->kind;
  p->id = memcpy(q, id, idn);
  p->fp = memcpy(q + idn, fp, fpn);
  p->at = r->at ? memcpy(q + idn + fpn, r->at, atn) : NULL;
  p->data = r->data ? q + idn + fpn + atn : NULL;
  if (len) memcpy(q + idn + fpn + atn, r->data, len);
  p->len = len;
  st->pend[st->npend++] = p;
  return st->npend >= 4096 ? flush(st) : 0;   /* a long turn: memory stays bounded */
oom:
  snprintf(st->err, sizeof st->err, "out of memory");
  return -1;
}

/* A group row's next record into *r; 0 at its end, -1 when damaged. */
static int get_u32(const char **p, const char *end, uint32_t *v) {
  if (end - *p < 4) return -1;
  memcpy(v, *p, 4);
  *p += 4;
  return 0;
}

static int get_bytes(const char **p, const char *end, const char **b, size_t *n, int cstr) {
  uint32_t len;
  if (get_u32(p, end, &len) != 0) return -1;
  if (len == 0xffffffffu) { *b = NULL; *n = 0; return 0; }
  if ((size_t)(end - *p) < len || (cstr && (len == 0 || (*p)[len - 1] != '\0'))) return -1;
  *b = *p;
  *n = len;
  *p += len;
  return 0;
}

static int next_grouped(const char **p, const char *end, fr_store_rec *r) {
  int64_t seq;
  uint32_t kind;
  size_t n;
  if (*p == end) return 0;
  if (end - *p < 8) return -1;
  memcpy(&seq, *p, 8);
  *p += 8;
  if (get_u32(p, end, &kind) != 0 || get_bytes(p, end, &r->fp, &n, 1) != 0 || !r->fp
      || get_bytes(p, end, &r->at, &n, 1) != 0 || get_bytes(p, end, &r->data, &r->len, 0) != 0)
    return -1;
  r->seq = seq;
  r->kind = (int)kind;
  return 1;
}

static int st_each_rec(fr_store *st, const char *id, int (*fn)(void *, const fr_store_rec *), void *ud) {
  sqlite3_stmt *s = st->q[Q_EACH_REC];
  fr_store_rec r;
  int rc, stop = 0;
  if (flush(st)) return -1;
  bind_text(s, 1, id);
  while (!stop && (rc = sqlite3_step(s)) == SQLITE_ROW) {
    r.seq = sqlite3_column_int64(s, 0);
    r.kind = sqlite3_column_int(s, 1);
    r.fp = (const char *)sqlite3_column_text(s, 2);
    r.at = (const char *)sqlite3_column_text(s, 3);
    r.data = sqlite3_column_blob(s, 4);
    r.len = (size_t)sqlite3_column_bytes(s, 4);
    if (r.kind < 0) {                   /* a group: its records in turn */
      const char *p = r.data, *end = r.data + r.len;
      int got = 0, want = -r.kind, n = 0;
      while (!stop && (got = next_grouped(&p, end, &r)) == 1) stop = fn(ud, &r) != 0, n++;
      if (!stop && (got < 0 || n != want)) {
        snprintf(st->err, sizeof st->err, "store %s: session %s: a damaged journal row", st->path, id);
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        return -1;
      }
    } else {
      stop = fn(ud, &r) != 0;
    }
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return stop || rc == SQLITE_DONE ? 0 : fail(st);
}

static int st_put_input(fr_store *st, const char *id, long long n, const char *text, size_t len) {
  sqlite3_stmt *s = st->q[Q_PUT_INPUT];
  bind_text(s, 1, id);
  sqlite3_bind_int64(s, 2, n);
  if (text) sqlite3_bind_blob(s, 3, len ? text : "", (int)len, SQLITE_STATIC);
  if (done(st, Q_PUT_INPUT)) return -1;
  bind_text(st->q[Q_INPUTS], 1, id);
  sqlite3_bind_int64(st->q[Q_INPUTS], 2, n);
  return done(st, Q_INPUTS);
}

static int st_take_input(fr_store *st, const char *id, long long n) {
  bind_text(st->q[Q_TAKE_INPUT], 1, id);
  sqlite3_bind_int64(st->q[Q_TAKE_INPUT], 2, n);
  return done(st, Q_TAKE_INPUT);
}

static int st_each_input(fr_store *st, const char *id,
                         int (*fn)(void *, long long, const char *, size_t), void *ud) {
  sqlite3_stmt *s = st->q[Q_EACH_INPUT];
  int rc;
  bind_text(s, 1, id);
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    const char *t = sqlite3_column_type(s, 1) == SQLITE_NULL ? NULL : sqlite3_column_blob(s, 1);
    if (fn(ud, sqlite3_column_int64(s, 0), t ? t : (sqlite3_column_type(s, 1) == SQLITE_NULL ? NULL : ""),
           (size_t)sqlite3_column_bytes(s, 1)) != 0)
      break;
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : fail(st);
}

static int st_put_output(fr_store *st, const char *id, long long seq, int kind, int how,
                         const char *text, size_t len) {
  sqlite3_stmt *s = st->q[Q_PUT_OUTPUT];
  bind_text(s, 1, id);
  sqlite3_bind_int64(s, 2, seq);
  sqlite3_bind_int(s, 3, kind);
  sqlite3_bind_int(s, 4, how);
  if (text) sqlite3_bind_blob(s, 5, len ? text : "", (int)len, SQLITE_STATIC);
  return done(st, Q_PUT_OUTPUT);
}

static int st_drop_output(fr_store *st, const char *id, long long seq) {
  bind_text(st->q[Q_DROP_OUTPUT], 1, id);
  sqlite3_bind_int64(st->q[Q_DROP_OUTPUT], 2, seq);
  if (done(st, Q_DROP_OUTPUT)) return -1;
  bind_text(st->q[Q_SAID], 1, id);
  sqlite3_bind_int64(st->q[Q_SAID], 2, seq);
  return done(st, Q_SAID);
}

static int st_each_output(fr_store *st, int (*fn)(void *, const char *, long long, int, int,
                                                  const char *, size_t), void *ud) {
  sqlite3_stmt *s = st->q[Q_EACH_OUTPUT];
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    const char *t = sqlite3_column_type(s, 4) == SQLITE_NULL ? NULL : sqlite3_column_blob(s, 4);
    if (fn(ud, (const char *)sqlite3_column_text(s, 0), sqlite3_column_int64(s, 1),
           sqlite3_column_int(s, 2), sqlite3_column_int(s, 3),
           t ? t : (sqlite3_column_type(s, 4) == SQLITE_NULL ? NULL : ""),
           (size_t)sqlite3_column_bytes(s, 4)) != 0)
      break;
  }
  sqlite3_reset(s);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : fail(st);
}

static int st_set_waiting(fr_store *st, const char *id, int waiting) {
  bind_text(st->q[Q_WAITING], 1, id);
  sqlite3_bind_int(st->q[Q_WAITING], 2, waiting);
  return done(st, Q_WAITING);
}

/* A group row of id that holds a record in the cut: its seq and bytes. */
typedef struct cut_group { long long seq; char *bytes; size_t len; } cut_group;

/* The records of id after `after` and before `before` go: those still in
** memory, those of single rows, and those inside groups (a group that
** holds some is taken apart: the records it keeps go back to memory, to
** be written at the next flush). */
static int st_cut(fr_store *st, const char *id, long long after, long long before) {
  sqlite3_stmt *s = st->q[Q_GROUPS];
  cut_group *g = NULL;
  size_t k = 0, ng = 0, cap = 0;
  int rc = 0, step;
  for (size_t i = 0; i < st->npend; i++) {   /* not written yet */
    pending *p = st->pend[i];
    if (strcmp(p->id, id) == 0 && p->seq > after && p->seq < before) free(p);
    else st->pend[k++] = p;
  }
  st->npend = k;
  bind_text(s, 1, id);
  sqlite3_bind_int64(s, 2, before);
  while ((step = sqlite3_step(s)) == SQLITE_ROW) {   /* groups that may hold some */
    const char *b = sqlite3_column_blob(s, 1), *p = b, *end;
    size_t n = (size_t)sqlite3_column_bytes(s, 1);
    fr_store_rec r;
    int got, hit = 0;
    for (end = b + n; (got = next_grouped(&p, end, &r)) == 1;)
      if (r.seq > after && r.seq < before) hit = 1;
    if (!hit || got < 0) continue;      /* a damaged one: each_rec says so */
    if (ng == cap) {
      cut_group *more = realloc(g, (cap = cap ? cap * 2 : 4) * sizeof *g);
      if (!more) { rc = -1; break; }
      g = more;
    }
    if (!(g[ng].bytes = malloc(n ? n : 1))) { rc = -1; break; }
    memcpy(g[ng].bytes, b, n);
    g[ng].len = n;
    g[ng++].seq = sqlite3_column_int64(s, 0);
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  if (rc == 0 && step != SQLITE_DONE && step != SQLITE_ROW) rc = fail(st);
  else if (rc != 0) snprintf(st->err, sizeof st->err, "out of memory");
  for (size_t i = 0; i < ng; i++) {
    const char *p = g[i].bytes, *end = g[i].bytes + g[i].len;
    fr_store_rec r;
    if (rc == 0) {
      bind_text(st->q[Q_DROP_ROW], 1, id);
      sqlite3_bind_int64(st->q[Q_DROP_ROW], 2, g[i].seq);
      rc = done(st, Q_DROP_ROW);
    }
    while (rc == 0 && next_grouped(&p, end, &r) == 1)
      if (!(r.seq > after && r.seq < before)) rc = st_append(st, id, &r);
    free(g[i].bytes);
  }
  free(g);
  if (rc != 0) return -1;
  bind_text(st->q[Q_CUT], 1, id);
  sqlite3_bind_int64(st->q[Q_CUT], 2, after);
  sqlite3_bind_int64(st->q[Q_CUT], 3, before);
  return done(st, Q_CUT);
}

static int st_purge_ended(fr_store *st, long long before) {
  sqlite3_bind_int64(st->q[Q_PURGE], 1, before);
  return done(st, Q_PURGE);
}

static const char *st_errmsg(fr_store *st) { return st->err; }
static const char *st_identity(fr_store *st) { return st->id; }

const fr_store_methods fr_store_sqlite = {
  "sqlite", st_open, st_close, st_begin, st_commit, st_rollback,
  st_put_session, st_end_session, st_drop_session, st_get_session, st_each_session,
  st_append, st_each_rec, st_put_input, st_take_input, st_each_input,
  st_put_output, st_drop_output, st_each_output, st_errmsg, st_identity, st_set_waiting,
  st_each_listed, st_drop_outbox, st_park, st_each_silent, st_cut,
  st_purge_ended,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,   /* one host only */
};
