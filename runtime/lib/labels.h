/*
** labels.h -- sets of declared results (labels.c): an api_node's results,
** an integration's retry.on, and the label a status gets. Not installed.
*/
#ifndef FLOWRUN_LABELS_H
#define FLOWRUN_LABELS_H

#include <stdbool.h>
#include <stdint.h>

#include <lua.h>

enum { LBL_OTHER = 1, LBL_ERROR = 2, LBL_TIMEOUT = 4, LBL_MAXCONN = 8 };

typedef struct fr_results {
  uint8_t code[75];                     /* bit per status 0..599 */
  uint8_t cls;                          /* bit per class 1..5 */
  uint8_t defaults;                     /* LBL_* bits */
} fr_results;

/* Reads an array of result names at idx into r, raising on misuse; what
** names the field in messages ("results", "retry.on"); need200: a success
** (a 2xx status such as "200" or "201", or "2xx") must be among them. */
void fr_parse_results(lua_State *L, int idx, const char *what, fr_results *r,
                      bool need200);
int fr_results_status(const fr_results *r, int status);  /* 0, code or -cls */
uint8_t fr_label_bit(const char *label);  /* LBL_* of a default label, or 0 */

#endif
