#!/usr/bin/env bash
# Tiny run of every benchmark section (dev profile, so it reuses the test build): keeps the
# benchmark from rotting. Real figures: `cargo bench -p background-sync-core --bench engine` (see docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f bench-results/benchmarks.json
BGSYNC_BENCH_SMOKE=1 cargo test -p background-sync-core --bench engine
for s in enqueue enqueue-concurrent drain claim ios-window mobile-tls energy wakeups cold-tls scale cold-start; do
  grep -q "\"section\": \"$s\"" bench-results/benchmarks.json || { echo "benchmark section $s missing"; exit 1; }
done
echo "benchmark smoke: 11 sections present"
# The fleet simulation (2,000 phones): it asserts every mutation is accounted for.
BGSYNC_BENCH_SMOKE=1 cargo test -p background-sync-core --bench fleet
grep -q "naive fixed 5 s retry" bench-results/fleet.md || { echo "fleet simulation wrote no table"; exit 1; }
echo "fleet simulation smoke: table written"
