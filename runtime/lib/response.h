/*
** response.h -- the response table api_node returns (response.c). Not
** installed.
*/
#ifndef FLOWRUN_RESPONSE_H
#define FLOWRUN_RESPONSE_H

#include <stdbool.h>

#include <lua.h>

#include "call.h"

void fr_open_response(lua_State *L);    /* the response metatable, on the stack */
/* c's response; label: the index of c's label on the stack, or 0 */
void fr_push_response(lua_State *L, fr_call *c, int label);
/* Is the value at idx a response? Then its lazy fields are built, so that
** a plain walk of it sees them all. */
bool fr_response_full(lua_State *L, int idx);
void fr_response_mark(lua_State *L);    /* the table on top becomes a response */

#endif
