/*
** serve.c -- `flowrun serve FLOW.lua --port N`: conversations over HTTP
** webhooks (README: flowrun serve), with /health and /metrics.
**
**   POST /webhooks/rest            {"sender":"u1","message":"hi"} (Rasa's REST
**                                  channel): a new sender starts session u1
**                                  (message is its args[1]), a known one
**                                  answers its ask. 200 with the bot's
**                                  messages up to its next ask or its end:
**                                  [{"recipient_id":"u1","text":"..."}]
**                                  With "number":N (the message's number in
**                                  the conversation, 1 its start) a message
**                                  taken already is not taken again.
**   GET /webhooks/rest/messages?sender=u1[&wait=S]
**                                  the long poll for messages that come
**                                  later (a flow that sleeps, a reply that
**                                  took longer than --reply-timeout): what
**                                  is queued for u1, or waits up to S
**                                  seconds (default 25, at most 60) for some
**   GET /health, GET /metrics      (the Prometheus text format)
**
** Threads: none. libmicrohttpd runs without a thread of its own
** (MHD_USE_EPOLL): its epoll descriptor is watched by the runtime's loop
** (flowrun_watch), and MHD_run is called from that loop only, so every
** request handler, every Lua and runtime call runs on the one thread that
** runs flowrun_step. A webhook whose answer is not there yet suspends its
** connection (MHD_suspend_connection); the say/ask/end callbacks collect
** the answer and resume it, and the next MHD_run sends it.
**
** Messages that come later are queued in memory per sender until a poll
** takes them (or the sender's next webhook, whose answer starts with them).
*/
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <microhttpd.h>
#include <lua.h>
#include <lauxlib.h>

#include "common.h"
#include "flowrun.h"

#define MAX_BODY   (64 * 1024)          /* a webhook's body; longer: 413 */
#define MAX_CONNS  16000
#define NBUCKETS   4096                 /* senders' hash table */
#define POLL_WAIT_S 25                  /* a long poll's default wait */
#define POLL_MAX_S  60

typedef struct sbuf { char *p; size_t n, cap; } sbuf;

typedef struct req req;
typedef struct sender {
  struct sender *next;                  /* in its bucket */
  char *id;
  sbuf out;                             /* queued messages: ",{...}" each */
  req *post;                            /* a webhook waiting for the turn's end */
  req *poll;                            /* a long poll waiting for messages */
  bool waiting;                         /* the session waits in ask */
  bool live;                            /* without a store: started here, not ended */
  long long number;                     /* without a store: the last message taken (1: the start) */
  char *last_reply;                     /* the answer to the last numbered webhook, */
  long long last_number;                /* and its number (0: none) */
} sender;

enum { R_NONE, R_WEBHOOK, R_POLL, R_HEALTH, R_METRICS };

struct req {
  struct MHD_Connection *c;
  req *prev, *nextw;                    /* in the list of suspended requests */
  sender *s;
  sbuf body;
  bool too_big, suspended, ready;
  int status;
  char *reply;                          /* the answer once ready (JSON) */
  size_t reply_len;
  int64_t deadline;                     /* ms, monotonic */
  long long number;                     /* a webhook's "number", 0 when none */
};

/* calls by integration and label; latency buckets per integration */
static const double bucket_s[] = { .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10 };
#define NB (sizeof bucket_s / sizeof *bucket_s)
typedef struct calls { char *integration, *label; long long n; } calls;
typedef struct latency { char *integration; long long le[NB], count; double sum; } latency;

typedef struct server {
  flowrun *rt;
  struct MHD_Daemon *d;
  const char *flow;
  cli_opts opts;
  cli_store_opts st;                    /* --store PATH and its limits (as host's) */
  const char *token;                    /* from --token-env NAME */
  long long reply_ms;                   /* --reply-timeout */
  bool failed;
  bool shared;                          /* the store is PostgreSQL's, shared by many hosts */
  int decode_ref;
  sender *bucket[NBUCKETS];
  long long nsenders;
  req *waits;                           /* suspended requests */
  calls *calls; size_t ncalls;
  latency *lat; size_t nlat;
  long long webhooks, bad_requests;
} server;

static volatile sig_atomic_t stopping;

static void on_signal(int sig) {
  (void)sig;
  stopping = 1;
}

/* The monotonic clock in ms. */
static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- buffers ---- */

/* Appends n bytes; out of memory ends the command (as cli_input does). */
static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 256;
    while (cap < b->n + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      fputs("flowrun serve: out of memory\n", stderr);
      exit(2);
    }
    b->p = p, b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

static void sb_adds(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* s as a JSON string (valid UTF-8 whatever it holds: cli_json_str). */
static void sb_json(sbuf *b, const char *s, size_t n) {
  char *p = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&p, &len);
  if (!f) {
    fputs("flowrun serve: out of memory\n", stderr);
    exit(2);
  }
  cli_json_str(f, s, n);
  fclose(f);
  sb_add(b, p, len);
  free(p);
}

/* ---- senders ---- */

static unsigned hash(const char *s) {
  unsigned h = 2166136261u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h % NBUCKETS;
}

/* The sender id (made when create). */
static sender *sender_get(server *sv, const char *id, bool create) {
  sender **b = &sv->bucket[hash(id)], *s;
  for (s = *b; s; s = s->next)
    if (strcmp(s->id, id) == 0) return s;
  if (!create) return NULL;
  if (!(s = calloc(1, sizeof *s)) || !(s->id = strdup(id))) {
    fputs("flowrun serve: out of memory\n", stderr);
    exit(2);
  }
  s->next = *b;
  *b = s;
  sv->nsenders++;
  return s;
}

static char *xstrdup(const char *s);

/* ---- answers ---- */

static void unwait(server *sv, req *q) {
  if (!q->suspended) return;
  if (q->prev) q->prev->nextw = q->nextw;
  else sv->waits = q->nextw;
  if (q->nextw) q->nextw->prev = q->prev;
  q->prev = q->nextw = NULL;
}

/* q's answer is ready: resume its connection (the next MHD_run sends it). */
static void answer(server *sv, req *q, int status, const char *json, size_t len) {
  free(q->reply);
  q->reply = malloc(len + 1);
  if (!q->reply) {
    fputs("flowrun serve: out of memory\n", stderr);
    exit(2);
  }
  memcpy(q->reply, json, len);
  q->reply[len] = '\0';
  q->reply_len = len;
  q->status = status;
  q->ready = true;
  if (q->s && q->s->post == q && q->number) {   /* for the same message sent again */
    free(q->s->last_reply);
    q->s->last_reply = xstrdup(q->reply);
    q->s->last_number = q->number;
  }
  if (q->s) {
    if (q->s->post == q) q->s->post = NULL;
    if (q->s->poll == q) q->s->poll = NULL;
  }
  if (q->suspended) {
    unwait(sv, q);
    q->suspended = false;
    MHD_resume_connection(q->c);
  }
}

/* Answers q with what is queued for its sender, as a JSON array. */
static void answer_queued(server *sv, req *q) {
  sender *s = q->s;
  sbuf b = { 0 };
  sb_adds(&b, "[");
  if (s->out.n) sb_add(&b, s->out.p + 1, s->out.n - 1);   /* without the first ',' */
  sb_adds(&b, "]");
  s->out.n = 0;
  answer(sv, q, 200, b.p, b.n);
  free(b.p);
}

/* {"error":"..."} with status. */
static void answer_error(server *sv, req *q, int status, const char *msg) {
  sbuf b = { 0 };
  sb_adds(&b, "{\"error\":");
  sb_json(&b, msg, strlen(msg));
  sb_adds(&b, "}");
  sv->bad_requests += status >= 400 && status < 500;
  answer(sv, q, status, b.p, b.n);
  free(b.p);
}

static void suspend(server *sv, req *q, long long wait_ms) {
  q->deadline = now_ms() + wait_ms;
  q->suspended = true;
  q->nextw = sv->waits;
  if (sv->waits) sv->waits->prev = q;
  sv->waits = q;
  MHD_suspend_connection(q->c);
}

/* After each turn of the loop: a poll whose sender has messages gets
** them (what one turn said comes in one answer); requests whose wait is
** over get what there is (a poll [], a webhook what came so far). */
static void expire(server *sv) {
  int64_t now = now_ms();
  req *q = sv->waits, *next;
  for (; q; q = next) {
    next = q->nextw;
    if (q->deadline <= now || (q->s->poll == q && q->s->out.n && !q->s->post))
      answer_queued(sv, q);
  }
}

/* ---- the runtime's callbacks ---- */

/* With a store a message carries its number in the session ("seq"): after
** a takeover one may be given again (docs/scale-out.md), which a client
** drops by its seq. */
static void queue_text(server *sv, const char *id, const char *text, size_t len) {
  sender *s = sender_get(sv, id, true);
  long long seq = flowrun_output_seq(sv->rt);
  sb_adds(&s->out, ",{\"recipient_id\":");
  sb_json(&s->out, id, strlen(id));
  if (seq > 0) {
    char n[32];
    snprintf(n, sizeof n, ",\"seq\":%lld", seq);
    sb_adds(&s->out, n);
  }
  sb_adds(&s->out, ",\"text\":");
  sb_json(&s->out, text, len);
  sb_adds(&s->out, "}");
}

static void on_say(void *ud, const char *id, const char *text, size_t len) {
  queue_text(ud, id, text, len);
}

/* The turn ends: the webhook waiting for it gets what was said. */
static void turn_ends(server *sv, const char *id) {
  sender *s = sender_get(sv, id, true);
  if (s->post) answer_queued(sv, s->post);
}

static void on_ask(void *ud, const char *id, const char *prompt, size_t len) {
  server *sv = ud;
  if (prompt && len) queue_text(sv, id, prompt, len);
  sender_get(sv, id, true)->waiting = true;
  turn_ends(sv, id);
}

static void on_end(void *ud, const char *id, int how, const char *error) {
  server *sv = ud;
  sender *s = sender_get(sv, id, true);
  s->waiting = s->live = false;
  if (how != FLOWRUN_DONE) {
    sv->failed = true;
    fputc('[', stderr);
    cli_put_text(stderr, id, strlen(id));
    fputs(how == FLOWRUN_PARKED ? "] parked: " : "] error: ", stderr);
    cli_put_text(stderr, error, strlen(error));
    fputc('\n', stderr);
  }
  turn_ends(sv, id);
}

static void on_log(void *ud, const char *id, const char *level, const char *msg) {
  (void)ud;
  fputc('[', stderr);
  cli_put_text(stderr, id ? id : "-", strlen(id ? id : "-"));
  fprintf(stderr, "] %s: ", level);
  cli_put_text(stderr, msg, strlen(msg));
  fputc('\n', stderr);
}

static char *xstrdup(const char *s) {
  char *p = strdup(s ? s : "");
  if (!p) {
    fputs("flowrun serve: out of memory\n", stderr);
    exit(2);
  }
  return p;
}

/* Counts a call (its last record only) for /metrics; --trace prints each. */
static void on_trace(void *ud, const flowrun_trace *t) {
  server *sv = ud;
  const char *in = t->integration ? t->integration : "";
  size_t i, k;
  if (sv->opts.trace || sv->opts.trace_json) cli_trace(sv->opts.trace, sv->opts.trace_json, t);
  if (!t->final) return;
  for (i = 0; i < sv->ncalls; i++)
    if (strcmp(sv->calls[i].integration, in) == 0 && strcmp(sv->calls[i].label, t->label) == 0) break;
  if (i == sv->ncalls) {
    calls *c = realloc(sv->calls, (i + 1) * sizeof *c);
    if (!c) return;
    sv->calls = c;
    c[i] = (calls){ xstrdup(in), xstrdup(t->label), 0 };
    sv->ncalls++;
  }
  sv->calls[i].n++;
  for (i = 0; i < sv->nlat; i++)
    if (strcmp(sv->lat[i].integration, in) == 0) break;
  if (i == sv->nlat) {
    latency *l = realloc(sv->lat, (i + 1) * sizeof *l);
    if (!l) return;
    sv->lat = l;
    memset(&l[i], 0, sizeof *l);
    l[i].integration = xstrdup(in);
    sv->nlat++;
  }
  double s = t->elapsed_ms / 1000;
  for (k = 0; k < NB; k++)
    if (s <= bucket_s[k]) sv->lat[i].le[k]++;
  sv->lat[i].count++;
  sv->lat[i].sum += s;
}

/* ---- routes ---- */

/* A label value in the exposition format: \ " and newline escaped. */
static void sb_label(sbuf *b, const char *s) {
  sb_adds(b, "\"");
  for (; *s; s++) {
    if (*s == '\\') sb_adds(b, "\\\\");
    else if (*s == '"') sb_adds(b, "\\\"");
    else if (*s == '\n') sb_adds(b, "\\n");
    else sb_add(b, s, 1);
  }
  sb_adds(b, "\"");
}

/* flowrun_pool_stats: one integration's pool, as two samples. */
static int pool_line(void *ud, const char *integration, int in_flight, int queued) {
  sbuf *b = ((sbuf *)ud);
  char n[64];
  sb_adds(&b[0], "flowrun_pool_in_flight{integration=");
  sb_label(&b[0], integration);
  snprintf(n, sizeof n, "} %d\n", in_flight);
  sb_adds(&b[0], n);
  sb_adds(&b[1], "flowrun_pool_queued{integration=");
  sb_label(&b[1], integration);
  snprintf(n, sizeof n, "} %d\n", queued);
  sb_adds(&b[1], n);
  return 0;
}

/* The pools (gauges) and, with a store, its commits (a counter) and their
** time (a histogram). */
static void metrics_runtime(server *sv, sbuf *b) {
  sbuf pool[2] = { { 0 }, { 0 } };
  flowrun_commits cs;
  char line[256];
  flowrun_pool_stats(sv->rt, pool_line, pool);
  sb_adds(b, "# HELP flowrun_pool_in_flight api_node calls holding a connection, by integration.\n"
             "# TYPE flowrun_pool_in_flight gauge\n");
  if (pool[0].n) sb_add(b, pool[0].p, pool[0].n);
  sb_adds(b, "# HELP flowrun_pool_queued api_node calls waiting for a connection or their turn, by integration.\n"
             "# TYPE flowrun_pool_queued gauge\n");
  if (pool[1].n) sb_add(b, pool[1].p, pool[1].n);
  free(pool[0].p);
  free(pool[1].p);
  if (flowrun_store_stats(sv->rt, &cs) != FLOWRUN_OK) return;
  snprintf(line, sizeof line,
           "# HELP flowrun_store_commits_total Commits of the store.\n"
           "# TYPE flowrun_store_commits_total counter\nflowrun_store_commits_total %lld\n"
           "# HELP flowrun_store_commit_seconds The store's commit time.\n"
           "# TYPE flowrun_store_commit_seconds histogram\n", cs.commits);
  sb_adds(b, line);
  for (int k = 0; k < FLOWRUN_STORE_BUCKETS; k++) {
    snprintf(line, sizeof line, "flowrun_store_commit_seconds_bucket{le=\"%g\"} %lld\n",
             cs.le_s[k], cs.le[k]);
    sb_adds(b, line);
  }
  snprintf(line, sizeof line,
           "flowrun_store_commit_seconds_bucket{le=\"+Inf\"} %lld\n"
           "flowrun_store_commit_seconds_sum %.6f\nflowrun_store_commit_seconds_count %lld\n",
           cs.commits, cs.seconds, cs.commits);
  sb_adds(b, line);
}

/* GET /metrics: the Prometheus text exposition format (0.0.4). */
static void metrics(server *sv, sbuf *b) {
  char line[1024];
  long long waiting = 0;
  size_t i, k;
  for (i = 0; i < NBUCKETS; i++)
    for (sender *s = sv->bucket[i]; s; s = s->next) waiting += s->waiting;
  snprintf(line, sizeof line,
           "# HELP flowrun_sessions_live Sessions started and not ended, in memory.\n"
           "# TYPE flowrun_sessions_live gauge\nflowrun_sessions_live %d\n"
           "# HELP flowrun_sessions_waiting Sessions waiting for the user's next message.\n"
           "# TYPE flowrun_sessions_waiting gauge\nflowrun_sessions_waiting %lld\n",
           flowrun_sessions(sv->rt), waiting);
  sb_adds(b, line);
  snprintf(line, sizeof line,
           "# HELP flowrun_webhooks_total Webhook messages taken.\n"
           "# TYPE flowrun_webhooks_total counter\nflowrun_webhooks_total %lld\n"
           "# HELP flowrun_bad_requests_total Requests answered with a 4xx.\n"
           "# TYPE flowrun_bad_requests_total counter\nflowrun_bad_requests_total %lld\n",
           sv->webhooks, sv->bad_requests);
  sb_adds(b, line);
  sb_adds(b, "# HELP flowrun_calls_total api_node calls by integration and label.\n"
             "# TYPE flowrun_calls_total counter\n");
  for (i = 0; i < sv->ncalls; i++) {
    sb_adds(b, "flowrun_calls_total{integration=");
    sb_label(b, sv->calls[i].integration);
    sb_adds(b, ",label=");
    sb_label(b, sv->calls[i].label);
    snprintf(line, sizeof line, "} %lld\n", sv->calls[i].n);
    sb_adds(b, line);
  }
  sb_adds(b, "# HELP flowrun_call_duration_seconds api_node call time (retries included) by integration.\n"
             "# TYPE flowrun_call_duration_seconds histogram\n");
  for (i = 0; i < sv->nlat; i++) {
    latency *l = &sv->lat[i];
    for (k = 0; k <= NB; k++) {
      sb_adds(b, "flowrun_call_duration_seconds_bucket{integration=");
      sb_label(b, l->integration);
      if (k < NB) snprintf(line, sizeof line, ",le=\"%g\"} %lld\n", bucket_s[k], l->le[k]);
      else snprintf(line, sizeof line, ",le=\"+Inf\"} %lld\n", l->count);
      sb_adds(b, line);
    }
    sb_adds(b, "flowrun_call_duration_seconds_sum{integration=");
    sb_label(b, l->integration);
    snprintf(line, sizeof line, "} %.6f\n", l->sum);
    sb_adds(b, line);
    sb_adds(b, "flowrun_call_duration_seconds_count{integration=");
    sb_label(b, l->integration);
    snprintf(line, sizeof line, "} %lld\n", l->count);
    sb_adds(b, line);
  }
  metrics_runtime(sv, b);
}

/* lua_pcall'd: 1 decode, 2 body. Pushes sender, message and number (nil
** when none), or raises. */
static int l_parse(lua_State *L) {
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) return luaL_error(L, "not JSON");
  if (!lua_istable(L, -1)) return luaL_error(L, "expected a JSON object");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (!k) return luaL_error(L, "expected a JSON object");
    if (strcmp(k, "sender") == 0) {
      if (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) == 0
          || strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1)
          || !cli_utf8_valid(lua_tostring(L, -1), lua_rawlen(L, -1)))
        return luaL_error(L, "\"sender\": expected a non-empty string");
    } else if (strcmp(k, "message") == 0) {
      if (lua_type(L, -1) != LUA_TSTRING || strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
        return luaL_error(L, "\"message\": expected a string");
    } else if (strcmp(k, "number") == 0) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
        return luaL_error(L, "\"number\": expected a whole number from 1");
    } else if (strcmp(k, "metadata") != 0)   /* Rasa's channels may send it: ignored */
      return luaL_error(L, "unknown key \"%s\" (expected sender, message and number)", k);
    lua_pop(L, 1);
  }
  lua_getfield(L, -1, "sender");
  if (lua_isnil(L, -1)) return luaL_error(L, "\"sender\" is missing");
  lua_getfield(L, -2, "message");
  if (lua_isnil(L, -1)) return luaL_error(L, "\"message\" is missing");
  lua_getfield(L, -3, "number");
  return 3;
}

/* The number of the last message the sender's conversation took (1: its
** start), 0 when none: the store's count, else what was taken here. */
static long long last_taken(server *sv, sender *s) {
  if (sv->st.path) {
    long long stored = flowrun_stored(sv->rt, s->id);
    return stored >= 0 ? stored + 1 : 0;
  }
  return s->live ? s->number : 0;
}

/* A numbered webhook that is not the next message: the last one sent again
** (also after its conversation ended) gets the same answer again (none
** kept, after a restart: []); any other number answers 409 naming the one
** expected. Nothing is taken. */
static void not_next(server *sv, req *q, sender *s, long long number, long long last) {
  char msg[160];
  sbuf b = { 0 };
  if (number == last) {
    if (s->last_reply && s->last_number == number) answer(sv, q, 200, s->last_reply, strlen(s->last_reply));
    else answer(sv, q, 200, "[]", 2);
    return;
  }
  snprintf(msg, sizeof msg, number < last ? "number %lld was taken already: the next is %lld"
           : "number %lld leaves a gap: the next is %lld", number, last + 1);
  sb_adds(&b, "{\"error\":");
  sb_json(&b, msg, strlen(msg));
  snprintf(msg, sizeof msg, ",\"expected\":%lld}", last + 1);
  sb_adds(&b, msg);
  sv->bad_requests++;
  answer(sv, q, 409, b.p, b.n);
  free(b.p);
}

/* POST /webhooks/rest: the message goes to its session; the answer waits
** for the turn's end. With "number", a message taken already is not taken
** again (README: flowrun serve). */
static void webhook(server *sv, req *q) {
  lua_State *L = flowrun_lua(sv->rt);
  int top = lua_gettop(L), rc;
  const char *id, *text;
  size_t tlen;
  long long number, last;
  bool again = false;
  sender *s;
  lua_pushcfunction(L, l_parse);
  lua_rawgeti(L, LUA_REGISTRYINDEX, sv->decode_ref);
  lua_pushlstring(L, q->body.p ? q->body.p : "", q->body.n);
  if (lua_pcall(L, 2, 3, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    const char *colon = msg ? strstr(msg, ": ") : NULL;   /* without luaL_error's "?:" */
    answer_error(sv, q, 400, colon && msg[0] == '?' ? colon + 2 : msg ? msg : "?");
    lua_settop(L, top);
    return;
  }
  id = lua_tostring(L, -3);
  text = lua_tolstring(L, -2, &tlen);
  number = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
  s = sender_get(sv, id, true);
  if (s->post) {
    answer_error(sv, q, 409, "the sender's previous message is still being answered");
    lua_settop(L, top);
    return;
  }
  if (number) {                         /* the answer to the last one was lost: again */
    last = s->last_reply && number == s->last_number ? number : last_taken(sv, s);
    /* in a shared store, the last message sent again to a host that did
       not answer it (its host died): sent again, its outputs come here */
    again = number == last && !(s->last_reply && s->last_number == number) && sv->shared;
    if (number != last + 1 && !again) {
      not_next(sv, q, s, number, last);
      lua_settop(L, top);
      return;
    }
  }
  q->s = s;
  q->number = number;
  s->waiting = false;
  rc = again && number == 1 ? flowrun_start(sv->rt, id, sv->flow, 1, &text)
     : number == 1 ? FLOWRUN_NOSESSION
     : number ? flowrun_send_n(sv->rt, id, number - 1, text, tlen)
     : flowrun_send(sv->rt, id, text, tlen);
  if (rc == FLOWRUN_NOSESSION && number > 1) {   /* it ended (a store keeps its row) */
    answer_error(sv, q, 409, "the conversation has ended: a message without \"number\" starts another");
    lua_settop(L, top);
    return;
  }
  if (rc == FLOWRUN_NOSESSION) {
    const char *argv[1] = { text };
    rc = flowrun_start(sv->rt, id, sv->flow, 1, argv);
    s->number = 0;
    s->live = rc == FLOWRUN_OK;
  }
  if (rc != FLOWRUN_OK) {
    answer_error(sv, q, 500, flowrun_errmsg(sv->rt));
    lua_settop(L, top);
    return;
  }
  s->number++;
  sv->webhooks++;
  s->post = q;
  if (s->poll) answer_queued(sv, s->poll);    /* what came before goes to the poll */
  suspend(sv, q, sv->reply_ms);
  lua_settop(L, top);
}

/* GET /webhooks/rest/messages?sender=ID[&wait=S] */
static void poll_messages(server *sv, req *q) {
  const char *id = MHD_lookup_connection_value(q->c, MHD_GET_ARGUMENT_KIND, "sender");
  const char *w = MHD_lookup_connection_value(q->c, MHD_GET_ARGUMENT_KIND, "wait");
  long long wait_s = POLL_WAIT_S;
  sender *s;
  if (!id || !*id) {
    answer_error(sv, q, 400, "expected ?sender=ID");
    return;
  }
  if (w) {
    char *end;
    wait_s = strtoll(w, &end, 10);
    if (*end || end == w || wait_s < 0 || wait_s > POLL_MAX_S) {
      answer_error(sv, q, 400, "wait: expected whole seconds from 0 to 60");
      return;
    }
  }
  s = sender_get(sv, id, true);
  if (s->poll) answer_queued(sv, s->poll);   /* a newer poll replaces it */
  q->s = s;
  if (s->out.n && !s->post) {
    answer_queued(sv, q);
    return;
  }
  s->poll = q;
  suspend(sv, q, wait_s * 1000);
}

/* Is the request's bearer token the one given? Compared in constant time. */
static bool authorized(server *sv, struct MHD_Connection *c) {
  const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
  size_t tn, hn, i;
  unsigned char diff;
  if (!sv->token) return true;
  if (!h || strncmp(h, "Bearer ", 7) != 0) return false;
  h += 7;
  tn = strlen(sv->token), hn = strlen(h);
  diff = tn != hn;
  for (i = 0; i < tn; i++) diff |= (unsigned char)(sv->token[i] ^ (i < hn ? h[i] : 0));
  return diff == 0;
}

/* Sends q's answer. */
static enum MHD_Result respond(struct MHD_Connection *c, req *q, const char *ctype,
                               const char *allow) {
  struct MHD_Response *r = MHD_create_response_from_buffer(q->reply_len, q->reply,
                                                           MHD_RESPMEM_MUST_COPY);
  enum MHD_Result ok;
  if (!r) return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
  if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
  if (q->status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
  ok = MHD_queue_response(c, (unsigned)q->status, r);
  MHD_destroy_response(r);
  return ok;
}

static int route_of(const char *url) {
  if (strcmp(url, "/webhooks/rest") == 0 || strcmp(url, "/webhooks/rest/webhook") == 0)
    return R_WEBHOOK;
  if (strcmp(url, "/webhooks/rest/messages") == 0) return R_POLL;
  if (strcmp(url, "/health") == 0) return R_HEALTH;
  if (strcmp(url, "/metrics") == 0) return R_METRICS;
  return R_NONE;
}

/* MHD: called at the headers, for each piece of body, at the end, and
** again after a resume. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *data, size_t *size, void **ctx) {
  server *sv = cls;
  req *q = *ctx;
  int route = route_of(url);
  const char *allow = route == R_WEBHOOK ? "POST" : "GET";
  bool method_ok = strcmp(method, allow) == 0;
  (void)version;
  if (!q) {
    if (!(q = calloc(1, sizeof *q))) return MHD_NO;
    q->c = c;
    *ctx = q;
    return MHD_YES;
  }
  if (*size > 0) {
    if (q->body.n + *size > MAX_BODY) q->too_big = true;
    else if (!q->too_big) sb_add(&q->body, data, *size);
    *size = 0;
    return MHD_YES;
  }
  if (!q->ready) {
    if (route == R_NONE) answer_error(sv, q, 404, "no such route");
    else if (!method_ok) answer_error(sv, q, 405, "method not allowed");
    else if (route == R_HEALTH) {
      char b[128];
      int n = snprintf(b, sizeof b, "{\"status\":\"ok\",\"sessions\":%d}", flowrun_sessions(sv->rt));
      answer(sv, q, 200, b, (size_t)n);
    } else if (route == R_METRICS) {
      sbuf b = { 0 };
      metrics(sv, &b);
      answer(sv, q, 200, b.p, b.n);
      free(b.p);
    } else if (!authorized(sv, c)) answer_error(sv, q, 401, "a bearer token is needed");
    else if (q->too_big) answer_error(sv, q, 413, "the body is over 64 KiB");
    else if (stopping) answer_error(sv, q, 503, "the server is stopping");
    else if (route == R_WEBHOOK) webhook(sv, q);
    else poll_messages(sv, q);
    if (!q->ready) return MHD_YES;      /* suspended */
  }
  return respond(c, q, route == R_METRICS && q->status == 200
                 ? "text/plain; version=0.0.4; charset=utf-8" : "application/json",
                 q->status == 405 ? allow : NULL);
}

/* MHD: the request is over (answered, or its client went). */
static void on_done(void *cls, struct MHD_Connection *c, void **ctx,
                    enum MHD_RequestTerminationCode toe) {
  server *sv = cls;
  req *q = *ctx;
  (void)c, (void)toe;
  if (!q) return;
  unwait(sv, q);
  if (q->s && q->s->post == q) q->s->post = NULL;
  if (q->s && q->s->poll == q) q->s->poll = NULL;
  free(q->body.p);
  free(q->reply);
  free(q);
  *ctx = NULL;
}

/* The loop saw MHD's epoll descriptor readable. */
static void on_mhd(void *ud, int fd) {
  (void)fd;
  MHD_run(((server *)ud)->d);
}

static const char usage[] =
  "usage: flowrun serve [options] FLOW.lua --port N   conversations over HTTP webhooks\n"
  "  -I FILE, --trace, --trace-json FILE, --allow LIST, --limit NAME=N: as for run\n"
  "  --port N           listen on 127.0.0.1:N (0: any free port; it is printed)\n"
  "  --store PATH, --resident N, --idle SECONDS, --ttl SECONDS, --keep-ended SECONDS,\n"
  "  --on-mismatch park: as for host; --store postgresql://..., --node NAME,\n"
  "  --lease-ms MS: many hosts (flowrun serve --help)\n"
  "  --token-env NAME   webhooks need \"Authorization: Bearer $NAME\"\n"
  "  --reply-timeout SECONDS  a webhook answers after this long at most (30); the\n"
  "                     rest comes through GET /webhooks/rest/messages?sender=ID\n";

/* Raises the open-files limit to its hard limit (many senders at once). */
static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static void free_server(server *sv) {
  size_t i;
  for (i = 0; i < NBUCKETS; i++) {
    sender *s = sv->bucket[i], *next;
    for (; s; s = next) {
      next = s->next;
      free(s->id);
      free(s->out.p);
      free(s->last_reply);
      free(s);
    }
  }
  for (i = 0; i < sv->ncalls; i++) free(sv->calls[i].integration), free(sv->calls[i].label);
  for (i = 0; i < sv->nlat; i++) free(sv->lat[i].integration);
  free(sv->calls);
  free(sv->lat);
}

int flowrun_serve_main(int argc, char **argv) {
  server sv = { 0 };
  const char *token_env = NULL;
  long port = -1;
  int i, status = 0;
  struct sockaddr_in sa;
  const union MHD_DaemonInfo *info;
  int epfd = -1;
  sv.reply_ms = 30000;
  sv.st.keep_s = -1;
  for (i = 0; i < argc; i++) {
    const char *a = argv[i];
    int took = cli_opts_arg(&sv.opts, argc, argv, &i, "flowrun serve");
    if (!took) took = cli_store_arg(&sv.st, argc, argv, &i, "flowrun serve");
    if (took < 0) return 2;
    if (took) continue;
    if (strcmp(a, "--token-env") == 0 && i + 1 < argc) token_env = argv[++i];
    else if ((strcmp(a, "--port") == 0 || strcmp(a, "--reply-timeout") == 0) && i + 1 < argc) {
      char *end;
      long long v = strtoll(argv[++i], &end, 10);
      if (*end || end == argv[i] || v < 0 || (a[2] == 'p' && v > 65535)) {
        fprintf(stderr, "flowrun serve: %s: expected a whole number >= 0%s, got '%s'\n", a,
                a[2] == 'p' ? " and <= 65535" : "", argv[i]);
        return 2;
      }
      if (a[2] == 'p') port = (long)v;
      else sv.reply_ms = v * 1000;
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "flowrun serve: unknown option '%s' (or missing value)\n%s", a, usage);
      return 2;
    } else if (!sv.flow) sv.flow = a;
    else {
      fprintf(stderr, "flowrun serve: one flow only (a sender's first message is its argument)\n");
      return 2;
    }
  }
  if (!sv.flow || port < 0) {
    fputs(usage, stderr);
    return 2;
  }
  if (token_env && !((sv.token = getenv(token_env)) && *sv.token)) {
    fprintf(stderr, "flowrun serve: --token-env %s: the variable is not set\n", token_env);
    return 2;
  }
  flowrun_callbacks cb = { .say = on_say, .ask = on_ask, .end = on_end, .log = on_log,
                           .trace = on_trace, .ud = &sv, .size = sizeof(flowrun_callbacks),
                           .trace_attempts = sv.opts.trace || sv.opts.tjson };
  if ((status = cli_runtime_open(&sv.rt, &cb, &sv.opts, sv.flow, &sv.st, &sv.decode_ref,
                                 "flowrun serve")) != 0)
    goto done;
  sv.shared = sv.st.path && (strncmp(sv.st.path, "postgresql://", 13) == 0
                             || strncmp(sv.st.path, "postgres://", 11) == 0);
  raise_nofile();
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sv.d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, (uint16_t)port, NULL, NULL,
                          on_request, &sv,
                          MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                          MHD_OPTION_NOTIFY_COMPLETED, on_done, &sv,
                          MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNS,
                          MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u,
                          MHD_OPTION_CONNECTION_TIMEOUT, 120u,
                          MHD_OPTION_END);
  if (!sv.d || !(info = MHD_get_daemon_info(sv.d, MHD_DAEMON_INFO_BIND_PORT))) {
    fprintf(stderr, "flowrun serve: cannot listen on 127.0.0.1:%ld: %s\n", port, strerror(errno));
    status = 2;
    goto done;
  }
  struct sigaction act = { .sa_handler = on_signal };   /* before "listening": a client may stop it then */
  sigemptyset(&act.sa_mask);
  sigaction(SIGTERM, &act, NULL);
  sigaction(SIGINT, &act, NULL);
  signal(SIGPIPE, SIG_IGN);
  printf("listening on http://127.0.0.1:%u\n", (unsigned)info->port);
  fflush(stdout);
  info = MHD_get_daemon_info(sv.d, MHD_DAEMON_INFO_EPOLL_FD);
  epfd = info ? info->epoll_fd : -1;
  if (epfd >= 0) flowrun_watch(sv.rt, epfd, on_mhd, &sv);
  cli_watchdog_start(&sv.opts.grants, sv.rt);
  while (!stopping && !flowrun_store_failed(sv.rt)) {
    MHD_UNSIGNED_LONG_LONG mt;
    int wait = 100;                     /* a signal, a poll's deadline: looked at this often */
    MHD_run(sv.d);
    expire(&sv);
    if (MHD_get_timeout(sv.d, &mt) == MHD_YES && mt < (MHD_UNSIGNED_LONG_LONG)wait) wait = (int)mt;
    if (cli_step(sv.rt, wait, CLI_SLICE_MS, &sv.failed) <= 0 && flowrun_store_failed(sv.rt)) break;
  }
  /* going: the requests still waiting get what they have (ones that come
     meanwhile get 503), then the daemon stops: libmicrohttpd refuses to stop
     with a connection suspended, and a resumed one leaves that state in a
     later MHD_run */
  stopping = 1;                         /* also when the store failed: no request waits now */
  for (int k = 0; k < 3; k++) {
    while (sv.waits) answer_queued(&sv, sv.waits);
    MHD_run(sv.d);
  }
  status = flowrun_store_failed(sv.rt) ? 3 : 0;
  if (status) fprintf(stderr, "flowrun serve: %s\n", flowrun_errmsg(sv.rt));
  cli_watchdog_stop();
done:
  if (sv.d) {
    if (epfd >= 0) flowrun_watch(sv.rt, epfd, NULL, NULL);
    MHD_stop_daemon(sv.d);
  }
  flowrun_free(sv.rt);
  free_server(&sv);
  return cli_output_done(status, sv.opts.trace_json, "flowrun serve");
}
