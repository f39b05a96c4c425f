-- Conversation tests of open_ticket.lua on its own: the session holds
-- what support_bot.lua would have asked (order_id, problem).
return {
  flow = "open_ticket.lua",
  integrations = "integrations.lua",
  test "the shop answers ${status}" {
    rows = {
      { status = 200, says = "Ticket T-1 is open; we will write to you within a day." },
      { status = 201, says = "Ticket T-1 is open; we will write to you within a day." },
      { status = 409, says = "You already have a ticket for this order; we are on it." },
      { status = 422, says = "I could not open a ticket (4xx). Please write to help@example.com." },
      { status = 500, says = "I could not open a ticket (other). Please write to help@example.com." },
    },
    session = { order_id = "7", problem = "late" },
    stubs = { stub { endpoint = "shop.open_ticket", headers = { ["Idempotency-Key"] = "ticket-7-4" },
                     reply = { status = "${status}", json = { id = "T-1" } } } },
    bot "${says}", done(),
  },
  test "the shop when it ${what}" {
    rows = {
      { what = "is down", reply = { fault = "refused" }, label = "error" },
      { what = "is slow", reply = { status = 201, delay_ms = 3000 }, label = "timeout" },
      { what = "is busy", reply = { fault = "pool_full" }, label = "max-connection" },
    },
    session = { order_id = "7", problem = "late" },
    stubs = { stub { endpoint = "shop.open_ticket", reply = "${reply}" } },
    label "${label}",
    bot "I could not open a ticket (${label}). Please write to help@example.com.", done(),
  },
}
