/*
** freeze.h -- what every session shares, read-only (freeze.c).
*/
#ifndef FLOWRUN_FREEZE_H
#define FLOWRUN_FREEZE_H

#include <stdbool.h>

#include <lua.h>

/* Makes the table at idx read-only in place (it keeps its identity and its
** metamethods); name says what it is in the error a write raises. */
void fr_freeze(lua_State *L, int idx, const char *name);

/* Is the table at idx frozen (shared by every session)? */
bool fr_frozen(lua_State *L, int idx);

/* Pushes the table of module caches that require keeps beside each
** globals table (weak keys: globals -> { name = module }), or nil. */
void fr_push_module_caches(lua_State *L);

/* Pushes the table of module caches, made on first use. */
void fr_open_module_caches(lua_State *L);

/* Pushes the read-only view of the host's table at idx (made once). */
void fr_push_view(lua_State *L, int idx);

#endif
