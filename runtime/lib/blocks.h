/*
** blocks.h -- small blocks for the runtime's Lua state (blocks.c).
**
** Lua tells its allocator the size of every block it frees, so freed
** blocks of up to FR_BLOCK_SMALL bytes can wait in lists by size (16-byte
** classes) for the next allocation of their class, without a header and
** without glibc's malloc and free. An api_node call makes and drops a
** dozen such blocks (its spec table, the response, strings); see README:
** Performance.
*/
#ifndef FLOWRUN_BLOCKS_H
#define FLOWRUN_BLOCKS_H

#include <stddef.h>

#define FR_BLOCK_SMALL 512              /* bytes: larger blocks go to malloc */
#define FR_BLOCK_CLASSES (FR_BLOCK_SMALL / 16)

typedef struct fr_blocks {
  void *head[FR_BLOCK_CLASSES];         /* freed blocks of 16, 32, ... bytes */
  size_t kept;                          /* bytes the lists hold */
  size_t keep;                          /* the most they may hold (the owner sets it) */
} fr_blocks;

/* Lua's allocator contract (lua_Alloc) without the counting: p of osize
** bytes (p NULL: a new block) resized to nsize, 0 frees it. A shrink never
** fails. */
void *fr_blocks_resize(fr_blocks *b, void *p, size_t osize, size_t nsize);

/* Frees what the lists hold: after lua_close. */
void fr_blocks_free(fr_blocks *b);

#endif
