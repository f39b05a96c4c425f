/*
** modules.h -- the Lua modules of lua/, built into the library
** (build/modules.c, made by scripts/embed.lua). Not installed.
*/
#ifndef FLOWRUN_MODULES_H
#define FLOWRUN_MODULES_H

#include <stddef.h>

typedef struct fr_module {
  const char *name, *chunkname, *src;  /* "flowrun.flow", "@lua/flowrun/flow.lua" */
  size_t len;
} fr_module;
extern const fr_module fr_modules[];    /* ends with a NULL name */

#endif
