/*
** pages.h -- api_pages{...}: api_node over the pages of a listing
** (pages.c). Not installed.
*/
#ifndef FLOWRUN_PAGES_H
#define FLOWRUN_PAGES_H

#include <lua.h>

#include "flowrun.h"

/* Sets api_pages in the table on top of the stack (the flow primitives). */
void fr_add_api_pages(flowrun *rt, lua_State *L);

#endif
