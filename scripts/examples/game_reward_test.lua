-- Conversation tests of game_reward.lua: granted, already granted, busy
-- then granted on a later round (the sleeps take no time: the clock is
-- virtual), and each way the reward service can fail.
return {
  flow = "game_reward.lua",
  integrations = "integrations.lua",
  args = { "p7", "gems" },
  test "granted" {
    id = "s1",
    stubs = { stub { endpoint = "game.grant_reward", path = "/players/p7/rewards",
                     headers = { ["Idempotency-Key"] = "reward-p7-gems-s1" },
                     reply = { status = 200, json = { balance = 5 } } } },
    label { "200", at = "grant" }, bot "Granted gems to p7: balance 5.", done(),
  },
  test "already granted" {
    stubs = { stub { endpoint = "game.grant_reward", reply = { status = 409 } } },
    label "409", bot "Already granted: nothing to do.", done(),
  },
  test "busy, then granted a round later" {
    stubs = { stub { endpoint = "game.grant_reward",
                     replies = { { status = 503 }, { status = 503 }, { status = 200, json = { balance = 6 } } } } },
    label "503", state { step = "wait", session = { round = 2 } },
    label "200", bot "Granted gems to p7: balance 6.", done(),
  },
  test "busy for ${rounds} rounds: ${label}" {
    rows = {
      { label = "503", reply = { status = 503 }, rounds = 3 },
      { label = "timeout", reply = { status = 200, delay_ms = 2000 }, rounds = 3 },
      { label = "max-connection", reply = { fault = "pool_full" }, rounds = 3 },
    },
    stubs = { stub { endpoint = "game.grant_reward", reply = "${reply}" } },
    label "${label}", label "${label}", label "${label}",
    bot "The reward service is busy (${label} after 3 rounds): queued for later.", done(),
  },
  test "the service fails: ${label}" {
    rows = {
      { label = "other", reply = { status = 400 }, says = "Reward failed: other 400." },
      { label = "error", reply = { fault = "tls", message = "bad certificate" }, says = "Reward failed: error bad certificate." },
    },
    stubs = { stub { endpoint = "game.grant_reward", reply = "${reply}" } },
    label "${label}", bot "${says}", done(),
  },
}
