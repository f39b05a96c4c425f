/*
** auth.c -- OAuth2 for an integration (README: Integrations for real APIs, OAuth2):
** the token request and the token.
**
** An integration with auth = { oauth2 = ... } has one token, shared by
** every call of every session of the runtime. call.c asks whether it is
** fresh; when it is not, call.c sends the one token request this file
** builds (RFC 6749 4.4 client credentials, or 6 with a refresh token)
** through the loop like any call, parks the calls that need the token,
** and hands the answer back here. The answer is read with a small JSON
** scanner of its own: it runs inside the loop, where no Lua may run. The
** token, and a refresh token the endpoint sends, become secrets at once,
** before anything can show them.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "auth.h"
#include "request.h"
#include "runtime.h"
#include "secrets.h"

#define MARGIN_MS 30000.0               /* refreshed at most this long before expiry */

bool fr_auth_fresh(flowrun *rt, const fr_oauth *o) {
  return o->token && (o->expires_at == 0 || fr_clock(rt) < o->expires_at);
}

/* Appends "&name=value" (no '&' first) to the form at *f, value encoded. */
static bool form_add(FILE *f, bool *first, const char *name, const char *value) {
  char *enc;
  if (!value) return true;
  if (!(enc = curl_easy_escape(NULL, value, (int)strlen(value)))) return false;
  fprintf(f, "%s%s=%s", *first ? "" : "&", name, enc);
  *first = false;
  curl_free(enc);
  return true;
}

/* Pushes a header line to rq->hdrs; false: no memory. */
static bool header(fr_request *rq, const char *line) {
  struct curl_slist *l = curl_slist_append(rq->hdrs, line);
  if (l) rq->hdrs = l;
  return l != NULL;
}

/* Basic credentials of the client: RFC 6749 2.3.1 form-encodes id and
** secret before they are joined and base64'd. */
static bool basic_header(const fr_oauth *o, fr_request *rq) {
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char *id = curl_easy_escape(NULL, o->client_id, 0);
  char *pw = curl_easy_escape(NULL, o->client_secret, 0), *pair = NULL, *line = NULL;
  bool ok = false;
  size_t n, i, w;
  if (id && pw && (pair = malloc(strlen(id) + strlen(pw) + 2))) {
    n = (size_t)sprintf(pair, "%s:%s", id, pw);
    if ((line = malloc(n / 3 * 4 + 32))) {
      const unsigned char *s = (const unsigned char *)pair;
      w = (size_t)sprintf(line, "Authorization: Basic ");
      for (i = 0; i + 2 < n; i += 3) {
        line[w++] = b64[s[i] >> 2];
        line[w++] = b64[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
        line[w++] = b64[((s[i + 1] & 15) << 2) | (s[i + 2] >> 6)];
        line[w++] = b64[s[i + 2] & 63];
      }
      if (i < n) {
        line[w++] = b64[s[i] >> 2];
        line[w++] = i + 1 < n ? b64[((s[i] & 3) << 4) | (s[i + 1] >> 4)] : b64[(s[i] & 3) << 4];
        line[w++] = i + 1 < n ? b64[(s[i + 1] & 15) << 2] : '=';
        line[w++] = '=';
      }
      line[w] = '\0';
      ok = header(rq, line);
    }
  }
  curl_free(id);
  curl_free(pw);
  free(pair);
  free(line);
  return ok;
}

bool fr_auth_request(const fr_oauth *o, fr_request *rq) {
  char *body = NULL;
  size_t n;
  bool first = true, ok, in_form = o->client_body || !o->client_secret;
  FILE *f = open_memstream(&body, &n);
  if (!f) return false;
  strcpy(rq->method, "POST");
  ok = form_add(f, &first, "grant_type", o->refresh_token ? "refresh_token" : "client_credentials")
       && form_add(f, &first, "refresh_token", o->refresh_token)
       && form_add(f, &first, "scope", o->scope)
       && form_add(f, &first, "audience", o->audience)
       && (!in_form || form_add(f, &first, "client_id", o->client_id))
       && (!in_form || form_add(f, &first, "client_secret", o->client_secret));
  if (fclose(f) != 0 || !ok) {
    free(body);
    return false;
  }
  rq->body = body;
  rq->bodylen = n;
  return header(rq, "Content-Type: application/x-www-form-urlencoded")
      && header(rq, "Accept: application/json")
      && header(rq, "Expect:")
      && (in_form || basic_header(o, rq));
}

/* ---- the answer: a JSON object, read without Lua ---- */

static const char *ws(const char *p, const char *e) {
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
  return p;
}

/* The end of the JSON string at p ('"'), past its closing quote; NULL
** when it does not end. */
static const char *string_end(const char *p, const char *e) {
  for (p++; p < e; p++) {
    if (*p == '\\') p++;
    else if (*p == '"') return p + 1;
  }
  return NULL;
}

/* The end of the JSON value at p; NULL when malformed. Nested values are
** skipped by counting brackets outside strings. */
static const char *value_end(const char *p, const char *e) {
  int depth = 0;
  if (p >= e) return NULL;
  if (*p == '"') return string_end(p, e);
  if (*p != '{' && *p != '[') {
    while (p < e && !strchr(",}] \t\r\n", *p)) p++;
    return p;
  }
  for (; p < e; p++) {
    if (*p == '"') {
      if (!(p = string_end(p, e))) return NULL;
      p--;
    } else if (*p == '{' || *p == '[') depth++;
    else if ((*p == '}' || *p == ']') && --depth == 0) return p + 1;
  }
  return NULL;
}

/* The value of key in the top-level object of [p, e): *v its first byte,
** returns its end; NULL when the key is not there or the text is no
** object. */
static const char *field(const char *p, const char *e, const char *key, const char **v) {
  size_t klen = strlen(key);
  p = ws(p, e);
  if (p >= e || *p != '{') return NULL;
  for (p = ws(p + 1, e); p < e && *p == '"';) {
    const char *k = p + 1, *kend = string_end(p, e), *vend;
    if (!kend) return NULL;
    p = ws(kend, e);
    if (p >= e || *p != ':') return NULL;
    p = ws(p + 1, e);
    if (!(vend = value_end(p, e))) return NULL;
    if ((size_t)(kend - 1 - k) == klen && memcmp(k, key, klen) == 0) {
      *v = p;
      return vend;
    }
    p = ws(vend, e);
    if (p < e && *p == ',') p = ws(p + 1, e);
  }
  return NULL;
}

/* The JSON string [p, end) decoded, malloc'd; NULL when it is not a
** string (or has an escape beyond the Basic Multilingual Plane, or a
** \u0000 that would cut it short), or out of memory. */
static char *string_of(const char *p, const char *end) {
  char *s, *w;
  if (end - p < 2 || *p != '"' || !(s = w = malloc((size_t)(end - p)))) return NULL;
  for (p++, end--; p < end; p++) {
    unsigned u;
    if (*p != '\\') { *w++ = *p; continue; }
    switch (*++p) {
    case 'b': *w++ = '\b'; break;
    case 'f': *w++ = '\f'; break;
    case 'n': *w++ = '\n'; break;
    case 'r': *w++ = '\r'; break;
    case 't': *w++ = '\t'; break;
    case 'u':
      if (end - p < 5 || sscanf(p + 1, "%4x", &u) != 1 || u == 0 || (u >= 0xD800 && u < 0xE000)) {
        free(s);
        return NULL;
      }
      p += 4;
      if (u < 0x80) *w++ = (char)u;
      else if (u < 0x800) { *w++ = (char)(0xC0 | u >> 6); *w++ = (char)(0x80 | (u & 63)); }
      else {
        *w++ = (char)(0xE0 | u >> 12);
        *w++ = (char)(0x80 | ((u >> 6) & 63));
        *w++ = (char)(0x80 | (u & 63));
      }
      break;
    default: *w++ = *p;                 /* '"', '\\', '/' */
    }
  }
  *w = '\0';
  return s;
}


/* A token (or refresh token) given up, was, stays hidden until the next
** is given up; then the one before goes from the secrets (fr_secret_forget:
** hidden still if anything else added it). A runtime that refreshes for
** weeks hides two per integration, not every token it ever had. */
static void retire(flowrun *rt, char **old, char *was) {
  if (!was) return;
  if (*old) {
    fr_secret_forget(rt, *old, strlen(*old));
    free(*old);
  }
  *old = was;
}
/* A token to send in a header: visible ASCII (RFC 6750's b64token and
** more), so it can never break the request's header lines. */
static bool header_safe(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7F) return false;
  return true;
}

bool fr_auth_accept(flowrun *rt, fr_oauth *o, int status, const char *body, size_t len,
                    const char *error, char *msg, size_t size) {
  const char *e = body ? body + len : NULL, *v = NULL, *end;
  char *token = NULL, *s;
  int n = snprintf(msg, size, "OAuth2 token request to %s failed: ", o->token_url);
  if (n < 0 || (size_t)n >= size) n = (int)size - 1;
  msg += n;
  size -= (size_t)n;
  if (!status) {
    snprintf(msg, size, "%s", error ? error : "no answer");
    return false;
  }
  if (status < 200 || status > 299) {   /* RFC 6749 5.2: its "error" says why */
    char *why = body && (end = field(body, e, "error", &v)) ? string_of(v, end) : NULL;
    snprintf(msg, size, "status %d%s%s%s", status, why ? " (" : "", why ? why : "", why ? ")" : "");
    free(why);
    return false;
  }
  if (!body || !(end = field(body, e, "access_token", &v)) || !(token = string_of(v, end))
      || !*token || !header_safe(token)) {
    free(token);
    snprintf(msg, size, "status %d without an access_token a header can carry", status);
    return false;
  }
  if (!fr_secret_add(rt, token, strlen(token), NULL, NULL)) {
    free(token);
    snprintf(msg, size, "out of memory");
    return false;
  }
  if ((end = field(body, e, "token_type", &v)) && (s = string_of(v, end))) {
    bool bearer = strcasecmp(s, "bearer") == 0;
    if (!bearer) snprintf(msg, size, "token_type \"%.40s\", not Bearer", s);
    free(s);
    if (!bearer) {
      free(token);
      return false;
    }
  }
  double life = -1;                     /* expires_in: a number, or one in a string */
  if ((end = field(body, e, "expires_in", &v))) {
    char num[32], *stop;
    size_t k = (size_t)(end - v);
    if (*v == '"' && k >= 2) { v++; k -= 2; }
    if (k < sizeof num) {
      memcpy(num, v, k);
      num[k] = '\0';
      double secs = strtod(num, &stop);
      life = stop == num ? -1 : secs > 0 ? secs * 1000 : 0;   /* null: none; negative: 0 */
    }
  }
  if ((end = field(body, e, "refresh_token", &v)) && o->refresh_token
      && (s = string_of(v, end))) {    /* a rotated refresh token replaces the old */
    if (*s && fr_secret_add(rt, s, strlen(s), NULL, NULL)) {
      retire(rt, &o->old_refresh, o->refresh_token);
      o->refresh_token = s;
    } else
      free(s);
  }
  retire(rt, &o->old_token, o->token);
  o->token = token;
  o->gen++;
  /* none: until a 401; 0 or less: only the calls waiting for it use it */
  o->expires_at = life < 0 ? 0 : life == 0 ? fr_clock(rt)
                : fr_clock(rt) + life - (life / 10 < MARGIN_MS ? life / 10 : MARGIN_MS);
  return true;
}

bool fr_auth_header(const fr_oauth *o, fr_request *rq) {
  struct curl_slist *l, *copy = NULL, *n;
  size_t len = strlen(o->token) + 32;
  char *line = malloc(len);
  if (!line) return false;
  snprintf(line, len, "Authorization: Bearer %s", o->token);
  for (l = rq->hdrs; l; l = l->next) {
    const char *data = strncasecmp(l->data, "Authorization:", 14) == 0 ? line : l->data;
    if (!(n = curl_slist_append(copy, data))) {
      curl_slist_free_all(copy);
      free(line);
      return false;
    }
    copy = n;
  }
  free(line);
  if (!rq->shared_hdrs) curl_slist_free_all(rq->hdrs);
  rq->hdrs = copy;
  rq->shared_hdrs = false;
  return true;
}

void fr_auth_stale(flowrun *rt, fr_oauth *o, unsigned gen) {
  if (o->gen == gen && o->token) {
    retire(rt, &o->old_token, o->token);
    o->token = NULL;
  }
}

void fr_auth_free(fr_oauth *o) {
  if (!o) return;
  free(o->token_url);
  free(o->client_id);
  free(o->client_secret);
  free(o->scope);
  free(o->audience);
  free(o->refresh_token);
  free(o->token);
  free(o->old_token);
  free(o->old_refresh);
  free(o);
}
