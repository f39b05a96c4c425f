/*
** labels.c -- result labels: the four default labels, and the sets of
** results an api_node declares (results, an integration's retry.on).
*/
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

const char LABEL_OTHER[] = "other", LABEL_ERROR[] = "error",
  LABEL_TIMEOUT[] = "timeout", LABEL_MAXCONN[] = "max-connection";

/* The LBL_* bit of a default label, 0 for a status. */
uint8_t fr_label_bit(const char *label) {
  return label == LABEL_OTHER ? LBL_OTHER : label == LABEL_ERROR ? LBL_ERROR
       : label == LABEL_TIMEOUT ? LBL_TIMEOUT : label == LABEL_MAXCONN ? LBL_MAXCONN : 0;
}

static bool is_code(const char *s) {
  return s[0] >= '1' && s[0] <= '5' && isdigit((unsigned char)s[1])
      && isdigit((unsigned char)s[2]) && s[3] == '\0';
}

void fr_parse_results(lua_State *L, int idx, const char *what, fr_results *r,
                      bool need200) {
  static const struct { const char *name; uint8_t bit; } defaults[] = {
    { "other", LBL_OTHER }, { "error", LBL_ERROR },
    { "timeout", LBL_TIMEOUT }, { "max-connection", LBL_MAXCONN },
  };
  lua_Integer n, i;
  if (!lua_istable(L, idx))
    luaL_error(L, "%s: expected an array of result names like {\"200\", \"404\"}, got %s",
               what, luaL_typename(L, idx));
  n = (lua_Integer)lua_rawlen(L, idx);
  for (i = 1; i <= n; i++) {
    const char *s;
    size_t k;
    if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
      luaL_error(L, "%s[%d]: expected a string like \"200\", got %s", what,
                 (int)i, luaL_typename(L, -1));
    s = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (is_code(s)) {
      int c = atoi(s);
      r->code[c / 8] |= 1 << (c % 8);
      continue;
    }
    if (s[0] >= '1' && s[0] <= '5' && s[1] == 'x' && s[2] == 'x' && !s[3]) {
      r->cls |= 1 << (s[0] - '0');
      continue;
    }
    for (k = 0; k < 4; k++)
      if (strcasecmp(s, defaults[k].name) == 0) break;
    if (k < 4 && strcmp(s, defaults[k].name) == 0) {
      r->defaults |= defaults[k].bit;
      continue;
    }
    if (k < 4 || (s[0] >= '1' && s[0] <= '5' && (s[1] == 'x' || s[1] == 'X')
                  && (s[2] == 'x' || s[2] == 'X') && !s[3]))
      luaL_error(L, "%s: result labels must be lower case: \"%s\"", what, s);
    luaL_error(L, "%s: unknown result \"%s\" (use a status like \"404\", a "
               "class like \"4xx\", or other, error, timeout, max-connection)",
               what, s);
  }
  if (need200 && !(r->cls & (1 << 2))) {   /* a success: a 2xx status, or "2xx" */
    int c = 200;
    while (c < 300 && !(r->code[c / 8] & (1 << (c % 8)))) c++;
    if (c == 300) luaL_error(L, "%s: must include a success: a 2xx status like \"200\" or \"201\", or \"2xx\"", what);
  }
}

/* The declared result matching status: the code, -class, or 0. */
int fr_results_status(const fr_results *r, int status) {
  if (status >= 0 && status < 600 && (r->code[status / 8] & (1 << (status % 8))))
    return status;
  if (status >= 100 && status < 600 && (r->cls & (1 << (status / 100))))
    return -(status / 100);
  return 0;
}
