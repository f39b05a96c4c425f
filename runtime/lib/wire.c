/*
** wire.c -- what an integration asks of the wire, set once on each of its
** easy handles (README: Compressed responses, Proxies, Client certificates),
** and the multipart bodies of api_node (README: Multipart bodies).
**
** A multipart body is kept in the request as its parts (copied from the
** spec, which the flow may change or drop) and made into a libcurl MIME
** body for each transfer: an attempt, a retry or a 307/308 redirect sends
** the same parts again, and the MIME body goes with the transfer.
*/
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "integration.h"
#include "request.h"
#include "rules.h"
#include "wire.h"

void fr_wire_easy(CURL *e, const fr_integration *ig) {
  /* libcurl's write callback sees the decoded body, so on_body (call.c)
  ** caps that; CURLOPT_MAXFILESIZE reads the Content-Length of the
  ** encoded body, which says nothing of the decoded size. */
  curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
                   ig->compressed ? (curl_off_t)0 : ig->max_response_bytes);
  if (ig->compressed) curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");   /* all it decodes */
  if (!ig->proxy_env) curl_easy_setopt(e, CURLOPT_PROXY, ig->proxy ? ig->proxy : "");
  if (ig->no_proxy) curl_easy_setopt(e, CURLOPT_NOPROXY, ig->no_proxy);
  if (ig->cert_file) curl_easy_setopt(e, CURLOPT_SSLCERT, ig->cert_file);
  if (ig->key_file) curl_easy_setopt(e, CURLOPT_SSLKEY, ig->key_file);
  if (ig->cert_file)                    /* none: "", never OpenSSL's prompt on a terminal */
    curl_easy_setopt(e, CURLOPT_KEYPASSWD, ig->key_password ? ig->key_password : "");
}

void fr_parts_free(fr_parts *ps) {
  if (!ps) return;
  for (int i = 0; i < ps->n; i++) {
    free(ps->p[i].name);
    free(ps->p[i].filename);
    free(ps->p[i].type);
    free(ps->p[i].data);
  }
  free(ps);
}

/* A copy of the string field key of the table at idx, or NULL without
** it (a number as its text); len gets its length. */
static char *copy_field(lua_State *L, fr_request *rq, int idx, const char *key, size_t *len) {
  size_t n;
  char *s;
  if (lua_getfield(L, idx, key) == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  const char *v = lua_tolstring(L, -1, &n);
  if (!(s = malloc(n + 1))) {
    fr_parts_free(rq->parts);
    rq->parts = NULL;
    luaL_error(L, "not enough memory");
  }
  memcpy(s, v, n + 1);
  if (len) *len = n;
  lua_pop(L, 1);
  return s;
}

void fr_parts_read(lua_State *L, fr_request *rq, int idx) {
  int n = 0;
  idx = lua_absindex(L, idx);
  lua_pushnil(L);                       /* an array 1..n and nothing else */
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    n++;
  }
  if (n == 0 || (lua_Unsigned)n != lua_rawlen(L, idx)) fr_api_error(L, M_MULTIPART_ARRAY);
  for (int i = 1; i <= n; i++) {
    const char *why;
    lua_rawgeti(L, idx, i);
    if ((why = fr_part_problem(L, -1))) fr_api_error(L, M_MULTIPART_PART, i, why);
    lua_pop(L, 1);
  }
  if (!(rq->parts = calloc(1, sizeof *rq->parts + (size_t)n * sizeof rq->parts->p[0])))
    luaL_error(L, "not enough memory");
  for (int i = 1; i <= n; i++) {
    fr_part *p = &rq->parts->p[i - 1];
    lua_rawgeti(L, idx, i);
    rq->parts->n = i;                   /* freed up to here on an error */
    p->name = copy_field(L, rq, -1, "name", NULL);
    if (!(p->data = copy_field(L, rq, -1, "value", &p->len))) {
      p->data = copy_field(L, rq, -1, "data", &p->len);
      p->filename = copy_field(L, rq, -1, "filename", NULL);
      p->type = copy_field(L, rq, -1, "content_type", NULL);
    }
    lua_pop(L, 1);
  }
}

curl_mime *fr_parts_mime(CURL *e, const fr_parts *ps) {
  curl_mime *m = curl_mime_init(e);
  if (!m) return NULL;
  for (int i = 0; i < ps->n; i++) {
    const fr_part *p = &ps->p[i];
    curl_mimepart *mp = curl_mime_addpart(m);
    if (!mp || curl_mime_name(mp, p->name) != CURLE_OK
        || curl_mime_data(mp, p->data, p->len) != CURLE_OK
        || (p->filename && curl_mime_filename(mp, p->filename) != CURLE_OK)
        || (p->type && curl_mime_type(mp, p->type) != CURLE_OK)) {
      curl_mime_free(m);
      return NULL;
    }
  }
  return m;
}
