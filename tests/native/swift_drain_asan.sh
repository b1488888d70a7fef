#!/usr/bin/env bash
# The iOS shim's run logic (ios/Sources/BackgroundSyncPlugin/DrainRun.swift) compiled with
# swiftc -sanitize=address on Linux, linked against the real C ABI (examples/ffi-host), and run
# against the reference server while another thread plays iOS firing the expiration handler at
# random moments (tests/native/swift-drain/main.swift). Two builds of one harness:
#   fixed  — the shim's DrainRun: every run must end with no ASan report, the handler cleared
#            before completion;
#   legacy — defect 3 of issue 12 put back (raw flag freed when the drain returns, handler left
#            set): must abort with AddressSanitizer's heap-use-after-free, or this check is blind.
# Also a type-check of the Clang import of include/bgsync.h through a module map like the one
# SwiftPM generates for the BackgroundSyncFFI target.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/native/swift_env.sh
RUNS=${BGSYNC_SWIFT_RUNS:-60}
swift_root_or_skip
t0=$SECONDS
cargo build -q -p bgsync-ffi-host -p bgsync-reference-server

# Inputs into the root's /work: the sources as they ship, the header, the engine library.
work=$swift_root/work
rm -rf "$work" && mkdir -p "$work"/{lib,mod,tmp}
cp ios/Sources/BackgroundSyncPlugin/DrainRun.swift tests/native/swift-drain/main.swift "$work/"
cmp -s include/bgsync.h ios/Sources/BackgroundSyncFFI/include/bgsync.h || {
  echo "ios/Sources/BackgroundSyncFFI/include/bgsync.h differs from include/bgsync.h"; exit 1; }
ffi_module "$work/mod"
cp target/debug/libbgsync_ffi_host.so "$work/lib/"

if ! in_swift_root swiftc -swift-version 5 -sanitize=address -g -I mod -L lib -lbgsync_ffi_host \
  DrainRun.swift main.swift -o swift-drain-asan >"$work/build.out" 2>&1; then
  cat "$work/build.out"; echo "FAILED: swiftc"; exit 1
fi
grep -q 'DrainRun.swift.*warning' "$work/build.out" && { grep -A4 'DrainRun.swift.*warning' "$work/build.out"; echo "FAILED: DrainRun.swift has warnings"; exit 1; }
echo "built with swiftc -sanitize=address: DrainRun.swift (as shipped) + harness, bgsync.h imported through a module map"

# The reference server on loopback (the root shares this machine's network), 5 ms per request
# so that expirations land mid-drain too.
log=$(mktemp)
target/debug/bgsync-reference-server --port 0 --delay-ms 5 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q 'listening on' "$log" && break; sleep 0.1; done
url=$(awk '/listening on/ {print $3}' "$log")
[ -n "$url" ] || { cat "$log"; echo "reference server did not start"; exit 1; }

out=$work/fixed.out
if ! in_swift_root ./swift-drain-asan "$url" /work/tmp "$RUNS" fixed >"$out" 2>&1; then
  cat "$out"; echo "FAILED: the shim's DrainRun under AddressSanitizer"; exit 1
fi
grep 'SWIFT-DRAIN fixed' "$out"
grep -q 'through a handler fetched before it was cleared: [1-9]' "$out" || {
  echo "FAILED: no run had its expiration handler run after completion: the race was not exercised"; exit 1; }

rm -rf "$work/tmp" && mkdir -p "$work/tmp"
out=$work/legacy.out
if in_swift_root ./swift-drain-asan "$url" /work/tmp "$RUNS" legacy >"$out" 2>&1; then
  cat "$out"; echo "FAILED: defect 3 put back was not caught (the check is blind)"; exit 1
fi
grep -q 'heap-use-after-free' "$out" || { tail -30 "$out"; echo "FAILED: legacy build failed without a use-after-free report"; exit 1; }
echo "defect 3 put back: caught ($(grep -m1 -o 'AddressSanitizer: heap-use-after-free.*' "$out"))"
echo "Swift drain under ASan: passed in $((SECONDS - t0)) s ($RUNS runs each)"
