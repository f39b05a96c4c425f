-- A support bot: the user gives an order number; the bot looks the order up
-- and routes on the HTTP result and, for a found order, on its status in
-- the body (switch); for a delivered order it offers to open a ticket, which
-- open_ticket.lua does (a "flow:" target: same session, same `session`).
--   flowrun mock scripts/examples/routes.lua --port 8080 &
--   flowrun run scripts/examples/support_bot.lua      (try 42, 7, 13, 99)
local flow = require "flowrun.flow"

return flow.define {
  name = "support_bot",
  start = "greet",
  defaults = { other = "trouble", error = "trouble", timeout = "trouble", ["max-connection"] = "busy" },
  steps = {
    greet = flow.say { text = "Hello! I am the shop's support bot.", next = "ask_order" },

    ask_order = flow.ask { prompt = "What is your order number?", save = "order_id", next = "lookup" },

    lookup = flow.api {
      endpoint = "shop.get_order",
      params = function(s) return { id = s.order_id } end,
      save = "order",
      -- a 200 is routed by the order's status; a status the bot does not
      -- know keeps the label "200"
      switch = function(res) return res.json and res.json.status end,
      on = {
        ["200"] = "status",
        delivered = "ask_problem",
        in_transit = "status",
        cancelled = "cancelled",
        ["404"] = "not_found",
        ["5xx"] = "trouble",
      },
    },

    status = flow.say {
      text = function(s) return ("Order %s is %s, expected %s."):format(
        s.order_id, s.order.json.status:gsub("_", " "), s.order.json.eta or "soon") end,
    },
    cancelled = flow.say { text = "That order was cancelled; the refund takes 3 to 5 days." },
    not_found = flow.say { text = "I cannot find that order.", next = "ask_order" },

    ask_problem = flow.ask {
      prompt = "It was delivered. What went wrong? (empty: nothing)",
      save = "problem",
      next = "triage",
    },
    triage = function(s)
      if s.problem == "" then return "glad" end
      return "flow:open_ticket.lua"
    end,
    glad = flow.say { text = "Glad to hear it. Bye!" },

    trouble = flow.say {
      text = function(s) return ("The shop is having trouble (%s); please try again later."):format(s.order.label) end,
    },
    busy = flow.say { text = "We are very busy right now; please try again in a minute." },
  },
}
