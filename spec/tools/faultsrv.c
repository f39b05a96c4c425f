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
** Each connection has its own thread, so a slow one never holds others.
*/
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
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

/* Serves one connection (fd passed in arg) in the chosen mode, then closes it. */
static void *serve_conn(void *arg)
{
  int fd = (int) (intptr_t) arg;
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
                    && strcmp(argv[1], "slowbody") && strcmp(argv[1], "stall"))) {
    fputs("usage: faultsrv malformed|badstatus|slowbody|stall\n", stderr);
    return 2;
  }
  mode = argv[1];
  stall = strcmp(mode, "stall") == 0;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0 || bind(lfd, (struct sockaddr *) &sa, sizeof sa) != 0
      || listen(lfd, stall ? 0 : 128) != 0
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
    if (pthread_create(&t, NULL, serve_conn, (void *) (intptr_t) fd) != 0) close(fd);
    else pthread_detach(t);
  }
}
