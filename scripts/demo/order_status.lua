-- The order-status chat flow of `make demo`, as a declarative flow: ask for
-- an order number, look it up, route the user by the result label. The same
-- flow written as a script is order_status_imperative.lua.
--   flowrun check scripts/demo/order_status.lua    every routing mistake
--   flowrun graph scripts/demo/order_status.lua    the picture (docs/flows.md)
local flow = require "flowrun.flow"

return flow.define {
  name = "order_status",
  start = "hello",
  -- where the default labels go when a step's `on` does not route them
  defaults = { other = "sorry", error = "sorry", timeout = "slow", ["max-connection"] = "sorry" },
  steps = {
    hello = flow.say { text = "Hi! I can tell you where your order is.", next = "ask_order" },

    ask_order = flow.ask {
      prompt = "Your order number? (empty line to leave)",
      save = "order_id",                -- the answer, in session.order_id
      next = "check_input",
      closed = "bye",                   -- the user went away
    },

    check_input = function(s)           -- a code step returns the next step
      if s.order_id == "" then return "bye" end
      return "lookup"
    end,

    lookup = flow.api {
      integration = "shop",
      path = "/orders/{id}",
      params = function(s) return { id = s.order_id } end,
      save = "order",                   -- the response, in session.order
      on = { ["200"] = "found", ["404"] = "not_found" },
    },

    found = flow.say {
      text = function(s)
        local o = s.order.json
        return ("Order %s is %s; it arrives %s."):format(s.order_id, o.status, o.eta)
      end,
      next = "ask_order",
    },

    not_found = flow.say {
      text = function(s)
        return ("I found no order %s. Check the number and try again."):format(s.order_id)
      end,
      next = "ask_order",
    },

    slow = flow.say {
      text = function(s)
        return "The shop is not answering right now (" .. s.order.reason .. "); please try later."
      end,
      next = "ask_order",
    },

    sorry = flow.say {
      text = function(s) return "Something went wrong (" .. s.order.label .. "); please try later." end,
      next = "ask_order",
    },

    bye = flow.say { text = "Bye!" },
  },
}
