/*
** secrets.c -- values read through env(), and hiding them as "***".
**
** A secret shows up in output in many spellings: as written, percent-
** encoded in a URL (either hex case, '+' for a space in a query or form),
** escaped in JSON (lua-cjson writes '/' as "\/") or by the REPL's printer
** ("\"", "\\", "\ddd"). Rather than store each spelling, the matcher reads
** the text through those encodings as it goes and compares what it decodes
** with the secret, so every mix of them is caught. Where a character may
** be itself or start an encoding of the same character (a doubled
** backslash, "%25") both readings are followed, a few at a time: the cost
** stays linear in the text whatever it holds. A second level of encoding
** (JSON in JSON, a URL in a URL, \u escapes of non-ASCII) is caught through
** copies of the secret spelt once already; the hex digits of a \u escape
** in such a copy match in either case (lua-cjson writes "\u00e4", Jackson
** "\u00E4").
*/
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "runtime.h"
#include "secrets.h"

/* Adds one spelling of a secret, or names one already there; false when
** out of memory, the list as it was (or with a name it lacked). */
static bool add_one(flowrun *rt, const char *s, size_t len, const char *name,
                    const char *basic) {
  fr_secret *p, k = { NULL, len, NULL, NULL, 1 };
  for (int i = 0; i < rt->nsecrets; i++) {
    fr_secret *o = &rt->secrets[i];
    if (o->len == len && memcmp(o->s, s, len) == 0) {
      o->refs++;
      if (name && !o->name && !(o->name = strdup(name))) return false;
      if (basic && !o->basic && !(o->basic = strdup(basic))) return false;
      return true;
    }
  }
  if (!(k.s = malloc(len + 1)) || (name && !(k.name = strdup(name)))
      || (basic && !(k.basic = strdup(basic)))
      || !(p = realloc(rt->secrets, (rt->nsecrets + 1) * sizeof *rt->secrets))) {
    free(k.s);
    free(k.name);
    free(k.basic);
    return false;
  }
  memcpy(k.s, s, len);
  k.s[len] = '\0';
  rt->secrets = p;
  rt->secrets[rt->nsecrets++] = k;
  return true;
}

/* Appends the code point at s (UTF-8, n bytes left) as JSON's \uXXXX
** (a surrogate pair above U+FFFF); returns the bytes read, 0 if invalid. */
static size_t json_u(const unsigned char *s, size_t n, char *o, size_t *w) {
  unsigned cp;
  size_t len = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 0;
  if (len == 0 || len > n) return 0;
  cp = s[0] & (0x3F >> (len - 1));
  for (size_t k = 1; k < len; k++) {
    if ((s[k] & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (s[k] & 0x3F);
  }
  if (cp > 0xFFFF) {
    cp -= 0x10000;
    *w += (size_t)sprintf(o + *w, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
  } else
    *w += (size_t)sprintf(o + *w, "\\u%04x", cp);
  return len;
}

/* One forget of the secret spelt s (add_one's undo): gone at its last. */
static bool forget_one(flowrun *rt, const char *s, size_t len, const char *name,
                       const char *basic) {
  (void)name; (void)basic;
  for (int i = 0; i < rt->nsecrets; i++) {
    fr_secret *o = &rt->secrets[i];
    if (o->len == len && memcmp(o->s, s, len) == 0) {
      if (--o->refs > 0) return true;
      free(o->s);
      free(o->name);
      free(o->basic);
      memmove(o, o + 1, (size_t)(rt->nsecrets - i - 1) * sizeof *o);
      rt->nsecrets--;
      return true;
    }
  }
  return true;
}

typedef bool (*spelling_fn)(flowrun *rt, const char *s, size_t len, const char *name,
                            const char *basic);

/* Gives fn a secret (name: the variable it came from; basic: see
** fr_secret), and the spellings of it that a second level of encoding
** starts from: as lua-cjson escapes it ('/' included), with non-ASCII as
** \uXXXX (as most other JSON writers do), percent-encoded. */
static bool spellings(flowrun *rt, const char *s, size_t len, const char *name,
                      const char *basic, spelling_fn fn) {
  const unsigned char *u = (const unsigned char *)s;
  char *o, *enc;
  size_t w = 0, ascii_w = 0;
  bool ascii_ok = true, ok;
  if (len == 0) return true;
  if (!fn(rt, s, len, name, basic) || !(o = malloc(len * 12 + 1))) return false;
  for (size_t i = 0; i < len; i++) {    /* JSON, as lua-cjson writes it */
    if (u[i] == '"' || u[i] == '\\' || u[i] == '/') { o[w++] = '\\'; o[w++] = (char)u[i]; }
    else if (u[i] < 0x20) w += (size_t)sprintf(o + w, "\\u%04x", u[i]);
    else o[w++] = (char)u[i];
  }
  ok = w == len || fn(rt, o, w, NULL, NULL);
  for (size_t i = 0; i < len && ascii_ok; ) {   /* JSON with \u for non-ASCII */
    size_t used = 1;
    if (u[i] >= 0x80) ascii_ok = (used = json_u(u + i, len - i, o, &ascii_w)) > 0;
    else o[ascii_w++] = (char)u[i];
    i += used;
  }
  if (ok && ascii_ok && ascii_w != len) ok = fn(rt, o, ascii_w, NULL, NULL);
  free(o);
  if (ok && (ok = (enc = curl_easy_escape(NULL, s, (int)len)) != NULL)) {
    if (strlen(enc) != len) ok = fn(rt, enc, strlen(enc), NULL, NULL);
    curl_free(enc);
  }
  return ok;
}

bool fr_secret_add(flowrun *rt, const char *s, size_t len, const char *name,
                   const char *basic) {
  return spellings(rt, s, len, name, basic, add_one);
}

void fr_secret_forget(flowrun *rt, const char *s, size_t len) {
  (void)spellings(rt, s, len, NULL, NULL, forget_one);
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

/* Whether the text's byte t stands for byte k of the secret sec: the same
** byte, or a hex digit of a \uXXXX escape (a copy of the secret spelt as
** JSON) in the other case. */
static bool same(int t, const unsigned char *sec, size_t k) {
  size_t j = k;
  if (t == sec[k]) return true;
  if (!(sec[k] >= 'a' && sec[k] <= 'f' && t == sec[k] - 'a' + 'A')) return false;
  while (j > 0 && k - j < 3 && hexval(sec[j - 1]) >= 0) j--;   /* to the escape's first digit */
  return j >= 2 && sec[j - 1] == 'u' && sec[j - 2] == '\\';
}

#define READINGS 4                      /* ambiguous readings followed at once */

/* Adds offset i to the sorted set r (n entries) unless it is there. */
static void reading(size_t *r, int *n, size_t i) {
  int k = *n;
  while (k > 0 && r[k - 1] > i) k--;
  if (k > 0 && r[k - 1] == i) return;
  memmove(r + k + 1, r + k, (size_t)(*n - k) * sizeof *r);
  r[k] = i;
  (*n)++;
}

/* How many bytes of s (the longest reading) spell the secret sec (n bytes),
** 0 if none does. Each character of the text is read as written and, when
** it starts one, as an encoding; the readings that still match go on. When
** there are too many, the shortest and the longest are kept: they hold the
** text read as written and read through every escape. */
static size_t spells(const unsigned char *s, size_t left, const unsigned char *sec, size_t n) {
  size_t cur[READINGS], nxt[2 * READINGS];
  int ncur = 1, nnxt;
  cur[0] = 0;
  for (size_t k = 0; k < n; k++) {
    nnxt = 0;
    for (int r = 0; r < ncur; r++) {
      size_t i = cur[r], used;
      int c;
      if (i >= left) continue;
      if (same(s[i], sec, k)) reading(nxt, &nnxt, i + 1);
      if ((used = decode(s + i, left - i, &c)) > 0 && same(c, sec, k)) reading(nxt, &nnxt, i + used);
    }
    if (nnxt == 0) return 0;
    if (nnxt > READINGS) {              /* the ends: READINGS / 2 of each */
      memmove(nxt + READINGS / 2, nxt + nnxt - READINGS / 2, READINGS / 2 * sizeof *nxt);
      nnxt = READINGS;
    }
    memcpy(cur, nxt, (size_t)nnxt * sizeof *cur);
    ncur = nnxt;
  }
  return cur[ncur - 1];
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
    size_t n = spells(u, left, (const unsigned char *)rt->secrets[i].s, rt->secrets[i].len);
    if (n > best) best = n;
  }
  return best;
}

bool fr_has_secrets(const flowrun *rt) {
  return rt->nsecrets > 0;
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
  char *out;
  if (rt->nsecrets == 0) {              /* nothing to hide: a copy */
    if ((out = malloc(len + 1))) memcpy(out, s, len + 1);
    return out;
  }
  if (!(out = malloc(len * 3 + 1))) return NULL;   /* "***" never outgrows 3x */
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

/* The secret spelt exactly as read at s, the longest; NULL if none is. */
static const fr_secret *exact_at(flowrun *rt, const char *s, size_t left) {
  const fr_secret *best = NULL;
  for (int i = 0; i < rt->nsecrets; i++) {
    const fr_secret *k = &rt->secrets[i];
    if (k->len <= left && memcmp(s, k->s, k->len) == 0 && (!best || k->len > best->len))
      best = k;
  }
  return best;
}

static bool word_char(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Writes s (len bytes, no NUL) to f as one word of a POSIX shell command
** that stands for s, except for its secrets: one spelt exactly as env()
** read it is the shell variable it came from ("$NAME", so the command runs
** where the variable is set), any other is ***. Bare when every byte may
** be, in single quotes when no variable is used, else in double quotes. */
void fr_shell_word(flowrun *rt, FILE *f, const char *s, size_t len) {
  bool vars = false, found = false, plain = len > 0;
  size_t i = 0, n;
  const fr_secret *k;
  while (i < len) {                     /* how to quote it */
    if ((n = secret_at(rt, s + i, len - i)) > 0) {
      found = true;
      if ((k = exact_at(rt, s + i, len - i)) && k->len == n && k->name) vars = true;
      i += n;
    } else {
      plain = plain && (word_char((unsigned char)s[i]) || (s[i] && strchr("-./:=@%+,", s[i])));
      i++;
    }
  }
  if (plain && !found) { fwrite(s, 1, len, f); return; }
  fputc(vars ? '"' : '\'', f);
  for (i = 0; i < len; ) {
    if ((n = secret_at(rt, s + i, len - i)) > 0) {
      k = exact_at(rt, s + i, len - i);
      if (vars && k && k->len == n && k->name)
        fprintf(f, i + n < len && word_char((unsigned char)s[i + n]) ? "${%s}" : "$%s", k->name);
      else
        fputs("***", f);
      i += n;
      continue;
    }
    if (!vars && s[i] == '\'') fputs("'\\''", f);
    else if (vars && s[i] == '!') fputs("\"'!'\"", f);
    else if (vars && strchr("\"\\$`", s[i])) { fputc('\\', f); fputc(s[i], f); }
    else fputc(s[i], f);
    i++;
  }
  fputc(vars ? '"' : '\'', f);
}

const fr_secret *fr_secret_find(flowrun *rt, const char *s, const fr_secret *after) {
  for (int i = after ? (int)(after - rt->secrets) + 1 : 0; i < rt->nsecrets; i++)
    if (strcmp(rt->secrets[i].s, s) == 0) return &rt->secrets[i];
  return NULL;
}

void fr_secrets_free(flowrun *rt) {
  for (int i = 0; i < rt->nsecrets; i++) {
    free(rt->secrets[i].s);
    free(rt->secrets[i].name);
    free(rt->secrets[i].basic);
  }
  free(rt->secrets);
  rt->secrets = NULL;
  rt->nsecrets = 0;
}
