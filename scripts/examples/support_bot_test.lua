-- Conversation tests of the support bot (support_bot.lua): each status the
-- shop can give an order, a ticket opened through open_ticket.lua, and the
-- shop in trouble.
local greet = { bot "Hello! I am the shop's support bot.", bot "What is your order number?" }

return {
  flow = "support_bot.lua",
  integrations = "integrations.lua",
  stubs = {
    stub { endpoint = "shop.get_order", path = "/orders/1",
           reply = { status = 200, json = { status = "in_transit", eta = "Friday" } } },
    stub { endpoint = "shop.get_order", path = "/orders/2", reply = { status = 200, json = { status = "delivered" } } },
    stub { endpoint = "shop.get_order", path = "/orders/3", reply = { status = 200, json = { status = "cancelled" } } },
    stub { endpoint = "shop.get_order", path = "/orders/4", reply = { status = 200, json = { status = "lost" } } },
    stub { endpoint = "shop.get_order", reply = { status = 404 } },
    stub { endpoint = "shop.open_ticket", body = function(b) return b:find('"order":"2"', 1, true) end,
           reply = { status = 201, json = { id = "T-9" } } },
  },

  test "an order on its way" {
    greet[1], greet[2], user "1",
    label { "200", at = "lookup" }, state { step = "status" },
    bot "Order 1 is in transit, expected Friday.", done(),
  },
  test "a delivered order, nothing wrong" {
    greet[1], greet[2], user "2",
    bot "It was delivered. What went wrong? (empty: nothing)", user "",
    bot "Glad to hear it. Bye!", done(),
  },
  test "a delivered order, something wrong: a ticket" {
    greet[1], greet[2], user "2",
    bot "It was delivered. What went wrong? (empty: nothing)", user "the box was empty",
    label { "201", at = "create" },
    bot "Ticket T-9 is open; we will write to you within a day.", done(),
  },
  test "a cancelled order" {
    greet[1], greet[2], user "3",
    bot "That order was cancelled; the refund takes 3 to 5 days.", done(),
  },
  test "a status the bot does not know" {
    greet[1], greet[2], user "4",
    bot "Order 4 is lost, expected soon.", done(),
  },
  test "a number the shop does not know, then the user leaves" {
    greet[1], greet[2], user "99",
    label "404", bot "I cannot find that order.",
    bot "What is your order number?", close(), done(),
  },
  test "the shop when it ${what}" {
    rows = {
      { what = "fails", reply = { status = 503 }, label = "5xx", says = "The shop is having trouble (5xx); please try again later." },
      { what = "answers oddly", reply = { status = 302 }, label = "other", says = "The shop is having trouble (other); please try again later." },
      { what = "is down", reply = { fault = "dns" }, label = "error", says = "The shop is having trouble (error); please try again later." },
      { what = "is slow", reply = { status = 200, delay_ms = 10000 }, label = "timeout", says = "The shop is having trouble (timeout); please try again later." },
      { what = "is busy", reply = { fault = "pool_full" }, label = "max-connection", says = "We are very busy right now; please try again in a minute." },
    },
    stubs = { stub { endpoint = "shop.get_order", reply = "${reply}" } },
    greet[1], greet[2], user "5",
    label "${label}", bot "${says}", done(),
  },
}
