-- Mock routes for the demo: `flowrun mock scripts/demo/routes.lua`.
return {
  { method = "GET", path = "/v1/orders/42", status = 200,
    json = { id = "42", status = "shipped", eta = "tomorrow", items = 3 } },
  { method = "GET", path = "/v1/orders/1234", status = 200,
    json = { id = "1234", status = "being packed", eta = "in 3 days", items = 1 } },
  -- an order the API is slow to find: longer than the integration's timeout
  { method = "GET", path = "/v1/orders/999", delay_ms = 3000, status = 200,
    json = { id = "999", status = "lost in the warehouse" } },
  { method = "GET", path = "/v1/orders/{id}", status = 404,
    json = { error = "no such order", id = "{id}" } },
  -- the REPL tour (`make repl`): a product catalogue, and a call that hangs
  { method = "GET", path = "/v1/product/1", status = 200,
    json = { id = "1", name = "Widget", price = 9.5, stock = 12 } },
  { method = "GET", path = "/v1/product/{id}", status = 404,
    json = { error = "no such product", id = "{id}" } },
  { path = "/v1/hang", fault = "no_response" },
}
