/*
** response.h -- the response table api_node returns (response.c). Not
** installed.
*/
#ifndef FLOWRUN_RESPONSE_H
#define FLOWRUN_RESPONSE_H

#include <lua.h>

#include "call.h"

void fr_open_response(lua_State *L);    /* the response metatable, on the stack */
void fr_push_response(lua_State *L, fr_call *c);   /* c's response */

#endif
