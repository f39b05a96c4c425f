-- The integrations of the examples. By default they point at the mock API
-- of routes.lua:  flowrun mock scripts/examples/routes.lua --port 8080
-- (EXAMPLES_API=http://127.0.0.1:PORT points them elsewhere).
local api = env("EXAMPLES_API", "http://127.0.0.1:8080")

return {
  shop = {
    base_url = api .. "/shop/v1",
    headers = { Accept = "application/json" },
    endpoints = {
      get_order   = { method = "GET",  path = "/orders/{id}" },
      open_ticket = { method = "POST", path = "/tickets" },
    },
    timeout_ms = 2000,
  },
  game = {
    base_url = api .. "/game",
    auth = { bearer = env("GAME_TOKEN", "dev-token") },
    endpoints = {
      grant_reward = { method = "POST", path = "/players/{player}/rewards" },
    },
    timeout_ms = 1500,
    -- the integration retries a 503 or a timeout once by itself (POST: only
    -- with an Idempotency-Key); game_reward.lua then waits and tries again
    retry = { attempts = 2, on = { "503", "timeout" }, backoff_ms = 100 },
  },
}
