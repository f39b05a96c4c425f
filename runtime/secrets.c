/*
** secrets.c -- values read through env(), and hiding them as "***".
**
** A secret shows up in output in many spellings: as written, percent-
** encoded in a URL (either hex case, '+' for a space in a query or form),
** escaped in JSON (lua-cjson writes '/' as "\/") or by the REPL's printer
** ("\"", "\\", "\ddd"). Rather than store each spelling, the matcher
** reads the text one character at a time through those encodings and
** compares what it decodes with the secret: every mix of them is caught.
** JSON inside JSON is caught through a second, JSON-escaped copy.
*/
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void add_one(flowrun *rt, const char *s, size_t len) {
  void *p;
  char *copy;
  for (int i = 0; i < rt->nsecrets; i++)
    if (rt->secrets[i].len == len && memcmp(rt->secrets[i].s, s, len) == 0)
      return;
  p = realloc(rt->secrets, (rt->nsecrets + 1) * sizeof *rt->secrets);
  copy = malloc(len + 1);
  if (!p || !copy) abort();
  rt->secrets = p;
  memcpy(copy, s, len);
  copy[len] = '\0';
  rt->secrets[rt->nsecrets].s = copy;
  rt->secrets[rt->nsecrets++].len = len;
}

/* Remembers a secret, and also as JSON escapes it (as lua-cjson does,
** '/' included): the matcher reads one level of encoding, so JSON text
** inside JSON text (an echoed request body) needs this second spelling. */
void fr_secret_add(flowrun *rt, const char *s, size_t len) {
  char *json, *o;
  if (len == 0) return;
  add_one(rt, s, len);
  if (!(o = json = malloc(len * 6 + 1))) abort();
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\' || c == '/') { *o++ = '\\'; *o++ = (char)c; }
    else if (c < 0x20) o += sprintf(o, "\\u%04x", c);
    else *o++ = (char)c;
  }
  if ((size_t)(o - json) != len) add_one(rt, json, (size_t)(o - json));
  free(json);
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes one encoded character at s (left bytes): %XX, \X, \ddd, \xXX,
** \u00XX. Returns the bytes it takes and sets *c, or 0 if s starts no
** encoding. A raw character is the caller's business. */
static size_t decode(const unsigned char *s, size_t left, int *c) {
  int h, l;
  if (left >= 3 && s[0] == '%' && (h = hexval(s[1])) >= 0 && (l = hexval(s[2])) >= 0) {
    *c = h * 16 + l;
    return 3;
  }
  if (s[0] == '+') { *c = ' '; return 1; }
  if (s[0] != '\\' || left < 2) return 0;
  switch (s[1]) {
  case 'n': *c = '\n'; return 2;
  case 'r': *c = '\r'; return 2;
  case 't': *c = '\t'; return 2;
  case 'b': *c = '\b'; return 2;
  case 'f': *c = '\f'; return 2;
  case '"': case '\\': case '/': case '\'': *c = s[1]; return 2;
  case 'x':
    if (left >= 4 && (h = hexval(s[2])) >= 0 && (l = hexval(s[3])) >= 0) {
      *c = h * 16 + l;
      return 4;
    }
    return 0;
  case 'u':                             /* JSON: only what fits a byte */
    if (left >= 6 && s[2] == '0' && s[3] == '0'
        && (h = hexval(s[4])) >= 0 && (l = hexval(s[5])) >= 0) {
      *c = h * 16 + l;
      return 6;
    }
    return 0;
  default:
    if (s[1] >= '0' && s[1] <= '9') {   /* Lua's \ddd, one to three digits */
      size_t n = 1;
      int v = 0;
      while (n < 4 && n < left && s[n] >= '0' && s[n] <= '9') v = v * 10 + (s[n++] - '0');
      if (v > 255) return 0;
      *c = v;
      return n;
    }
    return 0;
  }
}

/* How many bytes of s spell the secret sec (n bytes), 0 if they don't.
** Where a character of the text may be itself or start an encoding of the
** same character (a doubled backslash: one backslash escaped, or two as
** written), prefer_decoded says which reading wins: one pass reads escapes
** first (JSON in JSON), the other the text as written (a secret with
** backslashes of its own). Each pass is linear: no text makes it slow. */
static size_t spells(const unsigned char *s, size_t left, const unsigned char *sec,
                     size_t n, bool prefer_decoded) {
  size_t i = 0;
  for (size_t k = 0; k < n; k++) {
    size_t used;
    int c;
    if (i >= left) return 0;
    used = decode(s + i, left - i, &c);
    if (used > 0 && c == sec[k] && (prefer_decoded || s[i] != sec[k]))
      i += used;
    else if (s[i] == sec[k])
      i++;
    else
      return 0;
  }
  return i;
}

/* Length of the text at s that spells a secret (the longest), 0 if none. */
static size_t secret_at(flowrun *rt, const char *s, size_t left) {
  const unsigned char *u = (const unsigned char *)s;
  size_t best = 0;
  if (u[0] != '%' && u[0] != '\\' && u[0] != '+') {   /* the common case */
    int i = 0;
    while (i < rt->nsecrets && (unsigned char)rt->secrets[i].s[0] != u[0]) i++;
    if (i == rt->nsecrets) return 0;
  }
  for (int i = 0; i < rt->nsecrets; i++) {
    const unsigned char *sec = (const unsigned char *)rt->secrets[i].s;
    size_t len = rt->secrets[i].len;
    size_t n = spells(u, left, sec, len, true);
    if (n == 0) n = spells(u, left, sec, len, false);
    if (n > best) best = n;
  }
  return best;
}

void fr_push_redacted(lua_State *L, flowrun *rt, const char *s, size_t len) {
  luaL_Buffer b;
  size_t i = 0, from = 0, n;
  if (rt->nsecrets == 0) { lua_pushlstring(L, s, len); return; }
  luaL_buffinit(L, &b);
  while (i < len) {
    if ((n = secret_at(rt, s + i, len - i)) > 0) {
      luaL_addlstring(&b, s + from, i - from);
      luaL_addstring(&b, "***");
      i += n;
      from = i;
    } else
      i++;
  }
  luaL_addlstring(&b, s + from, len - from);
  luaL_pushresult(&b);
}

char *fr_redact(flowrun *rt, const char *s) {
  size_t len = strlen(s), i = 0, o = 0, n;
  char *out = malloc(len * 3 + 1);   /* "***" never outgrows 3x */
  if (!out) return NULL;
  while (i < len) {
    if ((n = secret_at(rt, s + i, len - i)) > 0) {
      memcpy(out + o, "***", 3);
      o += 3;
      i += n;
    } else
      out[o++] = s[i++];
  }
  out[o] = '\0';
  return out;
}
