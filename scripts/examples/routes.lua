-- Mock API for the examples: flowrun mock scripts/examples/routes.lua --port 8080
return {
  -- the shop: orders in each state, and tickets
  { method = "GET", path = "/shop/v1/orders/42", json = { id = "42", status = "delivered", eta = "delivered yesterday" } },
  { method = "GET", path = "/shop/v1/orders/7", json = { id = "7", status = "in_transit", eta = "tomorrow" } },
  { method = "GET", path = "/shop/v1/orders/13", json = { id = "13", status = "cancelled" } },
  { method = "GET", path = "/shop/v1/orders/500", status = 503, json = { error = "maintenance" } },
  { method = "GET", path = "/shop/v1/orders/{id}", status = 404, json = { error = "no such order", id = "{id}" } },
  { method = "POST", path = "/shop/v1/tickets", status = 201, json = { id = "T-1001", queue = "returns" } },

  -- the game: a reward service that is busy now and then
  { method = "POST", path = "/game/players/busy/rewards", status = 503, times = 3,
    headers = { ["Retry-After"] = "0" }, json = { error = "busy" } },
  { method = "POST", path = "/game/players/dup/rewards", status = 409, json = { error = "already granted" } },
  { method = "POST", path = "/game/players/{player}/rewards", status = 200,
    json = { player = "{player}", granted = true, balance = 1250 } },
}
