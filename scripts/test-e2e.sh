#!/usr/bin/env bash
# End-to-end test of examples/tauri-app in a real WebKitGTK window on a private Xvfb display,
# driven by tauri-driver + WebKitWebDriver (selenium-webdriver from npm). The app is a debug
# build with the frontend embedded (feature custom-protocol: no Vite server at test time).
# Screenshots go to target/e2e-artifacts/. System packages come from scripts/install-deps.sh.
#
# Knobs: E2E_RUNS (run the test N times against one build, default 1),
#        E2E_BUILD_TIMEOUT (seconds for the cargo build, default 3600: a cold build on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=$root/target/tools
app_dir=$root/examples/tauri-app
build_timeout=${E2E_BUILD_TIMEOUT:-3600}
runs=${E2E_RUNS:-1}

. scripts/e2e-lib.sh
e2e_install_driver

# Frontend (its own node_modules only; reinstalled when the lockfile changes).
cd "$app_dir"
if [ ! node_modules/.package-lock.json -nt package-lock.json ]; then
  step 600 npm ci --no-audit --no-fund --loglevel=error
fi
step 300 npm run build --silent >/dev/null
cd "$root"
step "$build_timeout" cargo build -q -p bgsync-example-app --features custom-protocol
# The background run while the app is closed: the reference server as a process.
step "$build_timeout" cargo build -q -p bgsync-reference-server

e2e_start_xvfb

export ARTIFACTS=$root/target/e2e-artifacts
rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"
export APP=$root/target/debug/bgsync-example-app
# The app's own library, whose C ABI the OS background hook calls (e2e/background_drain.py).
export APP_LIB=$root/target/debug/libbgsync_example_app_lib.so
export SERVER_BIN=$root/target/debug/bgsync-reference-server
export BGSYNC_EXAMPLE_START_OFFLINE=1

for run in $(seq 1 "$runs"); do
  # Fresh outbox + server databases and ports for every run; the test reads the server's
  # admin endpoints on BGSYNC_EXAMPLE_PORT.
  export BGSYNC_EXAMPLE_DATA=$work/data-$run
  # The webview's own storage (the app keeps its visit records in localStorage) lives under
  # XDG_DATA_HOME: a fresh one per run, so no run sees another's records (or the user's).
  export XDG_DATA_HOME=$work/xdg-data-$run XDG_CACHE_HOME=$work/xdg-cache-$run
  export BGSYNC_EXAMPLE_PORT=$(free_port)
  e2e_start_driver
  [ "$runs" = 1 ] || echo "e2e run $run/$runs"
  cd "$app_dir"
  step 240 node e2e/run.mjs
  cd "$root"
  stop_session "$driver_pid"
  driver_pid=
done
