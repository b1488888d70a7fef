#!/usr/bin/env bash
# A new Tauri app made the way the Tauri docs make one (create-tauri-app, vanilla-ts), with the
# plugin added by following the README's "Install in your app" steps literally, built, and
# driven in a real WebKitGTK window: a visit saved with the API down, the reference server up,
# "Sync now", delivered once. Two stand-ins for the registries, nothing else changed: the crate
# is a path dependency on this checkout and the npm package is this checkout packed by
# `npm pack`. Every README step this script had to work around is a README bug.
# The app's Cargo.lock starts from the workspace's and the build shares its target dir, so the
# Tauri stack compiled for the example app is reused.
#
# Knobs: FRESH_APP_BUILD_TIMEOUT (seconds for the build, default 3600).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=$root/target/tools
build_timeout=${FRESH_APP_BUILD_TIMEOUT:-3600}
t0=$SECONDS
. scripts/e2e-lib.sh
e2e_install_driver

# The plugin's JS package as a user would get it from the registry.
[ -d node_modules ] || step 600 npm ci --no-audit --no-fund --loglevel=error
[ -f dist-js/index.js ] || step 300 npm run build --silent
pkg=$(npm pack --silent --pack-destination "$work" | tail -1)

# 1. Scaffold (https://v2.tauri.app/start/create-project/).
cd "$work"
step 300 npx --yes create-tauri-app@4.7.4 fresh --template vanilla-ts --manager npm \
  --identifier com.example.fresh --tauri-version 2 --yes >/dev/null
app=$work/fresh
cd "$app"
cp "$root/Cargo.lock" src-tauri/Cargo.lock
# The workspace's dev profile (debug info, SQLite optimized), so the shared target dir holds one
# copy of each dependency, not two. Not a README step: it changes what is compiled, not how.
sed -n '/^\[profile\.dev/,$p' "$root/Cargo.toml" >>src-tauri/Cargo.toml

# 2. README "Install in your app", by hand (the registries replaced as said above).
#    Step 1: the crate.
sed -i "/^\[dependencies\]/a tauri-plugin-background-sync = { path = \"$root\" }" src-tauri/Cargo.toml
#    Step 2: lib.rs — the native entries line, and the plugin in the builder.
python3 - src-tauri/src/lib.rs <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
s = "tauri_plugin_background_sync::export_native_entries!();\n\n" + s
s, n = re.subn(r"tauri::Builder::default\(\)", "tauri::Builder::default()\n        .plugin(tauri_plugin_background_sync::init())", s, count=1)
assert n == 1, "no tauri::Builder::default() in the template's lib.rs"
open(p, "w").write(s)
PY
#    Step 3: the npm package.
step 600 npm install --no-audit --no-fund --loglevel=error "$work/$pkg"
#    Step 4: the capability.
python3 - src-tauri/capabilities/default.json <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["permissions"].append("background-sync:default")
json.dump(c, open(p, "w"), indent=2)
PY
#    Step 5: the API in tauri.conf.json (a port where nothing listens yet).
api_port=$(free_port)
python3 - src-tauri/tauri.conf.json "$api_port" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c.setdefault("plugins", {})["background-sync"] = {"baseUrl": f"http://127.0.0.1:{sys.argv[2]}"}
json.dump(c, open(p, "w"), indent=2)
PY
# The app's own code: a page that uses the README's JS API (type-checked by the template's tsc).
cp "$root/scripts/fresh-app/main.ts" src/main.ts
cp "$root/scripts/fresh-app/index.html" index.html

# 3. Build (debug, frontend embedded, no installer bundles).
export CARGO_TARGET_DIR=$root/target
step "$build_timeout" npx tauri build --debug --no-bundle >"$work/build.log" 2>&1 || {
  tail -40 "$work/build.log"; echo "fresh app: build failed"; exit 1; }
echo "fresh app built in $((SECONDS - t0)) s"

# 4. Drive it.
cd "$root"
cargo build -q -p bgsync-reference-server
e2e_start_xvfb
export ARTIFACTS=$root/target/e2e-artifacts
mkdir -p "$ARTIFACTS"
export XDG_DATA_HOME=$work/xdg-data XDG_CACHE_HOME=$work/xdg-cache
export APP=$root/target/debug/fresh API_PORT=$api_port SERVER_BIN=$root/target/debug/bgsync-reference-server
export SELENIUM_FROM=$root/examples/tauri-app/package.json
[ -d "$root/examples/tauri-app/node_modules/selenium-webdriver" ] || (cd "$root/examples/tauri-app" && step 600 npm ci --no-audit --no-fund --loglevel=error)
e2e_start_driver
step 180 node "$root/scripts/fresh-app/drive.mjs"
echo "fresh app test passed in $((SECONDS - t0)) s"
# Its binary and libraries (the staticlib alone is hundreds of MB) serve no later step.
rm -rf "$root"/target/debug/fresh "$root"/target/debug/deps/*fresh* "$root"/target/debug/.fingerprint/fresh-* \
  "$root"/target/debug/build/fresh-*
