#!/usr/bin/env bash
# The published packages hold what an app needs and nothing it must not get (issue 15, item 1):
# `cargo package --list` and `npm pack --dry-run` of this tree, checked against a list. Stray
# Tauri build outputs are planted first, so the crate's `exclude` is tested, not assumed.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
planted=(.tauri/x android/.tauri/x android/build/x ios/.build/x)
cleanup() { for p in "${planted[@]}"; do rm -rf "${p%%/x}"; done; }
trap cleanup EXIT
for p in "${planted[@]}"; do
  [ -e "${p%%/x}" ] && { echo "refusing to plant over an existing ${p%%/x}"; exit 1; }
  mkdir -p "$(dirname "$p")" && echo stray > "$p"
done
crate=$(cargo package --list --allow-dirty 2>/dev/null)
fail=0
for want in build.rs Cargo.toml src/lib.rs README.md LICENSE-MIT LICENSE-APACHE \
  android/src/main/AndroidManifest.xml android/build.gradle.kts \
  android/src/main/java/app/tauri/backgroundsync/SyncWorker.kt \
  ios/Package.swift ios/Sources/BackgroundSyncPlugin/BackgroundSyncPlugin.swift ios/Sources/BackgroundSyncPlugin/DrainRun.swift \
  ios/info_plist_entries.rs \
  permissions/default.toml include/bgsync.h; do
  grep -qx "$want" <<<"$crate" || { echo "crate package lacks $want"; fail=1; }
done
# The engine crate the plugin depends on: its sources and the migrations sqlx embeds.
core=$(cargo package --list --allow-dirty -p background-sync-core 2>/dev/null)
# Every migration in the tree (a new one left out of the package would fail on open).
migrations=$(cd crates/background-sync-core && ls migrations/*.sql)
for want in Cargo.toml build.rs src/lib.rs src/store/mod.rs $migrations; do
  grep -qx "$want" <<<"$core" || { echo "engine crate package lacks $want"; fail=1; }
done
if grep -qE '^(tests|benches|target)/' <<<"$core"; then echo "engine crate package contains tests, benches or target"; fail=1; fi
for unwanted in '^\.tauri/' '^android/\.tauri/' '^android/build/' '^ios/\.build/' '^target/' \
  'node_modules/' '^examples/' '^crates/'; do
  if grep -qE "$unwanted" <<<"$crate"; then echo "crate package contains $unwanted"; fail=1; fi
done
npm_files=$(npm pack --dry-run --json 2>/dev/null | python3 -c 'import json,sys; print("\n".join(f["path"] for f in json.load(sys.stdin)[0]["files"]))')
for want in package.json README.md LICENSE-MIT LICENSE-APACHE dist-js/index.js dist-js/index.cjs dist-js/index.d.ts; do
  grep -qx "$want" <<<"$npm_files" || { echo "npm package lacks $want (run npm run build first)"; fail=1; }
done
if grep -qvE '^(package\.json|README\.md|LICENSE-MIT|LICENSE-APACHE|dist-js/.*)$' <<<"$npm_files"; then
  echo "npm package contains unexpected files:"; grep -vE '^(package\.json|README\.md|LICENSE-MIT|LICENSE-APACHE|dist-js/.*)$' <<<"$npm_files"
  fail=1
fi
[ "$fail" = 0 ] || { echo "packaging check FAILED"; exit 1; }
echo "packaging: crate $(wc -l <<<"$crate") files, engine crate $(wc -l <<<"$core") files, npm $(wc -l <<<"$npm_files") files, as listed ($((SECONDS - t0)) s)"
