/*
** rules.h -- the rules of an api_node spec and the sandbox allow-lists, in
** one place (rules.c).
**
** The runtime enforces them (request.c, integrations.c, sandbox.c) and the
** tools written in Lua read them through require("flowrun.runtime").rules()
** (flowrun check, flowrun graph, declarative flows), so that a rule and
** its wording exist once.
*/
#ifndef FLOWRUN_RULES_H
#define FLOWRUN_RULES_H

#include <stddef.h>

#include <lua.h>

/* The fields of an api_node spec, in the order of fr_fields. */
enum {
  F_INTEGRATION, F_ENDPOINT, F_METHOD, F_PATH, F_PARAMS, F_QUERY,
  F_QUERY_SEPARATOR, F_HEADERS, F_BODY, F_FORM, F_RESULTS, F_TIMEOUT_MS,
  F_DEADLINE_MS, F_MULTIPART,
  F_NFIELDS
};

/* A field, the Lua type it must have and how a message says so (type
** LUA_TNONE: a rule of its own checks it). */
typedef struct fr_field {
  const char *name;
  int type;
  const char *want;
} fr_field;

extern const fr_field fr_fields[F_NFIELDS];

/* The HTTP methods a spec or an endpoint may name; NULL-terminated. */
extern const char *const fr_methods[];

/* The method m spelt as in fr_methods, or NULL when it is none. */
const char *fr_method(const char *m);

/* Pushes the methods as a message lists them: "GET, POST, ... or HEAD". */
void fr_push_methods_text(lua_State *L);

/* The labels every call may get besides its declared results; the k-th
** is the LBL_* bit 1 << k (labels.h). NULL-terminated. */
extern const char *const fr_default_labels[];

/* What a result name is: a status ("404"), a class ("4xx"), a default
** label, one of those in the wrong case ("Timeout", "4XX"), or none. */
enum { FR_NOT_RESULT, FR_RESULT_CODE, FR_RESULT_CLASS, FR_RESULT_DEFAULT, FR_RESULT_UPPER };
int fr_result_kind(const char *s, size_t len);

/* The messages of api_node's rules, without the "api_node: " prefix. Each
** is a format with %s and %d only, which lua_pushfstring and Lua's
** string.format read alike; rules() gives them by their lower-case name. */
#define FR_MESSAGES(X) \
  X(UNKNOWN_FIELD, "unknown field '%s'") \
  X(FIELD_TYPE, "%s: expected %s, got %s") \
  X(ENDPOINT_FORM, "endpoint: expected \"integration.endpoint\", got \"%s\"") \
  X(UNKNOWN_INTEGRATION, "unknown integration '%s'%s") \
  X(NO_ENDPOINT, "integration '%s' has no endpoint '%s'") \
  X(DISAGREE, "integration '%s' and endpoint '%s' disagree") \
  X(TARGET_REQUIRED, "integration (or endpoint) is required") \
  X(BAD_METHOD, "method: expected %s, got \"%s\"") \
  X(METHOD_DIFFERS, "method %s differs from endpoint '%s' (%s)") \
  X(PATH_AND_ENDPOINT, "give path or endpoint, not both") \
  X(PATH_PROBLEM, "path: %s") \
  X(ENDPOINT_PATH_PROBLEM, "endpoint '%s' path: %s") \
  X(RESULTS_REQUIRED, "results is required and %s") \
  X(MISSING_SUCCESS, "must include a success: a 2xx status like \"200\" or \"201\", or \"2xx\"") \
  X(RESULTS_ARRAY, "%s: expected an array of result names like {\"200\", \"404\"}, got %s") \
  X(RESULT_TYPE, "%s[%d]: expected a string like \"200\", got %s") \
  X(LOWER_CASE, "result labels must be lower case: \"%s\"") \
  X(UNKNOWN_RESULT, "unknown result \"%s\" (use a status like \"404\", a class like " \
                    "\"4xx\", or other, error, timeout, max-connection)") \
  X(TIMEOUT_MS, "timeout_ms: expected a positive integer") \
  X(DEADLINE_MS, "deadline_ms: expected a positive integer") \
  X(PAGES_REQUIRED, "pages is required: { cursor = { param = ..., from = ... } }, " \
                    "{ next_url = ... } or { link = true }") \
  X(PAGES_UNKNOWN, "%s: unknown key '%s' (%s)") \
  X(PAGES_ONE, "pages: give one of cursor, next_url or link") \
  X(PAGES_JSON_PATH, "%s: expected a path of keys like \"meta.next_cursor\", got \"%s\"") \
  X(KEYS_STRINGS, "%s: keys must be strings") \
  X(SCALAR, "%s.%s: expected a string, number or boolean, got %s") \
  X(QUERY_SEPARATOR, "query_separator: expected \"&\" or \";\", got \"%s\"") \
  X(PLACEHOLDER, "path placeholder {%s} has no value in params") \
  X(HEADER_NAMES, "headers: names must be strings") \
  X(HEADER_TYPE, "headers.%s: expected a string, got %s") \
  X(HEADER_PROBLEM, "headers.%s: %s") \
  X(HEADER_CONFLICT, "header '%s' differs between the node and integration '%s'") \
  X(BODY_AND_FORM, "give body or form, not both") \
  X(NO_BODY, "a %s request cannot have a %s") \
  X(STRING_BODY, "a string body needs a Content-Type header (for example application/xml)") \
  X(BODY_TYPE, "body: expected a table or a string, got %s") \
  X(MULTIPART_AND_BODY, "give multipart or %s, not both") \
  X(MULTIPART_ARRAY, "multipart: expected a non-empty array of parts") \
  X(MULTIPART_PART, "multipart[%d]: %s") \
  X(MULTIPART_CONTENT_TYPE, "multipart sends its own Content-Type (multipart/form-data " \
                            "and its boundary): remove headers.%s")

#define FR_MESSAGE_ID(id, text) M_##id,
enum { FR_MESSAGES(FR_MESSAGE_ID) M_NMESSAGES };
#undef FR_MESSAGE_ID

extern const char *const fr_messages[M_NMESSAGES];

/* Raises "api_node: " and message id formatted with the arguments. */
int fr_api_error(lua_State *L, int id, ...);

/* Why path (its {placeholders} aside) cannot be sent as it reads, or
** NULL: a space, control character or '#', or a "." or ".." segment. */
const char *fr_path_problem(const char *path);

/* The sandbox allow-lists, NULL-terminated: the flow primitives (session.c
** makes them; a host's own Lua sees them too), the base functions a flow
** gets as they are (sandbox.c adds its own load, require, rawset,
** setmetatable and collectgarbage), the libraries it gets frozen, the
** functions of its os; the standard globals of integrations files. */
extern const char *const fr_flow_primitives[];
extern const char *const fr_flow_base[];
extern const char *const fr_flow_libs[];
extern const char *const fr_flow_os[];
extern const char *const fr_integrations_base[];

/* Pushes the table of rules(): fields, methods, labels, messages, sandbox,
** and path_problem, header_problem and result_kind for Lua. */
void fr_push_rules(lua_State *L);

/* Why the multipart part at idx cannot be sent, or NULL: a table with a
** name and either value (a field) or data (a file, with filename and
** content_type if given). A message is left on the stack. */
const char *fr_part_problem(lua_State *L, int idx);

/* Why a header cannot be sent (name, value of vlen bytes), or NULL. */
const char *fr_header_problem(const char *name, const char *value, size_t vlen);

/* The default labels; a call's label is one of them (compared by address)
** or its codelabel. */
extern const char LABEL_OTHER[], LABEL_ERROR[], LABEL_TIMEOUT[], LABEL_MAXCONN[];

#endif
