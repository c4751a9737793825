#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, checks, runs every test,
# and ends with one line "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
bash scripts/setup-test-tools.sh || { echo "test tool setup failed"; echo "0 passed, 1 failed"; exit 1; }

status=0
echo "== biome check"
npx biome check . || status=1
echo "== tsc --noEmit"
npx tsc --noEmit -p tsconfig.json || status=1

echo "== vitest"
rm -f .vitest-results.json
npx vitest run --reporter=default --reporter=json --outputFile.json=.vitest-results.json
vitest_status=$?
node scripts/vitest-summary.mjs .vitest-results.json
summary_status=$?
if [ $status -ne 0 ]; then
  echo "lint or typecheck failed (see above)" >&2
  exit 1
fi
[ $vitest_status -eq 0 ] && [ $summary_status -eq 0 ]
