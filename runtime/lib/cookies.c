/*
** cookies.c -- cookie jars (README: Cookies). Easy handles serve every
** session of an integration in turn, so a handle's cookie engine holds
** one call's cookies only: the call loads its session's jar into the
** handle before each transfer and reads the jar back after it. A jar is
** libcurl's own export (CURLINFO_COOKIELIST, the Netscape format, one
** cookie a line), joined by '\n': what the journal stores with the call.
*/
#include <stdlib.h>
#include <string.h>

#include "cookies.h"

struct fr_jar {
  fr_jar *next;
  char *lines;
  char ig[];
};

static fr_jar *find(const fr_jar *jars, const char *ig) {
  for (; jars; jars = jars->next)
    if (strcmp(jars->ig, ig) == 0) return (fr_jar *)jars;
  return NULL;
}

const char *fr_jar_get(const fr_jar *jars, const char *ig) {
  const fr_jar *j = find(jars, ig);
  return j ? j->lines : NULL;
}

bool fr_jar_put(fr_jar **jars, const char *ig, char *lines) {
  fr_jar *j = find(*jars, ig);
  if (!j) {
    size_t n = strlen(ig) + 1;
    if (!lines) return true;            /* none, and none before */
    if (!(j = malloc(sizeof *j + n))) {
      free(lines);
      return false;
    }
    memcpy(j->ig, ig, n);
    j->lines = NULL;
    j->next = *jars;
    *jars = j;
  }
  free(j->lines);
  j->lines = lines;
  return true;
}

void fr_jars_free(fr_jar **jars) {
  for (fr_jar *j = *jars, *next; j; j = next) {
    next = j->next;
    free(j->lines);
    free(j);
  }
  *jars = NULL;
}

bool fr_jars_encode(const fr_jar *jars, char **out, size_t *n) {
  size_t len = 0;
  char *p;
  for (const fr_jar *j = jars; j; j = j->next)
    if (j->lines) len += strlen(j->ig) + strlen(j->lines) + 2;
  *out = NULL;
  *n = len;
  if (len == 0) return true;
  if (!(p = *out = malloc(len))) return false;
  for (const fr_jar *j = jars; j; j = j->next)
    if (j->lines) {
      size_t a = strlen(j->ig) + 1, b = strlen(j->lines) + 1;
      memcpy(p, j->ig, a);
      memcpy(p + a, j->lines, b);
      p += a + b;
    }
  return true;
}

bool fr_jars_decode(fr_jar **jars, const char *p, size_t n) {
  const char *end = p + n;
  fr_jars_free(jars);
  while (p < end) {
    const char *ig = p, *lines, *e1 = memchr(p, '\0', (size_t)(end - p)), *e2;
    char *copy;
    if (!e1 || !(e2 = memchr(e1 + 1, '\0', (size_t)(end - e1 - 1)))) return false;
    lines = e1 + 1;
    if (!(copy = strdup(lines)) || !fr_jar_put(jars, ig, copy)) return false;
    p = e2 + 1;
  }
  return true;
}

bool fr_cookies_load(CURL *e, const char *lines) {
  char line[8192];
  if (curl_easy_setopt(e, CURLOPT_COOKIELIST, "ALL") != CURLE_OK) return false;
  while (lines && *lines) {
    size_t n = strcspn(lines, "\n");
    if (n > 0 && n < sizeof line) {     /* libcurl caps a cookie at 4 KB */
      memcpy(line, lines, n);
      line[n] = '\0';
      if (curl_easy_setopt(e, CURLOPT_COOKIELIST, line) != CURLE_OK) return false;
    }
    lines += n + (lines[n] == '\n');
  }
  return true;
}

bool fr_cookies_save(CURL *e, char **lines) {
  struct curl_slist *list = NULL, *l;
  size_t n = 0, kept = 0;
  char *out, *p;
  if (curl_easy_getinfo(e, CURLINFO_COOKIELIST, &list) != CURLE_OK) return false;
  for (l = list; l && kept < FR_JAR_COOKIES && n + strlen(l->data) + 1 <= FR_JAR_BYTES; l = l->next) {
    n += strlen(l->data) + 1;           /* those past the jar's size are dropped */
    kept++;
  }
  if (n == 0) {
    free(*lines);
    *lines = NULL;
    return true;
  }
  if (!(out = malloc(n))) {
    curl_slist_free_all(list);
    return false;
  }
  for (p = out, l = list; kept > 0; l = l->next, kept--) {
    size_t k = strlen(l->data);
    memcpy(p, l->data, k);
    p[k] = kept > 1 ? '\n' : '\0';
    p += k + 1;
  }
  curl_slist_free_all(list);
  free(*lines);
  *lines = out;
  return true;
}
