---@meta flowrun.flow
-- The `flowrun.flow` module (declarative flows, README: Declarative flows)
-- for lua-language-server. Annotations only: flowrun never runs this file.
-- spec/meta_spec.lua holds these annotations to what flow.define accepts.

---The target that ends the flow (for tables, where nil cannot be written).
---@class flowrun.flow.End

---A step name, "flow:PATH" (another flow's start, same session), or
---flow.END / nil (the flow ends).
---@alias flowrun.flow.Target string|flowrun.flow.End|nil

---A target, or a function of the session returning one.
---@alias flowrun.flow.TargetField flowrun.flow.Target|fun(session: flowrun.Session): flowrun.flow.Target

---A code step: returns the next target (nil ends the flow); it may use every
---flow global (api_node, say, ask, sleep, log, ...).
---@alias flowrun.flow.CodeStep fun(session: flowrun.Session): flowrun.flow.Target

---A step made by flow.api, flow.say, flow.ask or flow.sleep.
---@class flowrun.flow.Step

---@alias flowrun.flow.AnyStep flowrun.flow.Step|flowrun.flow.CodeStep

---flow.api{...}: every api_node field except `results` (the keys of `on` are
---the declared results), each may be a function of the session; and `on`,
---`save`, `switch`.
---@class flowrun.flow.ApiStep
---@field integration? string|fun(session: flowrun.Session): string
---@field endpoint? string|fun(session: flowrun.Session): string
---@field method? "GET"|"POST"|"PUT"|"PATCH"|"DELETE"|"HEAD"|fun(session: flowrun.Session): string
---@field path? string|fun(session: flowrun.Session): string
---@field params? table<string, string|number>|fun(session: flowrun.Session): table<string, string|number>
---@field query? table|fun(session: flowrun.Session): table
---@field query_separator? "&"|";"|fun(session: flowrun.Session): string
---@field headers? table<string, string|number>|fun(session: flowrun.Session): table<string, string|number>
---@field body? table|string|fun(session: flowrun.Session): (table|string)
---@field form? table<string, string|number|boolean>|fun(session: flowrun.Session): table
---@field multipart? flowrun.Part[]|fun(session: flowrun.Session): flowrun.Part[]
---@field timeout_ms? integer|fun(session: flowrun.Session): integer
---@field deadline_ms? integer|fun(session: flowrun.Session): integer the whole call's limit, retries and all
---@field on table<flowrun.Label, flowrun.flow.TargetField> result label (or switch label) -> target; never a function
---@field save? string|fun(session: flowrun.Session): string session[save] = the response (for every label)
---@field switch? fun(res: flowrun.Response, session: flowrun.Session): string|nil a switch label, for a declared success only
---@field pages? flowrun.Pages|fun(session: flowrun.Session): flowrun.Pages the step goes through the pages (README: Pagination); it routes on the last page's label
---@field each? fun(res: flowrun.Response, session: flowrun.Session, page: flowrun.Page) called for every page, in order

---flow.say{...}
---@class flowrun.flow.SayStep
---@field text any|fun(session: flowrun.Session): any what to say
---@field next? flowrun.flow.TargetField

---flow.ask{...}
---@class flowrun.flow.AskStep
---@field prompt? any|fun(session: flowrun.Session): any said before waiting
---@field save? string|fun(session: flowrun.Session): string session[save] = the answer
---@field next? flowrun.flow.TargetField
---@field closed? flowrun.flow.TargetField where to go when the user's channel is closed (absent: the flow ends)

---flow.sleep{...}
---@class flowrun.flow.SleepStep
---@field ms number|fun(session: flowrun.Session): number milliseconds, this session only
---@field next? flowrun.flow.TargetField

---flow.define{...}
---@class flowrun.flow.Definition
---@field name? string default: the file's name without .lua
---@field start string the first step's name
---@field steps table<string, flowrun.flow.AnyStep> step name -> step
---@field defaults? table<"other"|"error"|"timeout"|"max-connection", flowrun.flow.TargetField> routes the default labels of every api step that does not route them in its own on

---A checked flow: what a flow file returns.
---@class flowrun.flow.Flow

---@class flowrun.flow
local flow = {}

---Ends the flow (as a target).
---@type flowrun.flow.End
flow.END = {}

---Checks the graph and raises listing every problem, each at its step's line.
---@param spec flowrun.flow.Definition
---@return flowrun.flow.Flow
function flow.define(spec) end

---A step that calls api_node and routes on its label.
---@param spec flowrun.flow.ApiStep
---@return flowrun.flow.Step
function flow.api(spec) end

---A step that says text: flow.say{ text = ..., next = ... } or flow.say "text".
---@param spec flowrun.flow.SayStep|string
---@return flowrun.flow.Step
function flow.say(spec) end

---A step that waits for the user's answer: flow.ask{ ... } or flow.ask "prompt".
---@param spec flowrun.flow.AskStep|string
---@return flowrun.flow.Step
function flow.ask(spec) end

---A step that suspends this session: flow.sleep{ ms = ..., next = ... } or flow.sleep(ms).
---@param spec flowrun.flow.SleepStep|number
---@return flowrun.flow.Step
function flow.sleep(spec) end

return flow
