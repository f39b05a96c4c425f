/*
** mock.h -- what the mock server's two files share: routes.c loads
** the routes and matches requests against them, server.c serves. Not installed.
*/
#ifndef FLOWRUN_MOCK_H
#define FLOWRUN_MOCK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_CAPS   16                 /* captures in one path */

struct MHD_Connection;

enum { FAULT_NONE, FAULT_NO_RESPONSE, FAULT_RESET };

struct buf { char *p; size_t n, cap; };

struct seg { char *text; int cap; };   /* cap: capture index, -1 for a literal */

struct header { char *name, *value; };  /* a name may repeat */

struct route {
  char *method;                 /* NULL: any method */
  struct seg *segs;             /* the path split on '/' */
  int nsegs, ncaps;
  int status;
  struct header *headers;
  int nheaders, has_ctype;
  char *body;                   /* body text, or the encoded json */
  size_t bodylen;
  int json, echo, fault, chunked, gzip;
  long delay_ms;
  long times, used;             /* matches at most `times` requests (0: always) */
  struct header *query;         /* parameters the request's query must have */
  int nquery;
};

struct req {
  char *uri;                    /* raw request target, query included */
  const struct route *route;    /* NULL: no route matched */
  char *vals[MAX_CAPS];         /* percent-decoded captures */
  struct buf body;
  int started, waited, too_big, gone, fd;
  int64_t due;                  /* monotonic ms at which the timer wakes us */
  struct MHD_Connection *conn;
};

struct mock {
  const char *file;
  struct route *routes;
  int nroutes;
  pthread_mutex_t lock;         /* guards the heap and stopping */
  pthread_cond_t wake;
  struct req **heap;            /* suspended requests, earliest due first */
  size_t nheap, heapcap;
  int stopping;
};

/* Resizes p to n bytes; running out of memory ends the process. */
void *mock_xrealloc(void *p, size_t n);
/* Returns a NUL-terminated copy of the n bytes at s. */
char *mock_xstrndup(const char *s, size_t n);
/* Appends the n bytes at s to b, keeping b NUL-terminated. */
void mock_buf_add(struct buf *b, const char *s, size_t n);
/* Appends the string s to b. */
void mock_buf_adds(struct buf *b, const char *s);
/* Appends s JSON-escaped, without quotes. */
void mock_buf_esc(struct buf *b, const char *s, size_t n);
/* Returns a new string: the n bytes at s percent-decoded ('+' is a space if plus). */
char *mock_pct_decode(const char *s, size_t n, int plus);

/* Loads m->file into m->routes; prints the error and returns -1 on failure. */
int mock_load_routes(struct mock *m);
/* Frees every route, complete or not. */
void mock_free_routes(struct mock *m);
/* Returns the first route matching the request, or NULL; sets q->vals. */
const struct route *mock_find_route(struct mock *m, const char *method,
                                    struct req *q);
/* Appends template t (n bytes) to b with r's captures filled in from vals. */
void mock_render(struct buf *b, const char *t, size_t n,
                 const struct route *r, char **vals, int json);

#endif
