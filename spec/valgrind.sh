#!/bin/sh
# valgrind over `flowrun run` and `flowrun host` of the demo flow, sessions ended by their
# limits, and `flowrun mock`: exits
# non-zero on any leak or memory error.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'kill "$mock" 2>/dev/null || true; wait "$mock" 2>/dev/null || true; rm -rf "$tmp"' EXIT
vg="valgrind -q --leak-check=full --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=9"
$vg "$here/build/flowrun" mock "$here/scripts/demo/routes.lua" --port 0 >"$tmp/mock.out" 2>"$tmp/mock.log" &
mock=$!
i=0
until grep -q '^listening on' "$tmp/mock.out" 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 400 ] || { cat "$tmp/mock.log"; exit 1; }; sleep 0.05
done
url=$(sed -n 's/^listening on //p' "$tmp/mock.out")
printf 'return { shop = { base_url = "%s/v1", timeout_ms = 1000 } }\n' "$url" >"$tmp/integrations.lua"
printf '42\n7\n999\n\n' | $vg "$here/build/flowrun" run --trace -I "$tmp/integrations.lua" \
  "$here/scripts/demo/order_status.lua"
echo "flowrun run: clean"
{ printf '%s\n' '{"session":"a","text":"x"}' 'not json' '{"session":"b","text":"x"}'
  sleep 0.5; printf '%s\n' '{"session":"a","text":"42"}' '{"session":"b","text":"7"}'; } \
  | $vg "$here/build/flowrun" host -I "$tmp/integrations.lua" "$here/scripts/demo/order_status.lua" >/dev/null
echo "flowrun host: clean"
cat >"$tmp/limits.lua" <<'EOF'
if session.id == "1" then local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(100) .. i end end
if session.id == "2" then while true do end end
if session.id == "3" then error(setmetatable({}, { __tostring = function() return "custom" end })) end
say(load("return 1 + 1")() .. " " .. require("json").encode({ id = 76561198000000001 }))
EOF
status=0
$vg "$here/build/flowrun" run --sessions 4 --limit session-memory=4M --limit instructions=1000000 \
  "$tmp/limits.lua" >"$tmp/limits.out" 2>"$tmp/limits.err" || status=$?
if [ "$status" -ne 1 ] || ! grep -q 'memory limit' "$tmp/limits.err" \
   || ! grep -q 'instruction limit' "$tmp/limits.err" || ! grep -q 'custom' "$tmp/limits.err"; then
  cat "$tmp/limits.err"; exit 1
fi
echo "flowrun run, sessions ended by their limits: clean"
# durable sessions: a store, a restart on it, sessions leaving memory and coming back
cat >"$tmp/durable.lua" <<'EOF'
local t = os.time()
local name = ask("name?")
local label = api_node{ integration = "shop", path = "/orders/{id}", params = { id = name },
                        results = { "200", "404" } }
local more = ask("more?")
say(name .. " " .. label .. " " .. more .. " " .. t)
EOF
printf '%s\n' '{"session":"a","text":"x","n":1}' '{"session":"b","text":"x","n":1}' \
    '{"session":"a","text":"42","n":2}' \
  | $vg "$here/build/flowrun" host --store "$tmp/s.db" --resident 1 -I "$tmp/integrations.lua" \
    "$tmp/durable.lua" >/dev/null
printf '%s\n' '{"session":"a","text":"m","n":3}' '{"session":"b","text":"7","n":2}' \
    '{"session":"b","text":"n","n":3}' \
  | $vg "$here/build/flowrun" host --store "$tmp/s.db" --resident 1 -I "$tmp/integrations.lua" \
    "$tmp/durable.lua" >"$tmp/durable.out"
[ "$(grep -c '"end":"done"' "$tmp/durable.out")" -eq 2 ] || { cat "$tmp/durable.out"; exit 1; }
$vg "$here/build/flowrun" sessions --store "$tmp/s.db" >/dev/null
echo "flowrun host --store, restarted, sessions leaving memory; flowrun sessions: clean"
# the declarative demo with a store (snapshots), restarted; continue_as_new
for k in 1 2; do
  printf '%s\n' "{\"session\":\"d\",\"text\":\"x\",\"n\":$k}" \
    | $vg "$here/build/flowrun" host --store "$tmp/d.db" -I "$tmp/integrations.lua" \
      "$here/scripts/demo/order_status.lua" >/dev/null
done
printf 'local n = tonumber((...)) or 0 local a = ask("n?") if a then continue_as_new(n + 1, { a }) end say(n)\n' \
  >"$tmp/again.lua"
for k in 1 2 3; do
  printf '%s\n' "{\"session\":\"c\",\"text\":\"x\",\"n\":$k}" \
    | $vg "$here/build/flowrun" host --store "$tmp/c.db" "$tmp/again.lua" >>"$tmp/again.out"
done
grep -q '"ask":"n?","seq":5' "$tmp/again.out" || { cat "$tmp/again.out"; exit 1; }
echo "flowrun host --store: snapshots of a declarative flow, continue_as_new: clean"
$vg "$here/build/flowrun" test --coverage "$here/scripts/demo" >/dev/null
echo "flowrun test (stubs, a virtual clock, coverage with lines): clean"
$vg "$here/build/flowrun" test --replay "$tmp/d.db" -I "$tmp/integrations.lua" >"$tmp/replay.out" \
  || { cat "$tmp/replay.out"; exit 1; }
grep -q '^ok 1 - session d ' "$tmp/replay.out" || { cat "$tmp/replay.out"; exit 1; }
echo "flowrun test --replay: clean"
kill -TERM "$mock"
if wait "$mock"; then echo "flowrun mock: clean"; else echo "flowrun mock: valgrind found problems"; cat "$tmp/mock.log"; exit 1; fi
