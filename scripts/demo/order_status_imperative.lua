-- The order-status chat flow of `make demo` written as a script: ask for an
-- order number, look it up, branch on the result label. order_status.lua is
-- the same flow as a declarative step graph; both run the same way:
--   flowrun run -I INTEGRATIONS scripts/demo/order_status_imperative.lua
say("Hi! I can tell you where your order is.")
while true do
  local id = ask("Your order number? (empty line to leave)")
  if id == nil or id == "" then break end
  local label, res = api_node{
    integration = "shop",
    path = "/orders/{id}",
    params = { id = id },
    results = { "200", "404" },
  }
  if label == "200" then
    say(("Order %s is %s; it arrives %s."):format(id, res.json.status, res.json.eta))
  elseif label == "404" then
    say(("I found no order %s. Check the number and try again."):format(id))
  elseif label == "timeout" then
    say("The shop is not answering right now (" .. res.reason .. "); please try later.")
  else
    say("Something went wrong (" .. label .. "); please try later.")
  end
end
say("Bye!")
