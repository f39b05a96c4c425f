-- make bench, the "tested" row: N (env, 1000) conversations of the demo flow,
-- each a session of one runtime on a virtual clock, one stubbed call each.
local rows = {}
for i = 1, tonumber(os.getenv("N") or "1000") do rows[i] = { n = i } end
return {
  flow = "../../scripts/demo/order_status.lua",
  integrations = { shop = { base_url = "http://127.0.0.1:9/v1", max_connections = 1000 } },
  stubs = { stub { path = "/orders/%d+", reply = { status = 200, json = { status = "shipped", eta = "soon" }, delay_ms = 20 } } },
  test "conversation ${n}" {
    rows = rows,
    include "../../scripts/demo/greeting_test_lines.lua",
    user "${n}",
    label { "200", at = "lookup" },
    bot "Order ${n} is shipped; it arrives soon.",
    bot "Your order number? (empty line to leave)",
    user "",
    bot "Bye!",
    done(),
  },
}
