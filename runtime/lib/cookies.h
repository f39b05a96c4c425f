/*
** cookies.h -- cookie jars (cookies.c): a session's cookies for each
** integration that sets `cookies = true`, as libcurl's cookie lines, and
** their way into and out of an easy handle. Not installed.
*/
#ifndef FLOWRUN_COOKIES_H
#define FLOWRUN_COOKIES_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>

typedef struct fr_jar fr_jar;           /* a session's jars, one per integration */

/* The cookie lines (NULL: none) of integration ig in jars. */
const char *fr_jar_get(const fr_jar *jars, const char *ig);
/* Makes lines (malloc'd or NULL; taken over) ig's cookies in *jars;
** false when out of memory (lines are freed). */
bool fr_jar_put(fr_jar **jars, const char *ig, char *lines);
void fr_jars_free(fr_jar **jars);
/* All the jars as bytes (each integration's name NUL, its lines NUL) in
** *out, malloc'd, and their length (0 and NULL when there are none);
** false when out of memory. */
bool fr_jars_encode(const fr_jar *jars, char **out, size_t *n);
/* Replaces *jars by those n bytes hold; false when they are damaged or
** memory runs out (*jars is then what could be read). */
bool fr_jars_decode(fr_jar **jars, const char *p, size_t n);
/* Empties e's cookie engine and loads lines into it; false when libcurl
** refused (out of memory). */
bool fr_cookies_load(CURL *e, const char *lines);
/* A jar holds at most this many cookies and bytes of cookie lines (a
** server setting cookie after cookie must not grow a session without
** bound, nor each journal record that carries the jar). */
#define FR_JAR_COOKIES 200
#define FR_JAR_BYTES 65536

/* e's cookies as lines in *lines (replaced; NULL when none), as many as
** the jar holds (those libcurl lists after are dropped); false when out
** of memory (*lines is kept). */
bool fr_cookies_save(CURL *e, char **lines);

#endif
