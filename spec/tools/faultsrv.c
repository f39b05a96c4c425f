/*
** faultsrv.c -- a raw TCP server that misbehaves in one way, for tests.
**
**   faultsrv MODE
**
** Listens on 127.0.0.1 (a free port), prints "listening on
** http://127.0.0.1:PORT" and serves until killed. MODE is one of
**   malformed  answers every request with a line that is not HTTP
**   badstatus  answers with a status line whose code is not a number
**   slowbody   announces 10 bytes of body and sends one a second
**   stall      never completes a TCP connect: the listener's accept queue
**              is kept full, so the kernel drops new SYNs
**   closekeep  answers the first request of a connection (200, kept alive)
**              and closes the connection on the second without answering
**   cut        the path picks a response cut short by a clean close:
**              /head (status line, half a header line), /status (status
**              line only), /body (10 bytes announced, 5 sent), /chunk
**              (chunked, no last chunk), /continue (a 100 and nothing else);
**              any other path gets a complete 200
**   mix        the path picks the answer, for the soak benchmark: /ok 200,
**              /busy 503, /slow 200 after 200 ms, /hang none (the
**              connection is held until the client closes it), /reset half a
**              body then a TCP reset, /close a close without answering;
**              every answer keeps the connection alive
** In closekeep, cut and mix, GET /count answers with the requests received
** so far (itself not counted): "total N", "partial N" (connections that
** ended inside a request), "unserved N" (closed unread: no thread) and, in
** mix, "PATH N" for each kind. Each connection has its own thread, so a slow one never holds others.
*/
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define STALL_FILLERS 4   /* connections that fill the stalled accept queue */

static const char *mode;

/* Writes all n bytes at s; returns -1 once the client has gone. */
static int send_all(int fd, const char *s, size_t n)
{
  while (n > 0) {
    ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    s += w;
    n -= (size_t) w;
  }
  return 0;
}

/* Reads until the end of the request headers, EOF, or 16 KiB. */
static void read_headers(int fd)
{
  char buf[16384];
  size_t n = 0;
  while (n < sizeof buf - 1) {
    ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;
    n += (size_t) r;
    buf[n] = '\0';
    if (strstr(buf, "\r\n\r\n")) return;
  }
}

/* ---- the modes that read each request: closekeep, cut, mix ---- */

static const char *const kinds[] = { "/ok", "/busy", "/slow", "/hang", "/reset", "/close" };
#define NKINDS (sizeof kinds / sizeof *kinds)
static atomic_long total, by_kind[NKINDS];
static atomic_long partial;     /* connections that ended inside a request */
static atomic_long unserved;    /* connections closed unread: no thread */

/* Reads one request (headers and a Content-Length body) into buf; its
** path goes to path. Returns 0, or -1 at EOF or on a malformed request. */
static int read_request(int fd, char *buf, size_t cap, char *path, size_t pathcap)
{
  size_t n = 0, need;
  char *end = NULL, *cl;
  long body = 0;
  while (!end) {
    ssize_t r;
    if (n >= cap - 1) return -1;
    r = recv(fd, buf + n, cap - 1 - n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (n > 0) atomic_fetch_add(&partial, 1);
      return -1;
    }
    n += (size_t) r;
    buf[n] = '\0';
    end = strstr(buf, "\r\n\r\n");
  }
  {                             /* "METHOD PATH?QUERY HTTP/1.1" */
    const char *sp = strchr(buf, ' '), *sp2;
    size_t len;
    if (!sp || !(sp2 = strchr(sp + 1, ' '))) return -1;
    len = (size_t) (sp2 - sp - 1);
    if (len >= pathcap) len = pathcap - 1;
    memcpy(path, sp + 1, len);
    path[len] = '\0';
    path[strcspn(path, "?")] = '\0';
  }
  if ((cl = strcasestr(buf, "\r\ncontent-length:")) && cl < end) body = atol(cl + 17);
  need = (size_t) (end + 4 - buf) + (size_t) body;
  while (n < need) {            /* the body: read and dropped */
    char sink[4096];
    size_t want = need - n < sizeof sink ? need - n : sizeof sink;
    ssize_t r = recv(fd, sink, want, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      atomic_fetch_add(&partial, 1);
      return -1;
    }
    n += (size_t) r;
  }
  return 0;
}

/* Sends a complete response with a text body, kept alive. */
static int answer(int fd, int status, const char *body)
{
  char head[256];
  int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                   "Content-Length: %zu\r\n\r\n", status, status == 200 ? "OK" : "Nope",
                   strlen(body));
  return send_all(fd, head, (size_t) n) == 0 && send_all(fd, body, strlen(body)) == 0 ? 0 : -1;
}

/* Answers GET /count: the requests received so far. */
static int answer_count(int fd)
{
  char body[512];
  int n = snprintf(body, sizeof body, "total %ld\npartial %ld\nunserved %ld\n",
                   atomic_load(&total), atomic_load(&partial), atomic_load(&unserved));
  if (strcmp(mode, "mix") == 0)
    for (size_t i = 0; i < NKINDS; i++)
      n += snprintf(body + n, sizeof body - (size_t) n, "%s %ld\n", kinds[i],
                    atomic_load(&by_kind[i]));
  return answer(fd, 200, body);
}

/* Waits until the client closes the connection. */
static void hold(int fd)
{
  char sink[4096];
  for (;;) {
    ssize_t r = recv(fd, sink, sizeof sink, 0);
    if (r == 0 || (r < 0 && errno != EINTR)) return;
  }
}

/* Closes fd with a TCP reset (SO_LINGER 0) instead of a clean close. */
static void reset(int fd)
{
  struct linger l = { 1, 0 };
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

/* The response of mode cut for path; returns -1: close now. */
static int serve_cut(int fd, const char *path)
{
  static const struct { const char *path, *resp; } cuts[] = {
    { "/head", "HTTP/1.1 200 OK\r\nContent-Type: app" },
    { "/status", "HTTP/1.1 200 OK\r\n" },
    { "/body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234" },
    { "/chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n" },
    { "/continue", "HTTP/1.1 100 Continue\r\n\r\n" },
  };
  for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++)
    if (strcmp(path, cuts[i].path) == 0) {
      send_all(fd, cuts[i].resp, strlen(cuts[i].resp));
      return -1;
    }
  return answer(fd, 200, "complete");
}

/* The answer of mode mix for path; returns -1: the connection is over. */
static int serve_mix(int fd, const char *path)
{
  static const char half[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf";
  size_t k;
  for (k = 0; k < NKINDS && strcmp(path, kinds[k]) != 0; k++) {}
  if (k < NKINDS) atomic_fetch_add(&by_kind[k], 1);
  switch (k) {
  case 0: return answer(fd, 200, "ok");
  case 1: return answer(fd, 503, "busy");
  case 2: usleep(200000); return answer(fd, 200, "slow");
  case 3: hold(fd); return -1;
  case 4: send_all(fd, half, sizeof half - 1); reset(fd); return -1;
  case 5: return -1;
  default: return answer(fd, 404, "no such kind");
  }
}

/* Serves the requests of one connection in mode closekeep, cut or mix. */
static void serve_requests(int fd)
{
  char buf[65536], path[256];
  int served = 0;
  while (read_request(fd, buf, sizeof buf, path, sizeof path) == 0) {
    if (strcmp(path, "/count") == 0) {
      if (answer_count(fd) != 0) break;
      continue;
    }
    atomic_fetch_add(&total, 1);
    if (strcmp(mode, "closekeep") == 0) {
      if (served++ > 0 || answer(fd, 200, "first") != 0) break;
    } else if ((strcmp(mode, "cut") == 0 ? serve_cut(fd, path) : serve_mix(fd, path)) != 0)
      break;
  }
}

/* Serves one connection (fd passed in arg) in the chosen mode, then closes it. */
static void *serve_conn(void *arg)
{
  int fd = (int) (intptr_t) arg;
  if (strcmp(mode, "closekeep") == 0 || strcmp(mode, "cut") == 0
      || strcmp(mode, "mix") == 0) {
    serve_requests(fd);
    close(fd);
    return NULL;
  }
  read_headers(fd);
  if (strcmp(mode, "malformed") == 0) {
    send_all(fd, "HELLO THIS IS NOT HTTP\r\n\r\n", 26);
  } else if (strcmp(mode, "badstatus") == 0) {
    static const char resp[] = "HTTP/1.1 2x0 Weird\r\nContent-Length: 0\r\n\r\n";
    send_all(fd, resp, sizeof resp - 1);
  } else {
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    static const char body[] = "0123456789";
    if (send_all(fd, head, sizeof head - 1) == 0)
      for (int i = 0; i < 10 && send_all(fd, body + i, 1) == 0; i++)
        sleep(1);
  }
  close(fd);
  return NULL;
}

/* Connects to the stalled listener a few times, without ever accepting,
** so that its accept queue is full; the sockets stay open until exit. */
static void fill_queue(const struct sockaddr_in *sa)
{
  for (int i = 0; i < STALL_FILLERS; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) break;
    fcntl(fd, F_SETFL, O_NONBLOCK);
    connect(fd, (const struct sockaddr *) sa, sizeof *sa);
  }
  usleep(100000);               /* let the handshakes that can finish finish */
}

int main(int argc, char **argv)
{
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  int lfd, stall;

  if (argc != 2 || (strcmp(argv[1], "malformed") && strcmp(argv[1], "badstatus")
                    && strcmp(argv[1], "slowbody") && strcmp(argv[1], "stall")
                    && strcmp(argv[1], "closekeep") && strcmp(argv[1], "cut")
                    && strcmp(argv[1], "mix"))) {
    fputs("usage: faultsrv malformed|badstatus|slowbody|stall|closekeep|cut|mix\n", stderr);
    return 2;
  }
  mode = argv[1];
  stall = strcmp(mode, "stall") == 0;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0 || bind(lfd, (struct sockaddr *) &sa, sizeof sa) != 0
      || listen(lfd, stall ? 0 : 4096) != 0
      || getsockname(lfd, (struct sockaddr *) &sa, &len) != 0) {
    perror("faultsrv");
    return 1;
  }
  if (stall) fill_queue(&sa);
  printf("listening on http://127.0.0.1:%d\n", ntohs(sa.sin_port));
  fflush(stdout);
  for (;;) {
    pthread_t t;
    int fd;
    if (stall) {
      pause();
      continue;
    }
    fd = accept(lfd, NULL, NULL);
    if (fd < 0) continue;
    if (pthread_create(&t, NULL, serve_conn, (void *) (intptr_t) fd) != 0) {
      atomic_fetch_add(&unserved, 1);
      close(fd);
    } else
      pthread_detach(t);
  }
}
