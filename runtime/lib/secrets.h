/*
** secrets.h -- values read through env(), and hiding them (secrets.c).
** Not installed.
*/
#ifndef FLOWRUN_SECRETS_H
#define FLOWRUN_SECRETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <lua.h>

#include "flowrun.h"

/* A value to hide. name: the environment variable it was read from (by
** env()), basic: for "user:password" encoded as Basic credentials, that
** pair as a shell word; NULL when not known. */
typedef struct fr_secret {
  char *s;
  size_t len;
  char *name, *basic;
  int refs;                             /* adds less forgets of it (a spelling: of those) */
} fr_secret;

/* Adds a secret; false: out of memory (what was added stays: hiding more
** is harmless). */
bool fr_secret_add(flowrun *rt, const char *s, size_t len, const char *name,
                   const char *basic);
/* The next secret after `after` (NULL: the first) that is exactly s, or
** NULL. */
const fr_secret *fr_secret_find(flowrun *rt, const char *s, const fr_secret *after);
/* Undoes one fr_secret_add of s (an OAuth2 token given up): once every
** add of it is undone, it and its spellings are hidden no more. */
void fr_secret_forget(flowrun *rt, const char *s, size_t len);
void fr_secrets_free(flowrun *rt);
/* Writes s as one shell word, a secret from env() as its variable. */
void fr_shell_word(flowrun *rt, FILE *f, const char *s, size_t len);
/* Whether rt has any secret to hide. */
bool fr_has_secrets(const flowrun *rt);
/* Pushes s with every secret replaced by "***". */
void fr_push_redacted(lua_State *L, flowrun *rt, const char *s, size_t len);
/* Same into a malloc'd string the caller frees; NULL on ENOMEM. */
char *fr_redact(flowrun *rt, const char *s);

#endif
