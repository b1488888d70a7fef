#!/usr/bin/env bash
# End-to-end test of examples/tauri-app in a real WebKitGTK window under Xvfb, driven by
# tauri-driver + WebKitWebDriver (selenium-webdriver from npm). Screenshots go to
# target/e2e-artifacts/. System packages come from scripts/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=$root/target/tools
if [ ! -x "$tools/bin/tauri-driver" ]; then
  echo "installing tauri-driver into target/tools"
  cargo install tauri-driver --locked --root "$tools" --quiet
fi
command -v WebKitWebDriver >/dev/null || { echo "WebKitWebDriver missing (apt: webkit2gtk-driver)"; exit 1; }
command -v xvfb-run >/dev/null || { echo "xvfb-run missing (apt: xvfb)"; exit 1; }

(cd examples/tauri-app && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm run build --silent)
cargo build -q -p bgsync-example-app --features custom-protocol

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export APP=$root/target/debug/bgsync-example-app
export BGSYNC_EXAMPLE_PORT=$(free_port)
export BGSYNC_EXAMPLE_START_OFFLINE=1
export BGSYNC_EXAMPLE_DATA=$(mktemp -d)
export ARTIFACTS=$root/target/e2e-artifacts
driver_port=$(free_port)
native_port=$(free_port)
export DRIVER_URL=http://127.0.0.1:$driver_port/
rm -rf "$ARTIFACTS"

# Everything below runs on a private X display; the trap stops tauri-driver (and the app it
# started) whatever happens.
xvfb-run -a -s "-screen 0 1280x900x24" bash -c '
  set -euo pipefail
  "'"$tools"'/bin/tauri-driver" --port '"$driver_port"' --native-port '"$native_port"' \
    --native-driver "$(command -v WebKitWebDriver)" >"$BGSYNC_EXAMPLE_DATA/driver.log" 2>&1 &
  driver=$!
  trap "kill $driver 2>/dev/null || true; wait $driver 2>/dev/null || true" EXIT
  for _ in $(seq 1 100); do
    (echo >/dev/tcp/127.0.0.1/'"$driver_port"') 2>/dev/null && break
    sleep 0.1
  done
  cd examples/tauri-app && timeout 240 node e2e/run.mjs
' || { echo "e2e failed; tauri-driver log:"; tail -40 "$BGSYNC_EXAMPLE_DATA/driver.log" || true; exit 1; }
rm -rf "$BGSYNC_EXAMPLE_DATA"
