#!/usr/bin/env bash
# Every suite, in order of cost. Exits non-zero on the first failing suite.
# Knobs for long runs: BGSYNC_CRASH_CYCLES, BGSYNC_SOAK_MUTATIONS, PROPTEST_CASES (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUST_BACKTRACE=0
export CARGO_TERM_COLOR=never
# A clean run gains nothing from incremental caches (3.5 GB in target/ when they were on);
# CARGO_INCREMENTAL=1 make test keeps them for repeated local runs.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

# Each step names the disk left, so a run that fills the disk says where it grew.
step() { echo; echo "=== $* === ($(df -h --output=avail . | tail -1 | tr -d ' ') free)"; }

step "layers: the engine crate imports downward only and depends on no Tauri, GTK or WebKit"
scripts/check-layers.py --self-test
if cargo tree -p background-sync-core -e normal,build --prefix none | grep -iE '^(tauri|gtk|webkit2gtk|wry|glib)[-a-z0-9]* '; then
  echo "the engine crate depends on Tauri/GTK/WebKit (above)"; exit 1
fi
echo "cargo tree -p background-sync-core: no tauri, gtk, webkit2gtk, wry or glib"

step "Rust: unit, integration, crash, fault, property, environment, security, IPC suites"
cargo test --workspace --exclude bgsync-example-app 2>&1

step "at-rest encryption (SQLCipher build of the engine)"
cargo test -p background-sync-core --features sqlcipher --test encryption 2>&1

step "credentials key in a real Secret Service (gnome-keyring on a private D-Bus session)"
tests/keyring.sh 2>&1

step "guest-js (vitest + @tauri-apps/api/mocks)"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
npm run build
npm test
node scripts/check-readme-snippets.mjs

step "packaging: cargo package --list and npm pack --dry-run against the expected contents"
scripts/test-packaging.sh

if [ -x tests/native/run_all.sh ]; then
  step "native: C ABI (ctypes), JNI (host JVM), Kotlin shim compile, exported symbols"
  tests/native/run_all.sh
fi

if [ -x scripts/test-e2e.sh ]; then
  step "example app end-to-end (WebKitGTK under Xvfb, tauri-driver)"
  scripts/test-e2e.sh
fi

if [ -x scripts/test-fresh-app.sh ]; then
  step "a fresh app made with create-tauri-app, the plugin added as the README says, driven under Xvfb"
  scripts/test-fresh-app.sh
fi

if [ -x scripts/bench-smoke.sh ]; then
  step "benchmark smoke run"
  scripts/bench-smoke.sh
fi
echo
echo "all suites passed"
