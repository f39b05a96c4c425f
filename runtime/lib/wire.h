/*
** wire.h -- what an integration asks of the wire (wire.c): compressed
** responses, a proxy, a client certificate; and multipart bodies of
** api_node. Not installed.
*/
#ifndef FLOWRUN_WIRE_H
#define FLOWRUN_WIRE_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>
#include <lua.h>

typedef struct fr_integration fr_integration;
typedef struct fr_request fr_request;

/* One part of a multipart body: a field (value) or a file (data, with
** its filename and content type when given). */
typedef struct fr_part {
  char *name, *filename, *type;         /* filename, type: NULL when not given */
  char *data;
  size_t len;
} fr_part;

typedef struct fr_parts {
  int n;
  fr_part p[];
} fr_parts;

/* Sets on a new easy handle of ig what its integrations keys ask:
** Accept-Encoding, max_response_bytes (on the decoded body when
** compressed), the proxy (none by default: the environment ignored), the
** client certificate. */
void fr_wire_easy(CURL *e, const fr_integration *ig);

/* Reads the multipart array at idx into rq->parts; raises with
** api_node's message on a mistake (rules.c). */
void fr_parts_read(lua_State *L, fr_request *rq, int idx);
void fr_parts_free(fr_parts *ps);

/* The MIME body of the parts for e, or NULL when out of memory. */
curl_mime *fr_parts_mime(CURL *e, const fr_parts *ps);

#endif
