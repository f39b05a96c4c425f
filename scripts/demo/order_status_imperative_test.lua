-- Conversation tests of the demo's order-status flow written as a script
-- (order_status_imperative.lua): the same conversations as the declarative
-- one's, its node named by its line.
return {
  flow = "order_status_imperative.lua",
  integrations = "integrations.lua",
  stubs = {
    stub { integration = "shop", path = "/orders/42",
           reply = { status = 200, json = { id = "42", status = "shipped", eta = "tomorrow" } } },
    stub { integration = "shop", path = "/orders/%d+", reply = { status = 404, json = { error = "no such order" } } },
  },

  test "an order that shipped, then a number the shop does not know" {
    include "greeting_test_lines.lua",
    user "42",
    label { "200", at = 9 },
    bot "Order 42 is shipped; it arrives tomorrow.",
    bot "Your order number? (empty line to leave)",
    user "7",
    label { "404", at = 9 },
    bot "I found no order 7. Check the number and try again.",
    bot "Your order number? (empty line to leave)",
    user "",
    bot "Bye!",
    done(),
  },

  test "the shop when it is ${what}" {
    rows = {
      { what = "slow", reply = { status = 200, delay_ms = 5000 }, label = "timeout",
        says = "The shop is not answering right now (timeout); please try later." },
      { what = "down", reply = { fault = "reset" }, label = "error",
        says = "Something went wrong (error); please try later." },
      { what = "busy", reply = { fault = "pool_full" }, label = "max-connection",
        says = "Something went wrong (max-connection); please try later." },
      { what = "odd", reply = { status = 418 }, label = "other",
        says = "Something went wrong (other); please try later." },
    },
    stubs = { stub { path = "/orders/.*", reply = "${reply}" } },
    include "greeting_test_lines.lua",
    user "9",
    label "${label}",
    bot "${says}",
    bot "Your order number? (empty line to leave)",
    close(),
    bot "Bye!",
    done(),
  },
}
