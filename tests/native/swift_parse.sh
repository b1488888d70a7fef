#!/usr/bin/env bash
# Syntax check of the iOS shim's Swift sources (ios/**/*.swift) with the real Swift compiler
# (`swiftc -parse`). Parse only for the files that import Apple frameworks: there is no Xcode
# and no iOS SDK here (UIKit, BackgroundTasks, Network, Tauri's Swift package), so a syntax
# error fails this check and a type error does not. DrainRun.swift, which imports none, is
# type-checked, compiled and run by tests/native/swift_drain_asan.sh.
# The compiler is Debian trixie's swiftlang 6.0.3 in its own root (tests/native/swift_env.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/native/swift_env.sh
swift_root_or_skip
t0=$SECONDS
echo "$(cat "$swift_root/.ready") (Debian trixie's swiftlang, in $swift_root)"

mapfile -t files < <(find ios -name '*.swift' | sort)
[ "${#files[@]}" -gt 0 ] || { echo "no Swift sources under ios/"; exit 1; }
rm -rf "$swift_root/work" && mkdir -p "$swift_root/work/src"
bad=0
for f in "${files[@]}"; do
  cp "$f" "$swift_root/work/src/$(basename "$f")"
  if in_swift_root swiftc -parse -swift-version 5 "src/$(basename "$f")"; then echo "parsed: $f"; else echo "SYNTAX ERROR: $f"; bad=$((bad + 1)); fi
done
[ "$bad" = 0 ] || { echo "Swift parse FAILED: $bad of ${#files[@]} files"; exit 1; }
echo "Swift parse: ${#files[@]} files OK in $((SECONDS - t0)) s"
