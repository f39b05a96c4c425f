/*
** call.c -- api_node: one HTTP request to an integration (SPEC 3).
**
** A call is a userdata: its buffers are freed in __gc, and while in flight
** it is anchored in the registry. api_node validates the spec (misuse
** raises before anything is sent), builds the URL with libcurl's URL API,
** takes a slot of the integration's pool (or queues for one), and adds an
** easy handle to the runtime's multi handle. libcurl's callbacks only fill
** C buffers; when the transfer ends the loop decides the label, retries or
** follows a redirect, and finally makes the waiting session ready. The
** session builds the response table itself when it resumes.
*/
#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#define CALL_MT "flowrun.call"
#define MAX_HOPS 5

enum { C_NEW, C_QUEUED, C_ACTIVE, C_BACKOFF, C_DONE };

typedef struct buf { char *p; size_t len, cap; } buf;

struct call {
  flowrun *rt;
  session *s;                           /* NULL: a blocking call */
  integration *ig;
  CURL *easy;
  int ref;                              /* anchor while in flight */
  int phase;
  bool slot;                            /* holds a pool slot */
  bool retry_ok;                        /* not POST/PATCH, or idempotent */
  bool too_large;
  char method[8];
  char *url;                            /* the URL of this hop */
  struct curl_slist *hdrs;
  char *body;
  size_t bodylen;
  fr_results results;
  long timeout_ms;
  int attempts, hops;
  double t0, attempt_t0;
  fr_timer timer;                       /* queue limit or backoff */
  call *qnext;                          /* waiting for a slot */
  buf rbody, rhdr;                      /* the response as it arrives */
  int status;                           /* of a complete response */
  const char *label;                    /* set when decided */
  const char *reason;
  char *error;
  char codelabel[16];
  char errbuf[CURL_ERROR_SIZE];
};

static const char *const LABEL_OTHER = "other", *const LABEL_ERROR = "error",
  *const LABEL_TIMEOUT = "timeout", *const LABEL_MAXCONN = "max-connection";

/* ---- result sets ---- */

static bool is_code(const char *s) {
  return s[0] >= '1' && s[0] <= '5' && isdigit((unsigned char)s[1])
      && isdigit((unsigned char)s[2]) && s[3] == '\0';
}

void fr_parse_results(lua_State *L, int idx, const char *what, fr_results *r,
                      bool need200) {
  static const struct { const char *name; uint8_t bit; } defaults[] = {
    { "other", LBL_OTHER }, { "error", LBL_ERROR },
    { "timeout", LBL_TIMEOUT }, { "max-connection", LBL_MAXCONN },
  };
  lua_Integer n, i;
  if (!lua_istable(L, idx))
    luaL_error(L, "%s: expected an array of result names like {\"200\", \"404\"}, got %s",
               what, luaL_typename(L, idx));
  n = (lua_Integer)lua_rawlen(L, idx);
  for (i = 1; i <= n; i++) {
    const char *s;
    size_t k;
    if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
      luaL_error(L, "%s[%d]: expected a string like \"200\", got %s", what,
                 (int)i, luaL_typename(L, -1));
    s = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (is_code(s)) {
      int c = atoi(s);
      r->code[c / 8] |= 1 << (c % 8);
      continue;
    }
    if (s[0] >= '1' && s[0] <= '5' && s[1] == 'x' && s[2] == 'x' && !s[3]) {
      r->cls |= 1 << (s[0] - '0');
      continue;
    }
    for (k = 0; k < 4; k++)
      if (strcasecmp(s, defaults[k].name) == 0) break;
    if (k < 4 && strcmp(s, defaults[k].name) == 0) {
      r->defaults |= defaults[k].bit;
      continue;
    }
    if (k < 4 || (s[0] >= '1' && s[0] <= '5' && (s[1] == 'x' || s[1] == 'X')
                  && (s[2] == 'x' || s[2] == 'X') && !s[3]))
      luaL_error(L, "%s: result labels must be lower case: \"%s\"", what, s);
    luaL_error(L, "%s: unknown result \"%s\" (use a status like \"404\", a "
               "class like \"4xx\", or other, error, timeout, max-connection)",
               what, s);
  }
  if (need200 && !(r->code[200 / 8] & (1 << (200 % 8))) && !(r->cls & (1 << 2)))
    luaL_error(L, "%s: must include \"200\" (or \"2xx\")", what);
}

/* The declared result matching status: the code, -class, or 0. */
int fr_results_status(const fr_results *r, int status) {
  if (status >= 0 && status < 600 && (r->code[status / 8] & (1 << (status % 8))))
    return status;
  if (status >= 100 && status < 600 && (r->cls & (1 << (status / 100))))
    return -(status / 100);
  return 0;
}

static uint8_t default_bit(const char *label) {
  return label == LABEL_OTHER ? LBL_OTHER : label == LABEL_ERROR ? LBL_ERROR
       : label == LABEL_TIMEOUT ? LBL_TIMEOUT : label == LABEL_MAXCONN ? LBL_MAXCONN : 0;
}

/* ---- query strings ---- */

/* Pushes the string form of a query or params value; raises otherwise. */
static const char *scalar(lua_State *L, int idx, const char *what, const char *key) {
  int t = lua_type(L, idx);
  if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
    luaL_error(L, "%s.%s: expected a string, number or boolean, got %s",
               what, key, luaL_typename(L, idx));
  return luaL_tolstring(L, idx, NULL);
}

/* Appends "k=v" (percent-encoded) to the array at -3, keeping count in *n.
** Expects the key string at -2 and the value string at -1; pops both. */
static void add_pair(lua_State *L, int *n) {
  char *k = curl_easy_escape(NULL, lua_tostring(L, -2), (int)lua_rawlen(L, -2));
  char *v = curl_easy_escape(NULL, lua_tostring(L, -1), (int)lua_rawlen(L, -1));
  if (!k || !v) { curl_free(k); curl_free(v); luaL_error(L, "out of memory"); }
  lua_pushfstring(L, "%s=%s", k, v);
  curl_free(k);
  curl_free(v);
  lua_rawseti(L, -4, ++*n);
  lua_pop(L, 2);
}

void fr_query_pairs(lua_State *L, int idx, const char *what) {
  int n = 0, out, keys, nk = 0, i;
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    luaL_error(L, "%s: expected a table, got %s", what, luaL_typename(L, idx));
  lua_newtable(L);
  out = lua_gettop(L);
  if (lua_rawgeti(L, idx, 1) == LUA_TTABLE) {   /* { {"k", v}, ... } */
    for (i = 1; i <= (int)lua_rawlen(L, idx); i++) {
      lua_settop(L, out);
      lua_rawgeti(L, idx, i);
      if (!lua_istable(L, -1) || lua_rawgeti(L, -1, 1) != LUA_TSTRING)
        luaL_error(L, "%s[%d]: expected a pair like {\"tag\", \"a\"}", what, i);
      lua_pushvalue(L, out);
      lua_pushvalue(L, -2);
      lua_rawgeti(L, out + 1, 2);
      scalar(L, -1, what, lua_tostring(L, -2));
      lua_remove(L, -2);
      add_pair(L, &n);
    }
    lua_settop(L, out);
    return;
  }
  lua_newtable(L);                      /* the keys, sorted */
  keys = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "%s: keys must be strings (or use the list form {{\"k\", v}, ...})", what);
    lua_pushvalue(L, -1);
    lua_rawseti(L, keys, ++nk);
  }
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "sort");
  lua_pushvalue(L, keys);
  lua_call(L, 1, 0);
  for (i = 1; i <= nk; i++) {
    int k, v;
    lua_settop(L, keys);
    lua_rawgeti(L, keys, i);
    k = lua_gettop(L);
    lua_pushvalue(L, k);
    lua_gettable(L, idx);
    v = lua_gettop(L);
    if (lua_istable(L, v)) {            /* tag = {"a", "b"}: repeat the key */
      for (int j = 1; j <= (int)lua_rawlen(L, v); j++) {
        lua_pushvalue(L, out);
        lua_pushvalue(L, k);
        lua_rawgeti(L, v, j);
        scalar(L, -1, what, lua_tostring(L, k));
        lua_remove(L, -2);
        add_pair(L, &n);
        lua_pop(L, 1);
      }
    } else {
      lua_pushvalue(L, out);
      lua_pushvalue(L, k);
      scalar(L, v, what, lua_tostring(L, k));
      add_pair(L, &n);
      lua_pop(L, 1);
    }
  }
  lua_settop(L, out);
}

/* ---- the call object ---- */

static void buf_free(buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

static bool buf_add(buf *b, const char *p, size_t n) {
  if (b->cap - b->len < n + 1) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) return false;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
  b->p[b->len] = '\0';
  return true;
}

static void easy_release(flowrun *rt, CURL *e) {
  CURL **pool;
  if (!rt || !(pool = realloc(rt->easy_pool, (rt->neasy + 1) * sizeof *pool))) {
    curl_easy_cleanup(e);
    return;
  }
  rt->easy_pool = pool;
  pool[rt->neasy++] = e;
}

/* Unlinks c from everything of the runtime: transfer, queue, timer, slot,
** anchor. Leaves its outcome and buffers. */
static void detach(call *c) {
  flowrun *rt = c->rt;
  if (!rt) return;
  if (c->easy) {
    curl_multi_remove_handle(rt->multi, c->easy);
    easy_release(rt, c->easy);
    c->easy = NULL;
  }
  fr_timer_cancel(rt, &c->timer);
  if (c->phase == C_QUEUED) {
    call **p = &c->ig->qhead;
    c->ig->qtail = NULL;
    while (*p) {
      if (*p == c) *p = c->qnext;
      else { c->ig->qtail = *p; p = &(*p)->qnext; }
    }
  }
  if (c->slot) {
    c->slot = false;
    c->ig->inflight--;
  }
  if (c->ref != LUA_NOREF) {
    lua_rawgeti(rt->L, LUA_REGISTRYINDEX, rt->calls_ref);
    luaL_unref(rt->L, -1, c->ref);
    lua_pop(rt->L, 1);
    c->ref = LUA_NOREF;
    rt->ncalls--;
  }
}

static int call_gc(lua_State *L) {
  call *c = luaL_checkudata(L, 1, CALL_MT);
  detach(c);
  free(c->url);
  c->url = NULL;
  curl_slist_free_all(c->hdrs);
  c->hdrs = NULL;
  free(c->body);
  c->body = NULL;
  free(c->error);
  c->error = NULL;
  buf_free(&c->rbody);
  buf_free(&c->rhdr);
  if (c->ig) fr_integration_release(c->ig);
  c->ig = NULL;
  return 0;
}

/* The runtime goes away: no call may touch it after this. */
void fr_calls_cancel_all(flowrun *rt) {
  lua_State *L = rt->L;
  if (!L || rt->calls_ref == LUA_NOREF) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->calls_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    call *c = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (c && c->rt) {
      detach(c);
      c->rt = NULL;
    }
  }
  lua_pop(L, 1);
}

static void pump(integration *ig);

void fr_call_cancel(call *c) {
  bool had_slot = c->slot;
  detach(c);
  c->phase = C_DONE;
  c->s = NULL;
  if (had_slot) pump(c->ig);
}

/* ---- libcurl callbacks: C buffers only ---- */

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  call *c = ud;
  n *= size;
  if ((curl_off_t)(c->rbody.len + n) > c->ig->max_response_bytes) {
    c->too_large = true;
    return 0;                           /* aborts: CURLE_WRITE_ERROR */
  }
  return buf_add(&c->rbody, p, n) ? n : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  call *c = ud;
  n *= size;
  if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) c->rhdr.len = 0;  /* new response */
  return buf_add(&c->rhdr, p, n) ? n : 0;
}

/* ---- outcome ---- */

static void set_default(call *c, const char *label, const char *reason,
                        const char *fmt, ...) {
  char msg[CURL_ERROR_SIZE + 256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  free(c->error);
  c->error = strdup(msg);
  c->label = label;
  c->reason = reason;
}

static void set_status(call *c, int status) {
  int m = fr_results_status(&c->results, status);
  c->status = status;
  if (m > 0) snprintf(c->codelabel, sizeof c->codelabel, "%d", m);
  else if (m < 0) snprintf(c->codelabel, sizeof c->codelabel, "%dxx", -m);
  c->label = m ? c->codelabel : LABEL_OTHER;
}

static void classify(call *c, CURLcode rc, curl_off_t connect_us) {
  const char *detail = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT:
    set_default(c, LABEL_TIMEOUT, connect_us > 0 ? "timeout" : "connect_timeout",
                "%s", detail);
    return;
  case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY:
    set_default(c, LABEL_ERROR, "dns", "%s", detail);
    return;
  case CURLE_COULDNT_CONNECT:
    set_default(c, LABEL_ERROR, "refused", "%s", detail);
    return;
  case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM: case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE: case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH: case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CRL_BADFILE: case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_USE_SSL_FAILED: case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED: case CURLE_SSL_ENGINE_INITFAILED:
    set_default(c, LABEL_ERROR, "tls", "%s", detail);
    return;
  case CURLE_FILESIZE_EXCEEDED: case CURLE_WRITE_ERROR:
    if (rc == CURLE_FILESIZE_EXCEEDED || c->too_large) {
      set_default(c, LABEL_ERROR, "too_large",
                  "response body larger than max_response_bytes (%ld) of integration '%s'",
                  (long)c->ig->max_response_bytes, c->ig->name);
      return;
    }
    break;
  case CURLE_RECV_ERROR: case CURLE_SEND_ERROR: case CURLE_PARTIAL_FILE:
  case CURLE_GOT_NOTHING:
    set_default(c, LABEL_ERROR, "reset", "%s", detail);
    return;
  case CURLE_TOO_MANY_REDIRECTS:
    set_default(c, LABEL_ERROR, "redirect", "%s", detail);
    return;
  default:
    break;
  }
  set_default(c, LABEL_ERROR, "protocol", "%s", detail);
}

static void emit_trace(call *c, double elapsed) {
  flowrun *rt = c->rt;
  flowrun_trace t;
  char *url, *err;
  if (!rt->cb.trace) return;
  url = fr_redact(rt, c->url ? c->url : "");
  err = c->error ? fr_redact(rt, c->error) : NULL;
  t.session = c->s ? c->s->id : NULL;
  t.integration = c->ig->name;
  t.method = c->method;
  t.url = url ? url : "";
  t.label = c->label;
  t.reason = c->reason;
  t.error = err;
  t.status = c->status;
  t.attempts = c->attempts;
  t.elapsed_ms = elapsed;
  rt->cb.trace(rt->cb.ud, &t);
  free(url);
  free(err);
}

static void start(call *c);

/* Lets waiting calls of ig take the free slots, oldest first. */
static void pump(integration *ig) {
  while (ig->qhead && ig->inflight < ig->max_connections) {
    call *c = ig->qhead;
    if (!(ig->qhead = c->qnext)) ig->qtail = NULL;
    fr_timer_cancel(c->rt, &c->timer);
    c->phase = C_NEW;
    start(c);
  }
}

static void finish(call *c) {
  integration *ig = c->ig;
  bool had_slot = c->slot;
  c->phase = C_DONE;
  c->t0 = fr_now() - c->t0;             /* from here on: the elapsed time */
  emit_trace(c, c->t0);
  detach(c);
  if (had_slot) pump(ig);
  if (c->s && c->s->call == c) {        /* it waits: wake it */
    c->s->call = NULL;
    fr_session_ready(c->s);
  }
}

/* ---- transfers ---- */

static CURL *easy_take(flowrun *rt) {
  if (rt->neasy > 0) {
    CURL *e = rt->easy_pool[--rt->neasy];
    curl_easy_reset(e);
    return e;
  }
  return curl_easy_init();
}

/* Sends the request for this hop of this attempt. */
static void transfer(call *c) {
  flowrun *rt = c->rt;
  integration *ig = c->ig;
  double left = c->timeout_ms - (fr_now() - c->attempt_t0);
  CURL *e;
  c->rbody.len = c->rhdr.len = 0;
  c->too_large = false;
  c->status = 0;
  c->errbuf[0] = '\0';
  if (left < 1) left = 1;
  if (!(e = c->easy = easy_take(rt))) {
    set_default(c, LABEL_ERROR, "protocol", "out of memory");
    finish(c);
    return;
  }
  curl_easy_setopt(e, CURLOPT_PRIVATE, c);
  curl_easy_setopt(e, CURLOPT_URL, c->url);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->hdrs);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)left);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ig->connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, ig->max_response_bytes);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, ig->tls_verify ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, ig->tls_verify ? 2L : 0L);
  if (ig->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, ig->ca_file);
  if (strcmp(c->method, "HEAD") == 0)
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  else if (strcmp(c->method, "GET") != 0)
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, c->method);
  if (c->body) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->bodylen);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body);
  }
  if (curl_multi_add_handle(rt->multi, e) != CURLM_OK) {
    easy_release(rt, e);
    c->easy = NULL;
    set_default(c, LABEL_ERROR, "protocol", "cannot start the transfer");
    finish(c);
  }
}

static void start(call *c) {
  if (!c->slot) {
    c->slot = true;
    c->ig->inflight++;
  }
  c->phase = C_ACTIVE;
  c->attempts++;
  c->attempt_t0 = fr_now();
  c->hops = 0;
  c->label = c->reason = NULL;
  transfer(c);
}

static void on_call_timer(flowrun *rt, fr_timer *t) {
  call *c = (call *)((char *)t - offsetof(call, timer));
  (void)rt;
  if (c->phase == C_BACKOFF) {
    start(c);
    return;
  }
  set_default(c, LABEL_MAXCONN, "pool_full",
              "integration '%s' has %d calls in flight (max_connections) and "
              "none ended within queue_timeout_ms (%ld)",
              c->ig->name, c->ig->max_connections, c->ig->queue_timeout_ms);
  finish(c);
}

/* Takes a slot of the pool, queues for one, or fails at once. */
static void acquire(call *c) {
  integration *ig = c->ig;
  if (ig->inflight < ig->max_connections && !ig->qhead) {
    start(c);
  } else if (ig->queue_timeout_ms == 0) {
    set_default(c, LABEL_MAXCONN, "pool_full",
                "integration '%s' has %d calls in flight (max_connections)",
                ig->name, ig->max_connections);
    finish(c);
  } else {
    c->phase = C_QUEUED;
    c->qnext = NULL;
    if (ig->qtail) ig->qtail->qnext = c;
    else ig->qhead = c;
    ig->qtail = c;
    fr_timer_arm(c->rt, &c->timer, fr_now() + ig->queue_timeout_ms);
  }
}

/* Schedules another attempt when the retry policy says so. */
static bool retry(call *c, curl_off_t retry_after) {
  integration *ig = c->ig;
  double delay;
  if (c->attempts >= ig->retry_attempts || !c->retry_ok) return false;
  if (!((c->status && fr_results_status(&ig->retry_on, c->status))
        || (ig->retry_on.defaults & default_bit(c->label))))
    return false;
  if (retry_after > 0) {
    delay = retry_after * 1000.0;
    if (delay > ig->retry_max_backoff_ms) return false;
  } else {
    delay = ig->retry_backoff_ms;
    for (int i = 1; i < c->attempts && delay < ig->retry_max_backoff_ms; i++)
      delay *= 2;
    if (delay > ig->retry_max_backoff_ms) delay = ig->retry_max_backoff_ms;
  }
  c->phase = C_BACKOFF;
  fr_timer_arm(c->rt, &c->timer, fr_now() + delay);
  return true;
}

/* Origin of a URL as "scheme://host:port", pushed; false if unparsable. */
static bool same_origin(const char *a, const char *b) {
  static const CURLUPart parts[] = { CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT };
  CURLU *ua = curl_url(), *ub = curl_url();
  bool same = ua && ub && curl_url_set(ua, CURLUPART_URL, a, 0) == CURLUE_OK
              && curl_url_set(ub, CURLUPART_URL, b, 0) == CURLUE_OK;
  for (int i = 0; same && i < 3; i++) {
    char *pa = NULL, *pb = NULL;
    curl_url_get(ua, parts[i], &pa, CURLU_DEFAULT_PORT);
    curl_url_get(ub, parts[i], &pb, CURLU_DEFAULT_PORT);
    same = pa && pb && strcasecmp(pa, pb) == 0;
    curl_free(pa);
    curl_free(pb);
  }
  curl_url_cleanup(ua);
  curl_url_cleanup(ub);
  return same;
}

/* Follows a redirect; false when refused (the label says why). */
static bool follow(call *c, const char *target, int status) {
  char *url;
  if (c->hops >= MAX_HOPS) {
    set_default(c, LABEL_ERROR, "redirect", "more than %d redirects", MAX_HOPS);
    return false;
  }
  if (!same_origin(c->url, target)) {
    set_default(c, LABEL_ERROR, "redirect",
                "redirect to another origin refused: %s", target);
    return false;
  }
  if (!(url = strdup(target))) return false;
  if (status == 303 || ((status == 301 || status == 302) && strcmp(c->method, "POST") == 0)) {
    if (strcmp(c->method, "HEAD") != 0) strcpy(c->method, "GET");
    free(c->body);
    c->body = NULL;
  }
  free(c->url);
  c->url = url;
  c->hops++;
  transfer(c);
  return true;
}

void fr_call_done(flowrun *rt, CURLMsg *m) {
  call *c = NULL;
  CURLcode rc = m->data.result;
  long status = 0;
  curl_off_t connect_us = 0, retry_after = 0;
  char *redirect = NULL;
  CURL *e = m->easy_handle;
  curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&c);
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &connect_us);
  if (connect_us == 0) {                /* 0 too on a reused connection */
    long sent = 0;
    curl_easy_getinfo(e, CURLINFO_REQUEST_SIZE, &sent);
    connect_us = sent;
  }
  curl_easy_getinfo(e, CURLINFO_RETRY_AFTER, &retry_after);
  if (rc == CURLE_OK && c->ig->follow_redirects && status >= 300 && status < 400) {
    char *r = NULL;
    curl_easy_getinfo(e, CURLINFO_REDIRECT_URL, &r);
    if (r) redirect = strdup(r);
  }
  curl_multi_remove_handle(rt->multi, e);
  easy_release(rt, e);
  c->easy = NULL;
  if (rc != CURLE_OK) classify(c, rc, connect_us);
  else if (!redirect) set_status(c, (int)status);
  else {
    bool went = follow(c, redirect, (int)status);
    if (!went) c->status = (int)status;
    free(redirect);
    if (went) return;
  }
  if (!retry(c, retry_after)) finish(c);
}

/* ---- the response ---- */

static bool is_json_type(const char *ct, size_t len) {
  size_t n = 0;
  while (n < len && ct[n] != ';' && ct[n] != ' ') n++;
  return (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
      || (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0);
}

/* Pushes the headers of the last response as a table. */
static void push_headers(lua_State *L, call *c) {
  const char *p = c->rhdr.p, *end = p + c->rhdr.len;
  lua_newtable(L);
  if (!p) return;
  p = memchr(p, '\n', end - p);         /* skip the status line */
  while (p && ++p < end) {
    const char *eol = memchr(p, '\n', end - p), *colon, *v, *ve;
    if (!eol) eol = end;
    colon = memchr(p, ':', eol - p);
    if (colon && colon > p) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (const char *q = p; q < colon; q++) luaL_addchar(&b, tolower((unsigned char)*q));
      luaL_pushresult(&b);
      for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++) {}
      for (ve = eol; ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'); ve--) {}
      lua_pushvalue(L, -1);
      if (lua_rawget(L, -3) == LUA_TSTRING) {   /* repeated: join */
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, ve - v);
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, ve - v);
      }
      lua_rawset(L, -3);
    }
    p = eol;
  }
}

static int decode_json(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "cjson");
  lua_getfield(L, -1, "decode");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

/* Pushes label and response; the call is over. */
static int push_result(lua_State *L, call *c) {
  flowrun *rt = c->rt;
  lua_pushstring(L, c->label);
  lua_createtable(L, 0, 12);
  lua_pushstring(L, c->label);
  lua_setfield(L, -2, "label");
  if (c->status) {
    lua_pushinteger(L, c->status);
    lua_setfield(L, -2, "status");
  }
  if (c->status) push_headers(L, c);
  else lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "headers");
  lua_pushlstring(L, c->status && c->rbody.p ? c->rbody.p : "",
                  c->status ? c->rbody.len : 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "body");
  if (lua_getfield(L, -2, "content-type") == LUA_TSTRING
      && is_json_type(lua_tostring(L, -1), lua_rawlen(L, -1))) {
    lua_pushcfunction(L, decode_json);
    lua_pushvalue(L, -3);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) lua_setfield(L, -5, "json");
    else lua_setfield(L, -5, "json_error");
  }
  lua_pop(L, 3);
  if (c->label == LABEL_ERROR || c->label == LABEL_TIMEOUT || c->label == LABEL_MAXCONN) {
    const char *e = c->error ? c->error : "";
    fr_push_redacted(L, rt, e, strlen(e));
    lua_setfield(L, -2, "error");
    lua_pushstring(L, c->reason);
    lua_setfield(L, -2, "reason");
  }
  lua_pushinteger(L, (lua_Integer)(c->t0 + 0.5));
  lua_setfield(L, -2, "elapsed_ms");
  fr_push_redacted(L, rt, c->url ? c->url : "", c->url ? strlen(c->url) : 0);
  lua_setfield(L, -2, "url");
  lua_pushinteger(L, c->attempts);
  lua_setfield(L, -2, "attempts");
  return 2;
}

static int k_api_node(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return push_result(L, (call *)ctx);
}

/* ---- building the request ---- */

static const char *const spec_keys[] = {
  "integration", "endpoint", "method", "path", "params", "query",
  "query_separator", "headers", "body", "form", "results", "timeout_ms", NULL
};

static const char *const methods[] = {
  "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", NULL
};

/* The field k of the spec at 1, pushed, if of type t (or absent). */
static bool field(lua_State *L, const char *k, int t, const char *want) {
  int got = lua_getfield(L, 1, k);
  if (got == LUA_TNIL) { lua_pop(L, 1); return false; }
  if (got != t)
    luaL_error(L, "api_node: %s: expected %s, got %s", k, want, luaL_typename(L, -1));
  return true;
}

static void resolve_target(lua_State *L, call *c, const char **path) {
  flowrun *rt = c->rt;
  const fr_endpoint *ep = NULL;
  integration *ig = NULL;
  const char *method = NULL;
  if (field(L, "endpoint", LUA_TSTRING, "\"integration.endpoint\"")) {
    const char *s = lua_tostring(L, -1), *dot = strchr(s, '.');
    if (!dot) luaL_error(L, "api_node: endpoint: expected \"integration.endpoint\", got \"%s\"", s);
    if (!(ig = fr_integration_find(rt, s, dot - s)))
      luaL_error(L, "api_node: unknown integration '%s'", lua_pushlstring(L, s, dot - s));
    if (!(ep = fr_endpoint_find(ig, dot + 1)))
      luaL_error(L, "api_node: integration '%s' has no endpoint '%s'", ig->name, dot + 1);
    lua_pop(L, 1);
  }
  if (field(L, "integration", LUA_TSTRING, "a string")) {
    const char *s = lua_tostring(L, -1);
    if (ig && strcmp(ig->name, s) != 0)
      luaL_error(L, "api_node: integration '%s' and endpoint '%s.%s' disagree", s,
                 ig->name, ep->name);
    if (!ig && !(ig = fr_integration_find(rt, s, strlen(s))))
      luaL_error(L, "api_node: unknown integration '%s'%s", s,
                 rt->integrations ? "" : " (no integrations are loaded: use -I FILE)");
    lua_pop(L, 1);
  }
  if (!ig) luaL_error(L, "api_node: integration (or endpoint) is required");
  c->ig = ig;
  ig->refs++;
  method = ep ? ep->method : "GET";
  if (field(L, "method", LUA_TSTRING, "a string")) {
    const char *m = lua_tostring(L, -1);
    int i;
    for (i = 0; methods[i] && strcmp(methods[i], m) != 0; i++) {}
    if (!methods[i])
      luaL_error(L, "api_node: method: expected GET, POST, PUT, PATCH, DELETE or HEAD, got \"%s\"", m);
    if (ep && strcmp(ep->method, m) != 0)
      luaL_error(L, "api_node: method %s differs from endpoint '%s' (%s)", m, ep->name, ep->method);
    method = methods[i];
    lua_pop(L, 1);
  }
  strcpy(c->method, method);
  *path = ep ? ep->path : "";
  if (field(L, "path", LUA_TSTRING, "a string")) {
    if (ep) luaL_error(L, "api_node: give path or endpoint, not both");
    *path = lua_tostring(L, -1);        /* anchored by the spec */
    lua_pop(L, 1);
  }
}

/* Pushes path with {name} placeholders filled from params, encoded. */
static void fill_path(lua_State *L, const char *path, int params) {
  luaL_Buffer b;
  const char *p = path, *open, *close;
  luaL_buffinit(L, &b);
  while ((open = strchr(p, '{')) && (close = strchr(open, '}'))) {
    char *enc;
    luaL_addlstring(&b, p, open - p);
    lua_pushlstring(L, open + 1, close - open - 1);
    if (!params || lua_rawget(L, params) == LUA_TNIL)
      luaL_error(L, "api_node: path placeholder {%s} has no value in params",
                 lua_pushlstring(L, open + 1, close - open - 1));
    const char *v = luaL_tolstring(L, -1, NULL);
    enc = curl_easy_escape(NULL, v, (int)lua_rawlen(L, -1));
    lua_pop(L, 2);
    if (!enc) luaL_error(L, "out of memory");
    luaL_addstring(&b, enc);
    curl_free(enc);
    p = close + 1;
  }
  luaL_addstring(&b, p);
  luaL_pushresult(&b);
}

/* Builds c->url from the integration's base URL, path and query. */
static void build_url(lua_State *L, call *c, const char *path) {
  integration *ig = c->ig;
  int params = 0, i;
  char sep = '&';
  const char *q;
  if (field(L, "params", LUA_TTABLE, "a table")) {
    params = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, params)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "api_node: params: keys must be strings");
      scalar(L, -1, "api_node: params", lua_tostring(L, -2));
      lua_pop(L, 2);
    }
  }
  if (field(L, "query_separator", LUA_TSTRING, "\"&\" or \";\"")) {
    q = lua_tostring(L, -1);
    if (strcmp(q, "&") != 0 && strcmp(q, ";") != 0)
      luaL_error(L, "api_node: query_separator: expected \"&\" or \";\", got \"%s\"", q);
    sep = q[0];
    lua_pop(L, 1);
  }
  fill_path(L, path, params);
  int filled = lua_gettop(L);
  /* the query: base URL's, the path's, the integration's, the node's */
  if (field(L, "query", LUA_TTABLE, "a table")) {
    fr_query_pairs(L, -1, "api_node: query");
    lua_remove(L, -2);
  } else
    lua_newtable(L);
  int node_q = lua_gettop(L);
  /* nothing below raises but for memory, so C allocations are safe */
  luaL_Buffer b;
  int nq = 0;
  CURLU *u = curl_url_dup(ig->base);
  char *bpath = NULL, *bquery = NULL, *url = NULL;
  if (!u) luaL_error(L, "out of memory");
  curl_url_get(u, CURLUPART_PATH, &bpath, 0);
  curl_url_get(u, CURLUPART_QUERY, &bquery, 0);
  luaL_buffinit(L, &b);
#define ADDQ(s, n) (nq++ ? luaL_addchar(&b, sep) : (void)0, luaL_addlstring(&b, s, n))
  if (bquery) ADDQ(bquery, strlen(bquery));
  const char *fp = lua_tostring(L, filled), *qm = strchr(fp, '?');
  if (qm && qm[1]) ADDQ(qm + 1, strlen(qm + 1));
  for (i = 0; i < ig->nquery; i++) ADDQ(ig->query[i], strlen(ig->query[i]));
  for (i = 1; i <= (int)lua_rawlen(L, node_q); i++) {
    lua_rawgeti(L, node_q, i);
    size_t n;
    const char *kv = lua_tolstring(L, -1, &n);
    lua_pop(L, 1);
    ADDQ(kv, n);
  }
#undef ADDQ
  luaL_pushresult(&b);
  /* the path: base path + node path */
  size_t bl = bpath ? strlen(bpath) : 0;
  while (bl > 0 && bpath[bl - 1] == '/') bl--;
  lua_pushlstring(L, bpath ? bpath : "", bl);
  size_t pl = qm ? (size_t)(qm - fp) : strlen(fp);
  if (pl > 0 && fp[0] != '/') lua_pushliteral(L, "/");
  else lua_pushliteral(L, "");
  lua_pushlstring(L, fp, pl);
  lua_concat(L, 3);
  if (lua_rawlen(L, -1) == 0) {
    lua_pop(L, 1);
    lua_pushliteral(L, "/");
  }
  curl_free(bpath);
  curl_free(bquery);
  CURLUcode rc = curl_url_set(u, CURLUPART_PATH, lua_tostring(L, -1), 0);
  if (rc == CURLUE_OK)
    rc = curl_url_set(u, CURLUPART_QUERY, nq ? lua_tostring(L, -2) : NULL, 0);
  if (rc == CURLUE_OK) rc = curl_url_get(u, CURLUPART_URL, &url, 0);
  curl_url_cleanup(u);
  if (rc != CURLUE_OK) luaL_error(L, "api_node: cannot build the URL: %s", curl_url_strerror(rc));
  c->url = strdup(url);
  curl_free(url);
  if (!c->url) luaL_error(L, "out of memory");
  lua_settop(L, filled - 1);
  if (params) lua_pop(L, 1);
}

/* Has the headers table at idx a header named name (any case)? */
static const char *node_header(lua_State *L, int idx, const char *name) {
  const char *v = NULL;
  if (!idx) return NULL;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (strcasecmp(lua_tostring(L, -2), name) == 0) v = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  return v;
}

static bool ig_header(const integration *ig, const char *name) {
  for (int i = 0; i < ig->nheaders; i++)
    if (strcasecmp(ig->headers[i].name, name) == 0) return true;
  return false;
}

static void add_line(lua_State *L, call *c, const char *name, const char *value) {
  char *line = malloc(strlen(name) + strlen(value) + 3);
  struct curl_slist *l;
  if (!line) luaL_error(L, "out of memory");
  sprintf(line, *value ? "%s: %s" : "%s;", name, value);  /* "X;" sends "X:" */
  l = curl_slist_append(c->hdrs, line);
  free(line);
  if (!l) luaL_error(L, "out of memory");
  c->hdrs = l;
}

/* Builds the header list; a conflict with the integration sets the label. */
static void build_headers(lua_State *L, call *c, int *hidx) {
  integration *ig = c->ig;
  int h = 0, i;
  *hidx = 0;
  if (field(L, "headers", LUA_TTABLE, "a table")) {
    h = *hidx = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, h)) {
      const char *name, *why;
      size_t vlen;
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "api_node: headers: names must be strings");
      name = lua_tostring(L, -2);
      if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "api_node: headers.%s: expected a string, got %s", name,
                   luaL_typename(L, -1));
      lua_pushvalue(L, -1);
      const char *value = lua_tolstring(L, -1, &vlen);
      if ((why = fr_header_problem(name, value, vlen)))
        luaL_error(L, "api_node: headers.%s: %s", name, why);
      lua_pop(L, 2);
    }
  }
  /* the node's headers, then the integration's it does not repeat */
  if (h) {
    lua_pushnil(L);
    while (lua_next(L, h)) {
      lua_pushvalue(L, -1);
      const char *name = lua_tostring(L, -3), *value = lua_tostring(L, -1);
      for (i = 0; i < ig->nheaders && !c->label; i++)
        if (strcasecmp(ig->headers[i].name, name) == 0
            && strcmp(ig->headers[i].value, value) != 0)
          set_default(c, LABEL_ERROR, "header_conflict",
                      "header '%s' differs between the node and integration '%s'",
                      ig->headers[i].name, ig->name);
      add_line(L, c, name, value);
      lua_pop(L, 2);
    }
  }
  for (i = 0; i < ig->nheaders; i++)
    if (!node_header(L, h, ig->headers[i].name))
      add_line(L, c, ig->headers[i].name, ig->headers[i].value);
  add_line(L, c, "Expect", "");         /* no 100-continue round trip */
  c->retry_ok = (strcmp(c->method, "POST") != 0 && strcmp(c->method, "PATCH") != 0)
             || node_header(L, h, "Idempotency-Key") || ig_header(ig, "Idempotency-Key");
}

static int encode_json(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "cjson");
  lua_getfield(L, -1, "encode");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

static void build_body(lua_State *L, call *c, int h) {
  int t = lua_getfield(L, 1, "body"), f = lua_getfield(L, 1, "form");
  bool has_type = node_header(L, h, "Content-Type") || ig_header(c->ig, "Content-Type");
  const char *type = NULL;
  size_t len;
  const char *data;
  if (t == LUA_TNIL && f == LUA_TNIL) { lua_pop(L, 2); return; }
  if (t != LUA_TNIL && f != LUA_TNIL)
    luaL_error(L, "api_node: give body or form, not both");
  if (strcmp(c->method, "GET") == 0 || strcmp(c->method, "HEAD") == 0)
    luaL_error(L, "api_node: a %s request cannot have a %s", c->method,
               t != LUA_TNIL ? "body" : "form");
  if (t == LUA_TTABLE) {
    lua_pushcfunction(L, encode_json);
    lua_pushvalue(L, -3);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
      luaL_error(L, "api_node: body: %s", lua_tostring(L, -1));
    type = "application/json";
  } else if (t == LUA_TSTRING) {
    if (!has_type)
      luaL_error(L, "api_node: a string body needs a Content-Type header "
                 "(for example application/xml)");
    lua_pushvalue(L, -2);
  } else if (t != LUA_TNIL) {
    luaL_error(L, "api_node: body: expected a table or a string, got %s", lua_typename(L, t));
  } else {
    if (f != LUA_TTABLE)
      luaL_error(L, "api_node: form: expected a table, got %s", lua_typename(L, f));
    fr_query_pairs(L, -1, "api_node: form");
    luaL_Buffer b;
    int n = (int)lua_rawlen(L, -1), arr = lua_gettop(L);
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
      if (i > 1) luaL_addchar(&b, '&');
      lua_rawgeti(L, arr, i);
      luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_remove(L, arr);
    type = "application/x-www-form-urlencoded";
  }
  data = lua_tolstring(L, -1, &len);
  if (!(c->body = malloc(len + 1))) luaL_error(L, "out of memory");
  memcpy(c->body, data, len + 1);
  c->bodylen = len;
  if (type && !has_type) add_line(L, c, "Content-Type", type);
  lua_pop(L, 3);
}

/* Raises unless every key of the spec is known. */
static void check_keys(lua_State *L) {
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    int i = 0;
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
      for (; spec_keys[i]; i++)
        if (strcmp(spec_keys[i], lua_tostring(L, -1)) == 0) break;
    if (lua_type(L, -1) != LUA_TSTRING || !spec_keys[i])
      luaL_error(L, "api_node: unknown field '%s'", luaL_tolstring(L, -1, NULL));
  }
}

/* api_node(spec) -> label, response */
static int l_api_node(lua_State *L) {
  flowrun *rt = fr_rt(L);
  session *s = fr_session_current(rt, L);
  const char *path;
  call *c;
  int h;
  if (!s && rt->in_step)
    return luaL_error(L, "api_node: called from a coroutine the flow created; "
                      "call it from the flow itself");
  if (s && !lua_isyieldable(L))
    return luaL_error(L, "api_node: cannot wait here (inside a metamethod or a "
                      "C function that cannot yield)");
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  check_keys(L);
  c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  c->ref = LUA_NOREF;
  c->timer.idx = -1;
  c->timer.fire = on_call_timer;
  c->t0 = fr_now();
  luaL_setmetatable(L, CALL_MT);
  c->rt = rt;
  resolve_target(L, c, &path);
  if (!field(L, "results", LUA_TTABLE, "an array like {\"200\", \"404\"}"))
    return luaL_error(L, "api_node: results is required and must include \"200\"");
  fr_parse_results(L, lua_gettop(L), "api_node: results", &c->results, true);
  lua_pop(L, 1);
  c->timeout_ms = c->ig->timeout_ms;
  if (lua_getfield(L, 1, "timeout_ms") != LUA_TNIL) {
    int ok;
    lua_Integer ms = lua_tointegerx(L, -1, &ok);
    if (!ok || ms < 1 || ms > 0x7fffffff)
      return luaL_error(L, "api_node: timeout_ms: expected a positive integer");
    c->timeout_ms = (long)ms;
  }
  lua_pop(L, 1);
  build_url(L, c, path);
  build_headers(L, c, &h);
  build_body(L, c, h);
  lua_settop(L, 2);
  /* valid: from here on it is a call */
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->calls_ref);
  lua_pushvalue(L, 2);
  c->ref = luaL_ref(L, -2);
  lua_pop(L, 1);
  rt->ncalls++;
  c->s = s;
  if (c->label) finish(c);              /* a header conflict: nothing sent */
  else acquire(c);
  if (c->phase == C_DONE) return push_result(L, c);
  if (s) {
    s->call = c;
    s->state = S_CALL;
    return lua_yieldk(L, 0, (lua_KContext)c, k_api_node);
  }
  while (c->phase != C_DONE) fr_step(rt, -1);
  return push_result(L, c);
}

int fr_open_api_node(lua_State *L) {
  if (luaL_newmetatable(L, CALL_MT)) {
    lua_pushcfunction(L, call_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcclosure(L, l_api_node, 1);
  return 1;
}
