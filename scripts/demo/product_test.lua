-- Conversation tests of the REPL tour's product flow (product.lua).
return {
  flow = "product.lua",
  integrations = "integrations.lua",
  stubs = {
    stub { endpoint = nil, integration = "demo", path = "/v1/product/1",
           reply = { status = 200, json = { id = "1", name = "Widget", price = 9.5 } } },
    stub { integration = "demo", path = "/v1/product/%d+", reply = { status = 404 } },
  },
  test "a product, one that is not there, then done" {
    bot "Which product?", user "1",
    label "200", bot "Widget: 9.5 EUR",
    bot "Anything else?", user "2",
    label "404", bot "There is no product 2",
    bot "Anything else?", user "",
    bot "Bye", done(),
  },
  test "the catalogue when it ${what}" {
    rows = {
      { what = "is slow", reply = { status = 200, delay_ms = 60000 }, label = "timeout" },
      { what = "is down", reply = { fault = "refused" }, label = "error" },
      { what = "is busy", reply = { fault = "pool_full" }, label = "max-connection" },
      { what = "answers oddly", reply = { status = 302 }, label = "other" },
    },
    stubs = { stub { path = "/v1/product/.*", reply = "${reply}" } },
    bot "Which product?", user "3",
    label "${label}", bot "The catalogue does not answer (${label})",
    bot "Anything else?", close(),
    bot "Bye", done(),
  },
}
