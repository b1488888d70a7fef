#!/usr/bin/env bash
# Compiles the whole Android shim (android/src/main/java/**.kt) on the host, against:
#   - the Android framework: Robolectric's android-all (API 36) from Maven Central,
#   - Tauri's Kotlin plugin API: the real sources shipped in the `tauri` crate (mobile/android),
#   - AndroidX (activity, appcompat, core, lifecycle, work): compile-only stubs in
#     tests/native/android-stubs/src (Google Maven is not reachable here),
# with kotlinc 2.1 from Maven Central. Catches type errors in BackgroundSyncPlugin.kt,
# SyncWorker.kt, Prefs.kt, Notifications.kt; it does not run them (no device).
set -euo pipefail
cd "$(dirname "$0")/../.."
deps=target/native-deps/android
kdeps=target/native-deps/kotlin
if [ ! -f "$deps/.done" ]; then
  mkdir -p "$deps"
  mvn -q -B -f tests/native/android-stubs/pom.xml dependency:copy-dependencies -DoutputDirectory="$PWD/$deps"
  touch "$deps/.done"
fi
if [ ! -f "$kdeps/kotlin-compiler-embeddable-2.1.0.jar" ]; then
  mvn -q -B -f tests/native/kotlin/pom.xml dependency:copy-dependencies -DoutputDirectory="$PWD/$kdeps"
fi
tauri_dir=$(cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, sys, os
m = json.load(sys.stdin)
p = next(p for p in m["packages"] if p["name"] == "tauri")
print(os.path.dirname(p["manifest_path"]))')
tauri_src=$tauri_dir/mobile/android/src/main/java
[ -d "$tauri_src/app/tauri/plugin" ] || { echo "Tauri Kotlin sources not found in $tauri_dir"; exit 1; }

# The compiler itself runs on kotlin-stdlib 2.1 (not android-all's or coroutines' older copy).
compiler_cp=$(ls "$kdeps"/*.jar | grep -v -e junit -e hamcrest -e '/json-' | tr '\n' ':')
compile_cp=$(ls "$deps"/*.jar | grep -v kotlin-stdlib | tr '\n' ':')$kdeps/kotlin-stdlib-2.1.0.jar
out=target/native-android
rm -rf "$out" && mkdir -p "$out"
mapfile -t sources < <(find tests/native/android-stubs/src "$tauri_src/app/tauri" android/src/main/java -name '*.kt' | sort)
echo "kotlinc: ${#sources[@]} files (AndroidX stubs, Tauri's plugin API, the shim) against android-all API 36"
log=$out/kotlinc.log
if ! java -Xmx1g -cp "$compiler_cp" org.jetbrains.kotlin.cli.jvm.K2JVMCompiler -no-stdlib -no-reflect \
  -jvm-target 1.8 -cp "$compile_cp" -d "$out" "${sources[@]}" >"$log" 2>&1; then
  grep -E "^(error|e:)|error:" "$log" | head -40 || cat "$log"
  echo "Android shim compilation FAILED"
  exit 1
fi
for c in BackgroundSyncPlugin SyncWorker Prefs Notifications NativeBridge WorkPlanner; do
  [ -f "$out/app/tauri/backgroundsync/$c.class" ] || { echo "missing $c.class"; exit 1; }
done
echo "Android shim compiled: $(find "$out/app/tauri/backgroundsync" -name '*.class' | wc -l) classes"
