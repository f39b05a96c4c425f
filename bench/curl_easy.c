/*
** curl_easy.c -- baseline: N sequential GETs on one reused easy handle.
** usage: curl_easy URL N; prints "requests N seconds S rps R".
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
  long n, i, ok = 0;
  CURL *e;
  if (argc != 3) {
    fprintf(stderr, "usage: curl_easy URL N\n");
    return 2;
  }
  n = atol(argv[2]);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  e = curl_easy_init();
  curl_easy_setopt(e, CURLOPT_URL, argv[1]);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink);
  double t0 = now();
  for (i = 0; i < n; i++) {
    long status = 0;
    if (curl_easy_perform(e) == CURLE_OK
        && curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK
        && status == 200)
      ok++;
  }
  double s = now() - t0;
  curl_easy_cleanup(e);
  curl_global_cleanup();
  printf("requests %ld ok %ld seconds %.3f rps %.0f\n", n, ok, s, n / s);
  return ok == n ? 0 : 1;
}
