/*
** server.c -- `flowrun mock ROUTES.lua [--port N]`, the fixture API server.
**
** The routes file is read once into plain C data (routes.c) and its
** Lua state closed, so serving never touches Lua. libmicrohttpd serves
** every connection from one epoll thread. A delay or a hang suspends only
** its own connection; a timer thread resumes a delay when it is due and a
** hang once its client has gone, so no thread is ever spent per connection.
*/
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <microhttpd.h>
#include <zlib.h>

#include "cli/common.h"
#include "mock.h"

#define MAX_BODY   (1024 * 1024)      /* request body kept for echo */
#define MAX_CONNS  20000
#define HANG_POLL  500                /* ms between checks that a hung client is there */

/* Appends the string s as a JSON string. */
static void buf_str(struct buf *b, const char *s) {
  mock_buf_add(b, "\"", 1);
  mock_buf_esc(b, s, strlen(s));
  mock_buf_add(b, "\"", 1);
}

/* Returns the monotonic clock in milliseconds. */
static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Adds one request header to the JSON object in b (cls), name lower-cased. */
static enum MHD_Result echo_header(void *cls, enum MHD_ValueKind kind,
                                   const char *key, const char *value) {
  struct buf *b = cls;
  (void) kind;
  mock_buf_adds(b, b->p[b->n - 1] == '{' ? "\"" : ",\"");
  for (; *key; key++) {
    char c = (char) tolower((unsigned char) *key);
    mock_buf_esc(b, &c, 1);
  }
  mock_buf_add(b, "\":", 2);
  buf_str(b, value ? value : "");
  return MHD_YES;
}

/* The parts of a multipart/form-data body as MHD's parser hands them:
** each opens a JSON object whose "data" string stays open for the next
** piece of the same part. */
static enum MHD_Result echo_part(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *content_type,
                                 const char *transfer_encoding, const char *data,
                                 uint64_t off, size_t size) {
  struct buf *b = cls;
  (void) kind, (void) transfer_encoding;
  if (off == 0) {
    mock_buf_adds(b, b->p[b->n - 1] == '[' ? "{\"name\":" : "\"},{\"name\":");
    buf_str(b, key ? key : "");
    if (filename) {
      mock_buf_adds(b, ",\"filename\":");
      buf_str(b, filename);
    }
    if (content_type) {
      mock_buf_adds(b, ",\"content_type\":");
      buf_str(b, content_type);
    }
    mock_buf_adds(b, ",\"data\":\"");
  }
  mock_buf_esc(b, data, size);
  return MHD_YES;
}

/* Appends ,"multipart":[{name, filename, content_type, data}...] for a
** multipart/form-data body, parsed by libmicrohttpd's post processor
** ("multipart_error": true when it finds the body malformed). */
static void echo_multipart(struct buf *b, struct MHD_Connection *c, const struct req *q) {
  struct MHD_PostProcessor *pp = MHD_create_post_processor(c, 4096, echo_part, b);
  int ok;
  mock_buf_adds(b, ",\"multipart\":[");
  if (pp == NULL) {
    mock_buf_adds(b, "],\"multipart_error\":true");
    return;
  }
  size_t start = b->n;
  ok = MHD_post_process(pp, q->body.p ? q->body.p : "", q->body.n) == MHD_YES;
  ok = MHD_destroy_post_processor(pp) == MHD_YES && ok;
  mock_buf_adds(b, b->n > start ? "\"}]" : "]");
  if (!ok) mock_buf_adds(b, ",\"multipart_error\":true");
}

/* Appends the request itself to b as a JSON object. */
static void echo(struct buf *b, struct MHD_Connection *c, const char *method,
                 const struct req *q) {
  size_t plen = strcspn(q->uri, "?");
  const char *query = q->uri[plen] ? q->uri + plen + 1 : "", *p = query;
  mock_buf_adds(b, "{\"method\":");
  buf_str(b, method);
  mock_buf_adds(b, ",\"path\":\"");
  mock_buf_esc(b, q->uri, plen);
  mock_buf_adds(b, "\",\"query\":");
  buf_str(b, query);
  mock_buf_adds(b, ",\"args\":{");
  while (*p) {
    size_t n = strcspn(p, "&");
    const char *eq = memchr(p, '=', n);
    if (n > 0) {
      size_t kn = eq ? (size_t) (eq - p) : n;
      char *k = mock_pct_decode(p, kn, 1);
      char *v = mock_pct_decode(p + kn + 1, eq ? n - kn - 1 : 0, 1);
      if (b->p[b->n - 1] != '{') mock_buf_add(b, ",", 1);
      buf_str(b, k);
      mock_buf_add(b, ":", 1);
      buf_str(b, v);
      free(k);
      free(v);
    }
    p += n + (p[n] != '\0');
  }
  mock_buf_adds(b, "},\"headers\":{");
  MHD_get_connection_values(c, MHD_HEADER_KIND, echo_header, b);
  mock_buf_adds(b, "},\"body\":\"");
  mock_buf_esc(b, q->body.p ? q->body.p : "", q->body.n);
  mock_buf_adds(b, "\"");
  const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
  if (ct && strncasecmp(ct, "multipart/form-data", 19) == 0) echo_multipart(b, c, q);
  /* the client's port: equal on two requests means one kept-alive connection */
  const union MHD_ConnectionInfo *ci =
    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
    char port[32];
    snprintf(port, sizeof port, ",\"peer_port\":%u",
             ntohs(((const struct sockaddr_in *)ci->client_addr)->sin_port));
    mock_buf_adds(b, port);
  }
  mock_buf_adds(b, "}");
}

/* Replaces b with its gzip encoding. */
static void gzip_buf(struct buf *b) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
  size_t cap = deflateBound(&z, (uLong) b->n);
  char *out = mock_xrealloc(NULL, cap + 1);
  z.next_in = (Bytef *) (b->p ? b->p : "");
  z.avail_in = (uInt) b->n;
  z.next_out = (Bytef *) out;
  z.avail_out = (uInt) cap;
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) abort();
  free(b->p);
  b->p = out;
  b->n = z.total_out;
  b->cap = cap + 1;
  deflateEnd(&z);
}

struct cut { size_t send; int whole; char p[]; };  /* a body sent by callback */

/* Hands MHD the body piece by piece: all of it (chunked), or its first part
** and then a failure that drops the connection (reset). */
static ssize_t cut_read(void *cls, uint64_t pos, char *out, size_t max) {
  struct cut *k = cls;
  size_t n;
  if (pos >= k->send)
    return k->whole ? MHD_CONTENT_READER_END_OF_STREAM
                    : MHD_CONTENT_READER_END_WITH_ERROR;
  n = k->send - (size_t) pos;
  if (n > max) n = max;
  memcpy(out, k->p + pos, n);
  return (ssize_t) n;
}

/* Returns a response sent through cut_read: chunked (no Content-Length,
** the whole of b) or reset (announcing all of b, sending its first half). */
static struct MHD_Response *callback_response(const struct buf *b, int chunked) {
  static const char filler[] = "partial body: the mock server resets this response\n";
  const char *s = !chunked && b->n < 2 ? filler : b->p;
  size_t n = !chunked && b->n < 2 ? sizeof filler - 1 : b->n;
  struct cut *k = mock_xrealloc(NULL, sizeof *k + n);
  if (n) memcpy(k->p, s, n);
  k->whole = chunked;
  k->send = chunked ? n : n / 2;
  return MHD_create_response_from_callback(chunked ? MHD_SIZE_UNKNOWN : n, 4096,
                                           cut_read, k, free);
}

/* Builds, queues and logs the response to q. */
static enum MHD_Result respond(struct MHD_Connection *c, const char *method,
                               struct req *q) {
  const struct route *r = q->route;
  const char *ctype = "application/json";
  struct buf b = { NULL, 0, 0 };
  struct MHD_Response *resp;
  enum MHD_Result ok;
  int status = r ? r->status : 404;
  if (r == NULL) {
    mock_buf_adds(&b, "{\"error\":\"no route\",\"method\":");
    buf_str(&b, method);
    mock_buf_adds(&b, ",\"path\":\"");
    mock_buf_esc(&b, q->uri, strcspn(q->uri, "?"));
    mock_buf_adds(&b, "\"}");
  } else if (q->too_big) {
    status = 413;
    mock_buf_adds(&b, "{\"error\":\"request body over 1 MiB\"}");
  } else if (r->echo) {
    echo(&b, c, method, q);
  } else {
    if (r->body) mock_render(&b, r->body, r->bodylen, r, q->vals, r->json);
    ctype = r->json ? "application/json" : r->body ? "text/plain" : NULL;
  }
  if (r && r->gzip) gzip_buf(&b);
  if (r && (r->fault == FAULT_RESET || r->chunked))
    resp = callback_response(&b, r->fault != FAULT_RESET);
  else resp = MHD_create_response_from_buffer(b.n, b.p, MHD_RESPMEM_MUST_COPY);
  free(b.p);
  if (resp == NULL) return MHD_NO;
  for (int k = 0; r && k < r->nheaders; k++) {
    struct buf v = { NULL, 0, 0 };
    mock_render(&v, r->headers[k].value, strlen(r->headers[k].value), r, q->vals, 0);
    MHD_add_response_header(resp, r->headers[k].name, v.p ? v.p : "");
    free(v.p);
  }
  if (r && r->gzip) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_ENCODING, "gzip");
  if (ctype && !(r && r->has_ctype))
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
  ok = MHD_queue_response(c, (unsigned) status, resp);
  MHD_destroy_response(resp);
  if (r && r->fault == FAULT_RESET)
    fprintf(stderr, "%s %s -> fault reset\n", method, q->uri);
  else
    fprintf(stderr, "%s %s -> %d\n", method, q->uri, status);
  return ok;
}

/* Adds q to the timer heap. Caller holds m->lock. */
static void heap_push(struct mock *m, struct req *q) {
  size_t i;
  if (m->nheap == m->heapcap) {
    m->heapcap = m->heapcap ? 2 * m->heapcap : 64;
    m->heap = mock_xrealloc(m->heap, m->heapcap * sizeof *m->heap);
  }
  for (i = m->nheap++; i > 0 && m->heap[(i - 1) / 2]->due > q->due; i = (i - 1) / 2)
    m->heap[i] = m->heap[(i - 1) / 2];
  m->heap[i] = q;
}

/* Removes and returns the earliest request. Caller holds m->lock. */
static struct req *heap_pop(struct mock *m) {
  struct req *top = m->heap[0], *last = m->heap[--m->nheap];
  size_t i = 0, c;
  while ((c = 2 * i + 1) < m->nheap) {
    if (c + 1 < m->nheap && m->heap[c + 1]->due < m->heap[c]->due) c++;
    if (last->due <= m->heap[c]->due) break;
    m->heap[i] = m->heap[c];
    i = c;
  }
  m->heap[i] = last;
  return top;
}

/* Returns whether the client of a suspended connection has hung up. */
static int client_gone(int fd) {
  struct pollfd p = { fd, POLLIN | POLLRDHUP, 0 };
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* The timer thread: resumes delays when due and hangs whose client left;
** once stopping, resumes everything (marked gone) and returns. */
static void *timer_main(void *arg) {
  struct mock *m = arg;
  pthread_mutex_lock(&m->lock);
  while (!m->stopping || m->nheap > 0) {
    int64_t now = now_ms();
    struct req *q;
    if (m->nheap == 0) {
      pthread_cond_wait(&m->wake, &m->lock);
      continue;
    }
    if (!m->stopping && m->heap[0]->due > now) {
      struct timespec ts;
      ts.tv_sec = (time_t) (m->heap[0]->due / 1000);
      ts.tv_nsec = (long) (m->heap[0]->due % 1000) * 1000000;
      pthread_cond_timedwait(&m->wake, &m->lock, &ts);
      continue;
    }
    q = heap_pop(m);
    if (!m->stopping && q->route->fault == FAULT_NO_RESPONSE && !client_gone(q->fd)) {
      q->due = now + HANG_POLL;
      heap_push(m, q);
      continue;
    }
    q->gone = m->stopping || q->route->fault == FAULT_NO_RESPONSE;
    MHD_resume_connection(q->conn);
  }
  pthread_mutex_unlock(&m->lock);
  return NULL;
}

/* Suspends q's connection until its delay is due (or, for a hang, until the
** client leaves). Returns 0 when stopping, without suspending. */
static int suspend(struct mock *m, struct MHD_Connection *c, const char *method,
                   struct req *q) {
  int hang = q->route->fault == FAULT_NO_RESPONSE;
  const union MHD_ConnectionInfo *ci;
  pthread_mutex_lock(&m->lock);
  if (m->stopping) {
    q->gone = hang;
    pthread_mutex_unlock(&m->lock);
    return 0;
  }
  ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  q->fd = ci ? ci->connect_fd : -1;
  q->conn = c;
  q->due = now_ms() + (hang ? HANG_POLL : q->route->delay_ms);
  q->waited = 1;
  MHD_suspend_connection(c);
  heap_push(m, q);
  pthread_cond_signal(&m->wake);
  pthread_mutex_unlock(&m->lock);
  if (hang) fprintf(stderr, "%s %s -> fault no_response\n", method, q->uri);
  return 1;
}

/* MHD: a request line arrived; returns its context, holding the raw target. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
  struct req *q = mock_xrealloc(NULL, sizeof *q);
  (void) cls, (void) c;
  memset(q, 0, sizeof *q);
  q->uri = mock_xstrndup(uri, strlen(uri));
  q->fd = -1;
  return q;
}

/* MHD: the request is over, answered or not; frees its context. */
static void on_done(void *cls, struct MHD_Connection *c, void **ctx,
                    enum MHD_RequestTerminationCode toe) {
  struct req *q = *ctx;
  (void) cls, (void) c, (void) toe;
  if (q == NULL) return;
  for (int k = 0; q->route && k < q->route->ncaps; k++) free(q->vals[k]);
  free(q->body.p);
  free(q->uri);
  free(q);
  *ctx = NULL;
}

/* MHD: called at the headers, for each piece of body, at the end, and again
** after a resume. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *data,
                                  size_t *size, void **ctx) {
  struct mock *m = cls;
  struct req *q = *ctx;
  (void) url, (void) version;
  if (q == NULL) return MHD_NO;
  if (!q->started) {
    q->route = mock_find_route(m, method, q);
    q->started = 1;
    return MHD_YES;
  }
  if (*size > 0) {
    if (q->route && q->route->echo && !q->too_big) {
      if (q->body.n + *size > MAX_BODY) q->too_big = 1;
      else mock_buf_add(&q->body, data, *size);
    }
    *size = 0;
    return MHD_YES;
  }
  if (!q->waited && q->route
      && (q->route->delay_ms > 0 || q->route->fault == FAULT_NO_RESPONSE)
      && suspend(m, c, method, q))
    return MHD_YES;
  if (q->gone) return MHD_NO;
  return respond(c, method, q);
}

/* Raises the open-files limit to its hard limit; returns the new limit. */
static rlim_t raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

/* Serves on 127.0.0.1:port until SIGINT or SIGTERM (blocked in sigs). */
static int serve(struct mock *m, uint16_t port, const sigset_t *sigs) {
  struct sockaddr_in sa;
  struct MHD_Daemon *d;
  const union MHD_DaemonInfo *info;
  pthread_condattr_t ca;
  pthread_t timer;
  rlim_t files = raise_nofile();
  unsigned limit = files > MAX_CONNS + 64 ? MAX_CONNS : (unsigned) (files - 64);
  int sig;

  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  pthread_mutex_init(&m->lock, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&m->wake, &ca);
  pthread_condattr_destroy(&ca);
  pthread_create(&timer, NULL, timer_main, m);
  d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME,
                       port, NULL, NULL, on_request, m,
                       MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &sa,
                       MHD_OPTION_URI_LOG_CALLBACK, on_uri, m,
                       MHD_OPTION_NOTIFY_COMPLETED, on_done, m,
                       MHD_OPTION_CONNECTION_LIMIT, limit,
                       MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u,
                       MHD_OPTION_END);
  if (d != NULL && (info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT))) {
    printf("listening on http://127.0.0.1:%u\n", (unsigned) info->port);
    fflush(stdout);
    while (sigwait(sigs, &sig) != 0) continue;
  } else {
    fprintf(stderr, "flowrun mock: cannot listen on 127.0.0.1:%u: %s\n",
            (unsigned) port, strerror(errno));
  }
  pthread_mutex_lock(&m->lock);
  m->stopping = 1;
  pthread_cond_signal(&m->wake);
  pthread_mutex_unlock(&m->lock);
  pthread_join(timer, NULL);
  if (d) MHD_stop_daemon(d);
  pthread_cond_destroy(&m->wake);
  pthread_mutex_destroy(&m->lock);
  free(m->heap);
  return d ? 0 : 2;                     /* a port in use: the --port given */
}

/* Prints the usage and returns 2. */
static int usage(void) {
  fputs("usage: flowrun mock ROUTES.lua [--port N]\n", stderr);
  return 2;
}

/* flowrun mock ROUTES.lua [--port N]: argv[0] is "mock". */
int flowrun_mock_main(int argc, char **argv) {
  struct mock m;
  sigset_t sigs, old;
  const char *file = NULL, *ports = "0";
  char *end;
  long port;
  int rc;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) ports = argv[++i];
    else if (strncmp(argv[i], "--port=", 7) == 0) ports = argv[i] + 7;
    else if (argv[i][0] != '-' && file == NULL) file = argv[i];
    else return usage();
  }
  errno = 0;
  port = strtol(ports, &end, 10);
  if (file == NULL || *ports == '\0' || *end != '\0' || errno || port < 0 || port > 65535) {
    if (file) fprintf(stderr, "flowrun mock: --port wants 0..65535, got '%s'\n", ports);
    return usage();
  }
  memset(&m, 0, sizeof m);
  m.file = file;
  if (mock_load_routes(&m) != 0) {
    mock_free_routes(&m);
    return 2;
  }
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, &old);    /* threads inherit it; sigwait takes them */
  signal(SIGPIPE, SIG_IGN);
  rc = serve(&m, (uint16_t) port, &sigs);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  mock_free_routes(&m);
  return rc;
}
