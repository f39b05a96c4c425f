/*
** sandbox.h -- what a flow can reach (sandbox.c).
**
** Flows see the flow globals and a safe standard library, shared by every
** session and read-only; a host grants more on purpose (flowrun_allow,
** flowrun_register). See sandbox.c.
*/
#ifndef FLOWRUN_SANDBOX_H
#define FLOWRUN_SANDBOX_H

#include <stdbool.h>

#include <lua.h>

#include "flowrun.h"

/* Builds the globals of flows (the metatable of session globals, in
** rt->base_ref) and those of a host's own Lua (rt->trusted_ref). Runs
** under lua_pcall. */
void fr_sandbox_open(flowrun *rt, lua_State *L);

/* require of flows (a library of the sandbox, a module, or a file). */
int fr_sandbox_require(lua_State *L);

/* Replaces lib.name, as flows see it, by fn with upvalues rt, the
** original and kind (a store's journaled os.time, say). */
void fr_sandbox_wrap(flowrun *rt, lua_State *L, const char *lib, const char *name,
                     lua_CFunction fn, int kind);

/* Pushes the flow global `name` (what every session sees as it). */
void fr_push_flow_global(flowrun *rt, lua_State *L, const char *name);

/* Pushes the globals table (_ENV) of the Lua function `level` levels up
** the stack, or nothing and returns 0 when it has none. */
int fr_caller_env(lua_State *L, int level);

#endif
