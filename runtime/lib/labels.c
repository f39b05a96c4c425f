/*
** labels.c -- the sets of results an api_node declares (results, an
** integration's retry.on), read by the rules of rules.c, and which label
** a status gets from them.
*/
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "labels.h"
#include "rules.h"

/* The LBL_* bit of a default label, 0 for a status. */
uint8_t fr_label_bit(const char *label) {
  return label == LABEL_OTHER ? LBL_OTHER : label == LABEL_ERROR ? LBL_ERROR
       : label == LABEL_TIMEOUT ? LBL_TIMEOUT : label == LABEL_MAXCONN ? LBL_MAXCONN : 0;
}

void fr_parse_results(lua_State *L, int idx, const char *what, fr_results *r,
                      bool need200) {
  lua_Integer n, i;
  if (!lua_istable(L, idx))
    luaL_error(L, fr_messages[M_RESULTS_ARRAY], what, luaL_typename(L, idx));
  n = (lua_Integer)lua_rawlen(L, idx);
  for (i = 1; i <= n; i++) {
    const char *s;
    size_t len;
    int k, c;
    if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
      luaL_error(L, fr_messages[M_RESULT_TYPE], what, (int)i, luaL_typename(L, -1));
    s = lua_tolstring(L, -1, &len);
    lua_pop(L, 1);                      /* the table keeps s */
    switch (fr_result_kind(s, len)) {   /* rules.c */
    case FR_RESULT_CODE:
      c = atoi(s);
      r->code[c / 8] |= 1 << (c % 8);
      break;
    case FR_RESULT_CLASS:
      r->cls |= 1 << (s[0] - '0');
      break;
    case FR_RESULT_DEFAULT:             /* the k-th default label is LBL_* bit 1 << k */
      for (k = 0; strcmp(s, fr_default_labels[k]) != 0; k++) {}
      r->defaults |= 1 << k;
      break;
    case FR_RESULT_UPPER:
      luaL_error(L, "%s: %s", what, lua_pushfstring(L, fr_messages[M_LOWER_CASE], s));
      break;
    default:
      luaL_error(L, "%s: %s", what, lua_pushfstring(L, fr_messages[M_UNKNOWN_RESULT], s));
    }
  }
  if (need200 && !(r->cls & (1 << 2))) {   /* a success: a 2xx status, or "2xx" */
    int c = 200;
    while (c < 300 && !(r->code[c / 8] & (1 << (c % 8)))) c++;
    if (c == 300) luaL_error(L, "%s: %s", what, fr_messages[M_MISSING_SUCCESS]);
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
