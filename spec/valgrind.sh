#!/bin/sh
# valgrind over `flowrun run` and `flowrun host` of the demo flow, sessions ended by their
# limits, and `flowrun mock`: exits
# non-zero on any leak or memory error.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
api=
trap 'kill "$mock" $api 2>/dev/null || true; wait "$mock" 2>/dev/null || true; rm -rf "$tmp"' EXIT
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
# the integrations of real APIs: an OAuth2 token (and a 401 that renews it), cookies
# across a redirect, a gzip body, a multipart upload, a rate limit, a deadline,
# pages by cursor, over a second mock (not under valgrind: the first one is)
cat >"$tmp/api_routes.lua" <<'EOF'
return {
  { method = "POST", path = "/token", json = { access_token = "tok-1", token_type = "Bearer", expires_in = 3600 } },
  { path = "/v1/me", status = 401, times = 1, json = { error = "expired" } },
  { path = "/v1/me", json = { me = "ann" } },
  { path = "/v1/login", status = 302, headers = { Location = "/v1/in", ["Set-Cookie"] = "sid=s1; Path=/" }, body = "" },
  { path = "/v1/in", echo = true },
  { path = "/v1/gz", gzip = true, body = "hello, compressed world" },
  { method = "POST", path = "/v1/upload", echo = true },
  { path = "/v1/items", query = { cursor = "c2" }, json = { items = { 3 } } },
  { path = "/v1/items", json = { items = { 1, 2 }, next = "c2" } },
}
EOF
"$here/build/flowrun" mock "$tmp/api_routes.lua" --port 0 >"$tmp/api.out" 2>"$tmp/api.log" &
api=$!
i=0
until grep -q '^listening on' "$tmp/api.out" 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 400 ] || { cat "$tmp/api.log"; exit 1; }; sleep 0.05
done
apiurl=$(sed -n 's/^listening on //p' "$tmp/api.out")
cat >"$tmp/api_integrations.lua" <<EOF
return { api = { base_url = "$apiurl/v1", cookies = true, compressed = true, follow_redirects = true,
                 rate_limit = { requests = 50, per_ms = 1000 }, deadline_ms = 5000,
                 auth = { oauth2 = { token_url = "$apiurl/token", client_id = "app", client_secret = "s3cret" } } } }
EOF
cat >"$tmp/api_flow.lua" <<'EOF'
local l1 = api_node{ integration = "api", path = "/me", results = { "200" } }
local l2, r2 = api_node{ integration = "api", path = "/login", results = { "200" } }
local l3, r3 = api_node{ integration = "api", path = "/gz", results = { "200" } }
local l4, r4 = api_node{ integration = "api", method = "POST", path = "/upload", results = { "200" },
  multipart = { { name = "title", value = "x" }, { name = "f", filename = "a.txt", content_type = "text/plain", data = "abc" } } }
local n = 0
for _, res in api_pages{ integration = "api", path = "/items", results = { "200" },
                         pages = { cursor = { param = "cursor", from = "next" } } } do
  n = n + #res.json.items
end
say(table.concat({ l1, l2, r2.json.headers.cookie, l3, r3.body, l4, #r4.json.multipart, n }, " "))
EOF
$vg "$here/build/flowrun" run -I "$tmp/api_integrations.lua" "$tmp/api_flow.lua" >"$tmp/api_run.out" \
  || { cat "$tmp/api_run.out" "$tmp/api.log"; exit 1; }
kill "$api"; wait "$api" 2>/dev/null || true
grep -q '^200 200 sid=s1 200 hello, compressed world 200 2 3$' "$tmp/api_run.out" || { cat "$tmp/api_run.out"; exit 1; }
grep -q 'POST /token' "$tmp/api.log" || { cat "$tmp/api.log"; exit 1; }
echo "flowrun run: OAuth2 with a 401, cookies over a redirect, gzip, multipart, rate_limit, deadline_ms, api_pages: clean"
# two flowrun serve hosts on a PostgreSQL store: messages through the other
# host, outputs back, leases, wakes; then SIGTERM
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
mkdir "$tmp/pg"
as=""
if [ "$(id -u)" = 0 ]; then chown postgres "$tmp/pg"; chmod o+rx "$tmp"; as="runuser -u postgres --"; fi
$as "$pgbin/initdb" -A trust -U postgres --no-sync -D "$tmp/pg/data" >/dev/null
$as "$pgbin/postgres" -D "$tmp/pg/data" -c listen_addresses= -c unix_socket_directories="$tmp/pg" \
  -c fsync=off >"$tmp/pg.log" 2>&1 &
pg=$!
i=0
until "$pgbin/psql" -h "$tmp/pg" -U postgres -d postgres -c 'SELECT 1' >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -lt 400 ] || { cat "$tmp/pg.log"; exit 1; }; sleep 0.05
done
"$pgbin/psql" -q -h "$tmp/pg" -U postgres -d postgres -c 'CREATE DATABASE flowrun'
store="postgresql:///flowrun?host=$tmp/pg&user=postgres"
printf '%s\n' 'local n = ask("name?")' 'say("hi " .. n)' >"$tmp/bot.lua"
for node in a b; do
  $vg "$here/build/flowrun" serve "$tmp/bot.lua" --port 0 --store "$store" --node $node \
    --lease-ms 3000 >"$tmp/serve_$node.out" 2>"$tmp/serve_$node.log" &
  eval "serve_$node=\$!"
done
for node in a b; do
  i=0
  until grep -q '^listening on' "$tmp/serve_$node.out" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 600 ] || { cat "$tmp/serve_$node.log"; exit 1; }; sleep 0.05
  done
done
ua=$(sed -n 's/^listening on //p' "$tmp/serve_a.out")
ub=$(sed -n 's/^listening on //p' "$tmp/serve_b.out")
for s in u1 u2 u3 u4; do
  curl -s -m 30 -d "{\"sender\":\"$s\",\"message\":\"x\"}" "$ua/webhooks/rest" >>"$tmp/serve.txt"
  curl -s -m 30 -d "{\"sender\":\"$s\",\"message\":\"Al\"}" "$ub/webhooks/rest" >>"$tmp/serve.txt"
done
kill -TERM "$serve_a" "$serve_b"
status=0
wait "$serve_a" || status=$?
wait "$serve_b" || status=$?
kill -TERM "$pg"; wait "$pg" 2>/dev/null || true
[ "$(grep -o 'hi Al' "$tmp/serve.txt" | wc -l)" = 4 ] || { cat "$tmp/serve.txt" "$tmp/serve_a.log" "$tmp/serve_b.log"; exit 1; }
[ "$status" = 0 ] || { cat "$tmp/serve_a.log" "$tmp/serve_b.log"; exit 1; }
echo "flowrun serve, two hosts on a PostgreSQL store: clean"
kill -TERM "$mock"
if wait "$mock"; then echo "flowrun mock: clean"; else echo "flowrun mock: valgrind found problems"; cat "$tmp/mock.log"; exit 1; fi
