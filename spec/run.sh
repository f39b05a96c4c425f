#!/bin/sh
# Runs the busted specs (each file in its own lua5.4, so a crash in one is
# counted and the others still run) and the C embedding test, shows their
# output, and ends with one line "N passed, N failed, N skipped" over all of
# them. Exits non-zero on any failure; with CI=true a skip is a failure. SAN=1: the binaries are built with ASan.
cd "$(dirname "$0")/.." || exit 2

if [ "${SAN:-0}" = 1 ]; then
  asan=$(gcc -print-file-name=libasan.so)
  export ASAN_OPTIONS=detect_leaks=1
  # lua5.4 itself is not instrumented: preload the runtime for flowrun.so,
  # and let the programs the specs start check for leaks themselves.
  export SPEC_CHILD_ASAN_OPTIONS=detect_leaks=1
  lua_env="env LD_PRELOAD=$asan ASAN_OPTIONS=detect_leaks=0"
else
  lua_env=env
fi

passed=0 failed=0 skipped=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

for spec in spec/*_spec.lua; do
  echo "# $spec"
  $lua_env lua5.4 /usr/bin/busted -o TAP "$spec" >"$log" 2>&1
  status=$?
  cat "$log"
  ok=$(grep -c '^ok [0-9]* - ' "$log")
  skip=$(grep -c '^ok [0-9]* - # SKIP' "$log")
  bad=$(grep -c '^not ok [0-9]*' "$log")
  passed=$((passed + ok - skip))
  failed=$((failed + bad))
  skipped=$((skipped + skip))
  # CI installs every tool the specs use: a skip there hides a test
  if [ "${CI:-}" = true ] && [ "$skip" -gt 0 ]; then
    grep '^ok [0-9]* - # SKIP' "$log" | sed 's/^/not ok - skipped in CI: /'
    failed=$((failed + skip))
  fi
  # busted exits 0, or 1 after failures: anything else (or no plan line)
  # is a crash that may have hidden more tests
  if ! grep -q '^1\.\.[0-9]*' "$log" || [ "$status" -gt 1 ] \
     || { [ "$status" -ne 0 ] && [ "$bad" -eq 0 ]; }; then
    echo "not ok - $spec crashed or did not finish (exit $status)"
    failed=$((failed + 1))
  fi
  # a sanitizer report of flowrun.so itself, in the lua5.4 process (the
  # programs the specs start are checked by spec/helper.lua)
  if grep -qE '^(==[0-9]+==ERROR: |[^#].*: runtime error: )' "$log"; then
    echo "not ok - $spec: sanitizer report in the specs' own process"
    failed=$((failed + 1))
  fi
done

if [ -x build/embed_test ]; then
  echo "# build/embed_test"
  build/embed_test >"$log" 2>&1
  status=$?
  cat "$log"
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    passed=$((passed + $(echo "$line" | cut -d' ' -f1)))
    failed=$((failed + $(echo "$line" | cut -d' ' -f3)))
  fi
  if [ -z "$line" ] || { [ "$status" -ne 0 ] && [ "$(echo "$line" | cut -d' ' -f3)" = 0 ]; }; then
    echo "not ok - build/embed_test did not finish (exit $status)"
    failed=$((failed + 1))
  fi
fi

# the suite's total: three fields, unlike embed_test's own line above it
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
