/*
** query.h -- query strings from Lua tables (query.c). Not installed.
*/
#ifndef FLOWRUN_QUERY_H
#define FLOWRUN_QUERY_H

#include <lua.h>

/* Pushes an array of "key=value" strings, percent-encoded, from a query
** table at idx in either form (README: A flow that branches on labels);
** raises naming what. */
void fr_query_pairs(lua_State *L, int idx, const char *what);
/* Pushes the string form of the query or params value at idx; raises
** naming what.key when it is not a string, number or boolean. */
const char *fr_query_value(lua_State *L, int idx, const char *what, const char *key);

#endif
