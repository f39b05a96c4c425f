---@meta
-- flowrun's flow globals for lua-language-server (LuaLS): completion and
-- checks for flow code. Annotations only: flowrun never runs this file.
-- A flow also sees Lua's string, table, math, utf8, coroutine, os.time/
-- clock/date/difftime and the safe base functions; io, debug, package,
-- dofile and loadfile are not there (README: Sandbox and limits).
-- spec/meta_spec.lua holds these annotations to what a flow really sees.

---A result label: a declared status (`"404"`), a declared class (`"4xx"`),
---or one of the four every call may get.
---@alias flowrun.Label
---| "200"
---| "2xx"
---| "other"          # a complete response whose status was not declared
---| "error"          # no complete response (res.reason says why)
---| "timeout"        # the connect or whole-call limit was reached
---| "max-connection" # the integration's pool stayed full, or its rate_limit gave no turn, for queue_timeout_ms
---| string

---A query value: a string, a number, a boolean, or a list of them
---(repeated: `{ expand = { "items", "eta" } }` is `?expand=items&expand=eta`).
---@alias flowrun.QueryValue string|number|boolean|(string|number|boolean)[]

---The spec of one call (README: A flow that branches on labels).
---@class flowrun.ApiSpec
---@field integration? string the integration's name (or give `endpoint`)
---@field endpoint? string "integration.endpoint", as the integrations file names it
---@field method? "GET"|"POST"|"PUT"|"PATCH"|"DELETE"|"HEAD" default: the endpoint's, else GET
---@field path? string below base_url; `{name}` placeholders take their value from `params`
---@field params? table<string, string|number> the placeholders' values, percent-encoded
---@field query? table<string, flowrun.QueryValue>|[string, string|number|boolean][] a map (sorted keys) or a list of pairs (kept in order)
---@field query_separator? "&"|";" between query pairs (default "&")
---@field headers? table<string, string|number> added to the integration's
---@field body? table|string a table is sent as `json.encode` writes it; a string needs a Content-Type
---@field form? table<string, string|number|boolean> sent urlencoded
---@field multipart? flowrun.Part[] sent as multipart/form-data (not with body or form)
---@field results? flowrun.Label[] the declared results; must include a success: a 2xx status or "2xx"
---@field timeout_ms? integer this call's whole-call limit
---@field deadline_ms? integer the whole call's limit across its attempts, backoffs and redirects (timeout, reason deadline)

---A part of a multipart body: a field (value) or a file (data, filename, content_type).
---@class flowrun.Part
---@field name string the form field's name
---@field value? string|number a field's value
---@field data? string a file's contents (from memory)
---@field filename? string the file's name, with data
---@field content_type? string the file's type, with data

---What `api_node` returns with every label (README: The labels).
---@class flowrun.Response
---@field label flowrun.Label the label, as returned first
---@field status integer the HTTP status (0 without a complete response)
---@field headers table<string, string> lower-case names; a repeated header joined with ", "
---@field body string the body ("" without a response)
---@field json any the decoded body for application/json and +json (JSON null is json.null)
---@field json_error? string why a JSON body did not decode
---@field error? string what went wrong, for error and timeout (secrets shown as ***)
---@field reason? "pool_full"|"connect_timeout"|"timeout"|"dns"|"refused"|"reset"|"tls"|"protocol"|"too_large"|"redirect"|"header_conflict"|"fd_limit"|"auth"|"rate_limit"|"deadline" the kind of error, timeout or max-connection
---@field elapsed_ms number how long the call took
---@field url string the URL sent (secrets shown as ***)
---@field attempts integer how many times the request was sent

---Calls an API set up in the integrations file and waits (this session only)
---for its result label and response. A mistake in the spec raises at the
---flow's line and sends nothing.
---@param spec flowrun.ApiSpec
---@return flowrun.Label label
---@return flowrun.Response response
function api_node(spec) end

---How api_pages finds the next page (README: Pagination): one of cursor,
---next_url or link, and max_pages.
---@class flowrun.Pages
---@field cursor? { param: string, from: string, start?: string|number } the value at JSON path `from` of a page is the next call's query parameter `param`
---@field next_url? string the JSON path of the next page's URL (absolute, or relative to base_url; under base_url only)
---@field link? true the Link header's rel="next"
---@field max_pages? integer at most this many pages (default 100)

---What api_pages says about a page.
---@class flowrun.Page
---@field number integer 1 for the first page
---@field last boolean no page follows in this loop
---@field next? string the next page's cursor or URL (also when capped)
---@field capped? true max_pages was reached while a next page exists
---@field refused? string why the next URL is not followed

---The spec of a paged call: api_node's, and `pages`.
---@class flowrun.PagesSpec: flowrun.ApiSpec
---@field pages flowrun.Pages

---Calls an API page by page: `for label, res, page in api_pages{...} do ... end`.
---Each page is an api_node call; the loop ends after the last page, after a
---page whose label is not a declared success, or at max_pages.
---@param spec flowrun.PagesSpec
---@return fun(): flowrun.Label, flowrun.Response, flowrun.Page
function api_pages(spec) end

---Says `text` to the end-user (any value, as tostring writes it).
---@param text any
function say(text) end

---Says `prompt` (if given) and waits for the user's next message; `nil` once
---the user's channel is closed.
---@param prompt? any
---@return string|nil answer
function ask(prompt) end

---Suspends this session only, for `ms` milliseconds.
---@param ms number
function sleep(ms) end

---Runs the flow in file `path` (relative to this flow's directory) in this
---session, with these arguments, and returns what it returns.
---@param path string
---@param ... any
---@return any ...
function run_flow(path, ...) end

---Starts this flow again from its top with these arguments and new
---globals; with a store its journal starts afresh (README: Durable
---sessions). Arguments are what a snapshot can hold. Does not return.
---@param ... any
function continue_as_new(...) end

---One line to the trace stream (stderr on the command line). `print(...)`
---is `log.info(...)` in a flow.
---@class flowrun.log
log = {}

---@param ... any
function log.info(...) end

---@param ... any
function log.warn(...) end

---@param ... any
function log.error(...) end

---flowrun's JSON: integers exact (64-bit), floats round-trip.
---@class flowrun.json
---@field null lightuserdata JSON null (in decoded values and for encode)
---@field empty_array lightuserdata encodes as `[]`
---@field array_mt table a table with this metatable encodes as an array; decoded arrays carry it
---@field _VERSION string
json = {}

---@param value any
---@return string text
function json.encode(value) end

---@param text string
---@return any value
function json.decode(text) end

---This session's own table: `session.id`, and what declarative steps `save`.
---@class flowrun.Session
---@field id string the session's id
---@field [string] any
session = {}

---The arguments the session was started with (`flowrun run FLOW ARGS...`).
---@type string[]
args = {}
