---@meta flowrun
-- The Lua module (`require "flowrun"`, flowrun.so) for lua-language-server:
-- a flowrun runtime on the caller's Lua state (README: Embedding).
-- Annotations only. spec/meta_spec.lua holds them to the module's methods.

---@class flowrun.Options
---@field integrations? string|table<string, table> a file, or a table as a file would return it
---@field allow? string[] libraries flows may use besides the sandbox's ({ "io", ... })
---@field limits? flowrun.Limits
---@field globals? table<string, any> added to every flow's globals (tables read-only to flows)
---@field store? string|table a store's file or postgresql:// URI, or { path, resident, idle_ms, ttl_s, keep_ended_s, lease_ms, park, node }
---@field transport? fun(request: table): table every call answered by it, not the network (README: Testing flows)
---@field virtual_clock? boolean|number a virtual clock (true: from now; a number: from that ms since 1970)
---@field replay? string a store to check: its sessions replayed to the end of their journals, read only

---@class flowrun.Limits
---@field instructions? integer between two waits of a session
---@field session_memory? integer bytes a session holds
---@field memory? integer bytes of the runtime
---@field output? integer bytes a session says

---What happened, as rt:events() reports it.
---@class flowrun.Event
---@field type "say"|"ask"|"end"|"trace"|"log"|"stored"|"step"
---@field session string the session's id
---@field text? string say: the text; ask: the prompt
---@field ok? boolean end: whether the session ended without an error
---@field parked? boolean end: parked (its replay did not match)
---@field replayed? boolean end, with replay: its replay matched to the end of its journal (text: what comes next)
---@field error? string end: the error; trace: the call's error
---@field integration? string trace
---@field method? string trace
---@field url? string trace
---@field label? flowrun.Label trace
---@field status? integer trace
---@field reason? string trace
---@field attempts? integer trace
---@field elapsed_ms? number trace: the call's (final), else that request's
---@field attempt? integer trace: the attempt the record is of (1-based)
---@field hop? integer trace: the redirects followed before its request
---@field final? boolean trace: the call's last record (one a call); false: a request it went on from
---@field at? string trace: "flow.lua:7", where api_node was called
---@field step? string trace, step: the declarative step
---@field level? "info"|"warn"|"error" log
---@field message? string log

---A runtime: its sessions run as the loop turns (rt:step, rt:run).
---@class flowrun.Runtime
local Runtime = {}

---Replaces the integrations with those of `file`.
---@param file string
function Runtime:load_integrations(file) end

---Calls an API now, blocking until the call ends.
---@param spec flowrun.ApiSpec
---@return flowrun.Label label
---@return flowrun.Response response
function Runtime:api_node(spec) end

---Starts session `id` running the flow file with these arguments.
---@param id string
---@param flow string the flow's file
---@param ... any
function Runtime:start(id, flow, ...) end

---The user's next message to session `id`; nil closes the channel.
---@param id string
---@param text string|nil
function Runtime:send(id, text) end

---Ends session `id` now.
---@param id string
function Runtime:stop(id) end

---One turn of the loop, waiting at most `ms` (0 by default); with `budget_ms`,
---working only that long and leaving the rest to the next step (README: A frame budget).
---@param ms? integer
---@param budget_ms? number
---@return integer busy live sessions plus calls in flight
function Runtime:step(ms, budget_ms) end

---Turns the loop until no session is left or every one waits for a message,
---at most `ms` (60000).
---@param ms? integer
---@return boolean done
function Runtime:run(ms) end

---What happened since the last call, oldest first (and forgets it).
---@return flowrun.Event[]
function Runtime:events() end

---The live sessions.
---@return integer
function Runtime:sessions() end

---Figures for a dashboard: each integration's calls in flight and queued
---(`pools`), and with a store its commits, their seconds and a histogram of
---them (`le`: { bound in seconds, commits that took at most that }).
---@return { pools: table<string, { in_flight: integer, queued: integer }>, store?: { commits: integer, seconds: number, le: number[][] } }
function Runtime:stats() end

---The runtime's clock: ms since 1970 (virtual, or the wall's).
---@return number
function Runtime:clock() end

---A virtual clock moves ms on.
---@param ms number
function Runtime:advance(ms) end

---The step a declarative session is at (nil: none), and its session table.
---@param id string
---@return string? step
---@return table? session
function Runtime:state(id) end

---Counts the lines of flow files that sessions run, from now (false: stops, forgets).
---@param on boolean
function Runtime:count_lines(on) end

---The lines run since count_lines(true): { [file] = { [line] = runs } }.
---@return table<string, table<integer, integer>>
function Runtime:lines() end

---Frees the runtime (also at garbage collection and with <close>).
function Runtime:close() end

---@class flowrun
---@field _VERSION string flowrun's version
local flowrun = {}

---A runtime on the caller's Lua state.
---@param opts? flowrun.Options
---@return flowrun.Runtime
function flowrun.new(opts) end

---A store's sessions, the most recently active first, as `flowrun sessions` lists them.
---@param path string
---@return { id: string, flow: string, state: "running"|"waiting"|"ended", messages: integer, journal: integer, active_ms: integer, note: string? }[]
function flowrun.store_list(path) end

return flowrun
