/*
** curl_multi.c -- baseline: N GETs with C transfers in flight on one multi
** handle driven by curl_multi_poll, the way curl's multi-app.c does it;
** each finished easy handle is re-added for the next request.
** usage: curl_multi URL N C; prints "requests N seconds S rps R".
*/
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <curl/curl.h>

static size_t sink(char *p, size_t size, size_t n, void *ud) {
  (void)p; (void)ud;
  return size * n;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  long n, c, started = 0, done = 0, ok = 0, i;
  CURLM *m;
  if (argc != 4) {
    fprintf(stderr, "usage: curl_multi URL N C\n");
    return 2;
  }
  n = atol(argv[2]);
  c = atol(argv[3]);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  m = curl_multi_init();
  curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, c);
  double t0 = now();
  for (i = 0; i < c && started < n; i++, started++) {
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, argv[1]);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink);
    curl_multi_add_handle(m, e);
  }
  while (done < n) {
    int running, left;
    CURLMsg *msg;
    curl_multi_perform(m, &running);
    while ((msg = curl_multi_info_read(m, &left))) {
      CURL *e = msg->easy_handle;
      long status = 0;
      if (msg->msg != CURLMSG_DONE) continue;
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
      if (msg->data.result == CURLE_OK && status == 200) ok++;
      done++;
      curl_multi_remove_handle(m, e);
      if (started < n) {
        started++;
        curl_multi_add_handle(m, e);
      } else
        curl_easy_cleanup(e);
    }
    if (done < n) curl_multi_poll(m, NULL, 0, 1000, NULL);
  }
  double s = now() - t0;
  curl_multi_cleanup(m);
  curl_global_cleanup();
  printf("requests %ld ok %ld seconds %.3f rps %.0f\n", n, ok, s, n / s);
  return ok == n ? 0 : 1;
}
