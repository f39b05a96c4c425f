/*
** call.c -- api_node: one HTTP request to an integration (README: The labels).
**
** Calls are C objects of the runtime, reused with their buffers once a
** call's response has been handed over, so a steady stream of calls costs
** no allocation here. Once request.c has turned the spec into a request,
** the call takes a slot of the integration's pool (or queues for one) and
** adds an easy handle to the runtime's multi handle. libcurl's callbacks only fill
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
#include <time.h>

#include <lauxlib.h>

#include "base.h"
#include "call.h"
#include "cookies.h"
#include "integration.h"
#include "response.h"
#include "rules.h"
#include "runtime.h"
#include "secrets.h"
#include "wire.h"

#define MAX_HOPS 5

static const char R_DEADLINE[] = "deadline";   /* deadline_ms: compared by address */


/* ---- the call object ---- */

#define MAX_SPARE 4096                  /* finished calls kept for reuse */
#define KEEP_BUF  65536                 /* larger buffers are not kept */

static bool buf_add(fr_buf *b, const char *p, size_t n) {
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

/* The multipart body of c's transfer (wire.c) goes with the transfer. */
static void mime_out(fr_call *c) {
  curl_easy_setopt(c->easy, CURLOPT_MIMEPOST, NULL);
  curl_mime_free(c->mime);
  c->mime = NULL;
}

/* Takes e out of the multi handle and keeps it for ig's next call; one
** libcurl would not take out is freed instead (curl_easy_cleanup takes it
** out), never reused. */
static void easy_out(flowrun *rt, fr_integration *ig, CURL *e, const fr_call *owner) {
  if (curl_multi_remove_handle(rt->multi, e) == CURLM_OK) fr_pool_easy_put(&ig->pool, e, owner, false);
  else curl_easy_cleanup(e);
}

/* The handle of c's transfer that ended (c->done_easy) is still in the
** multi handle: libcurl does less when a handle is taken out and added
** again at once, on the connection it had, than when handles are taken
** out first and others added later (each connection's socket would be
** forgotten and learnt again). So it waits in c for c's next transfer (a
** retry, a redirect), and when c is given back, on top of its pool for
** the session's next call (the call it takes is c again: the spare list
** is a stack). What is still in the multi handle at the end of the loop
** turn leaves it there (fr_calls_settle). README: Performance. */
static void done_easy_out(fr_call *c) {
  if (!c->done_easy) return;
  fr_pool_easy_put(&c->rq.ig->pool, c->done_easy, c, true);
  c->done_easy = NULL;
  c->rt->easy_added = true;
}

void fr_calls_settle(flowrun *rt) {
  if (!rt->easy_added) return;
  rt->easy_added = false;
  for (fr_integration *ig = rt->integrations; ig; ig = ig->next)
    if (ig->pool.nadded) fr_pool_settle(&ig->pool, rt->multi);
}

/* Takes c, waiting for a token, out of its integration's list. */
static void unwait(fr_call *c) {
  if (!c->wq[0]) return;
  if (c->qprev) c->qprev->qnext = c->qnext;
  else *c->wq[0] = c->qnext;
  if (c->qnext) c->qnext->qprev = c->qprev;
  else *c->wq[1] = c->qprev;
  c->qnext = c->qprev = NULL;
  c->wq[0] = c->wq[1] = NULL;
}

/* Appends c to the list of calls waiting for a token at *head, *tail. */
static void wait_in(fr_call *c, fr_call **head, fr_call **tail) {
  c->qnext = NULL;
  c->qprev = *tail;
  if (*tail) (*tail)->qnext = c;
  else *head = c;
  *tail = c;
  c->wq[0] = head;
  c->wq[1] = tail;
}

/* Unlinks c from the loop: transfer, queue, timer, slot. Leaves its
** outcome and buffers. */
static void detach(fr_call *c) {
  flowrun *rt = c->rt;
  done_easy_out(c);
  if (c->easy) {
    if (c->mime) mime_out(c);
    easy_out(rt, c->rq.ig, c->easy, c);
    c->easy = NULL;
  }
  fr_timer_cancel(rt, &c->timer);
  if (c->phase == FR_C_AUTH) unwait(c);
  if (c->phase == FR_C_QUEUED) {        /* out of the pool's queue, at once wherever it is */
    fr_pool *p = &c->rq.ig->pool;
    if (c->qprev) c->qprev->qnext = c->qnext;
    else p->qhead = c->qnext;
    if (c->qnext) c->qnext->qprev = c->qprev;
    else p->qtail = c->qprev;
    c->qnext = c->qprev = NULL;
    c->phase = FR_C_NEW;
    if (!p->qhead) fr_timer_cancel(rt, &p->gate);
  }
  if (c->slot) {
    c->slot = false;
    c->rq.ig->pool.inflight--;
  }
  if (c->active) {
    c->active = false;
    rt->ncalls--;
  }
}

static void on_call_timer(flowrun *rt, fr_timer *t);

/* Empties c for its next use, keeping its buffers (unless huge). */
static void clear(fr_call *c) {
  flowrun *rt = c->rt;
  fr_request rq;
  fr_buf rbody, rhdr;
  fr_easy_set set;
  done_easy_out(c);
  rbody = c->rbody;
  rhdr = c->rhdr;
  set = c->set;
  fr_request_clear(&c->rq);             /* all but its URL buffer */
  rq = c->rq;
  free(c->error);
  free(c->jar);
  if (rbody.cap > KEEP_BUF) { free(rbody.p); rbody = (fr_buf){ 0 }; }
  if (rhdr.cap > KEEP_BUF) { free(rhdr.p); rhdr = (fr_buf){ 0 }; }
  memset(c, 0, sizeof *c);
  c->rt = rt;
  c->rq = rq;
  c->rbody = rbody;
  c->rhdr = rhdr;
  c->rbody.len = c->rhdr.len = 0;
  c->set = set;
  c->timer.idx = -1;
  c->timer.fire = on_call_timer;
}

static void unlink_call(fr_call *c) {
  flowrun *rt = c->rt;
  if (c->prev) c->prev->next = c->next;
  else rt->calls = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

static void destroy(fr_call *c) {
  clear(c);
  free(c->rq.url);
  free(c->rbody.p);
  free(c->rhdr.p);
  free(c);
}

/* Done with c: it goes back to the spares. */
static void give_back(fr_call *c) {
  flowrun *rt = c->rt;
  detach(c);
  unlink_call(c);
  if (rt->building == c) rt->building = NULL;
  if (rt->nspare >= MAX_SPARE) {
    destroy(c);
    return;
  }
  clear(c);
  c->next = rt->spare;
  rt->spare = c;
  rt->nspare++;
}

/* A call to fill in, linked to the runtime. A call whose spec raised an
** error last time is taken back first. */
static fr_call *take(flowrun *rt) {
  fr_call *c;
  if (rt->building) give_back(rt->building);
  if ((c = rt->spare)) {
    rt->spare = c->next;
    rt->nspare--;
  } else {
    if (!(c = calloc(1, sizeof *c))) return NULL;
    c->rt = rt;
    clear(c);
  }
  c->prev = NULL;
  c->next = rt->calls;
  if (rt->calls) rt->calls->prev = c;
  rt->calls = c;
  rt->building = c;
  return c;
}

void fr_calls_free(flowrun *rt) {
  while (rt->calls) {
    fr_call *c = rt->calls;
    detach(c);
    unlink_call(c);
    destroy(c);
  }
  while (rt->spare) {
    fr_call *c = rt->spare;
    rt->spare = c->next;
    destroy(c);
  }
  rt->nspare = 0;
  rt->building = NULL;
}

static void pump(fr_integration *ig);

void fr_call_cancel(fr_call *c) {
  fr_integration *ig = c->rq.ig;
  bool had_slot = c->slot;
  c->w = NULL;
  ig->refs++;                           /* pump needs it after give_back */
  give_back(c);
  if (had_slot) pump(ig);
  fr_integration_release(ig);
}

/* ---- libcurl callbacks: C buffers only ---- */

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  fr_call *c = ud;
  n *= size;
  if ((curl_off_t)(c->rbody.len + n) > c->rq.ig->max_response_bytes) {
    c->too_large = true;
    return 0;                           /* aborts: CURLE_WRITE_ERROR */
  }
  if (buf_add(&c->rbody, p, n)) return n;
  c->oom = true;
  return 0;
}

/* One header line at a time; the empty line ends a header block. libcurl
** takes a response cut off inside its headers by a clean close for a
** complete one, so fr_call_done checks that the block ended. */
static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  fr_call *c = ud;
  n *= size;
  if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {     /* a new response */
    c->rhdr.len = 0;
    c->head_done = false;
  } else if ((n == 2 && p[0] == '\r' && p[1] == '\n') || (n == 1 && p[0] == '\n'))
    c->head_done = true;
  if (buf_add(&c->rhdr, p, n)) return n;
  c->oom = true;
  return 0;
}

/* libcurl calls this right before it sends the request; also when, the
** kept-alive connection it used having closed without an answer, it sends
** the request again on another one ("Connection died, retrying a fresh
** connect"). The server may have acted on the first send, so a POST or
** PATCH without Idempotency-Key is not sent again; another request may be
** (the connection may just have gone stale), and each send counts as an
** attempt, so that res.attempts is what the server received. */
static int on_send(void *ud, char *ip, char *local_ip, int port, int local_port) {
  fr_call *c = ud;
  (void)ip; (void)local_ip; (void)port; (void)local_port;
  if (c->sends++ == 0) return CURL_PREREQFUNC_OK;
  if (!c->rq.retry_ok) {
    c->resend_refused = true;
    return CURL_PREREQFUNC_ABORT;
  }
  c->attempts++;
  return CURL_PREREQFUNC_OK;
}

/* ---- outcome ---- */

/* Decides c's outcome: a default label, its reason and message. */
static void fr_call_fail(fr_call *c, const char *label, const char *reason,
                         const char *fmt, ...) {
  char msg[CURL_ERROR_SIZE + 256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  free(c->error);
  if (!(c->error = strdup(msg))) c->oom = true;   /* no label without its error */
  c->label = label;
  c->reason = reason;
}

/* c ends for want of memory: the trace says so, and api_node raises a
** memory error in the flow (push_result) instead of returning a label. */
static void fail_oom(fr_call *c) {
  c->oom = true;
  fr_call_fail(c, LABEL_ERROR, "internal", "out of memory");
}

static double retry_after_ms(const fr_call *c);

/* A 429 with Retry-After pauses the whole integration until then: no
** call of it starts a request before (fr_pool_turn), retried or not. */
static void pause_for_429(fr_call *c) {
  double ms = retry_after_ms(c);
  if (ms > 0) fr_pool_pause(&c->rq.ig->pool, fr_clock(c->rt) + ms);
}

static void set_status(fr_call *c, int status) {
  int m = fr_results_status(&c->rq.results, status);
  c->status = status;
  if (m >= 100 && m <= 999) {           /* "%d" without snprintf: every call has one */
    c->codelabel[0] = (char)('0' + m / 100);
    c->codelabel[1] = (char)('0' + m / 10 % 10);
    c->codelabel[2] = (char)('0' + m % 10);
    c->codelabel[3] = '\0';
  } else if (m > 0) snprintf(c->codelabel, sizeof c->codelabel, "%d", m);
  else if (m < 0) snprintf(c->codelabel, sizeof c->codelabel, "%dxx", -m);
  c->label = m ? c->codelabel : LABEL_OTHER;
  if (status == 429) pause_for_429(c);
}

/* c ends at its deadline (deadline_ms): label timeout, reason deadline,
** no response. */
static void fail_deadline(fr_call *c, const char *fmt, ...) {
  char what[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  c->status = 0;
  fr_call_fail(c, LABEL_TIMEOUT, R_DEADLINE, "deadline_ms (%ld) of the call %s",
               c->rq.deadline_ms, what);
}

/* Did libcurl stop because the response headers are too large? It
** refuses a header line over 100 KB as out of memory once the status line
** has come, and headers over 300 KB in all as a receive error; libcurl 8.6
** and later say CURLE_TOO_LARGE. */
static bool headers_too_large(const fr_call *c, CURLcode rc) {
#if LIBCURL_VERSION_NUM >= 0x080600
  if (rc == CURLE_TOO_LARGE) return true;
#endif
  return (rc == CURLE_OUT_OF_MEMORY && c->rhdr.len > 0 && c->rbody.len == 0)
      || (rc == CURLE_RECV_ERROR
          && strncmp(c->errbuf, "Too large response headers", 26) == 0);
}

static void classify(fr_call *c, CURLcode rc, curl_off_t connect_us) {
  const char *detail = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);
  if (c->resend_refused) {
    fr_call_fail(c, LABEL_ERROR, "reset", "the server closed the kept-alive connection "
                 "without answering; not sent again: a %s without Idempotency-Key is "
                 "never retried", c->rq.method);
    return;
  }
  if (headers_too_large(c, rc)) {
    fr_call_fail(c, LABEL_ERROR, "too_large", "response headers too large (%s)", detail);
    return;
  }
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT:
    if (c->cut && (connect_us > 0 || fr_clock(c->rt) + 2 >= c->deadline)) {
      fail_deadline(c, "passed during attempt %d", c->attempts);
      return;
    }
    fr_call_fail(c, LABEL_TIMEOUT, connect_us > 0 ? "timeout" : "connect_timeout",
                "%s", detail);
    return;
  case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY:
    fr_call_fail(c, LABEL_ERROR, "dns", "%s", detail);
    return;
  case CURLE_COULDNT_CONNECT:
    if (c->fd_errno)
      fr_call_fail(c, LABEL_ERROR, "fd_limit", "out of file descriptors (%s): %s",
                   strerror(c->fd_errno), detail);
    else
      fr_call_fail(c, LABEL_ERROR, "refused", "%s", detail);
    return;
  case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM: case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE: case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH: case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CRL_BADFILE: case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_USE_SSL_FAILED: case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED: case CURLE_SSL_ENGINE_INITFAILED:
    fr_call_fail(c, LABEL_ERROR, "tls", "%s", detail);
    return;
  case CURLE_FILESIZE_EXCEEDED: case CURLE_WRITE_ERROR:
    if (rc == CURLE_FILESIZE_EXCEEDED || c->too_large) {
      fr_call_fail(c, LABEL_ERROR, "too_large",
                  "response body larger than max_response_bytes (%ld) of integration '%s'",
                  (long)c->rq.ig->max_response_bytes, c->rq.ig->name);
      return;
    }
    break;
  case CURLE_RECV_ERROR: case CURLE_SEND_ERROR: case CURLE_PARTIAL_FILE:
  case CURLE_GOT_NOTHING:
    /* TLS 1.3: a server that refuses the client's certificate (or its
    ** absence) says so in an alert after the handshake, at the first read */
    fr_call_fail(c, LABEL_ERROR, strstr(c->errbuf, "SSL") && strstr(c->errbuf, " alert ")
                 ? "tls" : "reset", "%s", detail);
    return;
  case CURLE_TOO_MANY_REDIRECTS:
    fr_call_fail(c, LABEL_ERROR, "redirect", "%s", detail);
    return;
  default:
    break;
  }
  fr_call_fail(c, LABEL_ERROR, "protocol", "%s", detail);
}

/* The request's header lines for a trace, secrets hidden, into a NULL-
** terminated array of malloc'd strings; NULL on ENOMEM. libcurl's "X:"
** (do not send X) lines are left out, "X;" (send X empty) is "X:", and an
** Authorization value keeps only its scheme. */
static char **trace_headers(fr_call *c) {
  struct curl_slist *l;
  char **v;
  int n = 0;
  for (l = c->rq.hdrs; l; l = l->next) n++;
  if (!(v = calloc(n + 1, sizeof *v))) return NULL;
  n = 0;
  for (l = c->rq.hdrs; l; l = l->next) {
    const char *line = l->data, *colon = strchr(line, ':');
    size_t len = strlen(line);
    if (colon && colon[1] == '\0') continue;
    if (!colon && len > 0 && line[len - 1] == ';') {
      v[n] = strdup(line);
      if (v[n]) v[n][len - 1] = ':';
    } else if (colon && colon - line == 13 && strncasecmp(line, "Authorization", 13) == 0) {
      const char *scheme = colon + 1 + strspn(colon + 1, " ");
      int slen = (int)strcspn(scheme, " ");
      if ((v[n] = malloc(len + 8)))
        snprintf(v[n], len + 8, "Authorization: %.*s%s***", slen, scheme, slen ? " " : "");
    } else
      v[n] = fr_redact(c->rt, line);
    if (v[n]) n++;
  }
  return v;
}

/* The header line as curl's -H (or -u) words: an Authorization value keeps
** its scheme and is a variable only when it is one secret from env() (or
** Basic credentials made of such), else ***. */
static void curl_header(flowrun *rt, FILE *f, const char *line) {
  const char *colon = strchr(line, ':');
  if (colon && colon - line == 13 && strncasecmp(line, "Authorization", 13) == 0 && colon[1]) {
    const char *scheme = colon + 1 + strspn(colon + 1, " ");
    size_t slen = strcspn(scheme, " ");
    const char *v = scheme + slen + strspn(scheme + slen, " ");
    for (const fr_secret *k = NULL; (k = fr_secret_find(rt, v, k));) {
      if (k->basic && slen == 5 && strncasecmp(scheme, "Basic", 5) == 0) {
        fprintf(f, " \\\n  -u %s", k->basic);
        return;
      }
      if (k->name) {
        fputs(" \\\n  -H ", f);
        fr_shell_word(rt, f, line, strlen(line));
        return;
      }
    }
    fprintf(f, " \\\n  -H 'Authorization: %.*s%s***'", (int)slen, scheme, slen ? " " : "");
    return;
  }
  fputs(" \\\n  -H ", f);
  fr_shell_word(rt, f, line, strlen(line));
}

/* The path and query of url: what follows its host. */
static const char *target_of(const char *url) {
  const char *p = strstr(url, "://");
  p = p ? strchr(p + 3, '/') : NULL;
  return p ? p : "/";
}

/* The path and query of c's URL below its integration's base URL:
** "/orders/42?x=1" of "http://h/v1/orders/42?x=1" with base ".../v1". */
static const char *relative_of(const fr_call *c) {
  const char *target = target_of(c->rq.url ? c->rq.url : ""), *base = target_of(c->rq.ig->base_url);
  size_t bn = strlen(base);
  while (bn > 0 && base[bn - 1] == '/') bn--;
  return strncmp(target, base, bn) == 0 && (target[bn] == '/' || target[bn] == '?' || target[bn] == '\0')
         ? target + bn : target;
}

/* s (n bytes, to a NUL) in double quotes, as curl's -F reads a value:
** '"' and '\' escaped; false when a NUL cut it. */
static bool curl_quoted(FILE *f, const char *s, size_t n) {
  size_t k = strnlen(s, n);
  fputc('"', f);
  for (size_t i = 0; i < k; i++) {
    if (s[i] == '"' || s[i] == '\\') fputc('\\', f);
    fputc(s[i], f);
  }
  fputc('"', f);
  return k == n;
}

/* The parts of a multipart body as curl's -F options; false when a NUL
** cut one. */
static bool curl_parts(flowrun *rt, FILE *f, const fr_parts *ps) {
  bool whole = true;
  for (int i = 0; i < ps->n; i++) {
    const fr_part *p = &ps->p[i];
    char *s = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&s, &n);
    if (!m) return whole;
    fprintf(m, "%s=", p->name);
    whole = curl_quoted(m, p->data, p->len) && whole;
    if (p->filename) {
      fputs(";filename=", m);
      curl_quoted(m, p->filename, strlen(p->filename));
    }
    if (p->type) fprintf(m, ";type=%s", p->type);
    if (fclose(m) == 0) {
      fputs(" \\\n  -F ", f);
      fr_shell_word(rt, f, s, n);
    }
    free(s);
  }
  return whole;
}

/* The call being traced as a curl command line (see flowrun.h). */
char *flowrun_trace_curl(flowrun *rt, const flowrun_trace *t) {
  fr_call *c = rt->tracing;
  char *out = NULL;
  size_t n, blen;
  FILE *f;
  if (!c || !t || t != rt->tracing_t || !(f = open_memstream(&out, &n))) return NULL;
  fputs("curl", f);
  if (strcmp(c->rq.method, "HEAD") == 0) fputs(" -I", f);
  else if (strcmp(c->rq.method, "GET") != 0
           && !(strcmp(c->rq.method, "POST") == 0 && (c->rq.body || c->rq.parts)))
    fprintf(f, " -X %s", c->rq.method);
  fputc(' ', f);
  fr_shell_word(rt, f, c->rq.url ? c->rq.url : "", c->rq.url ? strlen(c->rq.url) : 0);
  for (struct curl_slist *l = c->rq.hdrs; l; l = l->next)
    if (c->rq.body || c->rq.parts || strcasecmp(l->data, "Expect:") != 0)   /* only a body is sent with Expect */
      curl_header(rt, f, l->data);
  if (c->rq.body) {
    blen = strnlen(c->rq.body, c->rq.bodylen);
    fputs(" \\\n  --data-raw ", f);
    fr_shell_word(rt, f, c->rq.body, blen);
    if (blen < c->rq.bodylen) fputs("  # the body holds NUL bytes: cut at the first", f);
  }
  if (c->rq.parts && !curl_parts(rt, f, c->rq.parts))
    fputs("  # a part holds NUL bytes: cut at the first", f);
  if (fclose(f) != 0) { free(out); return NULL; }
  return out;
}

/* One record of c for the trace callback: final, the call's last (once a
** call); else a request it went on from, retried or redirected. */
static void emit_trace(fr_call *c, double elapsed, bool final) {
  flowrun *rt = c->rt;
  flowrun_trace t;
  char *url, *err, *body, **hdrs, *rbody = NULL, *rhdr = NULL, *rel;
  if (!rt->cb.trace || c->internal || (!final && !rt->cb.trace_attempts)) return;
  if (c->status && c->rbody.p) rbody = fr_redact(rt, c->rbody.p);   /* secrets hidden, */
  if (c->status && c->rhdr.p) rhdr = fr_redact(rt, c->rhdr.p);      /* as in the rest */
  url = fr_redact(rt, c->rq.url ? c->rq.url : "");
  rel = fr_redact(rt, relative_of(c));  /* an api_key's query too */
  err = c->reason && c->error ? fr_redact(rt, c->error) : NULL;   /* not an earlier attempt's */
  body = c->rq.body ? fr_redact(rt, c->rq.body) : NULL;
  hdrs = trace_headers(c);
  t.session = c->w ? c->w->id : NULL;
  t.integration = c->rq.ig->name;
  t.method = c->rq.method;
  t.url = url ? url : "";
  t.label = c->label;
  t.reason = c->reason;
  t.error = err;
  t.status = c->status;
  t.attempts = c->attempts;
  t.elapsed_ms = elapsed;
  t.headers = hdrs ? (const char *const *)hdrs : (const char *const[]){ NULL };
  t.body = body;
  t.body_len = body ? strlen(body) : 0;
  t.at = c->at[0] ? c->at : NULL;
  t.step = c->step[0] ? c->step : NULL;
  t.relative = rel ? rel : "";
  t.response_headers = rhdr;
  t.response_headers_len = rhdr ? strlen(rhdr) : 0;
  t.response_body = rbody;
  t.response_body_len = rbody ? strlen(rbody) : 0;
  t.attempt = c->attempts;
  t.hop = c->hops;
  t.final = final;
  rt->tracing = c;
  rt->tracing_t = &t;
  rt->cb.trace(rt->cb.ud, &t);
  rt->tracing = NULL;
  rt->tracing_t = NULL;
  for (int i = 0; hdrs && hdrs[i]; i++) free(hdrs[i]);
  free(hdrs);
  free(body);
  free(url);
  free(rel);
  free(err);
  free(rbody);
  free(rhdr);
}

static void start(fr_call *c, double now);
static void on_gate(flowrun *rt, fr_timer *t);

/* Lets waiting calls of ig take the free slots, oldest first, each when
** its turn has come (rate_limit, a 429's pause): until then the gate's
** timer waits for it, the loop does not spin. */
static void pump(fr_integration *ig) {
  while (ig->pool.qhead && ig->pool.inflight < ig->max_connections) {
    fr_call *c = ig->pool.qhead;
    double now = fr_clock(c->rt), wait = fr_pool_turn(&ig->pool, now);
    if (wait > 0) {
      ig->pool.gate.fire = on_gate;
      if (ig->pool.gate.idx < 0 || ig->pool.gate.at != now + wait)
        (void)fr_timer_arm(c->rt, &ig->pool.gate, now + wait);  /* else: queue_timeout_ms */
      return;
    }
    if ((ig->pool.qhead = c->qnext)) ig->pool.qhead->qprev = NULL;
    else {
      ig->pool.qtail = NULL;
      fr_timer_cancel(c->rt, &ig->pool.gate);   /* armed only while calls wait */
    }
    c->qnext = NULL;
    fr_timer_cancel(c->rt, &c->timer);
    c->phase = FR_C_NEW;
    start(c, now);
  }
}

static void token_fetched(fr_call *t);

static void on_gate(flowrun *rt, fr_timer *t) {
  (void)rt;
  pump((fr_integration *)((char *)t - offsetof(fr_integration, pool.gate)));
}

static void finish(fr_call *c) {
  fr_integration *ig = c->rq.ig;
  bool had_slot = c->slot;
  detach(c);                            /* out of the queue first */
  c->phase = FR_C_DONE;
  if (c->internal) {                    /* no trace: it has no session, nor label */
    token_fetched(c);
    return;
  }
  c->t0 = fr_clock(c->rt) - c->t0;     /* from here on: the elapsed time */
  emit_trace(c, c->t0, true);
  if (had_slot) pump(ig);
  if (c->w) c->w->wake(c->w, c);       /* whoever waits on it */
}

/* ---- transfers ---- */

/* An easy handle for ig: one of its idle ones, already set up with what
** is the same on every call of the integration, or a new one. */
static CURL *easy_take(flowrun *rt, fr_call *c, const void **owner) {
  fr_integration *ig = c->rq.ig;
  CURL *e;
  bool added;
  if ((e = c->done_easy)) {             /* its last transfer's, on its connection */
    c->done_easy = NULL;
    *owner = c;
    if (curl_multi_remove_handle(rt->multi, e) == CURLM_OK) return e;
    curl_easy_cleanup(e);
  }
  while ((e = fr_pool_easy_take(&ig->pool, owner, &added))) {
    if (!added || curl_multi_remove_handle(rt->multi, e) == CURLM_OK) return e;
    curl_easy_cleanup(e);               /* in an unknown state: not reused */
  }
  if (!(e = curl_easy_init())) return NULL;
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, fr_open_socket);
  curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_send);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, fr_close_socket);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, rt);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ig->connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, ig->tls_verify ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, ig->tls_verify ? 2L : 0L);
  if (ig->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, ig->ca_file);
  if (ig->cookies) curl_easy_setopt(e, CURLOPT_COOKIEFILE, "");   /* the engine, no file */
  if (ig->http_version) {               /* "2": streams wait for a connection to share */
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, ig->http_version);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, ig->http_version != CURL_HTTP_VERSION_1_1 ? 1L : 0L);
  }
  fr_wire_easy(e, ig);                  /* wire.c: compression, proxy, certificate */
  return e;
}

/* ---- answered by the host (flowrun_set_transport) ---- */

static const char *const fault_reasons[] = {
  "timeout", "connect_timeout", "refused", "reset", "dns", "tls", "protocol", "pool_full", NULL
};


/* Asks the host's transport for this hop's answer, kept in c until
** c->timer fires after its delay (on the runtime's clock), at most the
** time left of the call's timeout. */
static void ask_transport(fr_call *c, double left) {
  flowrun *rt = c->rt;
  flowrun_answer a = { 0 };
  flowrun_request rq;
  const char **hdrs;
  int n = 0, rc;
  for (struct curl_slist *h = c->rq.hdrs; h; h = h->next) n++;
  if (!(hdrs = malloc((size_t)(n + 1) * sizeof *hdrs))) {
    fail_oom(c);
    finish(c);
    return;
  }
  n = 0;
  for (struct curl_slist *h = c->rq.hdrs; h; h = h->next) hdrs[n++] = h->data;
  hdrs[n] = NULL;
  rq.session = c->w ? c->w->id : NULL;
  rq.integration = c->rq.ig->name;
  rq.endpoint = c->rq.endpoint;
  rq.method = c->rq.method;
  rq.url = c->rq.url;
  rq.target = target_of(c->rq.url);
  rq.relative = relative_of(c);
  rq.headers = hdrs;
  rq.body = c->rq.body;
  rq.body_len = c->rq.body ? c->rq.bodylen : 0;
  rq.attempt = c->attempts;
  rc = rt->answer(rt->answer_ud, &rq, &a);
  free(hdrs);
  c->answering = true;
  c->ans_status = a.status;
  c->ans_reason = NULL;
  c->ans_late = a.delay_ms >= left;
  snprintf(c->errbuf, sizeof c->errbuf, "%s", a.message ? a.message : "");
  if (rc != FLOWRUN_OK) {
    c->ans_status = 0;
    c->ans_reason = "internal";
    if (!a.message) snprintf(c->errbuf, sizeof c->errbuf, "the transport refused the call");
  } else if (a.status == 0) {
    for (int i = 0; fault_reasons[i]; i++)
      if (a.reason && strcmp(a.reason, fault_reasons[i]) == 0) c->ans_reason = fault_reasons[i];
    if (!c->ans_reason) {
      c->ans_reason = "internal";
      snprintf(c->errbuf, sizeof c->errbuf, "the transport's fault '%s' is none a call can have",
               a.reason ? a.reason : "(none)");
    }
  } else if (a.status < 100 || a.status > 599) {
    c->ans_status = 0;
    c->ans_reason = "internal";
    snprintf(c->errbuf, sizeof c->errbuf, "the transport's status %d is not an HTTP status", a.status);
  } else {
    const char *h = a.headers ? a.headers : "";
    char line[32];
    int k = snprintf(line, sizeof line, "HTTP/1.1 %d\r\n", a.status);
    if (!buf_add(&c->rhdr, line, (size_t)k) || !buf_add(&c->rhdr, h, strlen(h))
        || !buf_add(&c->rbody, a.body ? a.body : "", a.body ? a.body_len : 0)) {
      fail_oom(c);
      c->answering = false;
      finish(c);
      return;
    }
    c->head_done = true;
  }
  if (!fr_timer_arm(rt, &c->timer, fr_clock(rt) + (c->ans_late ? left : a.delay_ms > 0 ? a.delay_ms : 0))) {
    c->answering = false;
    fail_oom(c);
    finish(c);
  }
}

/* The absolute URL the Location header of an answer names (a relative one
** taken from the call's URL), malloc'd; NULL when there is none. */
static char *location(const fr_call *c) {
  const char *p = c->rhdr.p, *end = p ? p + c->rhdr.len : NULL;
  for (; p && p < end; p++) {
    const char *eol = memchr(p, '\n', end - p), *v;
    if (!eol) eol = end;
    if (eol - p > 9 && strncasecmp(p, "location:", 9) == 0) {
      char *rel, *abs = NULL, *url = NULL;
      CURLU *u = curl_url();
      for (v = p + 9; v < eol && (*v == ' ' || *v == '\t'); v++) {}
      while (eol > v && isspace((unsigned char)eol[-1])) eol--;
      if ((rel = strndup(v, (size_t)(eol - v))) && u
          && curl_url_set(u, CURLUPART_URL, c->rq.url, 0) == CURLUE_OK
          && curl_url_set(u, CURLUPART_URL, rel, 0) == CURLUE_OK
          && curl_url_get(u, CURLUPART_URL, &abs, 0) == CURLUE_OK)
        url = strdup(abs);
      curl_free(abs);
      curl_url_cleanup(u);
      free(rel);
      return url;
    }
    p = eol;
  }
  return NULL;
}

/* The transport's answer to this hop has come: as fr_call_done. */
static bool follow(fr_call *c, const char *target, int status);
static bool retry(fr_call *c);
static bool reauth(fr_call *c);

static void answered(fr_call *c) {
  fr_integration *ig = c->rq.ig;
  int status = c->ans_status;
  char *to;
  c->answering = false;
  if (c->ans_late && c->cut)
    fail_deadline(c, "passed during attempt %d", c->attempts);
  else if (c->ans_late)
    fr_call_fail(c, LABEL_TIMEOUT, "timeout", "Operation timed out after %ld milliseconds"
                 " (the answer's delay)", c->rq.timeout_ms);
  else if (!status)
    fr_call_fail(c, strcmp(c->ans_reason, "timeout") == 0 || strcmp(c->ans_reason, "connect_timeout") == 0
                 ? LABEL_TIMEOUT : strcmp(c->ans_reason, "pool_full") == 0 ? LABEL_MAXCONN : LABEL_ERROR,
                 c->ans_reason, "%s",
                 c->errbuf[0] ? c->errbuf : c->ans_reason);
  else if ((long)c->rbody.len > ig->max_response_bytes)
    fr_call_fail(c, LABEL_ERROR, "too_large",
                 "response body larger than max_response_bytes (%ld) of integration '%s'",
                 (long)ig->max_response_bytes, ig->name);
  else if (ig->follow_redirects && status >= 300 && status < 400 && (to = location(c))) {
    bool went = follow(c, to, status);
    free(to);
    if (went) return;
    c->status = status;
  } else
    set_status(c, status);
  if (!reauth(c) && !retry(c)) finish(c);
}

/* Sends the request for this hop of this attempt. */
static void transfer(fr_call *c) {
  flowrun *rt = c->rt;
  fr_integration *ig = c->rq.ig;
  double now = fr_clock(c->rt), left = c->rq.timeout_ms - (now - c->attempt_t0);
  CURL *e;
  CURLMcode mc;
  const void *owner;
  char *last = NULL;
  bool same, plain_get;
  c->rbody.len = c->rhdr.len = 0;
  c->too_large = c->head_done = c->resend_refused = false;
  c->sends = c->fd_errno = 0;
  c->status = 0;
  c->errbuf[0] = '\0';
  c->hop_t0 = now;
  if (c->deadline) {                    /* deadline_ms: the request is cut by it */
    if ((c->cut = c->deadline - now < left)) left = c->deadline - now;
    if (left < 1) {
      if (c->hops) fail_deadline(c, "passed before redirect %d of attempt %d", c->hops, c->attempts);
      else fail_deadline(c, "passed before attempt %d", c->attempts);
      finish(c);
      return;
    }
  }
  if (left < 1) left = 1;
  if (rt->answer) {                     /* the host answers: no network */
    ask_transport(c, left);
    return;
  }
  if (rt->vclock >= 0) {
    fr_call_fail(c, LABEL_ERROR, "internal", "a runtime on a virtual clock makes no calls over"
                 " the network (flowrun_set_transport)");
    finish(c);
    return;
  }
  if (!(e = c->easy = easy_take(rt, c, &owner))) {
    fail_oom(c);
    finish(c);
    return;
  }
  /* e as c's last transfer left it (no call used it since): the options
  ** that would be set to what they are already are not (README: Performance) */
  same = owner == c && c->set.easy == e;
  plain_get = strcmp(c->rq.method, "GET") == 0 && !c->rq.body && !c->rq.parts;
  c->set.easy = NULL;                   /* until all is set: a failure below leaves none */
  if (!same) {                          /* the data options point to c */
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, c);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, c);
  }
  /* the URL its last request had (libcurl follows no redirect): kept, as
  ** setting it copies and parses it */
  if (curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &last) != CURLE_OK || !last
      || strcmp(last, c->rq.url) != 0)
    curl_easy_setopt(e, CURLOPT_URL, c->rq.url);
  if (!same || c->set.hdrs != c->rq.hdrs) curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->rq.hdrs);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)left);
  if (ig->cookies && !fr_cookies_load(e, c->jar)) {
    fail_oom(c);
    finish(c);
    return;
  }
  /* the method: every option a handle's last call may have set, set again */
  if (same && c->set.get && plain_get) {
    /* NOBODY 0, HTTPGET 1 and CUSTOMREQUEST NULL already */
  } else if (strcmp(c->rq.method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
    if (c->rq.parts) {                  /* a MIME body for this transfer */
      if (!(c->mime = fr_parts_mime(e, c->rq.parts))) {
        fail_oom(c);                    /* finish gives e back */
        finish(c);
        return;
      }
      curl_easy_setopt(e, CURLOPT_MIMEPOST, c->mime);
    } else if (c->rq.body) {
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->rq.bodylen);
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->rq.body);
    } else
      curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  }
  if (!(same && c->set.get && plain_get))
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST,
                     strcmp(c->rq.method, "HEAD") == 0 || strcmp(c->rq.method, "GET") == 0
                     || ((c->rq.body || c->rq.parts) && strcmp(c->rq.method, "POST") == 0)
                     ? NULL : c->rq.method);
  c->set.easy = e;
  c->set.hdrs = c->rq.hdrs;
  c->set.get = plain_get;
  if ((mc = curl_multi_add_handle(rt->multi, e)) != CURLM_OK) {
    if (c->mime) mime_out(c);
    curl_easy_cleanup(e);               /* in an unknown state: not reused */
    c->easy = NULL;
    if (mc == CURLM_OUT_OF_MEMORY) fail_oom(c);
    else fr_call_fail(c, LABEL_ERROR, "internal", "libcurl refused the transfer: %s",
                      curl_multi_strerror(mc));
    finish(c);
  }
}

/* Starts an attempt (its turn taken: fr_pool_turn) at now. */
static void start(fr_call *c, double now) {
  fr_oauth *o = c->rq.ig->oauth;
  if (!c->slot && !c->internal) {
    c->slot = true;
    c->rq.ig->pool.inflight++;
  }
  c->phase = FR_C_ACTIVE;
  c->attempts++;
  c->attempt_t0 = now;
  c->hops = 0;
  c->label = c->reason = NULL;
  if (o && o->token && c->token_gen != o->gen && !c->internal) {
    /* queued for a slot, or a retry: the token has been replaced since */
    if (!fr_auth_header(o, &c->rq)) {
      fail_oom(c);
      finish(c);
      return;
    }
    c->token_gen = o->gen;
  }
  transfer(c);
}

/* c had no turn (rate_limit, or a 429's pause), queued (within
** queue_timeout_ms) or not: label max-connection, reason rate_limit. */
static void fail_turn(fr_call *c, double now, bool queued) {
  fr_integration *ig = c->rq.ig;
  char within[64] = "";
  if (queued) snprintf(within, sizeof within, " within queue_timeout_ms (%ld)", ig->queue_timeout_ms);
  if (ig->pool.paused_until > now)
    fr_call_fail(c, LABEL_MAXCONN, "rate_limit", "integration '%s' is paused by a 429's "
                 "Retry-After for %.0f ms more%s", ig->name, ig->pool.paused_until - now,
                 queued ? ", past queue_timeout_ms" : "");
  else
    fr_call_fail(c, LABEL_MAXCONN, "rate_limit", "integration '%s' allows %d requests per "
                 "%ld ms (rate_limit) and had no turn free%s", ig->name, ig->rate_requests,
                 ig->rate_per_ms, within);
}

static void on_call_timer(flowrun *rt, fr_timer *t) {
  fr_call *c = (fr_call *)((char *)t - offsetof(fr_call, timer));
  double now, wait;
  if (c->phase == FR_C_ACTIVE && c->answering) {
    answered(c);
    return;
  }
  now = fr_clock(rt);
  if (c->phase == FR_C_BACKOFF) {
    if ((wait = fr_pool_turn(&c->rq.ig->pool, now)) == 0)
      start(c, now);
    else if (c->deadline && now + wait >= c->deadline) {   /* its turn comes too late */
      fail_deadline(c, "would pass before attempt %d had its turn", c->attempts + 1);
      finish(c);
    } else if (wait > c->rq.ig->queue_timeout_ms) {   /* as a queued call would */
      fail_turn(c, now, true);
      finish(c);
    } else if (!fr_timer_arm(rt, &c->timer, now + wait)) {
      fail_oom(c);
      finish(c);
    }
    return;
  }
  if (c->phase == FR_C_AUTH)                        /* waiting for a token */
    fail_deadline(c, "passed while it waited for the OAuth2 token of integration '%s'",
                  c->rq.ig->name);
  else if (c->deadline && now >= c->deadline)       /* queued */
    fail_deadline(c, "passed while it waited for integration '%s'", c->rq.ig->name);
  else if (c->rq.ig->pool.inflight < c->rq.ig->max_connections)
    fail_turn(c, now, true);
  else
    fr_call_fail(c, LABEL_MAXCONN, "pool_full",
                "integration '%s' has %d calls in flight (max_connections) and "
                "none ended within queue_timeout_ms (%ld)",
                c->rq.ig->name, c->rq.ig->max_connections, c->rq.ig->queue_timeout_ms);
  finish(c);
}

/* ---- OAuth2 (auth.c): one token per integration ---- */

/* Sends the token request of ig: a call of the runtime's own through the
** loop (or the host's transport), without a slot, trace or retry; when
** it ends, token_fetched takes it. The calls waiting are in ig's list. */
static void fetch_token(flowrun *rt, fr_integration *ig) {
  fr_oauth *o = ig->oauth;
  fr_call *t = take(rt);
  if (t) {
    rt->building = NULL;
    t->t0 = fr_clock(rt);
    t->internal = true;
    t->rq.ig = ig;
    ig->refs++;
    t->rq.timeout_ms = ig->timeout_ms;
    t->active = true;
    rt->ncalls++;
    o->fetch = t;
    if (fr_auth_request(o, &t->rq) && fr_request_set_url(&t->rq, o->token_url)) start(t, fr_clock(rt));
    else {
      fail_oom(t);
      finish(t);
    }
    return;
  }
  for (fr_call *w; (w = o->whead);) {   /* no memory for the request */
    fail_oom(w);
    finish(w);                          /* out of the list */
  }
}

/* Whether c may go on: its integration has no OAuth2, or a fresh token,
** now in c's Authorization header. Else c waits for the token request in
** flight, sent here if there is none; whatever ends it sends c on or ends
** it. */
static bool authed(fr_call *c) {
  fr_integration *ig = c->rq.ig;
  fr_oauth *o = ig->oauth;
  if (!o || c->internal) return true;
  if (fr_auth_fresh(c->rt, o)) {
    if (fr_auth_header(o, &c->rq)) {
      c->token_gen = o->gen;
      return true;
    }
    fail_oom(c);
    finish(c);
    return false;
  }
  if (c->deadline && !fr_timer_arm(c->rt, &c->timer, c->deadline)) {   /* its wait ends there */
    fail_oom(c);
    finish(c);
    return false;
  }
  c->phase = FR_C_AUTH;
  wait_in(c, &o->whead, &o->wtail);
  if (!o->fetch) fetch_token(c->rt, ig);
  return false;
}

static void acquire_slot(fr_call *c);

/* Sends c, which holds its slot, again after a 401 once it has its turn
** (rate_limit, a 429's pause), as a retry waits for it (on_call_timer). */
static void resend(fr_call *c) {
  c->phase = FR_C_BACKOFF;
  on_call_timer(c->rt, &c->timer);
}

/* The token request t has ended: the token is kept, or the calls waiting
** for it end with error/auth. Those that go on carry the new token even
** if it is fresh no longer (a token of expires_in 0 is used once). */
static void token_fetched(fr_call *t) {
  fr_integration *ig = t->rq.ig;
  fr_oauth *o = ig->oauth;
  char msg[CURL_ERROR_SIZE + 512];
  bool oom = t->oom, ok = !oom && fr_auth_accept(t->rt, o, t->reason ? 0 : t->status, t->rbody.p,
                                                 t->rbody.len, t->error, msg, sizeof msg);
  /* the calls waiting now move to a list of this function's: those that
  ** start waiting meanwhile wait for the next token request, and one that
  ** ends meanwhile (its session stopped by a callback) leaves this list */
  fr_call *head = o->whead, *tail = o->wtail, *w;
  o->whead = o->wtail = NULL;
  for (w = head; w; w = w->qnext) {
    w->wq[0] = &head;
    w->wq[1] = &tail;
  }
  o->fetch = NULL;
  ig->refs++;                           /* its calls may all end below */
  give_back(t);
  while ((w = head)) {
    unwait(w);
    w->phase = FR_C_NEW;                /* out of the list */
    fr_timer_cancel(w->rt, &w->timer);  /* its deadline: armed again where it waits next */
    if (!ok) {
      if (oom) fail_oom(w);
      else fr_call_fail(w, LABEL_ERROR, "auth", "%s", msg);
      w->status = 0;
      finish(w);
    } else if (!fr_auth_header(o, &w->rq)) {
      fail_oom(w);
      finish(w);
    } else {
      w->token_gen = o->gen;
      if (w->slot) resend(w);                          /* the resend after a 401 */
      else acquire_slot(w);
    }
  }
  fr_integration_release(ig);
}

/* A 401 to a call with an OAuth2 token: the token is dropped (unless
** another call has replaced it already) and the call sent again, once,
** with the next one. True when it goes again (or has ended meanwhile). */
static bool reauth(fr_call *c) {
  fr_oauth *o = c->rq.ig->oauth;
  if (!o || c->internal || c->reauthed || c->status != 401 || c->oom) return false;
  c->reauthed = true;
  emit_trace(c, fr_clock(c->rt) - c->hop_t0, false);   /* the 401's own record */
  fr_auth_stale(c->rt, o, c->token_gen);
  if (authed(c)) resend(c);
  return true;
}

/* Takes a slot of the pool and a turn, queues for them, or fails at once;
** an OAuth2 call first has its token. */
static void acquire(fr_call *c) {
  if (authed(c)) acquire_slot(c);
}

static void acquire_slot(fr_call *c) {
  fr_integration *ig = c->rq.ig;
  double now = fr_clock(c->rt), wait = 0, at;
  if (ig->pool.inflight < ig->max_connections && !ig->pool.qhead
      && (wait = fr_pool_turn(&ig->pool, now)) == 0) {
    start(c, now);
  } else if (ig->queue_timeout_ms == 0) {
    if (wait > 0) fail_turn(c, now, false);
    else fr_call_fail(c, LABEL_MAXCONN, "pool_full",
                      "integration '%s' has %d calls in flight (max_connections)",
                      ig->name, ig->max_connections);
    finish(c);
  } else {
    c->phase = FR_C_QUEUED;
    c->qnext = NULL;
    c->qprev = ig->pool.qtail;
    if (ig->pool.qtail) ig->pool.qtail->qnext = c;
    else ig->pool.qhead = c;
    ig->pool.qtail = c;
    at = now + ig->queue_timeout_ms;
    if (c->deadline && c->deadline < at) at = c->deadline;
    if (!fr_timer_arm(c->rt, &c->timer, at)) {
      fail_oom(c);
      finish(c);                        /* out of the queue again */
    } else if (wait > 0)
      pump(ig);                         /* arms the gate for its turn */
  }
}

/* The wait in ms a Retry-After header of the response asks for (seconds
** or an HTTP date, a past date is 0), or -1 without one that parses. Read
** here, not through CURLINFO_RETRY_AFTER, which takes a number too large
** for curl_off_t for no header at all. */
static double retry_after_ms(const fr_call *c) {
  const char *p = c->rhdr.p, *end = p + c->rhdr.len;
  if (!c->status || !p) return -1;
  for (; p < end; p++) {
    const char *eol = memchr(p, '\n', end - p), *v;
    if (!eol) eol = end;
    if (eol - p > 12 && strncasecmp(p, "retry-after:", 12) == 0) {
      double ms = 0;
      char date[64];
      for (v = p + 12; v < eol && (*v == ' ' || *v == '\t'); v++) {}
      while (eol > v && isspace((unsigned char)eol[-1])) eol--;
      if (v == eol) return -1;
      if (strspn(v, "0123456789") >= (size_t)(eol - v)) {
        for (; v < eol; v++) ms = ms * 10 + (*v - '0');
        return ms * 1000;
      }
      if (eol - v >= (ptrdiff_t)sizeof date) return -1;
      memcpy(date, v, eol - v);
      date[eol - v] = '\0';
      time_t t = curl_getdate(date, NULL);
      if (t == -1) return -1;
      ms = (double)t * 1000 - fr_wall_clock(c->rt);
      return ms > 0 ? ms : 0;
    }
    p = eol;
  }
  return -1;
}

/* Schedules another attempt when the retry policy says so. */
static bool retry(fr_call *c) {
  fr_integration *ig = c->rq.ig;
  double delay, now;
  if (c->oom || c->attempts >= ig->retry_attempts + c->reauthed || !c->rq.retry_ok
      || c->reason == R_DEADLINE)
    return false;
  if (!((c->status && fr_results_status(&ig->retry_on, c->status))
        || (ig->retry_on.defaults & fr_label_bit(c->label))))
    return false;
  if ((delay = retry_after_ms(c)) >= 0) {   /* it replaces the backoff */
    if (delay > ig->retry_max_backoff_ms) return false;
  } else {
    delay = ig->retry_backoff_ms;
    for (int i = 1; i < c->attempts && delay < ig->retry_max_backoff_ms; i++)
      delay *= 2;
    if (delay > ig->retry_max_backoff_ms) delay = ig->retry_max_backoff_ms;
  }
  now = fr_clock(c->rt);
  if (c->deadline && now + delay >= c->deadline) {   /* no attempt after it */
    emit_trace(c, now - c->hop_t0, false);
    fail_deadline(c, "would pass before attempt %d", c->attempts + 1);
    return false;
  }
  if (!fr_timer_arm(c->rt, &c->timer, now + delay)) {
    fail_oom(c);
    return false;
  }
  emit_trace(c, now - c->hop_t0, false);
  c->phase = FR_C_BACKOFF;
  return true;
}

/* Whether URLs a and b have the same scheme, host and port (a port left
** out counts as the scheme's); false when either does not parse (or
** memory runs out). */
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
static bool follow(fr_call *c, const char *target, int status) {
  if (c->hops >= MAX_HOPS) {
    fr_call_fail(c, LABEL_ERROR, "redirect", "more than %d redirects", MAX_HOPS);
    return false;
  }
  if (!same_origin(c->rq.url, target)) {
    fr_call_fail(c, LABEL_ERROR, "redirect",
                "redirect to another origin refused: %s", target);
    return false;
  }
  if (c->rt->cb.trace && c->rt->cb.trace_attempts) {   /* this hop's own record */
    set_status(c, status);
    emit_trace(c, fr_clock(c->rt) - c->hop_t0, false);
    c->label = c->reason = NULL;
  }
  if (!fr_request_set_url(&c->rq, target)) {
    fail_oom(c);
    return false;
  }
  if (status == 303 || ((status == 301 || status == 302) && strcmp(c->rq.method, "POST") == 0)) {
    if (strcmp(c->rq.method, "HEAD") != 0) strcpy(c->rq.method, "GET");
    free(c->rq.body);
    c->rq.body = NULL;
    fr_parts_free(c->rq.parts);
    c->rq.parts = NULL;
  }
  c->hops++;
  transfer(c);
  return true;
}

void fr_call_done(flowrun *rt, CURLMsg *m) {
  fr_call *c = NULL;
  (void)rt;
  CURLcode rc = m->data.result;
  long status = 0;
  curl_off_t connect_us = 0;
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
  if (rc == CURLE_OK && c->rq.ig->follow_redirects && status >= 300 && status < 400) {
    char *r = NULL;
    curl_easy_getinfo(e, CURLINFO_REDIRECT_URL, &r);
    if (r && !(redirect = strdup(r))) c->oom = true;
  }
  if (c->rq.ig->cookies && !fr_cookies_save(e, &c->jar)) c->oom = true;
  if (c->mime) mime_out(c);
  c->done_easy = e;                     /* still in multi: see done_easy_out */
  c->easy = NULL;
  if (c->oom) fail_oom(c);
  else if (rc != CURLE_OK) classify(c, rc, connect_us);
  else if (!c->head_done)               /* cut off in its headers */
    fr_call_fail(c, LABEL_ERROR, "reset",
                 "the connection closed before the response headers ended");
  else if (!redirect) set_status(c, (int)status);
  else {
    bool went = follow(c, redirect, (int)status);
    if (!went) c->status = (int)status;
    free(redirect);
    if (went) return;
  }
  if (!reauth(c) && !retry(c)) finish(c);
}

static int push_result(lua_State *L) {
  fr_call *c = lua_touserdata(L, 1);
  lua_pushstring(L, c->label);
  fr_push_response(L, c, lua_gettop(L));
  return 2;
}

/* Pushes label and response; the call is over. A call that ran out of
** memory raises that instead. The pushing is protected: out of memory
** there, the call is given back all the same before the error goes on
** (a finalizer that runs meanwhile may call api_node: c stays ours). */
int fr_call_push_result(lua_State *L, fr_call *c) {
  int st;
  if (c->oom) {
    give_back(c);
    return luaL_error(L, "not enough memory");
  }
  lua_pushcfunction(L, push_result);
  lua_pushlightuserdata(L, c);
  st = lua_pcall(L, 1, 2, 0);
  give_back(c);
  return st == LUA_OK ? 2 : lua_error(L);
}

fr_call *fr_call_new(flowrun *rt) {
  fr_call *c = take(rt);
  if (c) c->t0 = fr_clock(c->rt);
  return c;
}

void fr_call_build(lua_State *L, fr_call *c) {
  fr_request_build(L, c->rt, &c->rq);   /* raises on misuse: see take() */
  c->rt->building = NULL;               /* valid: from here on it is a call */
  if (c->rq.fail)                       /* a header conflict, too large: not sent */
    fr_call_fail(c, LABEL_ERROR, c->rq.fail, "%s", c->rq.fail_msg);
}

bool fr_call_begin(fr_call *c, fr_call_waiter *w) {
  if (c->rq.deadline_ms) c->deadline = c->t0 + (double)c->rq.deadline_ms;
  c->active = true;
  c->rt->ncalls++;
  c->w = w;
  if (c->label) finish(c);              /* a header conflict: nothing sent */
  else acquire(c);
  return c->phase == FR_C_DONE;
}

void fr_call_drop(fr_call *c) {
  give_back(c);
}

bool fr_call_over(const fr_call *c) {
  return c->phase == FR_C_DONE;
}

int flowrun_interrupt(flowrun *rt, const char *id) {
  int n = 0;
  for (fr_call *c = rt->calls; c; c = c->next)
    if (c->active && c->phase != FR_C_DONE && !c->internal
        && (id ? c->w && strcmp(c->w->id, id) == 0 : !c->w)) {
      fr_call_fail(c, LABEL_ERROR, "interrupted", "the call was interrupted");
      c->status = 0;                    /* no complete response (a retry's) */
      finish(c);
      n++;
    }
  return n;
}
