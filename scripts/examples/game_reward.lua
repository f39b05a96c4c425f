-- A game server's reward flow: grant a player a reward through the game's
-- API, with an idempotency key so that a retried POST never grants twice.
-- The integration retries a 503 or a timeout once by itself; this flow
-- then waits (1 s, 2 s) and tries again, at most 3 rounds, before it gives
-- up and queues the reward for later. Run with the player and the reward:
--   flowrun run scripts/examples/game_reward.lua PLAYER REWARD
-- (a game embeds the same flow through flowrun.h, one session per grant).
local flow = require "flowrun.flow"

local ROUNDS = 3

return flow.define {
  name = "game_reward",
  start = "grant",
  defaults = { other = "failed", error = "failed", timeout = "retry", ["max-connection"] = "retry" },
  steps = {
    grant = flow.api {
      endpoint = "game.grant_reward",
      params = function() return { player = args[1] or "p1" } end,
      headers = function(s)
        return { ["Idempotency-Key"] = ("reward-%s-%s-%s"):format(args[1] or "p1", args[2] or "gold", s.id or "cli") }
      end,
      body = function() return { reward = args[2] or "gold", amount = 1 } end,
      save = "grant",
      on = { ["200"] = "granted", ["409"] = "already", ["503"] = "retry" },
    },

    -- count the rounds; each one waits longer
    retry = function(s)
      s.round = (s.round or 1) + 1
      if s.round > ROUNDS then return "queue_later" end
      return "wait"
    end,
    wait = flow.sleep { ms = function(s) return 1000 * (s.round - 1) end, next = "grant" },

    granted = flow.say {
      text = function(s) return ("Granted %s to %s: balance %d."):format(
        args[2] or "gold", args[1] or "p1", s.grant.json.balance) end,
    },
    already = flow.say { text = "Already granted: nothing to do." },
    queue_later = flow.say {
      text = function(s) return ("The reward service is busy (%s after %d rounds): queued for later.")
        :format(s.grant.label, ROUNDS) end,
    },
    failed = flow.say {
      text = function(s) return ("Reward failed: %s %s."):format(s.grant.label, s.grant.error or s.grant.status or "") end,
    },
  },
}
