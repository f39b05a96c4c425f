#!/bin/bash
# scripts/stress.sh [N]: the suite N times (default 5) while two busy loops
# compete for the cores, as on a loaded CI machine; SAN=1 for the sanitized
# build (build it first: make SAN=1 all). Stops at the first failing run.
# Each run's log is kept in /tmp/flowrun-stress.RUN.log.
cd "$(dirname "$0")/.." || exit 2
( while :; do :; done ) & b1=$!
( while :; do :; done ) & b2=$!
trap 'kill $b1 $b2 2>/dev/null' EXIT
for i in $(seq 1 "${1:-5}"); do
  log=/tmp/flowrun-stress.$i.log
  CI=true sh spec/run.sh >"$log" 2>&1
  status=$?
  echo "run $i: $(tail -n 1 "$log")"
  if [ "$status" -ne 0 ]; then grep '^not ok' "$log"; exit 1; fi
done
