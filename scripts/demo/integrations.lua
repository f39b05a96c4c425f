-- The demo's integrations, for running and checking the demo flows by hand
-- against `flowrun mock scripts/demo/routes.lua --port 8080`. `make demo`
-- starts the mock on a free port and uses a copy of this file pointed at it.
return {
  shop = {
    base_url = "http://127.0.0.1:8080/v1",
    headers = { Accept = "application/json" },
    timeout_ms = 1000,
  },
  demo = {
    base_url = "http://127.0.0.1:8080",
    headers = { Accept = "application/json" },
    auth = { bearer = env("DEMO_TOKEN", "demo-token") },
  },
}
