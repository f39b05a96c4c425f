/*
** loop.c -- the runtime's loop.
**
** One epoll set carries libcurl's sockets (CURLMOPT_SOCKETFUNCTION) and the
** host's watched descriptors; libcurl's timer and the runtime's own timers
** (sleep, retry backoff, queue limits) sit in one min-heap. A turn of the
** loop waits for the nearest of them, lets libcurl act on what is ready,
** hands finished transfers to rt->on_done and resumes ready sessions
** through rt->on_ready, so the cost of a turn follows the active
** transfers, not all of them. The loop knows no session and no call: the
** runtime gives it those two hooks.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base.h"
#include "call.h"
#include "runtime.h"

/* A host descriptor flowrun_watch() watches; what epoll holds for each
** descriptor libcurl uses (see fd_at). */
typedef struct fr_watch { int fd; void (*cb)(void *, int); void *ud; } fr_watch;
typedef struct fd_state { uint32_t events; uint8_t flags; uint16_t gen; } fd_state;

/* An event's data: the descriptor in the low 32 bits, the tag in the next 8,
** for libcurl's the descriptor's generation above (see fd_forget). */
#define TAG_CURL  (1ull << 32)
#define TAG_WATCH (2ull << 32)
#define TAG_OF(u) ((u) & (0xffull << 32))
#define GEN_OF(u) ((uint16_t)((u) >> 40))

/* ---- timers ---- */

static void heap_swap(flowrun *rt, int i, int j) {
  fr_timer *t = rt->heap[i];
  rt->heap[i] = rt->heap[j];
  rt->heap[j] = t;
  rt->heap[i]->idx = i;
  rt->heap[j]->idx = j;
}

/* Timers due at the same time fire in the order they were armed: calls
** answered together are taken in the order they were made. */
static bool before(const fr_timer *a, const fr_timer *b) {
  return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void heap_up(flowrun *rt, int i) {
  while (i > 0 && before(rt->heap[i], rt->heap[(i - 1) / 2])) {
    heap_swap(rt, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void heap_down(flowrun *rt, int i) {
  for (;;) {
    int l = 2 * i + 1, r = l + 1, m = i;
    if (l < rt->nheap && before(rt->heap[l], rt->heap[m])) m = l;
    if (r < rt->nheap && before(rt->heap[r], rt->heap[m])) m = r;
    if (m == i) return;
    heap_swap(rt, i, m);
    i = m;
  }
}

void fr_timer_cancel(flowrun *rt, fr_timer *t) {
  int i = t->idx;
  if (i < 0) return;
  t->idx = -1;
  if (i != --rt->nheap) {
    rt->heap[i] = rt->heap[rt->nheap];
    rt->heap[i]->idx = i;
    heap_down(rt, i);
    heap_up(rt, i);
  }
}

/* Arms t to fire at `at`; false when out of memory (t is not armed). */
bool fr_timer_arm(flowrun *rt, fr_timer *t, double at) {
  fr_timer_cancel(rt, t);
  if (rt->nheap == rt->capheap) {
    int cap = rt->capheap ? rt->capheap * 2 : 64;
    fr_timer **h = realloc(rt->heap, cap * sizeof *h);
    if (!h) return false;
    rt->heap = h;
    rt->capheap = cap;
  }
  t->at = at;
  t->seq = ++rt->timer_seq;
  t->idx = rt->nheap;
  rt->heap[rt->nheap++] = t;
  heap_up(rt, t->idx);
  return true;
}

/* Fires every timer due by now (with a budget, at least one, then while
** it lasts: the rest stay due, in order); a fired timer may re-arm itself. */
static void run_timers(flowrun *rt, double now) {
  bool first = true;
  while (rt->nheap > 0 && rt->heap[0]->at <= now) {
    fr_timer *t;
    /* the check may deliver calls, which cancel timers and free what
    ** holds them: the heap is read again after it */
    if (!first && (fr_budget_spent(rt) || !(rt->nheap > 0 && rt->heap[0]->at <= now))) return;
    first = false;
    t = rt->heap[0];
    fr_timer_cancel(rt, t);
    t->fire(rt, t);
  }
}

/* ---- libcurl glue ---- */

/*
** What the epoll set holds for each descriptor libcurl uses. A kept-alive
** connection that libcurl stops watching between two calls stays in the set
** (FD_IDLE) rather than being deleted and added again for the next call:
** that saves two epoll_ctl calls per request. Only connection sockets, which
** libcurl opens and closes through fr_open_socket/fr_close_socket, are kept
** so: their close is seen, so a reused descriptor number is never mistaken
** for one still in the set. An idle connection that becomes readable (the
** server closed it) leaves the set then.
*/
enum { FD_CONN = 1, FD_IDLE = 2 };

/* The state of fd, the table grown to hold it; NULL when out of memory. */
static fd_state *fd_at(flowrun *rt, int fd) {
  if (fd >= rt->nfds) {
    int n = fd + 1 > 2 * rt->nfds ? fd + 1 : 2 * rt->nfds;
    fd_state *p = realloc(rt->fds, n * sizeof *p);
    if (!p) return NULL;
    memset(p + rt->nfds, 0, (n - rt->nfds) * sizeof *p);
    rt->fds = p;
    rt->nfds = n;
  }
  return &rt->fds[fd];
}

/* A descriptor past the table was never watched: nothing to forget. Its
** generation moves on: an event of the same turn for the socket that had
** the number is not taken for a new one that has it now. */
static void fd_forget(flowrun *rt, int fd) {
  fd_state *st = fd < rt->nfds ? &rt->fds[fd] : NULL;
  if (!st) return;
  if (st->events) epoll_ctl(rt->epfd, EPOLL_CTL_DEL, fd, NULL);
  st->events = st->flags = 0;
  st->gen++;
}

/* Opens a connection socket for the call ud. When the process (EMFILE) or
** the system (ENFILE) has no descriptor left, the call notes it: libcurl
** would only say it could not connect. */
curl_socket_t fr_open_socket(void *ud, curlsocktype purpose,
                             struct curl_sockaddr *a) {
  fr_call *c = ud;
  int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
  fd_state *st;
  (void)purpose;
  if (fd < 0) {
    if (errno == EMFILE || errno == ENFILE) c->fd_errno = errno;
    return CURL_SOCKET_BAD;
  }
  if (!(st = fd_at(c->rt, fd))) {       /* the call fails: see call.c */
    close(fd);
    c->oom = true;
    return CURL_SOCKET_BAD;
  }
  st->flags = FD_CONN;
  return fd;
}

int fr_close_socket(void *ud, curl_socket_t fd) {
  fd_forget(ud, fd);
  return close(fd);
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *ud, void *sp) {
  flowrun *rt = ud;
  fd_state *st = fd_at(rt, s);
  struct epoll_event ev = { 0 };
  (void)sp;
  if (!st) {
    /* no memory to note it: s goes unwatched and its call ends as out of
    ** memory (at its timeout at the latest); -1 would end every transfer */
    fr_call *c = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&c);
    if (c) c->oom = true;
    return 0;
  }
  if (what == CURL_POLL_REMOVE) {
    if (st->flags & FD_CONN) st->flags |= FD_IDLE;
    else fd_forget(rt, s);
    return 0;
  }
  st->flags &= ~FD_IDLE;
  ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0)
            | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
  if (st->events == ev.events) return 0;
  ev.data.u64 = TAG_CURL | (uint64_t)st->gen << 40 | (uint32_t)s;
  if (epoll_ctl(rt->epfd, st->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev) < 0)
    epoll_ctl(rt->epfd, errno == ENOENT ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, s, &ev);
  st->events = ev.events;
  return 0;
}

static int on_timer(CURLM *m, long ms, void *ud) {
  flowrun *rt = ud;
  (void)m;
  rt->curl_deadline = ms < 0 ? -1 : fr_now() + ms;
  return 0;
}

static void drain_curl(flowrun *rt) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(rt->multi, &left)))
    if (m->msg == CURLMSG_DONE) rt->on_done(rt, m);
}

/* Lets libcurl act on s; keeps the first failure of a turn. */
static void curl_act(flowrun *rt, curl_socket_t s, int mask) {
  int running;
  CURLMcode mc = curl_multi_socket_action(rt->multi, s, mask, &running);
  if (mc != CURLM_OK && rt->step_mc == CURLM_OK) rt->step_mc = mc;
}

/* libcurl's timer, when due: the transfers just added start (and those
** out of time end). */
static void curl_due(flowrun *rt, double now) {
  if (rt->curl_deadline >= 0 && rt->curl_deadline <= now) {
    rt->curl_deadline = -1;
    curl_act(rt, CURL_SOCKET_TIMEOUT, 0);
  }
}

/*
** A step's budget (flowrun_step_budget). Checked between two units of
** work: the transfers the last one started are sent first, so that their
** cost is counted in the step that caused it, and what they completed is
** delivered. Without a budget: false, and nothing is done.
*/
bool fr_budget_spent(flowrun *rt) {
  double now;
  if (rt->budget_ms <= 0) return false;
  now = fr_now();
  if (rt->curl_deadline >= 0 && rt->curl_deadline <= now) {
    curl_due(rt, now);
    drain_curl(rt);
    now = fr_now();
  }
  return now >= rt->budget_end;
}

/* ---- the loop ---- */

static fr_watch *find_watch(flowrun *rt, int fd) {
  for (int i = 0; i < rt->nwatches; i++)
    if (rt->watches[i].fd == fd) return &rt->watches[i];
  return NULL;
}

/* Milliseconds to wait: the nearest deadline, bounded by wait_ms. */
static int wait_time(flowrun *rt, int wait_ms, double now) {
  double next = -1;
  if (rt->ready) return 0;
  if (rt->curl_deadline >= 0) next = rt->curl_deadline;
  if (rt->nheap > 0 && (next < 0 || rt->heap[0]->at < next))
    next = rt->heap[0]->at;
  if (next < 0) {                       /* nothing to wait for: never forever */
    bool idle = rt->nsessions + rt->ncalls == 0 && rt->nwatches == 0;
    return wait_ms < 0 && idle ? 0 : wait_ms;
  }
  double d = next - now;
  int ms = d <= 0 ? 0 : (int)d + (d > (int)d);  /* round up: never spin */
  return (wait_ms >= 0 && wait_ms < ms) ? wait_ms : ms;
}

/* A turn where libcurl failed (out of memory, say) still collects what
** ended and runs what is ready, then returns FLOWRUN_ERR saying why; the
** host may step again. */
#define COMMIT_IDLE_MS 5                /* a store commits once the loop idles this long */

/* On a virtual clock: what came from outside (a watched descriptor), at
** once; with nothing, when the step may wait for a timer, the clock jumps
** to it however far it is (waiting costs nothing there). */
static int virtual_wait(flowrun *rt, struct epoll_event *ev, int wait_ms) {
  int w = wait_time(rt, wait_ms, rt->vclock), n;
  if (rt->nheap == 0 && rt->nwatches == 0) w = 0;   /* nothing can come: no waiting */
  if (w == 0 || rt->nheap == 0) return epoll_wait(rt->epfd, ev, 64, w);
  if ((n = epoll_wait(rt->epfd, ev, 64, 0)) != 0) return n;
  if (rt->heap[0]->at > rt->vclock) rt->vclock = rt->heap[0]->at;
  return 0;
}

int fr_step(flowrun *rt, int wait_ms) {
  struct epoll_event ev[64];
  CURLMcode mc;
  double waited, idle = 0;
  unsigned first;
  int n, i, k;
  rt->in_step++;
  rt->step_mc = CURLM_OK;
  rt->step_resumed = 0;
  rt->budget_end = fr_now() + rt->budget_ms;
  rt->on_ready(rt);
  n = -1;
  if (rt->on_turn) {                    /* a store: what the turns wrote, committed */
    int w = wait_time(rt, wait_ms, fr_clock(rt));
    if (w != 0 && rt->turn_open(rt)) {  /* idle 5 ms with writes open: commit them */
      waited = fr_now();
      n = epoll_wait(rt->epfd, ev, 64, w > 0 && w < COMMIT_IDLE_MS ? w : COMMIT_IDLE_MS);
      idle += fr_now() - waited;
      if (n == 0 && w > 0 && w <= COMMIT_IDLE_MS) n = 0;   /* the wait is over */
      else if (n == 0) n = -1;
    }
    if (rt->on_turn(rt, n == -1 && w != 0) != FLOWRUN_OK) {
      rt->in_step--;
      return FLOWRUN_ERR;
    }
  }
  waited = fr_now();
  if (n < 0 && rt->vclock >= 0) n = virtual_wait(rt, ev, wait_ms);
  if (n < 0) n = epoll_wait(rt->epfd, ev, 64, wait_time(rt, wait_ms, fr_now()));
  if (n < 0) n = 0;
  idle += fr_now() - waited;
  rt->budget_end += idle;               /* the waits are not work (a commit is) */
  /* with a budget, the events are taken from where the last step stopped:
  ** epoll gives those that stay ready in the same order every time */
  first = rt->budget_ms > 0 && n > 0 ? rt->ev_next % (unsigned)n : 0;
  for (k = 0; k < n; k++) {
    i = (int)((first + (unsigned)k) % (unsigned)n);
    uint64_t tag = TAG_OF(ev[i].data.u64);
    int fd = (int)(uint32_t)ev[i].data.u64;
    /* spent: the rest are level-triggered, the next step is told again */
    if (k > 0 && fr_budget_spent(rt)) break;
    if (tag == TAG_CURL && (fd >= rt->nfds || rt->fds[fd].gen != GEN_OF(ev[i].data.u64))) {
      continue;                         /* its socket closed in this turn: stale */
    } else if (tag == TAG_CURL && (rt->fds[fd].flags & FD_IDLE)) {
      fd_forget(rt, fd);                /* closed by the server meanwhile */
    } else if (tag == TAG_CURL) {
      int mask = (ev[i].events & EPOLLIN ? CURL_CSELECT_IN : 0)
               | (ev[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0)
               | (ev[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
      curl_act(rt, fd, mask);
      if (rt->budget_ms > 0) drain_curl(rt);   /* what it ended starts what waited: counted */
    } else {
      fr_watch *w = find_watch(rt, fd);
      if (w) w->cb(w->ud, fd);
    }
  }
  rt->ev_next = first + (unsigned)k;
  curl_due(rt, fr_now());
  drain_curl(rt);
  run_timers(rt, fr_clock(rt));
  rt->on_ready(rt);
  rt->on_settle(rt);
  if (rt->on_turn && rt->on_turn(rt, false) != FLOWRUN_OK) {
    rt->in_step--;
    return FLOWRUN_ERR;
  }
  rt->in_step--;
  mc = rt->step_mc;
  if (mc == CURLM_OUT_OF_MEMORY) return fr_error(rt, "out of memory");
  if (mc != CURLM_OK) return fr_error(rt, "libcurl: %s", curl_multi_strerror(mc));
  return rt->nsessions + rt->ncalls;
}

bool fr_loop_init(flowrun *rt) {
  rt->curl_deadline = -1;
  rt->epfd = epoll_create1(EPOLL_CLOEXEC);
  rt->multi = curl_multi_init();
  return rt->epfd >= 0 && rt->multi
      && curl_multi_setopt(rt->multi, CURLMOPT_SOCKETFUNCTION, on_socket) == CURLM_OK
      && curl_multi_setopt(rt->multi, CURLMOPT_SOCKETDATA, rt) == CURLM_OK
      && curl_multi_setopt(rt->multi, CURLMOPT_TIMERFUNCTION, on_timer) == CURLM_OK
      && curl_multi_setopt(rt->multi, CURLMOPT_TIMERDATA, rt) == CURLM_OK;
}

void fr_loop_free(flowrun *rt) {
  if (rt->multi) curl_multi_cleanup(rt->multi);   /* its calls are gone: it cannot fail */
  if (rt->epfd >= 0) close(rt->epfd);
  free(rt->heap);
  free(rt->watches);
  free(rt->fds);
}

int flowrun_watch(flowrun *rt, int fd, void (*cb)(void *ud, int fd),
                  void *ud) {
  fr_watch *w = find_watch(rt, fd);
  if (!cb) {
    if (!w) return FLOWRUN_OK;
    epoll_ctl(rt->epfd, EPOLL_CTL_DEL, fd, NULL);
    *w = rt->watches[--rt->nwatches];
    return FLOWRUN_OK;
  }
  if (!w) {
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_WATCH | (uint32_t)fd };
    fr_watch *ws = realloc(rt->watches, (rt->nwatches + 1) * sizeof *ws);
    if (!ws) return fr_error(rt, "out of memory");
    rt->watches = ws;
    if (epoll_ctl(rt->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
      return fr_error(rt, "cannot watch fd %d: %s", fd, strerror(errno));
    w = &rt->watches[rt->nwatches++];
  }
  w->fd = fd;
  w->cb = cb;
  w->ud = ud;
  return FLOWRUN_OK;
}
