#!/bin/sh
# valgrind over `flowrun run` and `flowrun host` of the demo flow and of `flowrun mock`: exits
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
kill -TERM "$mock"
if wait "$mock"; then echo "flowrun mock: clean"; else echo "flowrun mock: valgrind found problems"; cat "$tmp/mock.log"; exit 1; fi
