-- Conversation tests of the demo's order-status flow: `flowrun test scripts/demo`.
-- Each test is a conversation; the stubs answer the flow's calls (no shop
-- needed) and the clock is virtual (the slow shop takes no time).
return {
  flow = "order_status.lua",
  integrations = "integrations.lua",
  stubs = {
    stub { integration = "shop", path = "/orders/42",
           reply = { status = 200, json = { id = "42", status = "shipped", eta = "tomorrow" } } },
    stub { integration = "shop", path = "/orders/%d+", reply = { status = 404, json = { error = "no such order" } } },
  },

  test "an order that shipped" {
    include "greeting_test_lines.lua",
    user "42",
    label { "200", at = "lookup" },
    bot "Order 42 is shipped; it arrives tomorrow.",
    bot "Your order number? (empty line to leave)",
    state { step = "ask_order", session = { order_id = "42", order = { status = 200 } } },
    user "",
    bot "Bye!",
    done(),
  },

  test "a number the shop does not know" {
    include "greeting_test_lines.lua",
    user "7",
    label { "404", at = "lookup" },
    bot "I found no order 7. Check the number and try again.",
    bot "Your order number? (empty line to leave)",
    close(),
    bot "Bye!",
    done(),
  },

  test "the shop when it is slow, broken, busy or odd: ${what}" {
    rows = {
      { what = "slow", reply = { status = 200, delay_ms = 5000 }, label = "timeout",
        says = "The shop is not answering right now (timeout); please try later." },
      { what = "down", reply = { fault = "refused" }, label = "error",
        says = "Something went wrong (error); please try later." },
      { what = "busy", reply = { fault = "pool_full" }, label = "max-connection",
        says = "Something went wrong (max-connection); please try later." },
      { what = "odd", reply = { status = 500 }, label = "other",
        says = "Something went wrong (other); please try later." },
    },
    stubs = { stub { path = "/orders/.*", reply = "${reply}" } },
    include "greeting_test_lines.lua",
    user "9",
    label { "${label}", at = "lookup" },
    bot "${says}",
    bot "Your order number? (empty line to leave)",
    close(),
    bot "Bye!",
    done(),
  },
}
