/*
** inspect.h -- require "flowrun.runtime" (inspect.c). Not installed.
*/
#ifndef FLOWRUN_INSPECT_H
#define FLOWRUN_INSPECT_H

#include <lua.h>

int fr_open_runtime_module(lua_State *L);  /* upvalue 1 = the runtime */

#endif
