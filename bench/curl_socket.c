/*
** curl_socket.c -- baseline: N GETs with C transfers in flight on one multi
** handle driven by curl_multi_socket_action and epoll, as flowrun's own loop
** is (libcurl's ephiperfifo.c without the FIFO): libcurl says which sockets
** to watch and when its timer is due; each finished easy handle is re-added
** for the next request.
**
** Each request is what an application makes of libcurl when it uses the
** answer, as flowrun does: its URL and timeout set, its header block and
** body kept in buffers (reused), its status read. With "bare" as a fourth
** argument it is curl_multi.c's loop instead: the body thrown away, nothing
** set again (the handle keeps its first URL).
** usage: curl_socket URL N C [bare]; prints "requests N ok K seconds S rps R".
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include <curl/curl.h>

static int ep;                          /* the epoll set */
static long timeout_ms = -1;            /* libcurl's timer: -1 none */

typedef struct buf { char *p; size_t len, cap; } buf;
typedef struct xfer { buf head, body; } xfer;

static size_t sink(char *p, size_t size, size_t n, void *ud) {
  (void)p; (void)ud;
  return size * n;
}

/* Appends to the buffer at ud (the write and header callbacks). */
static size_t keep(char *p, size_t size, size_t n, void *ud) {
  buf *b = ud;
  size_t k = size * n;
  if (b->len + k > b->cap) {
    size_t cap = b->cap ? 2 * b->cap : 1024;
    while (cap < b->len + k) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) return 0;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, k);
  b->len += k;
  return k;
}

/* One request on e: the URL and timeout, empty buffers. */
static void request(CURL *e, xfer *x, const char *url, int bare) {
  if (bare) return;
  x->head.len = x->body.len = 0;
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CURLMOPT_SOCKETFUNCTION: watch s for what libcurl wants, or stop. The
** socket's "assigned" pointer says whether it is in the set already. */
static int on_socket(CURL *e, curl_socket_t s, int what, void *m, void *known) {
  struct epoll_event ev = { 0 };
  (void)e;
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL);
    curl_multi_assign(m, s, NULL);
    return 0;
  }
  ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
  ev.data.fd = s;
  if (epoll_ctl(ep, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev) != 0) return -1;
  if (!known) curl_multi_assign(m, s, &ep);
  return 0;
}

/* CURLMOPT_TIMERFUNCTION: when libcurl wants to be called with no socket. */
static int on_timer(CURLM *m, long ms, void *ud) {
  (void)m; (void)ud;
  timeout_ms = ms;
  return 0;
}

int main(int argc, char **argv) {
  long n, c, started = 0, done = 0, ok = 0, i;
  int running, bare = argc == 5 && strcmp(argv[4], "bare") == 0;
  CURLM *m;
  xfer *xs;
  if (argc != 4 && !bare) {
    fprintf(stderr, "usage: curl_socket URL N C [bare]\n");
    return 2;
  }
  n = atol(argv[2]);
  c = atol(argv[3]);
  if (!(xs = calloc((size_t)c, sizeof *xs))) return 1;
  if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0) {
    perror("epoll_create1");
    return 1;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  m = curl_multi_init();
  curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, c);
  curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(m, CURLMOPT_SOCKETDATA, m);
  curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_timer);
  double t0 = now();
  for (i = 0; i < c && started < n; i++, started++) {
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, argv[1]);
    curl_easy_setopt(e, CURLOPT_PRIVATE, &xs[i]);
    if (bare)
      curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink);
    else {
      curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, keep);
      curl_easy_setopt(e, CURLOPT_WRITEDATA, &xs[i].body);
      curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, keep);
      curl_easy_setopt(e, CURLOPT_HEADERDATA, &xs[i].head);
    }
    request(e, &xs[i], argv[1], bare);
    curl_multi_add_handle(m, e);
  }
  while (done < n) {
    struct epoll_event evs[64];
    int k = epoll_wait(ep, evs, 64, timeout_ms < 0 ? 1000 : (int)timeout_ms);
    for (int j = 0; j < k; j++) {
      int ev = (evs[j].events & (EPOLLIN | EPOLLHUP | EPOLLERR) ? CURL_CSELECT_IN : 0)
             | (evs[j].events & EPOLLOUT ? CURL_CSELECT_OUT : 0)
             | (evs[j].events & EPOLLERR ? CURL_CSELECT_ERR : 0);
      curl_multi_socket_action(m, evs[j].data.fd, ev, &running);
    }
    if (k <= 0 || timeout_ms == 0) {    /* the timer is due (a new handle: at once) */
      timeout_ms = -1;
      curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    int left;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(m, &left))) {
      CURL *e = msg->easy_handle;
      long status = 0;
      xfer *x;
      if (msg->msg != CURLMSG_DONE) continue;
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
      curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
      if (msg->data.result == CURLE_OK && status == 200 && (bare || x->body.len > 0)) ok++;
      done++;
      curl_multi_remove_handle(m, e);
      if (started < n) {
        started++;
        request(e, x, argv[1], bare);
        curl_multi_add_handle(m, e);
      } else
        curl_easy_cleanup(e);
    }
  }
  double s = now() - t0;
  curl_multi_cleanup(m);
  curl_global_cleanup();
  for (i = 0; i < c; i++) {
    free(xs[i].head.p);
    free(xs[i].body.p);
  }
  free(xs);
  printf("requests %ld ok %ld seconds %.3f rps %.0f\n", n, ok, s, n / s);
  return ok == n ? 0 : 1;
}
