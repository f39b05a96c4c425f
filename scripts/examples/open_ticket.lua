-- Opens a support ticket by POST for the order and problem in `session`
-- (support_bot.lua hands the user over here). The Idempotency-Key makes the
-- POST safe to retry: the same order and problem never open two tickets.
local flow = require "flowrun.flow"

return flow.define {
  name = "open_ticket",
  start = "create",
  defaults = { other = "failed", error = "failed", timeout = "failed", ["max-connection"] = "failed" },
  steps = {
    create = flow.api {
      endpoint = "shop.open_ticket",
      headers = function(s) return { ["Idempotency-Key"] = "ticket-" .. s.order_id .. "-" .. #s.problem } end,
      body = function(s) return { order = s.order_id, text = s.problem, channel = "chat" } end,
      save = "ticket",
      on = { ["200"] = "opened", ["201"] = "opened", ["409"] = "exists", ["4xx"] = "failed" },
    },
    opened = flow.say {
      text = function(s) return ("Ticket %s is open; we will write to you within a day."):format(s.ticket.json.id) end,
    },
    exists = flow.say { text = "You already have a ticket for this order; we are on it." },
    failed = flow.say {
      text = function(s) return ("I could not open a ticket (%s). Please write to help@example.com."):format(s.ticket.label) end,
    },
  },
}
