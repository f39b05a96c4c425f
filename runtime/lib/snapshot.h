/*
** snapshot.h -- Lua values as bytes (snapshot.c): a declarative session's
** `session` table, stored at each step that waits and read back when the
** session is restored. Not installed.
**
** What can be stored: nil, booleans, numbers (integers and floats kept
** apart, floats to the bit), strings, tables of those (a table met twice
** is stored twice), json.null, json.empty_array, tables with
** json.array_mt, and api_node's responses. Not: functions, coroutines,
** userdata, tables with another metatable, tables as keys, cycles.
*/
#ifndef FLOWRUN_SNAPSHOT_H
#define FLOWRUN_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

/* Pushes the value at idx as a string of bytes and says true; or pushes
** why it cannot be stored, naming where in it ("session.cb is a
** function: ..."; root names the value), and says false. */
bool fr_snapshot_encode(lua_State *L, int idx, const char *root);
/* Pushes the value p[0..n) holds and says true; false with a message
** pushed when the bytes are not a snapshot. */
bool fr_snapshot_decode(lua_State *L, const char *p, size_t n);

#endif
