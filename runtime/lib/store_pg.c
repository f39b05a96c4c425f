/*
** store_pg.c -- the store on PostgreSQL (store.h), shared by many hosts
** (docs/scale-out.md). PATH is a libpq URI (postgresql://... or
** postgres://...); a password in it is never printed (***).
**
** Tables (prefixed flowrun_, so they can live in a user's database; made
** at the first open under an advisory lock, so two hosts starting at once
** do not race):
**   meta(k, v)        'id': random hex made once (Idempotency-Keys);
**                     'format': 1 (a newer one is refused)
**   sessions          one row each, as SQLite's, plus part (fr_partition of
**                     the id) and reply_to (the host that stored the last
**                     message: where outputs go)
**   journal           (session, seq) a record a row, with the node and the
**                     epoch that wrote it (the cluster test reads them)
**   inbox             (session, n) messages stored and not yet taken
**   outbox            (session, seq) outputs, with node (the host they are
**                     addressed to) and given; k orders them as made
**   leases            (part, node, epoch, expires): 256 rows made with the
**                     schema; times are PostgreSQL's clock in unix ms
**   nodes             (node, seen): hosts' heartbeats
**   takeovers         (part, epoch, node, at): each take of a partition
**
** Fencing. A session belongs to one partition, a partition to one host at
** a time, through a lease carrying an epoch that grows by one at each
** take (Temporal's and Cadence's shards: a range id per shard owner). A
** lease alone does not make one owner: a host that stalls (a pause, a
** slow disk) past its lease still believes it owns it and writes, and
** the new owner writes too -- rasa#9213, a lock store without fencing,
** let duplicates through that way. So every write of a turn checks, once
** per partition per transaction, under FOR SHARE on the lease row, that
** this host holds the partition at the epoch it took it with; else the
** write fails and the transaction with it. The share lock makes a
** takeover's UPDATE of that row wait for the transaction: what the old
** owner committed is what the new owner restores, and after the takeover
** every write of the old owner is refused.
**
** Leases (leases(), a heartbeat, one transaction): this host's row in
** nodes is renewed; share = ceil(256 / hosts seen within a lease); its
** leases are renewed; below its share it takes free or expired partitions
** (epoch + 1, logged in takeovers), above it gives back idle ones. A host
** that stops heartbeating loses its partitions a lease later. A take
** skips rows locked by another transaction (a fenced write's share lock,
** another host's take): taken at a later heartbeat, never waited for.
**
** Messages: any host stores them (send, start: their own transaction, not
** fenced; the session row locked FOR UPDATE numbers them), sets reply_to
** to itself and NOTIFYs flowrun_in. Outputs (put_output) are addressed to
** reply_to and that host NOTIFYed; it takes them (each_mine marks them
** given; drop_output too, unfenced: the host given them need not own the
** session). A message sent again re-addresses them, given or not, to its
** sender: replies are at least once. Without set_node (a tool writing from
** outside) nothing is fenced and outputs are addressed to nobody.
**
** Wakes: a dedicated connection LISTENs on flowrun_in (a message for a
** session: payload its id) and "flowrun_out:NODE" (outputs addressed to
** NODE; a channel's name has 63 bytes, so a node's has 51 at most); fd()
** is its socket, read by wakes() only, so no notification is swallowed by
** the working connection's queries. It also holds an advisory lock on the
** node's name: two live processes never share one.
*/
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "store.h"

#define FORMAT 1
#define LOCK_KEY 1718382455             /* "flow": the advisory locks' class */
#define NOW "(extract(epoch from clock_timestamp()) * 1000)::bigint"
/* said: what the host was given, here or on the host the outputs were
** addressed to (it marks them given: each_mine) */
#define ROW "id, flow, args, nargs, inputs, ended, greatest(said, (SELECT coalesce(max(o.seq), 0)" \
  " FROM flowrun_outbox o WHERE o.session = id AND o.given)), parked"

enum {
  Q_FENCE, Q_PUT_SESSION, Q_END_SESSION, Q_DROP_SESSION, Q_GET_SESSION, Q_EACH_SESSION,
  Q_EACH_MINE_SESSION, Q_EACH_UNFINISHED, Q_APPEND, Q_EACH_REC, Q_PUT_INPUT, Q_TAKE_INPUT,
  Q_EACH_INPUT, Q_PUT_OUTPUT, Q_DROP_OUTPUT, Q_EACH_OUTPUT, Q_WAITING, Q_LIST, Q_DROP_OUTBOX,
  Q_PARK, Q_SILENT, Q_CUT, Q_PURGE, Q_PURGE_MINE, Q_SEND_LOCK, Q_SEND_STORE, Q_READDRESS,
  Q_START, Q_START_CLEAN, Q_HEARTBEAT, Q_RENEW, Q_TAKE, Q_GIVE, Q_MINE, Q_IN_PART, Q_COUNT
};

static const char *const sql[Q_COUNT] = {
  /* Q_FENCE */
  "SELECT node, epoch FROM flowrun_leases WHERE part = $1 FOR SHARE",
  /* Q_PUT_SESSION: insert or replace; reply_to kept, and the messages
     another host stored for an unfinished one (start, then send, before
     its owner ran it) still counted */
  "INSERT INTO flowrun_sessions(id, part, flow, args, nargs, inputs, ended, said, waiting,"
  "  active, parked, note, reply_to) VALUES ($1, $2, $3, $4, $5, $6, 0, 0, 0, " NOW ", 0, NULL, $7)"
  " ON CONFLICT (id) DO UPDATE SET flow = EXCLUDED.flow, args = EXCLUDED.args,"
  "  nargs = EXCLUDED.nargs, inputs = CASE WHEN flowrun_sessions.ended = 0"
  "   THEN greatest(flowrun_sessions.inputs, EXCLUDED.inputs) ELSE EXCLUDED.inputs END, ended = 0, said = 0, waiting = 0,"
  "  active = EXCLUDED.active, parked = 0, note = NULL",
  /* Q_END_SESSION */
  "WITH j AS (DELETE FROM flowrun_journal WHERE session = $1),"
  " i AS (DELETE FROM flowrun_inbox WHERE session = $1)"
  " UPDATE flowrun_sessions SET ended = 1, waiting = 0, active = " NOW " WHERE id = $1",
  /* Q_DROP_SESSION */
  "WITH j AS (DELETE FROM flowrun_journal WHERE session = $1),"
  " i AS (DELETE FROM flowrun_inbox WHERE session = $1),"
  " o AS (DELETE FROM flowrun_outbox WHERE session = $1)"
  " DELETE FROM flowrun_sessions WHERE id = $1",
  /* Q_GET_SESSION */
  "SELECT " ROW " FROM flowrun_sessions WHERE id = $1",
  /* Q_EACH_SESSION */
  "SELECT " ROW " FROM flowrun_sessions WHERE ended = 0 AND waiting = 0 AND parked = 0",
  /* Q_EACH_MINE_SESSION: in the partitions this host holds */
  "SELECT " ROW " FROM flowrun_sessions WHERE ended = 0 AND waiting = 0 AND parked = 0"
  "  AND part = ANY($1::int[])",
  /* Q_EACH_UNFINISHED */
  "SELECT " ROW " FROM flowrun_sessions WHERE ended = 0",
  /* Q_APPEND: the transaction's records, in one statement */
  "INSERT INTO flowrun_journal(session, seq, kind, fp, at, result, node, epoch)"
  " SELECT s, q, k, f, a, r, $7, e FROM unnest($1::text[], $2::bigint[], $3::int[],"
  "  $4::bytea[], $5::bytea[], $6::bytea[], $8::bigint[]) AS u(s, q, k, f, a, r, e)",
  /* Q_EACH_REC */
  "SELECT seq, kind, fp, at, result FROM flowrun_journal WHERE session = $1 ORDER BY seq",
  /* Q_PUT_INPUT */
  "WITH i AS (INSERT INTO flowrun_inbox(session, n, text) VALUES ($1, $2, $3))"
  " UPDATE flowrun_sessions SET inputs = $2, waiting = 0, active = " NOW
  " WHERE id = $1 AND inputs < $2",
  /* Q_TAKE_INPUT */
  "DELETE FROM flowrun_inbox WHERE session = $1 AND n = $2",
  /* Q_EACH_INPUT */
  "SELECT n, text FROM flowrun_inbox WHERE session = $1 ORDER BY n",
  /* Q_PUT_OUTPUT: addressed to the session's reply_to; that host woken
     when it is another ($6: this host) */
  "WITH s AS (SELECT reply_to FROM flowrun_sessions WHERE id = $1 FOR SHARE),"
  " o AS (INSERT INTO flowrun_outbox(session, seq, kind, how, text, node, given)"
  "  VALUES ($1, $2, $3, $4, $5, CASE WHEN $6::text IS NULL THEN NULL ELSE (SELECT reply_to FROM s) END, false)"
  "  ON CONFLICT (session, seq) DO UPDATE SET kind = EXCLUDED.kind, how = EXCLUDED.how,"
  "   text = EXCLUDED.text, node = EXCLUDED.node, given = false RETURNING node)"
  " SELECT node IS NOT NULL AND node <> $6,"
  "  CASE WHEN node IS NOT NULL AND node <> $6 THEN pg_notify('flowrun_out:' || node, $1)::text END"
  " FROM o",
  /* Q_DROP_OUTPUT: given, kept (a message sent again gives it again) */
  "WITH o AS (UPDATE flowrun_outbox SET given = true WHERE session = $1 AND seq = $2)"
  " UPDATE flowrun_sessions SET said = $2 WHERE id = $1 AND said < $2",
  /* Q_EACH_OUTPUT: not given, addressed to this host ($1; NULL: any) */
  "SELECT session, seq, kind, how, text FROM flowrun_outbox"
  " WHERE NOT given AND ($1::text IS NULL OR node = $1) ORDER BY k",
  /* Q_WAITING: on a shared store ($3: this host), not waiting when a
     message is stored and not taken (another host stored it; its wake
     has not come yet) */
  "UPDATE flowrun_sessions SET waiting = CASE WHEN $2 = 1 AND $3::text IS NOT NULL AND EXISTS"
  "  (SELECT 1 FROM flowrun_inbox WHERE session = $1) THEN 0 ELSE $2 END,"
  "  active = " NOW " WHERE id = $1",
  /* Q_LIST */
  "SELECT id, flow, ended, waiting, inputs, active,"
  "  (SELECT count(*) FROM flowrun_journal j WHERE j.session = s.id), parked, note"
  " FROM flowrun_sessions s ORDER BY active DESC",
  /* Q_DROP_OUTBOX */
  "DELETE FROM flowrun_outbox WHERE session = $1",
  /* Q_PARK */
  "UPDATE flowrun_sessions SET parked = $2, note = $3, waiting = 0 WHERE id = $1",
  /* Q_SILENT ($2: the partitions held; NULL: all) */
  "SELECT id FROM flowrun_sessions WHERE waiting = 1 AND ended = 0 AND parked = 0"
  " AND active < $1 AND ($2::int[] IS NULL OR part = ANY($2::int[])) LIMIT 1000",
  /* Q_CUT */
  "DELETE FROM flowrun_journal WHERE session = $1 AND seq > $2 AND seq < $3",
  /* Q_PURGE */
  "WITH s AS (DELETE FROM flowrun_sessions WHERE id IN (SELECT id FROM flowrun_sessions"
  "  WHERE ended = 1 AND active < $1 LIMIT 1000) RETURNING id)"
  " DELETE FROM flowrun_outbox WHERE session IN (SELECT id FROM s)",
  /* Q_PURGE_MINE: in the partitions held at their epochs ($3, $4), fenced
     in the statement itself */
  "WITH l AS (SELECT l.part FROM flowrun_leases l JOIN unnest($3::int[], $4::bigint[])"
  "  AS h(part, epoch) ON l.part = h.part AND l.epoch = h.epoch WHERE l.node = $2"
  "  FOR SHARE OF l),"
  " s AS (DELETE FROM flowrun_sessions WHERE id IN (SELECT id FROM flowrun_sessions"
  "  WHERE ended = 1 AND active < $1 AND part IN (SELECT part FROM l) LIMIT 1000) RETURNING id)"
  " DELETE FROM flowrun_outbox WHERE session IN (SELECT id FROM s)",
  /* Q_SEND_LOCK */
  "SELECT inputs, ended FROM flowrun_sessions WHERE id = $1 FOR UPDATE",
  /* Q_SEND_STORE: the last message's outputs go, the owner is woken */
  "WITH o AS (DELETE FROM flowrun_outbox WHERE session = $1),"
  " i AS (INSERT INTO flowrun_inbox(session, n, text) VALUES ($1, $2, $3))"
  " UPDATE flowrun_sessions SET inputs = $2, waiting = 0, active = " NOW ", reply_to = $4,"
  "  said = greatest(said, (SELECT coalesce(max(seq), 0) FROM flowrun_outbox"
  "   WHERE session = $1 AND given))"   /* what went is what was given */
  " WHERE id = $1 RETURNING pg_notify('flowrun_in', $1)::text",
  /* Q_READDRESS: the session's outputs to this host ($2), given again */
  "WITH o AS (UPDATE flowrun_outbox SET node = $2, given = false WHERE session = $1)"
  " UPDATE flowrun_sessions SET reply_to = $2 WHERE id = $1"
  " RETURNING pg_notify('flowrun_out:' || $2, $1)::text",
  /* Q_START: made, or made anew when ended; no row returned: an
     unfinished one has the id (locked by the statement) */
  "INSERT INTO flowrun_sessions(id, part, flow, args, nargs, inputs, ended, said, waiting,"
  "  active, parked, note, reply_to) VALUES ($1, $2, $3, $4, $5, $6, 0, 0, 0, " NOW ", 0, NULL, $7)"
  " ON CONFLICT (id) DO UPDATE SET flow = EXCLUDED.flow, args = EXCLUDED.args,"
  "  nargs = EXCLUDED.nargs, inputs = EXCLUDED.inputs, ended = 0, said = 0, waiting = 0,"
  "  active = EXCLUDED.active, parked = 0, note = NULL, reply_to = EXCLUDED.reply_to"
  "  WHERE flowrun_sessions.ended = 1"
  " RETURNING xmax = 0, pg_notify('flowrun_in', $1)::text",
  /* Q_START_CLEAN: what an ended session left */
  "WITH j AS (DELETE FROM flowrun_journal WHERE session = $1),"
  " i AS (DELETE FROM flowrun_inbox WHERE session = $1)"
  " DELETE FROM flowrun_outbox WHERE session = $1",
  /* Q_HEARTBEAT: this host seen; the hosts seen within a lease, counted;
     those not seen for 1000 leases forgotten */
  "WITH u AS (INSERT INTO flowrun_nodes(node, seen) VALUES ($1, " NOW ")"
  "  ON CONFLICT (node) DO UPDATE SET seen = EXCLUDED.seen),"
  " d AS (DELETE FROM flowrun_nodes WHERE seen < " NOW " - 1000 * $2)"
  " SELECT count(*) + 1 FROM flowrun_nodes WHERE seen > " NOW " - $2 AND node <> $1",
  /* Q_RENEW ($3: the partitions held) */
  "UPDATE flowrun_leases SET expires = " NOW " + $2 WHERE node = $1 AND part = ANY($3::int[])"
  " RETURNING part, epoch",
  /* Q_TAKE: free, expired, or this node's from before ($4: held now),
     from $5 on (hosts start at different places), at most $3; each take
     logged. SKIP LOCKED: a row another host is taking, renewing, or
     holding FOR SHARE for a write (the old owner's turn, which then
     commits before anyone takes the partition) is left for the next
     heartbeat; so takes never wait, and two hosts taking at once cannot
     deadlock. */
  "WITH t AS (UPDATE flowrun_leases SET node = $1, epoch = epoch + 1, expires = " NOW " + $2"
  "  WHERE part IN (SELECT part FROM flowrun_leases WHERE node IS NULL OR expires < " NOW
  "   OR (node = $1 AND NOT part = ANY($4::int[])) ORDER BY (part + $5) % 256 LIMIT $3"
  "   FOR UPDATE SKIP LOCKED)"
  "  AND (node IS NULL OR expires < " NOW " OR (node = $1 AND NOT part = ANY($4::int[])))"
  "  RETURNING part, epoch)"
  " INSERT INTO flowrun_takeovers(part, epoch, node, at) SELECT part, epoch, $1, " NOW
  " FROM t RETURNING part, epoch",
  /* Q_GIVE */
  "UPDATE flowrun_leases SET node = NULL, expires = 0 WHERE node = $1 AND part = ANY($2::int[])",
  /* Q_MINE: this host's outputs, marked given (sessions' rows are not
     touched: their owners lock them in their turns; ROW's said reads the
     marks) */
  "WITH u AS (UPDATE flowrun_outbox SET given = true WHERE node = $1 AND NOT given"
  "  RETURNING session, seq, kind, how, text)"
  " SELECT session, seq, kind, how, text FROM u ORDER BY session, seq",
  /* Q_IN_PART */
  "SELECT " ROW " FROM flowrun_sessions s WHERE part = $1 AND ended = 0 AND parked = 0"
  " AND (waiting = 0 OR EXISTS (SELECT 1 FROM flowrun_inbox i WHERE i.session = s.id))",
};

static const char schema[] =
  "CREATE TABLE IF NOT EXISTS flowrun_meta(k text PRIMARY KEY, v text NOT NULL);"
  "INSERT INTO flowrun_meta(k, v) VALUES"
  " ('id', substr(md5(random()::text || clock_timestamp()::text), 1, 16)), ('format', '1')"
  " ON CONFLICT (k) DO NOTHING;"
  "CREATE TABLE IF NOT EXISTS flowrun_sessions(id text PRIMARY KEY, part int NOT NULL,"
  "  flow text NOT NULL, args bytea NOT NULL, nargs int NOT NULL, inputs bigint NOT NULL,"
  "  ended int NOT NULL, said bigint NOT NULL DEFAULT 0, waiting int NOT NULL DEFAULT 0,"
  "  active bigint NOT NULL DEFAULT 0, parked int NOT NULL DEFAULT 0, note text, reply_to text);"
  "CREATE INDEX IF NOT EXISTS flowrun_sessions_part ON flowrun_sessions(part) WHERE ended = 0;"
  "CREATE INDEX IF NOT EXISTS flowrun_sessions_ended ON flowrun_sessions(active) WHERE ended = 1;"
  "CREATE INDEX IF NOT EXISTS flowrun_sessions_silent ON flowrun_sessions(active)"
  "  WHERE waiting = 1 AND ended = 0 AND parked = 0;"
  "CREATE TABLE IF NOT EXISTS flowrun_journal(session text NOT NULL, seq bigint NOT NULL,"
  "  kind int NOT NULL, fp bytea NOT NULL, at bytea, result bytea, node text, epoch bigint,"
  "  PRIMARY KEY(session, seq));"
  "CREATE TABLE IF NOT EXISTS flowrun_inbox(session text NOT NULL, n bigint NOT NULL, text bytea,"
  "  PRIMARY KEY(session, n));"
  "CREATE TABLE IF NOT EXISTS flowrun_outbox(k bigint GENERATED ALWAYS AS IDENTITY,"
  "  session text NOT NULL, seq bigint NOT NULL, kind int NOT NULL, how int NOT NULL,"
  "  text bytea, node text, given boolean NOT NULL DEFAULT false, PRIMARY KEY(session, seq));"
  "CREATE INDEX IF NOT EXISTS flowrun_outbox_node ON flowrun_outbox(node) WHERE NOT given;"
  "CREATE TABLE IF NOT EXISTS flowrun_leases(part int PRIMARY KEY, node text,"
  "  epoch bigint NOT NULL, expires bigint NOT NULL);"
  "INSERT INTO flowrun_leases(part, node, epoch, expires)"
  " SELECT g, NULL, 0, 0 FROM generate_series(0, 255) g ON CONFLICT (part) DO NOTHING;"
  "CREATE TABLE IF NOT EXISTS flowrun_nodes(node text PRIMARY KEY, seen bigint NOT NULL);"
  "CREATE TABLE IF NOT EXISTS flowrun_takeovers(part int NOT NULL, epoch bigint NOT NULL,"
  "  node text NOT NULL, at bigint NOT NULL, PRIMARY KEY(part, epoch));";

/* A journal record appended in the open transaction, not yet inserted:
** one allocation holds it, its session's id, fp, at and data. */
typedef struct pending {
  long long seq;
  int kind, part;
  const char *id, *fp, *at, *data;      /* at, data: NULL when the record has none */
  size_t len;
} pending;

struct fr_store {
  PGconn *db;
  PGconn *listen;                       /* set_node: LISTEN; fd() */
  char *path;                           /* the URL, its password *** */
  char *url;                            /* as given: the wakes' connection; never printed */
  char id[40];
  char *node;                           /* NULL: no node, no fencing */
  long long lease_ms;
  long long held[FR_PARTITIONS];        /* the epoch a partition was taken at; 0: not held */
  unsigned char fenced[FR_PARTITIONS];  /* checked in this transaction */
  unsigned char gave[FR_PARTITIONS];    /* given back by the last leases() */
  char state[6];                        /* the last error's SQLSTATE */
  int in_txn;
  PGresult *row;                        /* get_session's */
  pending **pend;
  size_t npend, cap;
  char err[600];
};

/* ---- messages ---- */

/* URL with a password (user:PASS@ or password=PASS) replaced by ***. */
static char *redact(const char *url) {
  size_t n = strlen(url);
  char *out = malloc(2 * n + 8), *q = out;   /* each *** at most doubles what it hides */
  const char *p = url, *auth = strstr(url, "://"), *end, *at = NULL, *colon = NULL;
  if (!out) return NULL;
  if (auth) {
    auth += 3;
    end = auth + strcspn(auth, "/?#");
    for (const char *s = auth; s < end; s++) if (*s == '@') at = s;
    if (at) colon = memchr(auth, ':', (size_t)(at - auth));
    if (colon) {
      memcpy(q, url, (size_t)(colon + 1 - url));
      q += colon + 1 - url;
      memcpy(q, "***", 3);
      q += 3;
      p = at;
    }
  }
  while (*p) {                          /* password=... in the query */
    if ((p == url || p[-1] == '?' || p[-1] == '&') && strncmp(p, "password=", 9) == 0) {
      memcpy(q, "password=***", 12);
      q += 12;
      p += 9;
      p += strcspn(p, "&#");
      continue;
    }
    *q++ = *p++;
  }
  *q = '\0';
  return out;
}

/* Every occurrence of secret (len bytes) in buf (size n) replaced by ***
** (cut at n when that is longer). */
static void hide(char *buf, size_t n, const char *secret, size_t len) {
  size_t from = 0, pos, rest;
  char *at;
  if (!len) return;
  while ((at = memmem(buf + from, strlen(buf + from), secret, len))) {
    pos = (size_t)(at - buf);
    if (pos + 3 >= n) {                 /* no room for *** */
      buf[pos] = '\0';
      return;
    }
    rest = strlen(at + len);
    if (pos + 3 + rest >= n) rest = n - 1 - pos - 3;
    memmove(buf + pos + 3, at + len, rest);
    buf[pos + 3 + rest] = '\0';
    memcpy(buf + pos, "***", 3);
    from = pos + 3;                     /* a secret of stars is not found again */
  }
}

/* hide() for a secret as written in the URL and percent-decoded. */
static void hide_both(char *buf, size_t n, const char *p, size_t len) {
  char dec[256];
  size_t k = 0;
  hide(buf, n, p, len);
  for (size_t i = 0; i < len && k < sizeof dec; i++) {
    unsigned v;
    if (p[i] == '%' && i + 2 < len && sscanf(p + i + 1, "%2x", &v) == 1) dec[k++] = (char)v, i += 2;
    else dec[k++] = p[i];
  }
  if (k < sizeof dec) hide(buf, n, dec, k);
}

/* libpq's messages may quote the URL, or a token of it (a bad
** percent-encoding, an IPv6 address): the URL's passwords are taken out
** of msg (size n). */
static void scrub(char *msg, size_t n, const char *url) {
  const char *auth = strstr(url, "://"), *end, *at = NULL, *colon = NULL, *p;
  if (auth) {
    auth += 3;
    end = auth + strcspn(auth, "/?#");
    for (const char *c = auth; c < end; c++) if (*c == '@') at = c;
    if (at && (colon = memchr(auth, ':', (size_t)(at - auth))))
      hide_both(msg, n, colon + 1, (size_t)(at - colon - 1));
  }
  for (p = url; (p = strstr(p, "password=")); p += 9)
    if (p == url || p[-1] == '?' || p[-1] == '&')
      hide_both(msg, n, p + 9, strcspn(p + 9, "&#"));
}

/* The first line of s, at most n bytes, into buf, less a severity
** ("FATAL:  ", "ERROR:  ") libpq puts before the server's message. */
static void first_line(char *buf, size_t n, const char *s) {
  size_t len;
  if (s && (!strncmp(s, "FATAL:  ", 8) || !strncmp(s, "ERROR:  ", 8))) s += 8;
  len = s ? strcspn(s, "\r\n") : 0;
  if (len >= n) len = n - 1;
  if (len) memcpy(buf, s, len);
  buf[len] = '\0';
}

/* errmsg from a failed result (NULL: none came) or the connection. */
static int fail(fr_store *st, const PGresult *r) {
  char line[400];
  const char *m = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  snprintf(st->state, sizeof st->state, "%s", code ? code : "");
  if (PQstatus(st->db) == CONNECTION_BAD) {
    first_line(line, sizeof line, PQerrorMessage(st->db));
    snprintf(st->err, sizeof st->err, "store %s: the connection to PostgreSQL was lost%s%s%s",
             st->path, *line ? ": " : "", line,
             st->node && strstr(line, "idle-in-transaction")
             ? " (PostgreSQL ends the transaction of a host paused past its lease:"
               " this host is fenced out)" : "");
    return -1;
  }
  first_line(line, sizeof line, m ? m : r && *PQresultErrorMessage(r) ? PQresultErrorMessage(r)
                                    : PQerrorMessage(st->db));
  snprintf(st->err, sizeof st->err, "store %s: %s", st->path, *line ? line : "failed");
  return -1;
}

/* errmsg says so; -1. */
static int oom(fr_store *st) {
  snprintf(st->err, sizeof st->err, "out of memory");
  return -1;
}

static void quiet(void *ud, const char *msg) { (void)ud; (void)msg; }   /* no NOTICE on stderr */

/* ---- parameters and results ---- */

enum { MAXP = 8 };

typedef struct params {
  int n;
  const char *v[MAXP];
  int len[MAXP], fmt[MAXP];
  char num[MAXP][24];
} params;

/* A text parameter (NULL: SQL's NULL), as text. */
static void p_text(params *p, const char *s) {
  p->v[p->n] = s;
  p->len[p->n] = 0;
  p->fmt[p->n++] = 0;
}

/* An integer parameter, as text (the statement's cast types it). */
static void p_int(params *p, long long v) {
  snprintf(p->num[p->n], sizeof p->num[0], "%lld", v);
  p_text(p, p->num[p->n]);
}

/* Bytes (binary: NULs and all); NULL is SQL's NULL. */
static void p_bytes(params *p, const char *b, size_t n) {
  p->v[p->n] = b ? (n ? b : "") : NULL;
  p->len[p->n] = (int)n;
  p->fmt[p->n++] = 1;
}

/* Runs prepared statement q; its result (binary columns), or NULL with
** errmsg set. */
static PGresult *run(fr_store *st, int q, const params *p) {
  char name[8];
  PGresult *r;
  ExecStatusType s;
  snprintf(name, sizeof name, "q%d", q);
  r = PQexecPrepared(st->db, name, p ? p->n : 0, p ? p->v : NULL, p ? p->len : NULL,
                     p ? p->fmt : NULL, 1);
  s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) return r;
  fail(st, r);
  PQclear(r);
  return NULL;
}

/* Runs q for its effect: 0, or -1. */
static int done(fr_store *st, int q, const params *p) {
  PGresult *r = run(st, q, p);
  PQclear(r);
  return r ? 0 : -1;
}

/* A binary integer column (2, 4 or 8 bytes, big-endian; bool: 1). */
static long long num(const PGresult *r, int i, int c) {
  const unsigned char *v = (const unsigned char *)PQgetvalue(r, i, c);
  int n = PQgetlength(r, i, c);
  uint64_t u = 0;
  if (PQgetisnull(r, i, c)) return 0;
  for (int k = 0; k < n; k++) u = u << 8 | v[k];
  if (n == 2) return (int16_t)u;
  if (n == 4) return (int32_t)u;
  return (long long)u;
}

/* A column's bytes, NULL for SQL's NULL. */
static const char *val(const PGresult *r, int i, int c) {
  return PQgetisnull(r, i, c) ? NULL : PQgetvalue(r, i, c);
}

/* An array literal ("{1,2,...}") of the partitions i with v[i] != 0, or
** (values 1) of those v[i]: the partitions held, their epochs. */
static char *list_of(const long long v[], int values) {
  char *s = malloc(FR_PARTITIONS * 21 + 3), *q = s;
  if (!s) return NULL;
  *q++ = '{';
  for (int i = 0; i < FR_PARTITIONS; i++)
    if (v[i]) q += sprintf(q, "%s%lld", q[-1] == '{' ? "" : ",", values ? v[i] : i);
  *q++ = '}';
  *q = '\0';
  return s;
}

/* ---- fencing ---- */

/* Before a write touching partition part: once per transaction, under a
** share lock on its lease row, that this host holds it at its epoch. */
static int fence(fr_store *st, int part) {
  params p = { 0 };
  PGresult *r;
  const char *node;
  long long epoch;
  if (!st->node || st->fenced[part]) return 0;
  p_int(&p, part);
  if (!(r = run(st, Q_FENCE, &p))) return -1;
  node = PQntuples(r) ? val(r, 0, 0) : NULL;
  epoch = PQntuples(r) ? num(r, 0, 1) : 0;
  if (st->held[part] && node && strcmp(node, st->node) == 0 && epoch == st->held[part]) {
    PQclear(r);
    st->fenced[part] = 1;
    return 0;
  }
  PQclear(r);
  if (st->held[part])
    snprintf(st->err, sizeof st->err, "store %s: partition %d was taken over by another host "
             "(epoch %lld, this host had %lld): this host is fenced out",
             st->path, part, epoch, st->held[part]);
  else
    snprintf(st->err, sizeof st->err, "store %s: partition %d is not held by this host "
             "(epoch %lld): this host is fenced out", st->path, part, epoch);
  return -1;
}

/* fence() for session id's partition. */
static int fence_id(fr_store *st, const char *id) { return fence(st, fr_partition(id)); }

/* ---- the journal's records, inserted at flush ---- */

typedef struct buf { char *p; size_t n, cap; int bad; } buf;

/* Appends n bytes; on a failed allocation b->bad, and nothing more is kept. */
static void b_put(buf *b, const void *p, size_t n) {
  if (b->bad) return;
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    char *q;
    while (cap < b->n + n) cap *= 2;
    if (!(q = realloc(b->p, cap))) { b->bad = 1; return; }
    b->p = q;
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->n, p, n);
  b->n += n;
}

/* Big-endian integers, as PostgreSQL's binary format has them. */
static void b_u32(buf *b, uint32_t v) {
  unsigned char x[4] = { v >> 24, v >> 16 & 255, v >> 8 & 255, v & 255 };
  b_put(b, x, 4);
}

static void b_u64(buf *b, uint64_t v) {
  b_u32(b, (uint32_t)(v >> 32));
  b_u32(b, (uint32_t)v);
}

/* An array's header in PostgreSQL's binary format: one dimension of n
** elements of type oid. */
static void b_array(buf *b, uint32_t oid, size_t n) {
  b_u32(b, 1);
  b_u32(b, 1);                          /* may hold NULLs */
  b_u32(b, oid);
  b_u32(b, (uint32_t)n);
  b_u32(b, 1);
}

/* An array element: its length and bytes; NULL as length -1. */
static void b_elem(buf *b, const char *p, size_t n) {
  if (!p) { b_u32(b, 0xffffffffu); return; }
  b_u32(b, (uint32_t)n);
  b_put(b, p, n);
}

/* The records not inserted go (a rollback, a begin). */
static void drop_pending(fr_store *st) {
  for (size_t i = 0; i < st->npend; i++) free(st->pend[i]);
  st->npend = 0;
}

enum { TEXTOID = 25, INT8OID = 20, INT4OID = 23, BYTEAOID = 17 };

/* Inserts the records appended since the last flush, all in one statement
** (arrays unnested): one round trip, however many. Called before a commit
** and before anything reads or deletes journal rows. */
static int flush(fr_store *st) {
  buf a[7] = { { 0 } };
  params p = { 0 };
  int rc = 0, bad = 0;
  if (!st->npend) return 0;
  b_array(&a[0], TEXTOID, st->npend);
  b_array(&a[1], INT8OID, st->npend);
  b_array(&a[2], INT4OID, st->npend);
  b_array(&a[3], BYTEAOID, st->npend);
  b_array(&a[4], BYTEAOID, st->npend);
  b_array(&a[5], BYTEAOID, st->npend);
  b_array(&a[6], INT8OID, st->npend);
  for (size_t i = 0; i < st->npend; i++) {
    const pending *r = st->pend[i];
    b_elem(&a[0], r->id, strlen(r->id));
    b_u32(&a[1], 8);
    b_u64(&a[1], (uint64_t)r->seq);
    b_u32(&a[2], 4);
    b_u32(&a[2], (uint32_t)r->kind);
    b_elem(&a[3], r->fp, strlen(r->fp));
    b_elem(&a[4], r->at, r->at ? strlen(r->at) : 0);
    b_elem(&a[5], r->data, r->len);
    if (st->node) {
      b_u32(&a[6], 8);
      b_u64(&a[6], (uint64_t)st->held[r->part]);
    } else {
      b_u32(&a[6], 0xffffffffu);
    }
  }
  for (int i = 0; i < 7; i++) bad |= a[i].bad;
  if (bad) {
    rc = oom(st);
  } else {
    for (int i = 0; i < 6; i++) p_bytes(&p, a[i].p, a[i].n);
    p_text(&p, st->node);
    p_bytes(&p, a[6].p, a[6].n);
    rc = done(st, Q_APPEND, &p);
  }
  for (int i = 0; i < 7; i++) free(a[i].p);
  drop_pending(st);
  return rc;
}

/* ---- open, close ---- */

static void st_close(fr_store *st) {
  if (!st) return;
  drop_pending(st);
  free(st->pend);
  PQclear(st->row);
  if (st->db) PQfinish(st->db);
  if (st->listen) PQfinish(st->listen);
  free(st->node);
  free(st->path);
  free(st->url);
  free(st);
}

/* One statement (or several) outside the prepared ones: 0 or -1 (err). */
static int exec(PGconn *db, const char *q, const char *path, char *err, size_t n) {
  PGresult *r = PQexec(db, q);
  ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  char line[400];
  if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) {
    PQclear(r);
    return 0;
  }
  first_line(line, sizeof line, r ? PQresultErrorMessage(r) : PQerrorMessage(db));
  snprintf(err, n, "store %s: %s", path, line);
  PQclear(r);
  return -1;
}

/* A value of flowrun_meta (text), or NULL. */
static char *meta(PGconn *db, const char *k) {
  const char *v[1] = { k };
  PGresult *r = PQexecParams(db, "SELECT v FROM flowrun_meta WHERE k = $1", 1, NULL, v, NULL, NULL, 0);
  char *s = NULL;
  if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) s = strdup(PQgetvalue(r, 0, 0));
  PQclear(r);
  return s;
}

/* 1 when the database has the store's tables, 0 when not, -1 on error. */
static int has_schema(PGconn *db) {
  PGresult *r = PQexec(db, "SELECT to_regclass('flowrun_meta') IS NOT NULL");
  int rc = -1;
  if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) rc = PQgetvalue(r, 0, 0)[0] == 't';
  PQclear(r);
  return rc;
}

/* A connection to url (path: url as printed), its NOTICEs silenced;
** NULL and err when it cannot be made. */
static PGconn *connect_to(const char *url, const char *path, char *err, size_t n) {
  PGconn *db = PQconnectdb(url);
  char line[400];
  if (!db) {
    snprintf(err, n, "out of memory");
    return NULL;
  }
  if (PQstatus(db) != CONNECTION_OK) {
    first_line(line, sizeof line, PQerrorMessage(db));
    scrub(line, sizeof line, url);
    snprintf(err, n, "store %s: could not connect: %s", path, line);
    PQfinish(db);
    return NULL;
  }
  PQsetNoticeProcessor(db, quiet, NULL);
  return db;
}

/* Connects; makes the schema when missing (not when reading), refuses a
** newer format, prepares the statements. */
static fr_store *st_open(const char *path, int flags, char *err, size_t n) {
  fr_store *st = calloc(1, sizeof *st);
  char *fmt = NULL, *id = NULL;
  int has;
  if (!st || !(st->path = redact(path)) || !(st->url = strdup(path))) {
    if (st) free(st->path);
    free(st);
    snprintf(err, n, "out of memory");
    return NULL;
  }
  if (!(st->db = connect_to(path, st->path, err, n))) goto bad;
  if (!(flags & FR_STORE_READ)) {       /* the schema, made once, under a lock */
    char q[sizeof schema + 100];
    snprintf(q, sizeof q, "BEGIN; SELECT pg_advisory_xact_lock(%d); %s COMMIT", LOCK_KEY, schema);
    if (has_schema(st->db) != 1 && exec(st->db, q, st->path, err, n) != 0) goto bad;
  }
  if ((has = has_schema(st->db)) != 1) {
    if (has < 0) exec(st->db, "SELECT to_regclass('flowrun_meta')", st->path, err, n);
    else snprintf(err, n, "store %s: not a flowrun store", st->path);
    goto bad;
  }
  fmt = meta(st->db, "format");
  id = meta(st->db, "id");
  if (!fmt || !id) {
    snprintf(err, n, "store %s: not a flowrun store (no format or identity in flowrun_meta)", st->path);
    goto bad;
  }
  if (atoll(fmt) > FORMAT) {
    snprintf(err, n, "store %s: written by a newer flowrun (store format %lld; this one reads %d)",
             st->path, atoll(fmt), FORMAT);
    goto bad;
  }
  snprintf(st->id, sizeof st->id, "%s", id);
  if ((flags & FR_STORE_READ)
      && exec(st->db, "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", st->path, err, n) != 0)
    goto bad;
  for (int i = 0; i < Q_COUNT; i++) {
    char name[8];
    PGresult *r;
    snprintf(name, sizeof name, "q%d", i);
    r = PQprepare(st->db, name, sql[i], 0, NULL);
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
      char line[400];
      first_line(line, sizeof line, r ? PQresultErrorMessage(r) : PQerrorMessage(st->db));
      snprintf(err, n, "store %s: %s", st->path, line);
      PQclear(r);
      goto bad;
    }
    PQclear(r);
  }
  free(fmt);
  free(id);
  return st;
bad:
  free(fmt);
  free(id);
  st_close(st);
  return NULL;
}

/* ---- the turn's transaction ---- */

static int tx(fr_store *st, const char *q, const char *tag) {
  PGresult *r = PQexec(st->db, q);
  int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), tag) == 0;
  if (!ok && r && PQresultStatus(r) == PGRES_COMMAND_OK)   /* COMMIT of a failed one */
    snprintf(st->err, sizeof st->err, "store %s: the transaction failed and was rolled back", st->path);
  else if (!ok)
    fail(st, r);
  PQclear(r);
  return ok ? 0 : -1;
}

/* The turn's transaction; fencing starts anew in it. */
static int st_begin(fr_store *st) {
  drop_pending(st);
  memset(st->fenced, 0, sizeof st->fenced);
  if (PQtransactionStatus(st->db) == PQTRANS_INERROR || PQtransactionStatus(st->db) == PQTRANS_INTRANS)
    PQclear(PQexec(st->db, "ROLLBACK"));   /* a failed one not rolled back: nothing of it stays */
  if (tx(st, "BEGIN", "BEGIN") != 0) return -1;
  st->in_txn = 1;
  return 0;
}

/* The records kept in memory go in, then COMMIT: -1 and PostgreSQL's
** message when either fails (the transaction is then rolled back). */
static int st_commit(fr_store *st) {
  int rc = flush(st);
  if (rc != 0 && PQstatus(st->db) == CONNECTION_OK) PQclear(PQexec(st->db, "ROLLBACK"));
  rc = rc ? -1 : tx(st, "COMMIT", "COMMIT");
  st->in_txn = 0;
  memset(st->fenced, 0, sizeof st->fenced);   /* the share locks went with it */
  return rc;
}

/* Nothing of the transaction stays, in memory or in the database. */
static void st_rollback(fr_store *st) {
  drop_pending(st);
  if (PQtransactionStatus(st->db) != PQTRANS_IDLE && PQstatus(st->db) == CONNECTION_OK) {
    PGresult *r = PQexec(st->db, "ROLLBACK");
    PQclear(r);
  }
  st->in_txn = 0;
  memset(st->fenced, 0, sizeof st->fenced);
}

/* ---- sessions ---- */

static int st_put_session(fr_store *st, const fr_store_session *r) {
  params p = { 0 };
  if (fence_id(st, r->id)) return -1;
  p_text(&p, r->id);
  p_int(&p, fr_partition(r->id));
  p_text(&p, r->flow);
  p_bytes(&p, r->args ? r->args : "", r->args_len);
  p_int(&p, r->nargs);
  p_int(&p, r->inputs);
  p_text(&p, st->node);
  return done(st, Q_PUT_SESSION, &p);
}

/* Statements of one parameter, id, after fencing (and a flush: the
** journal's rows are touched). */
static int by_id(fr_store *st, int q, const char *id) {
  params p = { 0 };
  if (fence_id(st, id) || flush(st)) return -1;
  p_text(&p, id);
  return done(st, q, &p);
}

static int st_end_session(fr_store *st, const char *id) { return by_id(st, Q_END_SESSION, id); }
static int st_drop_session(fr_store *st, const char *id) { return by_id(st, Q_DROP_SESSION, id); }
static int st_drop_outbox(fr_store *st, const char *id) { return by_id(st, Q_DROP_OUTBOX, id); }

/* Row i of a session's columns (ROW) into *s, pointing into r. */
static void row_of(const PGresult *r, int i, fr_store_session *s) {
  s->id = PQgetvalue(r, i, 0);
  s->flow = PQgetvalue(r, i, 1);
  s->args = PQgetvalue(r, i, 2);
  s->args_len = (size_t)PQgetlength(r, i, 2);
  s->nargs = (int)num(r, i, 3);
  s->inputs = num(r, i, 4);
  s->ended = (int)num(r, i, 5);
  s->said = num(r, i, 6);
  s->parked = (int)num(r, i, 7);
}

/* The row stays valid until the next get_session (its result is kept). */
static int st_get_session(fr_store *st, const char *id, fr_store_session *row) {
  params p = { 0 };
  PGresult *r;
  p_text(&p, id);
  if (!(r = run(st, Q_GET_SESSION, &p))) return -1;
  PQclear(st->row);
  st->row = r;
  if (PQntuples(r) == 0) return 0;
  row_of(r, 0, row);
  return 1;
}

/* fn for each row of r (a session's columns); the result is cleared. */
static int each_row(PGresult *r, int (*fn)(void *, const fr_store_session *), void *ud) {
  fr_store_session s;
  for (int i = 0; i < PQntuples(r); i++) {
    row_of(r, i, &s);
    if (fn(ud, &s) != 0) break;
  }
  PQclear(r);
  return 0;
}

/* On a store with a node: the partitions this host holds only. */
static int st_each_session(fr_store *st, int all, int (*fn)(void *, const fr_store_session *),
                           void *ud) {
  params p = { 0 };
  PGresult *r;
  char *held = NULL;
  if (!all && st->node) {
    if (!(held = list_of(st->held, 0))) return oom(st);
    p_text(&p, held);
  }
  r = run(st, all ? Q_EACH_UNFINISHED : st->node ? Q_EACH_MINE_SESSION : Q_EACH_SESSION, &p);
  free(held);
  return r ? each_row(r, fn, ud) : -1;
}

/* Kept in memory until flush() (at the latest, the commit). */
static int st_append(fr_store *st, const char *id, const fr_store_rec *r) {
  const char *fp = r->fp ? r->fp : "";
  size_t idn = strlen(id) + 1, fpn = strlen(fp) + 1, atn = r->at ? strlen(r->at) + 1 : 0;
  size_t len = r->data ? r->len : 0;
  pending *p;
  char *q;
  int part = fr_partition(id);
  if (fence(st, part)) return -1;
  if (st->npend == st->cap) {
    size_t cap = st->cap ? st->cap * 2 : 64;
    pending **more = realloc(st->pend, cap * sizeof *more);
    if (!more) return oom(st);
    st->pend = more;
    st->cap = cap;
  }
  if (!(p = malloc(sizeof *p + idn + fpn + atn + len))) return oom(st);
  q = (char *)(p + 1);
  p->seq = r->seq;
  p->kind = r->kind;
  p->part = part;
  p->id = memcpy(q, id, idn);
  p->fp = memcpy(q + idn, fp, fpn);
  p->at = r->at ? memcpy(q + idn + fpn, r->at, atn) : NULL;
  p->data = r->data ? q + idn + fpn + atn : NULL;
  if (len) memcpy(q + idn + fpn + atn, r->data, len);
  p->len = len;
  st->pend[st->npend++] = p;
  return st->npend >= 4096 ? flush(st) : 0;   /* a long turn: memory stays bounded */
}

static int st_each_rec(fr_store *st, const char *id, int (*fn)(void *, const fr_store_rec *), void *ud) {
  params p = { 0 };
  PGresult *r;
  fr_store_rec rec;
  if (flush(st)) return -1;
  p_text(&p, id);
  if (!(r = run(st, Q_EACH_REC, &p))) return -1;
  for (int i = 0; i < PQntuples(r); i++) {
    rec.seq = num(r, i, 0);
    rec.kind = (int)num(r, i, 1);
    rec.fp = PQgetvalue(r, i, 2);
    rec.at = val(r, i, 3);
    rec.data = val(r, i, 4);
    rec.len = rec.data ? (size_t)PQgetlength(r, i, 4) : 0;
    if (fn(ud, &rec) != 0) break;
  }
  PQclear(r);
  return 0;
}

static int st_put_input(fr_store *st, const char *id, long long n, const char *text, size_t len) {
  params p = { 0 };
  if (fence_id(st, id)) return -1;
  p_text(&p, id);
  p_int(&p, n);
  p_bytes(&p, text, len);
  return done(st, Q_PUT_INPUT, &p);
}

static int st_take_input(fr_store *st, const char *id, long long n) {
  params p = { 0 };
  if (fence_id(st, id)) return -1;
  p_text(&p, id);
  p_int(&p, n);
  return done(st, Q_TAKE_INPUT, &p);
}

static int st_each_input(fr_store *st, const char *id,
                         int (*fn)(void *, long long, const char *, size_t), void *ud) {
  params p = { 0 };
  PGresult *r;
  p_text(&p, id);
  if (!(r = run(st, Q_EACH_INPUT, &p))) return -1;
  for (int i = 0; i < PQntuples(r); i++) {
    const char *t = val(r, i, 1);
    if (fn(ud, num(r, i, 0), t, t ? (size_t)PQgetlength(r, i, 1) : 0) != 0) break;
  }
  PQclear(r);
  return 0;
}

/* 1 when the output is addressed to another host (woken at the commit),
** 0 when to this one or to none. */
static int st_put_output(fr_store *st, const char *id, long long seq, int kind, int how,
                         const char *text, size_t len) {
  params p = { 0 };
  PGresult *r;
  int other;
  if (fence_id(st, id)) return -1;
  p_text(&p, id);
  p_int(&p, seq);
  p_int(&p, kind);
  p_int(&p, how);
  p_bytes(&p, text, len);
  p_text(&p, st->node);
  if (!(r = run(st, Q_PUT_OUTPUT, &p))) return -1;
  other = PQntuples(r) == 1 && num(r, 0, 0) == 1;
  PQclear(r);
  return other;
}

/* Not fenced: the host an output is addressed to gives it, and need not
** own its session; given and said only grow (a duplicate is at least once,
** never a lost or changed effect). */
static int st_drop_output(fr_store *st, const char *id, long long seq) {
  params p = { 0 };
  p_text(&p, id);
  p_int(&p, seq);
  return done(st, Q_DROP_OUTPUT, &p);
}

/* fn for each output row of r (session, seq, kind, how, text). */
static int each_output_row(PGresult *r, int (*fn)(void *, const char *, long long, int, int,
                                                  const char *, size_t), void *ud) {
  for (int i = 0; i < PQntuples(r); i++) {
    const char *t = val(r, i, 4);
    if (fn(ud, PQgetvalue(r, i, 0), num(r, i, 1), (int)num(r, i, 2), (int)num(r, i, 3), t,
           t ? (size_t)PQgetlength(r, i, 4) : 0) != 0)
      break;
  }
  PQclear(r);
  return 0;
}

static int st_each_output(fr_store *st, int (*fn)(void *, const char *, long long, int, int,
                                                  const char *, size_t), void *ud) {
  params p = { 0 };
  PGresult *r;
  p_text(&p, st->node);
  if (!(r = run(st, Q_EACH_OUTPUT, &p))) return -1;
  return each_output_row(r, fn, ud);
}

static int st_set_waiting(fr_store *st, const char *id, int waiting) {
  params p = { 0 };
  if (fence_id(st, id)) return -1;
  p_text(&p, id);
  p_int(&p, waiting);
  p_text(&p, st->node);
  return done(st, Q_WAITING, &p);
}

static int st_each_listed(fr_store *st, int (*fn)(void *, const fr_store_listed *), void *ud) {
  PGresult *r;
  fr_store_listed l;
  if (flush(st) || !(r = run(st, Q_LIST, NULL))) return -1;
  for (int i = 0; i < PQntuples(r); i++) {
    l.id = PQgetvalue(r, i, 0);
    l.flow = PQgetvalue(r, i, 1);
    l.ended = (int)num(r, i, 2);
    l.waiting = (int)num(r, i, 3);
    l.inputs = num(r, i, 4);
    l.active = num(r, i, 5);
    l.journal = num(r, i, 6);
    l.parked = (int)num(r, i, 7);
    l.note = val(r, i, 8);
    if (fn(ud, &l) != 0) break;
  }
  PQclear(r);
  return 0;
}

static int st_park(fr_store *st, const char *id, const char *note) {
  params p = { 0 };
  if (fence_id(st, id)) return -1;
  p_text(&p, id);
  p_int(&p, note != NULL);
  p_text(&p, note);
  return done(st, Q_PARK, &p);
}

/* At most 1000 a call; on a store with a node, in the partitions held. */
static int st_each_silent(fr_store *st, long long before, int (*fn)(void *, const char *),
                          void *ud) {
  params p = { 0 };
  PGresult *r;
  char *held = NULL;
  int n;
  if (st->node && !(held = list_of(st->held, 0))) return oom(st);
  p_int(&p, before);
  p_text(&p, held);
  r = run(st, Q_SILENT, &p);
  free(held);
  if (!r) return -1;
  n = PQntuples(r);
  for (int i = 0; i < n; i++) fn(ud, PQgetvalue(r, i, 0));
  PQclear(r);
  return n;
}

/* The records in the cut go: those still in memory, and the rows. */
static int st_cut(fr_store *st, const char *id, long long after, long long before) {
  params p = { 0 };
  size_t k = 0;
  if (fence_id(st, id)) return -1;
  for (size_t i = 0; i < st->npend; i++) {   /* not written yet */
    pending *x = st->pend[i];
    if (strcmp(x->id, id) == 0 && x->seq > after && x->seq < before) free(x);
    else st->pend[k++] = x;
  }
  st->npend = k;
  p_text(&p, id);
  p_int(&p, after);
  p_int(&p, before);
  return done(st, Q_CUT, &p);
}

/* On a store with a node: sessions of the partitions held, at the epochs
** held (the statement checks the leases under a share lock). */
static int st_purge_ended(fr_store *st, long long before) {
  params p = { 0 };
  char *parts, *epochs = NULL;
  int rc;
  p_int(&p, before);
  if (!st->node) return done(st, Q_PURGE, &p);
  if (!(parts = list_of(st->held, 0)) || !(epochs = list_of(st->held, 1))) {
    free(parts);
    return oom(st);
  }
  p_text(&p, st->node);
  p_text(&p, parts);
  p_text(&p, epochs);
  rc = done(st, Q_PURGE_MINE, &p);
  free(parts);
  free(epochs);
  return rc;
}

static const char *st_errmsg(fr_store *st) { return st->err; }
static const char *st_identity(fr_store *st) { return st->id; }

/* ---- a store shared by many hosts ---- */

/* The hosts' calls run each in its own transaction; inside a turn's (a
** host calling send between two commits) they join it instead. */
static int own_begin(fr_store *st) {
  return st->in_txn ? 0 : tx(st, "BEGIN", "BEGIN");
}

static int own_end(fr_store *st, int rc) {
  if (st->in_txn) return rc;
  if (rc < 0) {
    PGresult *r = PQexec(st->db, "ROLLBACK");
    PQclear(r);
    return rc;
  }
  return tx(st, "COMMIT", "COMMIT") ? -1 : rc;
}

/* LISTEN on the wakes' connection: flowrun_in, and this host's outputs. */
static int set_listen(fr_store *st) {
  char q[200], *chan;
  const char *code;
  char line[400];
  const char *v[1] = { st->node };
  PGresult *r;
  int ok;
  if (!(st->listen = connect_to(st->url, st->path, st->err, sizeof st->err))) return -1;
  snprintf(q, sizeof q, "flowrun_out:%s", st->node);
  if (!(chan = PQescapeIdentifier(st->listen, q, strlen(q)))) return fail(st, NULL);
  snprintf(q, sizeof q, "LISTEN flowrun_in; LISTEN %s", chan);
  PQfreemem(chan);
  if (exec(st->listen, q, st->path, st->err, sizeof st->err) != 0) return -1;
  /* one process a node: a lock held as long as the connection lives,
     waited for 2 s (a process killed a moment ago: its backend is going) */
  if (exec(st->listen, "SET lock_timeout = 2000", st->path, st->err, sizeof st->err) != 0) return -1;
  r = PQexecParams(st->listen, "SELECT pg_advisory_lock(1718382455, hashtext($1))",
                   1, NULL, v, NULL, NULL, 0);
  ok = r && PQresultStatus(r) == PGRES_TUPLES_OK;
  code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  if (!ok && code && strcmp(code, "55P03") == 0) {
    snprintf(st->err, sizeof st->err, "store %s: node %s is in use by another process "
             "(each host needs a name of its own)", st->path, st->node);
  } else if (!ok) {
    first_line(line, sizeof line, r ? PQresultErrorMessage(r) : PQerrorMessage(st->listen));
    snprintf(st->err, sizeof st->err, "store %s: %s", st->path, line);
  }
  PQclear(r);
  if (ok && exec(st->listen, "RESET lock_timeout", st->path, st->err, sizeof st->err) != 0) return -1;
  return ok ? 0 : -1;
}

/* Names this host, opens the wakes' connection (LISTEN) and takes the
** node's lock; refuses a name too long for a channel. */
static int st_set_node(fr_store *st, const char *node, long long lease_ms) {
  if (st->node) {
    snprintf(st->err, sizeof st->err, "store %s: this store has a node already (%s)", st->path, st->node);
    return -1;
  }
  if (!*node || strlen(node) > 51) {   /* "flowrun_out:NODE": a channel's name, 63 bytes at most */
    if (*node)
      snprintf(st->err, sizeof st->err, "store %s: node name %.80s has %zu bytes: at most 51 "
               "(it names a PostgreSQL notification channel)", st->path, node, strlen(node));
    else
      snprintf(st->err, sizeof st->err, "store %s: an empty node name", st->path);
    return -1;
  }
  if (lease_ms <= 0) {
    snprintf(st->err, sizeof st->err, "store %s: a lease of %lld ms: it must be 1 ms or more",
             st->path, lease_ms);
    return -1;
  }
  if (!(st->node = strdup(node))) return oom(st);
  st->lease_ms = lease_ms;
  {  /* a host paused inside a turn (SIGSTOP, a frozen VM) holds its lease
        rows FOR SHARE: PostgreSQL ends that transaction after a lease, so
        the others can take its partitions; the host, resumed, fails */
    char q[96];
    PGresult *r;
    snprintf(q, sizeof q, "SET idle_in_transaction_session_timeout = %lld", lease_ms);
    r = PQexec(st->db, q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
      snprintf(st->err, sizeof st->err, "store %s: %s", st->path, PQerrorMessage(st->db));
      PQclear(r);
      free(st->node);
      st->node = NULL;
      return -1;
    }
    PQclear(r);
  }
  if (set_listen(st) != 0) {
    free(st->node);
    st->node = NULL;
    if (st->listen) PQfinish(st->listen);
    st->listen = NULL;
    return -1;
  }
  return 0;
}

/* Heartbeat (store.h): one transaction, retried once when PostgreSQL
** chose it as a deadlock's victim (a take waiting for a fenced write that
** waits for a partition the take locked). */
static int leases_once(fr_store *st, int (*idle)(void *, int), void *ud, long long next[],
                       unsigned char got[]) {
  params p = { 0 };
  PGresult *r;
  char *list;
  long long live, share, held = 0;
  int i;
  memset(got, 0, FR_PARTITIONS);
  memset(st->gave, 0, sizeof st->gave);
  for (i = 0; i < FR_PARTITIONS; i++) next[i] = 0;
  if (tx(st, "BEGIN", "BEGIN")) return -1;
  p_text(&p, st->node);
  p_int(&p, st->lease_ms);
  if (!(r = run(st, Q_HEARTBEAT, &p))) goto bad;
  live = num(r, 0, 0);
  PQclear(r);
  share = (FR_PARTITIONS + live - 1) / (live > 0 ? live : 1);
  if (!(list = list_of(st->held, 0))) { oom(st); goto bad; }
  p_text(&p, list);
  r = run(st, Q_RENEW, &p);             /* node, lease, held */
  free(list);
  if (!r) goto bad;
  for (i = 0; i < PQntuples(r); i++) {
    int part = (int)num(r, i, 0);
    long long epoch = num(r, i, 1);
    if (part >= 0 && part < FR_PARTITIONS && st->held[part] == epoch) next[part] = epoch, held++;
  }
  PQclear(r);
  if (held < share) {                   /* take up to the share */
    unsigned off = 2166136261u;         /* each host from its own place: fewer collisions */
    for (const char *c = st->node; *c; c++) off = (off ^ (unsigned char)*c) * 16777619u;
    if (!(list = list_of(next, 0))) { oom(st); goto bad; }
    p.n = 2;
    p_int(&p, share - held);
    p_text(&p, list);
    p_int(&p, off % FR_PARTITIONS);
    r = run(st, Q_TAKE, &p);            /* node, lease, how many, held, from */
    free(list);
    if (!r) goto bad;
    for (i = 0; i < PQntuples(r); i++) {
      int part = (int)num(r, i, 0);
      if (part >= 0 && part < FR_PARTITIONS) next[part] = num(r, i, 1), got[part] = 1;
    }
    PQclear(r);
  } else if (held > share) {            /* give back idle ones down to the share */
    long long give[FR_PARTITIONS] = { 0 };
    for (i = FR_PARTITIONS - 1; i >= 0 && held > share; i--)
      if (next[i] && idle && idle(ud, i)) {   /* no idle: none is given back */
        give[i] = 1;
        next[i] = 0;
        st->gave[i] = 1;
        held--;
      }
    if (!(list = list_of(give, 0))) { oom(st); goto bad; }
    p.n = 1;
    p_text(&p, list);
    r = run(st, Q_GIVE, &p);            /* node, the partitions */
    free(list);
    if (!r) goto bad;
    PQclear(r);
  }
  return tx(st, "COMMIT", "COMMIT");
bad:
  if (PQstatus(st->db) == CONNECTION_OK) PQclear(PQexec(st->db, "ROLLBACK"));
  return -1;
}

/* leases_once, again when it was a deadlock's victim; this host's
** partitions (held) changed only when it committed. */
static int st_leases(fr_store *st, int (*idle)(void *, int), void *ud, unsigned char got[],
                     unsigned char lost[]) {
  long long next[FR_PARTITIONS];
  int rc = -1;
  if (!st->node || st->in_txn) {
    snprintf(st->err, sizeof st->err, "store %s: leases: %s", st->path,
             st->node ? "called inside a turn's transaction" : "no node (set_node)");
    return -1;
  }
  for (int attempt = 0; attempt < 2 && rc != 0; attempt++) {
    rc = leases_once(st, idle, ud, next, got);
    if (rc != 0 && strcmp(st->state, "40P01") != 0) break;
  }
  if (rc != 0) return -1;
  for (int i = 0; i < FR_PARTITIONS; i++) {
    /* held and not now, or at another epoch: taken by another (a
       partition given back was idle: not lost) */
    lost[i] = st->held[i] && next[i] != st->held[i] && (next[i] || !st->gave[i]);
  }
  memcpy(st->held, next, sizeof next);
  return 0;
}

/* What the last heartbeat left (fencing checks the database itself). */
static int st_owns(fr_store *st, int part) {
  return part >= 0 && part < FR_PARTITIONS && st->held[part] != 0;
}

/* The session's outputs addressed to this host again, not given. */
static int readdress(fr_store *st, const char *id) {
  params p = { 0 };
  if (!st->node) return 0;
  p_text(&p, id);
  p_text(&p, st->node);
  return done(st, Q_READDRESS, &p);
}

/* store.h: the session row locked FOR UPDATE numbers the message; the
** last message's outputs go when a new one is stored. */
static int st_send(fr_store *st, const char *id, long long n, const char *text, size_t len,
                   long long *taken) {
  params p = { 0 };
  PGresult *r;
  long long inputs;
  int rc;
  if (own_begin(st)) return -1;
  p_text(&p, id);
  if (!(r = run(st, Q_SEND_LOCK, &p))) return own_end(st, -1);
  if (PQntuples(r) == 0 || num(r, 0, 1)) {
    PQclear(r);
    return own_end(st, -2);             /* no unfinished session */
  }
  inputs = num(r, 0, 0);
  PQclear(r);
  if (n == 0) n = inputs + 1;
  if (n > inputs + 1) return own_end(st, -3);
  if (n <= inputs) {                    /* stored already: its replies come here */
    rc = readdress(st, id) ? -1 : 0;
  } else {
    p_int(&p, n);
    p_bytes(&p, text, len);
    p_text(&p, st->node);
    rc = done(st, Q_SEND_STORE, &p) ? -1 : 1;
  }
  rc = own_end(st, rc);
  if (rc >= 0 && taken) *taken = n;
  return rc;
}

/* store.h: one statement makes the row or finds an unfinished one (and
** locks it): two hosts starting one id at once make it once. */
static int st_start(fr_store *st, const fr_store_session *row) {
  params p = { 0 };
  PGresult *r;
  int rc;
  if (own_begin(st)) return -1;
  p_text(&p, row->id);
  p_int(&p, fr_partition(row->id));
  p_text(&p, row->flow);
  p_bytes(&p, row->args ? row->args : "", row->args_len);
  p_int(&p, row->nargs);
  p_int(&p, row->inputs);
  p_text(&p, st->node);
  if (!(r = run(st, Q_START, &p))) return own_end(st, -1);
  if (PQntuples(r) == 1) {              /* made; an ended one's leftovers go */
    int fresh = num(r, 0, 0) != 0;
    params c = { 0 };
    PQclear(r);
    p_text(&c, row->id);
    rc = fresh ? 1 : done(st, Q_START_CLEAN, &c) ? -1 : 1;
  } else {                              /* an unfinished one: its replies come here */
    PQclear(r);
    rc = readdress(st, row->id) ? -1 : 0;
  }
  return own_end(st, rc);
}

/* The wakes' connection's socket; -1 before set_node. */
static int st_fd(fr_store *st) {
  return st->listen ? PQsocket(st->listen) : -1;
}

/* 'i' wakes of partitions this host holds (another's owner takes them),
** 'o' wakes of this host's outputs. */
static int st_wakes(fr_store *st, int (*fn)(void *, int, const char *), void *ud) {
  PGnotify *n;
  struct pollfd pfd;
  if (!st->listen) return 0;
  /* read while the socket has more: a server's goodbye (FATAL, then the
     end of the stream) is seen in this call, not at a wake that never comes */
  for (int k = 0; k < 8; k++) {
    if (!PQconsumeInput(st->listen) || PQstatus(st->listen) == CONNECTION_BAD) {
      char line[400];
      first_line(line, sizeof line, PQerrorMessage(st->listen));
      snprintf(st->err, sizeof st->err, "store %s: the connection to PostgreSQL was lost: %s",
               st->path, line);
      return -1;
    }
    while ((n = PQnotifies(st->listen))) {
      int in = strcmp(n->relname, "flowrun_in") == 0;
      if (!in || st_owns(st, fr_partition(n->extra))) fn(ud, in ? 'i' : 'o', n->extra);
      PQfreemem(n);
    }
    pfd.fd = PQsocket(st->listen);
    pfd.events = POLLIN;
    if (poll(&pfd, 1, 0) <= 0) break;
  }
  return 0;
}

/* This host's outputs, marked given as they are read (a message sent
** again gives them again). */
static int st_each_mine(fr_store *st, int (*fn)(void *, const char *, long long, int, int,
                                                const char *, size_t), void *ud) {
  params p = { 0 };
  PGresult *r;
  if (!st->node) return 0;
  p_text(&p, st->node);
  if (!(r = run(st, Q_MINE, &p))) return -1;
  return each_output_row(r, fn, ud);
}

/* A partition's sessions to run, when it was just taken: a waiting one
** too when a message for it is stored. */
static int st_each_in_part(fr_store *st, int part,
                           int (*fn)(void *, const fr_store_session *), void *ud) {
  params p = { 0 };
  PGresult *r;
  p_int(&p, part);
  if (!(r = run(st, Q_IN_PART, &p))) return -1;
  return each_row(r, fn, ud);
}

const fr_store_methods fr_store_pg = {
  .name = "postgresql",
  .open = st_open,
  .close = st_close,
  .begin = st_begin,
  .commit = st_commit,
  .rollback = st_rollback,
  .put_session = st_put_session,
  .end_session = st_end_session,
  .drop_session = st_drop_session,
  .get_session = st_get_session,
  .each_session = st_each_session,
  .append = st_append,
  .each_rec = st_each_rec,
  .put_input = st_put_input,
  .take_input = st_take_input,
  .each_input = st_each_input,
  .put_output = st_put_output,
  .drop_output = st_drop_output,
  .each_output = st_each_output,
  .errmsg = st_errmsg,
  .identity = st_identity,
  .set_waiting = st_set_waiting,
  .each_listed = st_each_listed,
  .drop_outbox = st_drop_outbox,
  .park = st_park,
  .each_silent = st_each_silent,
  .cut = st_cut,
  .purge_ended = st_purge_ended,
  .set_node = st_set_node,
  .leases = st_leases,
  .owns = st_owns,
  .send = st_send,
  .start = st_start,
  .fd = st_fd,
  .wakes = st_wakes,
  .each_mine = st_each_mine,
  .each_in_part = st_each_in_part,
};
