/*
** blocks.c -- small blocks for the runtime's Lua state (blocks.h).
**
** A block of class c is at least (c + 1) * 16 bytes: it came from
** malloc of that size, or it is a larger block a shrink kept (the shrink
** must not fail). The lists hold at most `keep` bytes, which the runtime
** sets to what its Lua state holds live: a heap at most doubles between
** two collections, so a cycle's garbage waits here for the next cycle's
** blocks, and only a burst past that goes back to malloc. Freed blocks
** that went to glibc would sit in its fast bins, thousands deep, until
** the next large malloc (libcurl's, for a request) merges them all: a
** pause of milliseconds in the middle of a frame (README: A frame
** budget). Under AddressSanitizer the blocks waiting in a list are
** poisoned: a use after free is still caught.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blocks.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif


static int class_of(size_t n) { return (int)((n - 1) >> 4); }
static size_t class_size(int c) { return (size_t)(c + 1) << 4; }

static void *take(fr_blocks *b, size_t n) {
  int c = class_of(n);
  void *p = b->head[c];
  if (!p) return malloc(class_size(c));
  UNPOISON(p, class_size(c));
  memcpy(&b->head[c], p, sizeof p);
  b->kept -= class_size(c);
  return p;
}

static void give(fr_blocks *b, void *p, size_t n) {
  int c = class_of(n);
  if (b->kept + class_size(c) > b->keep) {
    free(p);
    return;
  }
  memcpy(p, &b->head[c], sizeof p);
  b->head[c] = p;
  b->kept += class_size(c);
  POISON(p, class_size(c));
}

void *fr_blocks_resize(fr_blocks *b, void *p, size_t osize, size_t nsize) {
  void *q;
  if (!p) osize = 0;
  if (nsize == 0) {
    if (p && osize <= FR_BLOCK_SMALL) give(b, p, osize);
    else free(p);
    return NULL;
  }
  if (p && osize > FR_BLOCK_SMALL && nsize > FR_BLOCK_SMALL) return realloc(p, nsize);
  if (p && osize <= FR_BLOCK_SMALL && nsize <= FR_BLOCK_SMALL
      && class_of(osize) == class_of(nsize))
    return p;                           /* the same class: it fits */
  q = nsize <= FR_BLOCK_SMALL ? take(b, nsize) : malloc(nsize);
  if (!q) return nsize <= osize ? p : NULL;   /* a shrink keeps the larger block */
  if (p) {
    memcpy(q, p, osize < nsize ? osize : nsize);
    if (osize <= FR_BLOCK_SMALL) give(b, p, osize);
    else free(p);
  }
  return q;
}

void fr_blocks_free(fr_blocks *b) {
  for (int c = 0; c < FR_BLOCK_CLASSES; c++) {
    void *p = b->head[c];
    while (p) {
      void *next;
      UNPOISON(p, class_size(c));
      memcpy(&next, p, sizeof next);
      free(p);
      p = next;
    }
    b->head[c] = NULL;
  }
  b->kept = 0;
}
