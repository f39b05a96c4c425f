/*
** json.h -- flowrun's JSON codec (json.c), for the library and the mock.
** Not installed.
*/
#ifndef FLOWRUN_JSON_H
#define FLOWRUN_JSON_H

#include <lua.h>

int fr_open_json(lua_State *L);    /* pushes the json module */
int fr_json_encode(lua_State *L);  /* json.encode(value) */
int fr_json_decode(lua_State *L);  /* json.decode(text) */
void fr_json_push_array_mt(lua_State *L);   /* json.array_mt */
extern const char fr_json_empty_array;    /* json.empty_array is its address */

#endif
