#!/usr/bin/env bash
# Type-check of the whole iOS shim (ios/Sources/BackgroundSyncPlugin/*.swift) with swiftc on
# Linux, against:
#   - Tauri's real Swift plugin API from the `tauri` crate (mobile/ios-api: Plugin, Invoke,
#     Channel, JSTypes, JsonValue); its IPC glue (Tauri.swift, Logger.swift, UiUtils.swift)
#     needs the Objective-C runtime and is left out, PluginManager stubbed;
#   - compile-only stand-ins for BackgroundTasks, Network, Security, UIKit, WebKit and os.log written from
#     Apple's reference pages (tests/native/swift-stubs, each member citing its page);
#   - the Clang import of bgsync.h through a module map like SwiftPM's for BackgroundSyncFFI.
# Three textual changes are made to copies before checking, because Linux has no Objective-C
# interop: `@objc` attributes are removed, `import os.log` (a Clang submodule on Apple
# platforms) becomes `import OSLog` (the stand-in), and the @_cdecl entry point is checked by
# its text. A wrong Apple API name, a wrong argument
# label or type, a missing `try`, an Invoke/Plugin misuse fails it; what the stand-ins cannot
# show (a signature they got wrong, behaviour) only an Xcode build can (.github/workflows/mobile.yml).
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/native/swift_env.sh
swift_root_or_skip
t0=$SECONDS
tauri_dir=$(cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, sys, os
m = json.load(sys.stdin)
p = next(p for p in m["packages"] if p["name"] == "tauri")
print(os.path.dirname(p["manifest_path"]))')
tauri_api=$tauri_dir/mobile/ios-api/Sources/Tauri
[ -f "$tauri_api/Plugin/Plugin.swift" ] || { echo "Tauri Swift sources not found in $tauri_dir"; exit 1; }

work=$swift_root/work
rm -rf "$work" && mkdir -p "$work"/{stubs,tauri,shim,mods,ffi}
cp tests/native/swift-stubs/*.swift "$work/stubs/"
for f in Plugin/Plugin.swift Invoke.swift Channel.swift JSTypes.swift JsonValue.swift; do cp "$tauri_api/$f" "$work/tauri/"; done
cp ios/Sources/BackgroundSyncPlugin/*.swift "$work/shim/"
ffi_module "$work/ffi"
sed -i -E 's/@objc(\([^)]*\))? //g; s/^import os\.log$/import OSLog/' "$work"/tauri/*.swift "$work"/shim/*.swift
# The entry point Rust's `ios_plugin_binding!(init_plugin_background_sync)` links: a @_cdecl
# function returning a class needs Objective-C interop, so it is checked by its text here and
# its attribute dropped from the copy (its body is type-checked).
grep -Pzoq '@_cdecl\("init_plugin_background_sync"\)\nfunc initPlugin\(\) -> Plugin \{' \
  ios/Sources/BackgroundSyncPlugin/BackgroundSyncPlugin.swift || {
  echo "FAILED: no @_cdecl(\"init_plugin_background_sync\") func initPlugin() -> Plugin"; exit 1; }
sed -i '/^@_cdecl("init_plugin_background_sync")$/d' "$work"/shim/*.swift

module() { # name, files...
  local name=$1; shift
  in_swift_root swiftc -swift-version 5 -parse-as-library -emit-module -module-name "$name" \
    -emit-module-path "mods/$name.swiftmodule" -I mods "$@"
}
module OSLog stubs/OSLog.swift
module UIKit stubs/UIKit.swift
module WebKit stubs/WebKit.swift
module BackgroundTasks stubs/BackgroundTasks.swift
module Network stubs/Network.swift
module Security stubs/Security.swift
module Tauri $(cd "$work" && ls tauri/*.swift) stubs/TauriPluginManager.swift
out=$work/typecheck.out
if ! in_swift_root swiftc -swift-version 5 -typecheck -I mods -I ffi $(cd "$work" && ls shim/*.swift) >"$out" 2>&1; then
  cat "$out"; echo "FAILED: the iOS shim does not type-check"; exit 1
fi
grep 'warning:' "$out" || true
echo "Swift type-check: $(ls "$work"/shim | wc -l) shim files against Tauri $(basename "$tauri_dir")'s plugin API and the Apple stand-ins, OK in $((SECONDS - t0)) s"
