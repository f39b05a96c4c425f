#!/bin/sh
# make demo: start the mock API on a free loopback port, point an
# integrations file at it, and run the order-status flow (the declarative
# order_status.lua; DEMO_FLOW=order_status_imperative.lua runs the script
# version). Interactive on a terminal; otherwise it plays a scripted user who
# tries a found order, an unknown one and a slow one, then leaves.
# `run.sh repl` (make repl) opens the REPL instead, on the integration `demo`
# and the flow product.lua, against the same mock API.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
flowrun="$here/../../build/flowrun"
tmp=$(mktemp -d)
cleanup() { kill "$mock" 2>/dev/null || true; wait "$mock" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
# its own session: Ctrl-C at the terminal (the REPL cancels a call with it)
# must not reach the mock
setsid "$flowrun" mock "$here/routes.lua" --port 0 >"$tmp/mock.out" 2>"$tmp/mock.log" &
mock=$!
i=0
until grep -q '^listening on' "$tmp/mock.out" 2>/dev/null; do
  i=$((i + 1))
  if [ $i -gt 100 ] || ! kill -0 "$mock" 2>/dev/null; then
    echo "demo: the mock server did not start:" >&2; cat "$tmp/mock.log" >&2; exit 1
  fi
  sleep 0.05
done
url=$(sed -n 's/^listening on //p' "$tmp/mock.out")
flow="$here/${DEMO_FLOW:-order_status.lua}"
# integrations.lua, pointed at the port the mock took
sed "s|http://127.0.0.1:8080|$url|" "$here/integrations.lua" >"$tmp/integrations.lua"
if [ "${1:-}" = repl ]; then
  echo "demo: mock API on $url (routes: $here/routes.lua)"
  echo "demo: try api_node{integration=\"demo\", path=\"/v1/product/1\", results={\"200\"}}, then .run"
  trap '' INT                           # Ctrl-C is the REPL's, not ours
  "$flowrun" repl -I "$tmp/integrations.lua" "$here/product.lua"
  exit $?
fi
echo "demo: mock API on $url (routes: $here/routes.lua), flow $flow"
if [ -t 0 ]; then
  echo "demo: try order 42, 1234 (found), 7 (unknown) or 999 (slow: timeout)"
  "$flowrun" run --trace -I "$tmp/integrations.lua" "$flow"
else
  printf '42\n7\n999\n\n' | "$flowrun" run --trace -I "$tmp/integrations.lua" "$flow"
fi
